/// One connected client, as channel handlers see it. Safe to use from any task or thread.
public final class ChannelSocket: Sendable, Hashable {
    public let id: Int
    /// What the endpoint's `authenticate` returned for this socket.
    public let context: any Sendable
    public let request: UpgradeRequest
    weak let server: ChannelServer?
    private let state = LockedJoins()

    init(id: Int, context: any Sendable, request: UpgradeRequest, server: ChannelServer) {
        self.id = id
        self.context = context
        self.request = request
        self.server = server
    }

    public static func == (a: ChannelSocket, b: ChannelSocket) -> Bool { a === b }
    public func hash(into h: inout Hasher) { h.combine(id) }

    /// Topics this socket has joined.
    public var joinedTopics: [String] { state.topics }
    public func isJoined(_ topic: String) -> Bool { state.joinRef(topic) != nil }
    func joinRef(_ topic: String) -> String? { state.joinRef(topic) }
    func setJoinRef(_ topic: String, _ ref: String?) { state.set(topic, ref) }

    /// Pushes an event on a joined topic (with that channel's join_ref, as clients require). Returns false
    /// when the socket has not joined the topic or is gone.
    @discardableResult
    public func push(topic: String, event: String, payload: JSON) -> Bool {
        guard let joinRef = state.joinRef(topic), let server else { return false }
        let m = PhoenixMessage(joinRef: joinRef, ref: nil, topic: topic, event: event, payload: payload)
        server.send(to: id, bytes: m.encodeText(), binary: false, onWritten: nil)
        return true
    }

    /// Several pushes of one event at once, handed to the service thread in one go (a log backlog, a batch of
    /// lines): far cheaper than one `push` each. Returns false when the socket has not joined the topic.
    @discardableResult
    public func push(topic: String, event: String, payloads: [JSON]) -> Bool {
        guard !payloads.isEmpty else { return true }
        guard let frames = frames(topic: topic, event: event, payloads: payloads), let server else { return false }
        server.send(to: id, frames: frames, onLastWritten: nil)
        return true
    }

    /// Like `push(topic:event:payloads:)`, then waits until the last frame is written to the kernel (true) or
    /// dropped because the socket closed (false). Lets a sender of a long backlog go at the client's pace.
    public func pushAndWait(topic: String, event: String, payloads: [JSON]) async -> Bool {
        guard !payloads.isEmpty else { return true }
        guard let frames = frames(topic: topic, event: event, payloads: payloads), let server else { return false }
        return await withCheckedContinuation { (c: CheckedContinuation<Bool, Never>) in
            server.send(to: id, frames: frames, onLastWritten: { c.resume(returning: $0) })
        }
    }

    /// A push whose payload is already encoded JSON (one frame; the caller vouches for the bytes).
    @discardableResult
    public func push(topic: String, event: String, rawPayload: [UInt8]) -> Bool {
        guard let joinRef = state.joinRef(topic), let server else { return false }
        server.send(to: id, bytes: PhoenixMessage.encodeText(joinRef: joinRef, topic: topic, event: event, rawPayload: rawPayload),
                    binary: false, onWritten: nil)
        return true
    }

    /// One frame per payload, returning once the last is written (false: the socket closed first).
    public func pushAndWait(topic: String, event: String, rawPayloads: [[UInt8]]) async -> Bool {
        guard !rawPayloads.isEmpty else { return true }
        guard let joinRef = state.joinRef(topic), let server else { return false }
        let frames = rawPayloads.map { PhoenixMessage.encodeText(joinRef: joinRef, topic: topic, event: event, rawPayload: $0) }
        return await withCheckedContinuation { (c: CheckedContinuation<Bool, Never>) in
            server.send(to: id, frames: frames, onLastWritten: { c.resume(returning: $0) })
        }
    }

    private func frames(topic: String, event: String, payloads: [JSON]) -> [[UInt8]]? {
        guard let joinRef = state.joinRef(topic) else { return nil }
        return payloads.map { PhoenixMessage(joinRef: joinRef, ref: nil, topic: topic, event: event, payload: $0).encodeText() }
    }

    /// Returns once the server's service thread has taken every frame handed to it so far (see
    /// `ChannelServer.handedOver()`).
    public func handedOver() async { await server?.handedOver() }

    /// Closes the channel from the server side (`phx_close`).
    public func closeChannel(topic: String) {
        guard let joinRef = state.joinRef(topic), let server else { return }
        state.set(topic, nil)
        server.unsubscribe(topic: topic, socket: self)
        let m = PhoenixMessage(joinRef: joinRef, ref: joinRef, topic: topic, event: "phx_close", payload: .object([:]))
        server.send(to: id, bytes: m.encodeText(), binary: false, onWritten: nil)
    }

    /// Closes the WebSocket with a close code.
    public func close(code: Int = 1000, reason: String = "") {
        server?.close(connection: id, code: code, reason: reason)
    }
}

final class LockedJoins: Sendable {
    private let lock = Lock()
    nonisolated(unsafe) private var refs: [String: String] = [:]
    var topics: [String] { lock.withLock { Array(refs.keys) } }
    func joinRef(_ topic: String) -> String? { lock.withLock { refs[topic] } }
    func set(_ topic: String, _ ref: String?) { lock.withLock { refs[topic] = ref } }
}
