import Channels
import Foundation
import JWT
import LightningProtocol
import Testing
import TestSupport
@testable import RuntimeWorker

/// Lightning's side of the worker socket, played by the test over a real loopback socket: the first claim hands out
/// one attempt with its plan and input (claim:checkout), the attempt's `run:<id>` join is held until the test answers
/// it, and every event on the attempt's topic is recorded.
final class HeldJoinLightning: ChannelHandler, @unchecked Sendable {
    let attemptID = "a-\(UUID().uuidString.lowercased())"
    /// False: the join is accepted at once.
    let holdJoin: Bool
    /// The body of the attempt's one job (FakeRunner's commands).
    let body: String
    /// Pushes `work-available` while answering the first claim (before its reply).
    let nudgeDuringFirstClaim: Bool
    /// Hands out an attempt (a new id each time) on every claim, not only the first.
    let everyClaim: Bool
    private let lock = NSLock()
    private var claims = 0
    private var claimTimes: [ContinuousClock.Instant] = []
    private var joinAsked = false
    private var answer: CheckedContinuation<JoinResult, Never>?
    private var events: [String] = []

    init(holdJoin: Bool = true, body: String = "print ran", nudgeDuringFirstClaim: Bool = false, everyClaim: Bool = false) {
        self.everyClaim = everyClaim
        self.holdJoin = holdJoin
        self.body = body
        self.nudgeDuringFirstClaim = nudgeDuringFirstClaim
    }

    var claimCount: Int { lock.withLock { claims } }
    var claimedAt: [ContinuousClock.Instant] { lock.withLock { claimTimes } }
    var joinWasAsked: Bool { lock.withLock { joinAsked } }
    var attemptEvents: [String] { lock.withLock { events } }

    /// Answers the held `run:<id>` join.
    func answerJoin(_ result: JoinResult) {
        let c = lock.withLock { () -> CheckedContinuation<JoinResult, Never>? in
            defer { answer = nil }
            return answer
        }
        c?.resume(returning: result)
    }

    func join(topic: String, payload: JSON, socket: ChannelSocket) async -> JoinResult {
        guard topic == Wire.Topic.attempt(attemptID) else { return .ok([:]) }
        guard holdJoin else {
            lock.withLock { joinAsked = true }
            return .ok([:])
        }
        return await withCheckedContinuation { c in
            lock.withLock {
                answer = c
                joinAsked = true
            }
        }
    }

    func handle(event: String, topic: String, payload: JSON, socket: ChannelSocket) async -> ChannelReply? {
        if topic == Wire.Topic.queue {
            guard event == Wire.Event.claim else { return .ok() }
            let first = lock.withLock { () -> Bool in
                claims += 1
                claimTimes.append(.now)
                return claims == 1
            }
            guard first || everyClaim else { return .ok(["runs": []]) }
            let id = first ? attemptID : "a-\(UUID().uuidString.lowercased())"
            if nudgeDuringFirstClaim { _ = socket.push(topic: Wire.Topic.queue, event: Wire.Event.workAvailable, payload: [:]) }
            let plan = makePlan([("only", body)], edges: [])
            return .ok(["runs": [["id": .string(id), "token": "not-checked", "plan": plan.wire, "dataclip": ["x": 1]]]])
        }
        lock.withLock { events.append(event) }
        return .ok()
    }

    func leave(topic: String, socket: ChannelSocket) async {}
    func joined(topic: String, socket: ChannelSocket) async {}
}

/// The fake runner, counting the steps it was asked to start.
final class CountingRunner: StepRunning, @unchecked Sendable {
    private let lock = NSLock()
    private var n = 0
    var started: Int { lock.withLock { n } }
    func stepPath(_ hostPath: String, workDirectory: String) -> String { hostPath }
    func run(_ launch: StepLaunch, control: StepControl, onLines: @escaping @Sendable ([(StepStream, String)]) -> Void)
        async throws -> StepTermination
    {
        lock.withLock { n += 1 }
        return try await FakeRunner().run(launch, control: control, onLines: onLines)
    }
}

/// Polls `condition` until it holds; fails the test after `timeout` (far longer than any of these need).
func eventually(_ what: String, timeout: Duration = .seconds(30), _ condition: () -> Bool) async throws {
    let deadline = ContinuousClock.now + timeout
    while !condition() {
        guard ContinuousClock.now < deadline else {
            Issue.record("timed out waiting until \(what)")
            throw CancellationError()
        }
        try await Task.sleep(for: .milliseconds(10))
    }
}

@Suite("Claims and the run:<id> join, against a fake Lightning on a real socket")
struct ClaimAndJoinTests {
    struct Setup {
        let lightning: HeldJoinLightning
        let runner = CountingRunner()
        let server: ChannelServer
        let worker: Worker
        let task: Task<Void, any Error>
        let dir: URL

        init(capacity: Int = 1, lightning: HeldJoinLightning = HeldJoinLightning(), claimPoll: Duration = .seconds(1),
             publicKey: JWTKey? = nil) throws {
            self.lightning = lightning
            dir = try TestSupport.temporaryDirectory("join-gate")
            var config = ChannelServerConfiguration()
            config.port = 0
            let endpoint = SocketEndpoint(path: Wire.Path.workerSocket, authenticate: { _ in .accept(context: "worker") },
                                          channels: [ChannelRoute(Wire.Topic.queue, lightning),
                                                     ChannelRoute(Wire.Topic.attemptPrefix + "*", lightning)])
            server = ChannelServer(configuration: config, endpoints: [endpoint], routes: [])
            try server.start()
            var wc = WorkerConfiguration(lightningURL: "ws://127.0.0.1:\(server.port)/worker", name: "gated",
                                         workerSecret: String(repeating: "s", count: 32), lightningPublicKey: publicKey, workRoot: dir.path)
            wc.skipTokenVerification = publicKey == nil
            wc.capacity = capacity
            wc.claimPoll = claimPoll
            wc.shutdownTimeout = .seconds(1)
            wc.shutdownPolicy = .cancel
            worker = try Worker(configuration: wc, runner: runner)
            let w = worker
            task = Task { try await w.run() }
        }

        func stop() async {
            lightning.answerJoin(.error(["reason": "test over"]))
            await worker.drain()
            _ = try? await task.value
            await server.shutdown()
            try? FileManager.default.removeItem(at: dir)
        }
    }

    @Test("while Lightning has not answered the join, no step starts and no event is sent; once it accepts, the attempt runs and its events arrive in order")
    func heldThenAccepted() async throws {
        let s = try Setup()
        try await eventually("the worker joins run:<id>") { s.lightning.joinWasAsked }
        // The attempt is prepared meanwhile; give it time to get as far as it would.
        try await Task.sleep(for: .milliseconds(300))
        #expect(s.runner.started == 0)
        #expect(s.lightning.attemptEvents.isEmpty)

        s.lightning.answerJoin(.ok([:]))
        try await eventually("run:complete arrives") { s.lightning.attemptEvents.contains(Wire.Event.attemptComplete) }
        #expect(s.runner.started == 1)
        #expect(collapsingLogBatches(s.lightning.attemptEvents)
            == [Wire.Event.attemptStart, Wire.Event.stepStart, Wire.Event.log, Wire.Event.stepComplete, Wire.Event.attemptComplete])
        await s.stop()
    }

    @Test("a refused join: the step never starts, nothing is sent on the attempt's topic, and the slot is free for the next claim")
    func refused() async throws {
        let s = try Setup()
        try await eventually("the worker joins run:<id>") { s.lightning.joinWasAsked }
        let claimsBefore = s.lightning.claimCount
        s.lightning.answerJoin(.error(["reason": "this claim is stale"]))
        try await eventually("the worker claims again (its one slot is free)") { s.lightning.claimCount > claimsBefore }
        #expect(s.runner.started == 0)
        #expect(s.lightning.attemptEvents.isEmpty)
        await s.stop()
    }

    @Test("a claim answered with fewer attempts than it asked for is not followed at once by another: the next claim waits for a nudge or the poll")
    func shortClaimWaits() async throws {
        // Two free slots, one attempt handed out. Another claim at once would come back empty and reach Lightning
        // before the attempt's join, which then waits behind it.
        // The attempt runs until the worker stops (the fake server reads a socket's messages one at a time: a held
        // join would hold the claims behind it too).
        let s = try Setup(capacity: 2, lightning: HeldJoinLightning(holdJoin: false, body: "wait-cancel"))
        try await eventually("the worker claims a second time (its poll, 1 s after a claim that got work)") {
            s.lightning.claimCount >= 2
        }
        let times = s.lightning.claimedAt
        #expect(times[1] - times[0] >= .milliseconds(900))
        await s.stop()
    }

    @Test("a nudge that arrives while a claim is under way is not lost: the next claim follows without waiting for the poll")
    func nudgeDuringClaim() async throws {
        // The poll is a minute: only the nudge can bring the second claim within the wait below.
        let s = try Setup(capacity: 2, lightning: HeldJoinLightning(holdJoin: false, body: "wait-cancel", nudgeDuringFirstClaim: true),
                          claimPoll: .seconds(60))
        try await eventually("the worker claims again after the nudge") { s.lightning.claimCount >= 2 }
        await s.stop()
    }

    @Test("after its socket is closed and the queue joined again, a worker waiting for its poll claims at once")
    func claimsAfterRejoin() async throws {
        // The poll is a minute: only the rejoin can bring the second claim within the wait below. (The first claim got
        // one attempt of two asked for, so the worker then waits, having claimed under the queue's first join.)
        let s = try Setup(capacity: 2, lightning: HeldJoinLightning(holdJoin: false, body: "wait-cancel"), claimPoll: .seconds(60))
        try await eventually("the first claim") { s.lightning.claimCount >= 1 }
        try await eventually("the attempt's join") { s.lightning.joinWasAsked }
        let before = s.lightning.claimCount
        for socket in s.server.sockets(joinedTo: Wire.Topic.queue) { socket.close(code: 1001, reason: "going away") }
        try await eventually("the worker claims again after rejoining the queue") { s.lightning.claimCount > before }
        await s.stop()
    }

    @Test("a worker that refuses every token it is handed backs off between claims instead of draining the queue into refusals")
    func refusedTokensBackOff() async throws {
        let key = try JWTKey.rsa(pem: RSAKeyPair.generate().publicKeyPEM)
        let s = try Setup(lightning: HeldJoinLightning(everyClaim: true), publicKey: key)
        try await eventually("the first claim") { s.lightning.claimCount >= 1 }
        // Its claims back off from 2 s after one that started nothing: at most two in this time, however slow the
        // machine. Claiming again at once would make hundreds.
        try await Task.sleep(for: .milliseconds(1500))
        #expect(s.lightning.claimCount <= 2)
        await s.stop()
    }
}
