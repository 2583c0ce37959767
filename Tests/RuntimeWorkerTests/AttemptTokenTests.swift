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

    /// Claims as other Lightnings set them: any subset, any extra.
    struct LooseClaims: Encodable {
        var id: String?
        var iss: String? = "Lightning"
        var sub: String?
        var nbf: Double?
        var iat: Double?
        var exp: Double?
    }

    func sign(_ claims: LooseClaims) throws -> String {
        try JWT.sign(claims, key: try JWTKey.rsa(pem: try Self.lightning.get().privateKeyPEM))
    }

    var now: Double { Date().timeIntervalSince1970.rounded(.down) }

    @Test("OpenFn Lightning's run token (iss, id, nbf, exp; no sub, no iat) is accepted")
    func lightningShape() async throws {
        let token = try sign(LooseClaims(id: "a1", nbf: now, exp: now + 600))
        try Worker.checkAttemptToken(token, attemptID: "a1", key: publicKey)
    }

    @Test("lightning-mock's run token (iss, id, iat, exp; no nbf) is accepted")
    func mockShape() async throws {
        let token = try sign(LooseClaims(id: "a1", iat: now, exp: now + 7200))
        try Worker.checkAttemptToken(token, attemptID: "a1", key: publicKey)
    }

    @Test("required claims: a token without exp, id or iss, or with another issuer, is refused")
    func requiredClaims() async throws {
        for claims in [LooseClaims(id: "a1", nbf: now), LooseClaims(id: nil, exp: now + 600),
                       LooseClaims(id: "a1", iss: nil, exp: now + 600), LooseClaims(id: "a1", iss: "Elsewhere", exp: now + 600)] {
            let token = try sign(claims)
            #expect(throws: (any Error).self) { try Worker.checkAttemptToken(token, attemptID: "a1", key: publicKey) }
        }
    }

    @Test("present claims are checked: a sub for another run, or an nbf in the future, is refused")
    func presentClaims() async throws {
        let wrongSub = try sign(LooseClaims(id: "a1", sub: "run:a2", exp: now + 600))
        #expect(throws: (any Error).self) { try Worker.checkAttemptToken(wrongSub, attemptID: "a1", key: publicKey) }
        let early = try sign(LooseClaims(id: "a1", nbf: now + 600, exp: now + 1200))
        #expect(throws: (any Error).self) { try Worker.checkAttemptToken(early, attemptID: "a1", key: publicKey) }
        let rightSub = try sign(LooseClaims(id: "a1", sub: "run:a1", exp: now + 600))
        try Worker.checkAttemptToken(rightSub, attemptID: "a1", key: publicKey)
    }

    func base64(_ url: String) -> String {
        var s = url.replacingOccurrences(of: "-", with: "+").replacingOccurrences(of: "_", with: "/")
        while s.count % 4 != 0 { s += "=" }
        return s
    }
}
