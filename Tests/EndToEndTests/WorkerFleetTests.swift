import Channels
import Foundation
import JWT
import Lightning
import Testing
import TestSupport

/// Registration, revocation and fleet control with the real binaries (docs/workers.md).
@Suite("Worker registration and fleet control", .serialized)
struct WorkerFleetTests {
    static let quick = """
        name: quick
        jobs: [{name: a, adaptor: sh, body: "echo hello"}]
        """
    static let endless = """
        name: endless
        jobs: [{name: s, adaptor: sh, body: "echo start; sleep 60"}]
        """

    /// `lightning workers register NAME`: the token it prints.
    func register(_ b: Binaries, _ name: String) async throws -> String {
        let r = try await b.cli(["workers", "register", name, "--ttl", "10m"])
        #expect(r.status == 0, "\(r)")
        return r.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    func adminPort(_ worker: ChildProcess) async throws -> Int {
        let line = try await worker.waitForLog(#"port=\d+ \[RuntimeWorkerCommand\] admin port listening"#)
        return Int(line.dropFirst(5).prefix { $0.isNumber }) ?? 0
    }

    func http(_ method: String, _ port: Int, _ path: String, body: String? = nil) async throws -> (code: String, body: String) {
        var args = ["-s", "-w", "\n%{http_code}", "-X", method, "http://127.0.0.1:\(port)\(path)"]
        if let body { args += ["-H", "Content-Type: application/json", "--data-binary", body] }
        let r = try await TestSupport.run("/usr/bin/curl", args)
        let parts = r.stdout.split(separator: "\n", omittingEmptySubsequences: false)
        return (String(parts.last ?? ""), parts.dropLast().joined(separator: "\n"))
    }

    func workers(_ b: Binaries) async throws -> [String: JSON] {
        let r = try await b.cli(["workers", "list", "--json"])
        let list = (try JSON.parse(Array(r.stdout.utf8)))["workers"]?.arrayValue ?? []
        return Dictionary(list.compactMap { w in w["name"]?.stringValue.map { ($0, w) } }, uniquingKeysWith: { a, _ in a })
    }

    func waitForStatus(_ b: Binaries, _ name: String, _ status: String) async throws {
        let deadline = ContinuousClock.now + .seconds(30)
        while try await workers(b)[name]?["status"]?.stringValue != status {
            guard ContinuousClock.now < deadline else {
                throw TestSupport.Failure("\(name) never became \(status): \(try await workers(b)[name] ?? .null)")
            }
            try await Task.sleep(for: .milliseconds(100))
        }
    }

    func run(_ store: SQLStore, _ workflow: String) async throws -> AttemptRecord {
        let created = try await store.createWorkOrder(workflow: workflow, input: Array("{}".utf8))
        return try await store.waitUntilFinal(created.attemptID)
    }

    @Test("a registered worker: the token is exchanged at the first join and renewed on one socket across several of its lifetimes; no token in any log")
    func registered() async throws {
        let b = try await Binaries(extra: ["--no-shared-secret", "--worker-token-ttl", "6"])
        defer { b.remove() }
        let store = try b.store()
        _ = try await store.applyWorkflow(try WorkflowDefinition.parse(Self.quick))
        let token = try await register(b, "reg-1")
        #expect(try await workers(b)["reg-1"]?["status"] == "registered")
        let worker = try b.worker("reg-1", extra: ["--registration-token", token, "--admin-port", "0"])
        defer { worker.stop() }
        let port = try await adminPort(worker)
        try await worker.waitForLog("registered with Lightning: worker auth token received")
        #expect(try await run(store, "quick").state == .success)
        // A 6 s credential renewed at half its life (3 s to spare on a loaded machine): five renewals take it past two
        // lifetimes on the same socket. (WorkerCredentialTests goes further on an injected clock.)
        let deadline = ContinuousClock.now + .seconds(90)
        var metrics = try await http("GET", port, "/metrics").body
        while !metrics.contains("worker_credential_renewals_total 5"), ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(200))
            metrics = try await http("GET", port, "/metrics").body
        }
        #expect(metrics.contains("worker_credential_renewals_total 5"), "\(metrics)")
        #expect(metrics.contains("worker_reconnects_total 0"), "\(metrics)")
        #expect(!b.lightning.log.contains("credential expired"))
        #expect(try await run(store, "quick").state == .success)
        let listed = try await workers(b)["reg-1"]
        #expect(listed?["auth_mode"] == "token" && listed?["status"] == "idle", "\(listed ?? .null)")
        let file = b.dir.appendingPathComponent("work-reg-1/credential.json").path
        #expect((try FileManager.default.attributesOfItem(atPath: file)[.posixPermissions] as? Int) == 0o600)
        let saved = try #require(try JSON.parse(Array(try Data(contentsOf: URL(fileURLWithPath: file))))["token"]?.stringValue)
        for log in [b.lightning.log, worker.log] {
            #expect(!log.contains(token) && !log.contains(saved), "a token in a log")
        }
        #expect(b.lightning.log.contains("worker registered"))
    }

    @Test("a registered worker restarted with its spent registration token carries on with the credential it saved")
    func restartOnSavedCredential() async throws {
        let b = try await Binaries(extra: ["--no-shared-secret"])
        defer { b.remove() }
        let store = try b.store()
        _ = try await store.applyWorkflow(try WorkflowDefinition.parse(Self.quick))
        let token = try await register(b, "reg-2")
        let worker = try b.worker("reg-2", extra: ["--registration-token", token])
        defer { worker.stop() }
        try await worker.waitForLog("registered with Lightning: worker auth token received")
        worker.signal(SIGKILL)
        _ = await worker.waitForExit()
        let again = try b.worker("reg-2", extra: ["--registration-token", token], log: "reg-2-again.log")
        defer { again.stop() }
        try await again.waitForLog("using the saved worker credential")
        try await again.waitForLog("connected to Lightning")
        #expect(try await run(store, "quick").state == .success)
        // A new registration token at a restart is a rotation: exchanged, though the saved credential is still good,
        // and the one it replaces is refused from then on.
        let savedPath = b.dir.appendingPathComponent("work-reg-2/credential.json")
        let before = try #require(try JSON.parse(Array(try Data(contentsOf: savedPath)))["token"]?.stringValue)
        again.stop()
        let rotated = try b.worker("reg-2", extra: ["--registration-token", try await register(b, "reg-2")], log: "reg-2-rotated.log")
        defer { rotated.stop() }
        try await rotated.waitForLog("registered with Lightning: worker auth token received")
        #expect(!rotated.log.contains("using the saved worker credential"))
        #expect(try await run(store, "quick").state == .success)
        let after = try #require(try JSON.parse(Array(try Data(contentsOf: savedPath)))["token"]?.stringValue)
        #expect(after != before)
        rotated.stop()
        // Without the file the spent token is refused, and says so.
        again.stop()
        try FileManager.default.removeItem(at: b.dir.appendingPathComponent("work-reg-2/credential.json"))
        let third = try b.worker("reg-2", extra: ["--registration-token", token], log: "reg-2-third.log")
        defer { third.stop() }
        #expect(await third.waitForExit(timeout: 30) == 77, "\(third.log)")
        #expect(b.lightning.log.contains("registration token already used"), "\(b.lightning.log)")
    }

    @Test("POST /register: a worker with no credentials waits, refuses a bad or another worker's token, takes its own and works; a worker that does not trust Lightning's key refuses it")
    func waitForRegistration() async throws {
        let b = try await Binaries()
        defer { b.remove() }
        let store = try b.store()
        _ = try await store.applyWorkflow(try WorkflowDefinition.parse(Self.quick))
        let publicKey = Data(b.keys.keyPair.publicKeyPEM.utf8).base64EncodedString()
        let noKeys = ["--keys-dir", b.dir.appendingPathComponent("no-keys").path]
        let worker = try b.worker("waiter", extra: noKeys + ["--admin-port", "0"], environment: ["LIGHTNING_PUBLIC_KEY": publicKey])
        defer { worker.stop() }
        let port = try await adminPort(worker)
        try await worker.waitForLog("no credentials: waiting for a registration token")
        let live = try await http("GET", port, "/livez")
        #expect(live.code == "200" && live.body.contains("waiting for a registration token"), "\(live)")
        let garbage = try await http("POST", port, "/register", body: #"{"token":"not.a.token"}"#)
        #expect(garbage.code == "400", "\(garbage)")
        let foreign = try await http("POST", port, "/register", body: #"{"token":"\#(try await register(b, "someone-else"))"}"#)
        #expect(foreign.code == "400" && foreign.body.contains("is for worker someone-else"), "\(foreign)")
        let mine = try await http("POST", port, "/register", body: #"{"token":"\#(try await register(b, "waiter"))"}"#)
        #expect(mine.code == "200" && mine.body.contains(#""status":"registered""#), "\(mine)")
        #expect(try await run(store, "quick").state == .success)
        #expect(try await http("POST", port, "/register", body: #"{"token":"x.y.z"}"#).code == "400")
        let twice = try await http("POST", port, "/register", body: #"{"token":"\#(try await register(b, "waiter"))"}"#)
        #expect(twice.code == "409", "\(twice)")
        // Revoked, it goes back to waiting (it has an admin port) and takes a new registration on the same socket client.
        #expect(try await b.cli(["workers", "revoke", "waiter"]).status == 0)
        let waitingAgain = ContinuousClock.now + .seconds(30)
        while !(try await http("GET", port, "/livez")).body.contains("waiting for a registration token"), ContinuousClock.now < waitingAgain {
            try await Task.sleep(for: .milliseconds(100))
        }
        let renewed = try await http("POST", port, "/register", body: #"{"token":"\#(try await register(b, "waiter"))"}"#)
        #expect(renewed.code == "200", "\(renewed) \(worker.log)")
        #expect(try await run(store, "quick").state == .success)
        #expect(worker.process.isRunning)

        // A worker that trusts another key: the credential Lightning hands over does not verify, so it stops.
        let stranger = Data(try WorkerKeySet.generate().keyPair.publicKeyPEM.utf8).base64EncodedString()
        let wary = try b.worker("wary", extra: noKeys + ["--registration-token", try await register(b, "wary")],
                                environment: ["LIGHTNING_PUBLIC_KEY": stranger])
        defer { wary.stop() }
        #expect(await wary.waitForExit(timeout: 30) == 77, "\(wary.log)")
        #expect(wary.log.contains("does not verify with LIGHTNING_PUBLIC_KEY"), "\(wary.log)")
    }

    @Test("revoke: the worker's socket is closed, it exits 77 saying why, and its name is refused from then on")
    func revoke() async throws {
        let b = try await Binaries(extra: ["--no-shared-secret"])
        defer { b.remove() }
        let worker = try b.worker("doomed", extra: ["--registration-token", try await register(b, "doomed")])
        defer { worker.stop() }
        try await worker.waitForLog("registered with Lightning")
        let r = try await b.cli(["workers", "revoke", "doomed"])
        #expect(r.status == 0 && r.stdout.contains("1 socket(s) closed"), "\(r)")
        #expect(await worker.waitForExit(timeout: 30) == 77, "\(worker.log)")
        #expect(worker.log.contains("refused this worker's credential"), "\(worker.log)")
        #expect(b.lightning.log.contains("is revoked"), "\(b.lightning.log)")
        #expect(try await workers(b)["doomed"]?["status"] == "revoked")
        // The saved credential went with it: the next start has only the shared secret, which is turned off here.
        #expect(!FileManager.default.fileExists(atPath: b.dir.appendingPathComponent("work-doomed/credential.json").path))
        let next = try b.worker("doomed", log: "doomed-next.log")
        defer { next.stop() }
        #expect(await next.waitForExit(timeout: 30) == 77, "\(next.log)")
        #expect(b.lightning.log.contains("shared worker secret is turned off"))
    }

    @Test("drain with a deadline: finish, requeue and cancel for attempts still running; attempts that end in time succeed; then the worker exits 0")
    func drainPolicies() async throws {
        let b = try await Binaries()
        defer { b.remove() }
        let store = try b.store()
        _ = try await store.applyWorkflow(try WorkflowDefinition.parse(Self.endless))
        _ = try await store.applyWorkflow(try WorkflowDefinition.parse("""
            name: brief
            jobs: [{name: s, adaptor: sh, body: "echo start; sleep 2; echo done"}]
            """))
        // In time: the attempt finishes within the deadline.
        let inTime = try b.worker("drain-in-time")
        let brief = try await store.createWorkOrder(workflow: "brief", input: Array("{}".utf8))
        try await store.waitForFirstLog(brief.attemptID)
        #expect(try await b.cli(["workers", "drain", "drain-in-time", "--deadline", "60s"]).stdout.contains("draining"))
        #expect(await inTime.waitForExit(timeout: 60) == 0, "\(inTime.log)")
        #expect(try await store.attempt(brief.attemptID).state == .success)

        for (policy, state, errorType) in [("finish", AttemptState.killed, "ShutdownError"), ("cancel", .cancelled, "Cancelled"),
                                            ("requeue", .killed, "Requeued")] {
            let worker = try b.worker("drain-\(policy)")
            let created = try await store.createWorkOrder(workflow: "endless", input: Array("{}".utf8))
            try await store.waitForFirstLog(created.attemptID)
            let r = try await b.cli(["workers", "drain", "drain-\(policy)", "--deadline", "1s", "--policy", policy])
            #expect(r.status == 0 && r.stdout.contains("draining"), "\(r)")
            #expect(await worker.waitForExit(timeout: 30) == 0, "\(worker.log)")
            let a = try await store.attempt(created.attemptID)
            #expect(a.state == state && a.errorType == errorType, "\(policy): \(a)")
            let chain = try await store.attempts(workOrderID: created.workOrderID)
            if policy == "requeue" {
                #expect(chain.count == 2 && chain.last?.state == .available, "\(chain)")
            } else {
                #expect(chain.count == 1, "\(chain)")
            }
        }
    }

    @Test("drain --stay leaves the worker connected and idle; pause and resume; SIGTERM with --shutdown-policy requeue")
    func stayPauseResume() async throws {
        let b = try await Binaries()
        defer { b.remove() }
        let store = try b.store()
        _ = try await store.applyWorkflow(try WorkflowDefinition.parse(Self.quick))
        _ = try await store.applyWorkflow(try WorkflowDefinition.parse(Self.endless))
        let worker = try b.worker("stayer")
        defer { worker.stop() }
        try await worker.waitForLog("connected to Lightning")
        #expect(try await run(store, "quick").state == .success)
        #expect(try await b.cli(["workers", "drain", "stayer", "--deadline", "0s", "--stay"]).status == 0)
        try await worker.waitForLog("drained: staying connected")
        try await waitForStatus(b, "stayer", "drained")
        // Drained: nothing is claimed (it is still connected and would otherwise take it at once).
        let waiting = try await store.createWorkOrder(workflow: "quick", input: Array("{}".utf8))
        try await Task.sleep(for: .seconds(2))
        #expect(try await store.attempt(waiting.attemptID).state == .available)
        #expect(worker.process.isRunning)
        #expect(try await b.cli(["workers", "resume", "stayer"]).stdout.contains("resumed"))
        #expect(try await store.waitUntilFinal(waiting.attemptID).state == .success)
        try await waitForStatus(b, "stayer", "idle")

        #expect(try await b.cli(["workers", "pause", "stayer"]).stdout.contains("paused"))
        try await worker.waitForLog("paused by Lightning")
        try await waitForStatus(b, "stayer", "paused")
        let paused = try await store.createWorkOrder(workflow: "quick", input: Array("{}".utf8))
        try await Task.sleep(for: .seconds(2))
        #expect(try await store.attempt(paused.attemptID).state == .available)
        #expect(try await b.cli(["workers", "resume", "--all"]).stdout.contains("resumed"))
        #expect(try await store.waitUntilFinal(paused.attemptID).state == .success)
        // A resume while a --stay drain still has an attempt running is kept for when that drain ends.
        let long = try await store.createWorkOrder(workflow: "endless", input: Array("{}".utf8))
        try await store.waitForFirstLog(long.attemptID)
        #expect(try await b.cli(["workers", "drain", "stayer", "--deadline", "2s", "--policy", "cancel", "--stay"]).status == 0)
        try await worker.waitForLog("draining: claiming nothing more")
        #expect(try await b.cli(["workers", "resume", "stayer"]).status == 0)
        try await worker.waitForLog("resume noted")
        #expect(try await store.waitUntilFinal(long.attemptID).state == .cancelled)
        try await worker.waitForLog("drained; resumed as asked meanwhile")
        #expect(try await run(store, "quick").state == .success)
        worker.stop()

        let requeuer = try b.worker("requeuer", extra: ["--shutdown-timeout", "0.5", "--shutdown-policy", "requeue"])
        let created = try await store.createWorkOrder(workflow: "endless", input: Array("{}".utf8))
        try await store.waitForFirstLog(created.attemptID)
        requeuer.signal(SIGTERM)
        #expect(await requeuer.waitForExit(timeout: 30) == 0, "\(requeuer.log)")
        let chain = try await store.attempts(workOrderID: created.workOrderID)
        #expect(chain.first?.errorType == "Requeued" && chain.count == 2 && chain.last?.state == .available, "\(chain)")
    }

    @Test("drain --deployment-not rotates away every worker from a stale launch configuration, and only those")
    func deploymentRotation() async throws {
        let b = try await Binaries()
        defer { b.remove() }
        let store = try b.store()
        _ = try await store.applyWorkflow(try WorkflowDefinition.parse(Self.quick))
        let old1 = try b.worker("old-1", extra: ["--deployment-id", "v1"])
        let old2 = try b.worker("old-2", extra: ["--deployment-id", "v1", "--label", "gpu"])
        let new = try b.worker("new-1", extra: ["--deployment-id", "v2"])
        defer {
            old1.stop()
            old2.stop()
            new.stop()
        }
        for name in ["old-1", "old-2", "new-1"] { try await waitForStatus(b, name, "idle") }
        let listed = try await workers(b)
        #expect(listed["old-2"]?["deployment_id"] == "v1" && listed["old-2"]?["labels"] == ["gpu"], "\(listed)")
        let r = try await b.cli(["workers", "drain", "--deployment-not", "v2", "--deadline", "0s"])
        #expect(r.status == 0 && r.stdout.contains("old-1") && r.stdout.contains("old-2") && !r.stdout.contains("new-1"), "\(r)")
        #expect(await old1.waitForExit(timeout: 30) == 0, "\(old1.log)")
        #expect(await old2.waitForExit(timeout: 30) == 0, "\(old2.log)")
        #expect(new.process.isRunning)
        let a = try await run(store, "quick")
        #expect(a.state == .success && a.workerName == "new-1")
        let after = try await workers(b)
        #expect(after["new-1"]?["status"] == "idle" && after["old-1"]?["status"] == "disconnected", "\(after)")
        // Bad selections are refused with a clear message.
        let none = try await b.cli(["workers", "drain", "--deadline", "0s"])
        #expect(none.status != 0 && none.stderr.contains("say which workers"), "\(none)")
        let unknown = try await b.cli(["workers", "pause", "nobody"])
        #expect(unknown.status != 0 && unknown.stderr.contains("no worker named"), "\(unknown)")
    }

    @Test("Lightning's defaults for a worker's group apply to the settings the worker was not given; a bad groups file stops serve with the reason")
    func groupDefaults() async throws {
        let files = try TestSupport.temporaryDirectory("groups")
        defer { try? FileManager.default.removeItem(at: files) }
        let groups = files.appendingPathComponent("groups.yaml")
        try """
            default: {capacity: 1}
            big: {capacity: 3, shutdown-policy: requeue, shutdown-timeout: 0.5}
            """.write(to: groups, atomically: true, encoding: .utf8)
        let b = try await Binaries(extra: ["--worker-groups", groups.path])
        defer { b.remove() }
        let store = try b.store()
        _ = try await store.applyWorkflow(try WorkflowDefinition.parse(Self.endless))
        let plain = try b.worker("plain")
        defer { plain.stop() }
        try await plain.waitForLog(#"settings=capacity=1 \[RuntimeWorker\] settings from Lightning's defaults"#)
        let big = try b.worker("big-1", extra: ["--group", "big", "--capacity", "2"])
        defer { big.stop() }
        // Its own --capacity wins; the shutdown settings it did not give come from the group.
        try await big.waitForLog(#"settings=shutdown-timeout=0.5 shutdown-policy=requeue \[RuntimeWorker\]"#)
        let listed = try await workers(b)
        #expect(listed["plain"]?["capacity"] == 1 && listed["big-1"]?["capacity"] == 2 && listed["big-1"]?["group"] == "big", "\(listed)")
        let printed = try await TestSupport.run(try TestSupport.builtBinary("runtime-worker"),
                                                ["--print-config", "--name", "x", "--keys-dir", b.dir.appendingPathComponent("keys").path])
        #expect(printed.stdout.contains("Lightning's group defaults apply at join"), "\(printed)")
        plain.stop()
        let created = try await store.createWorkOrder(workflow: "endless", input: Array("{}".utf8))
        try await store.waitForFirstLog(created.attemptID)
        big.signal(SIGTERM)
        #expect(await big.waitForExit(timeout: 30) == 0, "\(big.log)")
        #expect(try await store.attempt(created.attemptID).errorType == "Requeued")

        try "default: {capacity: 0, colour: blue}".write(to: groups, atomically: true, encoding: .utf8)
        let bad = try await TestSupport.run(try TestSupport.builtBinary("lightning"),
                                            ["serve", "--port", "0", "--database", files.appendingPathComponent("x.db").path,
                                             "--keys-dir", files.appendingPathComponent("keys").path, "--worker-groups", groups.path])
        #expect(bad.status != 0 && bad.stderr.contains("--worker-groups"), "\(bad)")
    }

    /// Lightning's answer to a worker-socket upgrade carrying `query`: its status line and body.
    func upgrade(_ b: Binaries, _ query: String) async throws -> String {
        let script = """
            import socket, sys
            s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=20)
            s.sendall(("GET /worker/websocket?" + sys.argv[2] + "&vsn=2.0.0 HTTP/1.1\\r\\nHost: x\\r\\nUpgrade: websocket\\r\\n"
                       "Connection: Upgrade\\r\\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\\r\\nSec-WebSocket-Version: 13\\r\\n\\r\\n").encode())
            data = b""
            while b"\\r\\n\\r\\n" not in data:
                chunk = s.recv(4096)
                if not chunk: break
                data += chunk
            head, _, body = data.partition(b"\\r\\n\\r\\n")
            length = 0
            for line in head.split(b"\\r\\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length": length = int(value.strip())
            while len(body) < length:
                chunk = s.recv(4096)
                if not chunk: break
                body += chunk
            sys.stdout.write((head + b"\\r\\n\\r\\n" + body).decode("latin-1"))
            """
        return try await TestSupport.run(try #require(TestSupport.which("python3")), ["-c", script, "\(b.port)", query]).stdout
    }

    @Test("the lightning binary refuses every wrong worker credential with 401 before the upgrade; its log says why, never the token")
    func refusedKinds() async throws {
        let b = try await Binaries(extra: ["--no-shared-secret", "--auth-failure-burst", "0"])
        defer { b.remove() }
        let key = try JWTKey.rsa(pem: b.keys.keyPair.privateKeyPEM)
        let other = try JWTKey.rsa(pem: try WorkerKeySet.generate().keyPair.privateKeyPEM)
        let now = Date().timeIntervalSince1970
        let registration = try await register(b, "kinds")
        let cases: [(String, String, String)] = [
            ("shared secret", "token=\(try JWT.sign(WorkerTokenClaims(workerID: "kinds"), key: .hmac(secret: b.keys.workerSecret)))",
             "shared worker secret is turned off"),
            ("wrong type", "token=\(registration)", "this is a registration token, not a worker auth token"),
            ("attempt token", "token=\(try JWT.sign(AttemptTokenClaims(attemptID: "a", lifetime: 60), key: key))", "not a worker credential"),
            ("another key", "token=\(try JWT.sign(WorkerCredentialClaims(kind: .auth, workerID: "kinds", jti: "x", lifetime: 60, generation: 1), key: other))",
             "signature"),
            ("expired", "token=\(try JWT.sign(WorkerCredentialClaims(kind: .auth, workerID: "kinds", jti: "x", now: now - 100, lifetime: 10, generation: 1), key: key))",
             "expired"),
            ("not minted here", "registration_token=\(try JWT.sign(WorkerCredentialClaims(kind: .registration, workerID: "kinds", jti: "forged", lifetime: 60), key: key))",
             "unknown registration token"),
        ]
        for (what, query, reason) in cases {
            let answer = try await upgrade(b, query)
            #expect(answer.hasPrefix("HTTP/1.1 401") && answer.contains(reason), "\(what): \(answer)")
        }
        // Used once, then refused as used; revoked, refused as revoked.
        let worker = try b.worker("kinds", extra: ["--registration-token", registration])
        try await worker.waitForLog("registered with Lightning")
        worker.stop()
        #expect(try await upgrade(b, "registration_token=\(registration)").contains("already used"))
        let saved = try #require(try JSON.parse(Array(try Data(contentsOf: b.dir.appendingPathComponent("work-kinds/credential.json"))))["token"]?.stringValue)
        #expect(try await upgrade(b, "token=\(saved)").hasPrefix("HTTP/1.1 101"))
        #expect(try await b.cli(["workers", "revoke", "kinds"]).status == 0)
        #expect(try await upgrade(b, "token=\(saved)").contains("is revoked"))
        let log = b.lightning.log
        for (_, query, reason) in cases {
            #expect(log.contains(reason), "\(reason) not in Lightning's log")
            let token = String(query.drop { $0 != "=" }.dropFirst())
            #expect(!log.contains(token), "a token in Lightning's log")
        }
        #expect(!log.contains(registration) && !log.contains(saved))
    }
}
