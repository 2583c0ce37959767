import Foundation
import Testing
@testable import Channels

/// The client's Phoenix protocol state without sockets: joins across lost connections, push routing by join ref,
/// replies and deadlines, heartbeats. Waiters are plain strings here.
@Suite("Phoenix client state")
struct PhoenixClientStateTests {
    typealias State = PhoenixClientState<String>
    let t0 = ContinuousClock.now

    func reply(_ ref: String, topic: String = "t") -> PhoenixMessage {
        PhoenixMessage(joinRef: nil, ref: ref, topic: topic, event: "phx_reply", payload: ["status": "ok", "response": [:]])
    }

    func push(_ topic: String, joinRef: String?, event: String = "ev") -> PhoenixMessage {
        PhoenixMessage(joinRef: joinRef, ref: nil, topic: topic, event: event, payload: [:])
    }

    /// Whether `m` goes to a handler.
    func routed(_ s: inout State, _ m: PhoenixMessage) -> Bool {
        if case .push = s.receive(m) { return true }
        return false
    }

    func joined(_ s: inout State, _ topic: String) -> String {
        let (ref, gen) = s.beginJoin(topic: topic, payload: { [:] }, onMessage: { _ in })
        #expect(s.settle(topic: topic, joinRef: ref, generation: gen) == false)
        return ref
    }

    @Test("a join settled on its own connection is joined; pushes with its join ref, the one in flight, or none reach it")
    func joinAndRoute() {
        var s = State()
        s.connected()
        let (ref, gen) = s.beginJoin(topic: "room", payload: { [:] }, onMessage: { _ in })
        #expect(routed(&s, push("room", joinRef: ref)), "a push right behind the join's reply, before it settled")
        #expect(s.joinRef("room") == nil)
        #expect(s.settle(topic: "room", joinRef: ref, generation: gen) == false)
        #expect(s.joinRef("room") == ref)
        #expect(routed(&s, push("room", joinRef: ref)))
        #expect(routed(&s, push("room", joinRef: nil)))
        #expect(!routed(&s, push("room", joinRef: "999")), "an older join's push")
        #expect(!routed(&s, push("other", joinRef: ref)), "a topic not joined")
        #expect(routed(&s, push("room", joinRef: ref, event: "phx_close")))
        #expect(s.joinRef("room") == nil, "phx_close ends the join")
    }

    @Test("a failed join is forgotten, unless a newer join of the topic took its place")
    func joinFailed() {
        var s = State()
        s.connected()
        let (first, _) = s.beginJoin(topic: "room", payload: { [:] }, onMessage: { _ in })
        let (second, gen) = s.beginJoin(topic: "room", payload: { [:] }, onMessage: { _ in })
        s.joinFailed(topic: "room", joinRef: first)
        #expect(s.channels["room"] != nil)
        #expect(s.settle(topic: "room", joinRef: first, generation: gen) == false)
        #expect(s.joinRef("room") == nil, "an older join's settle does nothing")
        s.joinFailed(topic: "room", joinRef: second)
        #expect(s.channels["room"] == nil)
    }

    @Test("a lost connection fails every waiter; joined topics are joined again on the next, once each, with new refs")
    func rejoinAfterLoss() {
        var s = State()
        s.connected()
        let a = joined(&s, "a")
        _ = joined(&s, "b")
        s.awaitReply(ref: "r1", waiter: "w1", deadline: t0 + .seconds(10))
        s.awaitReply(ref: "r2", waiter: "w2", deadline: t0 + .seconds(10))
        #expect(Set(s.connectionLost()) == ["w1", "w2"])
        #expect(s.pendingCount == 0)
        #expect(s.joinRef("a") == nil)
        s.connected()
        #expect(s.rejoinCandidates() == ["a", "b"])
        let ra = s.takeRejoin("a")
        #expect(ra != nil && ra?.joinRef != a && ra?.generation == 1)
        #expect(s.takeRejoin("a") == nil, "taken once")
        #expect(s.rejoinCandidates() == ["b"])
        #expect(routed(&s, push("a", joinRef: ra?.joinRef)), "the rejoin in flight")
        #expect(!routed(&s, push("a", joinRef: a)), "the lost connection's join")
        // The connection goes mid-pass and another opens: b, not yet taken, goes with the new connection.
        _ = s.connectionLost()
        s.connected()
        #expect(s.takeRejoin("b")?.generation == 2)
        s.rejoinInterrupted(topic: "a", joinRef: ra!.joinRef)
        #expect(s.rejoinCandidates() == ["a"], "its connection went before the reply: tried again")
    }

    @Test("a join answered after its connection went is joined again on the next; at once when that one is already open")
    func settleAcrossConnections() {
        var s = State()
        s.connected()
        let (ref, gen) = s.beginJoin(topic: "room", payload: { [:] }, onMessage: { _ in })
        _ = s.connectionLost()
        // The first join was in flight, never joined: the loss does not mark it (its waiter's failure does, if
        // it comes to that); but a reply that did come back settles it as to be joined again.
        #expect(s.rejoinCandidates().isEmpty)
        #expect(s.settle(topic: "room", joinRef: ref, generation: gen) == false, "not connected: the next connection's pass joins it")
        #expect(s.channels["room"]?.needsRejoin == true)
        var t = State()
        t.connected()
        let (ref2, gen2) = t.beginJoin(topic: "room", payload: { [:] }, onMessage: { _ in })
        _ = t.connectionLost()
        t.connected()
        #expect(t.settle(topic: "room", joinRef: ref2, generation: gen2) == true, "connected again already: rejoin now")
        #expect(t.joinRef("room") == nil)
        #expect(t.rejoinCandidates() == ["room"])
    }

    @Test("replies reach their waiter once; deadlines expire waiters, whose late replies find nobody")
    func repliesAndDeadlines() {
        var s = State()
        s.connected()
        s.awaitReply(ref: "1", waiter: "soon", deadline: t0 + .milliseconds(100))
        s.awaitReply(ref: "2", waiter: "later", deadline: t0 + .seconds(10))
        #expect(s.expired(now: t0).isEmpty)
        #expect(s.expired(now: t0 + .milliseconds(100)) == ["soon"])
        guard case .reply(let ref, let waiter) = s.receive(reply("1")) else { Issue.record("not a reply"); return }
        #expect(ref == "1" && waiter == nil, "timed out already")
        guard case .reply(_, let w2) = s.receive(reply("2")) else { Issue.record("not a reply"); return }
        #expect(w2 == "later")
        guard case .reply(_, let again) = s.receive(reply("2")) else { Issue.record("not a reply"); return }
        #expect(again == nil, "a second reply finds nobody")
        #expect(s.pendingCount == 0)
    }

    @Test("heartbeats: none while disconnected; one in flight at a time; unanswered by the next interval means reconnect")
    func heartbeats() {
        var s = State()
        #expect(s.heartbeatDue() == .none)
        s.connected()
        guard case .send(let first) = s.heartbeatDue() else { Issue.record("no heartbeat"); return }
        #expect(s.heartbeatDue() == .reconnect, "the first is unanswered")
        _ = s.receive(reply(first, topic: "phoenix"))
        guard case .send(let second) = s.heartbeatDue() else { Issue.record("no heartbeat after a reply"); return }
        #expect(second != first)
        s.heartbeatEnded(ref: second)
        guard case .send = s.heartbeatDue() else { Issue.record("no heartbeat after the last ended"); return }
        _ = s.connectionLost()
        #expect(s.heartbeatDue() == .none)
        s.connected()
        guard case .send = s.heartbeatDue() else { Issue.record("a new connection starts afresh"); return }
    }

    @Test("refs are unique and increasing across joins, requests and heartbeats")
    func refs() {
        var s = State()
        s.connected()
        var seen: [Int] = []
        for i in 0..<30 {
            switch i % 3 {
            case 0: seen.append(Int(s.beginJoin(topic: "t\(i)", payload: { [:] }, onMessage: { _ in }).joinRef)!)
            case 1: seen.append(Int(s.nextRef())!)
            default:
                if case .send(let r) = s.heartbeatDue() { seen.append(Int(r)!) }
                s.heartbeatEnded(ref: String(seen.last!))
            }
        }
        #expect(seen == seen.sorted() && Set(seen).count == seen.count)
    }
}
