import Foundation

/// The registered claims of RFC 7519, all optional. Verification reads these from every token, whatever
/// the caller's own claims type.
public struct RegisteredClaims: Codable, Sendable, Equatable {
    public var iss: String?
    public var sub: String?
    public var aud: Audience?
    /// Seconds since the epoch (NumericDate; fractions allowed).
    public var exp: Double?
    public var nbf: Double?
    public var iat: Double?
    public var jti: String?

    public init(
        iss: String? = nil, sub: String? = nil, aud: Audience? = nil, exp: Double? = nil, nbf: Double? = nil,
        iat: Double? = nil, jti: String? = nil
    ) {
        self.iss = iss
        self.sub = sub
        self.aud = aud
        self.exp = exp
        self.nbf = nbf
        self.iat = iat
        self.jti = jti
    }
}

/// `aud`: one string or an array of strings.
public enum Audience: Codable, Sendable, Equatable {
    case one(String)
    case many([String])

    public var values: [String] {
        switch self {
        case .one(let s): [s]
        case .many(let a): a
        }
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.singleValueContainer()
        if let s = try? c.decode(String.self) { self = .one(s) } else { self = .many(try c.decode([String].self)) }
    }

    public func encode(to encoder: any Encoder) throws {
        var c = encoder.singleValueContainer()
        switch self {
        case .one(let s): try c.encode(s)
        case .many(let a): try c.encode(a)
        }
    }
}

/// Names of registered claims, for `VerificationOptions.requiredClaims`.
public enum RegisteredClaim: String, Sendable, CaseIterable {
    case iss, sub, aud, exp, nbf, iat, jti
}

/// What a verification checks beyond the signature.
public struct VerificationOptions: Sendable {
    /// The current time in seconds since the epoch. Injected, so tests control the clock.
    public var now: @Sendable () -> Double
    /// Allowed clock difference for `exp` and `nbf`, in seconds.
    public var leeway: Double
    /// When set, `iss` must equal it.
    public var issuer: String?
    /// When set, `aud` must contain it.
    public var audience: String?
    /// Claims that must be present.
    public var requiredClaims: Set<RegisteredClaim>
    /// Tokens longer than this are refused before any parsing.
    public var maxTokenBytes: Int

    public init(
        now: @escaping @Sendable () -> Double = { Date().timeIntervalSince1970 }, leeway: Double = 0,
        issuer: String? = nil, audience: String? = nil, requiredClaims: Set<RegisteredClaim> = [],
        maxTokenBytes: Int = 16 * 1024
    ) {
        self.now = now
        self.leeway = leeway
        self.issuer = issuer
        self.audience = audience
        self.requiredClaims = requiredClaims
        self.maxTokenBytes = maxTokenBytes
    }
}
