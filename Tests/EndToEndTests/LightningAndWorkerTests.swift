import Foundation
import JWT
import Lightning
import RuntimeWorker
import Testing
import TestSupport

/// Lightning and a worker in one process, over a real loopback socket, with the real sandbox.
struct Stack {
    let dir: URL
    let store: SQLStore
    let keys: WorkerKeySet
    var lightning: Lightning
    let worker: Worker
    let workerTask: Task<Void, any Error>

    init(capacity: Int = 2, workerTrusts foreignKey: Bool = false) async throws {
        dir = try TestSupport.temporaryDirectory("e2e")
        keys = try sharedTestKeys.get()
        store = try SQLStore(path: dir.appendingPathComponent("lightning.db").path,
                                cipher: CredentialCipher(key: Array(repeating: 1, count: 32)))
        var config = LightningConfiguration(attemptSigningKey: try .rsa(pem: keys.keyPair.privateKeyPEM),
                                            workerSecretKey: try .hmac(secret: keys.workerSecret))
        config.port = 0
        lightning = try Lightning(configuration: config, store: store)
        try lightning.start()
        let work = dir.appendingPathComponent("worker").path
        try FileManager.default.createDirectory(atPath: work, withIntermediateDirectories: true)
        let runner = try SandboxRunner(mode: .auto, stateDirectory: work)
        var wc = WorkerConfiguration(lightningURL: "ws://127.0.0.1:\(lightning.port)/worker", name: "e2e-worker",
                                     workerSecret: keys.workerSecret,
                                     lightningPublicKey: try .rsa(pem: foreignKey ? RSAKeyPair.generate().publicKeyPEM : keys.keyPair.publicKeyPEM),
                                     workRoot: work)
        wc.capacity = capacity
        wc.shutdownTimeout = .seconds(2)
        wc.reconnectBase = .milliseconds(100)
        wc.reconnectCap = .milliseconds(400)
        worker = try Worker(configuration: wc, runner: runner)
        let w = worker
        workerTask = Task { try await w.run() }
    }

    /// Stops Lightning and starts a new one on the same port and database.
    mutating func restartLightning() async throws {
        let port = lightning.port
        await lightning.shutdown()
        var config = LightningConfiguration(attemptSigningKey: try .rsa(pem: keys.keyPair.privateKeyPEM),
                                            workerSecretKey: try .hmac(secret: keys.workerSecret))
        config.port = port
        // The port is free once the old server is gone, but until the new one binds it any outgoing connection on
        // this machine may take it as its ephemeral port: try again for a while, as a restarted server would.
        var lastError: (any Error)?
        for _ in 0..<40 {
            do {
                let next = try Lightning(configuration: config, store: store)
                try next.start()
                lightning = next
                return
            } catch {
                lastError = error
                try await Task.sleep(for: .milliseconds(250))
            }
        }
        throw lastError!
    }

    func stop() async {
        await worker.drain()
        _ = try? await workerTask.value
        await lightning.shutdown()
        try? FileManager.default.removeItem(at: dir)
    }

}

@Suite("Lightning and a worker, end to end", .serialized)
struct LightningAndWorkerTests {
    @Test("the example workflow succeeds, with its credential masked in the log")
    func example() async throws {
        let s = try await Stack()
        defer { Task { await s.stop() } }
        _ = try await s.store.setCredential(name: "example-api", body: Array(#"{"username":"ada","password":"correct-horse"}"#.utf8))
        let text = try String(contentsOf: TestSupport.packageRoot.appendingPathComponent("examples/hello.yaml"), encoding: .utf8)
        _ = try await s.store.applyWorkflow(try WorkflowDefinition.parse(text))
        let created = try await s.lightning.startWork(workflow: "hello", input: Array(#"{"data":{"name":"Ada"}}"#.utf8))
        let a = try await s.store.waitUntilFinal(created.attemptID)
        let logs = try await s.store.logs(attemptID: created.attemptID, since: 0, limit: 100).map(\.message)
        #expect(a.state == .success, "\(a) \(logs)")
        #expect(logs.contains("counting for ***"))
        #expect(logs.contains("total is 9"))
        #expect(logs.first?.hasPrefix("hello from sh") == true)
    }

    @Test("the failure branch runs when a step fails")
    func failureBranch() async throws {
        let s = try await Stack()
        defer { Task { await s.stop() } }
        _ = try await s.store.applyWorkflow(try WorkflowDefinition.parse("""
            name: branchy
            jobs:
              - {name: fails, adaptor: sh, body: "echo trying; exit 4"}
              - {name: never, adaptor: sh, body: "echo never"}
              - {name: recover, adaptor: python3, body: "print('recovered')"}
            edges:
              - {from: fails, to: never, condition: on_job_success}
              - {from: fails, to: recover, condition: on_job_failure}
            """))
        let created = try await s.lightning.startWork(workflow: "branchy", input: Array("{}".utf8))
        _ = try await s.store.waitUntilFinal(created.attemptID)
        let logs = try await s.store.logs(attemptID: created.attemptID, since: 0, limit: 100).map(\.message)
        #expect(logs == ["trying", "recovered"])
        let steps = try await s.store.steps(attemptID: created.attemptID)
        #expect(steps.map(\.reason) == ["fail", "success"])
    }

    @Test("timeout and cancel end with the right reasons")
    func timeoutAndCancel() async throws {
        let s = try await Stack()
        defer { Task { await s.stop() } }
        _ = try await s.store.applyWorkflow(try WorkflowDefinition.parse("""
            name: slow
            options: {run_timeout_ms: 1000}
            jobs:
              - {name: sleep, adaptor: sh, body: "echo sleeping; sleep 30"}
            """))
        _ = try await s.store.applyWorkflow(try WorkflowDefinition.parse("""
            name: long
            jobs:
              - {name: sleep, adaptor: sh, body: "echo waiting; sleep 30"}
            """))
        let timed = try await s.lightning.startWork(workflow: "slow", input: Array("{}".utf8))
        let t = try await s.store.waitUntilFinal(timed.attemptID)
        #expect(t.state == .killed && t.errorType == "TimeoutError")

        let long = try await s.lightning.startWork(workflow: "long", input: Array("{}".utf8))
        try await s.store.waitForFirstLog(long.attemptID)
        _ = try await s.lightning.cancel(attemptID: long.attemptID)
        let c = try await s.store.waitUntilFinal(long.attemptID)
        #expect(c.state == .cancelled)
    }

    @Test("a worker refuses to run an attempt whose token its LIGHTNING_PUBLIC_KEY does not verify, and says so: Lightning ends it at once")
    func foreignToken() async throws {
        let s = try await Stack(workerTrusts: true)
        defer { Task { await s.stop() } }
        _ = try await s.store.applyWorkflow(try WorkflowDefinition.parse("name: w\njobs:\n  - {name: a, adaptor: sh, body: 'echo ran'}"))
        let created = try await s.lightning.startWork(workflow: "w", input: Array("{}".utf8))
        // Not left claimed until the claim times out (minutes): the worker's refusal ends it.
        let a = try await s.store.waitUntilFinal(created.attemptID, timeout: .seconds(30))
        #expect(a.state == .exception && a.errorType == "AttemptTokenRefused", "\(a)")
        #expect(a.errorMessage?.contains("e2e-worker refused the attempt token") == true, "\(a)")
        #expect(try await s.store.steps(attemptID: created.attemptID).isEmpty, "nothing ran")
        #expect(try await s.store.logs(attemptID: created.attemptID, since: 0, limit: 10).isEmpty)
    }

    @Test("Lightning restarts mid-attempt: the worker reconnects, rejoins, and the attempt completes with every line")
    func lightningRestart() async throws {
        var s = try await Stack()
        _ = try await s.store.applyWorkflow(try WorkflowDefinition.parse("""
            name: chatty
            jobs:
              - {name: talk, adaptor: bash, body: "for i in $(seq 1 30); do echo line $i; sleep 0.1; done"}
            """))
        let created = try await s.lightning.startWork(workflow: "chatty", input: Array("{}".utf8))
        try await s.store.waitForFirstLog(created.attemptID)
        try await s.restartLightning()
        let a = try await s.store.waitUntilFinal(created.attemptID)
        let stack = s
        defer { Task { await stack.stop() } }
        #expect(a.state == .success)
        let lines = try await s.store.logs(attemptID: created.attemptID, since: 0, limit: 1000).map(\.message)
        #expect(lines == (1...30).map { "line \($0)" }, "\(lines)")
    }
}
