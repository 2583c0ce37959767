import Foundation
import Testing
@testable import JWT

/// The worker credential kinds (docs/workers.md): each verifies only as itself, and none as an attempt token.
@Suite("Worker credential tokens")
struct WorkerCredentialClaimsTests {
    static let key: JWTKey = try! JWTKey.rsa(pem: try! RSAKeyPair.generate(bits: 2048).privateKeyPEM)
    let now: Double = 1_800_000_000

    func sign(_ claims: some Encodable) throws -> String { try JWT.sign(claims, key: Self.key) }
    var publicKey: JWTKey { get throws { try Self.key.publicKey() } }

    func reason(_ body: () throws -> Any) -> String {
        do {
            _ = try body()
            return "accepted"
        } catch { return "\(error)" }
    }

    @Test("each kind verifies as itself, and as nothing else")
    func kinds() throws {
        let registration = try sign(WorkerCredentialClaims(kind: .registration, workerID: "w1", jti: "r", now: now, lifetime: 60))
        let auth = try sign(WorkerCredentialClaims(kind: .auth, workerID: "w1", jti: "a", now: now, lifetime: 60, generation: 3))
        let attempt = try sign(AttemptTokenClaims(attemptID: "a1", now: now, lifetime: 60))
        let key = try publicKey
        #expect(try WorkerCredentialClaims.verify(registration, key: key, kind: .registration) { now }.workerID == "w1")
        #expect(try WorkerCredentialClaims.verify(auth, key: key, kind: .auth) { now }.gen == 3)
        #expect(reason { try WorkerCredentialClaims.verify(registration, key: key, kind: .auth) { now } }
            .contains("this is a registration token, not a worker auth token"))
        #expect(reason { try WorkerCredentialClaims.verify(auth, key: key, kind: .registration) { now } }
            .contains("this is a worker auth token, not a registration token"))
        for kind in WorkerCredentialClaims.Kind.allCases {
            #expect(reason { try WorkerCredentialClaims.verify(attempt, key: key, kind: kind) { now } }.contains("not a worker credential"))
        }
        // A worker credential carries an aud, which no attempt token has: refused as one, whatever its other claims.
        for token in [registration, auth] {
            #expect(reason { try AttemptTokenClaims.verify(token, key: key, attemptID: "a1") { now } } != "accepted")
        }
        #expect(try AttemptTokenClaims.verify(attempt, key: key, attemptID: "a1") { now }.id == "a1")
    }

    @Test("refused: expired, a subject that is not its worker, an auth token without a generation, the shared-secret algorithm")
    func refusals() throws {
        let key = try publicKey
        let expired = try sign(WorkerCredentialClaims(kind: .auth, workerID: "w1", jti: "a", now: now - 100, lifetime: 10, generation: 1))
        #expect(reason { try WorkerCredentialClaims.verify(expired, key: key, kind: .auth) { now } }.contains("expired"))
        var other = WorkerCredentialClaims(kind: .auth, workerID: "w1", jti: "a", now: now, lifetime: 60, generation: 1)
        other.sub = "worker:w2"
        #expect(reason { try WorkerCredentialClaims.verify(try sign(other), key: key, kind: .auth) { now } }.contains("sub"))
        let noGeneration = try sign(WorkerCredentialClaims(kind: .auth, workerID: "w1", jti: "a", now: now, lifetime: 60))
        #expect(reason { try WorkerCredentialClaims.verify(noGeneration, key: key, kind: .auth) { now } }.contains("gen"))
        let hmac = try JWTKey.hmac(secret: String(repeating: "k", count: 32))
        let shared = try JWT.sign(WorkerCredentialClaims(kind: .auth, workerID: "w1", jti: "a", now: now, lifetime: 60, generation: 1), key: hmac)
        #expect(reason { try WorkerCredentialClaims.verify(shared, key: key, kind: .auth) { now } } != "accepted")
        #expect(reason { try WorkerCredentialClaims.verify(shared, key: hmac, kind: .auth) { now } }.contains("RS256"))
    }

    @Test("the header's algorithm and the payload can be read unverified, to choose a verifier and tell tokens apart")
    func peeking() throws {
        let token = try sign(WorkerCredentialClaims(kind: .registration, workerID: "w1", jti: "j-1", now: now, lifetime: 60))
        #expect(JWT.headerAlgorithm(token) == "RS256")
        #expect(JWT.headerAlgorithm(try JWT.sign(WorkerTokenClaims(workerID: "w"), key: .hmac(secret: String(repeating: "k", count: 32)))) == "HS256")
        #expect(JWT.unverifiedPayload(token)?["jti"] as? String == "j-1")
        for garbage in ["", "a", "a.b", "!!!.b.c", String(repeating: "x", count: 5000) + ".b.c"] {
            #expect(JWT.headerAlgorithm(garbage) == nil)
            #expect(JWT.unverifiedPayload(garbage) == nil)
        }
    }
}
