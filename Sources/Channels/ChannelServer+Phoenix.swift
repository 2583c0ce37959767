internal import CLibWebSockets
import Foundation

/// Phoenix Channels on the server: a connection's messages handled in order in its own task, the semantics of each
/// (`PhoenixServerRules`), replies. The transport (lws callbacks, connections, sending) is in ChannelServer.swift.
extension ChannelServer {
    /// Handles the inbox's messages in a task that ends when it is empty (`Inbox`); the first task of a connection
    /// runs `onConnect` before them, the one that finds it closed waits for every message in flight, then leaves its
    /// topics and runs `onDisconnect`. Each message is handled in a child task, after the one before it on the same
    /// topic (`TopicLanes`): different topics' messages are handled at the same time. The task runs on the cooperative
    /// pool, or on the service thread itself when the endpoint asks (`SocketEndpoint.handlesOnServiceThread`).
    func handle(_ inbox: Inbox, socket: ChannelSocket, endpoint: SocketEndpoint, connection id: Int, connecting: Bool) {
        Task(executorPreference: endpoint.handlesOnServiceThread ? serviceExecutor : nil) { [self] in
            if connecting { await endpoint.onConnect?(socket) }
            // Discarding: a finished child is dropped at once (a plain group keeps each one's result until it is
            // taken, and a busy socket's task may run for a long time).
            await withDiscardingTaskGroup { group in
                while true {
                    switch inbox.next() {
                    case .message(let bytes, let binary):
                        // At most `maxInFlight` messages handled at once: a socket naming ever new topics waits here.
                        await inbox.lanes.room(below: TopicLanes.maxInFlight)
                        // A big frame (a final state, a large log batch) is read and handled on the cooperative pool
                        // even on an endpoint that handles on the service thread: that would hold up every socket.
                        // (A nil preference changes nothing.)
                        let offThread: (any TaskExecutor)? =
                            endpoint.handlesOnServiceThread && bytes.count > Self.serviceThreadFrameLimit ? globalConcurrentExecutor : nil
                        let parsed = await withTaskExecutorPreference(offThread) { parse(bytes, binary: binary, endpoint: endpoint) }
                        let topic = parsed.topic
                        let (after, done) = inbox.lanes.enter(topic)
                        // Started on this thread, up to its first wait (a commit, the topic's message before it):
                        // no hop to another thread for a message whose lane is free.
                        group.addImmediateTask { [self] in
                            await after?.wait()
                            await withTaskExecutorPreference(offThread) {
                                await handleMessage(parsed, bytes, socket: socket, endpoint: endpoint, connection: id)
                            }
                            inbox.lanes.leave(topic, done)
                            // Reading was paused while the inbox was over the limit: resume once half of it is handled.
                            if inbox.handled(bytes.count, resumeBelow: configuration.maxQueuedBytesPerConnection / 2) {
                                // On the service thread, unless reading paused again meanwhile (its pause must stand).
                                loop.post { [self] in
                                    guard let conn = connections[id], !conn.inbox.isPaused else { return }
                                    lws_rx_flow_control(conn.wsi, 1)
                                }
                            }
                        }
                    case .closed:
                        // Every message the connection sent is handled first, this task's and an earlier one's.
                        await inbox.lanes.drained()
                        for topic in socket.joinedTopics {
                            unsubscribe(topic: topic, socket: socket)
                            if let route = endpoint.channels.first(where: { $0.matches(topic) }) {
                                await route.handler.leave(topic: topic, socket: socket)
                            }
                            socket.setJoinRef(topic, nil)
                        }
                        await endpoint.onDisconnect?(socket)
                        return
                    case .idle:
                        return
                    }
                }
            }
        }
    }

    /// Frames over this size are handled on the cooperative pool even on an endpoint that handles on the service thread.
    static let serviceThreadFrameLimit = 1 << 20

    /// A frame read as far as its topic: its envelope (a text frame on an endpoint with raw readers, whose payload
    /// is parsed later or by its handler), the whole message, or why it is malformed.
    enum Parsed: Sendable {
        case envelope(PhoenixMessage.Envelope)
        case message(PhoenixMessage)
        case malformed(any Error)

        /// The lane: malformed frames share one (the first closes the socket).
        var topic: String {
            switch self {
            case .envelope(let e): e.topic
            case .message(let m): m.topic
            case .malformed: "\u{0}malformed"
            }
        }
    }

    /// Decoded in the connection's task, not in the lws callback (on the pool, or between the service thread's passes).
    func parse(_ bytes: [UInt8], binary: Bool, endpoint: SocketEndpoint) -> Parsed {
        // On an endpoint with raw readers the envelope is read first, and only once: a raw event's payload goes
        // to its handler unparsed, any other's is parsed on its own.
        if !binary, endpoint.readsRaw, let envelope = try? PhoenixMessage.envelope(text: bytes) { return .envelope(envelope) }
        do {
            return .message(binary ? try PhoenixMessage.decode(binary: bytes) : try PhoenixMessage.decode(text: bytes))
        } catch {
            return .malformed(error)
        }
    }

    func handleMessage(_ parsed: Parsed, _ bytes: [UInt8], socket: ChannelSocket, endpoint: SocketEndpoint, connection id: Int) async {
        do {
            switch parsed {
            case .envelope(let envelope):
                if let handler = rawHandler(envelope, socket: socket, endpoint: endpoint) {
                    try await processRaw(envelope, bytes, handler: handler, socket: socket)
                } else {
                    await process(try PhoenixMessage.message(envelope, frame: bytes), socket: socket, endpoint: endpoint)
                }
            case .message(let message):
                await process(message, socket: socket, endpoint: endpoint)
            case .malformed(let error):
                throw error
            }
        } catch {
            logger.notice("closing a socket: malformed message", metadata: ["connection": "\(id)", "error": "\(error)"])
            close(connection: id, code: 1003, reason: "malformed message: \(error)")
        }
    }

    /// The joined topic's handler, when it reads this event's payload itself (a text frame only).
    func rawHandler(_ e: PhoenixMessage.Envelope, socket: ChannelSocket, endpoint: SocketEndpoint) -> (any RawPayloadHandler)? {
        guard e.topic != "phoenix", e.event != "phx_join", e.event != "phx_leave", socket.joinRef(e.topic) != nil,
            let handler = endpoint.channels.first(where: { $0.matches(e.topic) })?.handler as? any RawPayloadHandler,
            handler.rawPayloadEvents.contains(e.event)
        else { return nil }
        return handler
    }

    /// An event whose payload its handler reads from the frame's bytes; a payload that is not JSON closes the socket,
    /// as any malformed message does.
    func processRaw(_ e: PhoenixMessage.Envelope, _ bytes: [UInt8], handler: any RawPayloadHandler,
                            socket: ChannelSocket) async throws
    {
        logger.debug("socket message", metadata: ["connection": "\(socket.id)", "topic": "\(e.topic)", "event": "\(e.event)",
                                                  "ref": "\(e.ref ?? "")"])
        let joinRef = socket.joinRef(e.topic)
        switch await handler.handle(event: e.event, topic: e.topic, rawPayload: bytes[e.payload], socket: socket) {
        case .malformed(let error): throw PhoenixMessage.frameError(bytes, else: error)
        case .reply(let r?): reply(r, joinRef: joinRef, ref: e.ref, topic: e.topic, socket: socket)
        case .reply(nil): break
        }
    }

    func reply(_ r: ChannelReply, joinRef: String?, ref: String?, topic: String, socket: ChannelSocket) {
        let bytes: [UInt8]
        var binary = false
        switch r.body {
        case .json(let j):
            bytes = PhoenixMessage.reply(joinRef: joinRef, ref: ref, topic: topic, status: r.status, response: j).encodeText()
        case .binary(let raw):
            bytes = PhoenixMessage.encodeBinary(kind: .reply, joinRef: joinRef, ref: ref, topic: topic, status: r.status,
                                                payload: raw)
            binary = true
        }
        send(to: socket.id, bytes: bytes, binary: binary, onWritten: r.onDelivered)
    }

    /// Phoenix semantics for one message, in the connection's own task.
    func process(_ m: PhoenixMessage, socket: ChannelSocket, endpoint: SocketEndpoint) async {
        // What arrived, never its payload (join payloads carry tokens; events carry states and credentials).
        logger.debug("socket message", metadata: ["connection": "\(socket.id)", "topic": "\(m.topic)", "event": "\(m.event)",
                                                  "ref": "\(m.ref ?? "")"])
        func reply(_ r: ChannelReply, joinRef: String?) {
            self.reply(r, joinRef: joinRef, ref: m.ref, topic: m.topic, socket: socket)
        }

        let route = endpoint.channels.first(where: { $0.matches(m.topic) })
        // A binary push is refused below: only JSON payloads reach the handlers.
        var payload = JSON.null
        if case .json(let j) = m.payload { payload = j }
        let binary = if case .binary = m.payload { true } else { false }
        switch PhoenixServerRules.step(topic: m.topic, event: m.event, joinRef: m.joinRef, ref: m.ref, binary: binary,
                                       joined: socket.joinRef(m.topic), routed: route != nil) {
        case .heartbeat:
            reply(.ok(), joinRef: nil)
        case .ignore:
            break
        case .refuse(let reason, let joinRef):
            reply(.error(reason: reason), joinRef: joinRef)
        case .repeatedJoin(let joinRef):
            reply(.ok(), joinRef: joinRef)
        case .join(let newJoinRef, let replacing):
            guard let route else { return }
            if replacing {
                socket.closeChannel(topic: m.topic)
                await route.handler.leave(topic: m.topic, socket: socket)
            }
            switch await route.handler.join(topic: m.topic, payload: payload, socket: socket) {
            case .ok(let response):
                socket.setJoinRef(m.topic, newJoinRef)
                subscribe(topic: m.topic, socket: socket)
                reply(.ok(response), joinRef: m.joinRef)
                await route.handler.joined(topic: m.topic, socket: socket)
            case .error(let response):
                reply(.error(response), joinRef: m.joinRef)
            }
        case .leave(let joinRef):
            socket.setJoinRef(m.topic, nil)
            unsubscribe(topic: m.topic, socket: socket)
            if let route { await route.handler.leave(topic: m.topic, socket: socket) }
            reply(.ok(), joinRef: joinRef)
        case .event(let joinRef):
            guard let route else { return }
            if let r = await route.handler.handle(event: m.event, topic: m.topic, payload: payload, socket: socket) {
                reply(r, joinRef: joinRef)
            }
        }
    }
}
