import Foundation
import Testing
@testable import JWT

private let secret = String(repeating: "s3cr3t-", count: 6)
private let now: @Sendable () -> Double = { 1_800_000_000 }

private func b64(_ s: [UInt8]) -> String { Base64URL.encode(s) }

/// A correctly HMAC-signed token around arbitrary header and payload bytes, so only their JSON can be wrong.
private func token(header: String = #"{"alg":"HS256","typ":"JWT"}"#, payload: [UInt8]) throws -> String {
    let input = b64(Array(header.utf8)) + "." + b64(payload)
    return input + "." + Base64URL.encode(try JWTKey.hmac(secret: secret).sign(Array(input.utf8)))
}

private func token(header: String = #"{"alg":"HS256","typ":"JWT"}"#, payload: String) throws -> String {
    try token(header: header, payload: Array(payload.utf8))
}

private struct Everything: Codable, Equatable {
    var s: String
    var d: Double
    var i: Int
    var i64: Int64
    var u8: UInt8
    var b: Bool
    var f: Float
    var n: String?
    var missing: Int?
    var list: [Int]
    var nested: Nested
    var optionalNested: Nested?
    struct Nested: Codable, Equatable { var x: [String: Int]; var y: [[Bool]] }
}

@Suite("The claims reader: strict JSON, read as JSONDecoder read it")
struct ClaimsJSONTests {
    @Test("every Codable shape decodes as JSONDecoder decodes it")
    func sameAsJSONDecoder() throws {
        let payload = #"""
            {"s":"caf\u00e9 \ud83d\ude00 \"q\" \\ \/ \b\f\n\r\t","d":-1.5e-3,"i":-42,"i64":9007199254740993,"u8":255,
             "b":true,"f":0.25,"n":null,"list":[1,2,3],"nested":{"x":{"a":1,"b":2},"y":[[true],[],[false,true]]},
             "optionalNested":null}
            """#
        let ours = try ClaimsDecoder.decode(Everything.self, from: #require(ClaimJSON.parse(Array(payload.utf8))))
        let theirs = try JSONDecoder().decode(Everything.self, from: Data(payload.utf8))
        #expect(ours == theirs)
        // Integers are exact past 2^53, where a double would have rounded.
        #expect(ours.i64 == 9_007_199_254_740_993)
    }

    @Test("the protocol's claims read back what was signed")
    func protocolClaims() throws {
        let key = try JWTKey.hmac(secret: secret)
        let credential = WorkerCredentialClaims(
            kind: .auth, workerID: "w-1", jti: "j", now: 1_800_000_000, lifetime: 60, generation: Int64.max - 1)
        let signed = try JWT.sign(credential, key: key)
        let back = try JWT.verify(signed, key: key, as: WorkerCredentialClaims.self, options: .init(now: now))
        #expect(back == credential)
        #expect(back.gen == Int64.max - 1)
    }

    @Test("exp written as a decimal or with an exponent is read; a second exp is refused, not read either way")
    func numberForms() throws {
        let key = try JWTKey.hmac(secret: secret)
        let options = VerificationOptions(now: now, requiredClaims: [.exp])
        for text in ["1800000100", "1800000100.0", "1.8000001e9", "18000001E2"] {
            let claims = try JWT.verify(try token(payload: #"{"exp":\#(text)}"#), key: key, as: RegisteredClaims.self,
                                        options: options)
            #expect(claims.exp == 1_800_000_100, "\(text)")
        }
        #expect(throws: JWTError.expired(exp: 1_799_999_999, now: 1_800_000_000)) {
            try JWT.verify(try token(payload: #"{"exp":1799999999.0}"#), key: key, as: RegisteredClaims.self, options: options)
        }
        #expect(throws: JWTError.invalidJSON(segment: .payload)) {
            try JWT.verify(try token(payload: #"{"exp":1900000000,"exp":1}"#), key: key, as: RegisteredClaims.self,
                           options: options)
        }
        struct Big: Decodable { var n: Int64 }
        // Integers written with a zero fraction are read exactly, as JSONDecoder reads them.
        #expect(try ClaimsDecoder.decode(Big.self, from: #require(ClaimJSON.parse(Array(#"{"n":9007199254740993.0}"#.utf8)))).n
            == 9_007_199_254_740_993)
    }

    @Test("one RS256 key signs and verifies on many threads at once, and a refused token leaves it working")
    func sharedKey() async throws {
        let pair = try RSAKeyPair.generate()
        let signer = try JWTKey.rsa(pem: pair.privateKeyPEM)
        let verifier = try JWTKey.rsa(pem: pair.publicKeyPEM)
        let options = VerificationOptions(now: now, requiredClaims: [.exp])
        try await withThrowingTaskGroup(of: Void.self) { group in
            for t in 0..<8 {
                group.addTask {
                    for i in 0..<20 {
                        let claims = RegisteredClaims(sub: "t\(t)-\(i)", exp: 1_800_000_100)
                        let signed = try JWT.sign(claims, key: signer)
                        // A forged one first: its failure must not disturb the next verification.
                        var forged = Array(signed.utf8)
                        forged[forged.count - 5] = forged[forged.count - 5] == UInt8(ascii: "A") ? UInt8(ascii: "B") : UInt8(ascii: "A")
                        #expect(throws: JWTError.invalidSignature) {
                            try JWT.verify(String(decoding: forged, as: UTF8.self), key: verifier, as: RegisteredClaims.self,
                                           options: options)
                        }
                        #expect(try JWT.verify(signed, key: verifier, as: RegisteredClaims.self, options: options) == claims)
                    }
                }
            }
            try await group.waitForAll()
        }
    }

    @Test("wrong types, missing claims and integers that do not fit are refused with their names")
    func typeErrors() throws {
        let key = try JWTKey.hmac(secret: secret)
        let options = VerificationOptions(now: now)
        #expect(throws: JWTError.invalidClaim(name: "payload", reason: #"wrong type at "exp""#)) {
            try JWT.verify(try token(payload: #"{"exp":"soon"}"#), key: key, as: RegisteredClaims.self, options: options)
        }
        #expect(throws: JWTError.invalidClaim(name: "payload", reason: #"wrong type at "aud""#)) {
            try JWT.verify(try token(payload: #"{"aud":["a",1]}"#), key: key, as: RegisteredClaims.self, options: options)
        }
        #expect(throws: JWTError.invalidClaim(name: "payload", reason: #"missing "worker_id""#)) {
            try JWT.verify(try token(payload: #"{"iss":"x","iat":1}"#), key: key, as: WorkerTokenClaims.self, options: options)
        }
        struct Small: Decodable { var n: UInt8 }
        #expect(throws: JWTError.self) {
            try JWT.verify(try token(payload: #"{"n":256}"#), key: key, as: Small.self, options: options)
        }
        #expect(throws: JWTError.self) {
            try JWT.verify(try token(payload: #"{"n":1.5}"#), key: key, as: Small.self, options: options)
        }
        // 1.0 and 1e2 are integers, as JSONDecoder reads them.
        #expect(try JWT.verify(try token(payload: #"{"n":1e2}"#), key: key, as: Small.self, options: options).n == 100)
    }

    @Test("a name given twice is refused, in the payload and in the header")
    func duplicates() throws {
        let key = try JWTKey.hmac(secret: secret)
        #expect(throws: JWTError.invalidJSON(segment: .payload)) {
            try JWT.verify(try token(payload: #"{"iss":"a","exp":1900000000,"iss":"b"}"#), key: key,
                           as: RegisteredClaims.self, options: .init(now: now))
        }
        #expect(throws: JWTError.invalidJSON(segment: .header)) {
            try JWT.verify(try token(header: #"{"alg":"HS256","alg":"none"}"#, payload: "{}"), key: key,
                           as: RegisteredClaims.self, options: .init(now: now))
        }
        // Past the scan limit the check is made with a set: still refused, and distinct names still accepted.
        let many = (0..<40).map { #""k\#($0)":\#($0)"# }
        #expect(ClaimJSON.parse(Array(("{" + many.joined(separator: ",") + "}").utf8)) != nil)
        #expect(ClaimJSON.parse(Array(("{" + (many + [#""k3":0"#]).joined(separator: ",") + "}").utf8)) == nil)
    }

    @Test("what JSON does not allow is refused", arguments: [
        "", " ", "{", "}", "{,}", #"{"a"}"#, #"{"a":}"#, #"{"a":1,}"#, "[1,]", "[", #"{"a":1}x"#, "01", "-", "1.", ".5",
        "1e", "+1", "NaN", "Infinity", "1e400", "tru", "nul", "'a'", #""a"#, #""\x""#, #""\u12""#, #""\ud800""#,
        #""\udc00""#, #""\ud800\u0041""#, "\"a\tb\"", "\"\u{01}\"", "{\"a\":1}\u{00}",
    ])
    func refused(_ text: String) {
        #expect(ClaimJSON.parse(Array(text.utf8)) == nil, "\(text.debugDescription) was accepted")
    }

    @Test("invalid UTF-8 in a string is refused, not repaired")
    func invalidUTF8() {
        for bytes: [UInt8] in [[0x22, 0xFF, 0x22], [0x22, 0xC3, 0x22], [0x22, 0xED, 0xA0, 0x80, 0x22], [0x22, 0xC0, 0xAF, 0x22]] {
            #expect(ClaimJSON.parse(bytes) == nil, "\(bytes) was accepted")
        }
        #expect(ClaimJSON.parse([0x22, 0xC3, 0xA9, 0x22]) == .string("é"))
    }

    @Test("nesting deeper than the limit is refused, without exhausting the stack")
    func depth() {
        let limit = ClaimJSON.maxDepth
        #expect(ClaimJSON.parse(Array((String(repeating: "[", count: limit + 1) + String(repeating: "]", count: limit + 1)).utf8)) != nil)
        #expect(ClaimJSON.parse(Array((String(repeating: "[", count: limit + 2) + String(repeating: "]", count: limit + 2)).utf8)) == nil)
        #expect(ClaimJSON.parse(Array(String(repeating: "[", count: 100_000).utf8)) == nil)
    }

    @Test("what ours accepts, JSONSerialization reads the same", arguments: [
        "0", "-0", "1.5", "-1e-7", "1E+2", "123456789012345678", "true", "false", "null", #""""#, #""\u0000""#,
        #""\ud83d\ude00""#, "[]", "{}", #"{"a":[{"b":null}]}"#, " \t\n\r[1 , 2]\n",
    ])
    func agreesWithFoundation(_ text: String) throws {
        let ours = try #require(ClaimJSON.parse(Array(text.utf8)))
        let theirs = try JSONSerialization.jsonObject(with: Data(text.utf8), options: .fragmentsAllowed)
        #expect(Self.same(ours, theirs), "\(text): \(ours) against \(theirs)")
    }

    static func same(_ ours: ClaimJSON, _ theirs: Any) -> Bool {
        switch ours {
        case .null: return theirs is NSNull
        case .bool(let b): return (theirs as? Bool) == b
        case .number(let d, _): return (theirs as? NSNumber)?.doubleValue == d
        case .string(let s): return (theirs as? String) == s
        case .array(let a):
            guard let t = theirs as? [Any], t.count == a.count else { return false }
            return zip(a, t).allSatisfy { same($0, $1) }
        case .object(let o):
            guard let t = theirs as? [String: Any], t.count == o.count else { return false }
            return o.pairs.allSatisfy { pair in t[pair.name].map { same(pair.value, $0) } ?? false }
        }
    }
}
