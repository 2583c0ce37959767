import Channels
import Foundation
import JWT
import Logging

/// How a worker proves who it is to Lightning (docs/workers.md).
public enum WorkerAuthentication: Sendable {
    /// HS256 tokens signed with WORKER_SECRET, as OpenFn's workers do.
    case sharedSecret(String)
    /// A registration token from `lightning workers register NAME`, exchanged at the first join for a worker auth
    /// token that is renewed over the socket and kept in the credential file. nil: start with none and wait for
    /// one to be posted to the admin port's `/register` (or use the credential file's, while it lasts).
    case registration(String?)
}

/// What a drain does with attempts still running at its deadline.
public enum DrainPolicy: String, Sendable, CaseIterable {
    /// Stop them (they end `kill`, as a shutdown timeout does).
    case finish
    /// Stop them and have Lightning put each back as a new attempt of its work order.
    case requeue
    /// Cancel them (they end `cancel`).
    case cancel
}

/// The worker's current credential, behind a lock: read on every connect, replaced by the exchange and each
/// renewal, and saved (mode 0600) so that a restart within its lifetime needs no new registration.
public final class WorkerCredentials: @unchecked Sendable {
    enum State {
        case secret(JWTKey)
        case waiting
        case registration(String)
        case auth(token: String, expiresAt: Double, renewAfter: Double)
    }

    let name: String
    let file: String?
    /// The attempt key this worker trusts: a credential Lightning hands over must verify with it.
    let trustedKey: JWTKey?
    private let lock = NSLock()
    private var state: State
    private let logger: Logger
    /// The registration the current auth token came from (its `jti`), kept in the file: a different registration
    /// token given at a restart is a rotation, and is used instead of the saved credential.
    private var registrationID: String?

    init(name: String, authentication: WorkerAuthentication, file: String?, trustedKey: JWTKey?, logger: Logger,
         now: Double = Date().timeIntervalSince1970) throws {
        self.name = name
        self.file = file
        self.trustedKey = trustedKey
        self.logger = logger
        switch authentication {
        case .sharedSecret(let secret):
            state = .secret(try JWTKey.hmac(secret: secret))
        case .registration(let token):
            state = token.map { .registration($0) } ?? .waiting
            registrationID = token.flatMap(Self.registrationID(of:))
            // A credential saved by this worker earlier, still good for a while, comes first when it came from the
            // same registration (a registration token is used once, so the one in the environment was most likely
            // used by the previous start); a different registration token is a rotation and is exchanged.
            if let saved = Self.load(file, name: name, key: trustedKey, now: now), token == nil || saved.registration == registrationID {
                state = .auth(token: saved.token, expiresAt: saved.expiresAt, renewAfter: now)
                logger.notice("using the saved worker credential", metadata: [
                    "file": "\(file ?? "")", "expires_in": "\(Int(saved.expiresAt - now)) s",
                ])
            }
        }
    }

    var usesSharedSecret: Bool { lock.withLock { if case .secret = state { true } else { false } } }
    var isWaiting: Bool { lock.withLock { if case .waiting = state { true } else { false } } }
    var isRegistering: Bool { lock.withLock { if case .registration = state { true } else { false } } }

    /// When the auth token should be renewed (half its lifetime), and when it ends; nil without one.
    var renewal: (after: Double, expiresAt: Double)? {
        lock.withLock { if case .auth(_, let e, let r) = state { (r, e) } else { nil } }
    }

    /// The query parameters of the next connect.
    func query() -> [String: String] {
        lock.withLock {
            switch state {
            case .secret(let key): ["token": (try? JWT.sign(WorkerTokenClaims(workerID: name), key: key)) ?? ""]
            case .registration(let t): [Wire.registrationTokenParameter: t]
            case .auth(let t, _, _): ["token": t]
            case .waiting: [:]
            }
        }
    }

    /// Checks a registration token before it is used: signed with the trusted key, for this worker, not expired.
    func checkRegistration(_ token: String, now: Double = Date().timeIntervalSince1970) throws {
        guard let trustedKey else { return }
        let claims = try WorkerCredentialClaims.verify(token, key: trustedKey, kind: .registration, leeway: 300) { now }
        guard claims.workerID == name else {
            throw JWTError.invalidClaim(name: "sub", reason: "this registration token is for worker \(claims.workerID); this worker is \(name) (--name)")
        }
    }

    func setRegistration(_ token: String) {
        lock.withLock {
            state = .registration(token)
            registrationID = Self.registrationID(of: token)
        }
    }

    /// A registration token's `jti`, read without verifying (only to tell one registration from another).
    static func registrationID(of token: String) -> String? {
        JWT.unverifiedPayload(token)?["jti"] as? String
    }

    /// Back to waiting for a registration (the last one was refused), forgetting the saved credential.
    func reset() {
        lock.withLock { state = .waiting }
        discardSaved()
    }

    /// Takes the `{"token", "expires_at"}` Lightning handed over (join reply or `worker:renew`), only when the token
    /// is a worker auth token for this worker signed with the trusted key: a man in the middle cannot hand this
    /// worker a credential of its own.
    func adopt(_ credential: JSON, now: Double = Date().timeIntervalSince1970) throws {
        guard let token = credential["token"]?.stringValue else { throw JWTError.missingClaim("token") }
        var expiresAt = credential["expires_at"]?.doubleValue ?? now
        if let trustedKey {
            // Generous leeway: the clocks of this host and Lightning's need not agree.
            let claims = try WorkerCredentialClaims.verify(token, key: trustedKey, kind: .auth, leeway: 300) { now }
            guard claims.workerID == name else {
                throw JWTError.invalidClaim(name: "sub", reason: "the credential is for worker \(claims.workerID), not \(name)")
            }
            expiresAt = claims.exp
        }
        // Renew at half the remaining lifetime (judged by this host's clock, as is expiresAt's use).
        let lifetime = max(0, expiresAt - now)
        lock.withLock { state = .auth(token: token, expiresAt: expiresAt, renewAfter: now + lifetime / 2) }
        save(token: token, expiresAt: expiresAt)
    }

    /// A renewal failed: try again in a few seconds.
    func postponeRenewal(by seconds: Double, now: Double = Date().timeIntervalSince1970) {
        lock.withLock { if case .auth(let t, let e, _) = state { state = .auth(token: t, expiresAt: e, renewAfter: now + seconds) } }
    }

    // MARK: The credential file

    private struct Saved: Codable {
        var name: String
        var token: String
        var expiresAt: Double
        /// The `jti` of the registration this credential came from.
        var registration: String?
        enum CodingKeys: String, CodingKey {
            case name, token, registration
            case expiresAt = "expires_at"
        }
    }

    private static func load(_ file: String?, name: String, key: JWTKey?, now: Double) -> Saved? {
        guard let file, let data = FileManager.default.contents(atPath: file),
            let saved = try? JSONDecoder().decode(Saved.self, from: data), saved.name == name, saved.expiresAt > now + 2
        else { return nil }
        if let key {
            guard let claims = try? WorkerCredentialClaims.verify(saved.token, key: key, kind: .auth, leeway: 0, now: { now }),
                claims.workerID == name
            else { return nil }
        }
        return saved
    }

    private func save(token: String, expiresAt: Double) {
        let registration = lock.withLock { registrationID }
        guard let file, let data = try? JSONEncoder().encode(Saved(name: name, token: token, expiresAt: expiresAt, registration: registration))
        else { return }
        let temp = file + ".tmp-\(getpid())"
        unlink(temp)
        let fd = open(temp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
        guard fd >= 0 else {
            logger.warning("could not save the worker credential: a restart will need a new registration",
                           metadata: ["file": "\(file)", "error": "\(String(cString: strerror(errno)))"])
            return
        }
        let written = data.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        let synced = fsync(fd) == 0
        close(fd)
        guard written == data.count, synced, rename(temp, file) == 0 else {
            logger.warning("could not save the worker credential: a restart will need a new registration",
                           metadata: ["file": "\(file)", "error": "\(String(cString: strerror(errno)))"])
            unlink(temp)
            return
        }
    }

    /// Whether `file` holds a credential for `name` that is good for a while yet (and verifies with `key`).
    public static func hasUsableSaved(_ file: String, name: String, key: JWTKey?, now: Double = Date().timeIntervalSince1970) -> Bool {
        load(file, name: name, key: key, now: now) != nil
    }

    func discardSaved() {
        if let file { unlink(file) }
    }
}
