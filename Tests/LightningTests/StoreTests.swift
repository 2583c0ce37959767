import Foundation
import Synchronization
import Testing
import TestSupport
import LightningProtocol
@testable import Lightning

let exampleYAML = """
    name: greet
    options:
      concurrency: 2
      run_timeout_ms: 60000
    triggers:
      - name: hook
        type: webhook
        path: greet
    jobs:
      - name: hello
        adaptor: sh
        body: echo hello
        credential: api
      - name: recover
        adaptor: python3
        body: print("recovering")
    edges:
      - from: hook
        to: hello
      - from: hello
        to: recover
        condition: on_job_failure
    """

/// The engines under the store. The store's behaviour tests take `Engine.all` as their arguments, so each runs
/// against both: a SQLite file, and a fresh database on a real PostgreSQL server (TestSupport.PostgresServer).
enum Engine: String, CaseIterable, CustomTestStringConvertible, Sendable {
    case sqlite, postgres
    static let all = allCases
    var testDescription: String { rawValue }
}

struct TestStore {
    let dir: URL
    let store: SQLStore
    let engine: Engine
    /// The SQLite file, or the PostgreSQL database's URL.
    let location: String
    let key = Array(repeating: UInt8(7), count: 32)
    var path: String { dir.appendingPathComponent("lightning.db").path }

    init(directory: URL? = nil) throws {
        dir = try directory ?? TestSupport.temporaryDirectory("store")
        engine = .sqlite
        location = dir.appendingPathComponent("lightning.db").path
        store = try SQLStore(path: location, cipher: CredentialCipher(key: key))
    }

    private init(dir: URL, store: SQLStore, engine: Engine, location: String) {
        self.dir = dir
        self.store = store
        self.engine = engine
        self.location = location
    }

    static func make(_ engine: Engine) async throws -> TestStore {
        switch engine {
        case .sqlite:
            return try TestStore()
        case .postgres:
            let url = try await PostgresServer.shared().newDatabase()
            let key = Array(repeating: UInt8(7), count: 32)
            let store = try await TestSupport.onThread { try SQLStore.open(url, cipher: CredentialCipher(key: key)) }
            return TestStore(dir: try TestSupport.temporaryDirectory("store"), store: store, engine: .postgres, location: url)
        }
    }

    /// The same database opened again (as a restarted Lightning, or another replica, would).
    func reopen(cipher: CredentialCipher? = nil) async throws -> SQLStore {
        let location = location
        return try await TestSupport.onThread { try SQLStore.open(location, cipher: cipher) }
    }

    func remove() { try? FileManager.default.removeItem(at: dir) }

    func workflow(_ yaml: String = exampleYAML) async throws {
        _ = try await store.applyWorkflow(try WorkflowDefinition.parse(yaml))
    }

    /// One attempt of a one-job workflow `w`, claimed and started by `worker`.
    func startedAttempt(worker: String) async throws -> String {
        try await self.workflow("name: w\njobs:\n  - {name: a, adaptor: sh, body: x}\n")
        let id = try await work(1, workflow: "w")[0]
        _ = try await store.claim(demand: 1, workerName: worker)
        try await store.startAttempt(id, workerName: worker, at: 1)
        return id
    }

    func work(_ n: Int, workflow: String = "greet") async throws -> [String] {
        var ids: [String] = []
        for i in 0..<n { ids.append(try await store.createWorkOrder(workflow: workflow, input: Array(#"{"n":\#(i)}"#.utf8)).attemptID) }
        return ids
    }
}

private func yaml(concurrency: Int?, name: String = "free") -> String {
    """
    name: \(name)
    \(concurrency.map { "options:\n  concurrency: \($0)" } ?? "")
    jobs:
      - name: a
        adaptor: sh
        body: "true"
    """
}

@Suite("The store, queue and claims, on SQLite and on PostgreSQL", .serialized)
struct StoreTests {
    @Test("claims are FIFO and honour a workflow's concurrency", arguments: Engine.all)
    func fifoAndConcurrency(_ engine: Engine) async throws {
        let t = try await TestStore.make(engine)
        defer { t.remove() }
        try await t.workflow()
        let ids = try await t.work(4)
        let first = try await t.store.claim(demand: 10, workerName: "w1")
        #expect(first.map(\.id) == Array(ids.prefix(2)), "concurrency 2 caps the claim, oldest first")
        #expect(try await t.store.claim(demand: 10, workerName: "w1").isEmpty)
        try await t.store.startAttempt(ids[0], workerName: "w1", at: 1)
        _ = try await t.store.completeAttempt(ids[0], AttemptComplete(reason: .success), finalState: Array("{}".utf8), at: 2)
        #expect(try await t.store.claim(demand: 10, workerName: "w2").map(\.id) == [ids[2]])
    }

    /// Lightning nudges the workers from `ordered`, which on SQLite runs before the work order's commit. A claim the
    /// nudge brings then must find the attempt: its read-only shortcut (committed rows only) must not answer "nothing",
    /// and the claim itself queues behind the work order in the writer. The writer is held inside `ordered` until a
    /// check from another thread has run, so the check surely comes before the commit.
    @Test("new work is claimable from the moment `ordered` is called, before its commit on SQLite", arguments: Engine.all)
    func claimableOnceOrdered(_ engine: Engine) async throws {
        let t = try await TestStore.make(engine)
        defer { t.remove() }
        try await t.workflow(yaml(concurrency: nil, name: "free"))
        let store = t.store
        let seen = Mutex<(claimable: Bool?, committed: Bool?, claim: Task<[ClaimedAttempt], any Error>?, id: String?)>((nil, nil, nil, nil))
        let created = try await store.createWorkOrder(workflow: "free", input: Array("{}".utf8), ordered: { created in
            let checked = DispatchSemaphore(value: 0)
            Thread.detachNewThread {
                let claimable = try? store.mayHaveClaimableWork()
                let committed = try? store.readHere { db in try db.int("SELECT 1 FROM attempts WHERE id = ?", [created.attemptID]) != nil }
                seen.withLock { $0.claimable = claimable; $0.committed = committed }
                checked.signal()
            }
            checked.wait()
            let claim = Task { try await store.claim(demand: 1, workerName: "w1") }
            seen.withLock { $0.claim = claim; $0.id = created.attemptID }
        })
        let (claimable, committed, claim, id) = seen.withLock { ($0.claimable, $0.committed, $0.claim, $0.id) }
        // SQLite: called before the commit (the nudge overlaps its fsync); PostgreSQL: after it.
        #expect(committed == (engine == .postgres), "on SQLite `ordered` runs before the commit, on PostgreSQL after")
        #expect(claimable == true, "checked before the commit, the work being written counts")
        #expect(id == created.attemptID)
        let claimed = try await #require(claim).value
        #expect(claimed.map(\.id) == [created.attemptID], "the claim started from `ordered` takes the new attempt")
        #expect(try store.mayHaveClaimableWork() == false, "once committed and claimed, nothing is left")
    }

    @Test("a long backlog of a workflow at its concurrency limit does not starve other workflows", arguments: Engine.all)
    func noStarvation(_ engine: Engine) async throws {
        let t = try await TestStore.make(engine)
        defer { t.remove() }
        try await t.workflow(yaml(concurrency: 1, name: "capped"))
        try await t.workflow(yaml(concurrency: nil, name: "free"))
        let capped = try await t.work(500, workflow: "capped")
        let free = try await t.work(3, workflow: "free")
        let got = try await t.store.claim(demand: 4, workerName: "w1")
        #expect(got.map(\.id) == [capped[0]] + free, "one capped attempt, then the free ones behind 499 waiting")
        #expect(try await t.store.claim(demand: 4, workerName: "w1").isEmpty)
    }

    @Test("many concurrent claimers: every attempt is claimed exactly once", arguments: Engine.all)
    func concurrentClaims(_ engine: Engine) async throws {
        let t = try await TestStore.make(engine)
        defer { t.remove() }
        try await t.workflow(yaml(concurrency: nil))
        let ids = try await t.work(300, workflow: "free")
        let claimed = try await withThrowingTaskGroup(of: [String].self) { group in
            for w in 0..<8 {
                group.addTask {
                    var mine: [String] = []
                    while true {
                        let got = try await t.store.claim(demand: 3, workerName: "w\(w)")
                        if got.isEmpty { return mine }
                        mine += got.map(\.id)
                    }
                }
            }
            return try await group.reduce(into: [String]()) { $0 += $1 }
        }
        #expect(claimed.count == 300)
        #expect(Set(claimed) == Set(ids))
    }

    @Test("three stores on one database (three replicas), claiming at once: each attempt once, a workflow's concurrency never exceeded",
          arguments: Engine.all)
    func replicasClaim(_ engine: Engine) async throws {
        let t = try await TestStore.make(engine)
        defer { t.remove() }
        try await t.workflow(yaml(concurrency: nil, name: "free"))
        try await t.workflow(yaml(concurrency: 3, name: "capped"))
        // Interleaved, so that claimers' windows (each locks the rows it reads) hold different capped attempts.
        var free: [String] = []
        for _ in 0..<40 {
            free += try await t.work(5, workflow: "free")
            _ = try await t.work(1, workflow: "capped")
        }
        let replicas = [t.store, try await t.reopen(), try await t.reopen()]
        let claimed = try await withThrowingTaskGroup(of: [String].self) { group in
            for w in 0..<9 {
                group.addTask {
                    let store = replicas[w % replicas.count]
                    var mine: [String] = []
                    while true {
                        let got = try await store.claim(demand: 4, workerName: "w\(w)")
                        if got.isEmpty { return mine }
                        mine += got.map(\.id)
                    }
                }
            }
            return try await group.reduce(into: [String]()) { $0 += $1 }
        }
        #expect(claimed.count == Set(claimed).count, "no attempt claimed twice")
        #expect(Set(free).isSubset(of: Set(claimed)), "every free attempt claimed")
        #expect(claimed.count == free.count + 3, "the capped workflow's concurrency of 3 held across replicas: \(claimed.count - free.count)")
    }

    @Test("an undelivered claim goes back to available, only for the worker that had it", arguments: Engine.all)
    func unclaim(_ engine: Engine) async throws {
        let t = try await TestStore.make(engine)
        defer { t.remove() }
        try await t.workflow(yaml(concurrency: nil))
        let ids = try await t.work(1, workflow: "free")
        _ = try await t.store.claim(demand: 1, workerName: "w1")
        try await t.store.unclaim(ids, workerName: "someone-else")
        #expect(try await t.store.attempt(ids[0]).state == .claimed)
        try await t.store.unclaim(ids, workerName: "w1")
        let back = try await t.store.attempt(ids[0])
        #expect(back.state == .available && back.workerName == nil && back.claimedAt == nil)
    }

    @Test("final states never change; late events and logs are refused", arguments: Engine.all)
    func finalStates(_ engine: Engine) async throws {
        let t = try await TestStore.make(engine)
        defer { t.remove() }
        try await t.workflow(yaml(concurrency: nil))
        let id = try await t.work(1, workflow: "free")[0]
        _ = try await t.store.claim(demand: 1, workerName: "w1")
        await #expect(throws: StoreError.self) { try await t.store.startAttempt(id, workerName: "w2", at: 1) }
        try await t.store.startAttempt(id, workerName: "w1", at: 1)
        #expect(try await t.store.completeAttempt(id, AttemptComplete(reason: .fail, errorType: "JobError"), finalState: nil, at: 2).state == .failed)
        await #expect(throws: StoreError.self) {
            try await t.store.completeAttempt(id, AttemptComplete(reason: .success), finalState: nil, at: 3)
        }
        await #expect(throws: StoreError.self) {
            try await t.store.appendLogs(attemptID: id, [NewLogLine(stepID: nil, level: "info", source: "JOB", message: "late", timestamp: 4)])
        }
        #expect(try await t.store.attempt(id).state == .failed)
    }

    @Test("log seq numbers are gap-free under concurrent batches", arguments: Engine.all)
    func logSequence(_ engine: Engine) async throws {
        let t = try await TestStore.make(engine)
        defer { t.remove() }
        try await t.workflow(yaml(concurrency: nil))
        let ids = try await t.work(2, workflow: "free")
        for id in ids {
            _ = try await t.store.claim(demand: 1, workerName: "w")
            try await t.store.startAttempt(id, workerName: "w", at: 1)
        }
        try await withThrowingTaskGroup(of: Void.self) { group in
            for b in 0..<40 {
                group.addTask {
                    let lines = (0..<25).map { NewLogLine(stepID: nil, level: "info", source: "JOB", message: "b\(b) l\($0)", timestamp: 1) }
                    let seqs = try await t.store.appendLogs(attemptID: ids[b % 2], lines).seqs.compactMap { $0 }
                    #expect(seqs == Array(seqs.first!...seqs.last!), "a batch gets consecutive numbers")
                }
            }
            try await group.waitForAll()
        }
        for id in ids {
            let logs = try await t.store.logs(attemptID: id, since: 0, limit: 10_000)
            #expect(logs.map(\.seq) == Array(1...500))
        }
        #expect(try await t.store.logs(attemptID: ids[0], since: 490, limit: 100).map(\.seq) == Array(491...500))
    }

    @Test("a log batch resent after a lost reply is stored once; lines without worker_seq are always stored", arguments: Engine.all)
    func resentBatch(_ engine: Engine) async throws {
        let t = try await TestStore.make(engine)
        defer { t.remove() }
        try await t.workflow(yaml(concurrency: nil))
        let id = try await t.work(1, workflow: "free")[0]
        _ = try await t.store.claim(demand: 1, workerName: "w")
        try await t.store.startAttempt(id, workerName: "w", at: 1)
        func line(_ n: Int64?, _ text: String) -> NewLogLine {
            NewLogLine(stepID: nil, level: "info", source: "JOB", message: text, timestamp: 1, workerSeq: n)
        }
        let first = (1...3).map { line(Int64($0), "line \($0)") }
        #expect(try await t.store.appendLogs(attemptID: id, first).seqs == [1, 2, 3])
        // The reply to the next batch is lost; the worker resends it, then an overlapping one.
        let second = (4...6).map { line(Int64($0), "line \($0)") }
        #expect(try await t.store.appendLogs(attemptID: id, second).seqs == [4, 5, 6])
        let resend = try await t.store.appendLogs(attemptID: id, second)
        #expect(resend.seqs == [4, 5, 6] && resend.stored.isEmpty, "the resend is answered with the first seqs and stores nothing")
        #expect(try await t.store.appendLogs(attemptID: id, (5...7).map { line(Int64($0), "line \($0)") }).seqs == [5, 6, 7])
        // A worker that does not number its lines (OpenFn's own) is never deduplicated.
        _ = try await t.store.appendLogs(attemptID: id, [line(nil, "plain"), line(nil, "plain")])
        let logs = try await t.store.logs(attemptID: id, since: 0, limit: 100)
        #expect(logs.map(\.message) == (1...7).map { "line \($0)" } + ["plain", "plain"])
        #expect(logs.map(\.seq) == Array(1...9))
    }

    @Test("credentials are encrypted at rest and never appear in the database file", arguments: Engine.all)
    func credentialsEncrypted(_ engine: Engine) async throws {
        let t = try await TestStore.make(engine)
        defer { t.remove() }
        let secret = "hunter2-very-secret-value"
        let id = try await t.store.setCredential(name: "api", body: Array(#"{"password":"\#(secret)"}"#.utf8))
        #expect(String(decoding: try await t.store.credentialBody(id: id), as: UTF8.self).contains(secret))
        let stored = try t.store.database.readHere { db in try db.bytes("SELECT sealed_body FROM credentials WHERE id = ?", [id]) }
        #expect(stored.map { Data($0).range(of: Data(secret.utf8)) == nil } == true, "plaintext found in the stored column")
        if engine == .sqlite {
            for suffix in ["", "-wal"] {
                let bytes = (try? Data(contentsOf: URL(fileURLWithPath: t.path + suffix))) ?? Data()
                #expect(bytes.range(of: Data(secret.utf8)) == nil, "plaintext found in lightning.db\(suffix)")
            }
        }
        let other = try await t.reopen(cipher: CredentialCipher(key: Array(repeating: 9, count: 32)))
        await #expect(throws: CredentialCipher.Error.self) { try await other.credentialBody(id: id) }
        await #expect(throws: StoreError.self) { try await t.store.setCredential(name: "bad", body: Array("[1]".utf8)) }
    }

    @Test("group commit: concurrent writes share transactions, and a refused one undoes only itself", arguments: Engine.all)
    func groupCommit(_ engine: Engine) async throws {
        let t = try await TestStore.make(engine)
        defer { t.remove() }
        try await t.workflow(yaml(concurrency: nil))
        let before = t.store.database.commits.transactions
        let results = await withTaskGroup(of: Result<CreatedWork, any Error>.self) { group in
            for i in 0..<60 {
                group.addTask {
                    do {
                        return .success(try await t.store.createWorkOrder(workflow: i == 30 ? "no-such-workflow" : "free",
                                                                          input: Array("{}".utf8)))
                    } catch {
                        return .failure(error)
                    }
                }
            }
            var all: [Result<CreatedWork, any Error>] = []
            for await r in group { all.append(r) }
            return all
        }
        let ok = results.compactMap { try? $0.get() }
        #expect(ok.count == 59, "every write but the refused one committed")
        #expect(results.filter { if case .failure(let e) = $0 { return e is StoreError }; return false }.count == 1)
        for created in ok { #expect(try await t.store.attempt(created.attemptID).state == .available) }
        let transactions = t.store.database.commits.transactions - before
        if engine == .sqlite {
            // One transaction per write would be 60; writes that queue up while one commits go in the next.
            #expect(transactions < 60, "60 writes in \(transactions) transactions")
        } else {
            // PostgreSQL: a transaction per write (its own WAL flush groups the commits).
            #expect(transactions == 59, "the 59 accepted writes, each committed once")
        }
    }

    @Test("reopening the same database keeps everything and runs no migration twice", arguments: Engine.all)
    func reopen(_ engine: Engine) async throws {
        let t = try await TestStore.make(engine)
        defer { t.remove() }
        try await t.workflow()
        let ids = try await t.work(2)
        let again = try await t.reopen()
        #expect(try await again.attempt(ids[1]).state == .available)
        #expect(try await again.workflows().map(\.name) == ["greet"])
        let migrations = engine == .sqlite ? "grdb_migrations" : "schema_migrations"
        let applied = try again.database.readHere { db in try db.strings("SELECT \(migrations).* FROM \(migrations)") }
        #expect(applied.sorted() == Migrations.list.map(\.name).sorted(), "each migration recorded once")
    }

    @Test("the plan comes from the snapshot taken when the work order was made", arguments: Engine.all)
    func planFromSnapshot(_ engine: Engine) async throws {
        let t = try await TestStore.make(engine)
        defer { t.remove() }
        _ = try await t.store.setCredential(name: "api", body: Array(#"{"token":"abc123"}"#.utf8))
        try await t.workflow()
        let id = try await t.work(1)[0]
        try await t.workflow(exampleYAML.replacingOccurrences(of: "echo hello", with: "echo changed"))
        let plan = try await t.store.plan(attemptID: id)
        #expect(plan.jobs.map(\.body) == ["echo hello", "print(\"recovering\")"])
        #expect(plan.jobs[0].credentialID != nil)
        #expect(plan.startingNodeID == plan.jobs[0].id)
        #expect(plan.edges.count == 2 && plan.edges[1].condition == "on_job_failure")
        #expect(plan.options.runTimeoutMS == 60_000)
        #expect(try await t.store.credentialIDs(attemptID: id) == [plan.jobs[0].credentialID!])
        let webhook = try await t.store.createWorkOrder(webhookPath: "greet", input: Array("{}".utf8))
        #expect(try await t.store.plan(attemptID: webhook.attemptID).jobs[0].body == "echo changed")
        // A credential named but never set is not silently dropped: the plan carries a placeholder whose fetch fails.
        try await t.workflow(yaml(concurrency: nil, name: "needs").replacingOccurrences(of: "adaptor: sh", with: "adaptor: sh\n    credential: nope"))
        let needs = try await t.work(1, workflow: "needs")[0]
        #expect(try await t.store.plan(attemptID: needs).jobs[0].credentialID == Plan.missingCredentialPrefix + "nope")
        // The snapshot is read once and kept; the credential is looked up again for every plan, so one set after
        // the first plan was built is in the next.
        let set = try await t.store.setCredential(name: "nope", body: Array(#"{"k":"v"}"#.utf8))
        #expect(try await t.store.plan(attemptID: needs).jobs[0].credentialID == set)
    }

    @Test("lost attempts: a vanished worker's attempts and overdue claims, with their open steps", arguments: Engine.all)
    func lost(_ engine: Engine) async throws {
        let t = try await TestStore.make(engine)
        defer { t.remove() }
        try await t.workflow(yaml(concurrency: nil))
        let ids = try await t.work(2, workflow: "free")
        _ = try await t.store.claim(demand: 1, workerName: "gone")
        _ = try await t.store.claim(demand: 1, workerName: "alive")
        try await t.store.startAttempt(ids[0], workerName: "gone", at: 1)
        try await t.store.startStep(attemptID: ids[0], stepID: "s1", jobID: "j", inputDataclipID: nil, at: 2)
        let lost = try await t.store.markLost(goneWorkers: ["gone"], now: Timestamp.nowMicros(), graceMicros: 30_000_000,
                                              aliveWithinMicros: 40_000_000).lost
        #expect(lost == [ids[0]])
        let a = try await t.store.attempt(ids[0])
        #expect(a.state == .lost && a.errorType == "LostAfterStart")
        #expect(try await t.store.steps(attemptID: ids[0]).first?.reason == "lost")
        #expect(try await t.store.attempt(ids[1]).state == .claimed)
        let overdue = try await t.store.markLost(goneWorkers: [], now: Timestamp.nowMicros() + 400_000_000_000, graceMicros: 0,
                                                 aliveWithinMicros: 0).lost
        #expect(overdue == [ids[1]])
        #expect(try await t.store.attempt(ids[1]).errorType == "LostAfterClaim")
    }

    @Test("workers: listed in byte order with what they said at join; fleet control set, read and cleared", arguments: Engine.all)
    func workersAndControl(_ engine: Engine) async throws {
        let t = try await TestStore.make(engine)
        defer { t.remove() }
        for name in ["b", "A", "a"] {
            var j = WorkerJoin(name: name, capacity: 3, version: "1.0", authMode: "secret")
            j.labels = ["x", "y"]
            j.host = "h-\(name)"
            try await t.store.workerConnected(j, at: 10)
        }
        let listed = try await t.store.workers()
        #expect(listed.map(\.name) == ["A", "a", "b"], "byte order, as SQLite's")
        #expect(listed.allSatisfy { $0.labels == ["x", "y"] && $0.capacity == 3 && $0.host == "h-\($0.name)" && $0.currentAttempts == 0 })
        let control = WorkerControl(action: .drain, policy: .requeue, instanceID: "i-1")
        try await t.store.setWorkerControl([("a", control), ("b", nil)])
        #expect(try await t.store.workerControl(name: "a") == control)
        #expect(try await t.store.workerControl(name: "b") == nil)
        try await t.store.setWorkerControl([("a", nil)])
        #expect(try await t.store.workerControl(name: "a") == nil)
    }

    @Test("the workers holding attempts, once each, with when they went (what a restarted replica starts from)", arguments: Engine.all)
    func workersHolding(_ engine: Engine) async throws {
        let t = try await TestStore.make(engine)
        defer { t.remove() }
        try await t.workflow(yaml(concurrency: nil))
        _ = try await t.work(5, workflow: "free")
        for name in ["zed", "amy"] {
            var j = WorkerJoin(name: name, capacity: 2, version: nil, authMode: "secret")
            j.connectionID = "A/\(name)"
            try await t.store.workerConnected(j, at: 10)
            _ = try await t.store.claim(demand: 2, workerName: name)
        }
        try await t.store.workerDisconnected(name: "zed", connectionID: "A/zed", at: 20)
        let holding = try await t.store.workersHoldingAttempts()
        #expect(holding.map(\.name) == ["amy", "zed"])
        #expect(holding.map(\.disconnectedAt) == [nil, 20])
    }

    @Test("liveness is shared: a worker gone from one replica but alive on another is not lost; a late disconnect of an old connection changes nothing", arguments: Engine.all)
    func sharedLiveness(_ engine: Engine) async throws {
        let t = try await TestStore.make(engine)
        defer { t.remove() }
        try await t.workflow(yaml(concurrency: nil))
        let names = ["moved", "half-open", "left-later", "gone", "stale"]
        let ids = try await t.work(names.count, workflow: "free")
        func join(_ name: String, _ connection: String, at: Int64) async throws {
            var j = WorkerJoin(name: name, capacity: 1, version: nil, authMode: "secret")
            j.connectionID = connection
            try await t.store.workerConnected(j, at: at)
        }
        for name in names {
            try await join(name, "A/\(name)", at: 100)
            _ = try await t.store.claim(demand: 1, workerName: name)
        }
        let grace: Int64 = 30_000_000, alive: Int64 = 40_000_000, now: Int64 = 1_000_000_000
        // All five left replica A. "moved" joined B and is there. "half-open": A noticed only after the worker was on
        // B, and its disconnect of A's old connection must not mark it gone. "left-later" joined B and left it within
        // the grace period. "gone" left for good. "stale": its record says connected, but no replica refreshes it
        // (its replica was killed).
        try await t.store.workerDisconnected(name: "moved", connectionID: "A/moved", at: 200)
        try await join("moved", "B/moved", at: 300)
        try await join("half-open", "B/half-open", at: 300)
        try await t.store.workerDisconnected(name: "half-open", connectionID: "A/half-open", at: 400)
        try await join("left-later", "B/left-later", at: 300)
        try await t.store.workerDisconnected(name: "left-later", connectionID: "B/left-later", at: now - grace / 2)
        try await t.store.workerDisconnected(name: "gone", connectionID: "A/gone", at: 200)
        // B's heartbeat for the workers connected to it.
        try await t.store.workersSeen(connectionIDs: ["B/moved", "B/half-open"], at: now - 1_000_000)
        let (lost, spared) = try await t.store.markLost(goneWorkers: names, now: now, graceMicros: grace, aliveWithinMicros: alive)
        #expect(Set(lost) == [ids[3], ids[4]], "only the one gone everywhere and the one no replica vouches for")
        #expect(spared == ["moved", "half-open", "left-later"])
        for i in 0..<3 { #expect(try await t.store.attempt(ids[i]).state == .claimed, "\(names[i])") }
        // Past the other replica's grace too, the third one's attempt is lost; the live ones never are while seen.
        try await t.store.workersSeen(connectionIDs: ["B/moved", "B/half-open"], at: now + grace)
        let later = try await t.store.markLost(goneWorkers: names, now: now + grace, graceMicros: grace, aliveWithinMicros: alive)
        #expect(later.lost == [ids[2]] && later.spared == ["moved", "half-open"])
    }
}

@Suite("Workflow definitions")
struct WorkflowDefinitionTests {
    @Test("the example parses from YAML and from JSON")
    func parses() async throws {
        let w = try WorkflowDefinition.parse(exampleYAML)
        #expect(w.jobs.map(\.name) == ["hello", "recover"])
        #expect(w.startingJob == "hello")
        let json = String(decoding: try JSONEncoder().encode(w), as: UTF8.self)
        #expect(try WorkflowDefinition.parse(json) == w)
    }

    @Test("validation names the exact problem", arguments: [
        ("edges:\n  - from: a\n    to: nope", "points at unknown job \"nope\""),
        ("edges:\n  - from: a\n    to: b\n  - from: b\n    to: a", "cycle: a -> b -> a"),
        ("edges:\n  - from: a\n    to: b\n    condition: state.x = 1", "invalid condition"),
        ("edges:\n  - from: ghost\n    to: b", "starts at unknown node \"ghost\""),
    ])
    func problems(edges: String, fragment: String) throws {
        let text = "name: w\njobs:\n  - {name: a, adaptor: sh, body: x}\n  - {name: b, adaptor: sh, body: y}\n" + edges
        let error = #expect(throws: WorkflowValidationError.self) { try WorkflowDefinition.parse(text) }
        #expect(error?.description.contains(fragment) == true, "\(error?.description ?? "")")
    }

    @Test("a webhook path no URL reaches as it is, or that would split the stored list, is refused by name",
          arguments: ["", ".", "..", "a/b", "a b", "a%20b", "a?b", "a#b", "a,b", "a&b", "a;b", "a+b", "a\u{0}b", "caf\u{e9}", String(repeating: "p", count: 201)])
    func unreachableWebhookPaths(path: String) throws {
        let text = "{\"name\":\"w\",\"jobs\":[{\"name\":\"a\",\"adaptor\":\"sh\",\"body\":\"x\"}],"
            + "\"triggers\":[{\"name\":\"t\",\"type\":\"webhook\",\"path\":\(String(decoding: try JSONEncoder().encode(path), as: UTF8.self))}]}"
        let error = #expect(throws: WorkflowValidationError.self) { try WorkflowDefinition.parse(text) }
        #expect(error?.description.contains("webhook trigger \"t\"") == true, "\(error?.description ?? "")")
    }

    @Test("webhook paths of the characters a URL path carries unescaped are taken",
          arguments: ["hook", "a.b", "v2~x", "A-b_9", "order:created", "a@b!$'()*=c", String(repeating: "p", count: 200)])
    func reachableWebhookPaths(path: String) throws {
        let quoted = String(decoding: try JSONEncoder().encode(path), as: UTF8.self)
        let text = "name: w\njobs:\n  - {name: a, adaptor: sh, body: x}\ntriggers:\n  - {name: t, type: webhook, path: \(quoted)}"
        #expect(try WorkflowDefinition.parse(text).triggers.first?.path == path)
    }

    @Test("missing bodies, duplicate names, bad triggers and missing fields are named")
    func moreProblems() async throws {
        let dup = "name: w\njobs:\n  - {name: a, adaptor: sh, body: x}\n  - {name: a, adaptor: sh, body: '  '}"
        let e1 = #expect(throws: WorkflowValidationError.self) { try WorkflowDefinition.parse(dup) }
        #expect(e1?.description.contains("duplicate name \"a\"") == true)
        #expect(e1?.description.contains("job \"a\" has no body") == true)
        let cron = "name: w\ntriggers:\n  - {name: t, type: cron, cron: '61 * * * *'}\njobs:\n  - {name: a, adaptor: sh, body: x}"
        let e2 = #expect(throws: WorkflowValidationError.self) { try WorkflowDefinition.parse(cron) }
        #expect(e2?.description.contains("minute value 61") == true)
        let missing = "name: w\njobs:\n  - {name: a, body: x}"
        let e3 = #expect(throws: WorkflowValidationError.self) { try WorkflowDefinition.parse(missing) }
        #expect(e3?.description.contains("missing field \"adaptor\"") == true, "\(e3?.description ?? "")")
    }
}

@Suite("The PostgreSQL store when its server goes away")
struct PostgresOutageTests {
    @Test("the server restarts (every pooled connection is gone): reads and writes go on, none fails")
    func serverRestarts() async throws {
        let server = try await PostgresServer()
        defer { server.stop() }
        let url = server.url()
        let store = try await TestSupport.onThread { try SQLStore.open(url, cipher: nil) }
        _ = try await store.applyWorkflow(try WorkflowDefinition.parse("name: w\njobs:\n  - {name: a, adaptor: sh, body: x}\n"))
        // Several connections in the pool, all idle.
        try await withThrowingTaskGroup(of: Void.self) { group in
            for _ in 0..<6 { group.addTask { _ = try await store.createWorkOrder(workflow: "w", input: Array("{}".utf8)) } }
            try await group.waitForAll()
        }
        try await server.restart()
        for _ in 0..<6 {
            let made = try await store.createWorkOrder(workflow: "w", input: Array("{}".utf8))
            #expect(try await store.attempt(made.attemptID).state == .available)
            #expect(try store.verifyOperatorToken(secret: "lro_" + String(repeating: "A", count: 43)) == nil)
        }
        #expect(try await store.attempts(state: .available, limit: 100).count == 12, "nothing lost, nothing twice")
    }

    @Test("a server that went away: every read and write says unavailable (503 upstream), none hangs or half-stores")
    func serverGone() async throws {
        let server = try await PostgresServer()
        let url = server.url()
        let store = try await TestSupport.onThread { try SQLStore.open(url, cipher: nil) }
        _ = try await store.applyWorkflow(try WorkflowDefinition.parse("name: w\njobs:\n  - {name: a, adaptor: sh, body: x}\n"))
        let made = try await store.createWorkOrder(workflow: "w", input: Array("{}".utf8))
        server.stop()
        await #expect { _ = try await store.createWorkOrder(workflow: "w", input: Array("{}".utf8)) } throws: { error in
            if case .unavailable = error as? StoreError { return true }
            return false
        }
        await #expect { _ = try await store.attempt(made.attemptID) } throws: { error in
            if case .unavailable = error as? StoreError { return true }
            return false
        }
        // The socket server's synchronous checks too (a connection lost mid-way, then none to be had).
        for _ in 0..<3 {
            #expect { _ = try store.verifyOperatorToken(secret: "lro_" + String(repeating: "A", count: 43)) } throws: { error in
                if case .unavailable = error as? StoreError { return true }
                return false
            }
        }
    }
}

@Suite("Signals between replicas (PostgreSQL)")
struct ClusterSignalTests {
    @Test("signals are sent after commit, many to a NOTIFY: another replica hears every one, a replica none of its own")
    func signals() async throws {
        let t = try await TestStore.make(.postgres)
        defer { t.remove() }
        let other = try await t.reopen()
        let heard = Mutex<[ClusterSignal]>([])
        other.subscribe { signal in heard.withLock { $0.append(signal) } }
        let own = Mutex<[ClusterSignal]>([])
        t.store.subscribe { signal in own.withLock { $0.append(signal) } }
        try await Task.sleep(for: .milliseconds(300))  // both listening (the listener connects on its own thread)
        try await t.workflow(yaml(concurrency: nil))
        let ids = try await t.work(40, workflow: "free")
        let claimed = try await t.store.claim(demand: 40, workerName: "w").map(\.id)
        try await withThrowingTaskGroup(of: Void.self) { group in
            for id in claimed { group.addTask { try await t.store.startAttempt(id, workerName: "w", at: 1) } }
            try await group.waitForAll()
        }
        try await waitUntil("every start heard", timeout: .seconds(20)) {
            Set(heard.withLock { $0 }.compactMap { if case .attemptChanged(let id) = $0 { id } else { nil } }) == Set(ids)
        }
        #expect(heard.withLock { $0 }.contains(.workAvailable))
        #expect(own.withLock { $0 }.isEmpty, "a replica does not hear itself")
    }
}

@Suite("Database locations in logs")
struct RedactionTests {
    @Test("a PostgreSQL URL is logged without its password, wherever it is", arguments: [
        ("postgres://lightning:s3cret@db:5432/l", "postgres://lightning:***@db:5432/l"),
        ("postgresql://lightning:s3c@ret@db/l?sslmode=require", "postgresql://lightning:***@db/l?sslmode=require"),
        ("postgresql://lightning@db/l?password=s3cret&sslmode=require", "postgresql://lightning@db/l?password=***&sslmode=require"),
        ("postgresql://lightning@/l?host=/run/pg&options=a@b", "postgresql://lightning@/l?host=/run/pg&options=a@b"),
        ("host=db dbname=l user=lightning password=s3cret", "host=db dbname=l user=lightning password=***"),
        ("./data/lightning.db", "./data/lightning.db"),
    ])
    func redacted(_ pair: (String, String)) {
        #expect(SQLStore.redacted(pair.0) == pair.1)
    }
}

@Suite("The PostgreSQL store's prepared statements")
struct PreparedStatementTests {
    @Test("a table changed under prepared statements (another replica's migration): reads and writes go on")
    func tableChanged() async throws {
        let t = try await TestStore.make(.postgres)
        defer { t.remove() }
        let id = try await t.startedAttempt(worker: "w1")
        _ = try await t.store.completeAttempt(id, AttemptComplete(reason: .fail), finalState: nil, at: 2)
        // Prepared on the store's connections: SELECT a.* (a read) and SELECT * FROM attempts (a rerun, a write).
        for _ in 0..<3 {
            _ = try await t.store.attempt(id)
            _ = try await t.store.attempts(workOrderID: try await t.store.attempt(id).workOrderID)
            _ = try await t.store.rerun(attemptID: id, fromStep: nil, by: "op", at: 3)
        }
        // Another process adds a column: `*` now has one more, and PostgreSQL refuses to run the old plans.
        let other = try await t.reopen()
        _ = try await other.database.write { db in try db.execute("ALTER TABLE attempts ADD COLUMN added_later TEXT") }
        for _ in 0..<3 {
            #expect(try await t.store.attempt(id).state == .failed)
            #expect(try await t.store.attempts(workOrderID: try await t.store.attempt(id).workOrderID).count >= 4)
            _ = try await t.store.rerun(attemptID: id, fromStep: nil, by: "op", at: 4)
        }
    }
}

@Suite("The PostgreSQL store and values it cannot hold")
struct PostgresValueTests {
    @Test("a NUL character in text (which PostgreSQL cannot store) is refused as invalid, not as an outage, and nothing is half-stored")
    func nulInText() async throws {
        let t = try await TestStore.make(.postgres)
        defer { t.remove() }
        let id = try await t.startedAttempt(worker: "w1")
        try await t.store.startStep(attemptID: id, stepID: "s1", jobID: "j", inputDataclipID: nil, at: 2)
        let bad = StepComplete(stepID: "s1", jobID: "j", reason: .fail, errorType: "Oops", errorMessage: "before\u{0}after")
        await #expect { _ = try await t.store.completeStep(attemptID: id, bad, outputState: nil, at: 3) } throws: { error in
            guard case .invalid(let message) = error as? StoreError else { return false }
            return message.contains("NUL")
        }
        #expect(try await t.store.steps(attemptID: id).first?.finishedAt == nil, "nothing of the refused event was stored")
        // The same event without it goes through.
        let good = StepComplete(stepID: "s1", jobID: "j", reason: .fail, errorType: "Oops", errorMessage: "before after")
        #expect(try await t.store.completeStep(attemptID: id, good, outputState: nil, at: 3))
    }
}
