import Foundation
import Testing
@testable import JWT

private let secret = String(repeating: "s3cr3t-", count: 6)
private let now: @Sendable () -> Double = { 1_800_000_000 }

private struct Custom: Codable, Equatable {
    var iss: String?
    var sub: String?
    var aud: Audience?
    var exp: Double?
    var nbf: Double?
    var role: String?
}

private func b64(_ s: String) -> String { Base64URL.encode(Array(s.utf8)) }

/// A token with an arbitrary header, HMAC-signed correctly with `secret`, so only the header is wrong.
private func hmacToken(header: String, payload: String = #"{"iss":"x"}"#) throws -> String {
    let input = b64(header) + "." + b64(payload)
    let sig = try JWTKey.hmac(secret: secret).sign(Array(input.utf8))
    return input + "." + Base64URL.encode(sig)
}

private func verify(_ token: String, key: JWTKey? = nil, options: VerificationOptions = VerificationOptions(now: now))
    throws -> Custom
{
    try JWT.verify(token, key: key ?? JWTKey.hmac(secret: secret), as: Custom.self, options: options)
}

@Suite("Every rejection, each with its own error")
struct RejectionTests {
    static let rsa = try! RSAKeyPair.generate()

    @Test("sign then verify round trips, HS256 and RS256")
    func roundTrip() async throws {
        let claims = Custom(iss: "me", sub: "s", aud: .many(["a", "b"]), exp: 1_800_000_100, role: "admin")
        let hs = try JWTKey.hmac(secret: secret)
        #expect(try verify(JWT.sign(claims, key: hs), options: .init(now: now, issuer: "me", audience: "b")) == claims)
        let rs = try JWTKey.rsa(pem: Self.rsa.privateKeyPEM)
        let pub = try JWTKey.rsa(pem: Self.rsa.publicKeyPEM)
        #expect(try verify(JWT.sign(claims, key: rs), key: pub) == claims)
    }

    @Test("alg none is refused")
    func none() async throws {
        let token = b64(#"{"alg":"none"}"#) + "." + b64(#"{"iss":"x"}"#) + "."
        #expect(throws: JWTError.algorithmNone) { try verify(token) }
        #expect(throws: JWTError.algorithmNone) { try verify(try hmacToken(header: #"{"alg":"None"}"#)) }
    }

    @Test("an algorithm that does not match the key is refused, whatever the header says")
    func mismatch() async throws {
        #expect(throws: JWTError.algorithmMismatch(expected: "HS256", found: "RS256")) {
            try verify(try hmacToken(header: #"{"alg":"RS256"}"#))
        }
        #expect(throws: JWTError.algorithmMismatch(expected: "HS256", found: "HS512")) {
            try verify(try hmacToken(header: #"{"alg":"HS512"}"#))
        }
        #expect(throws: JWTError.algorithmMismatch(expected: "HS256", found: "(missing)")) {
            try verify(try hmacToken(header: #"{"typ":"JWT"}"#))
        }
        // An HS256 token presented to an RSA key: the key decides, and refuses.
        let pub = try JWTKey.rsa(pem: Self.rsa.publicKeyPEM)
        #expect(throws: JWTError.algorithmMismatch(expected: "RS256", found: "HS256")) {
            try verify(try hmacToken(header: #"{"alg":"HS256"}"#), key: pub)
        }
    }

    @Test("an RSA public key PEM cannot become an HMAC secret (algorithm confusion)")
    func confusion() async throws {
        #expect(throws: JWTError.self) { try JWTKey.hmac(secret: Self.rsa.publicKeyPEM) }
        #expect(throws: JWTError.self) { try JWTKey.hmac(secret: "  " + Self.rsa.privateKeyPEM) }
        // And a token HMAC-signed with the public PEM does not verify against the RSA key.
        let input = b64(#"{"alg":"HS256"}"#) + "." + b64(#"{"iss":"x"}"#)
        let pub = try JWTKey.rsa(pem: Self.rsa.publicKeyPEM)
        #expect(throws: JWTError.algorithmMismatch(expected: "RS256", found: "HS256")) {
            try verify(input + ".AAAA", key: pub)
        }
    }

    @Test("short HMAC secrets and weak RSA keys are refused")
    func weakKeys() async throws {
        #expect(throws: JWTError.self) { try JWTKey.hmac(secret: "short") }
        #expect(throws: JWTError.self) { try RSAKeyPair.generate(bits: 1024) }
        #expect(throws: JWTError.self) { try JWTKey.rsa(pem: "not a key") }
        #expect(throws: JWTError.self) { try JWTKey.rsa(base64PEM: "%%%") }
    }

    @Test("unknown crit headers are refused")
    func crit() async throws {
        #expect(throws: JWTError.unsupportedCriticalHeader(["exp"])) {
            try verify(try hmacToken(header: #"{"alg":"HS256","crit":["exp"],"exp":1}"#))
        }
    }

    @Test("wrong segment counts are refused", arguments: ["", "a", "a.b", "a.b.c.d", "a.b.c.d.e"])
    func segments(token: String) {
        let count = token.split(separator: ".", omittingEmptySubsequences: false).count
        #expect(throws: JWTError.wrongSegmentCount(count)) { try verify(token) }
    }

    @Test("bad base64url is refused, per segment")
    func base64() async throws {
        let good = try hmacToken(header: #"{"alg":"HS256"}"#)
        let parts = good.split(separator: ".").map(String.init)
        #expect(throws: JWTError.invalidBase64URL(segment: .header)) { try verify("e+J9." + parts[1] + "." + parts[2]) }
        #expect(throws: JWTError.invalidBase64URL(segment: .signature)) { try verify(parts[0] + "." + parts[1] + ".a=b") }
        // A bad payload segment fails the signature first (it is part of the signed input).
        #expect(throws: JWTError.invalidSignature) { try verify(parts[0] + ".e30=." + parts[2]) }
        let input = parts[0] + "." + "e30="
        let sig = try JWTKey.hmac(secret: secret).sign(Array(input.utf8))
        #expect(throws: JWTError.invalidBase64URL(segment: .payload)) { try verify(input + "." + Base64URL.encode(sig)) }
    }

    @Test("bad JSON is refused, per segment")
    func json() async throws {
        #expect(throws: JWTError.invalidJSON(segment: .header)) { try verify(try hmacToken(header: "{nope")) }
        #expect(throws: JWTError.invalidJSON(segment: .header)) { try verify(try hmacToken(header: "[1]")) }
        #expect(throws: JWTError.invalidJSON(segment: .payload)) {
            try verify(try hmacToken(header: #"{"alg":"HS256"}"#, payload: "{nope"))
        }
        #expect(throws: JWTError.invalidJSON(segment: .payload)) {
            try verify(try hmacToken(header: #"{"alg":"HS256"}"#, payload: "42"))
        }
    }

    @Test("tokens over 16 KB are refused before parsing")
    func tooLarge() {
        let token = String(repeating: "a", count: 16 * 1024 + 1)
        #expect(throws: JWTError.tokenTooLarge(bytes: 16 * 1024 + 1, limit: 16 * 1024)) { try verify(token) }
    }

    @Test("a wrong signature is refused, and checked before the claims")
    func signatureFirst() async throws {
        let other = try JWTKey.hmac(secret: String(repeating: "x", count: 40))
        // Expired AND wrongly signed: the signature error wins.
        let token = try JWT.sign(Custom(exp: 1), key: other)
        #expect(throws: JWTError.invalidSignature) { try verify(token) }
    }

    @Test("exp, nbf, iss, aud and required claims, with leeway, against the injected clock")
    func claims() async throws {
        let key = try JWTKey.hmac(secret: secret)
        func tok(_ c: Custom) throws -> String { try JWT.sign(c, key: key) }
        #expect(throws: JWTError.expired(exp: 1_799_999_990, now: 1_800_000_000)) {
            try verify(try tok(Custom(exp: 1_799_999_990)))
        }
        _ = try verify(try tok(Custom(exp: 1_799_999_996)), options: .init(now: now, leeway: 5))
        #expect(throws: JWTError.notYetValid(nbf: 1_800_000_010, now: 1_800_000_000)) {
            try verify(try tok(Custom(nbf: 1_800_000_010)), options: .init(now: now, leeway: 5))
        }
        #expect(throws: JWTError.invalidIssuer(expected: "Lightning", found: "evil")) {
            try verify(try tok(Custom(iss: "evil")), options: .init(now: now, issuer: "Lightning"))
        }
        #expect(throws: JWTError.invalidAudience(expected: "a", found: ["b"])) {
            try verify(try tok(Custom(aud: .one("b"))), options: .init(now: now, audience: "a"))
        }
        #expect(throws: JWTError.missingClaim("exp")) {
            try verify(try tok(Custom(iss: "x")), options: .init(now: now, requiredClaims: [.exp]))
        }
        #expect(throws: JWTError.self) {
            try verify(try hmacToken(header: #"{"alg":"HS256"}"#, payload: #"{"exp":"soon"}"#))
        }
    }

    @Test("a public key cannot sign")
    func publicCannotSign() async throws {
        let pub = try JWTKey.rsa(pem: Self.rsa.publicKeyPEM)
        #expect(throws: JWTError.keyCannotSign) { try JWT.sign(Custom(), key: pub) }
    }
}
