import Foundation
import Synchronization
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif
import Testing
import TestSupport
@testable import Channels

/// A channel handler for tests: echoes, answers in binary, refuses joins on request, counts leaves.
struct EchoHandler: ChannelHandler {
    let leaves = Counter()
    func join(topic: String, payload: JSON, socket: ChannelSocket) async -> JoinResult {
        if payload["refuse"] == .bool(true) { return .error(["reason": "refused by test"]) }
        return .ok(["joined": .string(topic), "who": .string("\(socket.context)")])
    }
    func handle(event: String, topic: String, payload: JSON, socket: ChannelSocket) async -> ChannelReply? {
        switch event {
        case "echo": return .ok(payload)
        case "binary": return .binary(payload.encoded())
        case "fail": return .error(["errors": ["field": ["bad"]]])
        case "push-me":
            socket.push(topic: topic, event: "pushed", payload: payload)
            return .ok()
        case "silent": return nil
        case "where":
            // The kernel's name of the thread this runs on (`nameCurrentThread`).
            let name = (try? String(contentsOfFile: "/proc/thread-self/comm", encoding: .utf8)) ?? ""
            return .ok(["thread": .string(name.trimmingCharacters(in: .whitespacesAndNewlines)),
                        "service": .bool(SocketServiceThread.isCurrent)])
        case "held":
            // Waits until the test opens the gate it names; the handled order is recorded.
            TestGates.record("\(topic) waiting on \(payload["gate"]?.stringValue ?? "")")
            await TestGates.gate(payload["gate"]?.stringValue ?? "").wait()
            TestGates.record("\(topic) held")
            return .ok()
        case "note":
            TestGates.record("\(topic) note")
            return .ok()
        case "slow":
            try? await Task.sleep(for: .milliseconds(5))
            return .ok(["i": payload["i"] ?? .null])
        case "flood":
            let chunk = JSON.string(String(repeating: "z", count: 10_000))
            for _ in 0..<(payload["count"]?.intValue ?? 0) { socket.push(topic: topic, event: "flood", payload: ["z": chunk]) }
            return .ok()
        default: return .error(reason: "unknown event \(event)")
        }
    }
    func leave(topic: String, socket: ChannelSocket) async { leaves.increment() }
}

/// Gates a test opens to release handlers of `held` events, and the order events were handled in.
enum TestGates {
    private static let gates = Mutex<[String: TopicLanes.Latch]>([:])
    private static let log = Mutex<[String]>([])
    static func gate(_ name: String) -> TopicLanes.Latch {
        gates.withLock { g in
            if let l = g[name] { return l }
            let l = TopicLanes.Latch()
            g[name] = l
            return l
        }
    }
    static func record(_ s: String) { log.withLock { $0.append(s) } }
    static var recorded: [String] { log.withLock { $0 } }
}

final class Counter: @unchecked Sendable {
    private let lock = NSLock()
    private var n = 0
    func increment() { lock.withLock { n += 1 } }
    var value: Int { lock.withLock { n } }
}

func makeServer(port: Int = 0, disconnects: Counter = Counter(), endpointTotal: Int? = nil, onServiceThread: Bool = false,
                configure: (inout ChannelServerConfiguration) -> Void = { _ in }) throws -> ChannelServer {
    var config = ChannelServerConfiguration()
    config.port = port
    configure(&config)
    let endpoint = SocketEndpoint(
        path: "/socket/websocket",
        authenticate: { req in
            req.query["token"] == "good" ? .accept(context: "user-1") : .reject(status: 401, message: "bad token")
        },
        channels: [ChannelRoute("room:*", EchoHandler())],
        onDisconnect: { _ in disconnects.increment() },
        maxQueuedBytesTotal: endpointTotal, handlesOnServiceThread: onServiceThread)
    let routes = [
        HTTPRoute("POST", "/echo") { req in .json(200, ["len": .int(Int64(req.body.count)), "path": .string(req.path)]) },
        HTTPRoute("GET", "/hello") { req in .json(200, ["q": .string(req.query["name"] ?? "")]) },
        HTTPRoute(nil, "/slow") { req in
            try? await Task.sleep(for: .milliseconds(Int(req.query["ms"] ?? "") ?? 0))
            return .json(200, ["slept": .string(req.query["ms"] ?? "")])
        },
    ]
    let server = ChannelServer(configuration: config, endpoints: [endpoint], routes: routes)
    try server.start()
    return server
}

func makeClient(_ port: Int, token: String = "good", tweak: (inout ChannelClient.Configuration) -> Void = { _ in })
    throws -> ChannelClient
{
    var config = ChannelClient.Configuration(url: "ws://127.0.0.1:\(port)/socket/websocket?vsn=2.0.0") { ["token": token] }
    config.reconnectBase = .milliseconds(50)
    config.reconnectCap = .milliseconds(400)
    tweak(&config)
    let client = try ChannelClient(configuration: config)
    try client.connect()
    return client
}

func waitFor(_ what: String, timeout: Duration = .seconds(10), _ condition: () -> Bool) async throws {
    let deadline = ContinuousClock.now + timeout
    while !condition() {
        if ContinuousClock.now > deadline { throw TestSupport.Failure("timed out waiting for \(what)") }
        try await Task.sleep(for: .milliseconds(10))
    }
}

@Suite("Server and client on loopback", .serialized)
struct LiveTests {
    @Test("join, echo with matching refs, binary reply, error reply, server push, leave", arguments: [false, true])
    func basics(onServiceThread: Bool) async throws {
        let server = try makeServer(onServiceThread: onServiceThread)
        defer { server.stop() }
        let client = try makeClient(server.port)
        defer { client.close() }
        try await waitFor("connection") { client.connected }

        let pushes = Counter()
        let joined = try await client.join(topic: "room:1", onMessage: { m in
            if m.event == "pushed" { pushes.increment() }
        })
        #expect(joined["joined"] == "room:1")
        #expect(joined["who"] == "user-1")

        let reply = try await client.push(topic: "room:1", event: "echo", payload: ["n": 1_700_000_000_123_456])
        #expect(reply.isOK && reply.response["n"] == .int(1_700_000_000_123_456))

        let binary = try await client.push(topic: "room:1", event: "binary", payload: ["k": "v"])
        #expect(binary.binary.map { try? JSON.parse($0) } == .some(["k": "v"]))

        let failed = try await client.push(topic: "room:1", event: "fail", payload: [:])
        #expect(failed.status == "error" && failed.response["errors"]?["field"] == ["bad"])

        _ = try await client.push(topic: "room:1", event: "push-me", payload: ["x": 1])
        try await waitFor("server push") { pushes.value == 1 }
        #expect(server.broadcast(topic: "room:1", event: "pushed", payload: [:]) == 1)
        try await waitFor("broadcast") { pushes.value == 2 }

        await client.leave(topic: "room:1")
        #expect(server.sockets(joinedTo: "room:1").isEmpty)
    }

    @Test("an endpoint that asks for it has its messages handled on the socket service thread, but for big frames; others on the pool")
    func handlersThread() async throws {
        for onServiceThread in [false, true] {
            let server = try makeServer(onServiceThread: onServiceThread)
            defer { server.stop() }
            let client = try makeClient(server.port)
            defer { client.close() }
            try await waitFor("connection") { client.connected }
            _ = try await client.join(topic: "room:where")
            // Before and after a suspension in the handler's task (a reply awaited on another topic in between).
            for _ in 0..<3 {
                let reply = try await client.push(topic: "room:where", event: "where", payload: [:])
                let thread = reply.response["thread"]?.stringValue ?? ""
                if onServiceThread {
                    #expect(thread == "channels-server")
                } else {
                    #expect(thread != "channels-server" && !thread.isEmpty, "\(thread)")
                }
                #expect(reply.response["service"] == .bool(onServiceThread))
                _ = try await client.push(topic: "room:where", event: "slow", payload: [:])
            }
            // A frame over the limit is handled on the pool either way: it would hold up every socket there.
            let big = String(repeating: "b", count: ChannelServer.serviceThreadFrameLimit + 1)
            let reply = try await client.push(topic: "room:where", event: "where", payload: ["big": .string(big)])
            #expect(reply.response["service"] == false)
        }
    }

    @Test("pushes of every frame length form (short, 16-bit and 64-bit lengths) reach the server intact and echo back")
    func everyLengthForm() async throws {
        let server = try makeServer()
        defer { server.stop() }
        let client = try makeClient(server.port)
        defer { client.close() }
        try await waitFor("connection") { client.connected }
        _ = try await client.join(topic: "room:1")
        for size in [0, 50, 200, 70_000, 300_000] {
            let text = String((0..<size).map { i in Character(UnicodeScalar(UInt8(97 + i % 26))) })
            let reply = try await client.push(topic: "room:1", event: "echo", payload: ["t": .string(text)])
            #expect(reply.isOK && reply.response["t"] == .string(text), "\(size) characters")
        }
    }

    @Test("one socket's topics are handled side by side: an event waiting on one topic holds up that topic's later events, not another topic's", arguments: [false, true])
    func topicsSideBySide(onServiceThread: Bool) async throws {
        let server = try makeServer(onServiceThread: onServiceThread)
        defer { server.stop() }
        let client = try makeClient(server.port)
        defer { client.close() }
        try await waitFor("connection") { client.connected }
        // Topics of this run only (the record is shared by every test case).
        let a = "room:a-\(UUID().uuidString)", b = "room:b-\(UUID().uuidString)"
        _ = try await client.join(topic: a)
        _ = try await client.join(topic: b)
        let gate = "gate-\(UUID().uuidString)"
        // Sent in this order on the one socket: a held event on room:a, a note behind it on room:a, a note on room:b.
        async let held = client.push(topic: a, event: "held", payload: ["gate": .string(gate)])
        try await waitFor("the held event to be handled") { TestGates.recorded.contains("\(a) waiting on \(gate)") }
        async let behind = client.push(topic: a, event: "note", payload: [:])
        // Answered while room:a waits (before, every message of a socket waited for the one before it).
        let other = try await client.push(topic: b, event: "note", payload: [:])
        #expect(other.isOK)
        #expect(!TestGates.recorded.contains("\(a) note"), "room:a's note waits for room:a's held event")
        TestGates.gate(gate).open()
        #expect(try await held.isOK)
        #expect(try await behind.isOK)
        let order = TestGates.recorded.filter { $0.hasPrefix(a) }
        #expect(Array(order.suffix(2)) == ["\(a) held", "\(a) note"], "\(order)")
    }

    @Test("a push over the server's limit is refused by the client before it is sent; the connection stays, and smaller pushes go")
    func overPeerLimit() async throws {
        let disconnects = Counter()
        let server = try makeServer(disconnects: disconnects) { $0.maxMessageBytes = 50_000 }
        defer { server.stop() }
        let client = try makeClient(server.port) { $0.peerMaxMessageBytes = 50_000 }
        defer { client.close() }
        try await waitFor("connection") { client.connected }
        _ = try await client.join(topic: "room:big")
        let big = JSON.string(String(repeating: "\"", count: 30_000))  // 60,000 bytes escaped
        // The whole frame's text is counted: `["1","2","room:big","echo",{"q":"…"}]`, 36 bytes around the string.
        await #expect(throws: ChannelError.messageTooLarge(bytes: 60_036, limit: 50_000)) {
            _ = try await client.push(topic: "room:big", event: "echo", payload: ["q": big])
        }
        let encoded = Array(#"{"q":"#.utf8) + big.encoded() + Array("}".utf8)
        await #expect(throws: ChannelError.messageTooLarge(bytes: 60_036, limit: 50_000)) {
            _ = try await client.push(topic: "room:big", event: "echo", encodedPayload: encoded)
        }
        let fits = try await client.push(topic: "room:big", event: "echo", payload: ["q": .string(String(repeating: "y", count: 40_000))])
        #expect(fits.isOK && client.connected && disconnects.value == 0)
        // What the server names replaces the default: with a higher limit the same message goes (and the server,
        // whose limit is lower, closes the socket on it: the guard is what kept it open above).
        client.peerMessageLimit = 100_000
        _ = try? await client.push(topic: "room:big", event: "echo", payload: ["q": big], timeout: .seconds(5))
        try await waitFor("the server closing the socket on the message") { disconnects.value == 1 }
    }

    /// The worker joins a claim's attempts from `onReply`, on the service thread, before its claim task runs again.
    @Test("onReply runs once, on the client's service thread, before the pusher resumes; never for a push that times out")
    func onReplyHook() async throws {
        let server = try makeServer()
        defer { server.stop() }
        let client = try makeClient(server.port)
        defer { client.close() }
        try await waitFor("connection") { client.connected }
        _ = try await client.join(topic: "room:h")
        let seen = Mutex<[(thread: String, n: JSON?)]>([])
        let reply = try await client.push(topic: "room:h", event: "echo", payload: ["n": 7], onReply: { reply in
            let thread = (FileManager.default.contents(atPath: "/proc/thread-self/comm").map { String(decoding: $0, as: UTF8.self) } ?? "")
                .trimmingCharacters(in: .whitespacesAndNewlines)
            seen.withLock { $0.append((thread, reply.response["n"])) }
        })
        let calls = seen.withLock { $0 }
        #expect(reply.response["n"] == 7)
        #expect(calls.count == 1, "called once, and before the push returned")
        #expect(calls.first?.thread == "channels-client")
        #expect(calls.first?.n == 7)
        await #expect(throws: ChannelError.timeout) {
            _ = try await client.push(topic: "room:h", event: "silent", payload: [:], timeout: .milliseconds(200), onReply: { _ in
                seen.withLock { $0.append(("timed out", nil)) }
            })
        }
        #expect(seen.withLock { $0.count } == 1, "not called for a push that got no reply")
    }

    @Test("a push nobody answers fails with a timeout after its own deadline, and others on the socket are not held up")
    func pushTimeout() async throws {
        let server = try makeServer()
        defer { server.stop() }
        let client = try makeClient(server.port)
        defer { client.close() }
        try await waitFor("connection") { client.connected }
        _ = try await client.join(topic: "room:t")
        let started = ContinuousClock.now
        let short = Task { try await client.push(topic: "room:t", event: "silent", payload: [:], timeout: .milliseconds(300)) }
        let long = Task { try await client.push(topic: "room:t", event: "silent", payload: [:], timeout: .seconds(30)) }
        // Answered ones go on while both wait.
        for i in 0..<20 {
            let r = try await client.push(topic: "room:t", event: "echo", payload: ["i": .int(Int64(i))])
            #expect(r.response["i"] == .int(Int64(i)))
        }
        await #expect(throws: ChannelError.timeout) { try await short.value }
        #expect(ContinuousClock.now - started >= .milliseconds(300), "not before its deadline")
        // The long one is still waiting: closing the client ends it (not its timer).
        client.close()
        await #expect(throws: (any Error).self) { try await long.value }
        #expect(ContinuousClock.now - started < .seconds(25), "ended by the close, not by its 30 s deadline")
    }

    @Test("fallback URLs: when its server goes, the client connects to the next one and rejoins its topics there")
    func fallbackURLs() async throws {
        let first = try makeServer(), second = try makeServer()
        defer { first.stop(); second.stop() }
        let client = try makeClient(first.port) { $0.fallbackURLs = ["ws://127.0.0.1:\(second.port)/socket/websocket?vsn=2.0.0"] }
        defer { client.close() }
        try await waitFor("connection") { client.connected }
        #expect(client.currentURL.contains(":\(first.port)/"))
        _ = try await client.join(topic: "room:1")
        first.stop()
        try await waitFor("the second server's socket joined to room:1") { !second.sockets(joinedTo: "room:1").isEmpty }
        #expect(client.currentURL.contains(":\(second.port)/"))
        let reply = try await client.push(topic: "room:1", event: "echo", payload: ["n": 1])
        #expect(reply.isOK && reply.response["n"] == 1)
        // One scheme for all of them: a TLS context and a plain one cannot be mixed.
        #expect(throws: ChannelError.self) {
            var config = ChannelClient.Configuration(url: "ws://127.0.0.1:1/socket/websocket")
            config.fallbackURLs = ["wss://127.0.0.1:2/socket/websocket"]
            _ = try ChannelClient(configuration: config)
        }
    }

    @Test("unmatched topics and refused joins get error replies")
    func refusals() async throws {
        let server = try makeServer()
        defer { server.stop() }
        let client = try makeClient(server.port)
        defer { client.close() }
        try await waitFor("connection") { client.connected }
        let r = try await client.push(topic: "room:never-joined", event: "echo", payload: [:])
        #expect(r.status == "error" && r.response["reason"] == "unmatched topic")
        await #expect(throws: ChannelError.joinRefused(["reason": "unmatched topic"])) {
            try await client.join(topic: "nowhere")
        }
        await #expect(throws: ChannelError.joinRefused(["reason": "refused by test"])) {
            try await client.join(topic: "room:2", payload: { ["refuse": true] })
        }
    }

    @Test("a bad token is an authentication failure, not retried")
    func unauthorized() async throws {
        let server = try makeServer()
        defer { server.stop() }
        let client = try makeClient(server.port, token: "bad")
        defer { client.close() }
        var seen: ChannelClient.Event?
        for await e in client.events {
            seen = e
            break
        }
        #expect(seen == .authenticationFailed(status: 401))
        #expect(!client.connected)
    }

    @Test("plain HTTP: routes, query, 404, 405 and 413")
    func http() async throws {
        let server = try makeServer { $0.maxHTTPBodyBytes = 1000 }
        defer { server.stop() }
        let base = "http://127.0.0.1:\(server.port)"
        func call(_ method: String, _ path: String, _ body: Data? = nil) async throws -> (Int, JSON?) {
            var req = URLRequest(url: URL(string: base + path)!)
            req.httpMethod = method
            req.httpBody = body
            let (data, response) = try await freshHTTPExchange(req)
            return ((response as! HTTPURLResponse).statusCode, try? JSON.parse(Array(data)))
        }
        let (s1, b1) = try await call("GET", "/hello?name=ada")
        #expect(s1 == 200 && b1?["q"] == "ada")
        let (s2, b2) = try await call("POST", "/echo", Data(repeating: 65, count: 500))
        #expect(s2 == 200 && b2?["len"] == 500)
        let (s3, _) = try await call("GET", "/missing")
        #expect(s3 == 404)
        let (s4, _) = try await call("DELETE", "/echo")
        #expect(s4 == 405)
        let (s5, b5) = try await call("POST", "/echo", Data(repeating: 65, count: 5000))
        #expect(s5 == 413)
        #expect(b5?["error"]?.stringValue?.contains("limit") == true)
        let (s6, _) = try await call("GET", "/hello")
        #expect(s6 == 200, "the server keeps serving")
    }

    @Test("body-less POSTs in a row: each handled exactly once and answered; no client retries a dead connection")
    func keepAlivePosts() async throws {
        let calls = Counter()
        let server = ChannelServer(configuration: { var c = ChannelServerConfiguration(); c.port = 0; return c }(), endpoints: [],
                                   routes: [HTTPRoute("POST", "/count") { _ in calls.increment(); return .json(200, ["ok": true]) }])
        try server.start()
        defer { server.stop() }
        let url = "http://127.0.0.1:\(server.port)/count"
        // curl sends no Content-Length for -X POST without data and would reuse the connection for all five.
        let r = try await TestSupport.run("/usr/bin/curl", ["-sv", "-X", "POST", url, url, url, url, url])
        #expect(calls.value == 5, "\(r.stderr)")
        #expect(!r.stderr.contains("Connection died"), "\(r.stderr)")
        #expect(r.stderr.components(separatedBy: "< connection: close\r\n").count - 1 == 5, "the header, exactly: \(r.stderr)")
        #expect(r.stdout.components(separatedBy: "\"ok\":true").count - 1 == 5)
    }

    @Test("an oversize message closes the socket with 1009; the client reconnects", arguments: [false, true])
    func oversize(onServiceThread: Bool) async throws {
        let server = try makeServer(onServiceThread: onServiceThread) { $0.maxMessageBytes = 10_000 }
        defer { server.stop() }
        let client = try makeClient(server.port)
        defer { client.close() }
        try await waitFor("connection") { client.connected }
        try await client.join(topic: "room:big")
        let big = JSON.string(String(repeating: "x", count: 20_000))
        await #expect(throws: ChannelError.self) {
            try await client.push(topic: "room:big", event: "echo", payload: ["b": big], timeout: .seconds(5))
        }
        try await waitFor("rejoin after reconnect") { client.isJoined("room:big") }
        let ok = try await client.push(topic: "room:big", event: "echo", payload: ["small": true])
        #expect(ok.isOK)
    }

    @Test("the client reconnects and rejoins after the server restarts on the same port", arguments: [false, true])
    func restart(onServiceThread: Bool) async throws {
        var server = try makeServer(onServiceThread: onServiceThread)
        let port = server.port
        let client = try makeClient(port)
        defer { client.close() }
        try await waitFor("connection") { client.connected }
        try await client.join(topic: "room:r")
        await server.shutdown()
        try await waitFor("disconnect") { !client.connected }
        // The port is free once the old server's socket is closed; the kernel may take a moment to say so (the
        // client's reconnect attempts also touch it), so binding is tried again for up to 10 s.
        let bindDeadline = ContinuousClock.now + .seconds(10)
        while true {
            do { server = try makeServer(port: port, onServiceThread: onServiceThread); break } catch {
                if ContinuousClock.now > bindDeadline { throw error }
                try await Task.sleep(for: .milliseconds(100))
            }
        }
        defer { server.stop() }
        try await waitFor("rejoin") { client.isJoined("room:r") }
        // Once in a CI run the first push right after the rejoin failed with "not connected" (suspected: a late
        // close of the old connection; under investigation). What this test shows is that the client comes back:
        // a push that fails that way is tried again, for up to 10 s.
        let deadline = ContinuousClock.now + .seconds(10)
        var r: ChannelClientReply?
        while r == nil {
            do { r = try await client.push(topic: "room:r", event: "echo", payload: ["after": "restart"]) } catch ChannelError.notConnected {
                guard ContinuousClock.now < deadline else { throw ChannelError.notConnected }
                try await Task.sleep(for: .milliseconds(50))
            }
        }
        #expect(r?.response["after"] == "restart")
    }

    @Test("pushes from many tasks all get their own replies", arguments: [false, true])
    func concurrentPushes(onServiceThread: Bool) async throws {
        let server = try makeServer(onServiceThread: onServiceThread)
        defer { server.stop() }
        let client = try makeClient(server.port)
        defer { client.close() }
        try await waitFor("connection") { client.connected }
        try await client.join(topic: "room:c")
        try await withThrowingTaskGroup(of: Void.self) { group in
            for i in 0..<200 {
                group.addTask {
                    let r = try await client.push(topic: "room:c", event: "echo", payload: ["i": .int(Int64(i))])
                    #expect(r.response["i"] == .int(Int64(i)))
                }
            }
            try await group.waitForAll()
        }
    }

    @Test("a silent socket is closed after the idle timeout")
    func idleTimeout() async throws {
        let server = try makeServer { $0.idleTimeoutSeconds = 1 }
        defer { server.stop() }
        let client = try makeClient(server.port) { $0.heartbeatInterval = .seconds(60) }
        defer { client.close() }
        try await waitFor("connection") { client.connected }
        try await waitFor("idle close") { !client.connected }
    }

    @Test("heartbeats keep a socket alive past the idle timeout", arguments: [false, true])
    func heartbeatsKeepAlive(onServiceThread: Bool) async throws {
        // Without heartbeats the 4 s idle timeout would close the socket within the 10 s watched here (twice). With a
        // heartbeat every second it stays up. The interval is not shorter because the client itself reconnects when
        // a heartbeat is still unanswered at the next one: 250 ms (as before) was a deadline a busy machine missed.
        let server = try makeServer(onServiceThread: onServiceThread) { $0.idleTimeoutSeconds = 4 }
        defer { server.stop() }
        let events = Counter()
        let client = try makeClient(server.port) { $0.heartbeatInterval = .seconds(1) }
        defer { client.close() }
        try await waitFor("connection") { client.connected }
        Task { for await e in client.events where e != .connected { events.increment() } }
        try await Task.sleep(for: .seconds(10))
        #expect(client.connected && events.value == 0)
    }

    @Test("a consumer that stops reading is closed with 1008 and its queue is dropped", arguments: [false, true])
    func slowConsumer(onServiceThread: Bool) async throws {
        let disconnects = Counter()
        let server = try makeServer(disconnects: disconnects, onServiceThread: onServiceThread) { $0.maxQueuedBytesPerConnection = 512 * 1024 }
        defer { server.stop() }
        let script = TestSupport.packageRoot.appendingPathComponent("Tests/ChannelsTests/Interop/slow_consumer.py").path
        let port = server.port
        let result = try await TestSupport.python(script, ["\(port)", "good"])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout.contains("close 1008"), "\(result.stdout)")
        try await waitFor("server-side cleanup") { disconnects.value == 1 }
    }

    @Test("the endpoint's sockets share a send-queue limit: a consumer within its own limit but past the shared one is closed with 1008")
    func sharedQueueLimit() async throws {
        let disconnects = Counter()
        // Its own limit (32 MB) would hold the 30 MB flood; the endpoint's shared 1 MB does not.
        let server = try makeServer(disconnects: disconnects, endpointTotal: 1 << 20)
        defer { server.stop() }
        let script = TestSupport.packageRoot.appendingPathComponent("Tests/ChannelsTests/Interop/slow_consumer.py").path
        let result = try await TestSupport.python(script, ["\(server.port)", "good"])
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stdout.contains("close 1008"), "\(result.stdout)")
        try await waitFor("server-side cleanup") { disconnects.value == 1 }
    }

    @Test("a client sending faster than its messages are handled is paused, not buffered without bound; nothing is lost", arguments: [false, true])
    func inboundBackpressure(onServiceThread: Bool) async throws {
        let server = try makeServer(onServiceThread: onServiceThread) { $0.maxQueuedBytesPerConnection = 64 * 1024 }
        defer { server.stop() }
        let client = try makeClient(server.port)
        defer { client.close() }
        try await waitFor("connection") { client.connected }
        try await client.join(topic: "room:flood")
        let filler = JSON.string(String(repeating: "f", count: 8_000))
        let replies = try await withThrowingTaskGroup(of: Int64?.self) { group in
            for i in 0..<200 {
                group.addTask {
                    let r = try await client.push(topic: "room:flood", event: "slow", payload: ["i": .int(Int64(i)), "f": filler],
                                                  timeout: .seconds(60))
                    return r.response["i"]?.intValue
                }
            }
            return try await group.reduce(into: [Int64]()) { if let v = $1 { $0.append(v) } }
        }
        #expect(Set(replies) == Set(0..<200), "every message was handled once")
        #expect(server.readPauseCount > 0, "reading was paused at least once")
    }
}
