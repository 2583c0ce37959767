import Channels
import Foundation
import LightningProtocol
import Logging
import Testing
import TestSupport
@testable import Lightning
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// One HTTP exchange with a Lightning under test.
struct Exchange {
    var status: Int
    var json: JSON
    var text: String
}

extension Harness {
    func http(_ method: String, _ path: String, token: String?, body: String? = nil) async throws -> Exchange {
        var request = URLRequest(url: URL(string: "http://127.0.0.1:\(port)\(path)")!)
        request.httpMethod = method
        if let token { request.setValue("Bearer \(token)", forHTTPHeaderField: "Authorization") }
        // A fresh connection each time (`freshHTTPExchange`): a kept one may be closing, or point at an earlier
        // test's server whose port the kernel has since given to this one, and read back an empty reply.
        if request.value(forHTTPHeaderField: "Connection") == nil { request.setValue("close", forHTTPHeaderField: "Connection") }
        if let body { request.httpBody = Data(body.utf8) }
        let (data, response) = try await freshHTTPExchange(request)
        let text = String(decoding: data, as: UTF8.self)
        return Exchange(status: (response as! HTTPURLResponse).statusCode, json: (try? JSON.parse(text)) ?? .null, text: text)
    }

    func tokens() async throws -> (admin: String, viewer: String) {
        (try await t.store.createOperatorToken(name: "root", role: .admin).secret,
         try await t.store.createOperatorToken(name: "watcher", role: .viewer).secret)
    }

    /// A scripted worker that has claimed, joined and started one attempt; returns its run topic.
    func startedAttempt(_ worker: ChannelClient, workflow: String = "free") async throws -> (id: String, topic: String) {
        let created = try await lightning.startWork(workflow: workflow, input: Array("{}".utf8))
        let claim = try await worker.push(topic: "worker:queue", event: "claim", payload: ["demand": 1])
        let run = try #require(claim.response["runs"]?.arrayValue?.first)
        let topic = "run:\(created.attemptID)"
        try await worker.join(topic: topic, payload: { ["token": run["token"]!] })
        #expect(try await worker.push(topic: topic, event: "run:start", payload: ["versions": [:]]).isOK)
        return (created.attemptID, topic)
    }

    /// A worker that has started an attempt of `free`, and a viewer token.
    func watchedAttempt() async throws -> (worker: ChannelClient, viewerToken: String, id: String, topic: String) {
        let (_, viewerToken) = try await tokens()
        try await t.workflow(freeWorkflow)
        let worker = try await connectedWorker()
        let (id, topic) = try await startedAttempt(worker)
        return (worker, viewerToken, id, topic)
    }

    /// Joins attempt:<id> on a connected viewer; the reply's backlog and every later push go into the result.
    func watch(_ viewer: ChannelClient, _ id: String, since: Int64? = nil, batched: Bool = false, into seen: Seen = Seen()) async throws
        -> (Seen, JSON)
    {
        try await waitUntil("viewer connected") { viewer.connected }
        let reply = try await viewer.join(topic: "attempt:\(id)", payload: {
            var p: [String: JSON] = batched ? ["batch": true] : [:]
            if let since { p["since"] = .int(since) }
            return .object(p)
        }) { seen.take($0) }
        for line in reply["logs"]?.arrayValue ?? [] { seen.add(line) }
        return (seen, reply)
    }

    func viewer(_ token: String) throws -> ChannelClient {
        var config = ChannelClient.Configuration(url: "ws://127.0.0.1:\(port)/socket/websocket") { ["token": token, "vsn": "2.0.0"] }
        config.reconnectBase = .milliseconds(50)
        config.reconnectCap = .milliseconds(200)
        let c = try ChannelClient(configuration: config)
        try c.connect()
        return c
    }
}

let freeWorkflow = """
    name: free
    triggers:
      - {name: nightly, type: cron, cron: "*/5 * * * *"}
    jobs:
      - {name: a, adaptor: sh, body: "true"}
    """

/// What one viewer saw: log seqs and messages in arrival order, and the final attempt.
final class Seen: @unchecked Sendable {
    private let lock = NSLock()
    private var _seqs: [Int64] = []
    private var _messages: [String] = []
    private var _complete: JSON?
    private var _events: [String] = []
    private var _pushes: [JSON] = []
    /// Every push's payload, in order.
    var pushes: [JSON] { lock.withLock { _pushes } }
    /// Every event pushed to the viewer, in order.
    var events: [String] { lock.withLock { _events } }
    var seqs: [Int64] { lock.withLock { _seqs } }
    var messages: [String] { lock.withLock { _messages } }
    var complete: JSON? { lock.withLock { _complete } }
    var last: Int64 { lock.withLock { _seqs.last ?? 0 } }
    func add(_ line: JSON) {
        lock.withLock {
            _seqs.append(line["seq"]!.intValue!)
            _messages.append(line["message"]!.stringValue!)
        }
    }
    func take(_ m: PhoenixMessage) {
        guard case .json(let p) = m.payload else { return }
        lock.withLock { _events.append(m.event); _pushes.append(p) }
        if m.event == "log" { add(p) }
        if m.event == "logs" { for line in p["lines"]?.arrayValue ?? [] { add(line) } }
        if m.event == "attempt:complete" { lock.withLock { _complete = p } }
    }
}

@Suite("Operators: the HTTP API, the viewer socket, cron and metrics", .serialized)
struct OperatorTests {
    @Test("the API: tokens and roles are enforced, good requests work, every bad one gets a 4xx that says why", arguments: Engine.all)
    func api(_ engine: Engine) async throws {
        let h = try await Harness.make(engine)
        defer { Task { await h.stop() } }
        let (admin, viewer) = try await h.tokens()

        // Authentication and roles.
        #expect(try await h.http("GET", "/api/workflows", token: nil).status == 401)
        #expect(try await h.http("GET", "/api/workflows", token: "lro_" + String(repeating: "A", count: 43)).status == 401)
        #expect(try await h.http("GET", "/api/workflows", token: "not-even-shaped-right").status == 401)
        let forbidden = try await h.http("PUT", "/api/workflows", token: viewer, body: freeWorkflow)
        #expect(forbidden.status == 403 && forbidden.text.contains("viewer"), "\(forbidden.text)")

        // Workflows.
        let applied = try await h.http("PUT", "/api/workflows", token: admin, body: freeWorkflow)
        #expect(applied.status == 200 && applied.json["version"] == 1, "\(applied.text)")
        let badYAML = try await h.http("PUT", "/api/workflows", token: admin, body: "name: x\njobs: []\n")
        #expect(badYAML.status == 400 && badYAML.json["error"]?.stringValue?.contains("job") == true, "\(badYAML.text)")
        #expect(try await h.http("PUT", "/api/workflows", token: admin, body: "").status == 400)
        let listed = try await h.http("GET", "/api/workflows", token: viewer)
        #expect(listed.json["workflows"]?.arrayValue?.first?["name"] == "free")

        // Attempts.
        for (body, fragment) in [("{", "not valid JSON"), ("[1]", "JSON object"), (#"{"input":{}}"#, "\"workflow\""),
                                 (#"{"workflow":"free","input":[1]}"#, "\"input\"")] {
            let r = try await h.http("POST", "/api/attempts", token: admin, body: body)
            #expect(r.status == 400 && r.json["error"]?.stringValue?.contains(fragment) == true, "\(body) -> \(r.status) \(r.text)")
        }
        let unknown = try await h.http("POST", "/api/attempts", token: admin, body: #"{"workflow":"nope"}"#)
        #expect(unknown.status == 404 && unknown.text.contains("nope"))
        let started = try await h.http("POST", "/api/attempts", token: admin, body: #"{"workflow":"free","input":{"x":1}}"#)
        #expect(started.status == 201, "\(started.text)")
        let id = try #require(started.json["attempt_id"]?.stringValue)
        let one = try await h.http("GET", "/api/attempts/\(id)", token: viewer)
        #expect(one.json["state"] == "available" && one.json["steps"] == [] && one.json["last_seq"] == 0)
        #expect(try await h.http("GET", "/api/attempts/no-such-id", token: viewer).status == 404)
        #expect(try await h.http("GET", "/api/attempts?state=available", token: viewer).json["attempts"]?.arrayValue?.count == 1)
        #expect(try await h.http("GET", "/api/attempts?state=bogus", token: viewer).text.contains("unknown state"))
        #expect(try await h.http("GET", "/api/attempts?limit=0", token: viewer).status == 400)
        #expect(try await h.http("GET", "/api/attempts/\(id)/logs?since=-1", token: viewer).status == 400)
        #expect(try await h.http("GET", "/api/attempts/\(id)/logs", token: viewer).json["logs"] == [])
        #expect(try await h.http("POST", "/api/attempts/\(id)/cancel", token: viewer).status == 403)
        let cancelled = try await h.http("POST", "/api/attempts/\(id)/cancel", token: admin)
        #expect(cancelled.status == 200 && cancelled.json["state"] == "cancelled", "\(cancelled.status) \(cancelled.text)")
        #expect(try await h.http("POST", "/api/attempts/no-such-id/cancel", token: admin).status == 404)

        // Workers, credentials, tokens, unknown paths.
        #expect(try await h.http("GET", "/api/workers", token: viewer).json["workers"] == [])
        #expect(try await h.http("PUT", "/api/credentials/api", token: admin, body: #"{"password":"x"}"#).status == 200)
        #expect(try await h.http("PUT", "/api/credentials/api", token: admin, body: "[1]").status == 400)
        #expect(try await h.http("PUT", "/api/credentials/bad%20name", token: admin, body: "{}").status == 400)
        let made = try await h.http("POST", "/api/tokens", token: admin, body: #"{"name":"ci","role":"viewer"}"#)
        let ciToken = try #require(made.json["token"]?.stringValue)
        #expect(try await h.http("GET", "/api/workflows", token: ciToken).status == 200)
        #expect(try await h.http("POST", "/api/tokens", token: admin, body: #"{"name":"x","role":"root"}"#).status == 400)
        #expect(try await h.http("GET", "/api/tokens", token: viewer).status == 403)
        let tokens = try await h.http("GET", "/api/tokens", token: admin)
        #expect(tokens.json["tokens"]?.arrayValue?.count == 3 && !tokens.text.contains(ciToken), "secrets are never listed")
        #expect(try await h.http("DELETE", "/api/tokens/ci", token: admin).json["revoked"] == 1)
        #expect(try await h.http("GET", "/api/workflows", token: ciToken).status == 401, "a revoked token is refused")
        #expect(try await h.http("DELETE", "/api/tokens/ci", token: admin).status == 404)
        let nowhere = try await h.http("GET", "/api/nowhere", token: viewer)
        #expect(nowhere.status == 404 && nowhere.text.contains("/api/attempts"))

        // The database never holds a token's secret: not in the SQLite file, and not in any column of either engine.
        if engine == .sqlite {
            let dump = try Data(contentsOf: URL(fileURLWithPath: h.t.path)) + ((try? Data(contentsOf: URL(fileURLWithPath: h.t.path + "-wal"))) ?? Data())
            #expect(dump.range(of: Data(admin.utf8)) == nil && dump.range(of: Data(ciToken.utf8)) == nil)
        }
        let stored = try h.t.store.database.readHere { db in
            try db.fetchAll("SELECT * FROM operator_tokens").flatMap { row in row.columns.map { "\(row.value($0))" } }
        }
        #expect(!stored.isEmpty && !stored.contains { $0.contains(admin) || $0.contains(ciToken) })

        // Metrics.
        let metrics = try await h.http("GET", "/metrics", token: nil)
        #expect(metrics.status == 200 && metrics.text.contains(#"lightning_attempts{state="cancelled"} 1"#), "\(metrics.text)")
    }

    @Test("viewers: backlog then live lines; several viewers; one that reconnects resumes with since, no loss, no duplicates",
          arguments: [false, true])
    func viewers(batched: Bool) async throws {
        let h = try Harness()
        defer { Task { await h.stop() } }
        let (worker, viewerToken, id, topic) = try await h.watchedAttempt()
        defer { worker.close() }
        var next = 1
        func send(_ n: Int) async throws {
            let lines: [JSON] = (0..<n).map { i in
                ["message": [.string("line \(next + i)")], "level": "info", "source": "JOB", "worker_seq": .int(Int64(next + i))]
            }
            next += n
            #expect(try await worker.push(topic: topic, event: "run:batch_logs", payload: ["run_id": .string(id), "logs": .array(lines)]).isOK)
        }
        try await send(30)  // backlog before anyone watches

        // Viewer A joins from the start; viewer B from since=10.
        let a = try h.viewer(viewerToken), b = try h.viewer(viewerToken)
        defer { a.close(); b.close() }
        let (seenA, replyA) = try await h.watch(a, id, since: 0, batched: batched)
        #expect(replyA["attempt"]?["state"] == "started")
        let (seenB, _) = try await h.watch(b, id, since: 10, batched: batched)
        #expect(seenB.seqs.first == 11)

        // A third viewer drops mid-stream and resumes from the last seq it saw.
        var c = try h.viewer(viewerToken)
        let (seenC, _) = try await h.watch(c, id, batched: batched)
        for _ in 0..<10 { try await send(25) }
        try await waitUntil("c has some live lines") { seenC.last > 100 }
        c.close()
        for _ in 0..<10 { try await send(25) }  // lines C is not there for
        c = try h.viewer(viewerToken)
        _ = try await h.watch(c, id, since: seenC.last, batched: batched, into: seenC)
        for _ in 0..<4 { try await send(25) }
        let completed = try await worker.push(topic: topic, event: "run:complete", payload: ["reason": "success", "final_state": "{}", "timestamp": .string(Timestamp.now())])
        #expect(completed.isOK, "\(completed.response)")
        let total = Int64(next - 1)
        #expect(total == 630)
        for (name, seen, first) in [("A", seenA, Int64(1)), ("B", seenB, Int64(11)), ("C", seenC, Int64(1))] {
            try await waitUntil("\(name) has every line and the end") { seen.last == total && seen.complete != nil }
            #expect(seen.seqs == Array(first...total), "viewer \(name): every line once, in order")
            #expect(seen.messages == (first...total).map { "line \($0)" })
            #expect(seen.complete?["state"] == "success" && seen.complete?["last_seq"] == .int(total))
        }
        // A batch viewer gets `logs` pushes of many lines, never `log`; the others the other way round.
        let events = Set(seenA.events + seenB.events + seenC.events)
        #expect(batched ? events.contains("logs") && !events.contains("log") : events.contains("log") && !events.contains("logs"), "\(events)")
        c.close()

        // Joining after the end: the whole log in the reply, then attempt:complete.
        let late = try h.viewer(viewerToken)
        defer { late.close() }
        let (seenLate, replyLate) = try await h.watch(late, id, batched: batched)
        try await waitUntil("late viewer has everything") { seenLate.last == total && seenLate.complete != nil }
        #expect(seenLate.seqs == Array(1...total))
        #expect(replyLate["more"] == false || seenLate.seqs.count == Int(total))
    }

    @Test("viewer socket: bad tokens get 401 before the upgrade; unknown attempts and bad since are refused", arguments: Engine.all)
    func viewerRefusals(_ engine: Engine) async throws {
        let h = try await Harness.make(engine)
        defer { Task { await h.stop() } }
        let (_, viewerToken) = try await h.tokens()
        let bad = try h.viewer("lro_" + String(repeating: "B", count: 43))
        defer { bad.close() }
        #expect(await firstProblem(bad) == .authenticationFailed(status: 401))
        let v = try h.viewer(viewerToken)
        defer { v.close() }
        try await waitUntil("connected") { v.connected }
        await #expect(throws: ChannelError.joinRefused(["reason": "not_found"])) {
            try await v.join(topic: "attempt:nope", payload: { [:] })
        }
        try await h.t.workflow(freeWorkflow)
        let created = try await h.lightning.startWork(workflow: "free", input: Array("{}".utf8))
        await #expect(throws: ChannelError.self) {
            try await v.join(topic: "attempt:\(created.attemptID)", payload: { ["since": -4] })
        }
    }

    @Test("a viewer joining while the attempt changes gets the change: what happens between its join's read and its attach is kept for it")
    func changeDuringJoin() async throws {
        // The window, made deterministic: the join's hook (after the join read the attempt, before its reply) starts
        // the attempt and a step and tells the hub, as the worker's events would.
        let inWindow = WindowAction()
        let h = try Harness { config in config.testViewerJoinRead = { id in await inWindow.run(id) } }
        defer { Task { await h.stop() } }
        let (_, viewerToken) = try await h.tokens()
        try await h.t.workflow(freeWorkflow)
        let created = try await h.lightning.startWork(workflow: "free", input: Array("{}".utf8))
        let id = created.attemptID
        #expect(try await h.t.store.claim(demand: 1, workerName: "w").map(\.id) == [id])
        let store = h.t.store, lightning = h.lightning
        inWindow.set { id in
            _ = try? await store.startAttempt(id, workerName: "w", at: 7)
            await lightning.viewers.attemptChanged(id)
            await lightning.viewers.event(attemptID: id, event: "step:start", payload: ["step_id": "s1", "attempt_id": .string(id)])
        }
        let v = try h.viewer(viewerToken)
        defer { v.close() }
        let (seen, reply) = try await h.watch(v, id)
        #expect(reply["attempt"]?["state"] == "claimed", "the reply shows what the join read")
        try await waitUntil("the change made during the join reaches the viewer") {
            seen.events.contains("attempt:update") && seen.events.contains("step:start")
        }
        let update = zip(seen.events, seen.pushes).first { $0.0 == "attempt:update" }?.1
        #expect(update?["state"] == "started")
        // Counted once: when the viewer leaves, nobody watches the attempt (its events are no longer posted).
        #expect(h.lightning.viewers.watched.contains(id))
        await v.leave(topic: "attempt:\(id)")
        try await waitUntil("nobody watches") { !h.lightning.viewers.watched.contains(id) }
        // A join that fails keeps nothing either.
        let refused = try? await v.join(topic: "attempt:no-such-attempt", payload: { [:] })
        #expect(refused == nil && !h.lightning.viewers.watched.contains("no-such-attempt"))
    }

    @Test("a viewer that cannot keep up is closed; the attempt and the other viewers go on at full speed")
    func slowViewer() async throws {
        let h = try Harness { $0.viewerMaxQueuedBytes = 1024 * 1024 }
        defer { Task { await h.stop() } }
        let (worker, viewerToken, id, topic) = try await h.watchedAttempt()
        defer { worker.close() }

        // The slow viewer: a Python client with a tiny receive buffer that joins and then stops reading.
        let script = TestSupport.packageRoot.appendingPathComponent("Tests/LightningTests/Interop/slow_viewer.py").path
        let go = h.t.dir.appendingPathComponent("go").path
        let python = try #require(TestSupport.which("python3"), "python3 is needed; scripts/test installs it")
        let slow = try ChildProcess(python, [script, "\(h.port)", viewerToken, "attempt:\(id)", go], directory: h.t.dir,
                                    logName: "slow_viewer.log")
        defer { slow.stop() }
        try await slow.waitForLog("joined")

        let fast = try h.viewer(viewerToken)
        defer { fast.close() }
        let (seenFast, _) = try await h.watch(fast, id)
        let pad = String(repeating: "x", count: 1000)
        var n: Int64 = 0
        for _ in 0..<40 {
            let lines: [JSON] = (0..<500).map { _ in
                n += 1
                return ["message": [.string("\(n) \(pad)")], "level": "info", "source": "JOB", "worker_seq": .int(n)]
            }
            let r = try await worker.push(topic: topic, event: "run:batch_logs", payload: ["run_id": .string(id), "logs": .array(lines)])
            #expect(r.isOK, "the worker is never refused or held up by a viewer")
        }
        try await waitUntil("the fast viewer has all 20000 lines", timeout: .seconds(60)) { seenFast.last == n }
        #expect(seenFast.seqs == Array(1...n))
        _ = FileManager.default.createFile(atPath: go, contents: nil)
        #expect(await slow.waitForExit(timeout: 30) == 0)
        // Closed by Lightning: with a close frame (1008) when one fits in the socket, or cut off at the TCP level
        // when the client's buffers are full, long before the 20 MB the attempt logged.
        let log = slow.log
        let received = log.firstMatch(of: /no close frame in (\d+) bytes/).flatMap { Int($0.1) }
        #expect(log.contains("closed 1008") || (received ?? .max) < 10_000_000, "the slow viewer was closed as too slow: \(log)")
    }

    @Test("cron: a slot fires once, across a restart and with three schedulers (replicas) on one database", arguments: Engine.all)
    func cronOncePerSlot(_ engine: Engine) async throws {
        let t = try await TestStore.make(engine)
        defer { t.remove() }
        try await t.workflow(freeWorkflow)  // */5 * * * *
        func at(_ hhmmss: String) -> Date {
            ISO8601DateFormatter().date(from: "2026-12-01T\(hhmmss)Z")!
        }
        let logger = Logger(label: "cron-test")
        let first = CronScheduler(store: t.store, logger: logger)
        #expect(try await first.tick(now: at("10:03:00")).isEmpty, "first sight schedules the next slot, 10:05")
        #expect(try await first.tick(now: at("10:04:59")).isEmpty)
        #expect(try await first.tick(now: at("10:05:00")).count == 1)
        #expect(try await first.tick(now: at("10:05:01")).isEmpty, "once per slot")

        // Restart: a new store on the same file and a new scheduler.
        let reopened = try await t.reopen()
        let second = CronScheduler(store: reopened, logger: logger)
        #expect(try await second.tick(now: at("10:05:30")).isEmpty, "the restart does not fire 10:05 again")
        // Three schedulers racing for one slot, as three replicas would: exactly one work order.
        let third = CronScheduler(store: try await t.reopen(), logger: logger)
        async let x = first.tick(now: at("10:10:00"))
        async let y = second.tick(now: at("10:10:00"))
        async let z = third.tick(now: at("10:10:00"))
        #expect(try await x.count + y.count + z.count == 1)
        // Down from 10:11 to 10:31: the missed slots fire once, not four times.
        #expect(try await second.tick(now: at("10:31:00")).count == 1)
        #expect(try await second.tick(now: at("10:32:00")).isEmpty)
        let orders = try await t.store.attempts(state: nil, limit: 100)
        #expect(orders.count == 3)
        // A changed expression starts a fresh schedule.
        try await t.workflow(freeWorkflow.replacingOccurrences(of: "*/5 * * * *", with: "0 * * * *"))
        #expect(try await second.tick(now: at("10:35:00")).isEmpty)
        #expect(try await second.tick(now: at("11:00:00")).count == 1)
    }
}

/// What a test runs inside the join window (`testViewerJoinRead`), once.
final class WindowAction: @unchecked Sendable {
    private let lock = NSLock()
    private var action: (@Sendable (String) async -> Void)?
    func set(_ a: @escaping @Sendable (String) async -> Void) { lock.withLock { action = a } }
    func run(_ id: String) async {
        let a = lock.withLock { () -> (@Sendable (String) async -> Void)? in
            defer { action = nil }
            return action
        }
        await a?(id)
    }
}
