import Channels
import Foundation
import Lightning
import Testing
import TestSupport

/// Several `lightning serve` processes on one PostgreSQL database (issue 12), with real workers: a fresh database on
/// the test process's throwaway server (TestSupport.PostgresServer) for each test.
@Suite("Lightning replicas on one PostgreSQL database", .serialized)
struct ReplicaTests {
    static let flow = """
        name: once
        jobs:
          - {name: mark, adaptor: sh, body: "echo ran $ATTEMPT_ID"}
        """

    @Test("two replicas, a worker on each: work made through either runs once, on either worker")
    func twoReplicas() async throws {
        let url = try await PostgresServer.shared().newDatabase()
        let a = try await Binaries(database: url)
        let b = try await Binaries(database: url)
        defer { a.remove(); b.remove() }
        try await a.apply(Self.flow)
        let one = try a.worker("one", extra: ["--capacity", "3"]), two = try b.worker("two", extra: ["--capacity", "3"])
        defer { one.stop(); two.stop() }
        // Both connected before the work comes, or the first could finish it alone on a slow machine.
        try await one.waitForLog("connected to Lightning")
        try await two.waitForLog("connected to Lightning")
        let (sa, sb) = (try a.store(), try b.store())
        var ids: [String] = []
        for i in 0..<60 {
            ids.append(try await (i % 2 == 0 ? sa : sb).createWorkOrder(workflow: "once", input: Array("{}".utf8)).attemptID)
        }
        var byWorker: [String: Int] = [:]
        for id in ids {
            let attempt = try await sb.waitUntilFinal(id, timeout: .seconds(240))
            #expect(attempt.state == .success, "\(attempt)\n\(one.log)\n\(two.log)")
            byWorker[attempt.workerName ?? "?", default: 0] += 1
            #expect(try await sa.logs(attemptID: id, since: 0, limit: 10).map(\.message) == ["ran \(id)"], "exactly one run of \(id)")
            #expect(try await sa.steps(attemptID: id).count == 1)
        }
        #expect(byWorker.values.reduce(0, +) == 60)
        #expect(Set(byWorker.keys) == ["one", "two"], "both workers took work: \(byWorker)")
        // Nothing went wrong on the way that only a log would tell (a replica's start-up reads, its janitor).
        for replica in [a, b] {
            let errors = replica.lightning.log.split(separator: "\n").filter { $0.contains(" error ") || $0.contains(" critical ") }
            #expect(errors.isEmpty, "\(errors)")
        }
    }

    @Test("a cancel asked of a replica the worker is not connected to reaches the worker")
    func cancelAcrossReplicas() async throws {
        let url = try await PostgresServer.shared().newDatabase()
        let a = try await Binaries(database: url)
        let b = try await Binaries(database: url)
        defer { a.remove(); b.remove() }
        try await a.apply("""
            name: long
            jobs:
              - {name: wait, adaptor: sh, body: "echo started; sleep 120"}
            """)
        let worker = try a.worker("on-a")
        defer { worker.stop() }
        try await worker.waitForLog("connected to Lightning")
        // Made through B (no worker there), run by the worker on A.
        let created = try await b.store().createWorkOrder(workflow: "long", input: Array("{}".utf8))
        try await b.store().waitForFirstLog(created.attemptID, timeout: .seconds(60))
        // The admin token the first replica wrote (the database is one, so are its tokens).
        let r = try await b.cli(["attempts", "cancel", created.attemptID],
                                environment: ["LIGHTNING_TOKEN_FILE": a.dir.appendingPathComponent("keys/operator_token").path])
        #expect(r.status == 0, "\(r)")
        let done = try await a.store().waitUntilFinal(created.attemptID, timeout: .seconds(60))
        #expect(done.state == .cancelled, "\(done)\n\(worker.log)")
    }

    @Test("an operator tailing through a third replica gets every line in order, and the end, while the worker writes through the first")
    func tailThroughAnotherReplica() async throws {
        let url = try await PostgresServer.shared().newDatabase()
        let a = try await Binaries(database: url)
        let b = try await Binaries(database: url)
        let c = try await Binaries(database: url)
        defer { a.remove(); b.remove(); c.remove() }
        try await a.apply("""
            name: stream
            jobs:
              - {name: a, adaptor: sh, body: "for i in $(seq 1 2000); do echo a$i; done; sleep 0.5; echo tail-end"}
            """)
        let created = try await b.store().createWorkOrder(workflow: "stream", input: Array("{}".utf8))
        // The tail starts before any worker exists: it sees the attempt go from available to its end.
        let tail = try ChildProcess(try TestSupport.builtBinary("lightning"),
                                    ["attempts", "tail", created.attemptID, "--json", "--server", "http://127.0.0.1:\(c.port)"],
                                    environment: ["LIGHTNING_TOKEN_FILE": a.dir.appendingPathComponent("keys/operator_token").path],
                                    directory: c.dir, logName: "tail.log")
        defer { tail.stop() }
        // Most likely joined by then, so that the lines reach it live (if not, its join's backlog has them: the
        // test would still pass, without showing the live path).
        try await Task.sleep(for: .seconds(1))
        let worker = try a.worker("streamer")
        defer { worker.stop() }
        #expect(await tail.waitForExit(timeout: 120) == 0, "\(tail.log.suffix(2000))")
        let printed = tail.log.split(separator: "\n").compactMap { try? JSON.parse(String($0)) }.filter { $0["seq"] != nil }
        let seqs = printed.map { $0["seq"]?.intValue ?? 0 }
        #expect(seqs.elementsEqual(1...2001), "\(seqs.count) lines, first \(seqs.prefix(3)), last \(seqs.suffix(3))")
        let messages: [String] = printed.map { $0["message"]?.stringValue ?? "" }
        let expected: [String] = (1...2000).map { "a\($0)" } + ["tail-end"]
        #expect(messages == expected, "the messages differ")
    }

    @Test("three replicas, two workers on different ones, 500 attempts; kill -9 of one replica mid-load: its worker fails over, everything runs exactly once")
    func replicaKilled() async throws {
        let url = try await PostgresServer.shared().newDatabase()
        var a = try await Binaries(database: url)
        let b = try await Binaries(database: url)
        let c = try await Binaries(database: url)
        defer { a.remove(); b.remove(); c.remove() }
        try await a.apply("""
            name: once
            jobs:
              - {name: mark, adaptor: sh, body: "echo ran $ATTEMPT_ID; sleep 0.05"}
            """)
        try await a.apply("""
            name: held
            jobs:
              - {name: hold, adaptor: sh, body: "echo held $ATTEMPT_ID; sleep 15"}
            """)
        // Each worker knows every replica, its own first.
        let all = [a, b, c].map { "ws://127.0.0.1:\($0.port)/worker" }
        let sb = try b.store()
        // Two long attempts for the worker on A, so that it surely has attempts under way when A goes (the short ones
        // end in step, four at a time: A could go between them). Its other two slots take short work.
        var held: [String] = []
        for _ in 0..<2 { held.append(try await sb.createWorkOrder(workflow: "held", input: Array("{}".utf8)).attemptID) }
        let one = try a.worker("one", extra: ["--capacity", "4", "--lightning", all[1], "--lightning", all[2]])
        defer { one.stop() }
        while try await sb.attempts(state: .started, limit: 10).filter({ $0.workerName == "one" }).count < 2 {
            try await Task.sleep(for: .milliseconds(50))
        }
        let two = try c.worker("two", extra: ["--capacity", "4", "--lightning", all[0], "--lightning", all[1]])
        defer { two.stop() }
        var ids: [String] = []
        for _ in 0..<500 { ids.append(try await sb.createWorkOrder(workflow: "once", input: Array("{}".utf8)).attemptID) }
        // Mid-load: some attempts are done, others are claimed or running on the worker connected to A.
        while try await sb.attempts(state: .success, limit: 1000).count < 60 { try await Task.sleep(for: .milliseconds(50)) }
        a.lightning.signal(SIGKILL)
        for id in held {
            let attempt = try await sb.waitUntilFinal(id, timeout: .seconds(240))
            #expect(attempt.state == .success && attempt.workerName == "one", "\(attempt)\n\(one.log.suffix(3000))")
        }
        var byWorker: [String: Int] = [:]
        for id in ids {
            let attempt = try await sb.waitUntilFinal(id, timeout: .seconds(240))
            #expect(attempt.state == .success, "\(attempt)\n\(one.log.suffix(3000))")
            byWorker[attempt.workerName ?? "?", default: 0] += 1
            #expect(try await sb.logs(attemptID: id, since: 0, limit: 10).map(\.message) == ["ran \(id)"], "exactly one run of \(id)")
            #expect(try await sb.steps(attemptID: id).count == 1)
        }
        #expect(byWorker.values.reduce(0, +) == 500)
        #expect(Set(byWorker.keys) == ["one", "two"], "both workers took work: \(byWorker)")
        _ = try await one.waitForLog("url=ws://127.0.0.1:\(b.port)/worker/websocket .*connected to Lightning")
        // It had attempts under way when A went (four slots, a backlog): they were rejoined on B and finished there.
        _ = try await one.waitForLog("topic=run:.* rejoined")
    }
}
