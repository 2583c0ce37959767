import Testing
@testable import Channels

/// The server's Phoenix semantics for one message, without sockets or handlers.
@Suite("Phoenix server rules")
struct PhoenixServerRulesTests {
    typealias R = PhoenixServerRules

    func step(_ event: String, topic: String = "room:1", joinRef: String? = "5", ref: String? = "5", binary: Bool = false,
              joined: String? = nil, routed: Bool = true) -> R.Step {
        R.step(topic: topic, event: event, joinRef: joinRef, ref: ref, binary: binary, joined: joined, routed: routed)
    }

    @Test("the phoenix topic: heartbeats are answered, anything else there is ignored")
    func phoenixTopic() {
        #expect(step("heartbeat", topic: "phoenix", joinRef: nil) == .heartbeat)
        #expect(step("other", topic: "phoenix") == .ignore)
    }

    @Test("joins: an unmatched topic is refused, a first join runs, the same join again is answered, a new one replaces")
    func joins() {
        #expect(step("phx_join", routed: false) == .refuse(reason: "unmatched topic", joinRef: "5"))
        #expect(step("phx_join") == .join(newJoinRef: "5", replacing: false))
        #expect(step("phx_join", joinRef: nil, ref: "9") == .join(newJoinRef: "9", replacing: false), "no join ref: the ref stands in")
        #expect(step("phx_join", joined: "5") == .repeatedJoin(joinRef: "5"))
        #expect(step("phx_join", joinRef: nil, ref: "5", joined: "5") == .repeatedJoin(joinRef: nil))
        #expect(step("phx_join", joinRef: "7", ref: "7", joined: "5") == .join(newJoinRef: "7", replacing: true))
    }

    @Test("leaves: of a joined topic with the join's ref; of any other, refused")
    func leaves() {
        #expect(step("phx_leave", joinRef: "8", joined: "5") == .leave(joinRef: "5"))
        #expect(step("phx_leave", joinRef: "8", joined: "5", routed: false) == .leave(joinRef: "5"), "a route removed since")
        #expect(step("phx_leave") == .refuse(reason: "unmatched topic", joinRef: "5"))
    }

    @Test("events go to a joined, routed topic's handler with the channel's join ref; otherwise refused")
    func events() {
        #expect(step("claim", joinRef: "2", joined: "5") == .event(joinRef: "5"))
        #expect(step("claim") == .refuse(reason: "unmatched topic", joinRef: "5"))
        #expect(step("claim", joined: "5", routed: false) == .refuse(reason: "unmatched topic", joinRef: "5"))
        #expect(step("claim", binary: true, joined: "5") == .refuse(reason: "binary pushes are not supported", joinRef: "5"))
        #expect(step("phx_join", binary: true) == .refuse(reason: "binary pushes are not supported", joinRef: "5"))
    }
}
