/// The Phoenix Channels V2 client's protocol state, with no socket, thread or clock of its own: message refs, joins
/// (in flight, joined, to be joined again after a reconnect), the heartbeat in flight, and the requests waiting for
/// their replies with their deadlines. `ChannelClient` keeps one under its lock, tells it what happened (a join
/// sent, a reply or push received, the connection opened or lost, time passed) and carries out what it answers
/// (resume these waiters, hand this push to that handler, rejoin these topics, reconnect). `Waiter` is what a
/// request's sender waits on (a continuation in the client; anything in tests).
struct PhoenixClientState<Waiter> {
    struct Channel {
        var joinRef: String?
        /// The ref of a join in flight: a push can arrive right behind its reply, before `joinRef` is set.
        var pendingJoinRef: String?
        /// Joined on a connection that has since been lost: the next connection joins it again. A channel whose
        /// first join is still in flight is not, or a join made just after the connection opens would go twice.
        var needsRejoin = false
        var payload: @Sendable () -> JSON
        var onMessage: @Sendable (PhoenixMessage) -> Void
    }

    /// A join to send on the connection now open.
    struct Rejoin {
        var topic: String
        var joinRef: String
        var payload: @Sendable () -> JSON
        var generation: Int
    }

    /// What a received message comes to.
    enum Incoming {
        /// The reply to a request; `waiter` nil when nobody waits any more (timed out, or the connection went).
        case reply(ref: String, waiter: Waiter?)
        /// A push (or `phx_close`/`phx_error`) for a joined topic's handler.
        case push(@Sendable (PhoenixMessage) -> Void)
        /// For no topic joined by this join ref: dropped.
        case ignored
    }

    enum HeartbeatAction: Equatable {
        /// Not connected: nothing to send.
        case none
        /// The last heartbeat was never answered: the connection is dead, reconnect.
        case reconnect
        /// Send a heartbeat with this ref.
        case send(ref: String)
    }

    private(set) var channels: [String: Channel] = [:]
    private var pending: [String: (waiter: Waiter, deadline: ContinuousClock.Instant)] = [:]
    private var refCounter = 0
    private(set) var isConnected = false
    /// Counts lost connections: a join answered on a connection that is gone by the time its waiter runs is not
    /// joined on the current one.
    private(set) var generation = 0
    private var heartbeatRef: String?

    var pendingCount: Int { pending.count }

    mutating func nextRef() -> String {
        refCounter += 1
        return String(refCounter)
    }

    // MARK: Joins

    /// A join of `topic` is about to be sent: its ref, and the connection's generation to settle it with.
    mutating func beginJoin(topic: String, payload: @escaping @Sendable () -> JSON,
                            onMessage: @escaping @Sendable (PhoenixMessage) -> Void) -> (joinRef: String, generation: Int) {
        let joinRef = nextRef()
        channels[topic] = Channel(joinRef: nil, pendingJoinRef: joinRef, payload: payload, onMessage: onMessage)
        return (joinRef, generation)
    }

    /// The join failed or was refused: forgotten (unless a newer join of the topic took its place), so a retry
    /// starts clean.
    mutating func joinFailed(topic: String, joinRef: String) {
        if channels[topic]?.pendingJoinRef == joinRef { channels[topic] = nil }
    }

    /// A join of `topic` was accepted on connection `generation`: joined now, or, when that connection has gone in
    /// the meantime, to be joined again on the next one. Only if no newer join of the topic took its place. True
    /// when a connection is open again already (its rejoin pass may have run before this): rejoin now.
    mutating func settle(topic: String, joinRef: String, generation gen: Int) -> Bool {
        guard channels[topic]?.pendingJoinRef == joinRef else { return false }
        if gen == generation && isConnected {
            channels[topic]?.joinRef = joinRef
            return false
        }
        channels[topic]?.needsRejoin = true
        return isConnected
    }

    /// Leaves `topic`: forgotten at once; its join ref, for the `phx_leave`.
    mutating func leave(topic: String) -> String? { channels.removeValue(forKey: topic)?.joinRef }

    func joinRef(_ topic: String) -> String? { channels[topic]?.joinRef }

    /// The topics to join again on the connection now open. Each is taken with `takeRejoin` just before its join is
    /// sent, so a join goes with the connection current then (a pass interrupted by a reconnect leaves the rest to the
    /// next connection's pass, not to a join tagged with the old connection).
    func rejoinCandidates() -> [String] {
        channels.filter { $0.value.needsRejoin }.map(\.key).sorted()
    }

    /// `topic`'s rejoin, marked as in flight, when it still needs one.
    mutating func takeRejoin(_ topic: String) -> Rejoin? {
        guard channels[topic]?.needsRejoin == true, let payload = channels[topic]?.payload else { return nil }
        let joinRef = nextRef()
        channels[topic]?.needsRejoin = false
        channels[topic]?.pendingJoinRef = joinRef
        return Rejoin(topic: topic, joinRef: joinRef, payload: payload, generation: generation)
    }

    /// A rejoin's connection went before its reply: the next connection tries again.
    mutating func rejoinInterrupted(topic: String, joinRef: String) {
        if channels[topic]?.pendingJoinRef == joinRef { channels[topic]?.needsRejoin = true }
    }

    // MARK: Requests

    /// A request sent with `ref` waits for its reply until `deadline`.
    mutating func awaitReply(ref: String, waiter: Waiter, deadline: ContinuousClock.Instant) {
        pending[ref] = (waiter, deadline)
    }

    /// The waiter for `ref`'s reply, no longer waiting.
    mutating func takeWaiter(_ ref: String) -> Waiter? { pending.removeValue(forKey: ref)?.waiter }

    /// The waiters whose deadline has come by `now`, no longer waiting.
    mutating func expired(now: ContinuousClock.Instant) -> [Waiter] {
        let refs = pending.filter { $0.value.deadline <= now }.map(\.key)
        return refs.compactMap { pending.removeValue(forKey: $0)?.waiter }
    }

    // MARK: The connection

    mutating func connected() {
        isConnected = true
        heartbeatRef = nil
    }

    /// Every waiter, no longer waiting (the client is closing).
    mutating func takeAllWaiters() -> [Waiter] {
        let waiters = pending.values.map(\.waiter)
        pending = [:]
        return waiters
    }

    /// The connection is gone: every waiter fails (returned), joined topics are to be joined again.
    mutating func connectionLost() -> [Waiter] {
        isConnected = false
        generation += 1
        heartbeatRef = nil
        for k in channels.keys where channels[k]?.joinRef != nil {
            channels[k]?.joinRef = nil
            channels[k]?.needsRejoin = true
        }
        return takeAllWaiters()
    }

    /// Where a received message goes. A push is for its topic's handler when its join ref is the channel's, the
    /// join in flight's, or none; `phx_close`/`phx_error` also end the channel's join.
    mutating func receive(_ m: PhoenixMessage) -> Incoming {
        if m.event == "phx_reply", let ref = m.ref {
            if ref == heartbeatRef { heartbeatRef = nil }
            return .reply(ref: ref, waiter: takeWaiter(ref))
        }
        guard let c = channels[m.topic], c.joinRef == m.joinRef || c.pendingJoinRef == m.joinRef || m.joinRef == nil else {
            return .ignored
        }
        if m.event == "phx_close" || m.event == "phx_error" { channels[m.topic]?.joinRef = nil }
        return .push(c.onMessage)
    }

    // MARK: Heartbeats

    /// The heartbeat interval has passed.
    mutating func heartbeatDue() -> HeartbeatAction {
        guard isConnected else { return .none }
        if heartbeatRef != nil { return .reconnect }
        let ref = nextRef()
        heartbeatRef = ref
        return .send(ref: ref)
    }

    /// The heartbeat `ref` is over: answered, timed out or never sent (its connection went). The next one due is sent.
    mutating func heartbeatEnded(ref: String) {
        if heartbeatRef == ref { heartbeatRef = nil }
    }
}
