import Foundation

/// JWS compact serialization (RFC 7515) with HS256 and RS256 (RFC 7518), verified strictly.
///
/// Order of checks on verify: size, shape, header (the algorithm must be the key's; `none` and unknown `crit`
/// parameters are refused), signature (constant-time for HMAC), and only then the payload is decoded and its
/// claims checked against the injected clock.
public enum JWT {
    // Both are stateless once configured; reusing them avoids a setup per token.
    private static let decoder = JSONDecoder()
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
        // One JSON parse gives both the registered claims (checked here) and the caller's claims.
        let decoded: Both<Claims>
        do {
            decoded = try decoder.decode(Both<Claims>.self, from: Data(payload))
        } catch let error as JWTError {
            throw error
        } catch DecodingError.dataCorrupted(let context) where context.codingPath.isEmpty {
            throw JWTError.invalidJSON(segment: .payload)
        } catch DecodingError.typeMismatch(_, let context) where context.codingPath.isEmpty {
            throw JWTError.invalidJSON(segment: .payload)
        } catch {
            throw JWTError.invalidClaim(name: "payload", reason: describe(error))
        }
        try check(decoded.registered, options: options)
        return decoded.claims
    }

    /// Verifies the signature and the registered claims; returns the raw payload JSON.
    public static func verifiedPayload(_ token: String, key: JWTKey, options: VerificationOptions) throws -> [UInt8] {
        let payload = try verifiedSegments(token, key: key, options: options)
        _ = try verify(token, key: key, as: RegisteredClaims.self, options: options)
        return payload
    }

    /// Size, shape, header and signature checks; returns the decoded payload bytes (not yet parsed).
    static func verifiedSegments(_ token: String, key: JWTKey, options: VerificationOptions) throws -> [UInt8] {
        let utf8 = token.utf8
        guard utf8.count <= options.maxTokenBytes else {
            throw JWTError.tokenTooLarge(bytes: utf8.count, limit: options.maxTokenBytes)
        }
        let parts = utf8.split(separator: UInt8(ascii: "."), omittingEmptySubsequences: false)
        guard parts.count == 3 else { throw JWTError.wrongSegmentCount(parts.count) }

        // Headers are nearly always one of a few exact strings: those are known good without parsing.
        if !key.knownGoodHeaders.contains(where: { $0.elementsEqual(parts[0]) }) {
            guard let headerBytes = Base64URL.decode(parts[0]) else {
                throw JWTError.invalidBase64URL(segment: .header)
            }
            try checkHeader(headerBytes, key: key)
        }

        guard let signature = Base64URL.decode(parts[2]) else {
            throw JWTError.invalidBase64URL(segment: .signature)
        }
        let signingInput = Array(utf8[parts[0].startIndex..<parts[1].endIndex])
        guard try key.verify(signature: signature, of: signingInput) else { throw JWTError.invalidSignature }

        guard let payload = Base64URL.decode(parts[1]) else { throw JWTError.invalidBase64URL(segment: .payload) }
        return payload
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
        guard let object = try? JSONSerialization.jsonObject(with: Data(bytes)), let header = object as? [String: Any]
        else { throw JWTError.invalidJSON(segment: .header) }
        guard let alg = header["alg"] as? String else {
            throw JWTError.algorithmMismatch(expected: key.algorithm.rawValue, found: "(missing)")
        }
        if alg.lowercased() == "none" { throw JWTError.algorithmNone }
        guard alg == key.algorithm.rawValue else {
            throw JWTError.algorithmMismatch(expected: key.algorithm.rawValue, found: alg)
        }
        // We understand no extension parameters, so any `crit` is refused (RFC 7515 section 4.1.11).
        if let crit = header["crit"] {
            throw JWTError.unsupportedCriticalHeader((crit as? [Any])?.map { "\($0)" } ?? ["\(crit)"])
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

    /// Decodes the registered claims and the caller's claims from the same parsed payload.
    struct Both<C: Decodable>: Decodable {
        var registered: RegisteredClaims
        var claims: C
        init(from decoder: any Decoder) throws {
            // A payload that is not a JSON object is refused as bad JSON, whatever the caller's type accepts.
            _ = try decoder.container(keyedBy: AnyKey.self)
            registered = try RegisteredClaims(from: decoder)
            claims = try C(from: decoder)
        }
    }

    struct AnyKey: CodingKey {
        var stringValue: String
        var intValue: Int? { nil }
        init(stringValue: String) { self.stringValue = stringValue }
        init?(intValue: Int) { nil }
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
