import Channels
import Foundation
import Testing
import TestSupport
@testable import RuntimeWorker

/// The worker's checkout of an attempt (plan, input dataclip, credentials) from the replies a Lightning gives:
/// what OpenFn's Lightning may send, and what must end the attempt with a reason instead of running on `{}`.
@Suite("Checking out an attempt")
struct CheckoutTests {
    /// A plan with only the lexicon's required fields (LightningPlan, LightningJob, LightningEdge), plus
    /// fields this worker does not know.
    static let minimalPlan: JSON = [
        "id": "run-1", "dataclip_id": "d-1", "starting_node_id": "t-1", "project_id": "p-1",
        "triggers": [["id": "t-1", "type": "webhook"]],
        "jobs": [["id": "j-1", "adaptor": "sh", "body": "echo hi"], ["id": "j-2", "adaptor": "sh"]],
        "edges": [["id": "e-1", "source_trigger_id": "t-1", "target_job_id": "j-1"]],
    ]

    static func replies(plan: ChannelClientReply = ChannelClientReply(status: "ok", response: minimalPlan),
                        dataclip: ChannelClientReply = ChannelClientReply(status: "ok", response: .null, binary: Array(#"{"x":1}"#.utf8)),
                        credential: ChannelClientReply = ChannelClientReply(status: "ok", response: ["user": "u"]))
        -> (() async throws -> ChannelClientReply, (String, JSON) async throws -> ChannelClientReply)
    {
        ({ plan }, { event, _ in event == "fetch:dataclip" ? dataclip : credential })
    }

    func failure(_ r: (() async throws -> ChannelClientReply, (String, JSON) async throws -> ChannelClientReply)) async throws -> AttemptComplete {
        do {
            _ = try await AttemptCheckout.fetch(plan: r.0, send: r.1)
        } catch let f as CheckoutFailure {
            return f.complete
        }
        throw TestSupport.Failure("the checkout did not fail")
    }

    @Test("a plan with only the lexicon's required fields is run: no names, no bodies, no options")
    func minimal() async throws {
        let r = Self.replies()
        let c = try await AttemptCheckout.fetch(plan: r.0, send: r.1)
        #expect(c.plan.jobs.map(\.name) == ["j-1", "j-2"] && c.plan.jobs[1].body == "")
        #expect(c.plan.options == Plan.Options() && c.plan.edges[0].condition == "always" && c.plan.edges[0].enabled)
        #expect(c.input == Array(#"{"x":1}"#.utf8))
    }

    @Test("with the plan and dataclip from the claim (claim:checkout), neither is fetched; an unreadable plan is fetched")
    func prefetched() async throws {
        let fetched = Fetched()
        let c = try await AttemptCheckout.fetch(plan: { fetched.add("fetch:plan"); return ChannelClientReply(status: "ok", response: Self.minimalPlan) },
                                                send: { event, _ in fetched.add(event); return ChannelClientReply(status: "error", response: "no") },
                                                prefetched: Prefetched(plan: Self.minimalPlan, dataclip: ["x": 2]))
        #expect(fetched.events.isEmpty, "\(fetched.events)")
        #expect(c.plan.id == "run-1" && c.input == Array(#"{"x":2}"#.utf8))
        let again = Fetched()
        let d = try await AttemptCheckout.fetch(plan: { again.add("fetch:plan"); return ChannelClientReply(status: "ok", response: Self.minimalPlan) },
                                                send: { event, _ in
                                                    again.add(event)
                                                    return ChannelClientReply(status: "ok", response: .null, binary: Array(#"{"x":3}"#.utf8))
                                                },
                                                prefetched: Prefetched(plan: ["not": "a plan"], dataclip: ["x": 2]))
        #expect(again.events == ["fetch:plan", "fetch:dataclip"] && d.input == Array(#"{"x":3}"#.utf8))
    }

    final class Fetched: @unchecked Sendable {
        private let lock = NSLock()
        private var list: [String] = []
        func add(_ e: String) { lock.withLock { list.append(e) } }
        var events: [String] { lock.withLock { list } }
    }

    @Test("a plan that is refused or cannot be read ends the attempt as an exception that says why")
    func badPlan() async throws {
        let refused = try await failure(Self.replies(plan: ChannelClientReply(status: "error", response: ["reason": "not_found"])))
        #expect(refused.reason == .exception && refused.errorType == "PlanError")
        #expect(refused.errorMessage == #"fetch:plan was refused: {"reason":"not_found"}"#)
        guard case .object(var o) = Self.minimalPlan else { return }
        o["dataclip_id"] = nil
        let unreadable = try await failure(Self.replies(plan: ChannelClientReply(status: "ok", response: .object(o))))
        #expect(unreadable.errorType == "PlanError" && unreadable.errorMessage?.contains("dataclip_id") == true, "\(unreadable)")
    }

    @Test("a dataclip that is refused, not a binary frame, or not a JSON object ends the attempt; it never runs on {}")
    func badDataclip() async throws {
        let refused = try await failure(Self.replies(dataclip: ChannelClientReply(status: "error", response: "not_found")))
        #expect(refused.reason == .exception && refused.errorType == "DataclipLoadError")
        #expect(refused.errorMessage == #"fetch:dataclip of d-1 was refused: "not_found""#)
        let text = try await failure(Self.replies(dataclip: ChannelClientReply(status: "ok", response: ["x": 1])))
        #expect(text.errorMessage?.contains("not answered with a binary frame") == true)
        let array = try await failure(Self.replies(dataclip: ChannelClientReply(status: "ok", response: .null, binary: Array("[1]".utf8))))
        #expect(array.errorMessage == "the input dataclip d-1 is not a JSON object")
    }

    @Test("a credential that cannot be loaded fails the job that uses it with the reason Lightning gave")
    func badCredential() async throws {
        guard case .object(var o) = Self.minimalPlan, case .array(var jobs) = o["jobs"]!, case .object(var j) = jobs[0] else { return }
        j["credential_id"] = "c-1"
        jobs[0] = .object(j)
        o["jobs"] = .array(jobs)
        let r = Self.replies(plan: ChannelClientReply(status: "ok", response: .object(o)),
                             credential: ChannelClientReply(status: "error", response: ["errors": ["id": ["Credential not found!"]]]))
        let c = try await AttemptCheckout.fetch(plan: r.0, send: r.1)
        #expect(c.credentials.isEmpty)
        #expect(c.credentialErrors["c-1"] == #"fetch:credential of c-1 was refused: {"errors":{"id":["Credential not found!"]}}"#)
        let dir = try TestSupport.temporaryDirectory("checkout")
        defer { try? FileManager.default.removeItem(at: dir) }
        let recorder = Recorder()
        let done = try await AttemptExecutor(attemptID: "run-1", plan: c.plan, input: c.input, credentials: c.credentials,
                                             credentialErrors: c.credentialErrors, runner: FakeRunner(), events: recorder,
                                             workRoot: dir.path).run()
        #expect(done.reason == .exception && done.errorType == "CredentialLoadError")
        #expect(done.errorMessage?.contains("Credential not found!") == true, "\(done)")
    }
}

@Suite("The shapes of the events our worker sends (as ws-worker sends them)")
struct EventShapeTests {
    @Test("success says error_type and error_message null; one leaf's state is final_state and its output the final dataclip")
    func singleLeaf() async throws {
        let (c, r) = try await execute(makePlan([("a", #"out {"y":2,"webhookResponse":{"status":201,"body":{"ok":true}}}"#)], edges: []))
        let step = try #require(r.payloads("step:complete").first)
        #expect(step["error_type"] == .null && step["error_message"] == .null, "present and null: \(step.text)")
        #expect(step["webhook_response"] == ["status": 201, "body": ["ok": true]])
        let complete = try #require(r.payloads("run:complete").first)
        #expect(complete["error_type"] == .null && complete["error_message"] == .null)
        #expect(complete["final_state"] == ["y": 2, "webhookResponse": ["status": 201, "body": ["ok": true]]], "an object, not a string")
        #expect(complete["final_dataclip_id"] != nil && complete["final_dataclip_id"] == step["output_dataclip_id"])
        #expect(c.finalDataclipID == step["output_dataclip_id"]?.stringValue)
    }

    @Test("several leaves: final_state keys each leaf's state by its step id, and there is no final_dataclip_id")
    func severalLeaves() async throws {
        let plan = makePlan([("a", #"out {"n":1}"#), ("b", #"out {"b":true}"#), ("c", #"out {"c":true}"#)],
                            edges: [("a", "b", "always"), ("a", "c", "always")])
        let (_, r) = try await execute(plan)
        let steps = r.payloads("step:start").compactMap { $0["step_id"]?.stringValue }
        #expect(steps.count == 3)
        let complete = try #require(r.payloads("run:complete").first)
        #expect(complete["final_state"] == .object([steps[1]: ["b": true], steps[2]: ["c": true]]), "\(complete.text)")
        #expect(complete["final_dataclip_id"] == nil)
    }
}

@Suite("The worker's default capacity")
struct CapacityTests {
    @Test("two per core, bounded by memory at the default step limit")
    func machine() {
        #expect(WorkerConfiguration.machineCapacity(cores: 2, memoryBytes: 24 << 30).capacity == 4)
        #expect(WorkerConfiguration.machineCapacity(cores: 16, memoryBytes: 2 << 30).capacity == 4, "2 GB / 500 MB")
        #expect(WorkerConfiguration.machineCapacity(cores: 1, memoryBytes: 256 << 20).capacity == 1, "never below one")
        #expect(WorkerConfiguration.machineCapacity(cores: 8, memoryBytes: 64 << 30).why == "2 x 8 cores")
    }
}
