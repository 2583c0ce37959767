import Foundation
import GRDB
import GRDBSQLite

/// The embedded store: one SQLite file in WAL mode, one writer, `synchronous = FULL`, so that a committed
/// event survives a power cut and an acknowledged event is never lost.
public final class SQLiteStore: LightningStore {
    let pool: DatabasePool
    let cipher: CredentialCipher?
    /// Every event and log write goes through here (group commit).
    let writer: GroupWriter

    /// Opens (creating when missing) the database at `path` and runs pending migrations.
    public init(path: String, cipher: CredentialCipher?) throws {
        let dir = (path as NSString).deletingLastPathComponent
        if !dir.isEmpty { try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true) }
        var config = Configuration()
        config.prepareDatabase { db in
            try db.execute(sql: "PRAGMA synchronous = FULL")
            try db.execute(sql: "PRAGMA foreign_keys = ON")
        }
        config.busyMode = .timeout(10)
        pool = try DatabasePool(path: path, configuration: config)
        try Migrations.migrator.migrate(pool)
        self.cipher = cipher
        writer = GroupWriter(pool: pool)
    }

    static func newID() -> String { UUID().uuidString.lowercased() }

    /// A read run on the calling thread with GRDB's synchronous API: no hop to a reader connection's queue and
    /// back (two thread wake-ups, most of a short read's cost here). For the short reads of the worker's path:
    /// it holds the calling thread for the read itself (tens of microseconds), and waits only while every reader
    /// connection is busy.
    func readHere<T>(_ body: (Database) throws -> T) throws -> T { try pool.read(body) }

    /// A read on a reader connection's own queue, the reader given back there: the task waits without holding a
    /// thread, and no reader waits for a task to be scheduled again. (GRDB's async `read` gives its reader back
    /// only once the awaiting task runs again on the cooperative pool: with the pool's threads blocked in `readHere`
    /// waiting for a reader, none came back. Lightning stopped answering with 1,000 viewers joining at once.)
    func read<T: Sendable>(_ body: @escaping @Sendable (Database) throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { (c: CheckedContinuation<T, any Error>) in
            pool.asyncRead { db in c.resume(with: Result { try body(db.get()) }) }
        }
    }

    /// The workflow definition a snapshot froze (nil when it no longer decodes).
    static func definition(_ db: Database, snapshotID: String) throws -> WorkflowDefinition? {
        try snapshot(db, snapshotID)?.definition
    }

    /// What a snapshot holds for building plans. Snapshots are never changed once written, so each is read (and
    /// its definition decoded) once and kept; ids are random, so one cache serves every store in the process.
    static func snapshot(_ db: Database, _ snapshotID: String) throws -> Snapshot? {
        if let s = snapshots.get(snapshotID) { return s }
        guard let text = try String.fetchOne(db, cached: "SELECT definition FROM workflow_snapshots WHERE id = ?",
                                             arguments: [snapshotID]) else { return nil }
        let definition = try? JSONDecoder().decode(WorkflowDefinition.self, from: Data(text.utf8))
        let jobs = try Row.fetchAll(db, cached: """
            SELECT id, name, body, adaptor, credential_name FROM jobs WHERE snapshot_id = ? ORDER BY position
            """, arguments: [snapshotID]).map {
            Snapshot.Job(job: Plan.Job(id: $0["id"], name: $0["name"], body: $0["body"], adaptor: $0["adaptor"]),
                         credentialName: $0["credential_name"])
        }
        let triggers = try String.fetchAll(db, cached: "SELECT id FROM triggers WHERE snapshot_id = ?", arguments: [snapshotID])
        let edges = try Row.fetchAll(db, cached: "SELECT * FROM edges WHERE snapshot_id = ? ORDER BY position", arguments: [snapshotID]).map {
            Plan.Edge(id: $0["id"], sourceTriggerID: $0["source_trigger_id"], sourceJobID: $0["source_job_id"],
                      targetJobID: $0["target_job_id"], condition: $0["condition"], enabled: $0["enabled"])
        }
        let s = Snapshot(definition: definition, jobs: jobs, triggerIDs: triggers, edges: edges)
        snapshots.put(snapshotID, s)
        return s
    }

    struct Snapshot: Sendable {
        struct Job: Sendable {
            var job: Plan.Job
            var credentialName: String?
        }
        /// Nil when the stored definition no longer decodes.
        var definition: WorkflowDefinition?
        var jobs: [Job]
        var triggerIDs: [String]
        var edges: [Plan.Edge]
    }

    static let snapshots = AttemptCache<Snapshot>()

    // MARK: Workflows

    public func applyWorkflow(_ definition: WorkflowDefinition) async throws -> AppliedWorkflow {
        try definition.validate()
        let now = Timestamp.nowMicros()
        let definitionJSON = String(decoding: try JSONEncoder().encode(definition), as: UTF8.self)
        return try await pool.write { db in
            var workflowID = try String.fetchOne(db, cached: "SELECT id FROM workflows WHERE name = ?", arguments: [definition.name])
            if workflowID == nil {
                workflowID = Self.newID()
                try db.execute(cached: "INSERT INTO workflows (id, name, concurrency, inserted_at, updated_at) VALUES (?, ?, ?, ?, ?)",
                               arguments: [workflowID, definition.name, definition.options.concurrency, now, now])
            }
            let wid = workflowID!
            for trigger in definition.triggers where trigger.type == .webhook {
                let owner = try String.fetchOne(db, cached: """
                    SELECT w.name FROM triggers t JOIN workflows w ON w.current_snapshot_id = t.snapshot_id
                    WHERE t.webhook_path = ? AND w.id != ?
                    """, arguments: [trigger.path, wid])
                if let owner {
                    throw StoreError.conflict("webhook path \"\(trigger.path ?? "")\" is already used by workflow \"\(owner)\"")
                }
            }
            let version = (try Int.fetchOne(db, cached: "SELECT MAX(version) FROM workflow_snapshots WHERE workflow_id = ?",
                                            arguments: [wid]) ?? 0) + 1
            let snapshotID = Self.newID()
            try db.execute(cached: "INSERT INTO workflow_snapshots (id, workflow_id, version, definition, inserted_at) VALUES (?, ?, ?, ?, ?)",
                           arguments: [snapshotID, wid, version, definitionJSON, now])
            var ids: [String: (id: String, isTrigger: Bool)] = [:]
            for (i, job) in definition.jobs.enumerated() {
                let id = Self.newID()
                ids[job.name] = (id, false)
                try db.execute(cached: """
                    INSERT INTO jobs (id, snapshot_id, position, name, adaptor, body, credential_name) VALUES (?, ?, ?, ?, ?, ?, ?)
                    """, arguments: [id, snapshotID, i, job.name, job.adaptor, job.body, job.credential])
            }
            for trigger in definition.triggers {
                let id = Self.newID()
                ids[trigger.name] = (id, true)
                try db.execute(cached: """
                    INSERT INTO triggers (id, snapshot_id, workflow_id, name, type, webhook_path, cron_expression)
                    VALUES (?, ?, ?, ?, ?, ?, ?)
                    """, arguments: [id, snapshotID, wid, trigger.name, trigger.type.rawValue, trigger.path, trigger.cron])
            }
            for (i, edge) in definition.edges.enumerated() {
                let source = ids[edge.from]!
                try db.execute(cached: """
                    INSERT INTO edges (id, snapshot_id, position, source_trigger_id, source_job_id, target_job_id, condition, enabled)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                    """, arguments: [Self.newID(), snapshotID, i, source.isTrigger ? source.id : nil, source.isTrigger ? nil : source.id,
                                     ids[edge.to]!.id, edge.condition, edge.enabled])
            }
            try db.execute(cached: "UPDATE workflows SET current_snapshot_id = ?, concurrency = ?, updated_at = ? WHERE id = ?",
                           arguments: [snapshotID, definition.options.concurrency, now, wid])
            return AppliedWorkflow(workflowID: wid, snapshotID: snapshotID, version: version)
        }
    }

    public func workflows() async throws -> [WorkflowSummary] {
        try await read { db in
            try Row.fetchAll(db, cached: """
                SELECT w.id, w.name, w.concurrency, s.version,
                       (SELECT GROUP_CONCAT(webhook_path) FROM triggers t WHERE t.snapshot_id = w.current_snapshot_id
                        AND t.webhook_path IS NOT NULL) AS paths
                FROM workflows w JOIN workflow_snapshots s ON s.id = w.current_snapshot_id ORDER BY w.name
                """).map { row in
                WorkflowSummary(id: row["id"], name: row["name"], version: row["version"], concurrency: row["concurrency"],
                                webhookPaths: (row["paths"] as String?)?.split(separator: ",").map(String.init) ?? [])
            }
        }
    }

    // MARK: Credentials

    public func setCredential(name: String, body: [UInt8]) async throws -> String {
        guard let cipher else {
            throw StoreError.invalid("credentials need \(CredentialCipher.environmentVariable) (make one with: openssl rand -base64 32)")
        }
        guard (try? JSONSerialization.jsonObject(with: Data(body))) is [String: Any] else {
            throw StoreError.invalid("a credential body must be a JSON object")
        }
        let sealed = try cipher.seal(body, associatedData: name)
        let now = Timestamp.nowMicros()
        return try await pool.write { db in
            if let id = try String.fetchOne(db, cached: "SELECT id FROM credentials WHERE name = ?", arguments: [name]) {
                try db.execute(cached: "UPDATE credentials SET sealed_body = ?, updated_at = ? WHERE id = ?",
                               arguments: [Data(sealed), now, id])
                return id
            }
            let id = Self.newID()
            try db.execute(cached: "INSERT INTO credentials (id, name, sealed_body, inserted_at, updated_at) VALUES (?, ?, ?, ?, ?)",
                           arguments: [id, name, Data(sealed), now, now])
            return id
        }
    }

    public func credentialBody(id: String) async throws -> [UInt8] {
        guard let row = try await read({ db -> (name: String, sealed: Data)? in
            try Row.fetchOne(db, cached: "SELECT name, sealed_body FROM credentials WHERE id = ?", arguments: [id]).map { ($0["name"], $0["sealed_body"]) }
        }) else { throw StoreError.notFound("no credential \(id)") }
        guard let cipher else { throw StoreError.invalid("credentials need \(CredentialCipher.environmentVariable)") }
        return try cipher.open(Array(row.sealed), associatedData: row.name)
    }

    // MARK: Work orders and claims

    public func createWorkOrder(workflow: String, input: [UInt8]) async throws -> CreatedWork {
        try await createWorkOrder(input: input) { db in
            guard let row = try Row.fetchOne(db, cached: "SELECT id, current_snapshot_id FROM workflows WHERE name = ? OR id = ?",
                                             arguments: [workflow, workflow]) else {
                throw StoreError.notFound("no workflow named \"\(workflow)\"")
            }
            return (row["id"], row["current_snapshot_id"], nil)
        }
    }

    public func createWorkOrder(webhookPath: String, input: [UInt8]) async throws -> CreatedWork {
        try await createWorkOrder(input: input) { db in
            guard let row = try Row.fetchOne(db, cached: """
                SELECT w.id, w.current_snapshot_id, t.id AS trigger_id FROM triggers t
                JOIN workflows w ON w.current_snapshot_id = t.snapshot_id WHERE t.webhook_path = ?
                """, arguments: [webhookPath]) else { throw StoreError.notFound("no webhook at /i/\(webhookPath)") }
            return (row["id"], row["current_snapshot_id"], row["trigger_id"])
        }
    }

    func createWorkOrder(input: [UInt8], find: @escaping @Sendable (Database) throws -> (String, String, String?))
        async throws -> CreatedWork
    {
        guard (try? JSONSerialization.jsonObject(with: Data(input), options: [.fragmentsAllowed])) is [String: Any] else {
            throw StoreError.invalid("the input must be a JSON object")
        }
        let now = Timestamp.nowMicros()
        return try await writer.write { db in
            let (workflowID, snapshotID, triggerID) = try find(db)
            let definition = try Self.definition(db, snapshotID: snapshotID)
            let options = definition?.planOptions ?? Plan.Options()
            var trigger: WorkflowDefinition.Trigger?
            if let triggerID, let name = try String.fetchOne(db, cached: "SELECT name FROM triggers WHERE id = ?", arguments: [triggerID]) {
                trigger = definition?.triggers.first { $0.name == name }
            }
            let dataclipID = Self.newID(), workOrderID = Self.newID(), attemptID = Self.newID()
            try db.execute(cached: "INSERT INTO dataclips (id, type, body, inserted_at) VALUES (?, 'http_request', ?, ?)",
                           arguments: [dataclipID, Data(input), now])
            try db.execute(cached: """
                INSERT INTO work_orders (id, workflow_id, snapshot_id, trigger_id, dataclip_id, inserted_at) VALUES (?, ?, ?, ?, ?, ?)
                """, arguments: [workOrderID, workflowID, snapshotID, triggerID, dataclipID, now])
            try db.execute(cached: """
                INSERT INTO attempts (id, work_order_id, workflow_id, snapshot_id, dataclip_id, state, run_timeout_ms,
                    log_limit_bytes, inserted_at)
                VALUES (?, ?, ?, ?, ?, 'available', ?, ?, ?)
                """, arguments: [attemptID, workOrderID, workflowID, snapshotID, dataclipID, options.runTimeoutMS,
                                 Int64(options.logLimitMB) * 1_000_000, now])
            return CreatedWork(workOrderID: workOrderID, attemptID: attemptID, dataclipID: dataclipID,
                               webhookReply: trigger?.webhookReply, webhookReplyTimeoutMS: trigger?.webhookReplyTimeoutMS)
        }
    }

    /// FIFO by insertion, honouring each workflow's concurrency, in one write transaction: two workers never
    /// get the same attempt.
    public func claim(demand: Int, workerName: String) async throws -> [ClaimedAttempt] {
        guard demand > 0 else { return [] }
        // Nothing available (a worker with free slots asks again after each claim): answered from a read, not a
        // write transaction that would queue behind, and hold up, every other writer.
        guard try readHere({ db in
            try Bool.fetchOne(db, cached: "SELECT EXISTS (SELECT 1 FROM attempts WHERE state = 'available')") ?? false
        }) else { return [] }
        let now = Timestamp.nowMicros()
        return try await writer.write { db in
            // Running counts for workflows with a concurrency limit, once per claim rather than per candidate.
            var busy: [String: Int] = [:]
            for row in try Row.fetchAll(db, cached: """
                SELECT a.workflow_id, COUNT(*) AS n FROM attempts a JOIN workflows w ON w.id = a.workflow_id
                WHERE a.state IN ('claimed', 'started') AND w.concurrency IS NOT NULL GROUP BY a.workflow_id
                """) { busy[row["workflow_id"]] = row["n"] }
            var full = Set<String>()
            var claimed: [ClaimedAttempt] = []
            var afterSeq: Int64 = 0
            // Oldest first, in windows; a workflow at its limit is left out of the next window's query, so a
            // backlog of one capped workflow cannot hide the attempts of others behind it.
            while claimed.count < demand {
                let exclude = full.isEmpty ? "" : "AND a.workflow_id NOT IN (\(full.map { _ in "?" }.joined(separator: ",")))"
                var arguments: StatementArguments = [afterSeq]
                for id in full { arguments += [id] }
                arguments += [max((demand - claimed.count) * 4, 64)]
                let window = try Row.fetchAll(db, sql: """
                    SELECT a.id, a.seq, a.workflow_id, a.run_timeout_ms, w.concurrency
                    FROM attempts a JOIN workflows w ON w.id = a.workflow_id
                    WHERE a.state = 'available' AND a.seq > ? \(exclude) ORDER BY a.seq LIMIT ?
                    """, arguments: arguments)
                if window.isEmpty { break }
                for row in window where claimed.count < demand {
                    afterSeq = row["seq"]
                    let workflowID: String = row["workflow_id"]
                    if full.contains(workflowID) { continue }
                    if let limit: Int = row["concurrency"] {
                        let running = busy[workflowID] ?? 0
                        if running >= limit { full.insert(workflowID); continue }
                        busy[workflowID] = running + 1
                    }
                    try db.execute(cached: "UPDATE attempts SET state = 'claimed', claimed_at = ?, worker_name = ? WHERE id = ? AND state = 'available'",
                                   arguments: [now, workerName, row["id"]])
                    if db.changesCount == 1 { claimed.append(ClaimedAttempt(id: row["id"], runTimeoutMS: row["run_timeout_ms"])) }
                }
            }
            return claimed
        }
    }

    public func unclaim(_ ids: [String], workerName: String) async throws {
        guard !ids.isEmpty else { return }
        try await writer.write { db in
            for id in ids {
                try db.execute(cached: """
                    UPDATE attempts SET state = 'available', claimed_at = NULL, worker_name = NULL
                    WHERE id = ? AND state = 'claimed' AND worker_name = ?
                    """, arguments: [id, workerName])
            }
        }
    }

    // MARK: Attempts

    static func attempt(from row: Row) -> AttemptRecord {
        AttemptRecord(
            id: row["id"], workOrderID: row["work_order_id"], workflowID: row["workflow_id"], workflowName: row["workflow_name"],
            state: AttemptState(rawValue: row["state"]) ?? .available, reason: row["reason"], errorType: row["error_type"],
            errorMessage: row["error_message"], workerName: row["worker_name"], finalDataclipID: row["final_dataclip_id"],
            runTimeoutMS: row["run_timeout_ms"], insertedAt: row["inserted_at"], claimedAt: row["claimed_at"],
            startedAt: row["started_at"], finishedAt: row["finished_at"], attemptNumber: row["attempt_number"] ?? 1,
            retryOf: row["retry_of"], startingJobID: row["starting_job_id"])
    }

    static let attemptColumns = "a.*, w.name AS workflow_name FROM attempts a JOIN workflows w ON w.id = a.workflow_id"

    public func attempt(_ id: String) async throws -> AttemptRecord {
        guard let row = try readHere({ db in
            try Row.fetchOne(db, cached: "SELECT \(Self.attemptColumns) WHERE a.id = ?", arguments: [id])
        }) else { throw StoreError.notFound("no attempt \(id)") }
        return Self.attempt(from: row)
    }

    public func attempts(workOrderID: String) async throws -> [AttemptRecord] {
        try await read { db in
            try Row.fetchAll(db, cached: "SELECT \(Self.attemptColumns) WHERE a.work_order_id = ? ORDER BY a.seq", arguments: [workOrderID])
                .map(Self.attempt(from:))
        }
    }

    public func attempts(state: AttemptState?, limit: Int) async throws -> [AttemptRecord] {
        try await read { db in
            let rows = state == nil
                ? try Row.fetchAll(db, cached: "SELECT \(Self.attemptColumns) ORDER BY a.seq DESC LIMIT ?", arguments: [limit])
                : try Row.fetchAll(db, cached: "SELECT \(Self.attemptColumns) WHERE a.state = ? ORDER BY a.seq DESC LIMIT ?",
                                   arguments: [state!.rawValue, limit])
            return rows.map(Self.attempt(from:))
        }
    }

    public func plan(attemptID: String) async throws -> Plan {
        try readHere { db in
            guard let a = try Row.fetchOne(db, cached: "SELECT snapshot_id, dataclip_id, starting_job_id FROM attempts WHERE id = ?",
                                           arguments: [attemptID])
            else { throw StoreError.notFound("no attempt \(attemptID)") }
            let snapshotID: String = a["snapshot_id"]
            guard let snapshot = try Self.snapshot(db, snapshotID), let definition = snapshot.definition else {
                throw StoreError.invalid("the workflow snapshot \(snapshotID) of attempt \(attemptID) cannot be read")
            }
            // Credentials are looked up by name on every plan: they are set and replaced after the snapshot.
            // A credential the job names but nobody has set: the worker's fetch of it fails, so the step ends
            // with an exception that names it, instead of running without its configuration.
            let jobs = try snapshot.jobs.map { entry -> Plan.Job in
                var job = entry.job
                if let name = entry.credentialName {
                    job.credentialID = try String.fetchOne(db, cached: "SELECT id FROM credentials WHERE name = ?", arguments: [name])
                        ?? Plan.missingCredentialPrefix + name
                }
                return job
            }
            let triggers = snapshot.triggerIDs
            let edges = snapshot.edges
            let startName = definition.startingJob ?? jobs.first?.name ?? ""
            // A rerun from a step starts at that step's job (same snapshot, so the job is there).
            let start = (a["starting_job_id"] as String?) ?? jobs.first { $0.name == startName }?.id ?? ""
            return Plan(id: attemptID, dataclipID: a["dataclip_id"], startingNodeID: start,
                        triggers: triggers.map(Plan.Trigger.init(id:)), jobs: jobs, edges: edges, options: definition.planOptions)
        }
    }

    public func dataclip(_ id: String) async throws -> [UInt8] {
        guard let data = try readHere({ db in
            try Data.fetchOne(db, cached: "SELECT body FROM dataclips WHERE id = ?", arguments: [id])
        }) else { throw StoreError.notFound("no dataclip \(id)") }
        return Array(data)
    }

    public func credentialIDs(attemptID: String) async throws -> Set<String> {
        try readHere { db in
            Set(try String.fetchAll(db, cached: """
                SELECT c.id FROM attempts a JOIN jobs j ON j.snapshot_id = a.snapshot_id
                JOIN credentials c ON c.name = j.credential_name WHERE a.id = ?
                """, arguments: [attemptID]))
        }
    }

    /// The attempt's state, refusing events for attempts that are final or not this worker's.
    private static func live(_ db: Database, _ id: String, worker: String? = nil) throws -> AttemptState {
        guard let row = try Row.fetchOne(db, cached: "SELECT state, worker_name FROM attempts WHERE id = ?", arguments: [id]) else {
            throw StoreError.notFound("no attempt \(id)")
        }
        let state = AttemptState(rawValue: row["state"]) ?? .available
        if state.isFinal { throw StoreError.conflict("attempt \(id) is already \(state.rawValue); its events are refused") }
        if let worker, let owner: String = row["worker_name"], owner != worker {
            throw StoreError.conflict("attempt \(id) is claimed by another worker")
        }
        return state
    }

    @discardableResult public func startAttempt(_ id: String, workerName: String, at: Int64) async throws -> Bool {
        try await writer.write { db in
            let state = try Self.live(db, id, worker: workerName)
            guard state == .claimed || state == .started else {
                throw StoreError.conflict("attempt \(id) is \(state.rawValue), not claimed")
            }
            if state == .started { return false }  // a resend
            try db.execute(cached: "UPDATE attempts SET state = 'started', started_at = ? WHERE id = ?", arguments: [at, id])
            return true
        }
    }

    @discardableResult public func startStep(attemptID: String, stepID: String, jobID: String, inputDataclipID: String?, at: Int64) async throws -> Bool {
        try await writer.write { db in
            let state = try Self.live(db, attemptID)
            guard state == .started else { throw StoreError.conflict("attempt \(attemptID) has not started") }
            if let owner = try String.fetchOne(db, cached: "SELECT attempt_id FROM steps WHERE id = ?", arguments: [stepID]) {
                guard owner == attemptID else { throw StoreError.conflict("step \(stepID) belongs to another attempt") }
                return false  // a resend
            }
            try db.execute(cached: """
                INSERT INTO steps (id, attempt_id, job_id, input_dataclip_id, started_at) VALUES (?, ?, ?, ?, ?)
                """, arguments: [stepID, attemptID, jobID, inputDataclipID, at])
            return true
        }
    }

    @discardableResult public func completeStep(attemptID: String, _ step: StepComplete, outputState: [UInt8]?, at: Int64) async throws -> Bool {
        try await writer.write { db in
            _ = try Self.live(db, attemptID)
            guard let row = try Row.fetchOne(db, cached: "SELECT finished_at FROM steps WHERE id = ? AND attempt_id = ?",
                                             arguments: [step.stepID, attemptID])
            else { throw StoreError.notFound("no step \(step.stepID) in attempt \(attemptID)") }
            if (row["finished_at"] as Int64?) != nil { return false }  // a resend
            var outputID = step.outputDataclipID
            if let outputState {
                outputID = outputID ?? Self.newID()
                try db.execute(cached: "INSERT OR IGNORE INTO dataclips (id, type, body, inserted_at) VALUES (?, 'step_result', ?, ?)",
                               arguments: [outputID, Data(outputState), at])
            }
            try db.execute(cached: """
                UPDATE steps SET output_dataclip_id = ?, reason = ?, error_type = ?, error_message = ?, duration_ms = ?,
                    mem_job = ?, mem_system = ?, webhook_response = ?, finished_at = ? WHERE id = ?
                """, arguments: [outputState == nil ? nil : outputID, step.reason.rawValue, step.errorType, step.errorMessage,
                                 step.duration, step.mem?.job, step.mem?.system, step.webhookResponse?.text, at, step.stepID])
            return true
        }
    }

    @discardableResult public func completeAttempt(_ id: String, _ complete: AttemptComplete, finalState: [UInt8]?, at: Int64) async throws
        -> AttemptCompletion
    {
        try await writer.write { db in
            if let row = try Row.fetchOne(db, cached: "SELECT state, reason FROM attempts WHERE id = ?", arguments: [id]),
                let state = AttemptState(rawValue: row["state"]), state.isFinal, (row["reason"] as String?) == complete.reason.rawValue
            {
                // The same completion again (its reply was lost): acknowledged, nothing changes.
                return AttemptCompletion(state: state, changed: false, retryID: nil)
            }
            _ = try Self.live(db, id)
            // A single leaf's output dataclip is the final state itself: reuse it rather than store it twice.
            var finalID: String? = nil
            if let candidate = complete.finalDataclipID,
                try Bool.fetchOne(db, cached: """
                    SELECT 1 FROM steps s JOIN dataclips d ON d.id = s.output_dataclip_id WHERE s.attempt_id = ? AND s.output_dataclip_id = ?
                    """, arguments: [id, candidate]) == true
            {
                finalID = candidate
            } else if let finalState {
                finalID = Self.newID()
                try db.execute(cached: "INSERT INTO dataclips (id, type, body, inserted_at) VALUES (?, 'final_state', ?, ?)",
                               arguments: [finalID, Data(finalState), at])
            }
            let state = complete.reason.attemptState
            try db.execute(cached: """
                UPDATE attempts SET state = ?, reason = ?, error_type = ?, error_message = ?, final_dataclip_id = ?, finished_at = ?
                WHERE id = ?
                """, arguments: [state.rawValue, complete.reason.rawValue, complete.errorType, complete.errorMessage, finalID, at, id])
            try Self.addLimitNotice(db, id, at: at)
            let retry: String?
            if complete.reason == .kill && complete.errorType == Wire.requeuedErrorType {
                // Stopped by its worker's drain (or SIGTERM) to be put back: a new attempt, in this same transaction.
                retry = try Self.requeue(db, id, at: at)
            } else if complete.reason == .exception {
                retry = try Self.retryIfAllowed(db, id, reason: complete.reason, why: complete.errorMessage ?? complete.errorType ?? "", at: at)
            } else {
                retry = nil
            }
            return AttemptCompletion(state: state, changed: true, retryID: retry)
        }
    }

    public func refuseClaim(_ id: String, workerName: String, reason: String, at: Int64) async throws -> AttemptCompletion {
        try await writer.write { db in
            let state = try Self.live(db, id, worker: workerName)
            guard state == .claimed else { throw StoreError.conflict("attempt \(id) is \(state.rawValue), not claimed") }
            let message = "the worker \(workerName) refused the attempt token: \(reason)"
            try db.execute(cached: """
                UPDATE attempts SET state = 'exception', reason = 'exception', error_type = ?, error_message = ?, finished_at = ?
                WHERE id = ?
                """, arguments: [ErrorType.tokenRefused, message, at, id])
            let retry = try Self.retryIfAllowed(db, id, reason: .exception, why: message, at: at)
            return AttemptCompletion(state: .exception, changed: true, retryID: retry)
        }
    }

    /// After attempt `id` ended `lost` or `exception` (a platform fault, not the job's): a new attempt of the same
    /// work order when the workflow's `retries` allows one more, with a first log line that says why.
    static func retryIfAllowed(_ db: Database, _ id: String, reason: ExitReason, why: String, at: Int64) throws -> String? {
        guard let a = try Row.fetchOne(db, cached: "SELECT * FROM attempts WHERE id = ?", arguments: [id]) else { return nil }
        let retries = try definition(db, snapshotID: a["snapshot_id"])?.options.retries ?? 0
        // Automatic retries so far: this attempt and those before it, back along retry_of, up to the first attempt
        // or an operator's rerun (which starts a fresh count).
        var automatic = 0
        var cursor: Row? = a
        while let row = cursor, (row["retry_of"] as String?) != nil, (row["rerun_by"] as String?) == nil {
            automatic += 1
            cursor = try Row.fetchOne(db, cached: "SELECT retry_of, rerun_by FROM attempts WHERE id = ?", arguments: [row["retry_of"] as String])
        }
        guard automatic < retries else { return nil }
        // `why` may quote a worker's error message: stored like any log line, without escape sequences.
        return try insertFollowUp(db, a, at: at,
                                  note: "retry \(automatic + 1) of \(retries): attempt \(id) ended \(reason.rawValue)" + (why.isEmpty ? "" : " (\(why))"))
    }

    /// An attempt its worker stopped to put back: a new attempt of the work order from the same start, named as a retry
    /// of it (and not counted against the workflow's retries: its step did not fail).
    static func requeue(_ db: Database, _ id: String, at: Int64) throws -> String? {
        guard let a = try Row.fetchOne(db, cached: "SELECT * FROM attempts WHERE id = ?", arguments: [id]) else { return nil }
        return try insertFollowUp(db, a, at: at, note: "requeued: attempt \(id) was stopped by a drain of worker \(a["worker_name"] as String? ?? "?")")
    }

    /// Inserts the attempt that follows `a` (same work order, snapshot, input and start), with `note` as its first log line.
    private static func insertFollowUp(_ db: Database, _ a: Row, at: Int64, note text: String) throws -> String {
        let id: String = a["id"]
        let number = (try Int.fetchOne(db, cached: "SELECT MAX(attempt_number) FROM attempts WHERE work_order_id = ?",
                                       arguments: [a["work_order_id"]]) ?? 0) + 1
        let newID = Self.newID()
        try db.execute(cached: """
            INSERT INTO attempts (id, work_order_id, workflow_id, snapshot_id, dataclip_id, state, run_timeout_ms, log_limit_bytes,
                retry_of, attempt_number, starting_job_id, inserted_at)
            VALUES (?, ?, ?, ?, ?, 'available', ?, ?, ?, ?, ?, ?)
            """, arguments: [newID, a["work_order_id"], a["workflow_id"], a["snapshot_id"], a["dataclip_id"], a["run_timeout_ms"],
                             a["log_limit_bytes"], id, number, a["starting_job_id"], at])
        let note = LogText.clean(text)
        try db.execute(cached: """
            INSERT INTO log_lines (attempt_id, seq, level, source, message, timestamp) VALUES (?, 1, 'warn', ?, ?, ?)
            """, arguments: [newID, LogSource.lightning, note, at])
        return newID
    }

    /// The notice that says how many lines Lightning dropped past the attempt's log limit, once it is final.
    static func addLimitNotice(_ db: Database, _ id: String, at: Int64) throws {
        guard let row = try Row.fetchOne(db, cached: "SELECT log_dropped, log_limit_bytes FROM attempts WHERE id = ?", arguments: [id]),
            let dropped: Int64 = row["log_dropped"], dropped > 0
        else { return }
        let seq = (try Int64.fetchOne(db, cached: "SELECT MAX(seq) FROM log_lines WHERE attempt_id = ?", arguments: [id]) ?? 0) + 1
        let limit: Int64 = row["log_limit_bytes"] ?? Int64(Wire.defaultLogLimitMB) * 1_000_000
        try db.execute(cached: """
            INSERT INTO log_lines (attempt_id, seq, level, source, message, timestamp) VALUES (?, ?, 'warn', ?, ?, ?)
            """, arguments: [id, seq, LogSource.lightning,
                             "\(dropped) log lines were dropped: this attempt went over its log limit of \(limit / 1_000_000) MB", at])
    }

    public func attemptResult(_ id: String) async throws -> AttemptResult {
        try await read { db in
            guard let row = try Row.fetchOne(db, cached: "SELECT \(Self.attemptColumns) WHERE a.id = ?", arguments: [id]) else {
                throw StoreError.notFound("no attempt \(id)")
            }
            let a = Self.attempt(from: row)
            let state = try a.finalDataclipID.flatMap {
                try Data.fetchOne(db, cached: "SELECT body FROM dataclips WHERE id = ?", arguments: [$0]).map(Array.init)
            }
            let response = try String.fetchOne(db, cached: """
                SELECT webhook_response FROM steps WHERE attempt_id = ? AND webhook_response IS NOT NULL
                ORDER BY finished_at DESC, rowid DESC LIMIT 1
                """, arguments: [id])
            return AttemptResult(attempt: a, finalState: state, webhookResponse: response)
        }
    }

    public func workersHoldingAttempts() async throws -> [(name: String, disconnectedAt: Int64?)] {
        try await read { db in
            try Row.fetchAll(db, cached: """
                SELECT DISTINCT a.worker_name AS name, w.disconnected_at FROM attempts a LEFT JOIN workers w ON w.name = a.worker_name
                WHERE a.state IN ('claimed', 'started') AND a.worker_name IS NOT NULL ORDER BY a.worker_name
                """).map { (name: $0["name"], disconnectedAt: $0["disconnected_at"]) }
        }
    }

    public func cancel(_ id: String, at: Int64) async throws -> AttemptState {
        try await writer.write { db in
            let state = try Self.live(db, id)
            if state == .available {
                try db.execute(cached: """
                    UPDATE attempts SET state = 'cancelled', reason = 'cancel', error_type = 'Cancelled',
                    error_message = 'cancelled before a worker claimed it', finished_at = ? WHERE id = ?
                    """, arguments: [at, id])
                return .cancelled
            }
            return state
        }
    }

    // MARK: Logs

    public func appendLogs(attemptID: String, _ lines: [NewLogLine]) async throws -> AppendedLogs {
        guard !lines.isEmpty else { return AppendedLogs(seqs: [], stored: []) }
        return try await writer.write { db in try LogWriter.insert(db, attemptID: attemptID, lines: lines).get() }
    }

    public func logs(attemptID: String, since: Int64, limit: Int) async throws -> [LogLineRecord] {
        try await read { db in
            try Row.fetchAll(db, cached: """
                SELECT * FROM log_lines WHERE attempt_id = ? AND seq > ? ORDER BY seq LIMIT ?
                """, arguments: [attemptID, since, limit]).map {
                LogLineRecord(attemptID: $0["attempt_id"], seq: $0["seq"], stepID: $0["step_id"], level: $0["level"],
                              source: $0["source"], message: $0["message"], timestamp: $0["timestamp"])
            }
        }
    }

    public func steps(attemptID: String) async throws -> [StepRecord] {
        try await read { db in
            try Row.fetchAll(db, cached: "SELECT * FROM steps WHERE attempt_id = ? ORDER BY started_at, rowid", arguments: [attemptID]).map {
                StepRecord(id: $0["id"], attemptID: $0["attempt_id"], jobID: $0["job_id"], inputDataclipID: $0["input_dataclip_id"],
                           outputDataclipID: $0["output_dataclip_id"], reason: $0["reason"], errorType: $0["error_type"],
                           errorMessage: $0["error_message"], startedAt: $0["started_at"], finishedAt: $0["finished_at"])
            }
        }
    }

    // MARK: Workers and the janitor

    public func workerConnected(_ w: WorkerJoin, at: Int64) async throws {
        let labels = w.labels.isEmpty ? nil : (try? JSONEncoder().encode(w.labels)).map { String(decoding: $0, as: UTF8.self) }
        try await writer.write { db in
            // Fleet control given to another process of this name (a restarted worker) no longer applies.
            try db.execute(cached: """
                INSERT INTO workers (name, capacity, version, connected_at, last_seen_at, disconnected_at, host, labels, deployment_id,
                                     grp, instance_id, auth_mode, credential_expires_at)
                VALUES (?, ?, ?, ?, ?, NULL, ?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT(name) DO UPDATE SET capacity = excluded.capacity, version = excluded.version,
                    connected_at = excluded.connected_at, last_seen_at = excluded.last_seen_at, disconnected_at = NULL,
                    host = excluded.host, labels = excluded.labels, deployment_id = excluded.deployment_id, grp = excluded.grp,
                    control = CASE WHEN workers.instance_id IS excluded.instance_id THEN workers.control ELSE NULL END,
                    instance_id = excluded.instance_id, auth_mode = excluded.auth_mode,
                    credential_expires_at = excluded.credential_expires_at
                """, arguments: [w.name, w.capacity, w.version, at, at, w.host, labels, w.deploymentID, w.group, w.instanceID,
                                 w.authMode, w.credentialExpiresAt])
        }
    }

    public func workerDisconnected(name: String, at: Int64) async throws {
        try await writer.write { db in
            try db.execute(cached: "UPDATE workers SET disconnected_at = ?, last_seen_at = ? WHERE name = ?", arguments: [at, at, name])
        }
    }

    public func workers() async throws -> [WorkerRecord] {
        try await read { db in
            try Row.fetchAll(db, cached: """
                SELECT w.*, (SELECT COUNT(*) FROM attempts a WHERE a.worker_name = w.name AND a.state IN ('claimed', 'started')) AS current
                FROM workers w ORDER BY w.name
                """).map { row in
                var w = WorkerRecord(name: row["name"], capacity: row["capacity"], version: row["version"], connectedAt: row["connected_at"],
                                     lastSeenAt: row["last_seen_at"], disconnectedAt: row["disconnected_at"], currentAttempts: row["current"])
                w.host = row["host"]
                if let text: String = row["labels"] { w.labels = (try? JSONDecoder().decode([String].self, from: Data(text.utf8))) ?? [] }
                w.deploymentID = row["deployment_id"]
                w.group = row["grp"]
                w.instanceID = row["instance_id"]
                w.authMode = row["auth_mode"]
                w.credentialExpiresAt = row["credential_expires_at"]
                w.revokedAt = row["revoked_at"]
                w.control = Self.control(row["control"])
                return w
            }
        }
    }

    public func markLost(goneWorkers workerNames: [String], now: Int64, graceMicros: Int64) async throws -> [String] {
        try await writer.write { db in
            var ids = Set<String>()
            for name in workerNames {
                ids.formUnion(try String.fetchAll(db, cached: "SELECT id FROM attempts WHERE worker_name = ? AND state IN ('claimed', 'started')",
                                                  arguments: [name]))
            }
            ids.formUnion(try String.fetchAll(db, cached: """
                SELECT id FROM attempts WHERE state IN ('claimed', 'started') AND claimed_at + run_timeout_ms * 1000 + ? < ?
                """, arguments: [graceMicros, now]))
            for id in ids.sorted() {
                let state: String = try String.fetchOne(db, cached: "SELECT state FROM attempts WHERE id = ?", arguments: [id]) ?? ""
                let errorType = state == "claimed" ? ErrorType.lostAfterClaim : ErrorType.lostAfterStart
                try db.execute(cached: """
                    UPDATE attempts SET state = 'lost', reason = 'lost', error_type = ?,
                    error_message = 'the worker went away and did not come back within the grace period', finished_at = ? WHERE id = ?
                    """, arguments: [errorType, now, id])
                try db.execute(cached: """
                    UPDATE steps SET reason = 'lost', error_type = ?, finished_at = ? WHERE attempt_id = ? AND finished_at IS NULL
                    """, arguments: [errorType, now, id])
                try Self.addLimitNotice(db, id, at: now)
                _ = try Self.retryIfAllowed(db, id, reason: .lost, why: errorType, at: now)
            }
            return ids.sorted()
        }
    }
}

/// Group commit for log lines: callers arriving while a write is in progress are written together in the
/// next transaction, so heavy logging costs one fsync per batch of batches, not one per line.
/// The log path's insert (through the group writer, like every other write).
enum LogWriter {
    /// Inserts one request's lines after the attempt's last seq. A refused request (unknown or final attempt)
    /// is a failed result, so it cannot fail the others in the same transaction. Lines past the attempt's log
    /// limit are dropped (counted; the first one dropped leaves a notice), whatever the worker does.
    static func insert(_ db: Database, attemptID: String, lines: [NewLogLine]) throws -> Result<AppendedLogs, any Error> {
        guard let attempt = try Row.fetchOne(db, cached: """
            SELECT state, log_bytes, log_limit_bytes, log_dropped FROM attempts WHERE id = ?
            """, arguments: [attemptID]) else {
            return .failure(StoreError.notFound("no attempt \(attemptID)"))
        }
        let state: String = attempt["state"]
        if AttemptState(rawValue: state)?.isFinal == true {
            return .failure(StoreError.conflict("attempt \(attemptID) is \(state); its log lines are refused"))
        }
        var logBytes: Int64 = attempt["log_bytes"] ?? 0
        var dropped: Int64 = attempt["log_dropped"] ?? 0
        let limit: Int64 = attempt["log_limit_bytes"] ?? Int64(Wire.defaultLogLimitMB) * 1_000_000
        // The attempt's last line gives both the next seq and the worker's high-water mark; lines are stored in
        // the worker's order, so every worker_seq at or below the mark is already stored (a resent batch).
        let last = try Row.fetchOne(db, cached: """
            SELECT seq, worker_seq FROM log_lines WHERE attempt_id = ? ORDER BY seq DESC LIMIT 1
            """, arguments: [attemptID])
        var seq: Int64 = last?["seq"] ?? 0
        var highWater: Int64 = last?["worker_seq"] ?? 0
        // Seqs of lines resent (after a lost reply), read in one pass backwards over the attempt's last lines
        // instead of one scan per line.
        var seen: [Int64: Int64] = [:]
        if let lowest = lines.lazy.compactMap(\.workerSeq).filter({ $0 <= highWater }).min() {
            let tail = try Row.fetchCursor(db, sql: """
                SELECT seq, worker_seq FROM log_lines WHERE attempt_id = ? ORDER BY seq DESC
                """, arguments: [attemptID])
            while let row = try tail.next() {
                guard let w: Int64 = row["worker_seq"] else { continue }
                if w < lowest { break }
                seen[w] = row["seq"]
            }
        }
        var seqs: [Int64?] = []
        seqs.reserveCapacity(lines.count)
        var stored: [LogLineRecord] = []
        stored.reserveCapacity(lines.count)
        // Prepared once per connection and reused: parsing the SQL per row was most of the cost of a large batch.
        let insert = try db.cachedStatement(sql: """
            INSERT INTO log_lines (attempt_id, seq, step_id, level, source, message, timestamp, worker_seq)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?)
            """)
        func store(_ line: NewLogLine) throws {
            seq += 1
            try Self.bindAndStep(insert, db, attemptID, seq, line)
            stored.append(LogLineRecord(attemptID: attemptID, seq: seq, stepID: line.stepID, level: line.level, source: line.source,
                                        message: line.message, timestamp: line.timestamp))
        }
        let startBytes = logBytes, startDropped = dropped
        for line in lines {
            if let w = line.workerSeq, w <= highWater {
                // Already stored: answer with the seq it got the first time.
                seqs.append(seen[w])
                continue
            }
            if let w = line.workerSeq { highWater = w }
            let size = Int64(line.message.utf8.count)
            if dropped > 0 || logBytes + size > limit {
                if dropped == 0 {
                    try store(NewLogLine(stepID: line.stepID, level: "warn", source: LogSource.lightning,
                                         message: "this attempt reached its log limit of \(limit / 1_000_000) MB: further lines are dropped",
                                         timestamp: line.timestamp))
                }
                dropped += 1
                seqs.append(nil)
                continue
            }
            logBytes += size
            try store(line)
            seqs.append(seq)
        }
        if logBytes != startBytes || dropped != startDropped {
            try db.cachedStatement(sql: "UPDATE attempts SET log_bytes = ?, log_dropped = ? WHERE id = ?")
                .execute(arguments: [logBytes, dropped, attemptID])
        }
        return .success(AppendedLogs(seqs: seqs, stored: stored))
    }

    /// One row through SQLite's C API: GRDB's argument conversion cost more than the insert itself.
    private static func bindAndStep(_ statement: Statement, _ db: Database, _ attemptID: String, _ seq: Int64,
                                    _ line: NewLogLine) throws {
        let s = statement.sqliteStatement
        let transient = unsafeBitCast(-1, to: sqlite3_destructor_type.self)
        sqlite3_reset(s)
        func text(_ i: Int32, _ v: String?) {
            if let v { sqlite3_bind_text(s, i, v, -1, transient) } else { sqlite3_bind_null(s, i) }
        }
        text(1, attemptID)
        sqlite3_bind_int64(s, 2, seq)
        text(3, line.stepID)
        text(4, line.level)
        text(5, line.source)
        text(6, line.message)
        sqlite3_bind_int64(s, 7, line.timestamp)
        if let w = line.workerSeq { sqlite3_bind_int64(s, 8, w) } else { sqlite3_bind_null(s, 8) }
        let rc = sqlite3_step(s)
        sqlite3_reset(s)
        guard rc == SQLITE_DONE else {
            throw DatabaseError(resultCode: ResultCode(rawValue: rc),
                                message: String(cString: sqlite3_errmsg(db.sqliteConnection)), sql: statement.sql)
        }
    }
}

// Statements prepared once per connection and reused: parsing the SQL of every query anew was a large part of
// what an event cost (issue 11's profile). Only for SQL whose text does not vary with its arguments.
extension Database {
    func execute(cached sql: String, arguments: StatementArguments = []) throws {
        try cachedStatement(sql: sql).execute(arguments: arguments)
    }
}

extension Row {
    static func fetchOne(_ db: Database, cached sql: String, arguments: StatementArguments = []) throws -> Row? {
        try fetchOne(db.cachedStatement(sql: sql), arguments: arguments)
    }
    static func fetchAll(_ db: Database, cached sql: String, arguments: StatementArguments = []) throws -> [Row] {
        try fetchAll(db.cachedStatement(sql: sql), arguments: arguments)
    }
}

extension DatabaseValueConvertible where Self: StatementColumnConvertible {
    static func fetchOne(_ db: Database, cached sql: String, arguments: StatementArguments = []) throws -> Self? {
        try fetchOne(db.cachedStatement(sql: sql), arguments: arguments)
    }
    static func fetchAll(_ db: Database, cached sql: String, arguments: StatementArguments = []) throws -> [Self] {
        try fetchAll(db.cachedStatement(sql: sql), arguments: arguments)
    }
}
