import Channels
import Foundation
import LightningProtocol
import Testing
import TestSupport
@testable import RuntimeWorker

/// The outbox when one event is too large for Lightning's messages.
@Suite("The attempt outbox")
struct AttemptOutboxTests {
    /// Sends everything but events named `big`, which the client refuses as over the peer's limit.
    final class Refusing: AttemptEventSink, @unchecked Sendable {
        let recorder = Recorder()
        func send(_ event: String, _ payload: JSON) async throws -> ChannelClientReply {
            if event == "big" { throw ChannelError.messageTooLarge(bytes: 2_000, limit: 1_000) }
            return try await recorder.send(event, payload)
        }
    }

    /// A gate the test opens, or shuts for good with an error.
    final class Latch: @unchecked Sendable {
        private let lock = NSLock()
        private var result: Result<Void, any Error>?
        private var waiters: [CheckedContinuation<Void, any Error>] = []
        private(set) var waiting = 0

        func wait() async throws {
            try await withCheckedThrowingContinuation { (c: CheckedContinuation<Void, any Error>) in
                let ready = lock.withLock { () -> Result<Void, any Error>? in
                    if result == nil { waiters.append(c); waiting += 1 }
                    return result
                }
                if let ready { c.resume(with: ready) }
            }
        }

        func finish(_ r: Result<Void, any Error>) {
            let w = lock.withLock { () -> [CheckedContinuation<Void, any Error>] in
                result = r
                defer { waiters = [] }
                return waiters
            }
            for c in w { c.resume(with: r) }
        }
    }

    struct Stale: Error, Equatable {}

    /// An outbox held by a latch, over a recorder.
    func gatedOutbox() -> (sink: Recorder, latch: Latch, out: AttemptOutbox) {
        let sink = Recorder(), latch = Latch()
        return (sink, latch, AttemptOutbox(sink, gate: { try await latch.wait() }))
    }

    @Test("a gate holds every event until it opens; then they go out in order")
    func gateHolds() async throws {
        let (sink, latch, out) = gatedOutbox()
        try out.post("run:start", [:])
        try out.post("step:start", [:])
        let sent = Task { try await out.send("fetch:credential", [:]) }
        try await eventually("the outbox waits at the gate") { latch.waiting == 1 }
        #expect(sink.names.isEmpty)
        latch.finish(.success(()))
        #expect(try await sent.value.isOK)
        try out.post("step:complete", [:])
        _ = try await out.send("run:complete", [:])
        #expect(sink.names == ["run:start", "step:start", "fetch:credential", "step:complete", "run:complete"])
    }

    @Test("a gate that throws fails every event, queued or later, with its error, and sends none")
    func gateThrows() async throws {
        let (sink, latch, out) = gatedOutbox()
        try out.post("run:start", [:])
        let sent = Task { try await out.send("fetch:plan", [:]) }
        try await eventually("the outbox waits at the gate") { latch.waiting == 1 }
        latch.finish(.failure(Stale()))
        await #expect(throws: Stale.self) { _ = try await sent.value }
        #expect(throws: Stale.self) { try out.post("step:start", [:]) }
        await #expect(throws: Stale.self) { _ = try await out.send("run:complete", [:]) }
        #expect(sink.names.isEmpty)
    }

    @Test("a posted event over the limit is dropped alone: the next post says so once, and the events after it still go")
    func postedTooLarge() async throws {
        let sink = Refusing()
        let out = AttemptOutbox(sink)
        try out.post("first", [:])
        try out.post("big", [:])
        try out.post("queued-after", [:])
        // A send waits for everything before it: by then the big one failed.
        _ = try await out.send("waited", [:])
        #expect(throws: OutboxError.eventTooLarge(event: "big", bytes: 2_000, limit: 1_000)) { try out.post("next", [:]) }
        // Said once: the attempt can still end.
        let reply = try await out.send("run:complete", [:])
        #expect(reply.isOK)
        #expect(sink.recorder.names == ["first", "queued-after", "waited", "run:complete"])
    }

    @Test("a sent event over the limit throws to its sender only")
    func sentTooLarge() async throws {
        let sink = Refusing()
        let out = AttemptOutbox(sink)
        await #expect(throws: OutboxError.eventTooLarge(event: "big", bytes: 2_000, limit: 1_000)) { _ = try await out.send("big", [:]) }
        try out.post("after", [:])
        _ = try await out.send("run:complete", [:])
        #expect(sink.recorder.names == ["after", "run:complete"])
    }

    @Test("a run:complete queued before an earlier event was dropped is not sent: it fails with that event's error")
    func completeAfterDrop() async throws {
        let sink = Refusing()
        let out = AttemptOutbox(sink)
        try out.post("run:start", [:])
        try out.post("big", [:])
        await #expect(throws: OutboxError.eventTooLarge(event: "big", bytes: 2_000, limit: 1_000)) {
            _ = try await out.send("run:complete", ["reason": "success"])
        }
        // The attempt then ends saying why.
        _ = try await out.send("run:complete", ["reason": "exception"])
        #expect(sink.recorder.names == ["run:start", "run:complete"])
        #expect(sink.recorder.payloads("run:complete").first?["reason"] == "exception")
    }

    @Test("the executor: a step:complete over the limit ends the run with that error, and no run:complete claims success")
    func executorStops() async throws {
        final class RefusingStepComplete: AttemptEventSink, @unchecked Sendable {
            let recorder = Recorder()
            func send(_ event: String, _ payload: JSON) async throws -> ChannelClientReply {
                if event == "step:complete" { throw ChannelError.messageTooLarge(bytes: 12_000_000, limit: 11_000_000) }
                return try await recorder.send(event, payload)
            }
        }
        let dir = try TestSupport.temporaryDirectory("outbox")
        defer { try? FileManager.default.removeItem(at: dir) }
        let sink = RefusingStepComplete()
        let executor = AttemptExecutor(attemptID: "a1", plan: makePlan([("a", "print hi")], edges: []), input: Array("{}".utf8),
                                       credentials: [:], runner: FakeRunner(), events: sink, workRoot: dir.path)
        await #expect(throws: OutboxError.eventTooLarge(event: "step:complete", bytes: 12_000_000, limit: 11_000_000)) {
            try await executor.run()
        }
        #expect(!sink.recorder.names.contains("run:complete"), "\(sink.recorder.names)")
    }

    @Test("any other failure still fails every later event (Lightning refused the rejoin)")
    func otherFailureSticks() async throws {
        struct Gone: Error {}
        final class Failing: AttemptEventSink, @unchecked Sendable {
            func send(_ event: String, _ payload: JSON) async throws -> ChannelClientReply { throw Gone() }
        }
        let out = AttemptOutbox(Failing())
        await #expect(throws: Gone.self) { _ = try await out.send("a", [:]) }
        #expect(throws: Gone.self) { try out.post("b", [:]) }
        await #expect(throws: Gone.self) { _ = try await out.send("c", [:]) }
    }
}
