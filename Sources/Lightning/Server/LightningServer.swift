import Channels
import Foundation
import Synchronization
import JWT
import Logging
import ServiceLifecycle

/// Keys and settings of one Lightning server.
public struct LightningConfiguration: Sendable {
    public var host = "127.0.0.1"
    public var port = 4000
    public var databasePath = "./data/lightning.db"
    /// Key that signs attempt tokens (RS256 private key).
    public var attemptSigningKey: JWTKey
    /// Key that checks worker tokens (HS256, the UTF-8 bytes of WORKER_SECRET).
    public var workerSecretKey: JWTKey
    public var requireWorkerTokenExpiry = false
    /// Accept worker tokens signed with WORKER_SECRET (`serve --no-shared-secret` turns it off: then only
    /// registered workers connect).
    public var sharedSecretEnabled = true
    /// Lifetime of a worker auth token (renewed over the socket well before it ends).
    public var workerTokenLifetimeSeconds: Double = 20 * 60
    /// Settings sent to workers at join, by group (`default` for workers that name none): a worker applies those it
    /// was not given itself (`serve --worker-groups FILE`, docs/workers.md).
    public var workerGroupDefaults: [String: JSON] = [:]
    /// How long a worker may be gone before its attempts are lost.
    public var graceSeconds: Double = 30
    public var janitorIntervalSeconds: Double = 5
    public var channel = ChannelServerConfiguration()
    /// Longest log line stored as is; longer ones are replaced by a notice.
    public var maxLogLineBytes = 1_000_000
    /// Log lines in a viewer's join reply; the rest of the backlog follows as pushes.
    public var joinBacklogLines = 1000
    /// Bytes queued for one viewer before it is closed as too slow (it resumes with `since`).
    public var viewerMaxQueuedBytes = 4 * 1024 * 1024
    /// Bytes queued for all operator sockets together (viewers and the attempts feed): past it, those with a backlog
    /// are closed as too slow, so Lightning's memory stays bounded however many viewers stop reading.
    public var viewersMaxQueuedBytes = 64 * 1024 * 1024
    /// `GET /metrics` (no authentication, like Lightning's own; turn it off where that port is public).
    public var metricsEnabled = true
    /// Run the cron scheduler (one per database is enough; two are safe).
    public var cronEnabled = true
    /// The operator console at `/` (`serve --no-console` turns it off; the API stays).
    public var consoleEnabled = true
    /// How long a console sign-in lasts.
    public var consoleSessionSeconds: Int64 = 12 * 3600
    /// Failed token checks allowed per client address at once (0: no limit), and forgiven per second after that.
    public var authFailureBurst = 20
    public var authFailuresForgivenPerSecond = 1.0
    /// Proxies whose `X-Forwarded-For` names the client for that limit.
    public var trustedProxies: [String] = []
    /// The clock of that limit (tests move their own).
    var authClock: @Sendable () -> ContinuousClock.Instant = { .now }
    /// The clock worker credentials are minted, checked and expired by, in seconds since the epoch (tests move their own).
    var workerClock: @Sendable () -> Double = { Date().timeIntervalSince1970 }
    /// The URL browsers reach Lightning at, when it is not this server's own (a proxy terminating TLS, another
    /// host name): the console's requests must come from its origin, and its cookie is `Secure` when it is https.
    public var publicURL: String? = nil
    /// For fault tests only (`LIGHTNING_TEST_EXIT_ON_ATTEMPT_JOIN=1`): the process exits at once when a worker
    /// joins `run:<id>`, after the claim reply reached that worker and before the join is answered, which makes
    /// "Lightning restarted right after a claim" deterministic.
    public var testExitOnAttemptJoin = false
    /// For tests only: awaited after a claim is committed and signed, before its reply goes out (so a test can make
    /// the worker vanish in between, deterministically).
    public var testBeforeClaimReply: (@Sendable () async -> Void)? = nil
    /// For tests only: awaited in an operator's join of `attempt:<id>` after the attempt and its log are read, before
    /// the reply goes out (so a test can change the attempt in that window, deterministically).
    public var testViewerJoinRead: (@Sendable (String) async -> Void)? = nil

    public init(attemptSigningKey: JWTKey, workerSecretKey: JWTKey) {
        self.attemptSigningKey = attemptSigningKey
        self.workerSecretKey = workerSecretKey
    }
}

/// Who a worker socket belongs to, from its verified token.
public struct WorkerIdentity: Sendable, Equatable {
    public enum Auth: Sendable, Equatable {
        /// An HS256 token signed with WORKER_SECRET.
        case sharedSecret
        /// A worker auth token of this credential generation, running out at `expiresAt` (seconds since the epoch).
        case token(generation: Int64, expiresAt: Double)
        /// A registration token, used when the worker joins `worker:queue` (it then gets its auth token).
        case registration(jti: String, expiresAt: Double)
    }
    public var name: String
    public var auth: Auth = .sharedSecret

    /// When the credential it connected with runs out, and its generation (nil for the shared secret).
    var expiresAt: Double? {
        switch auth {
        case .sharedSecret: nil
        case .token(_, let e), .registration(_, let e): e
        }
    }
    var generation: Int64? { if case .token(let g, _) = auth { g } else { nil } }

    public init(name: String, auth: Auth = .sharedSecret) {
        self.name = name
        self.auth = auth
    }
}

/// The orchestrator: the store, the worker socket (`worker:queue`, `run:<id>`), webhooks and the janitor.
public final class Lightning: Sendable {
    public let configuration: LightningConfiguration
    public let store: any LightningStore
    let logger: Logger
    let attemptVerifyKey: JWTKey
    let state = LightningState()
    let metrics: LightningMetrics
    let viewers: ViewerHub
    /// This process among the replicas on one database: worker records name the connection they describe with it.
    let replicaID = String(UUID().uuidString.lowercased().prefix(12))
    let attemptsFeed = AttemptsFeed()
    let attemptsDrain: SerialDrain<[String]>
    /// Everything for the attempts' viewers, in the order it happened: stored lines, step events and state
    /// changes go through one drain, so an event never overtakes the lines before it (see `AttemptChannel.publish`).
    let viewerFeed: SerialDrain<ViewerWork>
    let waiters = CompletionWaiters()
    let authLimiter: AuthFailureLimiter
    /// Plans of running attempts, built once: from the immutable snapshot of the work order, and needed by the
    /// claim (claim:checkout), fetch:plan, fetch:dataclip, step:complete and run:complete.
    let plans = AttemptCache<Plan>()
    /// The attempt tokens this process signed, with their expiry: a worker joining `run:<id>` with the very token
    /// it was given needs no second RSA verification (any other token, or one signed by another replica, is
    /// verified in full).
    let issuedTokens = AttemptCache<IssuedToken>()
    let tokensAhead = TokensAhead()
    let serverBox = ServerBox()

    public init(configuration: LightningConfiguration, store: any LightningStore, logger: Logger = Logger(label: "lightning")) throws {
        self.configuration = configuration
        self.store = store
        self.logger = logger
        attemptVerifyKey = try configuration.attemptSigningKey.publicKey()
        let metrics = LightningMetrics()
        self.metrics = metrics
        authLimiter = AuthFailureLimiter(AuthFailureLimiter.Settings(
            burst: configuration.authFailureBurst, perSecond: configuration.authFailuresForgivenPerSecond,
            trustedProxies: Set(configuration.trustedProxies)), now: configuration.authClock)
        let viewers = ViewerHub(store: store, logger: logger, gauge: metrics.viewersConnected)
        self.viewers = viewers
        let feed = attemptsFeed
        attemptsDrain = SerialDrain(limit: .max) { batches in await Self.pushAttempts(batches, store: store, feed: feed) }
        // Weighed in bytes: a caller waits once 64 MB of lines wait for viewers.
        viewerFeed = SerialDrain(limit: 64 << 20) { work in
            for item in work {
                switch item {
                case .lines(let attemptID, let lines): await viewers.published(attemptID: attemptID, lines: lines)
                case .event(let attemptID, let event, let payload): await viewers.event(attemptID: attemptID, event: event, payload: payload)
                case .changed(let attemptID): await viewers.attemptChanged(attemptID)
                case .storedElsewhere(let attemptID): await viewers.storedElsewhere(attemptID)
                }
            }
        }
    }

    public var port: Int { serverBox.server?.port ?? 0 }

    /// The work Lightning does besides answering: the janitor, and the cron scheduler unless cron is off. `lightning
    /// serve` runs them in its service group beside the server; `start()` runs them itself unless told not to.
    public var backgroundServices: [any Service] {
        var services: [any Service] = [JanitorService(lightning: self)]
        if configuration.cronEnabled {
            services.append(CronService(scheduler: CronScheduler(store: store, logger: logger) { [self] created in
                metrics.cronFired.increment()
                attemptsChanged([created.attemptID])
                nudgeWorkers()
            }))
        }
        return services
    }

    /// A service group for Lightning's services that cannot hold a stop for long: a janitor pass waiting on an
    /// unreachable PostgreSQL server (which task cancellation does not interrupt) is given up after 10 s of graceful
    /// shutdown and 5 s of cancellation.
    public static func boundingShutdown(_ configuration: ServiceGroupConfiguration) -> ServiceGroupConfiguration {
        var c = configuration
        c.maximumGracefulShutdownDuration = Duration.seconds(10)
        c.maximumCancellationDuration = Duration.seconds(5)
        return c
    }

    /// Starts listening, and with `runningBackgroundServices` the `backgroundServices` in a service group of their own
    /// (for embedding, and tests). Call `shutdown()` to stop.
    public func start(runningBackgroundServices: Bool = true) throws {
        var channel = configuration.channel
        channel.host = configuration.host
        channel.port = configuration.port
        let workerEndpoint = SocketEndpoint(
            path: Wire.Path.workerSocket,
            authenticate: { [self] request in authenticateWorker(request) },
            channels: [ChannelRoute(Wire.Topic.queue, QueueChannel(lightning: self)),
                       ChannelRoute(Wire.Topic.attemptPrefix + "*", AttemptChannel(lightning: self))],
            onDisconnect: { [self] socket in await workerSocketClosed(socket) },
            // Worker events are handled on the socket service thread (no hop to the pool and back per event) when
            // the store's short reads (`readHere`) are of a local SQLite file: on PostgreSQL they wait on the network,
            // and would hold up every socket meanwhile. The claim's RS256 signing hops off (`signAttemptToken`).
            handlesOnServiceThread: (store as? SQLStore)?.database.dialect == .sqlite)
        let operatorEndpoint = SocketEndpoint(
            path: Wire.Path.operatorSocket,
            authenticate: { [self] request in authenticateOperator(request) },
            channels: [ChannelRoute("attempt:*", OperatorChannel(lightning: self)),
                       ChannelRoute(AttemptsFeed.topic, AttemptsFeedChannel(lightning: self))],
            onDisconnect: { [self] socket in
                attemptsFeed.remove(socketID: socket.id)
                await viewers.detachAll(socketID: socket.id)
            },
            maxQueuedBytes: configuration.viewerMaxQueuedBytes, maxQueuedBytesTotal: configuration.viewersMaxQueuedBytes)
        var routes = [
            HTTPRoute("GET", "/healthz") { _ in .json(200, ["status": "ok"]) },
            HTTPRoute("POST", "/i/") { [self] request in await webhook(request) },
            HTTPRoute(nil, "/api/") { [self] request in await operatorAPI(request) },
        ]
        if configuration.metricsEnabled {
            routes.append(HTTPRoute("GET", "/metrics") { [self] _ in await renderMetrics() })
        }
        if configuration.consoleEnabled { routes += consoleRoutes() }
        let server = ChannelServer(configuration: channel, endpoints: [workerEndpoint, operatorEndpoint], routes: routes,
                                   logger: Logger(label: "lightning.channels"))
        try server.start()
        serverBox.server = server
        // Replicas on one PostgreSQL database: work made through another replica nudges the workers here, and an
        // operator's cancel there reaches the attempt's worker if it is connected here.
        store.subscribe { [weak self] signal in
            guard let self else { return }
            switch signal {
            case .workAvailable: nudgeWorkers()
            case .cancel(let id): askWorkerToCancel(id)
            case .logs(let id): if viewers.watched.contains(id) { _ = viewerFeed.post(.storedElsewhere(id)) }
            case .attemptChanged(let id): Task { await self.attemptChanged(id) }
            }
        }
        if runningBackgroundServices {
            let group = ServiceGroup(configuration: Self.boundingShutdown(.init(services: backgroundServices, logger: logger)))
            serverBox.background = (group, Task { try? await group.run() })
        }
        logger.info("Lightning is listening", metadata: ["port": "\(server.port)", "database": "\(configuration.databasePath)"])
    }

    public func shutdown() async {
        if let (group, running) = serverBox.background {
            await group.triggerGracefulShutdown()
            await running.value
        }
        await serverBox.server?.shutdown()
    }

    // MARK: Worker sockets

    func tooManyFailures(_ wait: Int) -> AuthDecision {
        metrics.authThrottled.increment()
        return .reject(status: 429, message: "too many failed token checks from this address: try again in \(wait) s", retryAfter: wait)
    }

    /// Operator sockets: the token in `?token=` or `Authorization: Bearer`, or the console's session cookie
    /// from the console's own origin (a WebSocket is not protected by the same-origin policy), checked before
    /// the upgrade.
    func authenticateOperator(_ request: UpgradeRequest) -> AuthDecision {
        let presented = request.query["token"].flatMap { $0.isEmpty ? nil : $0 } ?? request.headers["authorization"]
        let client = authLimiter.client(peer: request.peerAddress, headers: request.headers)
        switch authorize(presented: presented, headers: request.headers, method: "WEBSOCKET", needed: .viewer, client: client) {
        case .success(let identity): return .accept(context: identity)
        case .failure(let refusal):
            let retryAfter = refusal.response.headers.first { $0.0 == "retry-after" }.flatMap { Int($0.1) }
            return .reject(status: refusal.response.status, message: String(decoding: refusal.response.body, as: UTF8.self),
                           retryAfter: retryAfter)
        }
    }

    /// Operator sockets open now (viewers, the console).
    func operatorSocketCount() -> Int {
        serverBox.server?.allSockets().filter { $0.context is OperatorIdentity }.count ?? 0
    }

    /// Closes the operator sockets whose identity matches (a revoked token, an ended or expired session).
    func closeOperatorSockets(reason: String = "token revoked", where matches: (OperatorIdentity) -> Bool) {
        guard let server = serverBox.server else { return }
        for topicSocket in server.allSockets() {
            if let who = topicSocket.context as? OperatorIdentity, matches(who) {
                topicSocket.close(code: 1008, reason: reason)
            }
        }
    }

    /// Whether any socket of this worker is still open (joined or not).
    func hasOpenSocket(worker name: String) -> Bool {
        (serverBox.server?.allSockets() ?? []).contains { ($0.context as? WorkerIdentity)?.name == name }
    }

    /// The id a worker's record carries for its connection here.
    func connectionID(_ socket: ChannelSocket) -> String { "\(replicaID)/\(socket.id)" }

    func connectedWorkerNames() -> [String] {
        (serverBox.server?.sockets(joinedTo: Wire.Topic.queue) ?? []).compactMap { ($0.context as? WorkerIdentity)?.name }
    }

    func renderMetrics() async -> HTTPResponse {
        if let counts = try? await store.attemptCounts() { metrics.attempts(counts) }
        metrics.workersConnected.record(Set(connectedWorkerNames()).count)
        metrics.connectionsRefused.record(serverBox.server?.refusedConnectionCount ?? 0)
        metrics.unfinishedEvicted.record(serverBox.server?.evictedUnfinishedCount ?? 0)
        let ahead = tokensAhead.counts
        metrics.tokensAheadUsed.record(ahead.used)
        metrics.tokensAheadUnused.record(ahead.unused)
        return .text(200, metrics.render(), contentType: "text/plain; version=0.0.4; charset=utf-8")
    }

    func workerSocketClosed(_ socket: ChannelSocket) async {
        state.setCheckout(socket.id, false)
        state.setFreeSlots(socket.id, false)
        state.setCredential(socket.id, nil)
        state.setFleetControl(socket.id, false)
        guard let worker = socket.context as? WorkerIdentity else { return }
        let stillConnected = serverBox.server?.sockets(joinedTo: Wire.Topic.queue)
            .contains { ($0.context as? WorkerIdentity)?.name == worker.name && $0 != socket } ?? false
        if !stillConnected {
            state.workerGone(worker.name, at: Timestamp.nowMicros())
            try? await store.workerDisconnected(name: worker.name, connectionID: connectionID(socket), at: Timestamp.nowMicros())
            logger.info("worker disconnected", metadata: ["worker.name": "\(worker.name)"])
        }
    }

    /// After a restart: workers that hold attempts but have no socket here count as gone since they disconnected,
    /// or since now when the record says they were connected (Lightning was killed under them), so a restart
    /// never stretches the grace period to the claim timeout.
    func restoreAbsentWorkers() async {
        do {
            let now = Timestamp.nowMicros()
            let connected = Set(connectedWorkerNames())
            for (name, since) in try await store.workersHoldingAttempts() where !connected.contains(name) {
                state.workerGoneIfUnknown(name, at: since ?? now)
            }
        } catch {
            logger.error("could not read which workers hold attempts", metadata: ["error": "\(error)"])
        }
    }

    func plan(_ attemptID: String) async throws -> Plan {
        if let p = plans.get(attemptID) { return p }
        var p = try await store.plan(attemptID: attemptID)
        // A worker's event carries up to payload_limit_mb of state as a JSON string, or a log line of up to
        // log_payload_limit_mb: each must fit in a message this server accepts even with every character escaped
        // twice (a worker may count the limit before escaping, as OpenFn's does), or the socket closes on it and on
        // its resend, for ever. The plan says what fits: 15 MB for the default 32 MB messages.
        let fits = max(1, (configuration.channel.maxMessageBytes - 1_000_000) / 2_000_000)
        p.options.payloadLimitMB = min(p.options.payloadLimitMB, fits)
        p.options.logPayloadLimitMB = min(p.options.logPayloadLimitMB, fits)
        plans.put(attemptID, p)
        return p
    }

    /// An attempt changed state: viewers and any webhook waiting on it learn of it.
    func attemptChanged(_ id: String) async {
        attemptsChanged([id])
        if viewers.watched.contains(id) { viewerFeed.post(.changed(id)) }
        if waiters.isWaiting(id) { await waiters.changed(id) }
    }

    /// A retry was made for an attempt that ended lost or exception: workers hear of it at once.
    func retryCreated(_ retryID: String, after id: String, state: AttemptState) {
        metrics.retries.increment()
        attemptsChanged([retryID])
        logger.notice("attempt retried", metadata: ["attempt.id": "\(id)", "attempt.state": "\(state.rawValue)",
                                                     "retry.id": "\(retryID)"])
        nudgeWorkers()
    }

    /// A worker refused the token of an attempt it claimed (our extension, `run:refused` on `worker:queue`):
    /// the attempt ends at once as an exception with the worker's reason, instead of waiting out the claim.
    func claimRefused(_ id: String, worker: String, reason: String) async throws {
        let done = try await store.refuseClaim(id, workerName: worker, reason: reason, at: Timestamp.nowMicros())
        metrics.tokensRefused.increment()
        logger.error("a worker refused an attempt token", metadata: ["attempt.id": "\(id)", "worker.name": "\(worker)",
                                                                      "reason": "\(reason)"])
        await attemptChanged(id)
        if let retry = done.retryID { retryCreated(retry, after: id, state: done.state) }
    }

    /// A worker back within the grace period carries on: its attempts are not lost.
    func workerRejoined(_ name: String) { state.workerBack(name) }

    /// Tells every worker that attempts are waiting: at once when the last push is at least one interval old,
    /// otherwise once at the end of that interval for everything that arrived meanwhile. The interval grows with
    /// the workers a push goes to (50 µs each, from 2 ms to 50 ms), so a burst costs few pushes however many
    /// workers there are, and work that arrives alone is never held. (A fixed 50 ms window that every new
    /// webhook could fall into held one-at-a-time work for up to 50 ms: it was most of the dispatch latency.)
    public func nudgeWorkers() {
        let workers = serverBox.server?.sockets(joinedTo: Wire.Topic.queue).count ?? 0
        let interval = Duration.microseconds(min(50_000, max(2_000, workers * 50)))
        switch state.nudge(now: .now, interval: interval) {
        case .now:
            broadcastWorkAvailable()
        case .at(let when):
            Task { [self] in
                try? await Task.sleep(until: when, clock: .continuous)
                state.scheduledNudgeFired(at: .now)
                broadcastWorkAvailable()
            }
        case .alreadyScheduled:
            break
        }
    }

    private func broadcastWorkAvailable() {
        serverBox.server?.broadcast(topic: Wire.Topic.queue, event: Wire.Event.workAvailable, payload: [:])
    }

    /// The token for a claimed attempt: the one signed ahead for it if fresh (`TokensAhead`), else signed now.
    /// Remembered as issued (`isIssuedToken`) only when handed out: a token signed ahead too late for its claim never
    /// replaces the one the claim signed.
    func signAttemptToken(_ claimed: ClaimedAttempt) async throws -> String {
        let signed: TokensAhead.Signed
        if let ahead = await tokensAhead.take(claimed.id) {
            signed = ahead
        } else {
            // On the cooperative pool, whatever thread the claim is handled on (0.7 ms of CPU: never on the socket
            // service thread, and several side by side on every core).
            signed = try await withTaskExecutorPreference(globalConcurrentExecutor) {
                try makeAttemptToken(claimed.id, runTimeoutMS: claimed.runTimeoutMS)
            }
        }
        issuedTokens.put(claimed.id, IssuedToken(token: Array(signed.token.utf8), expiresAt: signed.expiresAt))
        return signed.token
    }

    private func makeAttemptToken(_ id: String, runTimeoutMS: Int) throws -> TokensAhead.Signed {
        let lifetime = Double(runTimeoutMS) / 1000 + configuration.graceSeconds
        let claims = AttemptTokenClaims(attemptID: id, lifetime: lifetime)
        assert(!SocketServiceThread.isCurrent, "RS256 signing on the socket service thread")
        let token = try JWT.sign(claims, key: configuration.attemptSigningKey)
        return TokensAhead.Signed(token: token, issuedAt: claims.iat ?? 0, expiresAt: claims.exp)
    }

    /// New work: while some worker has free slots it is claimed at once, so its token is signed now, beside the
    /// nudge and the claim's round trip (`TokensAhead`).
    func signAhead(_ created: CreatedWork) {
        guard let runTimeoutMS = created.runTimeoutMS, state.workersHaveFreeSlots else { return }
        tokensAhead.start(created.attemptID) { [self] in try? makeAttemptToken(created.attemptID, runTimeoutMS: runTimeoutMS) }
    }

    /// True when `token` is the one this process signed for `attemptID` and it has not expired.
    func isIssuedToken(_ token: String, attemptID: String, now: Double = Date().timeIntervalSince1970) -> Bool {
        guard let issued = issuedTokens.get(attemptID), now < issued.expiresAt else { return false }
        let presented = Array(token.utf8)
        guard presented.count == issued.token.count else { return false }
        var difference: UInt8 = 0
        for i in presented.indices { difference |= presented[i] ^ issued.token[i] }
        return difference == 0
    }

    // MARK: Work

    /// Creates a work order and its attempt for a workflow, and nudges the workers.
    public func startWork(workflow: String, input: [UInt8]) async throws -> CreatedWork {
        let created = try await store.createWorkOrder(workflow: workflow, input: input, ordered: newWorkOrdered)
        attemptsChanged([created.attemptID])
        return created
    }

    /// New work that a claim would now find: its token is signed ahead and the workers are nudged. On SQLite this runs
    /// before the work order's commit (the claim queues behind it in the one writer), so the nudge, the claim's
    /// request and the token's signature overlap the commit's fsync instead of following it. If that commit then
    /// fails, the claim finds nothing and the token is never used.
    private var newWorkOrdered: @Sendable (CreatedWork) -> Void {
        { [self] created in
            signAhead(created)
            nudgeWorkers()
        }
    }

    func webhook(_ request: HTTPRequest) async -> HTTPResponse {
        let path = String(request.path.dropFirst("/i/".count))
        guard !path.isEmpty else { return .error(404, "no webhook path given: POST /i/<path>") }
        let body = request.body.isEmpty ? Array("{}".utf8) : request.body
        if let refusal = Self.webhookBodyRefusal(contentType: request.headers["content-type"], body: body) { return refusal }
        do {
            metrics.webhooks.increment()
            let created = try await store.createWorkOrder(webhookPath: path, input: body, ordered: newWorkOrdered)
            attemptsChanged([created.attemptID])
            if created.webhookReply == .afterCompletion {
                let timeout = Duration.milliseconds(created.webhookReplyTimeoutMS ?? 30_000)
                return await webhookResult(created, timeout: timeout)
            }
            return .json(200, ["work_order_id": .string(created.workOrderID), "attempt_id": .string(created.attemptID)])
        } catch let error as StoreError {
            switch error {
            case .notFound(let m): return .error(404, m)
            case .unavailable(let m):
                logger.error("a webhook was refused: the database disk is full", metadata: ["path": "\(path)"])
                return Self.unavailable(m)
            default: return .error(400, error.description)
            }
        } catch {
            return .error(500, "could not create the work order: \(error)")
        }
    }

    /// Why a webhook's body cannot be a work order's input, or nil when it can. The input is a JSON object: a body
    /// of another media type is refused with 415 naming the type, so a form or a file upload is not taken for JSON.
    /// A type given by default rather than chosen (`curl -d` sends `application/x-www-form-urlencoded`, many HTTP
    /// libraries `text/plain`) is accepted when the body is JSON all the same; a body declared JSON that does not
    /// parse, or JSON that is not an object, is 400.
    static func webhookBodyRefusal(contentType: String?, body: [UInt8]) -> HTTPResponse? {
        let mediaType = (contentType ?? "").split(separator: ";", maxSplits: 1, omittingEmptySubsequences: false).first
            .map { $0.trimmingCharacters(in: .whitespaces).lowercased() } ?? ""
        let declaredJSON = mediaType.isEmpty || mediaType == "application/json" || mediaType.hasSuffix("+json")
        let defaulted = mediaType == "application/x-www-form-urlencoded" || mediaType == "text/plain"
        guard declaredJSON || defaulted else {
            return .error(415, "a webhook takes a JSON object (Content-Type: application/json), not \(mediaType)")
        }
        let value: JSON
        do {
            value = try JSON.parse(body)
        } catch {
            // Declared JSON but unreadable: the type is right and the syntax wrong (400). Anything else: not JSON.
            if declaredJSON && !mediaType.isEmpty { return .error(400, "the body is not valid JSON: \(error)") }
            return .error(415, "the body is not JSON (\(error)): send a JSON object with Content-Type: application/json")
        }
        guard case .object = value else { return .error(400, "the input must be a JSON object, not \(value.kindName)") }
        return nil
    }

    /// `webhook_reply: after_completion`: waits until the work order's attempt is final (following retries), then
    /// answers with the last step's `webhookResponse` (`{"status", "body"}`, or any JSON as the body) or the final
    /// state. Past the timeout: 504 with the ids, so the caller can look the attempt up later.
    func webhookResult(_ created: CreatedWork, timeout: Duration) async -> HTTPResponse {
        let deadline = ContinuousClock.now + timeout
        var attemptID = created.attemptID
        let ids: JSON = ["work_order_id": .string(created.workOrderID), "attempt_id": .string(created.attemptID)]
        while true {
            let current = attemptID
            let finished = await waiters.wait(for: current, until: deadline) { [store] in
                (try? await store.attempt(current))?.state.isFinal ?? true
            }
            guard finished else {
                return .json(504, ["error": "the attempt did not finish within the webhook's reply timeout", "work_order_id":
                                   .string(created.workOrderID), "attempt_id": .string(attemptID)])
            }
            // An attempt that was retried: the answer is the retry's.
            if let next = try? await store.attempts(workOrderID: created.workOrderID).first(where: { $0.retryOf == attemptID }) {
                attemptID = next.id
                continue
            }
            guard let result = try? await store.attemptResult(attemptID) else { return .error(500, "could not read the attempt") }
            return Self.webhookResponse(result, ids: ids)
        }
    }

    static func webhookResponse(_ result: AttemptResult, ids: JSON) -> HTTPResponse {
        let a = result.attempt
        var headers = [("x-openfn-attempt-id", a.id), ("x-openfn-attempt-state", a.state.rawValue)]
        if let text = result.webhookResponse, let value = try? JSON.parse(text) {
            // `{status, body}` as the lexicon's WebhookResponse; any other value is the body itself.
            var status = 200
            var body = value
            if case .object(let o) = value, o.keys.allSatisfy({ $0 == "status" || $0 == "body" || $0 == "headers" }) {
                // A final status only: a 1xx is not an answer (its body would be read as the next response).
                if let s = o["status"]?.intValue, (200...599).contains(s) { status = Int(s) }
                body = o["body"] ?? .null
            }
            headers.append(("x-openfn-work-order-id", ids["work_order_id"]?.stringValue ?? ""))
            // 204 and 304 carry no body (one sent would be read as the start of the next response on the connection).
            return HTTPResponse(status: status, headers: headers, body: [204, 304].contains(status) ? [] : body.encoded() + [0x0A])
        }
        var body = ids
        if case .object(var o) = body {
            o["attempt_id"] = .string(a.id)
            o["state"] = .string(a.state.rawValue)
            o["reason"] = Render.opt(a.reason)
            o["error_type"] = Render.opt(a.errorType)
            o["error_message"] = Render.opt(a.errorMessage)
            o["final_state"] = result.finalState.flatMap { try? JSON.parse($0) } ?? .null
            body = .object(o)
        }
        return HTTPResponse(status: a.state == .success ? 200 : 500, headers: headers, body: body.encoded() + [0x0A])
    }

    /// Cancels an attempt: at once when no worker has it, otherwise by asking its worker (`run:cancel`).
    public func cancel(attemptID: String) async throws -> AttemptState {
        let state = try await store.cancel(attemptID, at: Timestamp.nowMicros())
        if state == .cancelled { tokensAhead.forget(attemptID) }
        await attemptChanged(attemptID)
        if state == .claimed || state == .started {
            askWorkerToCancel(attemptID)
            // Its worker may be connected to another replica.
            do { try await store.publish(.cancel(attemptID: attemptID)) } catch {
                logger.warning("could not tell the other replicas of a cancel", metadata: ["attempt.id": "\(attemptID)", "error": "\(error)"])
            }
        }
        return state
    }

    /// `run:cancel` to the attempt's worker, if it is connected here.
    private func askWorkerToCancel(_ attemptID: String) {
        serverBox.server?.broadcast(topic: Wire.Topic.attempt(attemptID), event: Wire.Event.cancel,
                                    payload: ["reason": "cancelled by an operator"])
    }

    // MARK: Janitor

    func runJanitor() async {
        while true {
            do { try await Task.sleep(for: .seconds(configuration.janitorIntervalSeconds)) } catch { return }  // cancelled
            await sweep()
        }
    }

    /// Marks lost the attempts of workers gone past the grace period, and attempts overdue past their timeout.
    public func sweep() async {
        let now = Timestamp.nowMicros()
        closeExpiredConsoleSockets(now: now)
        closeExpiredWorkerSockets()
        let grace = Int64(configuration.graceSeconds * 1_000_000)
        let gone = state.workersGone(before: now - grace)
        do {
            // The heartbeat of the workers connected here: other replicas read it (shared liveness).
            let here = (serverBox.server?.sockets(joinedTo: Wire.Topic.queue) ?? []).filter { $0.context is WorkerIdentity }
            try await store.workersSeen(connectionIDs: here.map(connectionID), at: now)
            // Refreshed every sweep: a record not refreshed for two sweeps (and the grace period) has no replica.
            let aliveWithin = grace + Int64(2 * configuration.janitorIntervalSeconds * 1_000_000)
            let (lost, spared) = try await store.markLost(goneWorkers: gone.map(\.name), now: now, graceMicros: grace,
                                                          aliveWithinMicros: aliveWithin)
            for id in lost {
                logger.warning("attempt lost", metadata: ["attempt.id": "\(id)"])
                await attemptChanged(id)
            }
            // A lost attempt may have been retried.
            if !lost.isEmpty { nudgeWorkers() }
            // Those alive elsewhere (or gone from elsewhere only lately) are looked at again next time.
            state.forget(gone.map(\.name).filter { !spared.contains($0) })
        } catch is CancellationError {
            // Shutting down: the sweep was interrupted, not failed.
        } catch {
            logger.error("janitor failed", metadata: ["error": "\(error)"])
        }
    }
}

/// Mutable bits of Lightning, behind a lock.
final class LightningState: Sendable {
    private struct State {
        var goneSince: [String: Int64] = [:]
        var nudgePending = false
        var lastNudge: ContinuousClock.Instant?
        var undelivered = 0
        /// Worker sockets that asked for the claim:checkout extension.
        var checkoutSockets = Set<Int>()
        /// Worker sockets whose last claim got fewer attempts than it asked for: they have free slots and claim new
        /// work as soon as they hear of it.
        var socketsWithFreeSlots = Set<Int>()
        /// Registered worker sockets' credentials, and the sockets that take fleet control (`worker:control`).
        var credentials: [Int: SocketCredential] = [:]
        var fleetSockets = Set<Int>()
    }

    private let state = Mutex(State())

    /// Claim replies that never reached their worker (their attempts went back to the queue).
    var undeliveredClaims: Int { state.withLock { $0.undelivered } }
    func claimUndelivered() { state.withLock { $0.undelivered += 1 } }

    func workerGone(_ name: String, at: Int64) { state.withLock { $0.goneSince[name] = at } }
    func setCheckout(_ socketID: Int, _ on: Bool) {
        state.withLock { s in if on { s.checkoutSockets.insert(socketID) } else { s.checkoutSockets.remove(socketID) } }
    }
    func wantsCheckout(_ socketID: Int) -> Bool { state.withLock { $0.checkoutSockets.contains(socketID) } }
    func setFreeSlots(_ socketID: Int, _ free: Bool) {
        state.withLock { s in if free { s.socketsWithFreeSlots.insert(socketID) } else { s.socketsWithFreeSlots.remove(socketID) } }
    }
    var workersHaveFreeSlots: Bool { state.withLock { !$0.socketsWithFreeSlots.isEmpty } }
    func workerGoneIfUnknown(_ name: String, at: Int64) { state.withLock { s in if s.goneSince[name] == nil { s.goneSince[name] = at } } }
    func workerBack(_ name: String) { state.withLock { _ = $0.goneSince.removeValue(forKey: name) } }
    func workersGone(before: Int64) -> [(name: String, since: Int64)] {
        state.withLock { s in
            s.goneSince.filter { $0.value < before }.map { (name: $0.key, since: $0.value) }.sorted { $0.name < $1.name }
        }
    }
    func forget(_ names: [String]) { state.withLock { s in for n in names { s.goneSince[n] = nil } } }

    func setCredential(_ socketID: Int, _ c: SocketCredential?) { state.withLock { $0.credentials[socketID] = c } }
    func credential(_ socketID: Int) -> SocketCredential? { state.withLock { $0.credentials[socketID] } }
    func setFleetControl(_ socketID: Int, _ on: Bool) {
        state.withLock { s in if on { s.fleetSockets.insert(socketID) } else { s.fleetSockets.remove(socketID) } }
    }
    func hasFleetControl(_ socketID: Int) -> Bool { state.withLock { $0.fleetSockets.contains(socketID) } }

    enum Nudge: Equatable {
        case now
        case at(ContinuousClock.Instant)
        case alreadyScheduled
    }

    /// Whether to push work-available now, at the end of the current interval, or not at all (one is scheduled).
    func nudge(now: ContinuousClock.Instant, interval: Duration) -> Nudge {
        state.withLock { s in
            if s.nudgePending { return .alreadyScheduled }
            guard let last = s.lastNudge, now - last < interval else {
                s.lastNudge = now
                return .now
            }
            s.nudgePending = true
            return .at(last + interval)
        }
    }

    func scheduledNudgeFired(at now: ContinuousClock.Instant) {
        state.withLock { s in
            s.nudgePending = false
            s.lastNudge = now
        }
    }
}

final class ServerBox: Sendable {
    private let _server = Mutex<ChannelServer?>(nil)
    private let _background = Mutex<(ServiceGroup, Task<Void, Never>)?>(nil)
    /// The background services' group when `start()` runs them, and the task that runs it.
    var background: (ServiceGroup, Task<Void, Never>)? {
        get { _background.withLock { $0 } }
        set { _background.withLock { $0 = newValue } }
    }
    var server: ChannelServer? {
        get { _server.withLock { $0 } }
        set { _server.withLock { $0 = newValue } }
    }
}

/// Webhook requests waiting for their attempt to become final. `changed` is called for every state change;
/// a waiter checks the store itself, so a change between its check and its wait is never missed.
actor CompletionWaiters {
    private var waiting: [String: [UUID: CheckedContinuation<Void, Never>]] = [:]
    /// Waits in progress by attempt id, readable without a hop to the actor. Counted before a waiter first checks
    /// the attempt, so a change that finds none here was committed before that check, which then sees it.
    private nonisolated let counts = KeyCounts()

    nonisolated func isWaiting(_ id: String) -> Bool { counts.contains(id) }

    func changed(_ id: String) {
        guard let all = waiting.removeValue(forKey: id) else { return }
        for c in all.values { c.resume() }
    }

    private func fire(_ id: String, _ key: UUID) {
        waiting[id]?.removeValue(forKey: key)?.resume()
        if waiting[id]?.isEmpty == true { waiting[id] = nil }
    }

    /// True once `isFinal()` holds, false when `deadline` passes first.
    func wait(for id: String, until deadline: ContinuousClock.Instant, isFinal: @escaping @Sendable () async -> Bool) async -> Bool {
        counts.add(id, 1)
        defer { counts.add(id, -1) }
        while ContinuousClock.now < deadline {
            let key = UUID()
            var tasks: [Task<Void, Never>] = []
            await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
                // Registered before the check, so a change that lands in between still wakes this waiter.
                waiting[id, default: [:]][key] = c
                tasks.append(Task { if await isFinal() { await self.fire(id, key) } })
                tasks.append(Task {
                    try? await Task.sleep(until: deadline, clock: .continuous)
                    await self.fire(id, key)
                })
            }
            for t in tasks { t.cancel() }
            if await isFinal() { return true }
        }
        return await isFinal()
    }
}

/// An attempt token as signed, kept until its attempt ends.
struct IssuedToken: Sendable {
    var token: [UInt8]
    var expiresAt: Double
}

/// Counts by key behind a lock, for state an actor keeps that others must read without a hop to it; a key
/// whose count falls to zero is gone.
final class KeyCounts: Sendable {
    private let counts = Mutex<[String: Int]>([:])
    func add(_ key: String, _ n: Int) {
        counts.withLock { counts in
            let v = counts[key, default: 0] + n
            counts[key] = v > 0 ? v : nil
        }
    }
    func contains(_ key: String) -> Bool { counts.withLock { $0[key] != nil } }
}
