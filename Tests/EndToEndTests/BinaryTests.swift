import Foundation
import JWT
import Lightning
import Testing
import TestSupport

/// The real binaries: `lightning serve` and `runtime-worker` as processes.
struct Binaries {
    let dir: URL
    let keys: WorkerKeySet
    let lightning: ChildProcess
    let port: Int
    var database: String { dir.appendingPathComponent("lightning.db").path }

    init() throws {
        dir = try TestSupport.temporaryDirectory("binaries")
        keys = try WorkerKeySet.generate()
        try keys.write(to: dir.appendingPathComponent("keys").path)
        lightning = try ChildProcess(try TestSupport.builtBinary("lightning"),
                                     ["serve", "--port", "0", "--database", dir.appendingPathComponent("lightning.db").path,
                                      "--grace-seconds", "2"],
                                     directory: dir, logName: "lightning.log")
        let line = try lightning.waitForLog(#"port=\d+ \[Lightning\] Lightning is listening"#)
        port = Int(line.dropFirst(5).prefix { $0.isNumber }) ?? 0
    }

    func worker(_ name: String, extra: [String] = []) throws -> ChildProcess {
        try ChildProcess(try TestSupport.builtBinary("runtime-worker"),
                         ["--lightning", "ws://127.0.0.1:\(port)/worker", "--name", name, "--work-dir",
                          dir.appendingPathComponent("work-\(name)").path] + extra,
                         directory: dir, logName: "\(name).log")
    }

    func store() throws -> SQLiteStore { try SQLiteStore(path: database, cipher: nil) }


    func remove() {
        lightning.stop()
        try? FileManager.default.removeItem(at: dir)
    }
}

@Suite("The real binaries", .serialized)
struct BinaryTests {
    @Test("SIGTERM: the worker stops claiming, lets its running attempt finish, and exits 0")
    func gracefulWorker() async throws {
        let b = try Binaries()
        defer { b.remove() }
        let store = try b.store()
        _ = try await store.applyWorkflow(try WorkflowDefinition.parse("""
            name: slowish
            jobs:
              - {name: s, adaptor: sh, body: "echo start; sleep 1.5; echo done"}
            """))
        let worker = try b.worker("graceful")
        try worker.waitForLog("worker joined|connected to Lightning")
        let first = try await store.createWorkOrder(workflow: "slowish", input: Array("{}".utf8))
        let deadline = ContinuousClock.now + .seconds(20)
        while try await store.attempt(first.attemptID).state != .started, ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(20))
        }
        worker.signal(SIGTERM)
        let second = try await store.createWorkOrder(workflow: "slowish", input: Array("{}".utf8))
        #expect(worker.waitForExit(timeout: 30) == 0, "\(worker.log)")
        let a = try await store.attempt(first.attemptID)
        #expect(a.state == .success, "\(a)")
        #expect(try await store.logs(attemptID: first.attemptID, since: 0, limit: 10).map(\.message) == ["start", "done"])
        #expect(try await store.attempt(second.attemptID).state == .available, "a draining worker claims nothing")
    }

    @Test("SIGTERM past --shutdown-timeout stops the attempt with reason kill; a second signal exits at once")
    func shutdownTimeout() async throws {
        let b = try Binaries()
        defer { b.remove() }
        let store = try b.store()
        _ = try await store.applyWorkflow(try WorkflowDefinition.parse("""
            name: endless
            jobs:
              - {name: s, adaptor: sh, body: "echo start; sleep 60"}
            """))
        for secondSignal in [false, true] {
            let worker = try b.worker("stopper-\(secondSignal)", extra: ["--shutdown-timeout", secondSignal ? "30" : "0.5"])
            let created = try await store.createWorkOrder(workflow: "endless", input: Array("{}".utf8))
            try await store.waitForFirstLog(created.attemptID)
            worker.signal(SIGTERM)
            if secondSignal {
                try worker.waitForLog("shutting down: claiming nothing more")
                worker.signal(SIGTERM)
                #expect(worker.waitForExit(timeout: 5) == 130, "\(worker.log)")
            } else {
                #expect(worker.waitForExit(timeout: 20) == 0, "\(worker.log)")
                let a = try await store.attempt(created.attemptID)
                #expect(a.state == .killed && a.errorType == "ShutdownError", "\(a)")
            }
        }
    }

    @Test("kill -9 of a worker mid-attempt: the attempt is lost after the grace period, its step dies with the worker")
    func killedWorker() async throws {
        let b = try Binaries()
        defer { b.remove() }
        let store = try b.store()
        let marker = "lr-orphan-\(UUID().uuidString.prefix(6))"
        _ = try await store.applyWorkflow(try WorkflowDefinition.parse("""
            name: forever
            jobs:
              - {name: s, adaptor: bash, body: "echo running; exec -a \(marker) sleep 120"}
            """))
        let worker = try b.worker("doomed")
        let created = try await store.createWorkOrder(workflow: "forever", input: Array("{}".utf8))
        try await store.waitForFirstLog(created.attemptID)
        worker.signal(SIGKILL)
        _ = worker.waitForExit()
        let a = try await b.store().waitUntilFinal(created.attemptID, timeout: .seconds(30))
        #expect(a.state == .lost && a.errorType == "LostAfterStart")
        try await Task.sleep(for: .milliseconds(200))
        #expect(try TestSupport.run("/usr/bin/pgrep", ["-f", marker]).stdout.isEmpty, "the step outlived its worker")
    }

    @Test("a worker with the wrong secret says so and exits non-zero")
    func wrongSecret() async throws {
        let b = try Binaries()
        defer { b.remove() }
        let worker = try ChildProcess(try TestSupport.builtBinary("runtime-worker"),
                                      ["--lightning", "ws://127.0.0.1:\(b.port)/worker", "--work-dir", b.dir.appendingPathComponent("w").path],
                                      environment: ["WORKER_SECRET": String(repeating: "w", count: 44),
                                                    "LIGHTNING_PUBLIC_KEY": b.keys.lightningPublicKeyBase64],
                                      directory: b.dir, logName: "wrong.log")
        let status = worker.waitForExit(timeout: 20)
        #expect(status != nil && status != 0)
        #expect(worker.log.contains("refused this worker's token (HTTP 401)"), "\(worker.log)")
    }
}
