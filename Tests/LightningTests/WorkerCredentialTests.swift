import Channels
import Foundation
import JWT
import Testing
import TestSupport
@testable import Lightning

/// A clock in seconds since the epoch that moves only when told.
final class SecondsClock: @unchecked Sendable {
    private let lock = NSLock()
    private var current: Double
    init(_ start: Double) { current = start }
    var now: Double { lock.withLock { current } }
    func advance(_ seconds: Double) { lock.withLock { current += seconds } }
}

/// Worker credentials on a real server (docs/workers.md): every kind of refused token gets 401 before the upgrade,
/// a registered socket lives on through its renewals, and one that stops renewing is closed.
@Suite("Worker credentials")
struct WorkerCredentialTests {
    /// The status line and body Lightning answers a worker-socket upgrade with `query`.
    func upgrade(_ h: Harness, _ query: String) async throws -> String {
        try await h.raw("GET /worker/websocket?\(query)&vsn=2.0.0 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            + "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: phoenix\r\n\r\n")
    }

    /// Whether the client reports an event matching `matches` within `timeout` (seconds, generous: the machine is loaded).
    static func event(of client: ChannelClient, timeout: Duration = .seconds(30),
                      _ matches: @escaping @Sendable (ChannelClient.Event) -> Bool) async -> Bool {
        await withTaskGroup(of: Bool.self) { group in
            group.addTask {
                for await event in client.events where matches(event) { return true }
                return false
            }
            group.addTask {
                try? await Task.sleep(for: timeout)
                return false
            }
            let first = await group.next() ?? false
            group.cancelAll()
            return first
        }
    }

    func registrationClient(_ h: Harness, _ token: String) async throws -> ChannelClient {
        var config = ChannelClient.Configuration(url: "ws://127.0.0.1:\(h.port)/worker/websocket") {
            ["registration_token": token, "vsn": "2.0.0"]
        }
        config.reconnectBase = .milliseconds(50)
        let c = try ChannelClient(configuration: config)
        try c.connect()
        try await waitUntil("connected") { c.connected }
        return c
    }

    @Test("every refused worker credential gets 401 before the upgrade, saying why, and each kind is refused as the other")
    func refusals() async throws {
        let h = try Harness {
            $0.sharedSecretEnabled = false
            $0.authFailureBurst = 0
        }
        defer { Task { await h.stop() } }
        let key = try JWTKey.rsa(pem: h.keys.keyPair.privateKeyPEM)
        let other = try JWTKey.rsa(pem: try WorkerKeySet.generate().keyPair.privateKeyPEM)
        let registration = try #require(try await h.lightning.registerWorker("w1", ttlSeconds: 60, by: "test")["token"]?.stringValue)
        func auth(_ name: String = "w1", gen: Int64 = 1, lifetime: Double = 60, now: Double = Date().timeIntervalSince1970,
                  with signer: JWTKey? = nil) throws -> String {
            try JWT.sign(WorkerCredentialClaims(kind: .auth, workerID: name, jti: "t", now: now, lifetime: lifetime, generation: gen),
                         key: signer ?? key)
        }
        let cases: [(String, String, String)] = [
            ("the shared secret, turned off", "token=\(try h.workerToken("w1"))", "shared worker secret is turned off"),
            ("a registration token as an auth token", "token=\(registration)", "this is a registration token, not a worker auth token"),
            ("an attempt token", "token=\(try JWT.sign(AttemptTokenClaims(attemptID: "a1", lifetime: 60), key: key))",
             "not a worker credential"),
            ("an auth token signed by another key", "token=\(try auth(with: other))", "signature"),
            ("an expired auth token", "token=\(try auth(lifetime: 10, now: Date().timeIntervalSince1970 - 100))", "expired"),
            ("an auth token for a worker never registered", "token=\(try auth("nobody"))", "unknown worker"),
            ("an auth token as a registration token", "registration_token=\(try auth())", "this is a worker auth token, not a registration token"),
            ("a registration token this database never minted", "registration_token=\(try JWT.sign(WorkerCredentialClaims(kind: .registration, workerID: "w1", jti: "forged", lifetime: 60), key: key))",
             "unknown registration token"),
            ("an expired registration token", "registration_token=\(try JWT.sign(WorkerCredentialClaims(kind: .registration, workerID: "w1", jti: "old", now: Date().timeIntervalSince1970 - 100, lifetime: 10), key: key))",
             "expired"),
        ]
        for (what, query, reason) in cases {
            let answer = try await upgrade(h, query)
            #expect(answer.hasPrefix("HTTP/1.1 401"), "\(what): \(answer)")
            #expect(answer.contains(reason), "\(what): \(answer)")
        }

        // The registration is good once: the join hands over an auth token for this worker, signed with the key.
        let first = try await registrationClient(h, registration)
        let reply = try await first.join(topic: "worker:queue", payload: { ["capacity": 2, "extensions": ["worker:renew"]] })
        let token = try #require(reply["credential"]?["token"]?.stringValue)
        let claims = try WorkerCredentialClaims.verify(token, key: key.publicKey(), kind: .auth)
        #expect(claims.workerID == "w1" && claims.gen == 1)
        defer { first.close() }
        #expect(try await upgrade(h, "registration_token=\(registration)").contains("already used"))
        #expect(try await upgrade(h, "token=\(token)").hasPrefix("HTTP/1.1 101"))

        // Registering again supersedes the first auth token; revoking refuses the new one too.
        let again = try #require(try await h.lightning.registerWorker("w1", ttlSeconds: 60, by: "test")["token"]?.stringValue)
        let second = try await registrationClient(h, again)
        let newer = try #require(try await second.join(topic: "worker:queue", payload: { ["capacity": 1] })["credential"]?["token"]?.stringValue)
        #expect(try await upgrade(h, "token=\(token)").contains("superseded"))
        // The socket still holding the first credential is closed at once, not at its next renewal.
        #expect(await Self.event(of: first) { if case .disconnected = $0 { true } else { false } })
        _ = try await h.lightning.revokeWorker("w1", by: "test")
        let revoked = try await upgrade(h, "token=\(newer)")
        #expect(revoked.hasPrefix("HTTP/1.1 401") && revoked.contains("revoked"), "\(revoked)")
        second.close()
        // A registration minted before the revocation is dead with it.
        let third = try #require(try await h.lightning.registerWorker("w1", ttlSeconds: 60, by: "test")["token"]?.stringValue)
        _ = try await h.lightning.revokeWorker("w1", by: "test")
        #expect(try await upgrade(h, "registration_token=\(third)").contains("already used (or revoked)"))
    }

    @Test("a revoked worker is refused with the shared secret too, and its open socket is closed", arguments: Engine.all)
    func revokeSharedSecret(_ engine: Engine) async throws {
        let h = try await Harness.make(engine)
        defer { Task { await h.stop() } }
        let worker = try h.client { (try? h.workerToken("shared-1")) ?? "" }
        defer { worker.close() }
        try await waitUntil("connected") { worker.connected }
        _ = try await worker.join(topic: "worker:queue", payload: { ["capacity": 1] })
        let result = try await h.lightning.revokeWorker("shared-1", by: "test")
        #expect(result["sockets_closed"] == 1)
        #expect(await Self.event(of: worker) { if case .authenticationFailed(401) = $0 { true } else { false } })
        #expect(try await upgrade(h, "token=\(try h.workerToken("shared-1"))").contains("is revoked"))
        #expect(try await upgrade(h, "token=\(try h.workerToken("shared-2"))").hasPrefix("HTTP/1.1 101"))
        // Registered again, the name gets its own credential back, but never the shared secret.
        let registration = try #require(try await h.lightning.registerWorker("shared-1", ttlSeconds: 60, by: "t")["token"]?.stringValue)
        #expect(try await upgrade(h, "registration_token=\(registration)").hasPrefix("HTTP/1.1 101"))
        let back = try await registrationClient(h, registration)
        defer { back.close() }
        #expect(try await back.join(topic: "worker:queue", payload: { ["capacity": 1] })["credential"] != nil)
        #expect(try await upgrade(h, "token=\(try h.workerToken("shared-1"))").contains("is revoked"))
    }

    @Test("a registered socket lives on through renewals across several expiries; one that stops renewing is closed; a renewal too late is refused")
    func renewal() async throws {
        // The credentials' clock is the test's: expiry is decided by it, never by how fast a loaded machine runs.
        let clock = SecondsClock(1_800_000_000)
        let h = try Harness {
            $0.workerTokenLifetimeSeconds = 4
            $0.workerClock = { clock.now }
            // The test sweeps by itself: a background sweep between moving the clock past the end and the late
            // renewal below would close the socket before that renewal is answered.
            $0.janitorIntervalSeconds = 3600
        }
        defer { Task { await h.stop() } }
        let verify = try JWTKey.rsa(pem: h.keys.keyPair.privateKeyPEM).publicKey()
        let renewing = try await registrationClient(h, try #require(try await h.lightning.registerWorker("r1", ttlSeconds: 60, by: "t")["token"]?.stringValue))
        let idle = try await registrationClient(h, try #require(try await h.lightning.registerWorker("r2", ttlSeconds: 60, by: "t")["token"]?.stringValue))
        defer {
            renewing.close()
            idle.close()
        }
        let first = try await renewing.join(topic: "worker:queue", payload: { ["capacity": 1] })
        let start = try #require(first["credential"]?["expires_at"]?.doubleValue)
        #expect(start == clock.now + 4)
        #expect(try await idle.join(topic: "worker:queue", payload: { ["capacity": 1] })["credential"] != nil)
        // Six renewals, 2.5 s apart on the clock: the credential is renewed past nearly four lifetimes. The other
        // socket, never renewed, is closed by the sweep once its 4 s are up.
        var last = start
        for round in 1...6 {
            clock.advance(2.5)
            let r = try await renewing.push(topic: "worker:queue", event: "worker:renew", payload: [:])
            #expect(r.isOK, "round \(round): \(r.response.text)")
            let claims = try WorkerCredentialClaims.verify(try #require(r.response["token"]?.stringValue), key: verify, kind: .auth) { clock.now }
            #expect(claims.workerID == "r1" && claims.exp >= clock.now + 4 && claims.exp < clock.now + 5 && claims.exp > last, "\(claims)")
            last = claims.exp
            await h.lightning.sweep()
            #expect(renewing.isJoined("worker:queue"), "round \(round)")
        }
        #expect(await Self.event(of: idle) { if case .disconnected = $0 { true } else { false } })
        let listed = try await h.t.store.workers().first { $0.name == "r1" }
        #expect(listed?.authMode == "token" && listed?.credentialExpiresAt == Int64(last * 1_000_000), "\(String(describing: listed))")
        // Past its end (before a sweep noticed): the renewal is refused and the socket closed.
        clock.advance(4.5)
        let late = try await renewing.push(topic: "worker:queue", event: "worker:renew", payload: [:])
        #expect(!late.isOK && late.response.text.contains("ran out"), "\(late.response.text)")
        #expect(await Self.event(of: renewing) { if case .disconnected = $0 { true } else { false } })
        // The shared-secret socket has nothing to renew.
        let shared = try await h.connectedWorker("s1")
        defer { shared.close() }
        let refused = try await shared.push(topic: "worker:queue", event: "worker:renew", payload: [:])
        #expect(!refused.isOK && refused.response.text.contains("shared secret"))
    }

    @Test("fleet control goes only to workers that said they take it; the rest are reported, and a rejoin of the same process is told again", arguments: Engine.all)
    func fleetControlReach(_ engine: Engine) async throws {
        let h = try await Harness.make(engine)
        defer { Task { await h.stop() } }
        // One socket like OpenFn's ws-worker (no extensions), one like ours.
        let plain = try await h.connectedWorker("plain")
        defer { plain.close() }
        let token = try h.workerToken("ours")
        let ours = try h.client { token }
        defer { ours.close() }
        try await waitUntil("connected") { ours.connected }
        let pushes = AckedLines<JSON>()
        _ = try await ours.join(topic: "worker:queue", payload: { ["capacity": 1, "extensions": ["worker:control"], "instance_id": "p1"] },
                                onMessage: { m in if m.event == "worker:control" { pushes.add(m.payload.json ?? .null) } })
        let result = try await h.lightning.controlWorkers(.all, action: "drain", policy: .requeue, deadlineSeconds: 60, stay: true, by: "t")
        let byName = Dictionary((result["workers"]?.arrayValue ?? []).map { ($0["name"]?.stringValue ?? "", $0["result"]?.stringValue ?? "") },
                                uniquingKeysWith: { a, _ in a })
        #expect(byName["ours"] == "draining" && byName["plain"]?.hasPrefix("unsupported") == true, "\(byName)")
        try await waitUntil("the drain push") { pushes.count == 1 }
        let drain = pushes.all[0]
        #expect(drain["action"] == "drain" && drain["policy"] == "requeue" && drain["stay"] == true, "\(drain)")
        #expect((drain["deadline_ms"]?.intValue ?? 0) > 50_000, "\(drain)")
        #expect(try await h.t.store.workers().first { $0.name == "ours" }?.control?.action == .drain)
        // The same process joins again (a reconnect): told again. Another process of that name: the control is gone.
        await ours.leave(topic: "worker:queue")
        _ = try await ours.join(topic: "worker:queue", payload: { ["capacity": 1, "extensions": ["worker:control"], "instance_id": "p1"] },
                                onMessage: { m in if m.event == "worker:control" { pushes.add(m.payload.json ?? .null) } })
        try await waitUntil("the drain again") { pushes.count == 2 }
        await ours.leave(topic: "worker:queue")
        _ = try await ours.join(topic: "worker:queue", payload: { ["capacity": 1, "extensions": ["worker:control"], "instance_id": "p2"] })
        try await waitUntil("control cleared") { try await h.t.store.workers().first { $0.name == "ours" }?.control == nil }
        #expect(try await h.lightning.controlWorkers(.names(["plain"]), action: "pause", policy: .finish, deadlineSeconds: 0, stay: false,
                                                      by: "t")["workers"]?[0]?["result"]?.stringValue?.hasPrefix("unsupported") == true)
        await #expect(throws: Lightning.APIError.self) {
            try await h.lightning.controlWorkers(.names(["ghost"]), action: "pause", policy: .finish, deadlineSeconds: 0, stay: false, by: "t")
        }
    }
}
