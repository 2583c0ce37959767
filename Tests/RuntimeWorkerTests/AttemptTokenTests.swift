import Foundation
import JWT
import Testing
@testable import RuntimeWorker

@Suite("The worker's check of attempt tokens")
struct AttemptTokenTests {
    static let lightning = Result { try RSAKeyPair.generate() }
    static let stranger = Result { try RSAKeyPair.generate() }

    func token(for id: String, signedBy pair: RSAKeyPair, now: Double = Date().timeIntervalSince1970) throws -> String {
        try JWT.sign(AttemptTokenClaims(attemptID: id, now: now, lifetime: 300), key: try JWTKey.rsa(pem: pair.privateKeyPEM))
    }

    var publicKey: JWTKey { get throws { try JWTKey.rsa(pem: try Self.lightning.get().publicKeyPEM) } }

    @Test("a token Lightning signed for this attempt is accepted")
    func accepted() async throws {
        try Worker.checkAttemptToken(try token(for: "a1", signedBy: Self.lightning.get()), attemptID: "a1", key: publicKey)
    }

    @Test("a tampered token is refused")
    func tampered() async throws {
        let good = try token(for: "a1", signedBy: Self.lightning.get())
        var parts = good.split(separator: ".").map(String.init)
        let claims = String(decoding: try #require(Data(base64Encoded: base64(parts[1]))), as: UTF8.self)
        parts[1] = Data(claims.replacingOccurrences(of: "\"a1\"", with: "\"a2\"").utf8).base64EncodedString()
            .replacingOccurrences(of: "=", with: "").replacingOccurrences(of: "+", with: "-").replacingOccurrences(of: "/", with: "_")
        #expect(throws: (any Error).self) { try Worker.checkAttemptToken(parts.joined(separator: "."), attemptID: "a2", key: publicKey) }
    }

    @Test("a token signed by a foreign key is refused")
    func foreignKey() async throws {
        let foreign = try token(for: "a1", signedBy: Self.stranger.get())
        #expect(throws: (any Error).self) { try Worker.checkAttemptToken(foreign, attemptID: "a1", key: publicKey) }
    }

    @Test("a token for another attempt is refused")
    func wrongID() async throws {
        let other = try token(for: "a1", signedBy: Self.lightning.get())
        #expect(throws: (any Error).self) { try Worker.checkAttemptToken(other, attemptID: "a9", key: publicKey) }
    }

    @Test("an expired token is refused")
    func expired() async throws {
        let old = try token(for: "a1", signedBy: Self.lightning.get(), now: Date().timeIntervalSince1970 - 3600)
        #expect(throws: (any Error).self) { try Worker.checkAttemptToken(old, attemptID: "a1", key: publicKey) }
    }

    func base64(_ url: String) -> String {
        var s = url.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        while s.count % 4 != 0 { s += "=" }
        return s
    }
}
