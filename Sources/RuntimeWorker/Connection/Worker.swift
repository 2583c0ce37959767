import Channels
import Foundation
import Synchronization
import JWT
import Logging

public struct WorkerConfiguration: Sendable {
    /// e.g. ws://127.0.0.1:4000/worker (`/websocket` is added when missing).
    public var lightningURL: String
    /// Other replicas of the same Lightning (one database): tried in turn after `lightningURL` fails or is lost; the
    /// attempts under way are rejoined wherever the worker lands.
    public var fallbackLightningURLs: [String] = []
    public var name: String
    public var capacity: Int = 5
    /// The UTF-8 bytes of WORKER_SECRET sign our worker tokens.
    public var workerSecret: String
    /// LIGHTNING_PUBLIC_KEY; nil only with `skipTokenVerification`.
    public var lightningPublicKey: JWTKey?
    public var skipTokenVerification = false
    public var workRoot: String
    public var shutdownTimeout: Duration = .seconds(30)
    public var reconnectBase: Duration = .seconds(1)
    public var reconnectCap: Duration = .seconds(60)
    /// How long a claimed attempt keeps trying to join `run:<id>` when the connection drops before the join is
    /// answered (Lightning restarting): within Lightning's grace period (30 s by default) it is not lost.
    public var attemptJoinWindow: Duration = .seconds(60)
    /// With free slots and no nudge, the worker claims again this long after a claim that got work; after empty ones
    /// it waits twice as long each time, up to ten times this (and at least 10 s). Lightning's `work-available`
    /// nudges cut any wait short.
    public var claimPoll: Duration = .seconds(1)
    /// `GET /livez` stays 200 this long after the connection to Lightning was lost (reconnecting), then 503.
    public var livezGrace: Duration = .seconds(60)
    /// How this worker authenticates (default: the shared secret given to init).
    public var authentication: WorkerAuthentication
    /// Where a registered worker keeps its auth token between starts (mode 0600); nil: nowhere.
    public var credentialFile: String?
    /// A registered worker whose registration is refused waits for another on the admin port's `/register`
    /// (instead of exiting).
    public var waitForRegistration = false
    /// What a SIGTERM does with attempts still running when `shutdownTimeout` ends.
    public var shutdownPolicy: DrainPolicy = .finish
    /// Reported at join, shown by `lightning workers list`, used by `drain --deployment-not`.
    public var deploymentID: String?
    public var group: String?
    public var labels: [String] = []
    public var host = ProcessInfo.processInfo.hostName
    /// This process: fleet control is bound to it, so a restarted worker of the same name starts afresh.
    public let instanceID = UUID().uuidString.lowercased()
    /// Settings given by a flag, the environment or the config file: Lightning's defaults for the worker's group
    /// (sent at join) apply to the others only. Keys as the flags' long names (`capacity`, `shutdown-timeout`, ...).
    public var configuredKeys: Set<String> = []

    public init(lightningURL: String, name: String, workerSecret: String, lightningPublicKey: JWTKey?, workRoot: String) {
        self.lightningURL = lightningURL
        self.name = name
        self.workerSecret = workerSecret
        self.lightningPublicKey = lightningPublicKey
        self.workRoot = workRoot
        authentication = .sharedSecret(workerSecret)
    }

    /// The capacity this machine suggests when none is configured: two attempts per core (steps mostly wait on
    /// the network or the disk), and never more than the memory holds at the default step memory limit.
    public static func machineCapacity(cores: Int = ProcessInfo.processInfo.activeProcessorCount,
                                       memoryBytes: UInt64 = ProcessInfo.processInfo.physicalMemory,
                                       stepMemoryMB: Int = Wire.defaultMemoryLimitMB) -> (capacity: Int, why: String) {
        let byCores = max(1, cores) * 2
        let byMemory = max(1, Int(memoryBytes / UInt64(stepMemoryMB << 20)))
        let capacity = min(byCores, byMemory)
        return (capacity, byCores <= byMemory ? "2 x \(cores) cores" : "\(memoryBytes >> 20) MB / \(stepMemoryMB) MB per step")
    }

    /// The socket URL: OpenFn workers are given `.../worker` and connect to `.../worker/websocket`.
    var socketURL: String { Self.socketURL(lightningURL) }

    static func socketURL(_ base: String) -> String {
        var url = base
        while url.hasSuffix("/") { url.removeLast() }
        return url.hasSuffix("/websocket") ? url : url + "/websocket"
    }
}

public enum WorkerError: Error, CustomStringConvertible {
    case authenticationRefused(Int)
    case credentialRefused(Int)
    case registrationRefused(String)
    case untrustedLightning(String)
    case attemptAbandoned(String)

    /// The HTTP status Lightning refused this worker's token or credential with.
    var refusedStatus: Int? {
        switch self {
        case .authenticationRefused(let s), .credentialRefused(let s): s
        default: nil
        }
    }

    public var description: String {
        switch self {
        case .credentialRefused(let s):
            "Lightning refused this worker's credential (HTTP \(s)): it was revoked, ran out, was superseded or already used; "
                + "Lightning's log says which. Register the worker again: `lightning workers register NAME`"
        case .registrationRefused(let why): "Lightning refused the registration: \(why)"
        case .untrustedLightning(let why):
            "the credential Lightning handed over does not verify with LIGHTNING_PUBLIC_KEY (\(why)): this is not the Lightning "
                + "this worker trusts (a wrong key, or a man in the middle); stopping"
        case .attemptAbandoned(let topic):
            "Lightning refused to rejoin \(topic) after a reconnect: the attempt's remaining events cannot be delivered"
        case .authenticationRefused(let s):
            "Lightning refused this worker's token (HTTP \(s)): check that WORKER_SECRET matches Lightning's"
        }
    }
}

/// The worker: connects outbound to Lightning, claims attempts while it has free slots, and runs each one.
public final class Worker: @unchecked Sendable {
    public let configuration: WorkerConfiguration
    public let metrics = WorkerMetrics()
    let runner: any StepRunning
    /// Step directories kept for reuse (when the runner's steps end whole), under the work root's `steps/`.
    let directories: StepDirectories?
    let logger: Logger
    let client: ChannelClient
    private let lock = NSLock()
    private var running: [String: AttemptControl] = [:]
    private var draining = false
    /// Capacity and shutdown settings in force: the configuration's, or Lightning's group defaults for those the
    /// worker was not given.
    private var capacity: Int
    private var shutdownTimeout: Duration
    private var shutdownPolicy: DrainPolicy
    /// Claiming nothing: paused by Lightning, or drained with `--stay`.
    private var paused = false
    private var drainRunning = false
    /// Registered workers: false until Lightning's credential verified (nothing is claimed before).
    private var trusted: Bool
    let credentials: WorkerCredentials
    /// Parked until a registration arrives (the start, or a refusal while connected: at most a couple at once).
    private var registrationWaiters: [CheckedContinuation<Void, Never>] = []
    /// A resume that came during a `--stay` drain: claims start again when that drain ends.
    private var resumeAfterDrain = false
    /// The running drain's deadline and policy (a later drain with an earlier deadline, SIGTERM's say, takes over).
    private var drainDeadline: ContinuousClock.Instant?
    private var drainPolicy = DrainPolicy.finish
    /// Claims sent and not yet answered: a drain waits for them, so an attempt claimed meanwhile is not dropped.
    private var claimsInFlight = 0
    private var registrationOutcome: [Int: CheckedContinuation<Result<Double, WorkerError>?, Never>] = [:]
    private var registrationCount = 0
    private var nudged: CheckedContinuation<Void, Never>?
    private var nudgeDeadline: ContinuousClock.Instant?
    /// A nudge that came while nobody waited (during a claim): the next wait returns at once instead of missing it.
    private var nudgePending = false
    /// The join of `worker:queue` under which the claim loop, now waiting, last saw itself able to claim (joined, a
    /// slot free); nil when it could not.
    private var waitingClaimableUnder: String?
    private var ticking = false
    private var runEnded = false
    private var tasks: [String: Task<Void, Never>] = [:]
    private var fatal: WorkerError?
    private var queueRegistered = false
    /// Extensions the Lightning we are connected to offered in its `worker:queue` join reply
    /// (`{"extensions": [...]}`); OpenFn's Lightning offers none, and is sent none.
    private var extensions: Set<String> = []
    private var drained = false
    /// Attempts whose run:<id> Lightning refused to rejoin: their events can no longer be delivered.
    private var abandoned: Set<String> = []
    /// Since when there is no connection (nil while connected); from the start until the first connect.
    private var disconnectedSince: ContinuousClock.Instant? = .now
    private var everConnected = false

    public init(configuration: WorkerConfiguration, runner: any StepRunning, logger: Logger = Logger(label: "runtime-worker")) throws {
        self.configuration = configuration
        self.runner = runner
        self.logger = logger
        directories = runner.stepsEndWhole
            ? try StepDirectories(root: configuration.workRoot + "/steps", keep: configuration.capacity * 2) : nil
        let credentials = try WorkerCredentials(name: configuration.name, authentication: configuration.authentication,
                                                file: configuration.credentialFile, trustedKey: configuration.lightningPublicKey, logger: logger)
        self.credentials = credentials
        trusted = credentials.usesSharedSecret
        capacity = configuration.capacity
        shutdownTimeout = configuration.shutdownTimeout
        shutdownPolicy = configuration.shutdownPolicy
        var client = ChannelClient.Configuration(url: configuration.socketURL) {
            // A fresh shared-secret token, or the current registered credential, on every connect.
            credentials.query().merging(["api_version": RuntimeVersion.workerAPI, "worker_version": RuntimeVersion.current, "vsn": "2.0.0"]) { a, _ in a }
        }
        client.fallbackURLs = configuration.fallbackLightningURLs.map(WorkerConfiguration.socketURL)
        client.reconnectBase = configuration.reconnectBase
        client.reconnectCap = configuration.reconnectCap
        self.client = try ChannelClient(configuration: client, logger: Logger(label: "runtime-worker.socket"))
    }

    var freeSlots: Int { lock.withLock { draining || paused || !trusted ? 0 : capacity - running.count } }

    /// What `GET /livez` says: live while connected, or reconnecting for less than `livezGrace`; not once
    /// Lightning refused our token.
    public struct Health: Sendable, Equatable {
        public var live: Bool
        public var detail: String
    }

    public var health: Health {
        lock.withLock {
            if let status = fatal?.refusedStatus { return Health(live: false, detail: "Lightning refused this worker's token (HTTP \(status))") }
            if !registrationWaiters.isEmpty { return Health(live: true, detail: "waiting for a registration token (POST /register)") }
            guard let since = disconnectedSince else {
                return Health(live: true, detail: draining ? "connected, draining" : paused ? "connected, paused" : "connected")
            }
            let gone = ContinuousClock.now - since
            let seconds = Int(gone.components.seconds)
            return gone < configuration.livezGrace
                ? Health(live: true, detail: everConnected ? "reconnecting for \(seconds) s" : "connecting for \(seconds) s")
                : Health(live: false, detail: "no connection to Lightning for \(seconds) s")
        }
    }
    public var runningAttempts: Int { lock.withLock { running.count } }

    /// Runs until `stop()`; throws when Lightning refuses our credentials.
    public func run() async throws {
        defer { lock.withLock { runEnded = true } }
        if configuration.lightningPublicKey == nil {
            logger.warning("RUNNING WITHOUT LIGHTNING_PUBLIC_KEY: attempt tokens are NOT verified. Never do this in production.")
        }
        if credentials.isWaiting {
            logger.notice("no credentials: waiting for a registration token, POSTed to /register on the admin port",
                          metadata: ["worker.name": "\(configuration.name)"])
            await waitForRegistration()
            if lock.withLock({ draining }) {
                lock.withLock { drained = true }
                return
            }
        }
        try client.connect()
        // Only a registered worker has a credential to renew (a shared-secret worker never becomes one).
        let renewals = credentials.usesSharedSecret ? nil : Task { [weak self] in await self?.renewCredentials() }
        defer { renewals?.cancel() }
        let events = Task { [self] () -> WorkerError? in
            for await event in client.events {
                switch event {
                case .connected:
                    logger.info("connected to Lightning", metadata: ["url": "\(client.currentURL)"])
                    let again = lock.withLock {
                        defer { everConnected = true; disconnectedSince = nil }
                        return everConnected
                    }
                    if again { metrics.reconnects.increment() }
                    metrics.connected.record(1)
                    // After a reconnect the client rejoins worker:queue itself.
                    if !lock.withLock({ queueRegistered }) { Task { await joinQueue() } }
                case .disconnected(let reason):
                    logger.warning("lost the connection to Lightning; reconnecting", metadata: ["reason": "\(reason)"])
                    lock.withLock { if disconnectedSince == nil { disconnectedSince = .now } }
                    metrics.connected.record(0)
                case .authenticationFailed(let status):
                    if credentials.usesSharedSecret {
                        logger.error("\(WorkerError.authenticationRefused(status).description)")
                        return fail(.authenticationRefused(status))
                    }
                    let error = WorkerError.credentialRefused(status)
                    finishRegistration(.failure(error))
                    credentials.reset()
                    lock.withLock { trusted = false }
                    guard configuration.waitForRegistration else {
                        logger.error("\(error.description)")
                        return fail(error)
                    }
                    logger.error("\(error.description); waiting for a new registration token on POST /register")
                    await waitForRegistration()
                    client.reconnect()
                case .rejoined(let topic, let response):
                    logger.info("rejoined", metadata: ["topic": "\(topic)"])
                    // After a new registration the client's own rejoin is the exchange: its reply has the credential.
                    if topic == Wire.Topic.queue { queueJoined(response) }
                case .rejoinFailed(let topic, let response):
                    logger.error("could not rejoin", metadata: ["topic": "\(topic)", "response": "\(response.text)"])
                    if topic == Wire.Topic.queue, credentials.isRegistering { registrationRefused(response) }
                    if let id = Wire.Topic.attemptID(fromAttemptTopic: topic) {
                        lock.withLock { _ = abandoned.insert(id) }
                        cancelAttempt(id, reason: "Lightning refused our rejoin")
                    }
                }
            }
            return nil
        }
        var pause = configuration.claimPoll
        let longest = max(configuration.claimPoll * 10, .seconds(10))
        while !lock.withLock({ draining }) {
            let joinRef = client.joinRef(Wire.Topic.queue)
            let claimable = joinRef != nil && freeSlots > 0
            if claimable {
                let demand = freeSlots
                let claimed = await claim(demand: demand)
                pause = claimed > 0 ? configuration.claimPoll : min(pause * 2, longest)
                // All it asked for: there may be more. Fewer: the queue is empty for now, and new work comes with a
                // nudge (an immediate second claim would come back empty, and hold up the attempts' joins behind it).
                if claimed == demand { continue }
            }
            await waitForNudge(upTo: pause, claimableUnder: claimable ? joinRef : nil)
            if let error = lock.withLock({ fatal }) {
                events.cancel()
                throw error
            }
        }
        events.cancel()
        // Stopping: wait for drain() to let the running attempts finish (or stop them).
        while !lock.withLock({ drained }) { try? await Task.sleep(for: .milliseconds(50)) }
    }

    /// Ends the worker with `error` (exit 77): Lightning will not have it.
    private func fail(_ error: WorkerError) -> WorkerError {
        lock.withLock { fatal = error }
        wake()
        return error
    }

    private func noteExtensions(_ reply: JSON) {
        let offered = Set((reply["extensions"]?.arrayValue ?? []).compactMap(\.stringValue))
        lock.withLock { extensions = offered }
    }

    private func joinQueue() async {
        do {
            let reply = try await client.join(topic: Wire.Topic.queue, payload: { [configuration, weak self] in
                // Extensions this worker can use; a Lightning that has them says so in its reply. The rest is what
                // `lightning workers list` shows (OpenFn's Lightning ignores it).
                var p: [String: JSON] = [
                    "capacity": .int(Int64(configuration.capacity)),
                    "configured": .array(configuration.configuredKeys.sorted().map { .string($0) }),
                    "extensions": [.string(Wire.Extension.claimCheckout), .string(Wire.Extension.fleetControl), .string(Wire.Extension.workerRenew)],
                    "host": .string(configuration.host), "instance_id": .string(configuration.instanceID),
                ]
                // The attempts this process holds (our extension): on a (re)join, Lightning puts back in the queue any
                // other attempt it shows claimed by this worker, whose claim reply never arrived (its Lightning went
                // between the claim and the reply). Not sent while a claim is under way: its reply may yet come.
                if let held = self?.heldAttempts() { p["held"] = .array(held.map { .string($0) }) }
                if !configuration.labels.isEmpty { p["labels"] = .array(configuration.labels.map { .string($0) }) }
                if let d = configuration.deploymentID { p["deployment_id"] = .string(d) }
                if let g = configuration.group { p["group"] = .string(g) }
                return .object(p)
            }, onMessage: { [weak self] m in
                if m.event == Wire.Event.workAvailable {
                    self?.runner.prepare()  // work is coming: get the sandbox's slow parts going now
                    self?.wake()
                } else if m.event == Wire.Event.workerControl {
                    self?.control(m.payload.json ?? .null)
                }
            })
            queueJoined(reply)
        } catch ChannelError.joinRefused(let response) where credentials.isRegistering {
            registrationRefused(response)
        } catch {
            logger.error("could not join worker:queue", metadata: ["error": "\(error)"])
        }
    }

    /// `worker:queue` joined (first or again): the offered extensions, and for a registration the credential,
    /// which must verify before anything is claimed.
    private func queueJoined(_ reply: JSON) {
        noteExtensions(reply)
        noteMessageLimit(reply)
        if let defaults = reply["config"]?.objectValue { applyGroupDefaults(defaults) }
        if let credential = reply["credential"], credential != .null {
            do { try credentials.adopt(credential) } catch {
                let failure = WorkerError.untrustedLightning("\(error)")
                logger.critical("\(failure.description)")
                finishRegistration(.failure(failure))
                client.disconnect()
                _ = fail(failure)
                return
            }
            logger.notice("registered with Lightning: worker auth token received", metadata: ["worker.name": "\(configuration.name)"])
        } else if credentials.isRegistering {
            let failure = WorkerError.registrationRefused("this Lightning does not exchange registration tokens (its join reply has no credential)")
            finishRegistration(.failure(failure))
            _ = fail(failure)
            return
        }
        lock.withLock {
            queueRegistered = true
            trusted = true
        }
        finishRegistration(.success(credentials.renewal?.expiresAt ?? 0))
        wakeIfWaitingToClaim()
    }

    /// The largest message this Lightning takes: what it names in its join reply (ours, our extension), else
    /// PROTOCOL.md's 11,000,000 bytes (OpenFn's). Nothing larger is sent: it would close the socket, and its resend
    /// would, for ever.
    private func noteMessageLimit(_ reply: JSON) {
        var limit = Wire.protocolMaxMessageBytes
        if let named = reply[Wire.maxMessageBytesField]?.intValue {
            if named >= Self.smallestMessageLimit {
                limit = Int(named)
            } else {
                logger.warning("Lightning names a message limit too small to run attempts with; assuming \(limit) bytes",
                               metadata: ["max_message_bytes": "\(named)"])
            }
        }
        if client.peerMessageLimit != limit {
            client.peerMessageLimit = limit
            logger.info("Lightning's message limit", metadata: ["bytes": "\(limit)"])
        }
    }

    /// Below this a message could not carry the smallest states and log lines with their envelopes.
    static let smallestMessageLimit: Int64 = 256 * 1024

    /// Lightning's defaults for this worker's group, for the settings it was not given (flags, environment and the
    /// config file come first).
    private func applyGroupDefaults(_ defaults: [String: JSON]) {
        var applied: [String] = []
        lock.withLock {
            let mine = configuration.configuredKeys
            if !mine.contains("capacity"), let c = defaults["capacity"]?.intValue, c > 0, c <= 10_000, Int(c) != capacity {
                capacity = Int(c)
                applied.append("capacity=\(c)")
            }
            if !mine.contains("shutdown-timeout"), let t = defaults["shutdown-timeout"]?.doubleValue, t >= 0, t <= 86400 {
                shutdownTimeout = .milliseconds(Int(t * 1000))
                applied.append("shutdown-timeout=\(t)")
            }
            if !mine.contains("shutdown-policy"), let p = defaults["shutdown-policy"]?.stringValue.flatMap(DrainPolicy.init(rawValue:)) {
                shutdownPolicy = p
                applied.append("shutdown-policy=\(p.rawValue)")
            }
        }
        if !applied.isEmpty {
            logger.notice("settings from Lightning's defaults for this worker's group", metadata: [
                "group": "\(configuration.group ?? "default")", "settings": "\(applied.joined(separator: " "))",
            ])
            wake()
        }
    }

    /// Lightning would not take the registration (used meanwhile, revoked): wait for another one, or end.
    private func registrationRefused(_ response: JSON) {
        let failure = WorkerError.registrationRefused(response["reason"]?.stringValue ?? response.text)
        finishRegistration(.failure(failure))
        credentials.reset()
        client.disconnect()
        guard configuration.waitForRegistration else {
            logger.error("\(failure.description)")
            _ = fail(failure)
            return
        }
        logger.error("\(failure.description); waiting for a new registration token on POST /register")
        Task { [self] in
            await waitForRegistration()
            client.reconnect()
        }
    }

    // MARK: Registration and renewal

    /// Parks until `register(_:)` gives a registration token (or the worker is stopped).
    private func waitForRegistration() async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let stopping = lock.withLock { () -> Bool in
                if draining { return true }
                registrationWaiters.append(c)
                return false
            }
            if stopping { c.resume() }
        }
    }

    public enum RegistrationResult: Sendable, Equatable {
        /// Registered; the auth token runs out at this time (seconds since the epoch).
        case registered(expiresAt: Double)
        case refused(status: Int, reason: String)
    }

    /// `POST /register` on the admin port: a registration token for a worker that waits for one. It is checked
    /// here first (signed with the trusted key, for this worker's name, not expired), then presented to Lightning;
    /// the answer says how that went (it waits up to `timeout` for Lightning).
    public func register(_ token: String, timeout: Duration = .seconds(30)) async -> RegistrationResult {
        do { try credentials.checkRegistration(token) } catch {
            return .refused(status: 400, reason: "this registration token cannot be used here: \(error)")
        }
        let outcome: Result<Double, WorkerError>? = await withCheckedContinuation { c in
            let waiters: [CheckedContinuation<Void, Never>] = lock.withLock {
                defer { registrationWaiters = [] }
                return registrationWaiters
            }
            guard !waiters.isEmpty else { return c.resume(returning: nil) }
            credentials.setRegistration(token)
            let id = lock.withLock { () -> Int in
                registrationCount += 1
                registrationOutcome[registrationCount] = c
                return registrationCount
            }
            for w in waiters { w.resume() }
            Task { [weak self] in
                try? await Task.sleep(for: timeout)
                self?.finishRegistration(.failure(.registrationRefused("Lightning did not answer within \(timeout)")), only: id)
            }
        }
        switch outcome {
        case nil: return .refused(status: 409, reason: "this worker is not waiting for a registration: it already has credentials")
        case .success(let expiresAt)?: return .registered(expiresAt: expiresAt)
        case .failure(let error)?: return .refused(status: 502, reason: error.description)
        }
    }

    /// Answers the waiting `register` calls (or only the one numbered `only`).
    private func finishRegistration(_ result: Result<Double, WorkerError>, only: Int? = nil) {
        let waiting = lock.withLock { () -> [CheckedContinuation<Result<Double, WorkerError>?, Never>] in
            if let only { return registrationOutcome.removeValue(forKey: only).map { [$0] } ?? [] }
            defer { registrationOutcome = [:] }
            return Array(registrationOutcome.values)
        }
        for c in waiting { c.resume(returning: result) }
    }

    /// Renews a registered credential over the socket at half its lifetime (`worker:renew`), and again every few
    /// seconds while that fails; the new token is checked against the trusted key like the first.
    private func renewCredentials() async {
        while !Task.isCancelled {
            try? await Task.sleep(for: .milliseconds(500))
            guard let due = credentials.renewal, Date().timeIntervalSince1970 >= due.after,
                lock.withLock({ queueRegistered && trusted }), client.isJoined(Wire.Topic.queue)
            else { continue }
            do {
                let r = try await client.push(topic: Wire.Topic.queue, event: Wire.Event.workerRenew, payload: [:])
                guard r.isOK else {
                    logger.warning("Lightning did not renew the worker credential", metadata: ["response": "\(r.response.text)"])
                    credentials.postponeRenewal(by: 5)
                    continue
                }
                try credentials.adopt(r.response)
                metrics.credentialRenewals.increment()
                logger.debug("worker credential renewed")
            } catch let error as JWTError {
                logger.critical("\(WorkerError.untrustedLightning("\(error)").description)")
                client.disconnect()
                _ = fail(.untrustedLightning("\(error)"))
                return
            } catch {
                credentials.postponeRenewal(by: 2)
            }
        }
    }

    // MARK: Fleet control

    /// `worker:control` from Lightning: drain (with a policy and a deadline; exit afterwards unless `stay`),
    /// pause or resume.
    func control(_ payload: JSON) {
        switch payload["action"]?.stringValue {
        case "pause":
            lock.withLock { paused = true }
            logger.notice("paused by Lightning: claiming nothing until resumed")
        case "resume":
            let resumed = lock.withLock { () -> Bool in
                guard !draining else { return false }
                guard !drainRunning else {
                    resumeAfterDrain = true
                    return false
                }
                paused = false
                return true
            }
            if resumed {
                logger.notice("resumed by Lightning")
                wake()
            } else {
                logger.notice("resume noted: claiming starts again when the running drain ends (unless the worker is shutting down)")
            }
        case "drain":
            let policy = payload["policy"]?.stringValue.flatMap(DrainPolicy.init(rawValue:)) ?? .finish
            let deadline = Duration.milliseconds(max(0, payload["deadline_ms"]?.intValue ?? 0))
            let stay = payload["stay"] == .bool(true)
            Task { await drain(timeout: deadline, policy: policy, exit: !stay, origin: "the drain's deadline") }
        default:
            logger.notice("unknown worker:control action", metadata: ["payload": "\(payload.text)"])
        }
    }

    /// Waits for a nudge (work available, a slot freed), or at most `pause`. The pause is kept by one ticker task
    /// for the worker's life (a tick every `tick`) instead of a timer task per wait, which cost a timer
    /// registration per claim and, left running after an early nudge, woke a later wait for nothing.
    /// `claimableUnder`: the queue's join under which the loop saw itself able to claim before it chose to wait (nil:
    /// it could not). When it can claim now and could not then, or the queue was joined again since, it does not wait.
    private func waitForNudge(upTo pause: Duration, claimableUnder: String?) async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let (startTicker, pending) = lock.withLock { () -> (Bool, Bool) in
                if nudgePending || fatal != nil || draining {
                    nudgePending = false
                    return (false, true)
                }
                nudged = c
                nudgeDeadline = .now + pause
                waitingClaimableUnder = claimableUnder
                defer { ticking = true }
                return (!ticking, false)
            }
            if pending {
                c.resume()
                return
            }
            // Checked after the continuation is in place: a change from here on finds it and wakes it.
            wakeIfWaitingToClaim()
            if startTicker {
                Task { [weak self] in
                    while true {
                        try? await Task.sleep(for: Worker.tick)
                        guard let self else { return }
                        let (due, ended) = lock.withLock { (nudgeDeadline.map { $0 <= .now } ?? false, runEnded) }
                        if ended {
                            lock.withLock { ticking = false }
                            return
                        }
                        if due { wake() }
                    }
                }
            }
        }
    }

    static let tick: Duration = .milliseconds(100)

    /// Wakes the claim loop if it is waiting and can claim now where it could not when it chose to wait (not joined
    /// yet, no slot free), or `worker:queue` was joined again since. The queue's join completing is not news to a
    /// loop that has claimed under that join: it saw the join itself. (With `wake`, a
    /// join noted while the first claim was under way left a nudge pending, and a claim that got less than it asked
    /// for was followed at once by another: ClaimAndJoinTests.shortClaimWaits failed so in CI.)
    private func wakeIfWaitingToClaim() {
        // Read before the worker's lock (the client's lock is never taken inside it).
        let joinRef = client.joinRef(Wire.Topic.queue)
        let slots = freeSlots
        let c: CheckedContinuation<Void, Never>? = lock.withLock {
            // Nothing new for a loop that saw itself able to claim under this same join; nothing to do for one that
            // still cannot.
            guard let c = nudged, joinRef != nil, slots > 0, joinRef != waitingClaimableUnder else {
                return nil
            }
            nudged = nil
            nudgeDeadline = nil
            return c
        }
        c?.resume()
    }

    func wake() {
        let c: CheckedContinuation<Void, Never>? = lock.withLock {
            let c = nudged
            nudged = nil
            nudgeDeadline = nil
            if c == nil { nudgePending = true }
            return c
        }
        c?.resume()
    }

    /// Claims up to `demand` attempts and starts them. Returns how many it started (one whose token it refused is
    /// not: a worker that refuses every token backs off instead of draining the queue into refusals).
    private func claim(demand: Int) async -> Int {
        lock.withLock { claimsInFlight += 1 }
        defer { lock.withLock { claimsInFlight -= 1 } }
        let reply: ChannelClientReply
        // The attempts' joins go out from the socket's service thread as the reply arrives (`onReply`), before this
        // task runs again: through the cooperative pool, the reply and then the join each waited for a thread (perf
        // trace: the join left 0.5-1.2 ms after the reply). The join stays the gate that refuses a stale claim.
        let accepted = Mutex<[AcceptedRun]?>(nil)
        do {
            reply = try await client.push(topic: Wire.Topic.queue, event: Wire.Event.claim,
                                          payload: ClaimRequest(demand: demand, workerName: configuration.name).wire,
                                          onReply: { [self] reply in
                                              // A large claim (up to 1,000) would hold the service thread for its
                                              // token checks: the claim's task takes it.
                                              guard (reply.response["runs"]?.arrayValue?.count ?? 0) <= Self.joinsFromReplyMax
                                              else { return }
                                              let runs = acceptRuns(reply)
                                              accepted.withLock { $0 = runs }
                                          })
        } catch {
            return 0
        }
        guard reply.isOK, reply.response["runs"]?.arrayValue != nil else {
            logger.warning("claim refused", metadata: ["response": "\(reply.response.text)"])
            return 0
        }
        let runs = accepted.withLock { $0 } ?? acceptRuns(reply)
        if !runs.isEmpty { runner.prepare() }
        var started = 0
        for run in runs {
            guard case .joining(let id, let join, let control, let prefetched, let claimedAt) = run else {
                if case .refused(let id, let reason) = run { Task { await refuse(id, reason: reason) } }
                continue
            }
            let task = Task { [self] in
                await runAttempt(id: id, join: join, control: control, claimedAt: claimedAt, prefetched: prefetched) {
                    // The slot is free once run:complete is acknowledged; leaving run:<id> follows on its own.
                    lock.withLock { running[id] = nil }
                    metrics.running.record(runningAttempts)
                    wake()
                }
                lock.withLock { tasks[id] = nil }
            }
            lock.withLock { tasks[id] = task }
            started += 1
        }
        return started
    }

    /// An attempt of a claim's reply: joining its channel, or refused (its token did not verify).
    enum AcceptedRun: Sendable {
        case joining(id: String, join: Task<Void, any Error>, control: AttemptControl, prefetched: Prefetched,
                     claimedAt: ContinuousClock.Instant)
        case refused(id: String, reason: String)
    }

    /// The most attempts of one claim joined from the socket's service thread (an RS256 check each, about 30 µs).
    static let joinsFromReplyMax = 8

    /// Checks each attempt's token and starts joining `run:<id>` for those that verify. Runs on the socket's service
    /// thread (a join's frame is queued there without a hop), or in the claim's task for a claim of more than
    /// `joinsFromReplyMax` attempts.
    private func acceptRuns(_ reply: ChannelClientReply) -> [AcceptedRun] {
        guard reply.isOK, let runs = reply.response["runs"]?.arrayValue else { return [] }
        var accepted: [AcceptedRun] = []
        for run in runs {
            guard let id = run["id"]?.stringValue, let token = run["token"]?.stringValue else { continue }
            do { try Self.checkAttemptToken(token, attemptID: id, key: configuration.lightningPublicKey) } catch {
                logger.error("refusing an attempt whose token does not verify", metadata: ["attempt.id": "\(id)", "error": "\(error)"])
                metrics.tokensRefused.increment()
                accepted.append(.refused(id: id, reason: "\(error)"))
                continue
            }
            // claim:checkout: the plan and the input dataclip may come with the claim.
            let prefetched = Prefetched(plan: run["plan"], dataclip: run["dataclip"])
            let control = AttemptControl()
            lock.withLock { running[id] = control }
            metrics.running.record(runningAttempts)
            let claimedAt = ContinuousClock.now
            // Runs on this thread up to the join frame's queueing.
            let join = Task.immediate { [self] in
                try await joinAttempt(topic: Wire.Topic.attempt(id), token: token, id: id, log: logger.with(["attempt.id": "\(id)"]))
            }
            accepted.append(.joining(id: id, join: join, control: control, prefetched: prefetched, claimedAt: claimedAt))
        }
        return accepted
    }

    /// Section 4: an attempt runs only if its token verifies with Lightning's public key (RS256, iss Lightning,
    /// nbf/exp with 5 s leeway) and names the claimed attempt. No key: only with --insecure-skip-token-verification.
    static func checkAttemptToken(_ token: String, attemptID: String, key: JWTKey?) throws {
        guard let key else { return }
        _ = try AttemptTokenClaims.verify(token, key: key, attemptID: attemptID)
    }

    /// Tells Lightning that this worker will not run a claimed attempt (our extension, sent only to a Lightning
    /// that offers it): it ends the attempt at once instead of leaving it claimed until the timeout.
    private func refuse(_ id: String, reason: String) async {
        // An unknown event would crash the queue channel of a Lightning that does not offer this one.
        guard lock.withLock({ extensions.contains(Wire.Extension.attemptRefused) }) else { return }
        do {
            let r = try await client.push(topic: Wire.Topic.queue, event: Wire.Event.attemptRefused,
                                          payload: ["id": .string(id), "reason": .string("attempt token refused: \(reason)")])
            if !r.isOK { logger.notice("Lightning did not take the refusal", metadata: ["attempt.id": "\(id)", "response": "\(r.response.text)"]) }
        } catch {
            logger.warning("could not tell Lightning of the refusal", metadata: ["attempt.id": "\(id)", "error": "\(error)"])
        }
    }

    /// The attempts this process holds, or nil while a claim is under way (what it will hold is not known yet).
    func heldAttempts() -> [String]? {
        lock.withLock { claimsInFlight > 0 ? nil : running.keys.sorted() }
    }

    func cancelAttempt(_ id: String, reason: String) {
        lock.withLock { running[id] }?.cancel(reason: reason)
    }

    private func runAttempt(id: String, join: Task<Void, any Error>, control: AttemptControl, claimedAt: ContinuousClock.Instant,
                            prefetched: Prefetched, finished: () -> Void) async {
        let topic = Wire.Topic.attempt(id)
        let log = logger.with(["attempt.id": "\(id)"])
        var wire = ChannelEventSink(client: client, topic: topic)
        // Abandoned when Lightning refused the rejoin, or when the worker is shutting down with no connection to come
        // (its credential was refused): the events cannot be delivered, and waiting for them would hang the shutdown.
        wire.isAbandoned = { [weak self] in
            guard let self else { return true }
            let (refused, stopping) = lock.withLock { (abandoned.contains(id), draining) }
            return refused || (stopping && !client.wantsConnection)
        }
        // The join (under way since the claim) is the gate that refuses a stale claim: the attempt is checked out and
        // its first step prepared meanwhile, but no event goes out and no step starts before Lightning accepts it.
        let gate: @Sendable () async throws -> Void = { try await join.value }
        let sink = AttemptOutbox(wire, gate: gate)
        do {
            let checkout = try await AttemptCheckout.fetch(plan: { try await sink.send(Wire.Event.fetchPlan, [:]) },
                                                           send: { try await sink.send($0, $1) }, prefetched: prefetched)
            log.info("running attempt", metadata: ["steps.planned": "\(checkout.plan.jobs.count)"])
            var executor = AttemptExecutor(attemptID: id, plan: checkout.plan, input: checkout.input,
                                           credentials: checkout.credentials, credentialErrors: checkout.credentialErrors,
                                           runner: runner, events: sink, workRoot: configuration.workRoot, control: control, logger: log)
            executor.metrics = metrics
            executor.directories = directories
            executor.messageLimit = client.peerMessageLimit
            executor.startGate = gate
            metrics.record(metrics.claimToStart, ContinuousClock.now - claimedAt)
            let result = try await executor.run()
            metrics.attemptFinished(result.reason.rawValue)
            log.info("attempt finished", metadata: ["reason": "\(result.reason.rawValue)"])
        } catch {
            if case .failure(let joinError) = await join.result {
                // Nothing of the attempt ran and nothing was sent: it is Lightning's to give out again.
                log.error("could not join the attempt's channel; it is not run", metadata: ["error": "\(joinError)"])
            } else if let failure = error as? CheckoutFailure {
                // The attempt cannot run: it still ends, with a run:complete that says why.
                log.error("attempt could not be checked out", metadata: ["error": "\(failure.message)"])
                metrics.attemptFinished(failure.complete.reason.rawValue)
                await endEarly(sink, failure.complete, log: log)
            } else if case WorkerError.attemptAbandoned(let t) = error {
                log.error("attempt abandoned", metadata: ["topic": "\(t)"])
            } else {
                log.error("attempt failed in the worker", metadata: ["error": "\(error)"])
                await endEarly(sink, AttemptComplete(reason: .exception, errorType: ErrorType.crash,
                                                     errorMessage: "the worker failed while running the attempt: \(error)"), log: log)
            }
        }
        finished()
        await client.leave(topic: topic)
        lock.withLock { _ = abandoned.remove(id) }
    }

    /// Joins `run:<id>`, trying again while the connection is down (Lightning restarting after it answered our
    /// claim) for up to `attemptJoinWindow`. A refusal is final.
    private func joinAttempt(topic: String, token: String, id: String, log: Logger) async throws {
        let deadline = ContinuousClock.now + configuration.attemptJoinWindow
        var pause: Duration = .milliseconds(100)
        while true {
            do {
                try await client.join(topic: topic, payload: { ["token": .string(token)] }, onMessage: { [weak self] m in
                    if m.event == Wire.Event.cancel {
                        self?.cancelAttempt(id, reason: m.payload.json?["reason"]?.stringValue ?? "cancelled by Lightning")
                    }
                })
                return
            } catch ChannelError.joinRefused(let response) {
                throw ChannelError.joinRefused(response)
            } catch {
                // The client's own rejoin after a reconnect may have completed the join meanwhile.
                if client.isJoined(topic) { return }
                guard ContinuousClock.now + pause < deadline else { throw error }
                log.notice("joining the attempt's channel failed; trying again", metadata: ["error": "\(error)"])
                try await Task.sleep(for: pause)
                pause = min(pause * 2, .seconds(2))
            }
        }
    }

    /// Ends an attempt that could not run (or broke between steps) with `run:start` (a resend changes nothing)
    /// and a `run:complete` that says why.
    private func endEarly(_ sink: AttemptOutbox, _ complete: AttemptComplete, log: Logger) async {
        do {
            _ = try await sink.send(Wire.Event.attemptStart, ["versions": ["runtime-worker": .string(RuntimeVersion.current)],
                                                              "timestamp": .string(Timestamp.now())])
            let r = try await sink.send(Wire.Event.attemptComplete, complete.wire)
            if !r.isOK { log.error("Lightning refused the run:complete", metadata: ["response": "\(r.response.text)"]) }
        } catch {
            log.error("could not end the attempt", metadata: ["error": "\(error)"])
        }
    }

    /// SIGTERM: stops claiming, lets running attempts finish up to the shutdown timeout, then applies the
    /// shutdown policy to those left, and ends.
    public func drain() async {
        let (timeout, policy) = lock.withLock { (shutdownTimeout, shutdownPolicy) }
        await drain(timeout: timeout, policy: policy, exit: true, origin: "--shutdown-timeout")
    }

    /// Stops claiming; running attempts get `timeout` to finish, then those left are stopped (`finish`), stopped and
    /// put back (`requeue`) or cancelled (`cancel`). Then the worker ends (`exit`), or stays connected claiming
    /// nothing until resumed. A drain asked for while one runs only makes that one end the worker, if asked to.
    public func drain(timeout: Duration, policy: DrainPolicy, exit: Bool, origin: String) async {
        let deadline = ContinuousClock.now + timeout
        let first = lock.withLock { () -> Bool in
            if exit { draining = true } else { paused = true }
            // The earliest deadline rules, with its policy: SIGTERM during a long drain keeps to --shutdown-timeout.
            if drainDeadline.map({ deadline < $0 }) ?? true {
                drainDeadline = deadline
                drainPolicy = policy
            }
            defer { drainRunning = true }
            return !drainRunning
        }
        wake()
        let parked = lock.withLock { () -> [CheckedContinuation<Void, Never>] in
            defer { if exit { registrationWaiters = [] } }
            return exit ? registrationWaiters : []
        }
        for w in parked { w.resume() }
        if exit {
            logger.notice("shutting down: claiming nothing more; running attempts get \(timeout) to finish",
                          metadata: ["attempts.running": "\(runningAttempts)", "policy": "\(policy.rawValue)"])
        } else {
            logger.notice("draining: claiming nothing more; running attempts get \(timeout) to finish, then stay connected",
                          metadata: ["attempts.running": "\(runningAttempts)", "policy": "\(policy.rawValue)"])
        }
        guard first else { return }
        func busy() -> Bool { lock.withLock { !running.isEmpty || claimsInFlight > 0 } }
        while busy(), ContinuousClock.now < lock.withLock({ drainDeadline ?? deadline }) { try? await Task.sleep(for: .milliseconds(50)) }
        // A claim still on its way is let arrive (it is bounded by its push timeout), so what it brings is stopped too.
        while lock.withLock({ claimsInFlight > 0 }) { try? await Task.sleep(for: .milliseconds(50)) }
        let (left, finalPolicy) = lock.withLock { (Array(running.values), drainPolicy) }
        for c in left {
            c.grace = .seconds(2)
            switch finalPolicy {
            case .finish: c.shutDown(reason: "the worker shut down before the attempt finished (\(origin) ran out)")
            case .cancel: c.stop(reason: "cancelled: the worker was drained (policy cancel) before the attempt finished", kind: .cancel)
            case .requeue: c.stop(reason: "stopped by a drain of the worker (policy requeue); Lightning puts it back as a new attempt", kind: .requeue)
            }
        }
        if !left.isEmpty { logger.notice("drain deadline: stopped \(left.count) attempt(s)", metadata: ["policy": "\(finalPolicy.rawValue)"]) }
        for t in lock.withLock({ Array(tasks.values) }) { await t.value }
        let (end, resume) = lock.withLock { () -> (Bool, Bool) in
            drainRunning = false
            drainDeadline = nil
            let resume = resumeAfterDrain && !draining
            resumeAfterDrain = false
            if resume { paused = false }
            return (draining, resume)
        }
        if end {
            client.close()
            lock.withLock { drained = true }
        } else if resume {
            logger.notice("drained; resumed as asked meanwhile: claiming again")
            wake()
        } else {
            logger.notice("drained: staying connected, claiming nothing until resumed")
        }
    }
}

/// Why an attempt could not be checked out: it ends with this `run:complete`.
struct CheckoutFailure: Error {
    var complete: AttemptComplete
    var message: String { complete.errorMessage ?? "" }
    init(_ errorType: String, _ message: String) {
        complete = AttemptComplete(reason: .exception, errorType: errorType, errorMessage: message)
    }
}

/// What a claim reply carried with the attempt (claim:checkout): used instead of fetching it, when it can be read.
struct Prefetched: Sendable {
    var plan: JSON?
    var dataclip: JSON?
    static let none = Prefetched(plan: nil, dataclip: nil)
}

/// Everything an attempt needs before its first step (PROTOCOL.md 5): the plan, its input dataclip (a binary
/// reply holding a JSON object) and its credentials. A plan or dataclip that cannot be loaded is a
/// `CheckoutFailure`; a credential that cannot be loaded fails only the jobs that use it, with the reason.
struct AttemptCheckout {
    var plan: Plan
    var input: [UInt8]
    var credentials: [String: [UInt8]] = [:]
    var credentialErrors: [String: String] = [:]

    static func fetch(plan fetchPlan: () async throws -> ChannelClientReply,
                      send: (String, JSON) async throws -> ChannelClientReply,
                      prefetched: Prefetched = .none) async throws -> AttemptCheckout {
        // The claim's plan when it reads; its dataclip only with it (both come from the same Lightning reply).
        let plan: Plan
        var input: [UInt8]? = nil
        if let claimed = try? prefetched.plan.map(Plan.init(wire:)) {
            plan = claimed
            input = prefetched.dataclip.flatMap { $0.objectValue != nil ? $0.encoded() : nil }
        } else {
            let planReply = try await fetchPlan()
            guard planReply.isOK else {
                throw CheckoutFailure(ErrorType.plan, "fetch:plan was refused: \(planReply.response.text)")
            }
            do { plan = try Plan(wire: planReply.response) } catch {
                throw CheckoutFailure(ErrorType.plan,
                                      "the plan could not be read: \((error as? DecodingError)?.fieldDescription ?? "\(error)")")
            }
        }
        if input == nil { input = try await dataclip(plan, send: send) }
        let checkout = AttemptCheckout(plan: plan, input: input ?? [])
        return try await credentials(checkout, send: send)
    }

    /// The input dataclip: a binary reply holding a JSON object.
    static func dataclip(_ plan: Plan, send: (String, JSON) async throws -> ChannelClientReply) async throws -> [UInt8] {
        let reply = try await send(Wire.Event.fetchDataclip, ["id": .string(plan.dataclipID)])
        guard reply.isOK else {
            throw CheckoutFailure(ErrorType.dataclip, "fetch:dataclip of \(plan.dataclipID) was refused: \(reply.response.text)")
        }
        guard let input = reply.binary else {
            throw CheckoutFailure(ErrorType.dataclip,
                                  "fetch:dataclip of \(plan.dataclipID) was not answered with a binary frame: \(reply.response.text)")
        }
        guard (try? JSON.parse(input))?.objectValue != nil else {
            throw CheckoutFailure(ErrorType.dataclip, "the input dataclip \(plan.dataclipID) is not a JSON object")
        }
        return input
    }

    /// The credentials of the plan's jobs; one that cannot be loaded is recorded with the reason.
    static func credentials(_ base: AttemptCheckout, send: (String, JSON) async throws -> ChannelClientReply) async throws
        -> AttemptCheckout
    {
        var checkout = base
        let plan = base.plan
        for credentialID in Set(plan.jobs.compactMap(\.credentialID)).sorted() {
            let r = try await send(Wire.Event.fetchCredential, ["id": .string(credentialID)])
            if r.isOK, r.response.objectValue != nil {
                checkout.credentials[credentialID] = r.response.encoded()
            } else {
                checkout.credentialErrors[credentialID] = r.isOK
                    ? "fetch:credential of \(credentialID) did not return a JSON object"
                    : "fetch:credential of \(credentialID) was refused: \(r.response.text)"
            }
        }
        return checkout
    }
}

/// Sends an attempt's events over the channel, in order; across a reconnect it waits for the rejoin and
/// sends again, so the step keeps running and nothing is lost. The executor sends one event at a time and
/// waits for its reply, so this one-deep outbox keeps the order, and the log batcher in front of it is the
/// bounded buffer (2,000 lines) whose backpressure reaches the step's pipe. An event is only "sent" once its
/// reply arrived; a reply lost after Lightning committed makes that one event arrive twice (step and attempt
/// events carry their step id / attempt id, so Lightning can tell; a log batch may repeat).
struct ChannelEventSink: AttemptEventSink {
    let topicName: String
    let push: @Sendable (String, AttemptEventPayload) async throws -> ChannelClientReply
    var retryPause: Duration = .milliseconds(200)
    /// True once Lightning refused to rejoin the attempt's topic: sending stops with an error instead of
    /// retrying forever.
    var isAbandoned: @Sendable () -> Bool = { false }

    init(client: ChannelClient, topic: String) {
        topicName = topic
        push = { event, payload in
            switch payload {
            case .value(let json): try await client.push(topic: topic, event: event, payload: json, timeout: .seconds(30))
            case .encoded(let bytes): try await client.push(topic: topic, event: event, encodedPayload: bytes, timeout: .seconds(30))
            }
        }
    }

    init(topic: String = "run:test", retryPause: Duration,
         push: @escaping @Sendable (String, JSON) async throws -> ChannelClientReply) {
        topicName = topic
        self.push = { event, payload in
            switch payload {
            case .value(let json): try await push(event, json)
            case .encoded(let bytes): try await push(event, try JSON.parse(bytes))
            }
        }
        self.retryPause = retryPause
    }

    func send(_ event: String, _ payload: JSON) async throws -> ChannelClientReply {
        try await send(event, .value(payload))
    }

    func send(_ event: String, encoded payload: [UInt8]) async throws -> ChannelClientReply {
        try await send(event, .encoded(payload))
    }

    private func send(_ event: String, _ payload: AttemptEventPayload) async throws -> ChannelClientReply {
        while true {
            if isAbandoned() { throw WorkerError.attemptAbandoned(topicName) }
            do {
                let r = try await push(event, payload)
                if !r.isOK && r.response["reason"] == "unmatched topic" {
                    // Reconnected, but run:<id> is not rejoined yet.
                    try await Task.sleep(for: retryPause)
                    continue
                }
                if !r.isOK, let seconds = r.response["retry_after"]?.intValue, seconds > 0 {
                    // Lightning stored nothing and asks for the event again later (its disk is full): kept, not
                    // dropped, and sent again every `retryPause * 10` (at most the time it names).
                    try await Task.sleep(for: min(retryPause * 10, .seconds(seconds)))
                    continue
                }
                return r
            } catch ChannelError.notConnected, ChannelError.closed, ChannelError.timeout {
                try await Task.sleep(for: retryPause)
            }
        }
    }
}

extension Logger {
    func with(_ metadata: Logger.Metadata) -> Logger {
        var l = self
        for (k, v) in metadata { l[metadataKey: k] = v }
        return l
    }
}
