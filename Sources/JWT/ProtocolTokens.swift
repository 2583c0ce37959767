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
    /// Never set on an attempt token (OpenFn's have none); present on worker credentials, which must not pass for one.
    public var aud: Audience?

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
        if let aud = claims.aud {
            throw JWTError.invalidClaim(name: "aud", reason: "an attempt token has no audience; this one is for \(aud.values)")
        }
        guard claims.id == attemptID else {
            throw JWTError.invalidClaim(name: "id", reason: "token is for attempt \(claims.id), not \(attemptID)")
        }
        if let sub = claims.sub, sub != "run:" + attemptID {
            throw JWTError.invalidClaim(name: "sub", reason: "token is for \(sub), not run:\(attemptID)")
        }
        return claims
    }
}

/// Claims of the two worker credentials Lightning mints (docs/workers.md), both RS256 with the attempt key so that
/// a worker that trusts that key can tell its Lightning from a man in the middle:
/// - a **registration token**, minted by an admin for one worker name, used once;
/// - a **worker auth token**, handed to that worker when it presents the registration token, short-lived and
///   renewed over the socket, refused once the worker is revoked (its `gen` is no longer the worker's).
/// Each kind has its own `aud`, required on verification; attempt tokens have none and are refused with one, and
/// the shared-secret worker token is HS256: no token passes for another kind.
public struct WorkerCredentialClaims: Codable, Sendable, Equatable {
    public enum Kind: String, Sendable, CaseIterable {
        case registration = "lightning:worker-registration"
        case auth = "lightning:worker-auth"

        public var noun: String { self == .registration ? "registration token" : "worker auth token" }
    }

    public static let issuer = "Lightning"

    public var iss: String
    public var aud: String
    /// `worker:<name>`.
    public var sub: String
    public var workerID: String
    public var jti: String
    public var iat: Double
    public var exp: Double
    /// Auth tokens: the worker's credential generation when minted (revocation and re-registration move it on).
    public var gen: Int64?

    enum CodingKeys: String, CodingKey {
        case iss, aud, sub, jti, iat, exp, gen
        case workerID = "worker_id"
    }

    public init(kind: Kind, workerID: String, jti: String, now: Double = Date().timeIntervalSince1970, lifetime: Double,
                generation: Int64? = nil) {
        iss = Self.issuer
        aud = kind.rawValue
        sub = "worker:" + workerID
        self.workerID = workerID
        self.jti = jti
        iat = now.rounded(.down)
        exp = (now + lifetime).rounded(.up)
        gen = generation
    }

    public var kind: Kind? { Kind(rawValue: aud) }

    /// RS256 only, signature, `iss`, `aud` of exactly this kind, `sub`/`worker_id` agreeing, `jti`, `iat` and `exp`
    /// required, with `leeway` seconds on `exp` (Lightning checks its own tokens with its own clock: 1 s).
    public static func verify(
        _ token: String, key: JWTKey, kind: Kind, leeway: Double = 1,
        now: @escaping @Sendable () -> Double = { Date().timeIntervalSince1970 }
    ) throws -> WorkerCredentialClaims {
        guard key.algorithm == .rs256 else { throw JWTError.invalidKey("worker credentials are RS256; give the RSA key") }
        let options = VerificationOptions(now: now, leeway: leeway, issuer: issuer, audience: kind.rawValue,
                                          requiredClaims: [.iss, .aud, .sub, .jti, .iat, .exp])
        let claims: WorkerCredentialClaims
        do { claims = try JWT.verify(token, key: key, as: WorkerCredentialClaims.self, options: options) } catch JWTError
            .invalidAudience(_, let found)
        {
            let named = found.compactMap { Kind(rawValue: $0)?.noun }.first.map { "a \($0)" } ?? "not a worker credential"
            throw JWTError.invalidClaim(name: "aud", reason: "this is \(named), not a \(kind.noun)")
        } catch JWTError.invalidClaim("payload", let reason) where reason.contains("\"aud\"") {
            // Signed by the key, but without a string aud: an attempt token, say.
            throw JWTError.invalidClaim(name: "aud", reason: "this is not a worker credential (it has no aud claim)")
        }
        guard !claims.workerID.isEmpty, claims.sub == "worker:" + claims.workerID else {
            throw JWTError.invalidClaim(name: "sub", reason: "does not name the worker of worker_id")
        }
        if kind == .auth && claims.gen == nil { throw JWTError.missingClaim("gen") }
        return claims
    }
}
