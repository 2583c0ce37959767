internal import CLibWebSockets
import Foundation
import Logging

/// One port serving HTTP and Phoenix Channels V2 WebSockets, on libwebsockets.
///
/// lws runs on one service thread; handlers run as Swift tasks, one task per connection so that a client's
/// messages are handled strictly in order. Replies and pushes travel back to the service thread through the
/// loop's inbox, by connection id.
///
/// This file is the transport: the lws context and callbacks, connections by id, upgrades, reading frames and sending.
/// Phoenix Channels on top of it are in ChannelServer+Phoenix.swift (their rules in `PhoenixServerRules`), plain HTTP
/// in ChannelServer+HTTP.swift (its rules in `HTTPRules`, what lws says of a request in `LWSRequest`).
public final class ChannelServer: LWSCallbackTarget, @unchecked Sendable {
    public let configuration: ChannelServerConfiguration
    let endpoints: [SocketEndpoint]
    let routes: [HTTPRoute]
    let logger: Logger
    let loop = ServiceLoop(name: "channels-server")
    /// Connections' message tasks run here (see `handle(_:socket:endpoint:connection:connecting:)`).
    let serviceExecutor: ServiceExecutor
    private let cstrings = CStrings()
    private var protocols: UnsafeMutablePointer<lws_protocols>?
    private var retryPolicy: UnsafeMutablePointer<lws_retry_bo_t>?

    // Service-thread state.
    var connections: [Int: Connection] = [:]
    private var nextID = 1
    var shuttingDown = false
    /// Accepted sockets whose descriptor is this or above are closed at once (the reserve would be used up).
    private var acceptLimit = Int.max
    private var refusalWarnings = ThrottledCount(every: .seconds(10))
    /// Bytes queued per endpoint (by path), for endpoints with a total limit.
    private var queuedTotals: [String: QueuedTotal] = [:]

    // Shared state.
    private let lock = Lock()
    private var subscribers: [String: [Int: ChannelSocket]] = [:]
    private var openSockets: [Int: ChannelSocket] = [:]
    private var boundPort = 0
    private var readPauses = 0
    private var refusedForDescriptors = 0
    private var evictedUnfinished = 0
    /// Connections that have not finished a request's headers (service thread).
    private var unfinished = UnfinishedRequests()
    private var evictionWarnings = ThrottledCount(every: .seconds(10))

    /// Connections closed as soon as they were accepted because file descriptors were nearly exhausted.
    public var refusedConnectionCount: Int { lock.withLock { refusedForDescriptors } }

    /// Connections closed before finishing their request's headers because `maxUnfinishedRequests` newer ones came.
    public var evictedUnfinishedCount: Int { lock.withLock { evictedUnfinished } }

    /// How many times reading from a client was paused because its messages queued up faster than they were handled.
    public var readPauseCount: Int { lock.withLock { readPauses } }

    public init(
        configuration: ChannelServerConfiguration, endpoints: [SocketEndpoint], routes: [HTTPRoute] = [],
        logger: Logger = Logger(label: "channels.server")
    ) {
        self.configuration = configuration
        self.endpoints = endpoints
        self.routes = routes
        self.logger = logger
        serviceExecutor = ServiceExecutor(loop)
    }

    deinit {
        protocols?.deallocate()
        retryPolicy?.deallocate()
    }

    /// The port listened on (the kernel's pick when the configuration said 0).
    public var port: Int { lock.withLock { boundPort } }

    public func start() throws {
        lws_set_log_level(LLL_ERR, nil)
        // Descriptors are handed out lowest first: one numbered past the limit less the reserve means that many
        // are open. (Read once: libwebsockets sizes its own tables from the limit at start too.)
        acceptLimit = FileDescriptorLimit.current.map { $0 - configuration.reservedFileDescriptors } ?? .max
        let protocols = UnsafeMutablePointer<lws_protocols>.allocate(capacity: 2)
        protocols.initialize(repeating: lws_protocols(), count: 2)
        protocols[0].name = cstrings.make("phoenix")
        protocols[0].callback = lwsCallbackFunction
        protocols[0].rx_buffer_size = 4096
        self.protocols = protocols

        let retry = UnsafeMutablePointer<lws_retry_bo_t>.allocate(capacity: 1)
        retry.initialize(to: lws_retry_bo_t())
        retry.pointee.secs_since_valid_ping = UInt16(configuration.pingIntervalSeconds)
        retry.pointee.secs_since_valid_hangup = UInt16(configuration.pingIntervalSeconds + 10)
        self.retryPolicy = retry

        var info = lws_context_creation_info()
        info.port = Int32(configuration.port)
        info.iface = cstrings.make(configuration.host)
        info.protocols = UnsafePointer(protocols)
        info.user = Unmanaged.passUnretained(self as AnyObject).toOpaque()
        info.retry_and_idle_policy = UnsafePointer(retry)
        info.options = clws_server_options(configuration.tls == nil ? 0 : 1,
                                           configuration.tls?.requireClientCertificate == true ? 1 : 0)
        info.vhost_name = cstrings.make("default")
        info.timeout_secs = UInt32(max(1, configuration.headerTimeoutSeconds))
        info.timeout_secs_ah_idle = UInt32(max(1, configuration.headerTimeoutSeconds))
        info.keepalive_timeout = Int32(max(1, configuration.keepAliveTimeoutSeconds))
        if let tls = configuration.tls {
            info.ssl_cert_filepath = cstrings.make(tls.certificatePath)
            info.ssl_private_key_filepath = cstrings.make(tls.privateKeyPath)
            info.ssl_ca_filepath = cstrings.make(tls.caPath)
            info.ssl_cipher_list = cstrings.make(
                "ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256:ECDHE-ECDSA-AES256-GCM-SHA384:"
                    + "ECDHE-RSA-AES256-GCM-SHA384:ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305")
            info.tls1_3_plus_cipher_list = cstrings.make(
                "TLS_AES_256_GCM_SHA384:TLS_AES_128_GCM_SHA256:TLS_CHACHA20_POLY1305_SHA256")
            info.ssl_options_set = clws_ssl_min_tls12()
        }
        try loop.start {
            let ctx = lws_create_context(&info)
            // The bound port, read here, before the service thread exists (the listening socket is made with the context).
            if let ctx, let vhost = lws_get_vhost_by_name(ctx, "default") {
                let p = Int(lws_get_vhost_listen_port(vhost))
                lock.withLock { boundPort = p }
            }
            return ctx
        }
        logger.info("listening", metadata: ["host": "\(configuration.host)", "port": "\(port)",
                                           "tls": "\(configuration.tls != nil)"])
    }

    /// Graceful shutdown: refuse new connections, close every socket with 1001 after its queued bytes are
    /// written, wait up to `timeout` for them to go, then stop the service thread.
    public func shutdown(timeout: Duration = .seconds(3)) async {
        loop.post { [self] in
            shuttingDown = true
            for conn in connections.values where conn.kind == .websocket {
                conn.requestClose(code: 1001, reason: "server shutting down")
            }
        }
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            let remaining = await withCheckedContinuation { (c: CheckedContinuation<Int, Never>) in
                let posted = loop.post { [self] in c.resume(returning: connections.values.filter { $0.kind == .websocket }.count) }
                if !posted { c.resume(returning: 0) }  // stopped meanwhile (stop())
            }
            if remaining == 0 { break }
            try? await Task.sleep(for: .milliseconds(20))
        }
        // Stopping waits for the service thread to finish its last pass: on a thread of its own, not the caller's
        // (a cooperative thread that every task shares).
        let serviceLoop = loop
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            Thread {
                serviceLoop.stop()
                c.resume()
            }.start()
        }
    }

    /// Stops at once (tests, and a second signal).
    public func stop() { loop.stop() }

    // MARK: Sending (any thread)

    func send(to id: Int, bytes: [UInt8], binary: Bool, onWritten: (@Sendable (Bool) -> Void)?) {
        send(to: id, frames: [bytes], binary: binary, onLastWritten: onWritten)
    }

    /// Frames for one connection in one trip to the service thread; `onLastWritten` reports on the last of them.
    func send(to id: Int, frames: [[UInt8]], binary: Bool = false, onLastWritten: (@Sendable (Bool) -> Void)?) {
        // A handler on the service thread (`SocketEndpoint.handlesOnServiceThread`) queues its frames at once, unless
        // frames posted before are still waiting to be queued (they go first).
        if loop.isServiceThreadWithNothingWaiting {
            enqueueHere(id, frames: frames, binary: binary, onLastWritten: onLastWritten)
            return
        }
        let posted = loop.post { [self] in enqueueHere(id, frames: frames, binary: binary, onLastWritten: onLastWritten) }
        if !posted { onLastWritten?(false) }
    }

    /// Queues frames on connection `id`, or closes it as a slow consumer. Service thread only.
    private func enqueueHere(_ id: Int, frames: [[UInt8]], binary: Bool, onLastWritten: (@Sendable (Bool) -> Void)?) {
        guard let conn = connections[id], conn.kind == .websocket, conn.closeCode == nil else {
            onLastWritten?(false)
            return
        }
        let limit = conn.endpoint?.maxQueuedBytes ?? configuration.maxQueuedBytesPerConnection
        let totalLimit = conn.endpoint?.maxQueuedBytesTotal ?? .max
        for (i, bytes) in frames.enumerated() {
            // Over the limit with a backlog: the client is not reading. (A single message bigger than the
            // limit still goes when nothing is waiting.) The same when the endpoint's sockets together are over.
            let total = conn.queuedTotal?.bytes ?? 0
            if conn.queuedBytes > 0 && (conn.queuedBytes + bytes.count > limit || total + bytes.count > totalLimit) {
                logger.warning("closing a slow consumer", metadata: ["connection": "\(id)", "queued": "\(conn.queuedBytes)",
                                                                      "queued.endpoint": "\(total)"])
                onLastWritten?(false)
                conn.failQueue()
                conn.requestClose(code: 1008, reason: "slow consumer: send queue over limit")
                return
            }
            conn.enqueue(bytes, binary: binary, onWritten: i == frames.count - 1 ? onLastWritten : nil)
        }
    }

    /// Returns once the service thread has taken everything handed to it before this call (frames are then in their
    /// connections' queues, counted against their limits). A producer for many sockets awaits it between rounds, so
    /// what it hands over cannot pile up unseen in the service thread's inbox.
    public func handedOver() async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            if !loop.post({ c.resume() }) { c.resume() }
        }
    }

    func close(connection id: Int, code: Int, reason: String) {
        loop.post { [self] in connections[id]?.requestClose(code: code, reason: reason) }
    }

    /// An HTTP response made off the service thread, written when the connection is still there.
    func answer(connection id: Int, _ response: HTTPResponse) {
        loop.post { [self] in
            guard let conn = connections[id] else { return }
            respond(conn, response)
        }
    }

    func subscribe(topic: String, socket: ChannelSocket) {
        lock.withLock { subscribers[topic, default: [:]][socket.id] = socket }
    }

    func unsubscribe(topic: String, socket: ChannelSocket) {
        lock.withLock {
            subscribers[topic]?[socket.id] = nil
            if subscribers[topic]?.isEmpty == true { subscribers[topic] = nil }
        }
    }

    /// Pushes an event to every socket that joined `topic`. Returns how many sockets it went to.
    @discardableResult
    public func broadcast(topic: String, event: String, payload: JSON) -> Int {
        let sockets = lock.withLock { Array(subscribers[topic]?.values ?? [:].values) }
        // One trip to the service thread for every socket, the payload encoded once and each socket's frame made
        // there: a push each cost the caller a frame and a post (a lock and a wake-up) per socket, which held up
        // whoever broadcast (the store's writer thread, for new work) in proportion to the workers joined.
        if !sockets.isEmpty {
            let raw = payload.encoded()
            loop.post { [self] in
                for s in sockets {
                    guard let joinRef = s.joinRef(topic) else { continue }
                    let frame = PhoenixMessage.encodeText(joinRef: joinRef, topic: topic, event: event, rawPayload: raw)
                    enqueueHere(s.id, frames: [frame], binary: false, onLastWritten: nil)
                }
            }
        }
        return sockets.count
    }

    /// Every open WebSocket, of every endpoint.
    public func allSockets() -> [ChannelSocket] {
        lock.withLock { Array(openSockets.values) }
    }

    /// Sockets currently joined to `topic`.
    public func sockets(joinedTo topic: String) -> [ChannelSocket] {
        lock.withLock { Array(subscribers[topic]?.values ?? [:].values) }
    }

    // MARK: lws callbacks (service thread)

    func callback(wsi: OpaquePointer?, reason: lws_callback_reasons, user: UnsafeMutableRawPointer?,
                  input: UnsafeMutableRawPointer?, length: Int) -> Int32 {
        guard let wsi else { return 0 }
        switch reason {
        case LWS_CALLBACK_EVENT_WAIT_CANCELLED:
            loop.drain()
            return 0

        case LWS_CALLBACK_OPENSSL_PERFORM_CLIENT_CERT_VERIFICATION:
            // `length` carries OpenSSL's preverify result: refuse what OpenSSL did not verify. (The default
            // answer accepts everything, a self-signed rogue certificate included.)
            return length != 0 ? 0 : 1

        case LWS_CALLBACK_FILTER_NETWORK_CONNECTION:
            // `input` carries the accepted socket's descriptor.
            let fd = Int(bitPattern: input)
            return fd >= acceptLimit ? refuseForDescriptors(fd) : 0

        case LWS_CALLBACK_SERVER_NEW_CLIENT_INSTANTIATED:
            arrived(wsi)
            return 0

        case LWS_CALLBACK_FILTER_HTTP_CONNECTION:
            // The request's headers are in (a plain request or an upgrade).
            headersIn(wsi)
            return 0

        case LWS_CALLBACK_HTTP_CONFIRM_UPGRADE:
            headersIn(wsi)
            return confirmUpgrade(wsi)

        case LWS_CALLBACK_ESTABLISHED:
            guard let conn = connection(wsi) else { return -1 }
            established(conn)
            return 0

        case LWS_CALLBACK_RECEIVE:
            // Data read after this pass's poll: what it posts runs when the pass ends, with no wake-up.
            loop.pollPassed()
            guard let conn = connection(wsi) else { return -1 }
            return receive(conn, input, length)

        case LWS_CALLBACK_SERVER_WRITEABLE:
            guard let conn = connection(wsi) else { return -1 }
            return conn.writeFrames()

        case LWS_CALLBACK_CLOSED:
            if let conn = connection(wsi) { closed(conn) }
            return 0

        case LWS_CALLBACK_HTTP:
            headersIn(wsi)
            return httpRequest(wsi, path: input.map { String(cString: $0.assumingMemoryBound(to: CChar.self)) } ?? "")

        case LWS_CALLBACK_HTTP_BODY:
            guard let conn = connection(wsi) else { return -1 }
            httpBody(conn, input, length)
            return 0

        case LWS_CALLBACK_HTTP_BODY_COMPLETION:
            guard let conn = connection(wsi) else { return -1 }
            // Once per request. libwebsockets 4.1, holding the next request's bytes (pipelined in the same read)
            // while this one's answer is pending, makes this call again and again, for ever, on the service thread:
            // one connection sending two POSTs in one write froze the whole server. Pipelining is not supported: the
            // connection is closed (an answer still pending is lost; the client sends again).
            conn.completions += 1
            if conn.completions > 1 { return -1 }
            if !conn.dispatched && conn.response == nil { dispatchHTTP(conn) }
            return 0

        case LWS_CALLBACK_HTTP_WRITEABLE:
            guard let conn = connection(wsi), conn.response != nil else { return 0 }
            // The handler's long wait is over: the answer has the network timeout to go out in (a client that does
            // not read it is not held for the handler's 660 s). Completing the transaction replaces it.
            if conn.dispatched { lws_set_timeout(wsi, PENDING_TIMEOUT_USER_OK, Int32(max(1, configuration.headerTimeoutSeconds))) }
            let result = conn.writeHTTPResponse()
            // Kept alive for another request: until its headers are in, it is unfinished again (an idle
            // keep-alive connection is as cheap to hold open as a slow one, and is closed the same way).
            if result == 0 { arrived(wsi) }
            return result

        case LWS_CALLBACK_CLOSED_HTTP:
            if let conn = connection(wsi), conn.kind == .http { forget(conn) }
            return 0

        case LWS_CALLBACK_WSI_DESTROY:
            unfinished.finished(wsi)
            if let conn = connection(wsi) {
                if conn.kind == .websocket { closed(conn) } else { forget(conn) }
            }
            return 0

        default:
            return lws_callback_http_dummy(wsi, reason, user, input, length)
        }
    }

    /// A request's headers are in: its connection is no longer unfinished. (Under HTTP/2 the request is a stream,
    /// a child of the connection's wsi, which is the one counted.)
    private func headersIn(_ wsi: OpaquePointer) {
        unfinished.finished(wsi)
        if let network = lws_get_network_wsi(wsi), network != wsi { unfinished.finished(network) }
    }

    /// A connection was accepted, or answered and kept alive: it counts as unfinished until a request's headers are
    /// in. Past the limit, the oldest unfinished one is closed (at the next service; closing it here, inside another's
    /// callback, is not safe), saying so at most every 10 s.
    private func arrived(_ wsi: OpaquePointer) {
        let evicted = unfinished.arrived(wsi, limit: configuration.maxUnfinishedRequests)
        guard !evicted.isEmpty else { return }
        for oldest in evicted { lws_set_timeout(oldest, PENDING_TIMEOUT_USER_OK, LWS_TO_KILL_ASYNC) }
        lock.withLock { evictedUnfinished += evicted.count }
        if let closed = evictionWarnings.add(evicted.count) {
            logger.warning("closing the oldest connections that have not finished a request: too many unfinished at once (a slow-client flood?)", metadata: [
                "limit": "\(configuration.maxUnfinishedRequests)", "closed": "\(closed)",
            ])
        }
    }

    /// Closes a connection just accepted (non-zero tells lws to), saying so at most every 10 s.
    private func refuseForDescriptors(_ fd: Int) -> Int32 {
        lock.withLock { refusedForDescriptors += 1 }
        if let refused = refusalWarnings.add() {
            logger.warning("refusing new connections: file descriptors nearly exhausted; raise the limit (ulimit -n, systemd LimitNOFILE=)", metadata: [
                "fd": "\(fd)", "fd.limit": "\(FileDescriptorLimit.current.map(String.init) ?? "unlimited")",
                "fd.reserved": "\(configuration.reservedFileDescriptors)", "refused": "\(refused)",
            ])
        }
        return 1
    }

    func connection(_ wsi: OpaquePointer) -> Connection? {
        guard let raw = lws_get_opaque_user_data(wsi) else { return nil }
        return connections[Int(bitPattern: raw)]
    }

    func register(_ wsi: OpaquePointer, kind: Connection.Kind) -> Connection {
        let id = nextID
        nextID += 1
        let conn = Connection(id: id, wsi: wsi, kind: kind, maxMessageBytes: configuration.maxMessageBytes)
        connections[id] = conn
        lws_set_opaque_user_data(wsi, UnsafeMutableRawPointer(bitPattern: id))
        return conn
    }

    func forget(_ conn: Connection) {
        lws_set_opaque_user_data(conn.wsi, nil)
        connections[conn.id] = nil
    }

    // MARK: Upgrade and WebSocket

    private func confirmUpgrade(_ wsi: OpaquePointer) -> Int32 {
        let request = UpgradeRequest(path: LWSRequest.path(wsi), query: LWSRequest.query(wsi), headers: LWSRequest.headers(wsi),
                                     peerCertificateSubject: configuration.tls?.requireClientCertificate == true ? LWSRequest.peerSubject(wsi) : nil,
                                     peerAddress: LWSRequest.peerAddress(wsi))
        if shuttingDown { return rawHTTPStatus(wsi, 503, "server shutting down") }
        guard let endpoint = endpoints.first(where: { $0.path == request.path }) else {
            return rawHTTPStatus(wsi, 404, "no socket at \(request.path)")
        }
        switch endpoint.authenticate(request) {
        case .reject(let status, let message, let retryAfter):
            logger.notice("refused a socket", metadata: ["path": "\(request.path)", "status": "\(status)",
                                                         "reason": "\(message)", "peer": "\(request.peerAddress)"])
            return rawHTTPStatus(wsi, status, message, retryAfter: retryAfter)
        case .accept(let context):
            let conn = register(wsi, kind: .upgrading)
            conn.endpoint = endpoint
            if endpoint.maxQueuedBytesTotal != nil {
                conn.queuedTotal = queuedTotals[endpoint.path] ?? {
                    let total = QueuedTotal()
                    queuedTotals[endpoint.path] = total
                    return total
                }()
            }
            conn.socket = ChannelSocket(id: conn.id, context: context, request: request, server: self)
            return 0
        }
    }

    /// Writes a complete `HTTP/1.1` response on a connection being upgraded and ends it. (lws's own helper
    /// writes an HTTP/1.0 status line there, which strict clients refuse.)
    private func rawHTTPStatus(_ wsi: OpaquePointer, _ status: Int, _ message: String, retryAfter: Int? = nil) -> Int32 {
        let body = JSON.object(["error": .string(message)]).encoded()
        let head = "HTTP/1.1 \(status) \(HTTPRules.reasonPhrase(status))\r\ncontent-type: application/json\r\n"
            + (retryAfter.map { "retry-after: \($0)\r\n" } ?? "")
            + "content-length: \(body.count)\r\nconnection: close\r\n\r\n"
        var buffer = [UInt8](repeating: 0, count: Int(clws_pre)) + Array(head.utf8) + body
        let n = buffer.count - Int(clws_pre)
        _ = buffer.withUnsafeMutableBufferPointer { b in
            lws_write(wsi, b.baseAddress! + Int(clws_pre), n, LWS_WRITE_HTTP_FINAL)
        }
        return 1
    }

    private func established(_ conn: Connection) {
        guard let socket = conn.socket, let endpoint = conn.endpoint else { return }
        lock.withLock { openSockets[socket.id] = socket }
        conn.kind = .websocket
        setIdleTimeout(conn, now: .now)
        handle(conn.inbox, socket: socket, endpoint: endpoint, connection: conn.id, connecting: true)
    }

    private func receive(_ conn: Connection, _ input: UnsafeMutableRawPointer?, _ length: Int) -> Int32 {
        // The idle timeout is moved on at most every quarter of it (and at most every second), not on every message:
        // libwebsockets 4.1 keeps every connection's timer in one sorted list, and each `lws_set_timeout` walks it
        // (`lws_dll2_add_sorted` in perf), a per-message cost that grew with the connections open.
        let now = ContinuousClock.now
        if conn.idleTimeoutSetAt.map({ now - $0 >= idleTimeoutRefresh }) ?? true { setIdleTimeout(conn, now: now) }
        if conn.rx.isEmpty { conn.rxBinary = lws_frame_is_binary(conn.wsi) != 0 }
        if conn.rx.count + length > configuration.maxMessageBytes {
            logger.warning("closing a socket: message over the limit",
                           metadata: ["connection": "\(conn.id)", "limit": "\(configuration.maxMessageBytes)"])
            conn.rx = []
            return conn.closeNow(code: 1009, reason: "message over \(configuration.maxMessageBytes) bytes")
        }
        if let input { conn.rx.append(contentsOf: UnsafeRawBufferPointer(start: input, count: length)) }
        guard lws_is_final_fragment(conn.wsi) != 0, lws_remaining_packet_payload(conn.wsi) == 0 else { return 0 }
        let bytes = conn.rx
        conn.rx = []
        // Heartbeats are answered here, at once: a connection whose handlers are busy (or a loaded machine) must
        // not look dead to its client.
        if !conn.rxBinary, bytes.count < 200, Self.mentionsHeartbeat(bytes), let m = try? PhoenixMessage.decode(text: bytes),
            m.topic == "phoenix", m.event == "heartbeat"
        {
            let reply = PhoenixMessage.reply(joinRef: nil, ref: m.ref, topic: "phoenix", status: "ok", response: .object([:]))
            if conn.closeCode == nil { conn.enqueue(reply.encodeText(), binary: false, onWritten: nil) }
            return 0
        }
        // Messages wait for the connection's task; past the limit, stop reading (TCP pushes back on the
        // client) instead of holding an unbounded backlog in memory.
        let (start, pause) = conn.inbox.add(bytes, binary: conn.rxBinary, pauseAbove: configuration.maxQueuedBytesPerConnection)
        if pause {
            lws_rx_flow_control(conn.wsi, 0)
            lock.withLock { readPauses += 1 }
        }
        if start, let socket = conn.socket, let endpoint = conn.endpoint {
            handle(conn.inbox, socket: socket, endpoint: endpoint, connection: conn.id, connecting: false)
        }
        return 0
    }

    /// Closes the WebSocket after `idleTimeoutSeconds` without a message from now on.
    private func setIdleTimeout(_ conn: Connection, now: ContinuousClock.Instant) {
        lws_set_timeout(conn.wsi, PENDING_TIMEOUT_USER_OK, Int32(configuration.idleTimeoutSeconds))
        conn.idleTimeoutSetAt = now
    }

    /// How often a busy connection's idle timeout is moved on: it then closes at most this much early.
    var idleTimeoutRefresh: Duration { min(.seconds(1), .milliseconds(configuration.idleTimeoutSeconds * 250)) }

    private static let heartbeatBytes = Array(#""heartbeat""#.utf8)

    /// A byte search, so that other small messages are not decoded twice (here and in their connection's task).
    private static func mentionsHeartbeat(_ bytes: [UInt8]) -> Bool {
        let needle = heartbeatBytes
        guard bytes.count >= needle.count else { return false }
        for i in 0...(bytes.count - needle.count) where bytes[i] == needle[0] {
            if bytes[i..<(i + needle.count)].elementsEqual(needle) { return true }
        }
        return false
    }

    private func closed(_ conn: Connection) {
        if let socket = conn.socket { lock.withLock { _ = openSockets.removeValue(forKey: socket.id) } }
        if conn.kind == .websocket, conn.inbox.finish(), let socket = conn.socket, let endpoint = conn.endpoint {
            handle(conn.inbox, socket: socket, endpoint: endpoint, connection: conn.id, connecting: false)
        }
        conn.failQueue()
        forget(conn)
    }
}
