import Foundation

/// JWS compact serialization (RFC 7515) with HS256 and RS256 (RFC 7518), verified strictly.
///
/// Order of checks on verify: size, shape, header (the algorithm must be the key's; `none` and unknown `crit`
/// parameters are refused), signature (constant-time for HMAC), and only then the payload is decoded and its
/// claims checked against the injected clock.
public enum JWT {
    // Stateless once configured; reusing it avoids a setup per token.
    private static let encoder: JSONEncoder = {
        let e = JSONEncoder()
        e.outputFormatting = [.withoutEscapingSlashes]
        return e
    }()

    /// Signs `claims` with `key` and returns the compact token. `kid` is added to the header when given.
    public static func sign(_ claims: some Encodable, key: JWTKey, kid: String? = nil) throws -> String {
        var header = #"{"alg":"\#(key.algorithm.rawValue)","typ":"JWT""#
        if let kid {
            let quoted = try String(decoding: JSONEncoder().encode(kid), as: UTF8.self)
            header += #","kid":\#(quoted)"#
        }
        header += "}"
        let payload = try encoder.encode(claims)
        let signingInput = Base64URL.encode(Array(header.utf8)) + "." + Base64URL.encode(payload)
        let signature = try key.sign(Array(signingInput.utf8))
        return signingInput + "." + Base64URL.encode(signature)
    }

    /// Verifies `token` with `key` and decodes its payload as `Claims`. Throws a `JWTError` saying why a
    /// token is refused.
    public static func verify<Claims: Decodable>(
        _ token: String, key: JWTKey, as type: Claims.Type = Claims.self,
        options: VerificationOptions = VerificationOptions()
    ) throws -> Claims {
        let payload = try verifiedSegments(token, key: key, options: options)
        // One strict parse; the registered claims are read from it directly, the caller's through a decoder.
        guard case .object(let members)? = ClaimJSON.parse(payload) else {
            throw JWTError.invalidJSON(segment: .payload)
        }
        let registered = try RegisteredClaims(members: members)
        let claims: Claims
        do {
            claims = try ClaimsDecoder.decode(Claims.self, from: .object(members))
        } catch let error as JWTError {
            throw error
        } catch {
            throw JWTError.invalidClaim(name: "payload", reason: describe(error))
        }
        try check(registered, options: options)
        return claims
    }

    /// Size, shape, header and signature checks; returns the decoded payload bytes (not yet parsed).
    static func verifiedSegments(_ token: String, key: JWTKey, options: VerificationOptions) throws -> [UInt8] {
        var token = token
        token.makeContiguousUTF8()  // free for a native string, which every token we are given is
        return try token.utf8.withContiguousStorageIfAvailable {
            try verifiedSegments(bytes: $0, key: key, options: options)
        }!
    }

    static func verifiedSegments(
        bytes: UnsafeBufferPointer<UInt8>, key: JWTKey, options: VerificationOptions
    ) throws -> [UInt8] {
        guard bytes.count <= options.maxTokenBytes else {
            throw JWTError.tokenTooLarge(bytes: bytes.count, limit: options.maxTokenBytes)
        }
        var dots = 0, first = 0, second = 0
        for i in bytes.indices where bytes[i] == UInt8(ascii: ".") {
            dots += 1
            if dots == 1 { first = i } else if dots == 2 { second = i }
        }
        guard dots == 2 else { throw JWTError.wrongSegmentCount(dots + 1) }
        let header = UnsafeBufferPointer(rebasing: bytes[..<first])
        let payload = UnsafeBufferPointer(rebasing: bytes[(first + 1)..<second])
        let signatureText = UnsafeBufferPointer(rebasing: bytes[(second + 1)...])

        // Headers are nearly always one of a few exact strings: those are known good without parsing.
        if !key.knownGoodHeaders.contains(where: { $0.elementsEqual(header) }) {
            guard let headerBytes = Base64URL.decode(buffer: header) else {
                throw JWTError.invalidBase64URL(segment: .header)
            }
            try checkHeader(headerBytes, key: key)
        }

        guard let signature = Base64URL.decode(buffer: signatureText) else {
            throw JWTError.invalidBase64URL(segment: .signature)
        }
        let signingInput = UnsafeBufferPointer(rebasing: bytes[..<second])
        guard try key.verify(signature: signature, of: signingInput) else { throw JWTError.invalidSignature }

        guard let decoded = Base64URL.decode(buffer: payload) else { throw JWTError.invalidBase64URL(segment: .payload) }
        return decoded
    }

    /// The `alg` a token's header names, unverified: only for choosing which verifier to use (each checks the
    /// algorithm again against its own key).
    public static func headerAlgorithm(_ token: String) -> String? {
        guard let dot = token.utf8.firstIndex(of: UInt8(ascii: ".")), token.utf8.distance(from: token.utf8.startIndex, to: dot) <= 1024,
            let bytes = Base64URL.decode(token.utf8[token.utf8.startIndex..<dot]),
            let header = (try? JSONSerialization.jsonObject(with: Data(bytes))) as? [String: Any]
        else { return nil }
        return header["alg"] as? String
    }

    /// A token's payload, unverified: only for telling tokens apart (a registration's `jti`), never for trusting one.
    public static func unverifiedPayload(_ token: String) -> [String: Any]? {
        let parts = token.utf8.split(separator: UInt8(ascii: "."), omittingEmptySubsequences: false)
        guard parts.count == 3, parts[1].count <= 16 * 1024, let bytes = Base64URL.decode(parts[1]) else { return nil }
        return (try? JSONSerialization.jsonObject(with: Data(bytes))) as? [String: Any]
    }

    static func checkHeader(_ bytes: [UInt8], key: JWTKey) throws {
        // The same strict reader as the payload: a header naming `alg` twice is refused, not read either way.
        guard case .object(let header)? = ClaimJSON.parse(bytes) else { throw JWTError.invalidJSON(segment: .header) }
        guard case .string(let alg)? = header["alg"] else {
            throw JWTError.algorithmMismatch(
                expected: key.algorithm.rawValue, found: header["alg"].map { "(\($0.kind))" } ?? "(missing)")
        }
        if alg.lowercased() == "none" { throw JWTError.algorithmNone }
        guard alg == key.algorithm.rawValue else {
            throw JWTError.algorithmMismatch(expected: key.algorithm.rawValue, found: alg)
        }
        // We understand no extension parameters, so any `crit` is refused (RFC 7515 section 4.1.11).
        if let crit = header["crit"] {
            let names: [String]
            switch crit {
            case .array(let elements): names = elements.map { if case .string(let s) = $0 { s } else { "(\($0.kind))" } }
            case .string(let s): names = [s]
            default: names = ["(\(crit.kind))"]
            }
            throw JWTError.unsupportedCriticalHeader(names)
        }
    }

    static func check(_ claims: RegisteredClaims, options: VerificationOptions) throws {
        for name in RegisteredClaim.allCases where options.requiredClaims.contains(name) {
            let present: Bool
            switch name {
            case .iss: present = claims.iss != nil
            case .sub: present = claims.sub != nil
            case .aud: present = claims.aud != nil
            case .exp: present = claims.exp != nil
            case .nbf: present = claims.nbf != nil
            case .iat: present = claims.iat != nil
            case .jti: present = claims.jti != nil
            }
            if !present { throw JWTError.missingClaim(name.rawValue) }
        }
        let now = options.now()
        if let exp = claims.exp, now > exp + options.leeway { throw JWTError.expired(exp: exp, now: now) }
        if let nbf = claims.nbf, now + options.leeway < nbf { throw JWTError.notYetValid(nbf: nbf, now: now) }
        if let issuer = options.issuer, claims.iss != issuer {
            throw JWTError.invalidIssuer(expected: issuer, found: claims.iss)
        }
        if let audience = options.audience {
            let found = claims.aud?.values ?? []
            if !found.contains(audience) { throw JWTError.invalidAudience(expected: audience, found: found) }
        }
    }

    private static func describe(_ error: any Error) -> String {
        switch error {
        case DecodingError.keyNotFound(let key, _): "missing \"\(key.stringValue)\""
        case DecodingError.typeMismatch(_, let c), DecodingError.valueNotFound(_, let c):
            "wrong type at \"\(c.codingPath.map(\.stringValue).joined(separator: "."))\""
        default: "\(error)"
        }
    }
}

extension RegisteredClaims {
    /// The registered claims of a parsed payload. A claim of the wrong type is refused as `JSONDecoder` refused it
    /// (`wrong type at "exp"`); null counts as absent.
    init(members: ClaimJSON.Members) throws {
        func value(_ name: String) -> ClaimJSON? {
            guard let v = members[name], v != .null else { return nil }
            return v
        }
        func wrongType(_ name: String) -> JWTError { .invalidClaim(name: "payload", reason: "wrong type at \"\(name)\"") }
        func string(_ name: String) throws -> String? {
            guard let v = value(name) else { return nil }
            guard case .string(let s) = v else { throw wrongType(name) }
            return s
        }
        func number(_ name: String) throws -> Double? {
            guard let v = value(name) else { return nil }
            guard case .number(let d, _) = v else { throw wrongType(name) }
            return d
        }
        var audience: Audience?
        switch value("aud") {
        case nil: audience = nil
        case .string(let s)?: audience = .one(s)
        case .array(let elements)?:
            audience = .many(try elements.map { element in
                guard case .string(let s) = element else { throw wrongType("aud") }
                return s
            })
        default: throw wrongType("aud")
        }
        self.init(
            iss: try string("iss"), sub: try string("sub"), aud: audience, exp: try number("exp"),
            nbf: try number("nbf"), iat: try number("iat"), jti: try string("jti"))
    }
}
