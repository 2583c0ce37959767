import Foundation

/// Claims of a worker token (PROTOCOL.md section 2): HS256 with the UTF-8 bytes of `WORKER_SECRET`.
public struct WorkerTokenClaims: Codable, Sendable, Equatable {
    public static let issuer = "urn:openfn:worker"

    public var workerID: String
    public var iss: String
    public var iat: Double
    public var exp: Double?
    public var nbf: Double?

    enum CodingKeys: String, CodingKey {
        case iss, iat, exp, nbf
        case workerID = "worker_id"
    }

    /// Claims for a fresh token: issued now, expiring after `lifetime` seconds (nil: no `exp`).
    public init(workerID: String, now: Double = Date().timeIntervalSince1970, lifetime: Double? = 3600) {
        self.workerID = workerID
        self.iss = Self.issuer
        self.iat = now.rounded(.down)
        self.exp = lifetime.map { (now + $0).rounded(.down) }
    }

    /// Lightning's checks: HS256 only, signature, `iss`, `worker_id` and `iat` present, `exp`/`nbf` when
    /// present (or `exp` required when `requireExpiry`), with a 5 s leeway.
    public static func verify(
        _ token: String, key: JWTKey, requireExpiry: Bool = false,
        now: @escaping @Sendable () -> Double = { Date().timeIntervalSince1970 }
    ) throws -> WorkerTokenClaims {
        guard key.algorithm == .hs256 else { throw JWTError.invalidKey("worker tokens are HS256; give the worker secret") }
        var required: Set<RegisteredClaim> = [.iss, .iat]
        if requireExpiry { required.insert(.exp) }
        let options = VerificationOptions(now: now, leeway: 5, issuer: issuer, requiredClaims: required)
        let claims = try JWT.verify(token, key: key, as: WorkerTokenClaims.self, options: options)
        guard !claims.workerID.isEmpty else { throw JWTError.invalidClaim(name: "worker_id", reason: "empty") }
        return claims
    }
}

/// Claims of an attempt token (PROTOCOL.md section 4): RS256, signed by Lightning, verified by the worker and
/// again by Lightning when the worker joins `run:<id>`. OpenFn Lightning's own run tokens carry `iss`, `id`,
/// `nbf` and `exp` (newer versions add `sub`; none sets `iat`), so only `iss`, `id` and `exp` are required.
public struct AttemptTokenClaims: Codable, Sendable, Equatable {
    public static let issuer = "Lightning"

    public var id: String
    public var sub: String?
    public var iss: String
    public var nbf: Double?
    public var iat: Double?
    public var exp: Double

    /// Claims for attempt `id`, valid from now for `lifetime` seconds (attempt timeout plus grace period).
    public init(attemptID id: String, now: Double = Date().timeIntervalSince1970, lifetime: Double) {
        let t = now.rounded(.down)
        self.id = id
        self.sub = "run:" + id
        self.iss = Self.issuer
        self.nbf = t
        self.iat = t
        self.exp = t + lifetime.rounded(.up)
    }

    /// The checks of section 4: RS256 only, signature, `iss` and `exp` required, `nbf` when present (5 s leeway),
    /// `id` equal to the attempt the token is presented for, and `sub` equal to `run:<id>` when present.
    public static func verify(
        _ token: String, key: JWTKey, attemptID: String,
        now: @escaping @Sendable () -> Double = { Date().timeIntervalSince1970 }
    ) throws -> AttemptTokenClaims {
        guard key.algorithm == .rs256 else { throw JWTError.invalidKey("attempt tokens are RS256; give the RSA key") }
        let options = VerificationOptions(now: now, leeway: 5, issuer: issuer, requiredClaims: [.iss, .exp])
        let claims = try JWT.verify(token, key: key, as: AttemptTokenClaims.self, options: options)
        guard claims.id == attemptID else {
            throw JWTError.invalidClaim(name: "id", reason: "token is for attempt \(claims.id), not \(attemptID)")
        }
        if let sub = claims.sub, sub != "run:" + attemptID {
            throw JWTError.invalidClaim(name: "sub", reason: "token is for \(sub), not run:\(attemptID)")
        }
        return claims
    }
}
