/// Phoenix Channels V2 semantics on the server for one received message, with no socket, handler or thread: what it
/// comes to, given the join ref the socket holds for its topic and whether some channel route matches the topic.
/// `ChannelServer` carries the answer out (calling the route's handler, replying, keeping the join ref).
enum PhoenixServerRules {
    enum Step: Equatable {
        /// `phoenix` `heartbeat`: an ok reply.
        case heartbeat
        /// Another event on the `phoenix` topic: nothing.
        case ignore
        /// An error reply with this reason (and join ref).
        case refuse(reason: String, joinRef: String?)
        /// The same join again (its reply was lost): an ok reply, nothing runs twice.
        case repeatedJoin(joinRef: String?)
        /// Run the route's join; on ok the socket's join ref for the topic becomes `newJoinRef`. `replacing`: the topic
        /// was joined under another ref, whose channel is closed (`phx_close`) and left first, as Phoenix does.
        case join(newJoinRef: String, replacing: Bool)
        /// Forget the join, run the route's leave (when a route matches), reply ok with the join ref it had.
        case leave(joinRef: String)
        /// Hand the event to the route's handler; its reply carries the channel's join ref.
        case event(joinRef: String)
    }

    /// `joined`: the join ref the socket holds for the message's topic (nil: not joined); `routed`: some channel
    /// route matches the topic; `binary`: the message came as a binary frame with a binary payload.
    static func step(topic: String, event: String, joinRef: String?, ref: String?, binary: Bool, joined: String?, routed: Bool) -> Step {
        if topic == "phoenix" { return event == "heartbeat" ? .heartbeat : .ignore }
        if binary { return .refuse(reason: "binary pushes are not supported", joinRef: joinRef) }
        switch event {
        case "phx_join":
            guard routed else { return .refuse(reason: "unmatched topic", joinRef: joinRef) }
            let incoming = joinRef ?? ref ?? ""
            guard let current = joined else { return .join(newJoinRef: incoming, replacing: false) }
            return current == incoming ? .repeatedJoin(joinRef: joinRef) : .join(newJoinRef: incoming, replacing: true)
        case "phx_leave":
            guard let current = joined else { return .refuse(reason: "unmatched topic", joinRef: joinRef) }
            return .leave(joinRef: current)
        default:
            guard let current = joined, routed else { return .refuse(reason: "unmatched topic", joinRef: joinRef) }
            return .event(joinRef: current)
        }
    }
}
