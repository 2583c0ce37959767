import Channels
import Foundation
import JWT
import Testing
import TestSupport
@testable import Lightning

/// `lightning serve` as a real process on a kernel-picked port.
final class ServeProcess: @unchecked Sendable {
    let child: ChildProcess
    let port: Int

    init(directory: URL, keys: WorkerKeySet, database: String) async throws {
        child = try ChildProcess(
            try TestSupport.builtBinary("lightning"),
            ["serve", "--port", "0", "--database", database, "--keys-dir", directory.appendingPathComponent("keys").path],
            environment: ["ATTEMPTS_PRIVATE_KEY": keys.attemptsPrivateKeyBase64, "WORKER_SECRET": keys.workerSecret],
            directory: directory, logName: "lightning-\(UUID().uuidString.prefix(4)).log")
        let line = try await child.waitForLog(#"port=\d+ \[Lightning\] Lightning is listening"#)
        port = Int(line.dropFirst(5).prefix { $0.isNumber }) ?? 0
    }

    func kill9() async {
        child.signal(SIGKILL)
        _ = await child.waitForExit()
    }

    func terminate() { child.stop() }
}

@Suite("Restart", .serialized)
struct RestartTests {
    @Test("kill -9 during a stream of events: after a restart every acknowledged event is there, once")
    func killNine() async throws {
        let dir = try TestSupport.temporaryDirectory("restart")
        defer { try? FileManager.default.removeItem(at: dir) }
        let keys = try WorkerKeySet.generate()
        let database = dir.appendingPathComponent("lightning.db").path
        do {
            let store = try SQLStore(path: database, cipher: nil)
            _ = try await store.applyWorkflow(try WorkflowDefinition.parse(
                "name: w\njobs:\n  - {name: a, adaptor: sh, body: 'true'}"))
            _ = try await store.createWorkOrder(workflow: "w", input: Array("{}".utf8))
        }
        let server = try await ServeProcess(directory: dir, keys: keys, database: database)
        defer { server.terminate() }
        let token = try JWT.sign(WorkerTokenClaims(workerID: "w1"), key: .hmac(secret: keys.workerSecret))
        var config = ChannelClient.Configuration(url: "ws://127.0.0.1:\(server.port)/worker/websocket") { ["token": token] }
        config.reconnectBase = .seconds(30)
        let client = try ChannelClient(configuration: config)
        try client.connect()
        defer { client.close() }
        try await waitUntil("connected") { client.connected }
        try await client.join(topic: "worker:queue", payload: { ["capacity": 1] })
        let run = try await client.push(topic: "worker:queue", event: "claim", payload: ["demand": 1]).response["runs"]![0]!
        let id = run["id"]!.stringValue!
        let topic = "run:\(id)"
        let attemptToken = run["token"]!.stringValue!
        try await client.join(topic: topic, payload: { ["token": .string(attemptToken)] })
        #expect(try await client.push(topic: topic, event: "run:start", payload: ["versions": [:]]).isOK)

        // Stream log lines from several tasks; kill -9 the server in the middle.
        let acked = AckedLines<String>()
        let streamers = (0..<4).map { s in
            Task {
                for i in 0..<100_000 {
                    let message = "s\(s)-\(i)"
                    guard let r = try? await client.push(topic: topic, event: "run:log", payload: [
                        "run_id": .string(id), "message": [.string(message)], "level": "info", "source": "JOB"]), r.isOK
                    else { return }
                    acked.add(message)
                }
            }
        }
        // Generous: on a loaded machine the cooperative threads these pushes resume on are shared with every test.
        try await waitUntil("some lines acknowledged", timeout: .seconds(90)) { acked.count > 300 }
        await server.kill9()
        for s in streamers { await s.value }
        let acknowledged = acked.all

        let restarted = try await ServeProcess(directory: dir, keys: keys, database: database)
        defer { restarted.terminate() }
        let store = try SQLStore(path: database, cipher: nil)
        let stored = try await store.logs(attemptID: id, since: 0, limit: 1_000_000)
        print("restart test: \(acknowledged.count) acknowledged, \(stored.count) stored")
        let messages = stored.map(\.message)
        #expect(Set(messages).count == messages.count, "no line is stored twice")
        #expect(Set(acknowledged).isSubset(of: Set(messages)), "\(Set(acknowledged).subtracting(messages).count) acknowledged lines lost")
        #expect(stored.map(\.seq) == Array(1...Int64(stored.count)), "seq stays gap-free")
        #expect(try await store.attempt(id).state == .started)
    }
}

/// A list several tasks append to (acknowledged lines, received pushes).
final class AckedLines<Element: Sendable>: @unchecked Sendable {
    private let lock = NSLock()
    private var lines: [Element] = []
    func add(_ s: Element) { lock.withLock { lines.append(s) } }
    var count: Int { lock.withLock { lines.count } }
    var all: [Element] { lock.withLock { lines } }
}
