import Foundation
import JWT
import Testing
@testable import Lightning

/// Attempt tokens signed ahead of their claim: unit rules, then over a real socket.
@Suite("Tokens signed ahead", .serialized)
struct TokensAheadTests {
    @Test("a token signed ahead is handed out once while fresh; a stale one, a forgotten one or none gives nil")
    func rules() async {
        let ahead = TokensAhead(maxInFlight: 2, maxKept: 3, maxAgeSeconds: 5)
        #expect(ahead.start("a") { .init(token: "tok-a", issuedAt: 100) })
        #expect(await ahead.take("a", now: { 104 })?.token == "tok-a")
        #expect(await ahead.take("a", now: { 104 })?.token == nil, "handed out once")
        #expect(ahead.start("b") { .init(token: "tok-b", issuedAt: 100) })
        #expect(await ahead.take("b", now: { 105.5 })?.token == nil, "older than 5 s at its claim")
        #expect(ahead.start("c") { nil })
        #expect(await ahead.take("c")?.token == nil, "signing failed")
        #expect(ahead.start("d") { .init(token: "tok-d", issuedAt: 100) })
        ahead.forget("d")
        #expect(await ahead.take("d")?.token == nil)
        #expect(await ahead.take("never")?.token == nil)
        #expect(ahead.counts == (used: 1, unused: 3))
    }

    @Test("at most maxInFlight sign at once and maxKept wait for their claims")
    func limits() async {
        let ahead = TokensAhead(maxInFlight: 1, maxKept: 2, maxAgeSeconds: 5)
        let release = Gate()
        #expect(ahead.start("a") { release.wait(); return .init(token: "a", issuedAt: 0) })
        #expect(!ahead.start("b") { .init(token: "b", issuedAt: 0) }, "one is signing")
        release.open()
        _ = await ahead.take("a", now: { 0 })?.token
        #expect(ahead.start("b") { .init(token: "b", issuedAt: 0) })
        // b may still be signing: wait until it is done before the next start, so only the kept limit counts.
        _ = await ahead.take("b", now: { 0 })?.token
        #expect(ahead.start("c") { .init(token: "c", issuedAt: 0) })
        _ = await ahead.take("c", now: { 0 })?.token
        // Kept tokens nobody claims here (claimed through another replica) make room once too old to be used.
        let kept = TokensAhead(maxInFlight: 4, maxKept: 2, maxAgeSeconds: 5)
        #expect(kept.start("x", now: 100) { .init(token: "x", issuedAt: 100) })
        #expect(kept.start("y", now: 101) { .init(token: "y", issuedAt: 101) })
        #expect(!kept.start("z", now: 104) { .init(token: "z", issuedAt: 104) }, "two kept, both fresh")
        #expect(kept.start("z", now: 106) { .init(token: "z", issuedAt: 106) }, "x is stale: dropped")
        #expect(kept.counts == (used: 0, unused: 1))
        #expect(await kept.take("y", now: { 106 })?.token == "y")
    }

    @Test("over a socket: with a worker's slots free, new work's token is signed before the claim and is the one it gets")
    func overASocket() async throws {
        let h = try await Harness.make(.sqlite)
        defer { Task { await h.stop() } }
        try await h.t.workflow()
        let worker = try await h.connectedWorker()
        defer { worker.close() }
        // All slots busy as far as Lightning knows: nothing is signed ahead.
        _ = try await h.lightning.startWork(workflow: "greet", input: Array("{}".utf8))
        #expect(h.lightning.tokensAhead.counts == (used: 0, unused: 0))
        // A claim that finds fewer than it asked for: this worker has free slots.
        let claim = try await worker.push(topic: "worker:queue", event: "claim", payload: ["demand": 2])
        #expect(claim.response["runs"]?.arrayValue?.count == 1)
        let created = try await h.lightning.startWork(workflow: "greet", input: Array("{}".utf8))
        let second = try await worker.push(topic: "worker:queue", event: "claim", payload: ["demand": 1])
        let runs = try #require(second.response["runs"]?.arrayValue)
        #expect(runs.count == 1 && runs[0]["id"]?.stringValue == created.attemptID)
        let token = try #require(runs[0]["token"]?.stringValue)
        #expect(h.lightning.tokensAhead.counts == (used: 1, unused: 0))
        let claims = try AttemptTokenClaims.verify(token, key: .rsa(pem: h.keys.keyPair.publicKeyPEM), attemptID: created.attemptID)
        #expect(claims.sub == "run:\(created.attemptID)")
        let metrics = String(decoding: await h.lightning.renderMetrics().body, as: UTF8.self)
        #expect(metrics.range(of: #"lightning_attempt_tokens_signed_ahead\{outcome="used"\} 1(\.0)?\n"#, options: .regularExpression) != nil,
                "\(metrics)")
        #expect(h.lightning.isIssuedToken(token, attemptID: created.attemptID), "remembered as the one handed out")
        // It joins run:<id> like any token Lightning signed.
        try await worker.join(topic: "run:\(created.attemptID)", payload: { ["token": .string(token)] })
    }
}

/// A one-shot gate a signing closure (on a thread of its own) waits on.
private final class Gate: @unchecked Sendable {
    private let condition = NSCondition()
    private var isOpen = false
    func wait() {
        condition.lock()
        while !isOpen { condition.wait() }
        condition.unlock()
    }
    func open() {
        condition.lock()
        isOpen = true
        condition.broadcast()
        condition.unlock()
    }
}
