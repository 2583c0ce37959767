import Foundation
import Testing
import TestSupport
@testable import JWT

private let tool = TestSupport.packageRoot.appendingPathComponent("Tests/JWTTests/Interop/pyjwt_tool.py").path

/// Runs the PyJWT side; a missing python3 or module fails the test with the tool's message.
private func py(_ args: String...) throws -> TestSupport.ProcessResult {
    let r = try TestSupport.python(tool, args)
    if r.stderr.contains("python module missing") { throw TestSupport.Failure(r.stderr) }
    return r
}

@Suite("Interoperability with PyJWT", .serialized)
struct InteropTests {
    let dir: URL
    let keys: WorkerKeySet

    init() throws {
        dir = try TestSupport.temporaryDirectory("jwt-interop")
        keys = try WorkerKeySet.generate()
        try keys.write(to: dir.path)
    }

    var privatePath: String { dir.appendingPathComponent("attempts_private.pem").path }
    var publicPath: String { dir.appendingPathComponent("attempts_public.pem").path }

    func secretFile() throws -> String {
        let path = dir.appendingPathComponent("hs-secret").path
        try keys.workerSecret.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    @Test("tokens we sign verify in PyJWT (HS256 worker token, RS256 attempt token)")
    func oursVerifyThere() async throws {
        defer { try? FileManager.default.removeItem(at: dir) }
        let worker = try JWT.sign(WorkerTokenClaims(workerID: "w-1"), key: .hmac(secret: keys.workerSecret))
        let r1 = try py("verify", "HS256", try secretFile(), worker, "urn:openfn:worker")
        #expect(r1.status == 0, "\(r1.stdout)\(r1.stderr)")
        #expect(r1.stdout.contains(#""worker_id": "w-1""#))

        let attempt = try JWT.sign(AttemptTokenClaims(attemptID: "a-9", lifetime: 600), key: .rsa(pem: keys.keyPair.privateKeyPEM))
        let r2 = try py("verify", "RS256", publicPath, attempt, "Lightning")
        #expect(r2.status == 0, "\(r2.stdout)\(r2.stderr)")
        #expect(r2.stdout.contains(#""sub": "run:a-9""#))
    }

    @Test("tokens PyJWT signs verify here")
    func theirsVerifyHere() async throws {
        defer { try? FileManager.default.removeItem(at: dir) }
        let now = Int(Date().timeIntervalSince1970)
        let hs = try py("sign", "HS256", try secretFile(), #"{"worker_id":"py","iss":"urn:openfn:worker","iat":\#(now)}"#)
        #expect(hs.status == 0, "\(hs.stderr)")
        let claims = try WorkerTokenClaims.verify(hs.stdout.trimmingCharacters(in: .whitespacesAndNewlines),
                                                  key: .hmac(secret: keys.workerSecret))
        #expect(claims.workerID == "py")

        let rs = try py("sign", "RS256", privatePath,
                        #"{"id":"a1","sub":"run:a1","iss":"Lightning","nbf":\#(now),"iat":\#(now),"exp":\#(now + 60)}"#)
        #expect(rs.status == 0, "\(rs.stderr)")
        let attempt = try AttemptTokenClaims.verify(rs.stdout.trimmingCharacters(in: .whitespacesAndNewlines),
                                                    key: .rsa(pem: keys.keyPair.publicKeyPEM), attemptID: "a1")
        #expect(attempt.sub == "run:a1")
    }

    @Test("PyJWT-made tokens that must be refused are refused with the right error")
    func theirsRefused() async throws {
        defer { try? FileManager.default.removeItem(at: dir) }
        let now = Int(Date().timeIntervalSince1970)
        let hmacKey = try JWTKey.hmac(secret: keys.workerSecret)
        let rsaPublic = try JWTKey.rsa(pem: keys.keyPair.publicKeyPEM)
        func out(_ r: TestSupport.ProcessResult) -> String { r.stdout.trimmingCharacters(in: .whitespacesAndNewlines) }

        let none = try py("forge-none", #"{"worker_id":"x","iss":"urn:openfn:worker","iat":\#(now)}"#)
        #expect(throws: JWTError.algorithmNone) { try WorkerTokenClaims.verify(out(none), key: hmacKey) }

        let confused = try py("forge-confusion", publicPath,
                              #"{"id":"a1","sub":"run:a1","iss":"Lightning","nbf":\#(now),"iat":\#(now),"exp":\#(now + 60)}"#)
        #expect(throws: JWTError.algorithmMismatch(expected: "RS256", found: "HS256")) {
            try AttemptTokenClaims.verify(out(confused), key: rsaPublic, attemptID: "a1")
        }

        let expired = try py("sign", "HS256", try secretFile(),
                             #"{"worker_id":"x","iss":"urn:openfn:worker","iat":\#(now - 100),"exp":\#(now - 60)}"#)
        #expect(throws: JWTError.self) { try WorkerTokenClaims.verify(out(expired), key: hmacKey) }

        let wrongIssuer = try py("sign", "HS256", try secretFile(), #"{"worker_id":"x","iss":"someone","iat":\#(now)}"#)
        #expect(throws: JWTError.invalidIssuer(expected: "urn:openfn:worker", found: "someone")) {
            try WorkerTokenClaims.verify(out(wrongIssuer), key: hmacKey)
        }

        let otherAttempt = try py("sign", "RS256", privatePath,
                                  #"{"id":"a2","sub":"run:a2","iss":"Lightning","nbf":\#(now),"iat":\#(now),"exp":\#(now + 60)}"#)
        #expect(throws: JWTError.invalidClaim(name: "id", reason: "token is for attempt a2, not a1")) {
            try AttemptTokenClaims.verify(out(otherAttempt), key: rsaPublic, attemptID: "a1")
        }
    }
}

@Suite("Protocol tokens")
struct ProtocolTokenTests {
    @Test("worker tokens: worker_id and iat required, exp optional unless demanded")
    func workerToken() async throws {
        let key = try JWTKey.hmac(secret: String(repeating: "k", count: 44))
        let noExp = try JWT.sign(WorkerTokenClaims(workerID: "w", lifetime: nil), key: key)
        #expect(try WorkerTokenClaims.verify(noExp, key: key).workerID == "w")
        #expect(throws: JWTError.missingClaim("exp")) { try WorkerTokenClaims.verify(noExp, key: key, requireExpiry: true) }
        struct NoWorker: Encodable { var iss = "urn:openfn:worker"; var iat = 1.0 }
        #expect(throws: JWTError.self) { try WorkerTokenClaims.verify(JWT.sign(NoWorker(), key: key), key: key) }
    }

    @Test("attempt tokens expire with a 5 s leeway")
    func attemptToken() async throws {
        let pair = try RSAKeyPair.generate()
        let t = try JWT.sign(AttemptTokenClaims(attemptID: "a", now: 1000, lifetime: 10), key: .rsa(pem: pair.privateKeyPEM))
        let pub = try JWTKey.rsa(pem: pair.publicKeyPEM)
        _ = try AttemptTokenClaims.verify(t, key: pub, attemptID: "a", now: { 1014 })
        #expect(throws: JWTError.expired(exp: 1010, now: 1016)) {
            try AttemptTokenClaims.verify(t, key: pub, attemptID: "a", now: { 1016 })
        }
        #expect(throws: JWTError.notYetValid(nbf: 1000, now: 994)) {
            try AttemptTokenClaims.verify(t, key: pub, attemptID: "a", now: { 994 })
        }
    }

    @Test("keys load from base64 of PEM, the environment variable form")
    func base64PEM() async throws {
        let keys = try WorkerKeySet.generate()
        let signer = try JWTKey.rsa(base64PEM: keys.attemptsPrivateKeyBase64)
        let verifier = try JWTKey.rsa(base64PEM: "\"" + keys.lightningPublicKeyBase64 + "\"\n")
        #expect(signer.canSign && !verifier.canSign)
        let t = try JWT.sign(AttemptTokenClaims(attemptID: "z", lifetime: 60), key: signer)
        #expect(try AttemptTokenClaims.verify(t, key: verifier, attemptID: "z").id == "z")
    }
}
