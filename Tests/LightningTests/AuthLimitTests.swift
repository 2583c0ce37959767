import Channels
import Foundation
import Testing
import TestSupport
@testable import Lightning

/// A clock the test moves.
final class TestClock: @unchecked Sendable {
    private let lock = NSLock()
    private var current = ContinuousClock.now
    var now: ContinuousClock.Instant { lock.withLock { current } }
    func advance(_ d: Duration) { lock.withLock { current += d } }
}

@Suite("Failed token checks are rate-limited per client address")
struct AuthLimitTests {
    @Test("a burst of failures, then 429 until enough time has passed; other addresses are not affected")
    func bucket() {
        let clock = TestClock()
        let l = AuthFailureLimiter(.init(burst: 3, perSecond: 0.5), now: { clock.now })
        for _ in 0..<3 {
            #expect(l.retryAfter("10.0.0.1") == nil)
            l.failed("10.0.0.1")
        }
        #expect(l.retryAfter("10.0.0.1") == 2, "one failure is forgiven every 2 s")
        #expect(l.retryAfter("10.0.0.2") == nil)
        clock.advance(.seconds(1))
        #expect(l.retryAfter("10.0.0.1") == 1)
        clock.advance(.seconds(1))
        #expect(l.retryAfter("10.0.0.1") == nil)
        l.failed("10.0.0.1")
        #expect(l.retryAfter("10.0.0.1") == 2, "the forgiven one is spent again at once")
        clock.advance(.seconds(60))
        for _ in 0..<3 { l.failed("10.0.0.1") }
        #expect(l.retryAfter("10.0.0.1") != nil, "refilled to the burst, never beyond it")
    }

    @Test("burst 0 turns the limit off")
    func off() {
        let l = AuthFailureLimiter(.init(burst: 0, perSecond: 1))
        for _ in 0..<100 { l.failed("a") }
        #expect(l.retryAfter("a") == nil)
    }

    @Test("X-Forwarded-For names the client only when the peer is a trusted proxy (its last address)")
    func proxies() {
        let l = AuthFailureLimiter(.init(trustedProxies: ["10.0.0.9"]))
        #expect(l.client(peer: "10.0.0.9", headers: ["x-forwarded-for": "1.2.3.4, 5.6.7.8"]) == "5.6.7.8")
        #expect(l.client(peer: "10.0.0.9", headers: [:]) == "10.0.0.9")
        #expect(l.client(peer: "6.6.6.6", headers: ["x-forwarded-for": "1.2.3.4"]) == "6.6.6.6", "anyone can send the header")
    }

    @Test("the number of addresses kept is bounded")
    func bounded() {
        let l = AuthFailureLimiter(.init(burst: 2, perSecond: 1))
        for i in 0..<(AuthFailureLimiter.maxAddresses + 500) { l.failed("a\(i)") }
        // Still answering, and an address over its limit is still limited right after.
        l.failed("last"); l.failed("last")
        #expect(l.retryAfter("last") != nil)
    }

    @Test("on a real server: bad operator tokens, then 429 with Retry-After for the API, the sign-in and both sockets; webhooks and health untouched; over after the wait")
    func live() async throws {
        let clock = TestClock()
        let h = try Harness {
            $0.authFailureBurst = 3
            $0.authFailuresForgivenPerSecond = 1
            $0.authClock = { clock.now }
        }
        defer { Task { await h.stop() } }
        let (admin, _) = try await h.tokens()
        try await h.t.workflow("""
            name: hooked
            triggers: [{name: hook, type: webhook, path: hooked}]
            jobs: [{name: a, adaptor: sh, body: "true"}]
            """)
        for _ in 0..<3 { #expect(try await h.http("GET", "/api/workflows", token: "lrt_wrong").status == 401) }
        // A request with no credentials is not a guess: 401, and not counted.
        #expect(try await h.http("GET", "/api/workflows", token: nil).status == 401)
        let limited = try await h.raw("GET /api/workflows HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer lrt_wrong\r\nConnection: close\r\n\r\n")
        #expect(limited.hasPrefix("HTTP/1.1 429"), "\(limited)")
        #expect(limited.lowercased().contains("retry-after: 1"), "\(limited)")
        // Over the limit even a good token waits (the address is what is limited), as does the console sign-in.
        #expect(try await h.http("GET", "/api/workflows", token: admin).status == 429)
        let body = #"{"token":"\#(admin)"}"#
        let signIn = try await h.raw("POST /console/session HTTP/1.1\r\nHost: 127.0.0.1:\(h.port)\r\nOrigin: http://127.0.0.1:\(h.port)\r\n"
            + "Content-Type: application/json\r\nContent-Length: \(body.utf8.count)\r\nConnection: close\r\n\r\n" + body)
        #expect(signIn.hasPrefix("HTTP/1.1 429"), "\(signIn)")
        // Both sockets refuse before the upgrade.
        let worker = try await h.raw("GET /worker/websocket?token=bad&vsn=2.0.0 HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            + "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        #expect(worker.hasPrefix("HTTP/1.1 429") && worker.lowercased().contains("retry-after:"), "\(worker)")
        // Requests without credentials still go through.
        #expect(try await h.http("GET", "/healthz", token: nil).status == 200)
        #expect(try await h.http("POST", "/i/hooked", token: nil, body: "{}").status < 300)
        #expect(try await h.http("GET", "/metrics", token: nil).text.contains("lightning_auth_throttled_total"))
        // After the wait it says, the good token works again.
        clock.advance(.seconds(1))
        #expect(try await h.http("GET", "/api/workflows", token: admin).status == 200)
    }
}

extension Harness {
    /// One raw HTTP/1.1 exchange on a fresh connection; what came back, as text.
    func raw(_ request: String) async throws -> String {
        let script = """
            import socket, sys
            s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=20)
            s.sendall(sys.argv[2].encode())
            data = b""
            while b"\\r\\n\\r\\n" not in data:
                chunk = s.recv(4096)
                if not chunk: break
                data += chunk
            sys.stdout.write(data.decode("latin-1"))
            """
        let python = try #require(TestSupport.which("python3"))
        let r = try await TestSupport.run(python, ["-c", script, "\(port)", request])
        return r.stdout
    }
}
