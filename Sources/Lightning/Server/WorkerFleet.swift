import Channels
import Foundation
import JWT
import Logging
import Yams

/// Worker credentials and fleet control (docs/workers.md): the three ways a worker authenticates (the shared
/// secret, a registration token exchanged at its first join, a worker auth token renewed over the socket),
/// revocation, and drain / pause / resume pushed on `worker:queue`.
extension Lightning {
    // MARK: Authentication, before the upgrade

    struct WorkerRefusal: Error {
        var status = 401
        var message: String
        var worker: String?
    }

    func authenticateWorker(_ request: UpgradeRequest) -> AuthDecision {
        let token = request.query["token"].flatMap { $0.isEmpty ? nil : $0 }
        let registration = request.query[Wire.registrationTokenParameter].flatMap { $0.isEmpty ? nil : $0 }
        guard token != nil || registration != nil else { return .reject(status: 401, message: "missing worker token") }
        let client = authLimiter.client(peer: request.peerAddress, headers: request.headers)
        if let wait = authLimiter.retryAfter(client) { return tooManyFailures(wait) }
        switch Result(catching: { try checkWorkerCredential(token: token, registration: registration) }) {
        case .success(let identity):
            return .accept(context: identity)
        case .failure(let error):
            let refusal = error as? WorkerRefusal ?? WorkerRefusal(status: 503, message: "could not check the worker token: \(error)")
            if refusal.status == 401 { authLimiter.failed(client) }
            // The reason, never the token.
            logger.notice("refused a worker connection", metadata: [
                "reason": "\(refusal.message)", "worker.name": "\(refusal.worker ?? "-")", "peer": "\(client)",
            ])
            return .reject(status: refusal.status, message: refusal.message)
        }
    }

    private func checkWorkerCredential(token: String?, registration: String?) throws -> WorkerIdentity {
        if let registration {
            let claims: WorkerCredentialClaims
            do {
                claims = try WorkerCredentialClaims.verify(registration, key: attemptVerifyKey, kind: .registration, now: configuration.workerClock)
            } catch {
                throw WorkerRefusal(message: "invalid registration token: \(Self.describe(error))")
            }
            guard let record = try store.workerRegistration(jti: claims.jti), record.workerName == claims.workerID else {
                throw WorkerRefusal(message: "unknown registration token: this Lightning's database did not mint it", worker: claims.workerID)
            }
            guard record.usedAt == nil else {
                throw WorkerRefusal(message: "registration token already used (or revoked): mint a new one with `lightning workers register \(claims.workerID)`",
                                    worker: claims.workerID)
            }
            return WorkerIdentity(name: claims.workerID, auth: .registration(jti: claims.jti, expiresAt: claims.exp))
        }
        guard let token else { throw WorkerRefusal(message: "missing worker token") }
        switch JWT.headerAlgorithm(token) {
        case "HS256":
            guard configuration.sharedSecretEnabled else {
                throw WorkerRefusal(message: "the shared worker secret is turned off here (serve --no-shared-secret): register the worker "
                                    + "with `lightning workers register NAME` and start it with --registration-token")
            }
            let claims: WorkerTokenClaims
            do {
                claims = try WorkerTokenClaims.verify(token, key: configuration.workerSecretKey,
                                                      requireExpiry: configuration.requireWorkerTokenExpiry)
            } catch { throw WorkerRefusal(message: "invalid worker token: \(error)") }
            if let state = try store.workerAuthState(name: claims.workerID), state.revokedAt != nil || state.secretRevokedAt != nil {
                throw WorkerRefusal(message: "worker \(claims.workerID) is revoked: its name is refused with the shared secret from now on "
                                    + "(register it to let it back with its own credential)", worker: claims.workerID)
            }
            return WorkerIdentity(name: claims.workerID)
        case "RS256":
            let claims: WorkerCredentialClaims
            do { claims = try WorkerCredentialClaims.verify(token, key: attemptVerifyKey, kind: .auth, now: configuration.workerClock) } catch {
                throw WorkerRefusal(message: "invalid worker auth token: \(Self.describe(error))")
            }
            guard let state = try store.workerAuthState(name: claims.workerID) else {
                throw WorkerRefusal(message: "worker auth token for an unknown worker", worker: claims.workerID)
            }
            guard state.revokedAt == nil else {
                throw WorkerRefusal(message: "worker \(claims.workerID) is revoked: register it again to let it back", worker: claims.workerID)
            }
            guard claims.gen == state.generation else {
                throw WorkerRefusal(message: "this worker auth token was superseded (the worker registered again or was revoked since)",
                                    worker: claims.workerID)
            }
            return WorkerIdentity(name: claims.workerID, auth: .token(generation: state.generation, expiresAt: claims.exp))
        default:
            throw WorkerRefusal(message: "invalid worker token: not an HS256 worker token nor an RS256 worker auth token")
        }
    }

    private static func describe(_ error: any Error) -> String {
        if case JWTError.missingClaim("aud") = error { return "this is not a worker credential (it has no aud claim)" }
        return "\(error)"
    }

    // MARK: Joining worker:queue

    /// Records the worker and, for a registration token, uses it up and mints the worker's auth token; returns what
    /// the join reply adds: that credential, and the defaults of the worker's group. The credential's expiry is
    /// tracked per socket from here on.
    func workerJoined(_ worker: WorkerIdentity, socket: ChannelSocket, payload: JSON) async throws -> (credential: JSON?, defaults: JSON?) {
        state.workerBack(worker.name)
        let now = Timestamp.nowMicros()
        var join = WorkerJoin(name: worker.name, capacity: Int(payload["capacity"]?.intValue ?? 1),
                              version: socket.request.query["worker_version"], authMode: "secret")
        join.host = payload["host"]?.stringValue.map { String($0.prefix(255)) }
        join.labels = (payload["labels"]?.arrayValue ?? []).compactMap(\.stringValue).prefix(50).map { String($0.prefix(100)) }
        join.deploymentID = payload["deployment_id"]?.stringValue.map { String($0.prefix(255)) }
        join.group = payload["group"]?.stringValue.map { String($0.prefix(100)) }
        join.instanceID = payload["instance_id"]?.stringValue.map { String($0.prefix(100)) }
        join.connectionID = connectionID(socket)
        let defaults = configuration.workerGroupDefaults[join.group ?? "default"]
        let configured = Set((payload["configured"]?.arrayValue ?? []).compactMap(\.stringValue))
        if !configured.contains("capacity"), let c = defaults?["capacity"]?.intValue, c > 0 { join.capacity = Int(c) }
        var credential: JSON?
        // Checked again here: a revocation or a new registration may have come after the upgrade.
        let auth = try store.workerAuthState(name: worker.name)
        switch worker.auth {
        case .sharedSecret:
            if let auth, auth.revokedAt != nil || auth.secretRevokedAt != nil { throw StoreError.conflict("worker \(worker.name) is revoked") }
        case .token(let generation, let expiresAt):
            guard let auth, auth.revokedAt == nil, auth.generation == generation else {
                throw StoreError.conflict("worker \(worker.name) was revoked or registered again: this credential is no longer good")
            }
            join.authMode = "token"
            join.credentialExpiresAt = Int64(expiresAt * 1_000_000)
            state.setCredential(socket.id, SocketCredential(generation: generation, expiresAt: expiresAt))
        case .registration(let jti, _):
            let generation = try await store.useWorkerRegistration(jti: jti, name: worker.name, at: Int64(configuration.workerClock() * 1_000_000))
            let minted = try await mintAuthToken(worker.name, generation: generation)
            state.setCredential(socket.id, SocketCredential(generation: generation, expiresAt: minted.expiresAt))
            // The earlier credential is refused from now on, on the sockets that already hold it too.
            closeWorkerSockets(reason: "worker registered again") { other, who in
                other != socket && who.name == worker.name && (state.credential(other.id)?.generation ?? who.generation).map { $0 < generation } == true
            }
            join.authMode = "token"
            join.credentialExpiresAt = Int64(minted.expiresAt * 1_000_000)
            credential = ["token": .string(minted.token), "expires_at": .double(minted.expiresAt)]
            logger.notice("worker registered", metadata: ["worker.name": "\(worker.name)", "worker.generation": "\(generation)"])
        }
        try await store.workerConnected(join, at: now)
        logger.info("worker joined the queue", metadata: ["worker.name": "\(worker.name)", "worker.capacity": "\(join.capacity)",
                                                          "worker.auth": "\(join.authMode)"])
        return (credential, defaults)
    }

    /// After the join reply: fleet control in force for this very process is given again (it reconnected).
    func workerJoinedQueue(_ worker: WorkerIdentity, socket: ChannelSocket) async {
        guard state.hasFleetControl(socket.id), let control = try? await store.workerControl(name: worker.name) else { return }
        _ = socket.push(topic: Wire.Topic.queue, event: Wire.Event.workerControl, payload: Self.wire(control))
    }

    /// An RS256 worker credential, signed on the cooperative pool: the worker socket's handlers may run on the socket
    /// service thread, which a signature (0.7 ms) would hold up for every socket.
    func mintAuthToken(_ name: String, generation: Int64) async throws -> (token: String, expiresAt: Double) {
        let claims = WorkerCredentialClaims(kind: .auth, workerID: name, jti: UUID().uuidString.lowercased(), now: configuration.workerClock(),
                                            lifetime: configuration.workerTokenLifetimeSeconds, generation: generation)
        let key = configuration.attemptSigningKey
        return (try await withTaskExecutorPreference(globalConcurrentExecutor) {
            assert(!SocketServiceThread.isCurrent, "RS256 signing on the socket service thread")
            return try JWT.sign(claims, key: key)
        }, claims.exp)
    }

    /// `worker:renew`: a registered worker's fresh auth token, while its credential is still its own.
    func renewCredential(_ worker: WorkerIdentity, socket: ChannelSocket) async -> ChannelReply {
        guard let current = state.credential(socket.id) else {
            return .error(["reason": "this worker uses the shared secret; there is nothing to renew"])
        }
        // Refused and closed: the socket closes once the refusal has gone out, so the worker reads why.
        func refuse(_ reason: String, close: String) -> ChannelReply {
            var reply = ChannelReply.error(["reason": .string(reason)])
            reply.onDelivered = { _ in socket.close(code: 1008, reason: close) }
            return reply
        }
        guard current.expiresAt >= configuration.workerClock() else {
            return refuse("the credential ran out before it was renewed: register the worker again", close: "worker credential expired")
        }
        do {
            guard let auth = try store.workerAuthState(name: worker.name), auth.revokedAt == nil, auth.generation == current.generation else {
                return refuse("worker revoked or registered again", close: "worker revoked")
            }
            let minted = try await mintAuthToken(worker.name, generation: current.generation)
            state.setCredential(socket.id, SocketCredential(generation: current.generation, expiresAt: minted.expiresAt))
            try await store.workerCredentialRenewed(name: worker.name, expiresAt: Int64(minted.expiresAt * 1_000_000))
            logger.debug("worker credential renewed", metadata: ["worker.name": "\(worker.name)"])
            return .ok(["token": .string(minted.token), "expires_at": .double(minted.expiresAt)])
        } catch {
            return .error(["reason": .string("could not renew: \(error)")])
        }
    }

    /// Closes worker sockets whose credential ran out without a renewal.
    func closeExpiredWorkerSockets() {
        let seconds = configuration.workerClock()
        let closed = closeWorkerSockets(reason: "worker credential expired") { socket, who in
            (state.credential(socket.id)?.expiresAt ?? who.expiresAt).map { $0 < seconds } == true
        }
        for name in closed { logger.notice("closing a worker socket whose credential expired", metadata: ["worker.name": "\(name)"]) }
    }

    /// Closes the worker sockets that match (as `closeOperatorSockets` does for operators); returns their workers' names.
    @discardableResult
    func closeWorkerSockets(reason: String, where matches: (ChannelSocket, WorkerIdentity) -> Bool) -> [String] {
        var closed: [String] = []
        for socket in serverBox.server?.allSockets() ?? [] {
            if let who = socket.context as? WorkerIdentity, matches(socket, who) {
                socket.close(code: 1008, reason: reason)
                closed.append(who.name)
            }
        }
        return closed
    }

    // MARK: The admin's side

    /// A registration token for worker `name`, valid for `ttlSeconds`, used once.
    func registerWorker(_ name: String, ttlSeconds: Double, by: String) async throws -> JSON {
        guard Wire.isWorkerName(name) else {
            throw APIError(status: 400, message: "a worker name is 1-100 letters, digits, - _ . or :")
        }
        guard ttlSeconds >= 1, ttlSeconds <= 7 * 86400 else { throw APIError(status: 400, message: "ttl must be from 1 s to 7 days") }
        let claims = WorkerCredentialClaims(kind: .registration, workerID: name, jti: UUID().uuidString.lowercased(), now: configuration.workerClock(),
                                            lifetime: ttlSeconds)
        let token = try JWT.sign(claims, key: configuration.attemptSigningKey)
        try await store.createWorkerRegistration(name: name, jti: claims.jti, expiresAt: Int64(claims.exp * 1_000_000), by: by,
                                                 at: Timestamp.nowMicros())
        logger.notice("registration token minted", metadata: ["worker.name": "\(name)", "by": "\(by)", "ttl": "\(Int(ttlSeconds)) s"])
        return ["name": .string(name), "token": .string(token), "expires_at": Render.time(Int64(claims.exp * 1_000_000))]
    }


    /// Revokes a worker: its tokens and unused registrations are refused from now on and its sockets closed.
    func revokeWorker(_ name: String, by: String) async throws -> JSON {
        guard try await store.revokeWorker(name: name, at: Timestamp.nowMicros()) else {
            throw APIError(status: 404, message: "no worker named \"\(name)\"")
        }
        let closed = closeWorkerSockets(reason: "worker revoked") { _, who in who.name == name }.count
        logger.notice("worker revoked", metadata: ["worker.name": "\(name)", "by": "\(by)", "sockets.closed": "\(closed)"])
        return ["revoked": .string(name), "sockets_closed": .int(Int64(closed))]
    }

    /// Which workers a fleet command is for.
    enum WorkerSelector: Sendable {
        case names([String])
        case all
        case deploymentNot(String)
    }

    /// Drain, pause or resume the selected connected workers: the control is kept for each worker process and
    /// pushed to it (`worker:control`); a worker that does not understand it (OpenFn's ws-worker) is reported.
    func controlWorkers(_ selector: WorkerSelector, action: String, policy: WorkerControl.Policy, deadlineSeconds: Double, stay: Bool,
                        by: String) async throws -> JSON {
        let records = Dictionary(try await store.workers().map { ($0.name, $0) }, uniquingKeysWith: { a, _ in a })
        var sockets: [String: [ChannelSocket]] = [:]
        for socket in serverBox.server?.sockets(joinedTo: Wire.Topic.queue) ?? [] {
            if let name = (socket.context as? WorkerIdentity)?.name { sockets[name, default: []].append(socket) }
        }
        let names: [String]
        switch selector {
        case .names(let given):
            for name in given where records[name] == nil { throw APIError(status: 404, message: "no worker named \"\(name)\"") }
            names = given
        case .all: names = sockets.keys.sorted()
        case .deploymentNot(let id): names = sockets.keys.sorted().filter { records[$0]?.deploymentID != id }
        }
        let deadlineAt = Timestamp.nowMicros() + Int64(deadlineSeconds * 1_000_000)
        var results: [JSON] = []
        var stored: [(name: String, control: WorkerControl?)] = []
        for name in names {
            guard let connected = sockets[name], !connected.isEmpty else {
                results.append(["name": .string(name), "result": "not connected"])
                continue
            }
            let capable = connected.filter { state.hasFleetControl($0.id) }
            guard !capable.isEmpty else {
                results.append(["name": .string(name), "result": "unsupported: this worker does not take fleet control; stop it with SIGTERM"])
                continue
            }
            let instance = records[name]?.instanceID
            let control: WorkerControl? = switch action {
            case "drain": WorkerControl(action: .drain, policy: policy, deadlineAt: deadlineAt, stay: stay, instanceID: instance)
            case "pause": WorkerControl(action: .pause, instanceID: instance)
            default: nil
            }
            stored.append((name, control))
            let payload = control.map(Self.wire) ?? ["action": "resume"]
            for socket in capable {
                _ = socket.push(topic: Wire.Topic.queue, event: Wire.Event.workerControl, payload: payload)
                // A paused or draining worker claims nothing more: tokens are not signed ahead for it (its next claim,
                // after a resume, says again whether it has free slots).
                if control != nil { state.setFreeSlots(socket.id, false) }
            }
            results.append(["name": .string(name), "result": .string(action == "drain" ? "draining" : action == "pause" ? "paused" : "resumed")])
        }
        try await store.setWorkerControl(stored)
        logger.notice("fleet control", metadata: ["action": "\(action)", "workers": "\(stored.map(\.name))", "by": "\(by)"])
        return ["workers": .array(results)]
    }

    /// The `worker:control` push: the deadline as milliseconds from now (no clock is shared with the worker).
    static func wire(_ control: WorkerControl) -> JSON {
        var o: [String: JSON] = ["action": .string(control.action.rawValue)]
        if control.action == .drain {
            o["policy"] = .string((control.policy ?? .finish).rawValue)
            o["deadline_ms"] = .int(max(0, ((control.deadlineAt ?? 0) - Timestamp.nowMicros()) / 1000))
            o["stay"] = .bool(control.stay ?? false)
        }
        return .object(o)
    }
}

/// A registered worker socket's credential: its generation and when it runs out (seconds since the epoch).
struct SocketCredential: Sendable {
    var generation: Int64
    var expiresAt: Double
}

/// `serve --worker-groups FILE`: a YAML mapping of group names to the settings Lightning sends their workers at join.
public enum WorkerGroupDefaults {
    /// The settings a group may set, and what each must be.
    public static let settings: [String: String] = [
        "capacity": "a whole number from 1 to 10000", "shutdown-timeout": "seconds, 0 or more",
        "shutdown-policy": "finish, requeue or cancel",
    ]

    public static func parse(yaml text: String) throws -> [String: JSON] {
        guard let top = try Yams.load(yaml: text) as? [String: Any] else {
            throw StoreError.invalid("the worker groups file must be a mapping of group names to settings")
        }
        var groups: [String: JSON] = [:]
        for (group, value) in top {
            guard let map = value as? [String: Any] else { throw StoreError.invalid("group \(group): give a mapping of settings") }
            var out: [String: JSON] = [:]
            for (key, v) in map {
                guard let want = settings[key] else {
                    throw StoreError.invalid("group \(group): unknown setting \(key) (known: \(settings.keys.sorted().joined(separator: ", ")))")
                }
                switch key {
                case "capacity":
                    guard let n = v as? Int, (1...10_000).contains(n) else { throw StoreError.invalid("group \(group): \(key) must be \(want)") }
                    out[key] = .int(Int64(n))
                case "shutdown-timeout":
                    guard let n = (v as? Double) ?? (v as? Int).map(Double.init), n >= 0 else {
                        throw StoreError.invalid("group \(group): \(key) must be \(want)")
                    }
                    out[key] = .double(n)
                default:
                    guard let p = v as? String, ["finish", "requeue", "cancel"].contains(p) else {
                        throw StoreError.invalid("group \(group): \(key) must be \(want)")
                    }
                    out[key] = .string(p)
                }
            }
            groups[group] = .object(out)
        }
        return groups
    }
}
