import Channels
import Foundation
import Testing
import TestSupport
@testable import RuntimeWorker

/// A sink whose replies are slow: the step's lines pile up in the log batcher until backpressure holds the step.
final class SlowRecorder: AttemptEventSink, @unchecked Sendable {
    let inner = Recorder()
    func send(_ event: String, _ payload: JSON) async throws -> ChannelClientReply {
        if event == "run:log" { try await Task.sleep(for: .milliseconds(3)) }
        return try await inner.send(event, payload)
    }
}

/// Plays Lightning behind a socket that drops: calls numbered in `disconnected` fail as if the socket were down,
/// calls in `notRejoined` get the "unmatched topic" reply of a reconnected socket before the rejoin, calls in
/// `lostReply` are committed but their reply never arrives (timeout). Everything else is committed and answered.
final class FlakyLightning: @unchecked Sendable {
    private let lock = NSLock()
    private var calls = 0
    private(set) var committed: [(String, JSON)] = []
    let disconnected: Set<Int>, notRejoined: Set<Int>, lostReply: Set<Int>, diskFull: Set<Int>

    init(disconnected: Set<Int> = [], notRejoined: Set<Int> = [], lostReply: Set<Int> = [], diskFull: Set<Int> = []) {
        self.disconnected = disconnected
        self.notRejoined = notRejoined
        self.lostReply = lostReply
        self.diskFull = diskFull
    }

    func push(_ event: String, _ payload: JSON) throws -> ChannelClientReply {
        try lock.withLock {
            calls += 1
            if disconnected.contains(calls) { throw ChannelError.notConnected }
            if notRejoined.contains(calls) { return ChannelClientReply(status: "error", response: ["reason": "unmatched topic"]) }
            if diskFull.contains(calls) {
                return ChannelClientReply(status: "error", response: ["errors": ["store": ["disk full"]], "retry_after": 30])
            }
            committed.append((event, payload))
            if lostReply.contains(calls) { throw ChannelError.timeout }
            return ChannelClientReply(status: "ok", response: .null)
        }
    }

    var names: [String] { lock.withLock { committed.map(\.0) } }
    var logLines: [String] {
        lock.withLock { committed.filter { $0.0 == "run:log" } }.flatMap { $0.1["logs"]?.arrayValue ?? [] }
            .compactMap { $0["message"]?[0]?.stringValue }
    }
}

func collapsingLogBatches(_ names: [String]) -> [String] {
    names.enumerated().filter { i, n in !(n == "run:log" && i > 0 && names[i - 1] == n) }.map(\.1)
}

func run(_ plan: Plan, events: any AttemptEventSink, control: AttemptControl = AttemptControl(),
         maxLogBytes: Int = 100_000_000) async throws -> AttemptComplete {
    let dir = try TestSupport.temporaryDirectory("exec")
    defer { try? FileManager.default.removeItem(at: dir) }
    var executor = AttemptExecutor(attemptID: "a1", plan: plan, input: Array(#"{"x":1}"#.utf8), credentials: [:], runner: FakeRunner(),
                                   events: events, workRoot: dir.path, control: control)
    executor.maxLogBytesPerAttempt = maxLogBytes
    return try await executor.run()
}

@Suite("Cancel, shutdown, log limits and the event outbox")
struct OutboxAndCancelTests {
    @Test("run:cancel stops the running step: reason cancel, no later step runs")
    func cancel() async throws {
        let recorder = Recorder()
        let control = AttemptControl()
        let plan = makePlan([("a", "print started; wait-cancel"), ("b", "print never")], edges: [("a", "b", "always")])
        let attempt = Task { try await run(plan, events: recorder, control: control) }
        while !recorder.names.contains("step:start") { try await Task.sleep(for: .milliseconds(2)) }
        control.cancel(reason: "an operator cancelled it")
        let c = try await attempt.value
        #expect(c.reason == .cancel && c.errorType == "Cancelled" && c.errorMessage == "an operator cancelled it")
        #expect(!recorder.logLines.contains("never"))
        #expect(recorder.names.filter { $0 == "step:start" }.count == 1)
        #expect(recorder.names.last == "run:complete")
    }

    @Test("a shutdown that runs out of time ends the attempt with reason kill and ShutdownError")
    func shutdown() async throws {
        let recorder = Recorder()
        let control = AttemptControl()
        let attempt = Task { try await run(makePlan([("a", "wait-cancel")], edges: []), events: recorder, control: control) }
        while !recorder.names.contains("step:start") { try await Task.sleep(for: .milliseconds(2)) }
        control.shutDown(reason: "the worker shut down")
        let c = try await attempt.value
        #expect(c.reason == .kill && c.errorType == "ShutdownError")
        let step = try #require(recorder.payloads("step:complete").first)
        #expect(step["reason"] == "kill")
    }

    @Test("the per-attempt log cap drops later lines, the step goes on, and one notice says how many were dropped")
    func logCap() async throws {
        let recorder = Recorder()
        let c = try await run(makePlan([("a", "print-many 50; out {\"done\":true}")], edges: []), events: recorder, maxLogBytes: 40)
        #expect(c.reason == .success && c.finalState?["done"] == true, "the step was not stopped")
        let lines = recorder.logLines
        // "line 0" ... "line 5" are 6 bytes each: six fit in 40 bytes, the other 44 lines are dropped.
        #expect(Array(lines.dropLast()) == (0..<6).map { "line \($0)" })
        #expect(lines.last == "44 log lines (304 bytes) were dropped: this attempt went over its log limit of 40 bytes")
        #expect(lines.filter { $0.contains("dropped") }.count == 1)
        #expect(recorder.names.last == "run:complete" && recorder.names.dropLast().last == "run:log",
                "the notice goes before run:complete")
    }

    @Test("a slow socket holds the step back; 5,000 lines all arrive, in order, stdout info and stderr error")
    func backpressure() async throws {
        let slow = SlowRecorder()
        let c = try await run(makePlan([("a", "print-many 5000")], edges: []), events: slow)
        #expect(c.reason == .success)
        #expect(slow.inner.logLines == (0..<5000).map { "line \($0)" })
        let logs = slow.inner.payloads("run:log").flatMap { $0["logs"]?.arrayValue ?? [] }
        #expect(logs[0]["level"] == "info" && logs[1]["level"] == "error" && logs[0]["source"] == "JOB")
        #expect(slow.inner.payloads("run:log").allSatisfy { ($0["logs"]?.arrayValue?.count ?? 0) <= 5000 }, "batches are bounded")
    }

    @Test("across a dropped socket and a late rejoin, every event arrives once and in order")
    func outboxAcrossDisconnect() async throws {
        let plan = makePlan([("a", "print one; print two; out {\"y\":2}"), ("b", "print three")], edges: [("a", "b", "always")])
        let reference = Recorder()
        _ = try await run(plan, events: reference)
        let lightning = FlakyLightning(disconnected: [2, 3, 4, 7], notRejoined: [5, 8, 9])
        let sink = ChannelEventSink(retryPause: .milliseconds(1)) { try lightning.push($0, $1) }
        let c = try await run(plan, events: sink)
        #expect(c.reason == .success)
        // Lines may be batched differently from run to run: compare with consecutive log batches counted as one.
        #expect(collapsingLogBatches(lightning.names) == collapsingLogBatches(reference.names))
        #expect(lightning.logLines == ["one", "two", "three"])
    }

    @Test("a reply lost after Lightning committed: that one event is sent again with the same ids, still in order (Lightning acknowledges the repeat with no second effect: WorkerProtocolTests)")
    func lostReply() async throws {
        let plan = makePlan([("a", "print one")], edges: [])
        let lightning = FlakyLightning(lostReply: [2])
        let sink = ChannelEventSink(retryPause: .milliseconds(1)) { try lightning.push($0, $1) }
        _ = try await run(plan, events: sink)
        #expect(lightning.names == ["run:start", "step:start", "step:start", "run:log", "step:complete", "run:complete"])
        let starts = lightning.committed.filter { $0.0 == "step:start" }.map { $0.1["step_id"] }
        #expect(starts[0] == starts[1], "the resent event carries the same step id, so Lightning can tell it is a repeat")
    }

    @Test("an event Lightning could not store (its disk full, `retry_after` in the error) is kept and sent again, in order, none lost")
    func diskFull() async throws {
        let plan = makePlan([("a", "print one; print two"), ("b", "print three")], edges: [("a", "b", "always")])
        let lightning = FlakyLightning(diskFull: [2, 3, 4, 6])
        let sink = ChannelEventSink(retryPause: .milliseconds(1)) { try lightning.push($0, $1) }
        let c = try await run(plan, events: sink)
        #expect(c.reason == .success)
        #expect(lightning.logLines == ["one", "two", "three"])
        #expect(lightning.names.first == "run:start" && lightning.names.last == "run:complete")
        #expect(lightning.names.filter { $0 == "step:start" }.count == 2, "each event committed once")
    }

    @Test("when Lightning refuses to rejoin the attempt's topic, sending stops with an error instead of retrying forever")
    func abandoned() async throws {
        let refusedRejoin = Flag()
        let lightning = FlakyLightning(notRejoined: Set(3...1_000_000))
        var sink = ChannelEventSink(retryPause: .milliseconds(1)) { event, payload in
            let r = try lightning.push(event, payload)
            if r.response["reason"] == "unmatched topic" { refusedRejoin.set() }
            return r
        }
        sink.isAbandoned = { refusedRejoin.isSet }
        await #expect(throws: WorkerError.self) {
            try await run(makePlan([("a", "print one"), ("b", "print two")], edges: [("a", "b", "always")]), events: sink)
        }
        #expect(lightning.names == ["run:start", "step:start"])
    }

    @Test("run:start and step:start are posted: the step runs while their replies are held back, and the events still arrive in order")
    func pipelined() async throws {
        let gate = ReplyGate()
        let ran = Flag()
        let runner = ObservedRunner(ran: ran)
        let dir = try TestSupport.temporaryDirectory("exec")
        defer { try? FileManager.default.removeItem(at: dir) }
        let executor = AttemptExecutor(attemptID: "a1", plan: makePlan([("a", "print hi")], edges: []), input: Array(#"{"x":1}"#.utf8),
                                       credentials: [:], runner: runner, events: gate, workRoot: dir.path)
        let attempt = Task { try await executor.run() }
        // The reply to run:start does not come until the step has run (bounded: a serial executor never gets there).
        for _ in 0..<2000 where !ran.isSet { try await Task.sleep(for: .milliseconds(10)) }
        #expect(ran.isSet, "the step ran before run:start was answered")
        #expect(gate.names.count <= 1 && gate.names.allSatisfy { $0 == "run:start" }, "one event on the wire at a time, the first first")
        gate.release()
        let c = try await attempt.value
        #expect(c.reason == .success)
        #expect(gate.names == ["run:start", "step:start", "run:log", "step:complete", "run:complete"])
    }

    @Test("a final state over the payload limit is left out of run:complete")
    func finalStateTooLarge() async throws {
        var plan = makePlan([("a", "out {\"big\":\"" + String(repeating: "x", count: 1_100_000) + "\"}")], edges: [])
        plan.options.payloadLimitMB = 1
        let recorder = Recorder()
        let c = try await run(plan, events: recorder)
        #expect(c.reason == .success && c.finalState == nil)
    }
}

final class Flag: @unchecked Sendable {
    private let lock = NSLock()
    private var value = false
    func set() { lock.withLock { value = true } }
    var isSet: Bool { lock.withLock { value } }
}

/// Answers nothing until `release()`; then everything, in the order it was sent.
final class ReplyGate: AttemptEventSink, @unchecked Sendable {
    private let lock = NSLock()
    private var open = false
    private var held: [CheckedContinuation<Void, Never>] = []
    private(set) var sent: [String] = []

    func send(_ event: String, _ payload: JSON) async throws -> ChannelClientReply {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let go: Bool = lock.withLock {
                sent.append(event)
                if !open { held.append(c) }
                return open
            }
            if go { c.resume() }
        }
        return ChannelClientReply(status: "ok", response: .null)
    }

    func release() {
        let waiting: [CheckedContinuation<Void, Never>] = lock.withLock {
            open = true
            defer { held = [] }
            return held
        }
        waiting.forEach { $0.resume() }
    }

    var names: [String] { lock.withLock { sent } }
}

/// The fake runner, noting that a step ran.
struct ObservedRunner: StepRunning {
    let ran: Flag
    func stepPath(_ hostPath: String, workDirectory: String) -> String { hostPath }
    func run(_ launch: StepLaunch, control: StepControl, onLines: @escaping @Sendable ([(StepStream, String)]) -> Void)
        async throws -> StepTermination
    {
        let t = try await FakeRunner().run(launch, control: control, onLines: onLines)
        ran.set()
        return t
    }
}

@Suite("Log batches encoded line by line")
struct LogBatchEncodingTests {
    @Test("a batch written from encoded lines is the run:log payload the values would make, escapes included")
    func sameAsValues() throws {
        let texts = ["plain", "quote \" backslash \\ tab\t", "é 😀", "", "\u{1}control", "{\"json\": [1]}"]
        let tail = LogBatcher.encodeTail(timestamp: "1764633600000001", stepID: "step \"1\"")
        let lines = texts.enumerated().map { i, t in LogBatcher.encodeLine(t, error: i % 2 == 1, tail: tail, seq: Int64(i + 1)) }
        let batch = try JSON.parse(LogBatcher.encodeBatch(attemptID: "a-\"1\"", lines[...]))
        let expected: JSON = ["run_id": "a-\"1\"", "logs": .array(texts.enumerated().map { i, t in
            ["message": [.string(t)], "level": i % 2 == 1 ? "error" : "info", "source": "JOB", "timestamp": "1764633600000001",
             "step_id": "step \"1\"", "worker_seq": .int(Int64(i + 1))]
        })]
        #expect(batch == expected)
        #expect(try JSON.parse(LogBatcher.encodeBatch(attemptID: "a", [][...])) == ["run_id": "a", "logs": []])
    }
}
