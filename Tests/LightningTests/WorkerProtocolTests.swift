import Channels
import Foundation
import JWT
import Testing
import TestSupport
@testable import Lightning

/// A Lightning server on a kernel-picked port with its own database, keys and a scripted worker's tools.
/// One key set for every harness of the run: generating a 2048-bit RSA key takes a cooperative thread for up to
/// a second, and forty suites starting at once each making their own starved every other test's tasks.
let sharedTestKeys = Result { try WorkerKeySet.generate() }

struct Harness {
    let t: TestStore
    let lightning: Lightning
    let keys: WorkerKeySet
    var port: Int { lightning.port }

    init(grace: Double = 30, storeDirectory: URL? = nil, configure: (inout LightningConfiguration) -> Void = { _ in }) throws {
        try self.init(store: try TestStore(directory: storeDirectory), grace: grace, configure: configure)
    }

    /// On either engine (the tests of the store's behaviour through the worker protocol run on both).
    static func make(_ engine: Engine, grace: Double = 30, configure: (inout LightningConfiguration) -> Void = { _ in }) async throws -> Harness {
        try Harness(store: try await TestStore.make(engine), grace: grace, configure: configure)
    }

    init(store: TestStore, grace: Double, configure: (inout LightningConfiguration) -> Void) throws {
        t = store
        keys = try sharedTestKeys.get()
        var config = LightningConfiguration(attemptSigningKey: try .rsa(pem: keys.keyPair.privateKeyPEM),
                                            workerSecretKey: try .hmac(secret: keys.workerSecret))
        config.port = 0
        config.graceSeconds = grace
        config.janitorIntervalSeconds = 0.2
        // Cron runs on the wall clock: tests drive CronScheduler themselves instead.
        config.cronEnabled = false
        configure(&config)
        lightning = try Lightning(configuration: config, store: t.store)
        try lightning.start()
    }

    func stop() async {
        await lightning.shutdown()
        t.remove()
    }

    func workerToken(_ name: String = "worker-1", secret: String? = nil, claims: WorkerTokenClaims? = nil) throws -> String {
        try JWT.sign(claims ?? WorkerTokenClaims(workerID: name), key: .hmac(secret: secret ?? keys.workerSecret))
    }

    func client(token: @escaping @Sendable () -> String) throws -> ChannelClient {
        var config = ChannelClient.Configuration(url: "ws://127.0.0.1:\(port)/worker/websocket") {
            ["token": token(), "api_version": "1.2", "worker_version": "test", "vsn": "2.0.0"]
        }
        config.reconnectBase = .milliseconds(50)
        config.reconnectCap = .milliseconds(200)
        let c = try ChannelClient(configuration: config)
        try c.connect()
        return c
    }

    func connectedWorker(_ name: String = "worker-1") async throws -> ChannelClient {
        let token = try workerToken(name)
        let c = try client { token }
        try await waitUntil("\(name) connected") { c.connected }
        try await c.join(topic: "worker:queue", payload: { ["capacity": 2] })
        return c
    }
}

func waitUntil(_ what: String, timeout: Duration = .seconds(10), _ condition: () async throws -> Bool) async throws {
    let deadline = ContinuousClock.now + timeout
    while try await !condition() {
        if ContinuousClock.now > deadline { throw TestSupport.Failure("timed out waiting for \(what)") }
        try await Task.sleep(for: .milliseconds(10))
    }
}

/// Waits for the first client event other than `.connected`.
func firstProblem(_ client: ChannelClient) async -> ChannelClient.Event? {
    for await e in client.events where e != .connected { return e }
    return nil
}

@Suite("The worker protocol over a real socket", .serialized)
struct WorkerProtocolTests {
    @Test("a scripted worker runs an attempt through every event of section 5", arguments: Engine.all)
    func fullAttempt(_ engine: Engine) async throws {
        let h = try await Harness.make(engine)
        defer { Task { await h.stop() } }
        _ = try await h.t.store.setCredential(name: "api", body: Array(#"{"username":"ada","password":"pa55word-xyz"}"#.utf8))
        try await h.t.workflow()
        let worker = try await h.connectedWorker()
        defer { worker.close() }

        let created = try await h.lightning.startWork(workflow: "greet", input: Array(#"{"hello":"world"}"#.utf8))
        let claim = try await worker.push(topic: "worker:queue", event: "claim", payload: ["demand": 1, "worker_name": "worker-1"])
        let runs = try #require(claim.response["runs"]?.arrayValue)
        #expect(runs.count == 1 && runs[0]["id"]?.stringValue == created.attemptID)
        let token = try #require(runs[0]["token"]?.stringValue)
        let claims = try AttemptTokenClaims.verify(token, key: .rsa(pem: h.keys.keyPair.publicKeyPEM), attemptID: created.attemptID)
        #expect(claims.sub == "run:\(created.attemptID)")
        #expect(try await h.t.store.attempt(created.attemptID).state == .claimed)

        let topic = "run:\(created.attemptID)"
        try await worker.join(topic: topic, payload: { ["token": .string(token)] })
        let plan = try await worker.push(topic: topic, event: "fetch:plan", payload: [:]).response.decode(Plan.self)
        #expect(plan.jobs.count == 2 && plan.dataclipID == created.dataclipID)

        let dataclip = try await worker.push(topic: topic, event: "fetch:dataclip", payload: ["id": .string(plan.dataclipID)])
        #expect(dataclip.binary.map { String(decoding: $0, as: UTF8.self) } == #"{"hello":"world"}"#)

        let credentialID = try #require(plan.jobs[0].credentialID)
        let credential = try await worker.push(topic: topic, event: "fetch:credential", payload: ["id": .string(credentialID)])
        #expect(credential.response["username"] == "ada")

        #expect(try await worker.push(topic: topic, event: "run:start", payload: ["versions": [:], "timestamp": "1700000000000000"]).isOK)
        #expect(try await h.t.store.attempt(created.attemptID).state == .started)
        let step = try await worker.push(topic: topic, event: "step:start",
                                         payload: ["step_id": "s-1", "job_id": .string(plan.jobs[0].id), "timestamp": "1700000000000001"])
        #expect(step.response["step_id"] == "s-1")
        let log = try await worker.push(topic: topic, event: "run:log", payload: [
            "run_id": .string(created.attemptID), "message": ["logging in as ada with pa55word-xyz", ["n": 1]],
            "level": "info", "source": "JOB", "timestamp": "1700000000000002", "step_id": "s-1"])
        #expect(log.isOK && log.response["log_line_id"] != nil)
        let batch = try await worker.push(topic: topic, event: "run:batch_logs", payload: [
            "run_id": .string(created.attemptID),
            "logs": .array((0..<3).map { i in ["message": .array([.string("line \(i)\u{7}")]), "level": "info", "source": "JOB",
                                              "timestamp": "1700000000000003", "step_id": "s-1"] })])
        #expect(batch.isOK)
        let complete = StepComplete(stepID: "s-1", jobID: plan.jobs[0].id, reason: .success, outputDataclip: #"{"out":1}"#)
        #expect(try await worker.push(topic: topic, event: "step:complete", payload: JSON(encoding: complete)).isOK)
        #expect(try await worker.push(topic: topic, event: "run:complete",
                                      payload: JSON(encoding: AttemptComplete(reason: .success, finalState: #"{"out":1}"#))).isOK)

        let a = try await h.t.store.attempt(created.attemptID)
        #expect(a.state == .success && a.finalDataclipID != nil)
        let logs = try await h.t.store.logs(attemptID: created.attemptID, since: 0, limit: 100)
        #expect(logs.map(\.seq) == [1, 2, 3, 4])
        #expect(logs[0].message == #"logging in as *** with *** {"n":1}"#)
        #expect(logs[1].message == "line 0", "control characters are stripped")
        let steps = try await h.t.store.steps(attemptID: created.attemptID)
        #expect(steps.first?.reason == "success" && steps.first?.outputDataclipID != nil)

        // Late events for a final attempt are refused and change nothing.
        let late = try await worker.push(topic: topic, event: "run:complete", payload: JSON(encoding: AttemptComplete(reason: .fail)))
        #expect(late.status == "error")
        #expect(try await h.t.store.attempt(created.attemptID).state == .success)
    }

    @Test("on SQLite the worker socket's reads never wait for the pool's readers: a claim is answered while they are all held")
    func serviceThreadReads() async throws {
        let h = try Harness()
        defer { Task { await h.stop() } }
        try await h.t.workflow()
        let token = try h.workerToken()
        let worker = try h.client { token }
        defer { worker.close() }
        try await waitUntil("the worker connected") { worker.connected }
        try await worker.join(topic: "worker:queue", payload: { ["capacity": 2, "extensions": [.string(Wire.Extension.claimCheckout)]] })
        let created = try await h.lightning.startWork(workflow: "greet", input: Array(#"{"hello":"world"}"#.utf8))

        // Every reader connection of the pool held (a console or many viewers reading) until the claim is answered.
        let db = try #require(h.t.store.database as? SQLiteDatabase)
        let readers = db.pool.configuration.maximumReaderCount
        let held = DispatchSemaphore(value: 0), release = DispatchSemaphore(value: 0)
        for _ in 0..<readers {
            db.pool.asyncRead { _ in
                held.signal()
                release.wait()
            }
        }
        for _ in 0..<readers { await withCheckedContinuation { c in DispatchQueue.global().async { held.wait(); c.resume() } } }
        defer { for _ in 0..<readers { release.signal() } }

        // The claim reads the attempt's plan and input for the reply (claim:checkout) on the socket service thread.
        let claim = try await worker.push(topic: "worker:queue", event: "claim", payload: ["demand": 1, "worker_name": "worker-1"],
                                          timeout: .seconds(20))
        let runs = try #require(claim.response["runs"]?.arrayValue)
        #expect(runs.count == 1 && runs[0]["id"]?.stringValue == created.attemptID)
        #expect(runs[0]["plan"] != nil && runs[0]["dataclip"] == ["hello": "world"])
    }

    @Test("four workers claiming over real sockets: each of 120 attempts is claimed exactly once", arguments: Engine.all)
    func concurrentSocketClaims(_ engine: Engine) async throws {
        let h = try await Harness.make(engine)
        defer { Task { await h.stop() } }
        try await h.t.workflow("name: free\njobs:\n  - {name: a, adaptor: sh, body: 'true'}")
        var ids: [String] = []
        for _ in 0..<120 { ids.append(try await h.lightning.startWork(workflow: "free", input: Array("{}".utf8)).attemptID) }
        var workers: [ChannelClient] = []
        for i in 0..<4 { workers.append(try await h.connectedWorker("w\(i)")) }
        defer { workers.forEach { $0.close() } }
        let claimed = try await withThrowingTaskGroup(of: [String].self) { group in
            for w in workers {
                group.addTask {
                    var mine: [String] = []
                    while true {
                        let r = try await w.push(topic: "worker:queue", event: "claim", payload: ["demand": 2])
                        let runs = r.response["runs"]?.arrayValue ?? []
                        if runs.isEmpty { return mine }
                        mine += runs.compactMap { $0["id"]?.stringValue }
                    }
                }
            }
            return try await group.reduce(into: [String]()) { $0 += $1 }
        }
        #expect(claimed.count == 120 && Set(claimed) == Set(ids))
    }

    @Test("malformed frames, bad JSON and oversize messages close only that socket; the server keeps serving", arguments: Engine.all)
    func malformedInput(_ engine: Engine) async throws {
        let h = try await Harness.make(engine)
        defer { Task { await h.stop() } }
        let token = try h.workerToken()
        let script = """
            import json, sys
            from websockets.sync.client import connect
            from websockets.exceptions import ConnectionClosed
            url = "ws://127.0.0.1:%s/worker/websocket?token=%s&vsn=2.0.0" % (sys.argv[1], sys.argv[2])
            codes = []
            for frame in ["{not json", json.dumps({"an": "object"}), json.dumps([1, 2, 3]), "x" * 33000000]:
                with connect(url, max_size=None) as ws:
                    ws.send(frame)
                    try:
                        ws.recv(timeout=10)
                        codes.append("no close")
                    except ConnectionClosed as e:
                        codes.append(e.rcvd.code if e.rcvd else "none")
            print(json.dumps(codes))
            """
        let file = h.t.dir.appendingPathComponent("malformed.py").path
        try script.write(toFile: file, atomically: true, encoding: .utf8)
        let port = h.port
        let r = try await TestSupport.python(file, ["\(port)", token])
        #expect(r.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "[1003, 1003, 1003, 1009]", "\(r.stdout) \(r.stderr)")
        let good = try await h.connectedWorker()
        good.close()
    }

    @Test("run:log read in one pass: usual batches, unusual ones the usual way, a bad line refused, a cut payload closes the socket", arguments: Engine.all)
    func rawLogBatches(_ engine: Engine) async throws {
        let h = try await Harness.make(engine)
        defer { Task { await h.stop() } }
        // A job with a credential: its values are masked in lines read either way (ws-worker masks nothing itself).
        _ = try await h.t.store.setCredential(name: "api", body: Array(#"{"password":"pa55word-xyz"}"#.utf8))
        try await h.t.workflow(freeWorkflow.replacingOccurrences(of: "body: \"true\"", with: "body: \"true\", credential: api"))
        let worker = try await h.connectedWorker()
        defer { worker.close() }
        let created = try await h.lightning.startWork(workflow: "free", input: Array("{}".utf8))
        let claim = try await worker.push(topic: "worker:queue", event: "claim", payload: ["demand": 1])
        let runToken = try #require(claim.response["runs"]?.arrayValue?.first?["token"]?.stringValue)
        let topic = "run:\(created.attemptID)"
        // A second socket of the same worker, speaking raw frames: the join, then run:log events of each kind.
        let script = """
            import json, sys
            from websockets.sync.client import connect
            from websockets.exceptions import ConnectionClosed
            port, token, topic, run_token = sys.argv[1:5]
            out = []
            with connect("ws://127.0.0.1:%s/worker/websocket?token=%s&vsn=2.0.0" % (port, token)) as ws:
                def call(ref, event, payload):
                    ws.send(json.dumps(["1", ref, topic, event, payload]))
                    return json.loads(ws.recv(timeout=10))[4]
                out.append(call("1", "phx_join", {"token": run_token})["status"])
                line = {"message": ["usual", "line \\"quoted\\"\\u00e9 pa55word-xyz"], "level": "warn", "source": "JOB",
                        "timestamp": "1700000000000001", "step_id": None, "worker_seq": 1, "extra": {"ignored": [1]}}
                out.append(call("2", "run:log", {"run_id": "x", "logs": [line]})["status"])
                unusual = {"message": ["with", {"n": 1}, "pa55word-xyz"], "timestamp": 1700000000000002, "worker_seq": 2}
                out.append(call("3", "run:log", {"run_id": "x", "logs": [unusual]})["status"])
                out.append(call("4", "run:log", {"logs": [{"message": ["x"], "level": "loud", "worker_seq": 3}]})["response"])
                out.append(call("5", "run:log", {"logs": [{"message": ["x"], "worker_seq": 0}]})["response"])
                # 19 digits past Int64: Lightning's clock instead (it trapped before, taking Lightning down).
                huge = {"message": ["huge timestamp"], "timestamp": "9999999999999999999", "worker_seq": 3}
                out.append(call("7", "run:log", {"logs": [huge]})["status"])
                ws.send('["1","6","%s","run:log",{"logs":[{"message":["cut"]}]' % topic)
                try:
                    ws.recv(timeout=10)
                    out.append("no close")
                except ConnectionClosed as e:
                    out.append(e.rcvd.code if e.rcvd else "none")
            print(json.dumps(out))
            """
        let file = h.t.dir.appendingPathComponent("rawlogs.py").path
        try script.write(toFile: file, atomically: true, encoding: .utf8)
        let r = try await TestSupport.python(file, ["\(h.port)", try h.workerToken(), topic, runToken])
        let out = try JSON.parse(r.stdout)
        #expect(out[0] == "ok" && out[1] == "ok" && out[2] == "ok", "\(r.stdout) \(r.stderr)")
        #expect(out[3]?["errors"]?["level"] == ["unknown level loud"], "\(r.stdout)")
        #expect(out[4]?["errors"]?["worker_seq"] == ["must be a positive integer"], "\(r.stdout)")
        #expect(out[5] == "ok" && out[6] == .int(1003), "\(r.stdout)")
        let lines = try await h.t.store.logs(attemptID: created.attemptID, since: 0, limit: 10)
        #expect(lines.map(\.message) == ["usual line \"quoted\"é ***", #"with {"n":1} ***"#, "huge timestamp"])
        #expect(lines.map(\.level) == ["warn", "info", "info"] && lines.map(\.source) == ["JOB", "JOB", "JOB"])
        #expect(Array(lines.map(\.timestamp).prefix(2)) == [1_700_000_000_000_001, 1_700_000_000_000_002] && lines[0].stepID == nil)
        #expect(lines.count == 3 && lines[2].timestamp > 1_700_000_000_000_002 && lines[2].timestamp < Int64.max)
        // Which reader took which: the usual batches in one pass, the unusual one through JSON values.
        let metrics = try await h.http("GET", "/metrics", token: nil).text
        #expect(metrics.contains(#"lightning_log_batches_total{reader="one_pass"} 4"#)
                && metrics.contains(#"lightning_log_batches_total{reader="json"} 1"#), "\(metrics)")
        // The worker's own socket was not touched by the other one's close.
        #expect(try await worker.push(topic: "worker:queue", event: "claim", payload: ["demand": 1]).isOK)
    }

    @Test("events with missing or foreign fields get error replies naming the field", arguments: Engine.all)
    func errorReplies(_ engine: Engine) async throws {
        let h = try await Harness.make(engine)
        defer { Task { await h.stop() } }
        _ = try await h.t.store.setCredential(name: "other", body: Array(#"{"k":"secret-of-another-workflow"}"#.utf8))
        try await h.t.workflow()
        let created = try await h.lightning.startWork(workflow: "greet", input: Array("{}".utf8))
        let worker = try await h.connectedWorker()
        defer { worker.close() }
        let token = try await worker.push(topic: "worker:queue", event: "claim", payload: ["demand": 1]).response["runs"]![0]!["token"]!.stringValue!
        let topic = "run:\(created.attemptID)"
        try await worker.join(topic: topic, payload: { ["token": .string(token)] })
        let foreignID = try await h.t.store.setCredential(name: "other", body: Array(#"{"k":"secret-of-another-workflow"}"#.utf8))
        func errors(_ event: String, _ payload: JSON) async throws -> JSON? {
            let r = try await worker.push(topic: topic, event: event, payload: payload)
            return r.status == "error" ? r.response["errors"] : nil
        }
        #expect(try await errors("step:start", ["job_id": "j"])?["step_id"] == ["can't be blank"])
        #expect(try await errors("fetch:credential", ["id": .string(foreignID)])?["id"] != nil)
        #expect(try await errors("fetch:dataclip", ["id": "not-mine"])?["id"] != nil)
        #expect(try await errors("step:start", ["step_id": "s", "job_id": "j"]) != nil, "step before run:start")
        #expect(try await errors("run:log", ["message": 5])?["message"] == ["must be a list"])
        // A line with two faults names the level first, whichever reader takes it (a string worker_seq: the JSON one).
        #expect(try await errors("run:log", ["logs": [["message": ["x"], "level": "loud", "worker_seq": "7"]]])?["level"]
                == ["unknown level loud"])
        #expect(try await errors("run:log", ["logs": [["message": ["x"], "level": "loud", "worker_seq": 0]]])?["level"]
                == ["unknown level loud"])
        #expect(try await errors("run:log", ["logs": [["message": ["x"], "worker_seq": "7"]]])?["worker_seq"]
                == ["must be a positive integer"])
        #expect(try await errors("no:such-event", [:])?["event"] != nil)
        let mystery = try await worker.push(topic: "run:\(created.attemptID)x", event: "fetch:plan", payload: [:])
        #expect(mystery.response["reason"] == "unmatched topic")
    }

    @Test("bad worker tokens get a real 401 and the server keeps serving", arguments: ["none", "other-secret", "expired", "issuer", "missing"])
    func badWorkerTokens(kind: String) async throws {
        let h = try Harness()
        defer { Task { await h.stop() } }
        let token: String
        switch kind {
        case "none":
            let b = { (s: String) in Data(s.utf8).base64EncodedString().replacingOccurrences(of: "=", with: "")
                .replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_") }
            token = b(#"{"alg":"none"}"#) + "." + b(#"{"worker_id":"w","iss":"urn:openfn:worker","iat":1}"#) + "."
        case "other-secret": token = try h.workerToken(secret: String(repeating: "z", count: 44))
        case "expired": token = try h.workerToken(claims: WorkerTokenClaims(workerID: "w", now: 1_000_000, lifetime: 60))
        case "issuer":
            var c = WorkerTokenClaims(workerID: "w")
            c.iss = "someone-else"
            token = try h.workerToken(claims: c)
        default: token = ""
        }
        let bad = try h.client { token }
        defer { bad.close() }
        #expect(await firstProblem(bad) == .authenticationFailed(status: 401))
        let good = try await h.connectedWorker()
        good.close()
    }

    @Test("joining run:<id> needs that attempt's valid token and the claim", arguments: ["other-token", "expired", "other-worker", "unknown"])
    func attemptJoinAttacks(kind: String) async throws {
        let h = try Harness()
        defer { Task { await h.stop() } }
        try await h.t.workflow(exampleYAML.replacingOccurrences(of: "concurrency: 2", with: "concurrency: 5"))
        let mine = try await h.lightning.startWork(workflow: "greet", input: Array("{}".utf8))
        let other = try await h.lightning.startWork(workflow: "greet", input: Array("{}".utf8))
        let worker = try await h.connectedWorker("worker-1")
        defer { worker.close() }
        let claim = try await worker.push(topic: "worker:queue", event: "claim", payload: ["demand": 2])
        let tokens = Dictionary(uniqueKeysWithValues: claim.response["runs"]!.arrayValue!.map {
            ($0["id"]!.stringValue!, $0["token"]!.stringValue!)
        })
        let signer = try JWTKey.rsa(pem: h.keys.keyPair.privateKeyPEM)
        var client = worker
        var topic = "run:\(mine.attemptID)"
        var token = tokens[mine.attemptID]!
        var expected: JSON = ["reason": "unauthorized"]
        switch kind {
        case "other-token": token = tokens[other.attemptID]!
        case "expired": token = try JWT.sign(AttemptTokenClaims(attemptID: mine.attemptID, now: 1_000_000, lifetime: 10), key: signer)
        case "other-worker": client = try await h.connectedWorker("worker-2")
        default:
            topic = "run:does-not-exist"
            expected = ["reason": "not_found"]
        }
        let t = token
        await #expect(throws: ChannelError.joinRefused(expected)) { try await client.join(topic: topic, payload: { ["token": .string(t)] }) }
        if kind == "other-worker" { client.close() }
        // The rightful join still works.
        let right = tokens[mine.attemptID]!
        try await worker.join(topic: "run:\(mine.attemptID)", payload: { ["token": .string(right)] })
    }

    @Test("a worker that joins saying what it holds gets its other claims put back (their replies never reached it)", arguments: Engine.all)
    func heldOnJoin(_ engine: Engine) async throws {
        let h = try await Harness.make(engine)
        defer { Task { await h.stop() } }
        try await h.t.workflow(freeWorkflow)
        // Three claims committed for "w": as if its Lightning went after the commit and before the replies.
        let ids = try await h.t.work(3, workflow: "free")
        #expect(try await h.t.store.claim(demand: 3, workerName: "w").count == 3)
        // It comes back holding only the first (its reply did arrive).
        let token = try h.workerToken("w")
        let c = try h.client { token }
        defer { c.close() }
        try await waitUntil("connected") { c.connected }
        try await c.join(topic: "worker:queue", payload: { ["capacity": 2, "held": [.string(ids[0])]] })
        #expect(try await h.t.store.attempt(ids[0]).state == .claimed, "what it holds stays its own")
        for id in ids.dropFirst() {
            let a = try await h.t.store.attempt(id)
            #expect(a.state == .available && a.workerName == nil, "back in the queue: \(a)")
        }
        // ws-worker says nothing of what it holds: nothing is touched.
        _ = try await h.t.store.claim(demand: 2, workerName: "ws")
        let other = try h.workerToken("ws")
        let d = try h.client { other }
        defer { d.close() }
        try await waitUntil("connected") { d.connected }
        try await d.join(topic: "worker:queue", payload: { ["capacity": 2] })
        #expect(try await h.t.store.attempt(ids[1]).state == .claimed)
        #expect(try await h.t.store.attempt(ids[2]).state == .claimed)
    }

    @Test("a claim whose reply cannot be delivered goes back to the queue")
    func undeliveredClaim() async throws {
        // The claim is held after its commit until the claimer's socket is gone, so its reply cannot be delivered.
        // (The first version raced a connection reset against the claim: a reset that arrived first discarded the
        // unread claim and the test timed out in CI.)
        let gone = Flag()
        let h = try Harness { config in
            config.testBeforeClaimReply = {
                let deadline = ContinuousClock.now + .seconds(30)
                while !gone.isSet, ContinuousClock.now < deadline { try? await Task.sleep(for: .milliseconds(5)) }
            }
        }
        defer { Task { await h.stop() } }
        try await h.t.workflow()
        let created = try await h.lightning.startWork(workflow: "greet", input: Array("{}".utf8))
        // A raw socket that sends a claim and closes at once (a normal close: the claim is read before the end).
        let token = try h.workerToken("vanishing")
        let script = """
            import base64, json, os, socket, struct, sys
            def frame(text):
                data = text.encode(); mask = os.urandom(4)
                head = bytes([0x81, 0x80 | len(data)]) if len(data) < 126 else bytes([0x81, 0xFE]) + struct.pack(">H", len(data))
                return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(data))
            s = socket.create_connection(("127.0.0.1", int(sys.argv[1])))
            key = base64.b64encode(os.urandom(16)).decode()
            s.sendall(("GET /worker/websocket?token=%s&vsn=2.0.0 HTTP/1.1\\r\\nHost: x\\r\\nUpgrade: websocket\\r\\n"
                       "Connection: Upgrade\\r\\nSec-WebSocket-Key: %s\\r\\nSec-WebSocket-Version: 13\\r\\n\\r\\n" % (sys.argv[2], key)).encode())
            head = b""
            while b"\\r\\n\\r\\n" not in head:
                head += s.recv(1)
            s.sendall(frame(json.dumps(["1", "1", "worker:queue", "phx_join", {"capacity": 1}])))
            s.recv(4096)
            s.sendall(frame(json.dumps(["1", "2", "worker:queue", "claim", {"demand": 1}])))
            s.shutdown(socket.SHUT_WR)
            s.close()
            """
        let file = h.t.dir.appendingPathComponent("vanish.py").path
        try script.write(toFile: file, atomically: true, encoding: .utf8)
        let port = h.port
        _ = try await TestSupport.python(file, ["\(port)", token])
        try await waitUntil("the claimer's socket closed") { !h.lightning.hasOpenSocket(worker: "vanishing") }
        try await waitUntil("the claim committed") { try await h.t.store.attempt(created.attemptID).state == .claimed }
        gone.set()
        try await waitUntil("the undelivered reply noticed") { h.lightning.state.undeliveredClaims == 1 }
        try await waitUntil("attempt back in the queue") { try await h.t.store.attempt(created.attemptID).state == .available }
    }

    @Test("a worker that vanishes past the grace period loses its attempts", arguments: Engine.all)
    func lostAfterGrace(_ engine: Engine) async throws {
        let h = try await Harness.make(engine, grace: 0.5)
        defer { Task { await h.stop() } }
        try await h.t.workflow()
        let a = try await h.lightning.startWork(workflow: "greet", input: Array("{}".utf8))
        let worker = try await h.connectedWorker("flaky")
        _ = try await worker.push(topic: "worker:queue", event: "claim", payload: ["demand": 1])
        worker.close()
        try await waitUntil("attempt lost") { try await h.t.store.attempt(a.attemptID).state == .lost }
        #expect(try await h.t.store.attempt(a.attemptID).errorType == "LostAfterClaim")
    }

    @Test("a worker that comes back within the grace period keeps its attempt", arguments: Engine.all)
    func backInTime(_ engine: Engine) async throws {
        let h = try await Harness.make(engine, grace: 1.5)
        defer { Task { await h.stop() } }
        try await h.t.workflow()
        let a = try await h.lightning.startWork(workflow: "greet", input: Array("{}".utf8))
        let first = try await h.connectedWorker("steady")
        _ = try await first.push(topic: "worker:queue", event: "claim", payload: ["demand": 1])
        first.close()
        let second = try await h.connectedWorker("steady")
        defer { second.close() }
        try await Task.sleep(for: .seconds(2.5))
        #expect(try await h.t.store.attempt(a.attemptID).state == .claimed)
    }

    @Test("cancel: an unclaimed attempt at once; a claimed one by a run:cancel push to its worker", arguments: Engine.all)
    func cancel(_ engine: Engine) async throws {
        let h = try await Harness.make(engine)
        defer { Task { await h.stop() } }
        try await h.t.workflow()
        let waiting = try await h.lightning.startWork(workflow: "greet", input: Array("{}".utf8))
        let running = try await h.lightning.startWork(workflow: "greet", input: Array("{}".utf8))
        let worker = try await h.connectedWorker()
        defer { worker.close() }
        let claim = try await worker.push(topic: "worker:queue", event: "claim", payload: ["demand": 1])
        let token = claim.response["runs"]![0]!["token"]!.stringValue!
        #expect(claim.response["runs"]![0]!["id"]!.stringValue == waiting.attemptID)
        let cancels = Box()
        try await worker.join(topic: "run:\(waiting.attemptID)", payload: { ["token": .string(token)] }, onMessage: { m in
            if m.event == "run:cancel" { cancels.set() }
        })
        #expect(try await h.lightning.cancel(attemptID: running.attemptID) == .cancelled)
        #expect(try await h.t.store.attempt(running.attemptID).state == .cancelled)
        #expect(try await h.lightning.cancel(attemptID: waiting.attemptID) == .claimed)
        try await waitUntil("run:cancel pushed") { cancels.isSet }
    }

    @Test("every webhook path validation takes is reached by a POST to it as written, on a real socket")
    func reachablePaths() async throws {
        let h = try await Harness.make(.sqlite)
        defer { Task { await h.stop() } }
        // Each character apart, so that one lws rewrites (it read + as a space and ended a path at & or ;) fails alone.
        let paths = ["order:created", "a@b", "x!y", "d$e", "h'i", "j(k)", "l*m", "r=s", "a~b", "a.b", "A-Z_09"]
        for (i, path) in paths.enumerated() {
            let quoted = String(decoding: try JSONEncoder().encode(path), as: UTF8.self)
            try await h.t.workflow("name: w\(i)\ntriggers:\n  - {name: t, type: webhook, path: \(quoted)}\njobs:\n  - {name: a, adaptor: sh, body: x}\nedges:\n  - {from: t, to: a}\n")
            let port = h.port
            let answer = try await TestSupport.onThread {
                try RawConnection(port: port, timeout: 30).exchange(
                    "POST /i/\(path) HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")
            }
            #expect(answer.hasPrefix("HTTP/1.1 200") && answer.contains("attempt_id"), "\(path): \(answer.debugDescription)")
        }
    }

    @Test("webhooks create work and nudge joined workers; bad input gets a 4xx", arguments: Engine.all)
    func webhookAndNudge(_ engine: Engine) async throws {
        let h = try await Harness.make(engine)
        defer { Task { await h.stop() } }
        try await h.t.workflow()
        let nudged = Box()
        let token = try h.workerToken()
        let worker = try h.client { token }
        defer { worker.close() }
        try await waitUntil("connected") { worker.connected }
        try await worker.join(topic: "worker:queue", payload: { ["capacity": 1] }, onMessage: { m in
            if m.event == "work-available" { nudged.set() }
        })
        let ok = try await TestSupport.run("/usr/bin/curl", ["-s", "-w", "\n%{http_code}", "-X", "POST", "-d", #"{"a":1}"#,
                                                         "http://127.0.0.1:\(h.port)/i/greet"])
        #expect(ok.stdout.hasSuffix("200"), "\(ok.stdout)")
        #expect(ok.stdout.contains("attempt_id"))
        try await waitUntil("work-available") { nudged.isSet }
        let unknown = try await TestSupport.run("/usr/bin/curl", ["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST", "-d", "{}",
                                                              "http://127.0.0.1:\(h.port)/i/nope"])
        #expect(unknown.stdout == "404")
        let badJSON = try await TestSupport.run("/usr/bin/curl", ["-s", "-w", "\n%{http_code}", "-X", "POST", "-d", "{not json",
                                                              "http://127.0.0.1:\(h.port)/i/greet"])
        #expect(badJSON.stdout.hasSuffix("415") && badJSON.stdout.contains("not JSON"), "\(badJSON.stdout)")
        // A form upload is not taken for JSON: 415, naming the type it was.
        let form = try await TestSupport.run("/usr/bin/curl", ["-s", "-w", "\n%{http_code}", "-X", "POST", "-F", "a=b",
                                                           "http://127.0.0.1:\(h.port)/i/greet"])
        #expect(form.stdout.hasSuffix("415") && form.stdout.contains("multipart/form-data"), "\(form.stdout)")
        // JSON, but not an object: 400. Declared JSON with parameters and a +json type are JSON.
        let array = try await TestSupport.run("/usr/bin/curl", ["-s", "-w", "\n%{http_code}", "-X", "POST", "-H", "Content-Type: application/json",
                                                            "-d", "[1,2]", "http://127.0.0.1:\(h.port)/i/greet"])
        #expect(array.stdout.hasSuffix("400") && array.stdout.contains("JSON object, not an array"), "\(array.stdout)")
        // Declared JSON, but not valid: 400 (the type is right, the syntax wrong).
        let malformed = try await TestSupport.run("/usr/bin/curl", ["-s", "-w", "\n%{http_code}", "-X", "POST", "-H", "Content-Type: application/json",
                                                                "-d", "{not json", "http://127.0.0.1:\(h.port)/i/greet"])
        // The parser's words say where it broke.
        #expect(malformed.stdout.hasSuffix("400") && malformed.stdout.contains("not valid JSON: invalid JSON at byte 1"), "\(malformed.stdout)")
        for type in ["Application/JSON; charset=utf-8", "application/vnd.api+json"] {
            let typed = try await TestSupport.run("/usr/bin/curl", ["-s", "-w", "\n%{http_code}", "-X", "POST", "-H", "Content-Type: \(type)",
                                                                "-d", #"{"b":2}"#, "http://127.0.0.1:\(h.port)/i/greet"])
            #expect(typed.stdout.hasSuffix("200"), "\(type): \(typed.stdout)")
        }
        let health = try await TestSupport.run("/usr/bin/curl", ["-s", "http://127.0.0.1:\(h.port)/healthz"])
        #expect(health.stdout.contains("ok"))
    }
}

final class Box: @unchecked Sendable {
    private let lock = NSLock()
    private var flag = false
    func set() { lock.withLock { flag = true } }
    var isSet: Bool { lock.withLock { flag } }
}

final class Flag: @unchecked Sendable {
    private let lock = NSLock()
    private var value = false
    func set() { lock.withLock { value = true } }
    var isSet: Bool { lock.withLock { value } }
}
