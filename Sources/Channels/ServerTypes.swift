/// What the authentication hook sees of a WebSocket upgrade request.
public struct UpgradeRequest: Sendable {
    public var path: String
    public var query: [String: String]
    public var headers: [String: String]
    /// Common name of the client certificate, when mutual TLS is on.
    public var peerCertificateSubject: String?
    /// The client's IP address as the socket sees it (a proxy's, behind one).
    public var peerAddress: String = ""
}

public enum AuthDecision: Sendable {
    /// Accept; `context` travels with the socket (e.g. the worker's name).
    case accept(context: any Sendable)
    /// Answer with a real `HTTP/1.1` status (401, 403, ...) before the upgrade; with `retryAfter` seconds, a
    /// `retry-after` header too (429).
    case reject(status: Int, message: String, retryAfter: Int? = nil)
}

public enum JoinResult: Sendable {
    case ok(JSON)
    case error(JSON)
}

/// A reply to a client's push. `onDelivered` learns whether the reply reached the kernel (true) or the
/// connection closed first (false), so callers can undo work whose acknowledgement was lost.
public struct ChannelReply: Sendable {
    public enum Body: Sendable {
        case json(JSON)
        case binary([UInt8])
    }

    public var status: String
    public var body: Body
    public var onDelivered: (@Sendable (Bool) -> Void)?

    public static func ok(_ response: JSON = .object([:]), onDelivered: (@Sendable (Bool) -> Void)? = nil) -> ChannelReply {
        ChannelReply(status: "ok", body: .json(response), onDelivered: onDelivered)
    }
    public static func error(_ response: JSON) -> ChannelReply { ChannelReply(status: "error", body: .json(response)) }
    public static func error(reason: String) -> ChannelReply { .error(["reason": .string(reason)]) }
    public static func binary(_ bytes: [UInt8]) -> ChannelReply { ChannelReply(status: "ok", body: .binary(bytes)) }
}

/// Handles the channels whose topics match a pattern (`worker:queue`, `run:*`).
public protocol ChannelHandler: Sendable {
    func join(topic: String, payload: JSON, socket: ChannelSocket) async -> JoinResult
    /// Returns the reply, or nil to send none.
    func handle(event: String, topic: String, payload: JSON, socket: ChannelSocket) async -> ChannelReply?
    /// The client left the topic, or the socket closed.
    func leave(topic: String, socket: ChannelSocket) async
    /// Runs after a successful join's reply is queued and the socket is subscribed: pushes made from here on
    /// reach the client after the reply.
    func joined(topic: String, socket: ChannelSocket) async
}

/// What a handler made of a payload it read from the frame's bytes itself.
public enum RawEventResult: Sendable {
    case reply(ChannelReply?)
    /// The payload is not JSON: the socket is closed, as it is for any malformed message.
    case malformed(JSONParseError)
}

/// A handler that reads some events' payloads straight from the frame's bytes, in one pass, instead of through a
/// `JSON` value per item (a `run:log` batch of thousands of lines). Other events, and any payload its reader does
/// not take, go through `handle(event:topic:payload:socket:)` as usual.
public protocol RawPayloadHandler: ChannelHandler {
    /// The events to hand over unparsed (only once the topic is joined: joins and leaves are always parsed).
    var rawPayloadEvents: Set<String> { get }
    func handle(event: String, topic: String, rawPayload: ArraySlice<UInt8>, socket: ChannelSocket) async -> RawEventResult
}

extension ChannelHandler {
    public func leave(topic: String, socket: ChannelSocket) async {}
    public func joined(topic: String, socket: ChannelSocket) async {}

    /// The usual path for a payload a raw reader gave back: parsed, then `handle(event:topic:payload:socket:)`.
    public func handleParsing(event: String, topic: String, rawPayload: ArraySlice<UInt8>, socket: ChannelSocket) async
        -> RawEventResult
    {
        let payload: JSON
        // The payload sits at depth 1 in its frame: the frame's nesting limit leaves it one less.
        do { payload = try JSON.parse(rawPayload, maxDepth: PhoenixMessage.maxDepth - 1) } catch let e as JSONParseError { return .malformed(e) } catch {
            return .malformed(JSONParseError(message: "\(error)", offset: 0))
        }
        return .reply(await handle(event: event, topic: topic, payload: payload, socket: socket))
    }
}

public struct ChannelRoute: Sendable {
    public var pattern: String
    public var handler: any ChannelHandler
    public init(_ pattern: String, _ handler: any ChannelHandler) {
        self.pattern = pattern
        self.handler = handler
    }

    /// `run:*` matches every topic starting `run:`; anything else matches exactly.
    func matches(_ topic: String) -> Bool {
        pattern.hasSuffix("*") ? topic.hasPrefix(pattern.dropLast()) && topic.count > pattern.count - 1 : topic == pattern
    }
}

/// A WebSocket endpoint: a path, its authentication and its channels.
public struct SocketEndpoint: Sendable {
    public var path: String
    /// Runs on the socket service thread before the upgrade: keep it cheap (an HMAC check is fine).
    public var authenticate: @Sendable (UpgradeRequest) -> AuthDecision
    public var channels: [ChannelRoute] {
        didSet { readsRaw = Self.anyReadsRaw(channels) }
    }
    /// Some channel's handler reads an event's payload itself (`RawPayloadHandler`).
    private(set) var readsRaw: Bool
    public var onConnect: (@Sendable (ChannelSocket) async -> Void)?
    public var onDisconnect: (@Sendable (ChannelSocket) async -> Void)?
    /// Bytes queued for one of this endpoint's sockets before it is closed as a slow consumer (1008); nil uses
    /// the server's `maxQueuedBytesPerConnection`. Viewers get a small one so they never hold memory for long.
    public var maxQueuedBytes: Int?
    /// Bytes queued for all of this endpoint's sockets together (nil: no such limit). Past it, a socket that still
    /// has bytes waiting is closed as a slow consumer, as one past its own limit is: so many slow sockets cannot
    /// together hold more memory than this (1,000 stalled viewers at 4 MB each held 4.5 GB).
    public var maxQueuedBytesTotal: Int?
    /// Handle this endpoint's messages on the socket service thread, between its passes (`ServiceExecutor`), instead
    /// of on the cooperative pool: a message read, handled and answered makes no hop to another thread and back
    /// (four thread switches fewer per round trip), and a handler's `await` still frees the thread. Only for handlers
    /// that never block: a blocking call (a query over the network, a lock held long, a big computation) holds up
    /// every socket of the server meanwhile; such work must hop off (`withTaskExecutorPreference
    /// (globalConcurrentExecutor)`).
    public var handlesOnServiceThread: Bool

    public init(
        path: String, authenticate: @escaping @Sendable (UpgradeRequest) -> AuthDecision, channels: [ChannelRoute],
        onConnect: (@Sendable (ChannelSocket) async -> Void)? = nil,
        onDisconnect: (@Sendable (ChannelSocket) async -> Void)? = nil,
        maxQueuedBytes: Int? = nil, maxQueuedBytesTotal: Int? = nil, handlesOnServiceThread: Bool = false
    ) {
        self.handlesOnServiceThread = handlesOnServiceThread
        self.maxQueuedBytes = maxQueuedBytes
        self.maxQueuedBytesTotal = maxQueuedBytesTotal
        self.path = path
        self.authenticate = authenticate
        self.channels = channels
        self.readsRaw = Self.anyReadsRaw(channels)
        self.onConnect = onConnect
        self.onDisconnect = onDisconnect
    }

    private static func anyReadsRaw(_ channels: [ChannelRoute]) -> Bool {
        channels.contains { $0.handler is any RawPayloadHandler }
    }
}

public struct HTTPRequest: Sendable {
    public var method: String
    public var path: String
    public var query: [String: String]
    public var headers: [String: String]
    public var body: [UInt8]
    /// The client's IP address as the socket sees it (a proxy's, behind one).
    public var peerAddress: String = ""
}

public struct HTTPResponse: Sendable {
    public var status: Int
    public var contentType: String
    public var headers: [(String, String)]
    public var body: [UInt8]

    public init(status: Int, contentType: String = "application/json", headers: [(String, String)] = [], body: [UInt8]) {
        self.status = status
        self.contentType = contentType
        self.headers = headers
        self.body = body
    }

    public static func json(_ status: Int, _ value: JSON) -> HTTPResponse {
        HTTPResponse(status: status, body: value.encoded() + [0x0A])
    }
    public static func error(_ status: Int, _ message: String) -> HTTPResponse {
        .json(status, ["error": .string(message)])
    }
    public static func text(_ status: Int, _ text: String, contentType: String = "text/plain; charset=utf-8") -> HTTPResponse {
        HTTPResponse(status: status, contentType: contentType, body: Array(text.utf8))
    }
}

public struct HTTPRoute: Sendable {
    /// nil matches any method.
    public var method: String?
    public var pathPrefix: String
    public var handler: @Sendable (HTTPRequest) async -> HTTPResponse
    public init(_ method: String?, _ pathPrefix: String, _ handler: @escaping @Sendable (HTTPRequest) async -> HTTPResponse) {
        self.method = method
        self.pathPrefix = pathPrefix
        self.handler = handler
    }
}

public struct TLSConfiguration: Sendable {
    public var certificatePath: String
    public var privateKeyPath: String
    /// CA to verify client certificates against; with `requireClientCertificate`, mutual TLS.
    public var caPath: String?
    public var requireClientCertificate: Bool
    public init(certificatePath: String, privateKeyPath: String, caPath: String? = nil, requireClientCertificate: Bool = false) {
        self.certificatePath = certificatePath
        self.privateKeyPath = privateKeyPath
        self.caPath = caPath
        self.requireClientCertificate = requireClientCertificate
    }
}

public struct ChannelServerConfiguration: Sendable {
    public var host: String = "127.0.0.1"
    /// 0: the kernel picks; read `ChannelServer.port` after `start()`.
    public var port: Int = 4000
    /// The largest message taken from a client. 32 MB: a worker's step:complete carries a state of up to its payload
    /// limit (10 MB by default) as a JSON string, where quotes and backslashes count twice.
    public var maxMessageBytes: Int = 32_000_000
    /// Bytes queued for one connection before it is closed as a slow consumer (1008).
    public var maxQueuedBytesPerConnection: Int = 32 * 1024 * 1024
    public var maxHTTPBodyBytes: Int = 11_000_000
    /// A socket silent this long is closed.
    public var idleTimeoutSeconds: Int = 60
    /// lws keepalive: ping after this many idle seconds.
    public var pingIntervalSeconds: Int = 20
    public var tls: TLSConfiguration?
    /// File descriptors kept free for everything but connections (the database's files, pipes, logs). A connection
    /// accepted while fewer are free is closed at once, so the process never runs out: an `accept` that fails for
    /// want of a descriptor is retried by libwebsockets at once, in a loop that takes a core and floods the log.
    public var reservedFileDescriptors: Int = 64
    /// Seconds a connection has to send a request's headers (and most other network steps; libwebsockets'
    /// `timeout_secs` and `timeout_secs_ah_idle`).
    public var headerTimeoutSeconds: Int = 10
    /// Seconds an idle HTTP/1.1 keep-alive connection is kept (libwebsockets' `keepalive_timeout`).
    public var keepAliveTimeoutSeconds: Int = 5
    /// Seconds an HTTP request may wait for its handler's answer before the connection is closed. Long enough for the
    /// longest a handler waits by design (a synchronous webhook, at most 600 s); before it was set, libwebsockets'
    /// `timeout_secs` (10 s) closed the connection of any handler slower than that, with no answer.
    public var handlerTimeoutSeconds: Int = 660
    /// Connections that have not yet finished a request's headers: new ones, and idle keep-alive ones waiting for
    /// their next request (slowloris holds thousands). Past this many the oldest of them is closed for each new one:
    /// a client that sends its headers at once is never the oldest. Each held one costs libwebsockets work per close and per poll, so this bounds the stall when a flood
    /// of them times out at once. Headers still time out after `headerTimeoutSeconds`.
    public var maxUnfinishedRequests: Int = 1024

    public init() {}
}

