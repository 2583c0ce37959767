import Channels
import Foundation
import Testing
import TestSupport
@testable import RuntimeWorker

/// Plays a step without a process: each job body is a small script of what the "step" does.
///   "exit N" | "signal" | "timeout" | "oom" | "out {json}" | "print TEXT" | "print-many N" | "wait-cancel"
///   (commands joined by ';')
struct FakeRunner: StepRunning {
    func stepPath(_ hostPath: String, workDirectory: String) -> String { hostPath }
    func run(_ launch: StepLaunch, control: StepControl, onLines: @escaping @Sendable ([(StepStream, String)]) -> Void)
        async throws -> StepTermination
    {
        let body = try String(contentsOfFile: launch.arguments[1], encoding: .utf8)
        var t = StepTermination(exitCode: 0, signal: nil, timedOut: false, oomKilled: false, cancelled: false, peakMemoryBytes: 1, durationMS: 1)
        for command in body.split(separator: ";").map({ $0.trimmingCharacters(in: .whitespaces) }) {
            if command.hasPrefix("exit ") { t.exitCode = Int32(command.dropFirst(5)) }
            else if command == "signal" { t.exitCode = nil; t.signal = 9 }
            else if command == "timeout" { t.exitCode = nil; t.signal = 9; t.timedOut = true }
            else if command == "oom" { t.exitCode = nil; t.signal = 9; t.oomKilled = true }
            else if command.hasPrefix("out ") {
                try String(command.dropFirst(4)).write(toFile: launch.environment["OUTPUT_PATH"]!, atomically: true, encoding: .utf8)
            } else if command.hasPrefix("print ") { onLines([(.stdout, String(command.dropFirst(6)))]) }
            else if command.hasPrefix("print-many ") {
                // On a thread of its own, as the sandbox's line reader: backpressure blocks it, not the executor.
                let count = Int(command.dropFirst(11))!
                await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
                    Thread.detachNewThread {
                        for i in 0..<count { onLines([(i % 2 == 0 ? .stdout : .stderr, "line \(i)")]) }
                        done.resume()
                    }
                }
            } else if command == "wait-cancel" {
                while !control.wasCancelled { try await Task.sleep(for: .milliseconds(2)) }
                t.exitCode = nil; t.signal = 15; t.cancelled = true
            }
            else if command == "echo-state" {
                onLines([(.stdout, try String(contentsOfFile: launch.environment["STATE_PATH"]!, encoding: .utf8))])
            }
        }
        return t
    }
}

final class Recorder: AttemptEventSink, @unchecked Sendable {
    private let lock = NSLock()
    private(set) var events: [(String, JSON)] = []
    func send(_ event: String, _ payload: JSON) async throws -> ChannelClientReply {
        lock.withLock { events.append((event, payload)) }
        return ChannelClientReply(status: "ok", response: .null, binary: nil)
    }
    var names: [String] { lock.withLock { events.map(\.0) } }
    func payloads(_ name: String) -> [JSON] { lock.withLock { events.filter { $0.0 == name }.map(\.1) } }
    var logLines: [String] {
        payloads("run:log").flatMap { $0["logs"]?.arrayValue ?? [] }.compactMap { $0["message"]?[0]?.stringValue }
    }
}

func makePlan(_ jobs: [(String, String)], edges: [(String?, String, String)], start: String? = nil, credential: String? = nil) -> Plan {
    Plan(id: "a1", dataclipID: "d1", startingNodeID: start ?? jobs[0].0, triggers: [],
         jobs: jobs.map { Plan.Job(id: $0.0, name: $0.0, body: $0.1, adaptor: "sh", credentialID: $0.0 == "a" ? credential : nil) },
         edges: edges.enumerated().map { i, e in Plan.Edge(id: "e\(i)", sourceJobID: e.0, targetJobID: e.1, condition: e.2) },
         options: Plan.Options())
}

func execute(_ plan: Plan, input: String = #"{"x":1}"#, credentials: [String: [UInt8]] = [:], messageLimit: Int? = nil) async throws
    -> (AttemptComplete, Recorder)
{
    let dir = try TestSupport.temporaryDirectory("exec")
    defer { try? FileManager.default.removeItem(at: dir) }
    let recorder = Recorder()
    var executor = AttemptExecutor(attemptID: "a1", plan: plan, input: Array(input.utf8), credentials: credentials, runner: FakeRunner(),
                                   events: recorder, workRoot: dir.path)
    executor.messageLimit = messageLimit
    return (try await executor.run(), recorder)
}

@Suite("The attempt executor with a fake process runner")
struct ExecutorTests {
    @Test("events go out in order: run:start, step:start, logs, step:complete, ..., run:complete")
    func order() async throws {
        let (c, r) = try await execute(makePlan([("a", "print hi; out {\"y\":2}"), ("b", "print there")], edges: [("a", "b", "always")]))
        #expect(c.reason == .success)
        #expect(r.names == ["run:start", "step:start", "run:log", "step:complete", "step:start", "run:log",
                            "step:complete", "run:complete"])
        #expect(r.logLines == ["hi", "there"])
        #expect(c.finalState == ["y": 2])
    }

    @Test("on_job_success and on_job_failure follow the upstream outcome; a failed leaf fails the attempt")
    func successAndFailureEdges() async throws {
        let plan = makePlan([("a", "exit 2"), ("ok", "print ok"), ("recover", "print recovering")],
                            edges: [("a", "ok", "on_job_success"), ("a", "recover", "on_job_failure")])
        let (c, r) = try await execute(plan)
        #expect(r.logLines == ["recovering"])
        #expect(c.reason == .success, "the executed leaf (recover) succeeded")
        let failedLeaf = try await execute(makePlan([("a", "exit 3")], edges: []))
        #expect(failedLeaf.0.reason == .fail && failedLeaf.0.errorType == "JobError")
        #expect(failedLeaf.0.errorMessage?.contains("code 3") == true)
    }

    @Test("fan-out runs branches one after another, in edge order; disabled edges are not followed")
    func fanOut() async throws {
        var plan = makePlan([("a", "print a"), ("b", "print b"), ("c", "print c"), ("d", "print d")],
                            edges: [("a", "c", "always"), ("a", "b", "always"), ("a", "d", "always")])
        plan.edges[2].enabled = false
        let (_, r) = try await execute(plan)
        #expect(r.logLines == ["a", "c", "b"])
    }

    @Test("expression conditions read the upstream state; a bad one crashes the attempt with EdgeConditionError")
    func expressions() async throws {
        let plan = makePlan([("a", "out {\"n\":5}"), ("big", "print big"), ("small", "print small")],
                            edges: [("a", "big", "state.n > 3"), ("a", "small", "state.n <= 3")])
        #expect(try await execute(plan).1.logLines == ["big"])
        let bad = makePlan([("a", "out {\"n\":null}"), ("b", "print b")], edges: [("a", "b", "state.n.deeper == 1")])
        let (c, r) = try await execute(bad)
        #expect(c.reason == .crash && c.errorType == "EdgeConditionError")
        #expect(r.logLines.isEmpty)
    }

    @Test("every reason", arguments: [
        ("signal", ExitReason.crash, "RuntimeCrash"), ("timeout", .kill, "TimeoutError"), ("oom", .kill, "OOMError"),
        ("exit 1", .fail, "JobError"), ("out not-json", .crash, "RuntimeCrash"),
    ])
    func reasons(body: String, reason: ExitReason, errorType: String) async throws {
        let (c, r) = try await execute(makePlan([("a", body), ("b", "print never")], edges: [("a", "b", "on_job_success")]))
        #expect(c.reason == reason && c.errorType == errorType)
        let step = try #require(r.payloads("step:complete").first)
        #expect(step["reason"] == .string(reason.rawValue))
    }

    @Test("an output that is not a JSON object says what is wrong with it", arguments: [
        (#"{"a" 1}"#, "could not be read as JSON: invalid JSON at byte 5"), ("[1, 2]", "holds an array, not a JSON object"),
        ("\"text\"", "holds a string, not a JSON object"), ("null", "holds null"),
        ("{\"a\": \"x\u{0}y\"}", "could not be read as JSON: invalid JSON at byte"),
        (String(repeating: "[", count: 600) + String(repeating: "]", count: 600), "nesting too deep"),
    ])
    func outputProblems(output: String, fragment: String) async throws {
        let (c, _) = try await execute(makePlan([("a", "out " + output)], edges: []))
        #expect(c.reason == .crash && c.errorType == "RuntimeCrash")
        #expect(c.errorMessage?.hasPrefix("the step's output in OUTPUT_PATH ") == true)
        #expect(c.errorMessage?.contains(fragment) == true, "\(c.errorMessage ?? "")")
    }

    @Test("an adaptor the worker cannot run is a crash with ImportError")
    func unknownAdaptor() async throws {
        var plan = makePlan([("a", "print x")], edges: [])
        plan.jobs[0].adaptor = "@openfn/language-common@latest"
        let (c, _) = try await execute(plan)
        #expect(c.reason == .crash && c.errorType == "ImportError")
    }

    @Test("credentials reach the step as state.configuration, never its log or output state")
    func credentials() async throws {
        let plan = makePlan([("a", "echo-state; print using s3cret-value here")], edges: [], credential: "cred-1")
        let (c, r) = try await execute(plan, credentials: ["cred-1": Array(#"{"password":"s3cret-value"}"#.utf8)])
        #expect(r.logLines.count == 2)
        #expect(r.logLines[0].contains("configuration") && !r.logLines[0].contains("s3cret-value"))
        #expect(r.logLines[1] == "using *** here")
        #expect(c.finalState?.text.contains("configuration") == false)
        #expect(r.payloads("step:complete").allSatisfy { $0["output_dataclip"]?.stringValue?.contains("configuration") != true })
    }

    @Test("an output over the payload limit is not sent, and is flagged")
    func payloadLimit() async throws {
        var plan = makePlan([("a", "out {\"big\":\"" + String(repeating: "x", count: 1_100_000) + "\"}")], edges: [])
        plan.options.payloadLimitMB = 1
        let (_, r) = try await execute(plan)
        let step = try #require(r.payloads("step:complete").first)
        #expect(step["output_dataclip"] == nil || step["output_dataclip"] == .null)
        #expect(step["output_dataclip_error"] == "DATACLIP_TOO_LARGE")
    }

    @Test("an output under the payload limit as JSON but over it as sent (a string, its quotes escaped) is not sent either")
    func payloadLimitAsSent() async throws {
        let items = Array(repeating: "\"x\"", count: 175_000).joined(separator: ",")  // 0.7 MB; 1.05 MB escaped
        var plan = makePlan([("a", "out {\"d\":[" + items + "]}")], edges: [])
        plan.options.payloadLimitMB = 1
        let (_, r) = try await execute(plan)
        let step = try #require(r.payloads("step:complete").first)
        #expect(step["output_dataclip_error"] == "DATACLIP_TOO_LARGE")
        // Half as many fit.
        let fewer = Array(repeating: "\"x\"", count: 80_000).joined(separator: ",")
        var small = makePlan([("a", "out {\"d\":[" + fewer + "]}")], edges: [])
        small.options.payloadLimitMB = 1
        let (_, r2) = try await execute(small)
        let sent = try #require(r2.payloads("step:complete").first)
        #expect(sent["output_dataclip"]?.stringValue?.utf8.count ?? 0 > 300_000)
        #expect(sent["output_dataclip_error"] == nil || sent["output_dataclip_error"] == .null)
    }

    @Test("Lightning's message limit under the payload limit: an output that fits the plan but not a message is left out as too large")
    func payloadUnderMessageLimit() async throws {
        let items = Array(repeating: "1", count: 200_000).joined(separator: ",")  // 0.4 MB, under the plan's 10 MB
        let plan = makePlan([("a", "out {\"d\":[" + items + "]}")], edges: [])
        let (_, r) = try await execute(plan, messageLimit: 300_000)
        let step = try #require(r.payloads("step:complete").first)
        #expect(step["output_dataclip_error"] == "DATACLIP_TOO_LARGE")
        #expect(r.payloads("run:complete").first?["final_state"] == nil || r.payloads("run:complete").first?["final_state"] == .null)
        // The same output under a limit it fits in is sent.
        let (_, fits) = try await execute(plan, messageLimit: 1_000_000)
        #expect(fits.payloads("step:complete").first?["output_dataclip"]?.stringValue?.utf8.count ?? 0 > 400_000)
    }
}
