import Channels
import Foundation
import JWT
import LightningProtocol
import Testing
import TestSupport
@testable import Lightning

/// Every worker event exactly as OpenFn's ws-worker 1.25.0 builds it, transcribed by hand from its source
/// (OpenFn/kit, packages/ws-worker/src/events/*.ts, types from packages/lexicon/lightning.d.ts), each with a field
/// of its own that Lightning does not know (`x_unknown`), which must be ignored.
enum WSWorker {
    static let unknown: JSON = ["x_unknown": ["nested": [1, "two"]]]

    static func with(_ base: JSON, _ extra: JSON = unknown) -> JSON {
        guard case .object(var o) = base, case .object(let e) = extra else { return base }
        for (k, v) in e { o[k] = v }
        return .object(o)
    }

    /// run-start.ts: `{ versions }` with the worker's, the engine's, node's and the adaptors' versions, and
    /// (newer versions) a timestamp.
    static func runStart() -> JSON {
        with(["versions": ["worker": "1.25.0", "node": "22.12.0", "engine": "1.9.1", "compiler": "1.0.2",
                           "@openfn/language-common": "2.4.0"], "timestamp": "1764600000000000"])
    }

    /// step-start.ts: `{ step_id, job_id, timestamp }`, plus `input_dataclip_id` unless the dataclip was withheld.
    static func stepStart(step: String, job: String, input: String?) -> JSON {
        var j: JSON = ["step_id": .string(step), "job_id": .string(job), "timestamp": "1764600000000100"]
        if let input, case .object(var o) = j { o["input_dataclip_id"] = .string(input); j = .object(o) }
        return with(j)
    }

    /// run-log.ts with batching: `{ run_id, logs: [{ message, source, level, timestamp, step_id? }] }`; message
    /// items are strings or JSON values.
    static func batchLog(run: String, step: String?, messages: [[JSON]]) -> JSON {
        with(["run_id": .string(run), "logs": .array(messages.enumerated().map { i, m in
            var line: JSON = ["message": .array(m), "source": "JOB", "level": "info", "timestamp": .string("17646000000002\(10 + i)")]
            if let step, case .object(var o) = line { o["step_id"] = .string(step); line = .object(o) }
            return line
        })])
    }

    /// run-log.ts without batching (lexicon LegacyRunLogPayload): `{ run_id, message, source, level, timestamp, step_id }`.
    static func legacyLog(run: String, step: String, message: [JSON]) -> JSON {
        with(["run_id": .string(run), "message": .array(message), "source": "R/T", "level": "debug",
              "timestamp": "1764600000000300", "step_id": .string(step)])
    }

    /// step-complete.ts: `{ step_id, job_id, mem, duration, thread_id (the engine's, a number), timestamp,
    /// output_dataclip_id, output_dataclip (JSON text) }` and the exit reason `{ reason, error_type, error_message }`
    /// with nulls on success.
    static func stepComplete(step: String, job: String, output: String, outputID: String) -> JSON {
        with(["step_id": .string(step), "job_id": .string(job), "mem": ["job": 52_428_800, "system": 1_073_741_824],
              "duration": 42, "thread_id": 1, "timestamp": "1764600000000400", "output_dataclip_id": .string(outputID),
              "output_dataclip": .string(output), "reason": "success", "error_type": .null, "error_message": .null])
    }

    /// run-complete.ts (1.25): `{ final_state (the state object; multi-leaf: keyed by step id), timestamp, reason,
    /// error_type, error_message }`; PROTOCOL.md 5.3 adds `final_dataclip_id` for a single leaf.
    static func runComplete(finalState: JSON, finalDataclipID: String? = nil) -> JSON {
        var j: JSON = ["final_state": finalState, "timestamp": "1764600000000500", "reason": "success", "error_type": .null,
                       "error_message": .null]
        if let finalDataclipID, case .object(var o) = j { o["final_dataclip_id"] = .string(finalDataclipID); j = .object(o) }
        return with(j)
    }
}

let compatWorkflow = """
    name: compat
    triggers:
      - {name: hook, type: webhook, path: compat}
    jobs:
      - {name: one, adaptor: sh, body: "true"}
    edges:
      - {from: hook, to: one}
    """

extension Harness {
    /// Creates an attempt of `workflow` (unless `create` is false: then the oldest available one), claims it on
    /// `worker` and joins its channel.
    func claimed(_ worker: ChannelClient, workflow: String = "compat", input: String = #"{"data":{"n":1}}"#,
                 create: Bool = true) async throws -> (id: String, topic: String, plan: Plan)
    {
        let created = create ? try await lightning.startWork(workflow: workflow, input: Array(input.utf8)) : nil
        let claim = try await worker.push(topic: "worker:queue", event: "claim", payload: ["demand": 1, "worker_name": .null])
        let run = try #require(claim.response["runs"]?.arrayValue?.first)
        let id = try #require(run["id"]?.stringValue)
        if let created { #expect(id == created.attemptID) }
        let topic = "run:\(id)"
        try await worker.join(topic: topic, payload: { ["token": run["token"]!] })
        let plan = try await worker.push(topic: topic, event: "fetch:plan", payload: [:]).response.decode(Plan.self)
        return (id, topic, plan)
    }

    func count(_ sql: String, _ arguments: [String] = []) async throws -> Int {
        try t.store.database.readHere { db in try db.int(sql, arguments) ?? 0 }
    }
}

@Suite("Wire compatibility with OpenFn's ws-worker, idempotent events, bounded logs", .serialized)
struct CompatibilityTests {
    @Test("ws-worker 1.25.0's events, exactly as it builds them, run an attempt to the end and are stored right", arguments: Engine.all)
    func wsWorkerFixtures(_ engine: Engine) async throws {
        let h = try await Harness.make(engine)
        defer { Task { await h.stop() } }
        try await h.t.workflow(compatWorkflow)
        let worker = try await h.connectedWorker()
        defer { worker.close() }
        let (id, topic, plan) = try await h.claimed(worker)
        func push(_ event: String, _ payload: JSON) async throws -> ChannelClientReply {
            let r = try await worker.push(topic: topic, event: event, payload: payload)
            #expect(r.isOK, "\(event) was refused: \(r.response.text)")
            return r
        }
        let job = plan.jobs[0].id
        _ = try await push("run:start", WSWorker.runStart())
        _ = try await push("step:start", WSWorker.stepStart(step: "s-1", job: job, input: plan.dataclipID))
        _ = try await push("run:log", WSWorker.batchLog(run: id, step: "s-1", messages: [["hello", ["n": 1]], ["second"]]))
        _ = try await push("run:log", WSWorker.legacyLog(run: id, step: "s-1", message: ["legacy line"]))
        let output = #"{"data":{"n":2},"references":[]}"#
        _ = try await push("step:complete", WSWorker.stepComplete(step: "s-1", job: job, output: output, outputID: "out-1"))
        _ = try await push("run:complete", WSWorker.runComplete(finalState: ["data": ["n": 2], "references": []]))

        let a = try await h.t.store.attempt(id)
        #expect(a.state == .success && a.reason == "success" && a.errorType == nil && a.errorMessage == nil)
        #expect(a.startedAt == 1_764_600_000_000_000 && a.finishedAt == 1_764_600_000_000_500)
        let final = try JSON.parse(try await h.t.store.dataclip(try #require(a.finalDataclipID)))
        #expect(final == ["data": ["n": 2], "references": []])
        let steps = try await h.t.store.steps(attemptID: id)
        #expect(steps.count == 1 && steps[0].reason == "success" && steps[0].outputDataclipID == "out-1")
        #expect(try await h.t.store.dataclip("out-1") == Array(output.utf8))
        let logs = try await h.t.store.logs(attemptID: id, since: 0, limit: 10)
        #expect(logs.map(\.message) == [#"hello {"n":1}"#, "second", "legacy line"])
        #expect(logs.map(\.level) == ["info", "info", "debug"] && logs[2].source == "R/T" && logs.allSatisfy { $0.stepID == "s-1" })
    }

    @Test("a single leaf's final_dataclip_id reuses that step's output dataclip as the final state", arguments: Engine.all)
    func finalDataclipID(_ engine: Engine) async throws {
        let h = try await Harness.make(engine)
        defer { Task { await h.stop() } }
        try await h.t.workflow(compatWorkflow)
        let worker = try await h.connectedWorker()
        defer { worker.close() }
        let (id, topic, plan) = try await h.claimed(worker)
        let job = plan.jobs[0].id
        for (event, payload) in [("run:start", WSWorker.runStart()), ("step:start", WSWorker.stepStart(step: "s", job: job, input: nil)),
                                 ("step:complete", WSWorker.stepComplete(step: "s", job: job, output: #"{"x":1}"#, outputID: "leaf-out")),
                                 ("run:complete", WSWorker.runComplete(finalState: ["x": 1], finalDataclipID: "leaf-out"))] {
            #expect(try await worker.push(topic: topic, event: event, payload: payload).isOK, "\(event)")
        }
        let a = try await h.t.store.attempt(id)
        #expect(a.state == .success && a.finalDataclipID == "leaf-out")
        #expect(try await h.count("SELECT COUNT(*) FROM dataclips WHERE type = 'final_state'") == 0, "the state is not stored twice")
        // An id that names no output of this attempt is not trusted: the final state is stored instead.
        let (id2, topic2, plan2) = try await h.claimed(worker)
        for (event, payload) in [("run:start", WSWorker.runStart()), ("step:start", WSWorker.stepStart(step: "s2", job: plan2.jobs[0].id, input: nil)),
                                 ("run:complete", WSWorker.runComplete(finalState: ["y": 2], finalDataclipID: "leaf-out"))] {
            #expect(try await worker.push(topic: topic2, event: event, payload: payload).isOK, "\(event)")
        }
        let b = try await h.t.store.attempt(id2)
        #expect(b.finalDataclipID != "leaf-out")
        #expect(try JSON.parse(try await h.t.store.dataclip(try #require(b.finalDataclipID))) == ["y": 2])
    }

    /// Each optional field of each event, removed, null, or of another JSON type.
    static let mutations: [(event: String, field: String)] = [
        ("run:start", "versions"), ("run:start", "timestamp"),
        ("step:start", "input_dataclip_id"), ("step:start", "timestamp"),
        ("run:log", "level"), ("run:log", "source"), ("run:log", "timestamp"), ("run:log", "step_id"),
        ("step:complete", "error_type"), ("step:complete", "error_message"), ("step:complete", "output_dataclip_id"),
        ("step:complete", "output_dataclip"), ("step:complete", "output_dataclip_error"), ("step:complete", "mem"),
        ("step:complete", "duration"), ("step:complete", "thread_id"), ("step:complete", "timestamp"),
        ("step:complete", "webhook_response"),
        ("run:complete", "error_type"), ("run:complete", "error_message"), ("run:complete", "final_dataclip_id"),
        ("run:complete", "final_state"), ("run:complete", "timestamp"),
    ]
    static let variants: [JSON?] = [nil, .null, 42, 1.5, true, "text", [1, "x"], ["k": ["v": 1]]]

    @Test("every optional field removed, null or of another JSON type: no event refused, no attempt left open", arguments: Engine.all)
    func optionalFieldsAnyType(_ engine: Engine) async throws {
        let h = try await Harness.make(engine)
        defer { Task { await h.stop() } }
        try await h.t.workflow(compatWorkflow)
        let worker = try await h.connectedWorker()
        defer { worker.close() }
        for (event, field) in Self.mutations {
            for variant in Self.variants {
                // A level is one of six words: another string is a wrong value, not a wrong type.
                if field == "level", case .string = variant { continue }
                let (id, topic, plan) = try await h.claimed(worker)
                let job = plan.jobs[0].id
                let step = "s-\(UUID().uuidString.prefix(8))"
                let events: [(String, JSON)] = [
                    ("run:start", WSWorker.runStart()),
                    ("step:start", WSWorker.stepStart(step: step, job: job, input: plan.dataclipID)),
                    ("run:log", WSWorker.legacyLog(run: id, step: step, message: ["one"])),
                    ("step:complete", WSWorker.with(WSWorker.stepComplete(step: step, job: job, output: "{}", outputID: "o-\(step)"),
                                                    ["webhook_response": ["status": 201, "body": ["ok": true]]])),
                    ("run:complete", WSWorker.runComplete(finalState: [:], finalDataclipID: "o-\(step)")),
                ]
                for (name, payload) in events {
                    var p = payload
                    if name == event, case .object(var o) = p {
                        o[field] = variant
                        p = .object(o)
                    }
                    let r = try await worker.push(topic: topic, event: name, payload: p)
                    #expect(r.isOK, "\(name) with \(field) = \(variant?.text ?? "(absent)") was refused: \(r.response.text)")
                }
                let a = try await h.t.store.attempt(id)
                #expect(a.state == .success, "\(event).\(field) = \(variant?.text ?? "(absent)"): the attempt is \(a.state)")
            }
        }
    }

    @Test("a missing or unusable required field gets an error naming it, and the attempt can still finish", arguments: Engine.all)
    func requiredFields(_ engine: Engine) async throws {
        let h = try await Harness.make(engine)
        defer { Task { await h.stop() } }
        try await h.t.workflow(compatWorkflow)
        let worker = try await h.connectedWorker()
        defer { worker.close() }
        let (_, topic, plan) = try await h.claimed(worker)
        let job = plan.jobs[0].id
        func errors(_ event: String, _ payload: JSON) async throws -> JSON? {
            let r = try await worker.push(topic: topic, event: event, payload: payload)
            return r.status == "error" ? r.response["errors"] : nil
        }
        #expect(try await worker.push(topic: topic, event: "run:start", payload: WSWorker.runStart()).isOK)
        #expect(try await errors("step:start", ["job_id": .string(job)])?["step_id"] == ["can't be blank"])
        #expect(try await errors("step:start", ["step_id": ["no": 1], "job_id": .string(job)])?["step_id"] == ["must be a string"])
        #expect(try await errors("step:start", ["step_id": "s"])?["job_id"] == ["can't be blank"])
        #expect(try await worker.push(topic: topic, event: "step:start", payload: WSWorker.stepStart(step: "s", job: job, input: nil)).isOK)
        var noReason = WSWorker.stepComplete(step: "s", job: job, output: "{}", outputID: "o")
        if case .object(var o) = noReason { o["reason"] = nil; noReason = .object(o) }
        #expect(try await errors("step:complete", noReason)?["reason"] == ["can't be blank"])
        let badReason = WSWorker.with(noReason, ["reason": "finished"])
        #expect(try await errors("step:complete", badReason)?["reason"]?[0]?.stringValue?.hasPrefix("unknown reason \"finished\"") == true)
        #expect(try await errors("step:complete", WSWorker.with(noReason, ["reason": "success", "step_id": .null]))?["step_id"] != nil)
        #expect(try await errors("run:complete", ["final_state": [:]])?["reason"] == ["can't be blank"])
        #expect(try await errors("run:complete", "not an object")?["payload"] != nil)
        #expect(try await errors("run:log", ["run_id": "x", "logs": "no"])?["logs"] == ["must be a list"])
        // Nothing was half-done: the right events still finish the attempt.
        #expect(try await worker.push(topic: topic, event: "step:complete",
                                      payload: WSWorker.stepComplete(step: "s", job: job, output: "{}", outputID: "o")).isOK)
        #expect(try await worker.push(topic: topic, event: "run:complete", payload: WSWorker.runComplete(finalState: [:])).isOK)
    }

    @Test("every worker event resent after a lost reply is acknowledged with no second effect", arguments: Engine.all)
    func idempotentEvents(_ engine: Engine) async throws {
        let h = try await Harness.make(engine)
        defer { Task { await h.stop() } }
        try await h.t.workflow(compatWorkflow)
        let (_, viewerToken) = try await h.tokens()
        let worker = try await h.connectedWorker()
        defer { worker.close() }
        let (id, topic, plan) = try await h.claimed(worker)
        let viewer = try h.viewer(viewerToken)
        defer { viewer.close() }
        let (seen, _) = try await h.watch(viewer, id)
        let job = plan.jobs[0].id
        func twice(_ event: String, _ payload: JSON) async throws {
            #expect(try await worker.push(topic: topic, event: event, payload: payload).isOK, "\(event)")
            let again = try await worker.push(topic: topic, event: event, payload: payload)
            #expect(again.isOK, "the resent \(event) was refused: \(again.response.text)")
        }
        try await twice("run:start", WSWorker.runStart())
        let started = try await h.t.store.attempt(id).startedAt
        // A resend carries the time of the first send; one made later must not move the start either.
        #expect(try await worker.push(topic: topic, event: "run:start", payload: ["timestamp": "1764600009999999"]).isOK)
        #expect(try await h.t.store.attempt(id).startedAt == started)
        try await twice("step:start", WSWorker.stepStart(step: "s", job: job, input: plan.dataclipID))
        try await twice("step:complete", WSWorker.stepComplete(step: "s", job: job, output: #"{"a":1}"#, outputID: "o-s"))
        try await twice("run:complete", WSWorker.runComplete(finalState: ["a": 1]))
        let a = try await h.t.store.attempt(id)
        #expect(a.state == .success && a.finishedAt == 1_764_600_000_000_500)
        #expect(try await h.count("SELECT COUNT(*) FROM steps WHERE attempt_id = ?", [id]) == 1)
        #expect(try await h.count("SELECT COUNT(*) FROM dataclips WHERE type = 'final_state'") == 1)
        // A different ending for a final attempt is still refused.
        let late = try await worker.push(topic: topic, event: "run:complete", payload: ["reason": "fail", "error_type": "X", "error_message": "y"])
        let after = try await h.t.store.attempt(id).state
        #expect(late.status == "error" && after == .success)
        try await waitUntil("the viewer saw the attempt end") { seen.events.contains("attempt:complete") }
        #expect(seen.events.filter { $0 == "step:start" }.count == 1 && seen.events.filter { $0 == "step:complete" }.count == 1,
                "viewers saw each step event once: \(seen.events)")
        #expect(seen.events.filter { $0 == "attempt:complete" }.count == 1)
    }

    @Test("a second phx_join of a joined topic: the same join again is answered with no effect; a new one closes the old", arguments: Engine.all)
    func secondJoin(_ engine: Engine) async throws {
        let h = try await Harness.make(engine)
        defer { Task { await h.stop() } }
        try await h.t.workflow(compatWorkflow)
        let token = try h.workerToken("raw-worker")
        let script = TestSupport.packageRoot.appendingPathComponent("Tests/LightningTests/Interop/double_join.py").path
        let r = try await TestSupport.run(try #require(TestSupport.which("python3")), [script, "\(h.port)", token])
        #expect(r.status == 0, "\(r.stdout)\n\(r.stderr)")
        let lines = r.stdout.split(separator: "\n").map(String.init)
        #expect(lines.contains("first join ok"))
        #expect(lines.contains("same join again ok"))
        #expect(lines.contains("old join closed"))
        #expect(lines.contains("new join ok"))
        #expect(lines.contains("claim on the new join ok"))
        #expect(try await h.count("SELECT COUNT(*) FROM workers WHERE name = 'raw-worker'") == 1)
    }

    @Test("a worker that refuses an attempt token ends that attempt at once, with its reason; no one else can", arguments: Engine.all)
    func tokenRefused(_ engine: Engine) async throws {
        let h = try await Harness.make(engine)
        defer { Task { await h.stop() } }
        try await h.t.workflow(compatWorkflow)
        let token = try h.workerToken("w-1")
        let worker = try h.client { token }
        defer { worker.close() }
        try await waitUntil("w-1 connected") { worker.connected }
        // The extension is offered in the join reply, so our workers never send it to a Lightning without it.
        let joined = try await worker.join(topic: "worker:queue", payload: { ["capacity": 2] })
        #expect(joined["extensions"]?.arrayValue?.contains("run:refused") == true)
        let other = try await h.connectedWorker("w-2")
        defer { other.close() }
        let created = try await h.lightning.startWork(workflow: "compat", input: Array("{}".utf8))
        _ = try await worker.push(topic: "worker:queue", event: "claim", payload: ["demand": 1])
        let stranger = try await other.push(topic: "worker:queue", event: "run:refused",
                                            payload: ["id": .string(created.attemptID), "reason": "not mine"])
        let still = try await h.t.store.attempt(created.attemptID).state
        #expect(stranger.status == "error" && still == .claimed)
        let r = try await worker.push(topic: "worker:queue", event: "run:refused",
                                      payload: ["id": .string(created.attemptID), "reason": "attempt token refused: bad signature"])
        #expect(r.isOK)
        let a = try await h.t.store.attempt(created.attemptID)
        #expect(a.state == .exception && a.errorType == "AttemptTokenRefused")
        #expect(a.errorMessage == "the worker w-1 refused the attempt token: attempt token refused: bad signature")
    }

    @Test("claim:checkout: a worker that asks gets each attempt's plan and small input dataclip with the claim; others do not", arguments: Engine.all)
    func claimCheckout(_ engine: Engine) async throws {
        let h = try await Harness.make(engine)
        defer { Task { await h.stop() } }
        try await h.t.workflow(compatWorkflow)
        for asks in [true, false] {
            let token = try h.workerToken("w-\(asks)")
            let worker = try h.client { token }
            defer { worker.close() }
            try await waitUntil("connected") { worker.connected }
            let joined = try await worker.join(topic: "worker:queue", payload: {
                asks ? ["capacity": 1, "extensions": ["claim:checkout"]] : ["capacity": 1]
            })
            #expect(joined["extensions"]?.arrayValue?.contains("claim:checkout") == true)
            let created = try await h.lightning.startWork(workflow: "compat", input: Array(#"{"data":{"n":7}}"#.utf8))
            let run = try #require(try await worker.push(topic: "worker:queue", event: "claim", payload: ["demand": 1])
                .response["runs"]?.arrayValue?.first)
            #expect(run["id"]?.stringValue == created.attemptID)
            if asks {
                let plan = try #require(run["plan"]).decode(Plan.self)
                #expect(plan.id == created.attemptID && plan.dataclipID == created.dataclipID && plan.jobs.count == 1)
                #expect(run["dataclip"] == ["data": ["n": 7]])
            } else {
                #expect(run["plan"] == nil && run["dataclip"] == nil, "OpenFn's workers get the claim reply of the lexicon")
            }
        }
        // A dataclip over the limit is left for fetch:dataclip.
        let token = try h.workerToken("w-big")
        let worker = try h.client { token }
        defer { worker.close() }
        try await waitUntil("connected") { worker.connected }
        try await worker.join(topic: "worker:queue", payload: { ["capacity": 1, "extensions": ["claim:checkout"]] })
        let big = #"{"x":""# + String(repeating: "y", count: 70_000) + #""}"#
        _ = try await h.lightning.startWork(workflow: "compat", input: Array(big.utf8))
        let run = try #require(try await worker.push(topic: "worker:queue", event: "claim", payload: ["demand": 1])
            .response["runs"]?.arrayValue?.first)
        #expect(run["plan"] != nil && run["dataclip"] == nil)
    }

    @Test("a restart keeps when a worker went away: its attempts are lost after the grace period, not the claim timeout")
    func goneSinceSurvivesRestart() async throws {
        let t = try TestStore()
        defer { t.remove() }
        let keys = try WorkerKeySet.generate()
        func lightning(grace: Double) throws -> Lightning {
            var config = LightningConfiguration(attemptSigningKey: try .rsa(pem: keys.keyPair.privateKeyPEM),
                                                workerSecretKey: try .hmac(secret: keys.workerSecret))
            config.port = 0
            config.graceSeconds = grace
            config.janitorIntervalSeconds = 0.2
            config.cronEnabled = false
            let l = try Lightning(configuration: config, store: t.store)
            try l.start()
            return l
        }
        try await t.workflow(compatWorkflow)  // run_timeout_ms 300,000: the claim timeout is minutes away
        let ids = try await t.work(2, workflow: "compat")
        for (i, id) in ids.enumerated() {
            try await t.store.workerConnected(WorkerJoin(name: "w\(i)", capacity: 1, version: nil, authMode: "secret"), at: Timestamp.nowMicros())
            #expect(try await t.store.claim(demand: 1, workerName: "w\(i)").map(\.id) == [id])
        }
        // w0 said goodbye before the restart; w1's record still says connected (Lightning was killed under it).
        try await t.store.workerDisconnected(name: "w0", connectionID: nil, at: Timestamp.nowMicros() - 3_600_000_000)
        let l = try lightning(grace: 1)
        defer { Task { await l.shutdown() } }
        try await waitUntil("both attempts lost", timeout: .seconds(20)) {
            let a = try await t.store.attempt(ids[0]).state, b = try await t.store.attempt(ids[1]).state
            return a == .lost && b == .lost
        }
        #expect(try await t.store.attempt(ids[0]).errorType == ErrorType.lostAfterClaim)
    }

    @Test("retries: N gives an attempt that ends lost or exception a new attempt in the same work order, N times", arguments: Engine.all)
    func retries(_ engine: Engine) async throws {
        let h = try await Harness.make(engine)
        defer { Task { await h.stop() } }
        try await h.t.workflow(compatWorkflow.replacingOccurrences(of: "name: compat\n", with: "name: compat\noptions: {retries: 1}\n"))
        let worker = try await h.connectedWorker()
        defer { worker.close() }
        let first = try await h.claimed(worker)
        #expect(try await worker.push(topic: first.topic, event: "run:start", payload: WSWorker.runStart()).isOK)
        #expect(try await worker.push(topic: first.topic, event: "run:complete",
                                      payload: ["reason": "exception", "error_type": "CredentialLoadError", "error_message": "no credential"]).isOK)
        let a = try await h.t.store.attempt(first.id)
        let chain = try await h.t.store.attempts(workOrderID: a.workOrderID)
        #expect(chain.map(\.attemptNumber) == [1, 2] && chain[1].retryOf == first.id && chain[1].state == .available)
        let note = try await h.t.store.logs(attemptID: chain[1].id, since: 0, limit: 5)
        #expect(note.first?.message == "retry 1 of 1: attempt \(first.id) ended exception (no credential)" && note.first?.source == "LGT")
        // The retry fails the same way: no third attempt (retries: 1).
        let second = try await h.claimed(worker, create: false)
        #expect(second.id == chain[1].id)
        #expect(try await worker.push(topic: second.topic, event: "run:start", payload: WSWorker.runStart()).isOK)
        #expect(try await worker.push(topic: second.topic, event: "run:complete",
                                      payload: ["reason": "exception", "error_type": "X", "error_message": "again"]).isOK)
        #expect(try await h.t.store.attempts(workOrderID: a.workOrderID).count == 2)
        // A job's own failure is not retried.
        let third = try await h.claimed(worker)
        #expect(try await worker.push(topic: third.topic, event: "run:start", payload: WSWorker.runStart()).isOK)
        #expect(try await worker.push(topic: third.topic, event: "run:complete", payload: ["reason": "fail", "error_type": "JobError"]).isOK)
        let c = try await h.t.store.attempt(third.id)
        #expect(try await h.t.store.attempts(workOrderID: c.workOrderID).count == 1)
        // The API shows the chain.
        let (admin, _) = try await h.tokens()
        let shown = try await h.http("GET", "/api/attempts/\(chain[1].id)", token: admin)
        #expect(shown.json["attempt_number"] == 2 && shown.json["retry_of"]?.stringValue == first.id, "\(shown.text)")
    }

    @Test("lost attempts are retried too", arguments: Engine.all)
    func lostIsRetried(_ engine: Engine) async throws {
        let h = try await Harness.make(engine, grace: 0.3)
        defer { Task { await h.stop() } }
        try await h.t.workflow(compatWorkflow.replacingOccurrences(of: "name: compat\n", with: "name: compat\noptions: {retries: 2}\n"))
        let worker = try await h.connectedWorker()
        let first = try await h.claimed(worker)
        worker.close()
        try await waitUntil("the retry", timeout: .seconds(20)) {
            try await h.t.store.attempt(first.id).state == .lost
        }
        let chain = try await h.t.store.attempts(workOrderID: try await h.t.store.attempt(first.id).workOrderID)
        #expect(chain.count == 2 && chain[1].state == .available && chain[1].retryOf == first.id)
    }

    @Test("Lightning enforces the attempt's log limit itself: later lines are dropped, counted and noted once", arguments: Engine.all)
    func logLimit(_ engine: Engine) async throws {
        let h = try await Harness.make(engine)
        defer { Task { await h.stop() } }
        try await h.t.workflow(compatWorkflow.replacingOccurrences(of: "name: compat\n", with: "name: compat\noptions: {log_limit_mb: 1}\n"))
        let worker = try await h.connectedWorker()
        defer { worker.close() }
        let (id, topic, plan) = try await h.claimed(worker)
        #expect(try await worker.push(topic: topic, event: "run:start", payload: WSWorker.runStart()).isOK)
        let line = String(repeating: "x", count: 999)
        for batch in 0..<3 {
            let payload = WSWorker.batchLog(run: id, step: nil, messages: (0..<500).map { i in [.string("\(batch * 500 + i) \(line)")] })
            #expect(try await worker.push(topic: topic, event: "run:log", payload: payload).isOK, "batches past the limit are acknowledged")
        }
        _ = plan
        #expect(try await worker.push(topic: topic, event: "run:complete", payload: WSWorker.runComplete(finalState: [:])).isOK)
        let logs = try await h.t.store.logs(attemptID: id, since: 0, limit: 5000)
        let kept = logs.filter { $0.source == "JOB" }
        #expect(kept.count < 1100 && kept.count > 900)
        #expect(kept.reduce(0) { $0 + $1.message.utf8.count } <= 1_000_000)
        let notes = logs.filter { $0.source == "LGT" }.map(\.message)
        #expect(notes.count == 2, "\(notes)")
        #expect(notes.first == "this attempt reached its log limit of 1 MB: further lines are dropped")
        #expect(notes.last == "\(1500 - kept.count) log lines were dropped: this attempt went over its log limit of 1 MB")
    }

    @Test("newlines inside a message are kept (CR LF and CR become newlines), and colours; other control characters and escapes are stripped", arguments: Engine.all)
    func newlines(_ engine: Engine) async throws {
        let h = try await Harness.make(engine)
        defer { Task { await h.stop() } }
        try await h.t.workflow(compatWorkflow)
        let worker = try await h.connectedWorker()
        defer { worker.close() }
        let (id, topic, _) = try await h.claimed(worker)
        #expect(try await worker.push(topic: topic, event: "run:start", payload: WSWorker.runStart()).isOK)
        #expect(try await worker.push(topic: topic, event: "run:log",
                                      payload: WSWorker.batchLog(run: id, step: nil, messages: [["first\nsecond\r\nthird\rfourth\u{7}\tend"],
                                          ["\u{1B}[1;31mred\u{1B}[0m \u{1B}]0;title\u{7}\u{1B}[2Jcleared\u{1B}[6n\u{9B}c1"]])).isOK)
        let logs = try await h.t.store.logs(attemptID: id, since: 0, limit: 5)
        #expect(logs.map(\.message) == ["first\nsecond\nthird\nfourth\tend", "\u{1B}[1;31mred\u{1B}[0m clearedc1"])
    }

    static let syncWorkflow = """
        name: sync
        triggers:
          - {name: hook, type: webhook, path: sync, webhook_reply: after_completion, webhook_reply_timeout_ms: 60000}
          - {name: slow, type: webhook, path: slow, webhook_reply: after_completion, webhook_reply_timeout_ms: 1000}
        jobs:
          - {name: one, adaptor: sh, body: "true"}
        edges:
          - {from: hook, to: one}
          - {from: slow, to: one}
        """

    @Test("webhook_reply after_completion holds the POST until the attempt is final and answers with webhookResponse", arguments: Engine.all)
    func synchronousWebhook(_ engine: Engine) async throws {
        let h = try await Harness.make(engine)
        defer { Task { await h.stop() } }
        _ = try await h.t.store.applyWorkflow(try WorkflowDefinition.parse(Self.syncWorkflow))
        let worker = try await h.connectedWorker()
        defer { worker.close() }
        // A webhookResponse status of 204 answers without a body (one would be read as the next response on the
        // connection); a 1xx is not a final answer, so the default 200 stands.
        for (withResponse, status) in [(true, 201), (true, 204), (true, 100), (false, 0)] {
            let post = Task { try await h.http("POST", "/i/sync", token: nil, body: #"{"order":7}"#) }
            var run: JSON?
            try await waitUntil("the webhook's attempt") {
                let claim = try await worker.push(topic: "worker:queue", event: "claim", payload: ["demand": 1])
                run = claim.response["runs"]?.arrayValue?.first
                return run != nil
            }
            let id = try #require(run?["id"]?.stringValue)
            let token = try #require(run?["token"])
            let topic = "run:\(id)"
            try await worker.join(topic: topic, payload: { ["token": token] })
            let plan = try await worker.push(topic: topic, event: "fetch:plan", payload: [:]).response.decode(Plan.self)
            var complete = WSWorker.stepComplete(step: "s-\(status)", job: plan.jobs[0].id, output: #"{"done":1}"#, outputID: "o-\(status)")
            if withResponse { complete = WSWorker.with(complete, ["webhook_response": ["status": .int(Int64(status)), "body": ["accepted": 7]]]) }
            for (event, payload) in [("run:start", WSWorker.runStart()), ("step:start", WSWorker.stepStart(step: "s-\(status)", job: plan.jobs[0].id, input: nil)),
                                     ("step:complete", complete), ("run:complete", WSWorker.runComplete(finalState: ["done": 1]))] {
                #expect(try await worker.push(topic: topic, event: event, payload: payload).isOK)
            }
            let answer = try await post.value
            if status == 204 {
                #expect(answer.status == 204 && answer.text.isEmpty, "\(answer.text)")
            } else if withResponse {
                #expect(answer.status == (status == 100 ? 200 : status) && answer.json == ["accepted": 7], "\(status): \(answer.text)")
            } else {
                #expect(answer.status == 200 && answer.json["final_state"] == ["done": 1] && answer.json["state"] == "success", "\(answer.text)")
            }
        }
        // Nobody runs it: past its reply timeout the caller gets 504 and the ids.
        let late = try await h.http("POST", "/i/slow", token: nil, body: "{}")
        #expect(late.status == 504 && late.json["attempt_id"]?.stringValue != nil, "\(late.text)")
    }

    @Test("a chunked request body gets 411 at once, not a wait for a body libwebsockets never finishes, and the server keeps serving")
    func chunkedBodyRefused() async throws {
        let h = try Harness()
        defer { Task { await h.stop() } }
        try await h.t.workflow()
        let r = try await TestSupport.run("/usr/bin/curl", ["-s", "-m", "20", "-D", "-", "-X", "POST", "-H", "Transfer-Encoding: chunked",
                                                             "-H", "Content-Type: application/json", "--data-binary", #"{"a":1}"#,
                                                             "http://127.0.0.1:\(h.port)/i/greet"])
        #expect(r.stdout.hasPrefix("HTTP/1.1 411 Length Required"), "\(r.stdout)")
        #expect(r.stdout.contains("Content-Length"), "the answer says what to send instead: \(r.stdout)")
        #expect(r.stdout.lowercased().contains("connection: close"), "\(r.stdout)")
        // Nothing was stored, and the same body with a length is taken.
        let ok = try await h.http("POST", "/i/greet", token: nil, body: #"{"a":1}"#)
        #expect(ok.status == 200, "\(ok.text)")
        let (admin, _) = try await h.tokens()
        let attempts = try await h.http("GET", "/api/attempts", token: admin)
        #expect(attempts.json["attempts"]?.arrayValue?.count == 1, "\(attempts.text)")
    }

    @Test("an HTTP body over the limit gets 413 and the connection is closed")
    func bodyTooLarge() async throws {
        let h = try Harness { $0.channel.maxHTTPBodyBytes = 1000 }
        defer { Task { await h.stop() } }
        let r = try await TestSupport.run("/usr/bin/curl", ["-s", "-D", "-", "-o", "/dev/null", "-X", "POST", "--data-binary",
                                                             String(repeating: "x", count: 5000), "http://127.0.0.1:\(h.port)/i/none"])
        #expect(r.stdout.hasPrefix("HTTP/1.1 413"), "\(r.stdout)")
        #expect(r.stdout.lowercased().contains("connection: close"), "\(r.stdout)")
    }
}
