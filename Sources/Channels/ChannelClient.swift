internal import CLibWebSockets
import Foundation
import Logging

/// A reply to a push: `status` ("ok" or "error") with a JSON `response`, or raw bytes from a binary reply.
public struct ChannelClientReply: Sendable {
    public var status: String
    public var response: JSON
    public var binary: [UInt8]?
    public var isOK: Bool { status == "ok" }

    public init(status: String, response: JSON, binary: [UInt8]? = nil) {
        self.status = status
        self.response = response
        self.binary = binary
    }
}

/// A Phoenix Channels V2 client on libwebsockets: joins, pushes with replies, incoming pushes, heartbeats,
/// reconnection with exponential backoff and jitter, and rejoining after a reconnect.
public final class ChannelClient: LWSCallbackTarget, @unchecked Sendable {
    public struct Configuration: Sendable {
        /// `ws://` or `wss://` URL of the socket endpoint (query parameters allowed).
        public var url: String
        /// More URLs of the same service (other replicas behind one database), all `ws://` or all `wss://` like
        /// `url`: after a failed or lost connection the next one is tried, in turn, with the same backoff.
        public var fallbackURLs: [String] = []
        /// Extra query parameters, asked for on every connect (so a fresh token can be minted each time).
        public var query: @Sendable () -> [String: String] = { [:] }
        public var heartbeatInterval: Duration = .seconds(30)
        public var reconnectBase: Duration = .seconds(1)
        public var reconnectCap: Duration = .seconds(60)
        /// Fraction of each delay added at random (0.25: up to 25 % more).
        public var jitter: Double = 0.25
        /// The largest message taken from the server (100 MB, as Node's `ws` takes by default): well over what a
        /// server sends (Lightning answers `fetch:dataclip` with a webhook body of up to its 11 MB request limit,
        /// plus the frame's header); a message over it closes the socket, and a server that sends it again on the
        /// next one would keep the client reconnecting for ever.
        public var maxMessageBytes = 100_000_000
        /// The largest message the server takes, until it says otherwise (`peerMessageLimit`): 11,000,000 bytes, what
        /// PROTOCOL.md gives for OpenFn's Lightning. A larger message is refused here with `messageTooLarge`: sent, it
        /// would close the socket, and so would its resend on every socket after.
        public var peerMaxMessageBytes = 11_000_000
        /// CA file to verify a `wss://` server with; nil uses the system's.
        public var caPath: String?
        /// Client certificate and key for mutual TLS.
        public var certificatePath: String?
        public var privateKeyPath: String?
        /// Accept self-signed server certificates (tests only).
        public var allowSelfSigned = false

        public init(url: String, query: @escaping @Sendable () -> [String: String] = { [:] }) {
            self.url = url
            self.query = query
        }
    }

    public enum Event: Sendable, Equatable {
        case connected
        case disconnected(reason: String)
        /// The server answered the upgrade with 401 or 403: no automatic retry.
        case authenticationFailed(status: Int)
        /// Rejoined after a reconnect; `response` is the join reply.
        case rejoined(topic: String, response: JSON)
        case rejoinFailed(topic: String, response: JSON)
    }

    public let configuration: Configuration
    public let events: AsyncStream<Event>
    private let eventSink: AsyncStream<Event>.Continuation
    private let logger: Logger
    private let loop = ServiceLoop(name: "channels-client")
    private let cstrings = CStrings()
    private var protocols: UnsafeMutablePointer<lws_protocols>?
    private typealias Target = (tls: Bool, host: String, port: Int, path: String)
    /// `url`, then `fallbackURLs`; `current` is the one connected or tried last (service thread; read under `lock`).
    private let targets: [Target]
    private let urls: [String]
    private var current = 0
    private var target: Target { targets[current] }

    // Shared state (lock).
    private let lock = Lock()
    /// Refs, joins, the heartbeat and the requests waiting for replies (the protocol, without the socket).
    private var state = PhoenixClientState<ReplyWaiter>()
    /// A sweeper task checks the pending requests' deadlines (every `sweepInterval`, only while some are pending)
    /// instead of a timer task per request: a request then costs no timer registration and cancellation (about four
    /// thread wake-ups each, most of a small push's cost on the worker).
    private var sweeping = false
    static let sweepInterval: Duration = .milliseconds(50)
    private var wantConnected = false
    /// `close()` was called: nothing more, heartbeats included.
    private var finished = false
    private var attempts = 0
    private var peerLimit: Int

    // Service-thread state.
    private var wsi: OpaquePointer?
    private var queue: [[UInt8]] = []
    /// Masking keys for the frames this client sends (service thread).
    private var maskingKeys = MaskingKeys()
    private var rx: [UInt8] = []
    private var rxBinary = false
    private var closeRequested = false

    public init(configuration: Configuration, logger: Logger = Logger(label: "channels.client")) throws {
        self.configuration = configuration
        self.logger = logger
        peerLimit = configuration.peerMaxMessageBytes
        (events, eventSink) = AsyncStream.makeStream(bufferingPolicy: .bufferingNewest(256))
        urls = [configuration.url] + configuration.fallbackURLs
        targets = try urls.map(Self.parse)
        guard Set(targets.map(\.tls)).count == 1 else {
            throw ChannelError.invalidURL("\(urls.joined(separator: ", ")): all ws:// or all wss://")
        }
    }

    /// The URL connected to, or being tried.
    public var currentURL: String { lock.withLock { urls[current] } }

    static func parse(_ url: String) throws -> (tls: Bool, host: String, port: Int, path: String) {
        guard let c = URLComponents(string: url), let scheme = c.scheme, let host = c.host,
            scheme == "ws" || scheme == "wss"
        else { throw ChannelError.invalidURL(url) }
        let tls = scheme == "wss"
        var path = c.percentEncodedPath.isEmpty ? "/" : c.percentEncodedPath
        if let q = c.percentEncodedQuery, !q.isEmpty { path += "?" + q }
        return (tls, host, c.port ?? (tls ? 443 : 80), path)
    }

    /// Starts connecting (and reconnecting until `close()`).
    public func connect() throws {
        let protocols = UnsafeMutablePointer<lws_protocols>.allocate(capacity: 2)
        protocols.initialize(repeating: lws_protocols(), count: 2)
        protocols[0].name = cstrings.make("phoenix")
        protocols[0].callback = lwsCallbackFunction
        protocols[0].rx_buffer_size = 16 * 1024
        self.protocols = protocols
        var info = lws_context_creation_info()
        info.port = -1  // CONTEXT_PORT_NO_LISTEN
        info.protocols = UnsafePointer(protocols)
        info.user = Unmanaged.passUnretained(self as AnyObject).toOpaque()
        info.options = clws_client_options(target.tls ? 1 : 0)
        info.client_ssl_ca_filepath = cstrings.make(configuration.caPath)
        info.client_ssl_cert_filepath = cstrings.make(configuration.certificatePath)
        info.client_ssl_private_key_filepath = cstrings.make(configuration.privateKeyPath)
        info.ssl_client_options_set = clws_ssl_min_tls12()
        lws_set_log_level(LLL_ERR, nil)
        lock.withLock { wantConnected = true }
        try loop.start { lws_create_context(&info) }
        loop.post { [self] in openConnection() }
        Task { [weak self] in await self?.heartbeats() }
    }

    /// Closes the socket and stops reconnecting. Pending pushes fail with `ChannelError.closed`.
    public func close() {
        lock.withLock {
            wantConnected = false
            finished = true
        }
        loop.post { [self] in
            if wsi != nil {
                closeRequested = true
                lws_callback_on_writable(wsi)
            }
        }
        // Give the close frame a moment, then stop the thread.
        Thread.sleep(forTimeInterval: 0.05)
        loop.stop()
        failPending(ChannelError.closed)
        eventSink.finish()
    }

    /// Connects again (with a fresh `query()`) after the server refused our credentials, which stops
    /// reconnecting; a no-op while connected or already trying.
    public func reconnect() {
        lock.withLock {
            wantConnected = true
            attempts = 0
        }
        loop.post { [self] in openConnection() }
    }

    /// Whether the client is connected or trying to be (false after `disconnect()`, `close()` or a refused connect).
    public var wantsConnection: Bool { lock.withLock { wantConnected } }

    /// Drops the connection and stops reconnecting until `reconnect()`; channels are rejoined then.
    public func disconnect() {
        lock.withLock { wantConnected = false }
        loop.post { [self] in
            if wsi != nil {
                closeRequested = true
                lws_callback_on_writable(wsi)
            }
        }
    }

    deinit { protocols?.deallocate() }

    public var connected: Bool { lock.withLock { state.isConnected } }

    // MARK: Channels

    /// Joins `topic`. `onMessage` receives the server's pushes on it (and `phx_close`/`phx_error`).
    /// After a reconnect the client rejoins with `payload()` called again.
    @discardableResult
    public func join(
        topic: String, payload: @escaping @Sendable () -> JSON = { .object([:]) }, timeout: Duration = .seconds(10),
        onMessage: @escaping @Sendable (PhoenixMessage) -> Void = { _ in }
    ) async throws -> JSON {
        let (joinRef, gen) = lock.withLock { state.beginJoin(topic: topic, payload: payload, onMessage: onMessage) }
        let reply: ChannelClientReply
        do {
            reply = try await send(joinRef: joinRef, topic: topic, event: "phx_join", payload: payload(), ref: joinRef, timeout: timeout)
        } catch {
            lock.withLock { state.joinFailed(topic: topic, joinRef: joinRef) }
            throw error
        }
        guard reply.isOK else {
            lock.withLock { state.joinFailed(topic: topic, joinRef: joinRef) }
            throw ChannelError.joinRefused(reply.response)
        }
        settle(topic, joinRef: joinRef, generation: gen)
        return reply.response
    }

    /// A join of `topic` was accepted on connection `gen` (`PhoenixClientState.settle`); joined again at once when
    /// that connection went and another is already open.
    private func settle(_ topic: String, joinRef: String, generation gen: Int) {
        let rejoinNow = lock.withLock { state.settle(topic: topic, joinRef: joinRef, generation: gen) }
        if rejoinNow { Task { await self.rejoin() } }
    }

    public func leave(topic: String, timeout: Duration = .seconds(5)) async {
        let joinRef = lock.withLock { state.leave(topic: topic) }
        _ = try? await send(joinRef: joinRef, topic: topic, event: "phx_leave", payload: .object([:]), ref: nextRef(),
                            timeout: timeout)
    }

    public func isJoined(_ topic: String) -> Bool { lock.withLock { state.joinRef(topic) != nil } }

    /// The ref of `topic`'s current join (nil: not joined). A rejoin (after a reconnect, say) has a new one.
    public func joinRef(_ topic: String) -> String? { lock.withLock { state.joinRef(topic) } }

    /// The largest message the server takes (bytes of the frame's text): a larger push throws `messageTooLarge` and
    /// leaves the connection as it is. Starts at `Configuration.peerMaxMessageBytes`; set when the server says.
    public var peerMessageLimit: Int {
        get { lock.withLock { peerLimit } }
        set { lock.withLock { peerLimit = newValue } }
    }

    /// Pushes an event on a joined topic and waits for its reply. `onReply`, when given, is called with the reply on
    /// the socket's service thread as it arrives, before the caller resumes (a hop to the cooperative pool later): what
    /// it sends goes out without waiting for that hop (the worker's joins of the attempts a claim gave it). It must be
    /// quick and must not block; it is not called when the push fails or times out.
    public func push(topic: String, event: String, payload: JSON, timeout: Duration = .seconds(10),
                     onReply: (@Sendable (ChannelClientReply) -> Void)? = nil) async throws -> ChannelClientReply
    {
        let joinRef = lock.withLock { state.joinRef(topic) }
        return try await send(joinRef: joinRef, topic: topic, event: event, payload: payload, ref: nextRef(),
                              timeout: timeout, onReply: onReply)
    }

    /// Pushes an event whose payload is already encoded JSON text (a large `run:log` batch written line by line as
    /// the lines came) and waits for its reply. The caller vouches that the bytes are one JSON value.
    public func push(topic: String, event: String, encodedPayload: [UInt8], timeout: Duration = .seconds(10)) async throws
        -> ChannelClientReply
    {
        let joinRef = lock.withLock { state.joinRef(topic) }
        let ref = nextRef()
        let frame = PhoenixMessage.encodeText(joinRef: joinRef, ref: ref, topic: topic, event: event, rawPayload: encodedPayload,
                                              headroom: Int(clws_pre))
        return try await send(frame: frame, topic: topic, event: event, ref: ref, timeout: timeout)
    }

    private func nextRef() -> String { lock.withLock { state.nextRef() } }

    private func send(joinRef: String?, topic: String, event: String, payload: JSON, ref: String, timeout: Duration,
                      onReply: (@Sendable (ChannelClientReply) -> Void)? = nil) async throws -> ChannelClientReply
    {
        guard connected else { throw ChannelError.notConnected }
        let frame = [UInt8](repeating: 0, count: Int(clws_pre))
            + PhoenixMessage(joinRef: joinRef, ref: ref, topic: topic, event: event, payload: payload).encodeText()
        return try await send(frame: frame, topic: topic, event: event, ref: ref, timeout: timeout, onReply: onReply)
    }

    /// Sends a frame that starts with `LWS_PRE` bytes of headroom and waits for the reply to `ref`.
    private func send(frame: [UInt8], topic: String, event: String, ref: String, timeout: Duration,
                      onReply: (@Sendable (ChannelClientReply) -> Void)? = nil) async throws -> ChannelClientReply
    {
        guard connected else { throw ChannelError.notConnected }
        let size = frame.count - Int(clws_pre), limit = peerMessageLimit
        guard size <= limit else { throw ChannelError.messageTooLarge(bytes: size, limit: limit) }
        if topic != "phoenix" {
            logger.debug("push", metadata: ["topic": "\(topic)", "event": "\(event)", "ref": "\(ref)",
                                            "bytes": "\(frame.count - Int(clws_pre))"])
        }
        return try await withCheckedThrowingContinuation { continuation in
            let startSweeper = lock.withLock { () -> Bool in
                state.awaitReply(ref: ref, waiter: ReplyWaiter(continuation: continuation, onReply: onReply), deadline: .now + timeout)
                defer { sweeping = true }
                return !sweeping
            }
            if startSweeper { Task { [weak self] in await self?.sweepDeadlines() } }
            loop.post { [self] in
                guard wsi != nil else {
                    resolve(ref, .failure(ChannelError.notConnected))
                    return
                }
                queue.append(frame)
                lws_callback_on_writable(wsi)
            }
        }
    }

    /// Fails every pending request whose deadline passed; ends when none is pending.
    private func sweepDeadlines() async {
        while true {
            try? await Task.sleep(for: Self.sweepInterval)
            let now = ContinuousClock.now
            let (expired, more) = lock.withLock {
                let expired = state.expired(now: now)
                if state.pendingCount == 0 { sweeping = false }
                return (expired, state.pendingCount > 0)
            }
            for waiter in expired { waiter.resume(throwing: ChannelError.timeout) }
            if !more { return }
        }
    }

    private func resolve(_ ref: String, _ result: Result<ChannelClientReply, any Error>) {
        lock.withLock { state.takeWaiter(ref) }?.resume(with: result)
    }

    private func failPending(_ error: any Error) {
        for waiter in lock.withLock({ state.takeAllWaiters() }) { waiter.resume(throwing: error) }
    }

    // MARK: Heartbeats and reconnects

    /// Until `close()`: a `disconnect()` or a refused connect pauses them (nothing is connected), a `reconnect()`
    /// finds them still going.
    private func heartbeats() async {
        while !lock.withLock({ finished }) {
            try? await Task.sleep(for: configuration.heartbeatInterval)
            switch lock.withLock({ state.heartbeatDue() }) {
            case .none:
                continue
            case .reconnect:
                logger.warning("heartbeat unanswered: reconnecting")
                loop.post { [self] in
                    if wsi != nil {
                        closeRequested = true
                        lws_callback_on_writable(wsi)
                    }
                }
            case .send(let ref):
                Task {
                    _ = try? await self.send(joinRef: nil, topic: "phoenix", event: "heartbeat", payload: .object([:]),
                                             ref: ref, timeout: self.configuration.heartbeatInterval * 2)
                    self.lock.withLock { self.state.heartbeatEnded(ref: ref) }
                }
            }
        }
    }

    /// Service thread: after a failed or lost connection.
    private func scheduleReconnect() {
        let (want, attempt, next) = lock.withLock { () -> (Bool, Int, String?) in
            attempts += 1
            // The next replica, if there are several.
            guard targets.count > 1 else { return (wantConnected, attempts, nil) }
            current = (current + 1) % targets.count
            return (wantConnected, attempts, urls[current])
        }
        guard want else { return }
        if let next { logger.info("trying the next URL", metadata: ["url": "\(next)"]) }
        let base = configuration.reconnectBase.seconds * pow(2, Double(min(attempt - 1, 20)))
        let delay = min(base, configuration.reconnectCap.seconds) * (1 + Double.random(in: 0...configuration.jitter))
        logger.info("reconnecting", metadata: ["in_seconds": "\(String(format: "%.2f", delay))", "attempt": "\(attempt)"])
        Task { [weak self] in
            try? await Task.sleep(for: .seconds(delay))
            guard let self, self.lock.withLock({ self.wantConnected }) else { return }
            self.loop.post { [self] in self.openConnection() }
        }
    }

    /// Service thread.
    private func openConnection() {
        // A reconnect scheduled before `disconnect()` does not open one after it.
        guard wsi == nil, lock.withLock({ wantConnected }), let ctx = loop.lwsContext else { return }
        var path = target.path
        let extra = configuration.query()
        if !extra.isEmpty {
            let allowed = CharacterSet.urlQueryAllowed.subtracting(CharacterSet(charactersIn: "&=+?"))
            let q = extra.sorted { $0.key < $1.key }.map { k, v in
                "\(k.addingPercentEncoding(withAllowedCharacters: allowed) ?? k)="
                    + "\(v.addingPercentEncoding(withAllowedCharacters: allowed) ?? v)"
            }.joined(separator: "&")
            path += (path.contains("?") ? "&" : "?") + q
        }
        let host = target.host
        var info = lws_client_connect_info()
        info.context = ctx
        info.port = Int32(target.port)
        info.ssl_connection = target.tls ? clws_client_ssl_flags(configuration.allowSelfSigned ? 1 : 0) : 0
        info.ietf_version_or_minus_one = -1
        var result: OpaquePointer?
        host.withCString { h in
            path.withCString { p in
                info.address = h
                info.host = h
                info.origin = h
                info.path = p
                info.protocol = nil
                result = lws_client_connect_via_info(&info)
            }
        }
        wsi = result
        if result == nil {
            logger.warning("connect failed at once", metadata: ["url": "\(currentURL)"])
            scheduleReconnect()
        }
    }

    // MARK: lws callbacks (service thread)

    func callback(wsi: OpaquePointer?, reason: lws_callback_reasons, user: UnsafeMutableRawPointer?,
                  input: UnsafeMutableRawPointer?, length: Int) -> Int32 {
        switch reason {
        case LWS_CALLBACK_EVENT_WAIT_CANCELLED:
            loop.drain()
            return 0
        case LWS_CALLBACK_CLIENT_ESTABLISHED:
            self.wsi = wsi
            rx = []
            lock.withLock {
                state.connected()
                attempts = 0
            }
            eventSink.yield(.connected)
            logger.info("connected", metadata: ["url": "\(currentURL)"])
            Task { await self.rejoin() }
            return 0
        case LWS_CALLBACK_CLIENT_RECEIVE:
            return receive(input, length)
        case LWS_CALLBACK_CLIENT_WRITEABLE:
            guard let wsi else { return -1 }
            if closeRequested {
                closeRequested = false
                var r = Array("bye".utf8)
                lws_close_reason(wsi, LWS_CLOSE_STATUS_NORMAL, &r, r.count)
                return -1
            }
            let pre = Int(clws_pre)
            while !queue.isEmpty {
                if lws_send_pipe_choked(wsi) != 0 { break }
                var frame = queue.removeFirst()
                // Framed and masked here, sent as raw bytes: ClientFrame.
                let start = ClientFrame.build(&frame, pre: pre, key: maskingKeys.take())
                let n = frame.count - start
                let written = frame.withUnsafeMutableBufferPointer { lws_write(wsi, $0.baseAddress! + start, n, clws_write_raw) }
                if written < n { return -1 }
            }
            if !queue.isEmpty { lws_callback_on_writable(wsi) }
            return 0
        case LWS_CALLBACK_CLIENT_CONNECTION_ERROR:
            let status = wsi.map { Int(lws_http_client_http_response($0)) } ?? 0
            let message = input.map { String(cString: $0.assumingMemoryBound(to: CChar.self)) } ?? "connection error"
            connectionLost(reason: message, status: status)
            return 0
        case LWS_CALLBACK_CLIENT_CLOSED:
            connectionLost(reason: "closed", status: 0)
            return 0
        default:
            return lws_callback_http_dummy(wsi, reason, user, input, length)
        }
    }

    private func connectionLost(reason: String, status: Int) {
        wsi = nil
        queue = []
        rx = []
        closeRequested = false
        for waiter in lock.withLock({ state.connectionLost() }) { waiter.resume(throwing: ChannelError.closed) }
        if status == 401 || status == 403 {
            let s = status
            logger.error("the server refused our credentials", metadata: ["status": "\(s)", "url": "\(currentURL)"])
            lock.withLock { wantConnected = false }
            eventSink.yield(.authenticationFailed(status: s))
            return
        }
        eventSink.yield(.disconnected(reason: reason))
        scheduleReconnect()
    }

    private func receive(_ input: UnsafeMutableRawPointer?, _ length: Int) -> Int32 {
        guard let wsi else { return -1 }
        if rx.isEmpty { rxBinary = lws_frame_is_binary(wsi) != 0 }
        if rx.count + length > configuration.maxMessageBytes {
            var r = Array("message too big".utf8)
            lws_close_reason(wsi, LWS_CLOSE_STATUS_MESSAGE_TOO_LARGE, &r, r.count)
            return -1
        }
        if let input { rx.append(contentsOf: UnsafeRawBufferPointer(start: input, count: length)) }
        guard lws_is_final_fragment(wsi) != 0, lws_remaining_packet_payload(wsi) == 0 else { return 0 }
        let bytes = rx
        rx = []
        guard let m = try? (rxBinary ? PhoenixMessage.decode(binary: bytes) : PhoenixMessage.decode(text: bytes)) else {
            logger.warning("ignored a malformed message from the server")
            return 0
        }
        deliver(m)
        return 0
    }

    private func deliver(_ m: PhoenixMessage) {
        switch lock.withLock({ state.receive(m) }) {
        case .reply(_, let waiter):
            guard let waiter else { return }
            switch m.payload {
            case .binary(let bytes):
                waiter.resume(returning: ChannelClientReply(status: m.binaryStatus ?? "ok", response: .null, binary: bytes))
            case .json(let j):
                waiter.resume(returning: ChannelClientReply(status: j["status"]?.stringValue ?? "error", response: j["response"] ?? .null))
            }
        case .push(let handler):
            handler(m)
        case .ignored:
            break
        }
    }

    private func rejoin() async {
        for topic in lock.withLock({ state.rejoinCandidates() }) {
            guard let join = lock.withLock({ state.takeRejoin(topic) }) else { continue }
            do {
                let reply = try await send(joinRef: join.joinRef, topic: join.topic, event: "phx_join", payload: join.payload(),
                                           ref: join.joinRef, timeout: .seconds(10))
                if reply.isOK {
                    settle(join.topic, joinRef: join.joinRef, generation: join.generation)
                    eventSink.yield(.rejoined(topic: join.topic, response: reply.response))
                } else {
                    lock.withLock { state.joinFailed(topic: join.topic, joinRef: join.joinRef) }
                    eventSink.yield(.rejoinFailed(topic: join.topic, response: reply.response))
                }
            } catch {
                // The connection went while rejoining: the next one tries again.
                lock.withLock { state.rejoinInterrupted(topic: join.topic, joinRef: join.joinRef) }
                logger.notice("rejoin interrupted", metadata: ["topic": "\(join.topic)", "error": "\(error)"])
            }
        }
    }
}

/// Who waits for a reply: the pushing task, and what it asked to run on the service thread when the reply comes.
struct ReplyWaiter: Sendable {
    let continuation: CheckedContinuation<ChannelClientReply, any Error>
    let onReply: (@Sendable (ChannelClientReply) -> Void)?

    func resume(returning reply: ChannelClientReply) {
        onReply?(reply)
        continuation.resume(returning: reply)
    }

    func resume(throwing error: any Error) { continuation.resume(throwing: error) }

    func resume(with result: Result<ChannelClientReply, any Error>) {
        switch result {
        case .success(let reply): resume(returning: reply)
        case .failure(let error): resume(throwing: error)
        }
    }
}
