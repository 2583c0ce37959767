import Foundation
import LightningProtocol
import Synchronization

/// The store: the rules of queue, attempts, logs, workflows, credentials, tokens, workers and cron, written once
/// and run on either engine under it (`StoreDatabase`): SQLite, the embedded default, or PostgreSQL for several
/// replicas. Every write is a transaction of its own, acknowledged only once committed.
public final class SQLStore: LightningStore {
    let database: any StoreDatabase
    let cipher: CredentialCipher?
    /// Work orders being written: a claim's read-only shortcut would not see them yet, though the claim itself, queued
    /// behind them in SQLite's one writer, would.
    private let uncommittedWork = Atomic<Int>(0)

    public init(database: any StoreDatabase, cipher: CredentialCipher?) {
        self.database = database
        self.cipher = cipher
    }

    /// The embedded store: opens (creating when missing) the SQLite file at `path` and runs pending migrations.
    public convenience init(path: String, cipher: CredentialCipher?) throws {
        self.init(database: try SQLiteDatabase(path: path), cipher: cipher)
    }

    /// `--database`: a `postgres://` or `postgresql://` URL (or libpq `key=value` pairs with `dbname=`) opens
    /// PostgreSQL; anything else is the path of a SQLite file.
    public static func open(_ database: String, cipher: CredentialCipher?) throws -> SQLStore {
        if isPostgres(database) { return SQLStore(database: try PostgresDatabase(url: database), cipher: cipher) }
        return try SQLStore(path: database, cipher: cipher)
    }

    public static func isPostgres(_ database: String) -> Bool {
        database.hasPrefix("postgres://") || database.hasPrefix("postgresql://") || database.contains("dbname=")
    }

    /// `database` as it may be logged: a PostgreSQL URL's password, or a `password=` pair, replaced by `***`.
    public static func redacted(_ database: String) -> String {
        guard isPostgres(database) else { return database }
        var out = database
        // postgresql://user:PASSWORD@host/… : the user information ends at the last @ before the path or query.
        if let scheme = out.range(of: "://") {
            let rest = out[scheme.upperBound...]
            let authority = rest.prefix { $0 != "/" && $0 != "?" }
            if let at = authority.lastIndex(of: "@"), let colon = authority[..<at].firstIndex(of: ":") {
                out.replaceSubrange(authority.index(after: colon)..<at, with: "***")
            }
        }
        return out.replacing(/password=[^ &]*/, with: "password=***")
    }

    public func publish(_ signal: ClusterSignal) async throws { try await database.publish(signal) }
    public func subscribe(_ handler: @escaping @Sendable (ClusterSignal) -> Void) { database.subscribe(handler) }

    static func newID() -> String { RandomID.uuidString() }

    func readHere<T>(_ body: (any SQLSession) throws -> T) throws -> T { try database.readHere(body) }

    func read<T: Sendable>(_ body: @escaping @Sendable (any SQLSession) throws -> T) async throws -> T {
        try await database.read(body)
    }

    /// The workflow definition a snapshot froze (nil when it no longer decodes).
    static func definition(_ db: any SQLSession, snapshotID: String) throws -> WorkflowDefinition? {
        try snapshot(db, snapshotID)?.definition
    }

    /// What a snapshot holds for building plans. Snapshots are never changed once written, so each is read (and
    /// its definition decoded) once and kept; ids are random, so one cache serves every store in the process.
    static func snapshot(_ db: any SQLSession, _ snapshotID: String) throws -> Snapshot? {
        if let s = snapshots.get(snapshotID) { return s }
        guard let text = try db.string("SELECT definition FROM workflow_snapshots WHERE id = ?",
                                             [snapshotID]) else { return nil }
        let definition = try? JSONDecoder().decode(WorkflowDefinition.self, from: Data(text.utf8))
        let jobs = try db.fetchAll("""
            SELECT id, name, body, adaptor, credential_name FROM jobs WHERE snapshot_id = ? ORDER BY position
            """, [snapshotID]).map {
            Snapshot.Job(job: Plan.Job(id: $0["id"], name: $0["name"], body: $0["body"], adaptor: $0["adaptor"]),
                         credentialName: $0["credential_name"])
        }
        let triggers = try db.strings("SELECT id FROM triggers WHERE snapshot_id = ?", [snapshotID])
        let edges = try db.fetchAll("SELECT * FROM edges WHERE snapshot_id = ? ORDER BY position", [snapshotID]).map {
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
        return try await database.write { db in
            var workflowID = try db.string("SELECT id FROM workflows WHERE name = ?", [definition.name])
            if workflowID == nil {
                workflowID = Self.newID()
                try db.execute("INSERT INTO workflows (id, name, concurrency, inserted_at, updated_at) VALUES (?, ?, ?, ?, ?)",
                               [workflowID, definition.name, definition.options.concurrency, now, now])
            }
            let wid = workflowID!
            for trigger in definition.triggers where trigger.type == .webhook {
                let owner = try db.string("""
                    SELECT w.name FROM triggers t JOIN workflows w ON w.current_snapshot_id = t.snapshot_id
                    WHERE t.webhook_path = ? AND w.id != ?
                    """, [trigger.path, wid])
                if let owner {
                    throw StoreError.conflict("webhook path \"\(trigger.path ?? "")\" is already used by workflow \"\(owner)\"")
                }
            }
            let version = (try db.int("SELECT MAX(version) FROM workflow_snapshots WHERE workflow_id = ?",
                                            [wid]) ?? 0) + 1
            let snapshotID = Self.newID()
            try db.execute("INSERT INTO workflow_snapshots (id, workflow_id, version, definition, inserted_at) VALUES (?, ?, ?, ?, ?)",
                           [snapshotID, wid, version, definitionJSON, now])
            var ids: [String: (id: String, isTrigger: Bool)] = [:]
            for (i, job) in definition.jobs.enumerated() {
                let id = Self.newID()
                ids[job.name] = (id, false)
                try db.execute("""
                    INSERT INTO jobs (id, snapshot_id, position, name, adaptor, body, credential_name) VALUES (?, ?, ?, ?, ?, ?, ?)
                    """, [id, snapshotID, i, job.name, job.adaptor, job.body, job.credential])
            }
            for trigger in definition.triggers {
                let id = Self.newID()
                ids[trigger.name] = (id, true)
                try db.execute("""
                    INSERT INTO triggers (id, snapshot_id, workflow_id, name, type, webhook_path, cron_expression)
                    VALUES (?, ?, ?, ?, ?, ?, ?)
                    """, [id, snapshotID, wid, trigger.name, trigger.type.rawValue, trigger.path, trigger.cron])
            }
            for (i, edge) in definition.edges.enumerated() {
                let source = ids[edge.from]!
                try db.execute("""
                    INSERT INTO edges (id, snapshot_id, position, source_trigger_id, source_job_id, target_job_id, condition, enabled)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                    """, [Self.newID(), snapshotID, i, source.isTrigger ? source.id : nil, source.isTrigger ? nil : source.id,
                                     ids[edge.to]!.id, edge.condition, edge.enabled])
            }
            try db.execute("UPDATE workflows SET current_snapshot_id = ?, concurrency = ?, updated_at = ? WHERE id = ?",
                           [snapshotID, definition.options.concurrency, now, wid])
            return AppliedWorkflow(workflowID: wid, snapshotID: snapshotID, version: version)
        }
    }

    public func workflows() async throws -> [WorkflowSummary] {
        try await read { db in
            try db.fetchAll("""
                SELECT w.id, w.name, w.concurrency, s.version,
                       (SELECT \(db.dialect.commaJoined("webhook_path")) FROM triggers t WHERE t.snapshot_id = w.current_snapshot_id
                        AND t.webhook_path IS NOT NULL) AS paths
                FROM workflows w JOIN workflow_snapshots s ON s.id = w.current_snapshot_id ORDER BY \(db.dialect.byteOrder("w.name"))
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
        return try await database.write { db in
            if let id = try db.string("SELECT id FROM credentials WHERE name = ?", [name]) {
                try db.execute("UPDATE credentials SET sealed_body = ?, updated_at = ? WHERE id = ?",
                               [Data(sealed), now, id])
                return id
            }
            let id = Self.newID()
            try db.execute("INSERT INTO credentials (id, name, sealed_body, inserted_at, updated_at) VALUES (?, ?, ?, ?, ?)",
                           [id, name, Data(sealed), now, now])
            return id
        }
    }

    public func credentialBody(id: String) async throws -> [UInt8] {
        guard let row = try await read({ db -> (name: String, sealed: [UInt8])? in
            try db.fetchOne("SELECT name, sealed_body FROM credentials WHERE id = ?", [id]).map { ($0["name"], $0["sealed_body"]) }
        }) else { throw StoreError.notFound("no credential \(id)") }
        guard let cipher else { throw StoreError.invalid("credentials need \(CredentialCipher.environmentVariable)") }
        return try cipher.open(Array(row.sealed), associatedData: row.name)
    }

    // MARK: Work orders and claims

    public func createWorkOrder(workflow: String, input: [UInt8],
                                ordered: (@Sendable (CreatedWork) -> Void)?) async throws -> CreatedWork {
        try await createWorkOrder(input: input, ordered: ordered) { db in
            guard let row = try db.fetchOne("SELECT id, current_snapshot_id FROM workflows WHERE name = ? OR id = ?",
                                             [workflow, workflow]) else {
                throw StoreError.notFound("no workflow named \"\(workflow)\"")
            }
            return (row["id"], row["current_snapshot_id"], nil)
        }
    }

    public func createWorkOrder(webhookPath: String, input: [UInt8],
                                ordered: (@Sendable (CreatedWork) -> Void)?) async throws -> CreatedWork {
        try await createWorkOrder(input: input, ordered: ordered) { db in
            guard let row = try db.fetchOne("""
                SELECT w.id, w.current_snapshot_id, t.id AS trigger_id FROM triggers t
                JOIN workflows w ON w.current_snapshot_id = t.snapshot_id WHERE t.webhook_path = ?
                """, [webhookPath]) else { throw StoreError.notFound("no webhook at /i/\(webhookPath)") }
            return (row["id"], row["current_snapshot_id"], row["trigger_id"])
        }
    }

    /// `ordered` (see `StoreDatabase.write`) is called once a claim started from then on would find the new attempt:
    /// on SQLite before the commit's fsync, so the workers' nudge and claim overlap it (the claim queues behind this
    /// write in the one writer, and `uncommittedWork` keeps its read-only shortcut from answering "nothing").
    func createWorkOrder(input: [UInt8], ordered: (@Sendable (CreatedWork) -> Void)? = nil,
                         find: @escaping @Sendable (any SQLSession) throws -> (String, String, String?))
        async throws -> CreatedWork
    {
        guard (try? JSONSerialization.jsonObject(with: Data(input), options: [.fragmentsAllowed])) is [String: Any] else {
            throw StoreError.invalid("the input must be a JSON object")
        }
        let now = Timestamp.nowMicros()
        uncommittedWork.add(1, ordering: .sequentiallyConsistent)
        defer { uncommittedWork.subtract(1, ordering: .sequentiallyConsistent) }
        return try await database.write(isolation: .lockedRows, { db in
            let (workflowID, snapshotID, triggerID) = try find(db)
            let definition = try Self.definition(db, snapshotID: snapshotID)
            let options = definition?.planOptions ?? Plan.Options()
            var trigger: WorkflowDefinition.Trigger?
            if let triggerID, let name = try db.string("SELECT name FROM triggers WHERE id = ?", [triggerID]) {
                trigger = definition?.triggers.first { $0.name == name }
            }
            let dataclipID = Self.newID(), workOrderID = Self.newID(), attemptID = Self.newID()
            try db.execute("INSERT INTO dataclips (id, type, body, inserted_at) VALUES (?, 'http_request', ?, ?)",
                           [dataclipID, Data(input), now])
            try db.execute("""
                INSERT INTO work_orders (id, workflow_id, snapshot_id, trigger_id, dataclip_id, inserted_at) VALUES (?, ?, ?, ?, ?, ?)
                """, [workOrderID, workflowID, snapshotID, triggerID, dataclipID, now])
            try db.execute("""
                INSERT INTO attempts (id, work_order_id, workflow_id, snapshot_id, dataclip_id, state, run_timeout_ms,
                    log_limit_bytes, inserted_at)
                VALUES (?, ?, ?, ?, ?, 'available', ?, ?, ?)
                """, [attemptID, workOrderID, workflowID, snapshotID, dataclipID, options.runTimeoutMS,
                                 Int64(options.logLimitMB) * 1_000_000, now])
            try db.signal(.workAvailable)
            return CreatedWork(workOrderID: workOrderID, attemptID: attemptID, dataclipID: dataclipID,
                               webhookReply: trigger?.webhookReply, webhookReplyTimeoutMS: trigger?.webhookReplyTimeoutMS,
                               runTimeoutMS: options.runTimeoutMS)
        }, ordered: ordered)
    }

    /// Whether a claim may find something: work being committed (`uncommittedWork`), or an available attempt. Read
    /// without a write transaction, which would queue behind, and hold up, every other writer.
    func mayHaveClaimableWork() throws -> Bool {
        if uncommittedWork.load(ordering: .sequentiallyConsistent) > 0 { return true }
        return try readHere { db in try db.bool("SELECT EXISTS (SELECT 1 FROM attempts WHERE state = 'available')") ?? false }
    }

    /// FIFO by insertion, honouring each workflow's concurrency, in one write transaction: two workers never
    /// get the same attempt.
    public func claim(demand: Int, workerName: String) async throws -> [ClaimedAttempt] {
        guard demand > 0 else { return [] }
        // Nothing available (a worker with free slots asks again after each claim): answered from a read.
        guard try mayHaveClaimableWork() else { return [] }
        let now = Timestamp.nowMicros()
        return try await database.write(isolation: .lockedRows) { db in
            var busy: [String: Int] = [:]
            var full = Set<String>()
            var claimed: [ClaimedAttempt] = []
            var afterSeq: Int64 = 0
            // PostgreSQL: rows another claimer holds are passed over, not waited for (several replicas claim at once).
            let lock = db.dialect == .postgres ? "FOR UPDATE OF a SKIP LOCKED" : ""
            // Oldest first, in windows; a workflow at its limit is left out of the next window's query, so a
            // backlog of one capped workflow cannot hide the attempts of others behind it.
            while claimed.count < demand {
                let exclude = full.isEmpty ? "" : "AND a.workflow_id NOT IN (\(full.map { _ in "?" }.joined(separator: ",")))"
                var arguments: [any SQLBindable] = [afterSeq]
                for id in full { arguments += [id] }
                // SQLite reads a wide window (rows of capped workflows are passed over in memory); PostgreSQL locks every
                // row it reads until the claim commits, so it reads only as many as it still needs, and other
                // claimers find the rest.
                arguments += [db.dialect == .postgres ? demand - claimed.count : max((demand - claimed.count) * 4, 64)]
                let window = try db.fetchAll("""
                    SELECT a.id, a.seq, a.workflow_id, a.run_timeout_ms, w.concurrency
                    FROM attempts a JOIN workflows w ON w.id = a.workflow_id
                    WHERE a.state = 'available' AND a.seq > ? \(exclude) ORDER BY a.seq LIMIT ? \(lock)
                    """, arguments)
                if window.isEmpty { break }
                for row in window where claimed.count < demand {
                    afterSeq = row["seq"]
                    let workflowID: String = row["workflow_id"]
                    if full.contains(workflowID) { continue }
                    if let limit: Int = row["concurrency"] {
                        let running = try busy[workflowID] ?? Self.running(db, workflowID)
                        if running >= limit { full.insert(workflowID); continue }
                        busy[workflowID] = running + 1
                    }
                    let id: String = row["id"]
                    let taken = try db.execute("UPDATE attempts SET state = 'claimed', claimed_at = ?, worker_name = ? WHERE id = ? AND state = 'available'",
                                               [now, workerName, id])
                    if taken == 1 { claimed.append(ClaimedAttempt(id: row["id"], runTimeoutMS: row["run_timeout_ms"])) }
                }
            }
            return claimed
        }
    }

    /// The claimed and started attempts of a workflow with a concurrency limit, counted once per claim. On
    /// PostgreSQL the workflow's row is locked first, until the claim commits: claimers of one capped workflow (on
    /// any replica) take turns, and each counts what the one before it claimed.
    private static func running(_ db: any SQLSession, _ workflowID: String) throws -> Int {
        try db.execute("SELECT id FROM workflows WHERE id = ?\(db.dialect.forNoKeyUpdate)", [workflowID])
        return try db.int("SELECT COUNT(*) FROM attempts WHERE state IN ('claimed', 'started') AND workflow_id = ?", [workflowID]) ?? 0
    }

    public func unclaim(_ ids: [String], workerName: String) async throws {
        guard !ids.isEmpty else { return }
        try await database.write(isolation: .lockedRows) { db in
            for id in ids { try Self.unclaim(db, id, workerName: workerName) }
            try db.signal(.workAvailable)
        }
    }

    public func releaseClaims(workerName: String, keeping held: Set<String>, claimedBefore: Int64) async throws -> [String] {
        try await database.write(isolation: .lockedRows) { db in
            let stale: [String] = try db.strings("""
                SELECT id FROM attempts WHERE worker_name = ? AND state = 'claimed' AND claimed_at < ?\(db.dialect.forUpdate)
                """, [workerName, claimedBefore]).filter { !held.contains($0) }
            for id in stale { try Self.unclaim(db, id, workerName: workerName) }
            if !stale.isEmpty { try db.signal(.workAvailable) }
            return stale
        }
    }

    /// Puts a claim back in the queue when the lifecycle allows (still claimed, by this worker).
    private static func unclaim(_ db: any SQLSession, _ id: String, workerName: String) throws {
        guard let facts = try Self.facts(db, id), case .apply = AttemptLifecycle(attemptID: id).decide(facts, .unclaim(worker: workerName)) else {
            return
        }
        try db.execute("UPDATE attempts SET state = 'available', claimed_at = NULL, worker_name = NULL WHERE id = ?", [id])
    }

    // MARK: Attempts

    static func attempt(from row: SQLRow) -> AttemptRecord {
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
            try db.fetchOne("SELECT \(Self.attemptColumns) WHERE a.id = ?", [id])
        }) else { throw StoreError.notFound("no attempt \(id)") }
        return Self.attempt(from: row)
    }

    public func attempts(workOrderID: String) async throws -> [AttemptRecord] {
        try await read { db in
            try db.fetchAll("SELECT \(Self.attemptColumns) WHERE a.work_order_id = ? ORDER BY a.seq", [workOrderID])
                .map(Self.attempt(from:))
        }
    }

    public func attempts(state: AttemptState?, limit: Int) async throws -> [AttemptRecord] {
        try await read { db in
            let rows = state == nil
                ? try db.fetchAll("SELECT \(Self.attemptColumns) ORDER BY a.seq DESC LIMIT ?", [limit])
                : try db.fetchAll("SELECT \(Self.attemptColumns) WHERE a.state = ? ORDER BY a.seq DESC LIMIT ?",
                                   [state!.rawValue, limit])
            return rows.map(Self.attempt(from:))
        }
    }

    public func plan(attemptID: String) async throws -> Plan {
        try readHere { db in
            guard let a = try db.fetchOne("SELECT snapshot_id, dataclip_id, starting_job_id FROM attempts WHERE id = ?",
                                           [attemptID])
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
                    job.credentialID = try db.string("SELECT id FROM credentials WHERE name = ?", [name])
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
            try db.bytes("SELECT body FROM dataclips WHERE id = ?", [id])
        }) else { throw StoreError.notFound("no dataclip \(id)") }
        return Array(data)
    }

    public func dataclip(_ id: String, atMost maxBytes: Int) async throws -> [UInt8]? {
        // length() of a BLOB (SQLite) or BYTEA (PostgreSQL) is its size in bytes.
        try readHere { db in try db.bytes("SELECT body FROM dataclips WHERE id = ? AND length(body) <= ?", [id, maxBytes]) }
    }

    public func credentialIDs(attemptID: String) async throws -> Set<String> {
        try readHere { db in
            Set(try db.strings("""
                SELECT c.id FROM attempts a JOIN jobs j ON j.snapshot_id = a.snapshot_id
                JOIN credentials c ON c.name = j.credential_name WHERE a.id = ?
                """, [attemptID]))
        }
    }

    /// An attempt's facts for its lifecycle, its row locked until the transaction ends (nil: no such attempt).
    private static func facts(_ db: any SQLSession, _ id: String) throws -> AttemptLifecycle.Facts? {
        guard let row = try db.fetchOne("SELECT state, worker_name, reason FROM attempts WHERE id = ?\(db.dialect.forUpdate)", [id]) else {
            return nil
        }
        return AttemptLifecycle.Facts(state: AttemptState(rawValue: row["state"]) ?? .available, workerName: row["worker_name"],
                                      reason: (row["reason"] as String?).flatMap(ExitReason.init(rawValue:)))
    }

    /// What the lifecycle decides for `event` on attempt `id` (its row locked); a refusal is thrown.
    private static func decide(_ db: any SQLSession, _ id: String, _ event: AttemptLifecycle.Event,
                               facts: AttemptLifecycle.Facts?? = nil) throws -> AttemptLifecycle.Decision {
        let decision = AttemptLifecycle(attemptID: id).decide(try facts ?? Self.facts(db, id), event)
        if case .refuse(let error) = decision { throw error }
        return decision
    }

    /// Carries out an ending the lifecycle decided: the final state and why, the log-limit notice, viewers told, and
    /// the follow-up attempt (its id). `why` is what a retry's first log line quotes.
    private static func end(_ db: any SQLSession, _ id: String, _ t: AttemptLifecycle.Transition, reason: ExitReason,
                            errorType: String?, errorMessage: String?, finalDataclipID: String? = nil, why: String, at: Int64) throws -> String? {
        guard let state = t.to else { return nil }
        try db.execute("""
            UPDATE attempts SET state = ?, reason = ?, error_type = ?, error_message = ?, final_dataclip_id = ?, finished_at = ?
            WHERE id = ?
            """, [state.rawValue, reason.rawValue, t.errorType ?? errorType, errorMessage, finalDataclipID, at, id])
        if t.addsLimitNotice { try Self.addLimitNotice(db, id, at: at) }
        if t.notifies { try db.signal(.attemptChanged(attemptID: id)) }
        switch t.followUp {
        case .requeue?: return try Self.requeue(db, id, at: at)
        case .retryIfAllowed(let r)?: return try Self.retryIfAllowed(db, id, reason: r, why: why, at: at)
        case nil: return nil
        }
    }

    @discardableResult public func startAttempt(_ id: String, workerName: String, at: Int64) async throws -> Bool {
        try await database.write(isolation: .lockedRows) { db in
            guard case .apply = try Self.decide(db, id, .start(worker: workerName)) else { return false }  // a resend
            try db.execute("UPDATE attempts SET state = 'started', started_at = ? WHERE id = ?", [at, id])
            try db.signal(.attemptChanged(attemptID: id))
            return true
        }
    }

    @discardableResult public func startStep(attemptID: String, stepID: String, jobID: String, inputDataclipID: String?, at: Int64) async throws -> Bool {
        try await database.write(isolation: .lockedRows) { db in
            let facts = try Self.facts(db, attemptID)
            let owner = facts?.state == .started ? try db.string("SELECT attempt_id FROM steps WHERE id = ?", [stepID]) : nil
            guard case .apply = try Self.decide(db, attemptID, .stepStart(stepID: stepID, stepOwner: owner), facts: facts) else {
                return false  // a resend
            }
            try db.execute("""
                INSERT INTO steps (id, attempt_id, job_id, input_dataclip_id, started_at) VALUES (?, ?, ?, ?, ?)
                """, [stepID, attemptID, jobID, inputDataclipID, at])
            try db.signal(.attemptChanged(attemptID: attemptID))
            return true
        }
    }

    @discardableResult public func completeStep(attemptID: String, _ step: StepComplete, outputState: [UInt8]?, at: Int64) async throws -> Bool {
        try await database.write(isolation: .lockedRows) { db in
            let facts = try Self.facts(db, attemptID)
            let finished = try db.fetchOne("SELECT finished_at FROM steps WHERE id = ? AND attempt_id = ?", [step.stepID, attemptID])
                .map { ($0["finished_at"] as Int64?) != nil }
            guard case .apply = try Self.decide(db, attemptID, .stepComplete(stepID: step.stepID, stepFinished: finished), facts: facts) else {
                return false  // a resend
            }
            var outputID = step.outputDataclipID
            if let outputState {
                outputID = outputID ?? Self.newID()
                try db.execute("INSERT INTO dataclips (id, type, body, inserted_at) VALUES (?, 'step_result', ?, ?) ON CONFLICT DO NOTHING",
                               [outputID, Data(outputState), at])
            }
            try db.execute("""
                UPDATE steps SET output_dataclip_id = ?, reason = ?, error_type = ?, error_message = ?, duration_ms = ?,
                    mem_job = ?, mem_system = ?, webhook_response = ?, finished_at = ? WHERE id = ?
                """, [outputState == nil ? nil : outputID, step.reason.rawValue, step.errorType, step.errorMessage,
                                 step.duration, step.mem?.job, step.mem?.system, step.webhookResponse?.text, at, step.stepID])
            try db.signal(.attemptChanged(attemptID: attemptID))
            return true
        }
    }

    @discardableResult public func completeAttempt(_ id: String, _ complete: AttemptComplete, finalState: [UInt8]?, at: Int64) async throws
        -> AttemptCompletion
    {
        try await database.write(isolation: .lockedRows) { db in
            let facts = try Self.facts(db, id)
            guard case .apply(let transition) = try Self.decide(db, id, .complete(reason: complete.reason, errorType: complete.errorType),
                                                                facts: facts)
            else {
                // The same completion again (its reply was lost): acknowledged, nothing changes.
                return AttemptCompletion(state: facts?.state ?? complete.reason.attemptState, changed: false, retryID: nil)
            }
            // A single leaf's output dataclip is the final state itself: reuse it rather than store it twice.
            var finalID: String? = nil
            if let candidate = complete.finalDataclipID,
                try db.bool("""
                    SELECT 1 FROM steps s JOIN dataclips d ON d.id = s.output_dataclip_id WHERE s.attempt_id = ? AND s.output_dataclip_id = ?
                    """, [id, candidate]) == true
            {
                finalID = candidate
            } else if let finalState {
                finalID = Self.newID()
                try db.execute("INSERT INTO dataclips (id, type, body, inserted_at) VALUES (?, 'final_state', ?, ?)",
                               [finalID, Data(finalState), at])
            }
            // A requeue (its worker's drain stopped it to put it back) or a retry is a new attempt, in this same transaction.
            let next = try Self.end(db, id, transition, reason: complete.reason, errorType: complete.errorType, errorMessage: complete.errorMessage,
                                    finalDataclipID: finalID, why: complete.errorMessage ?? complete.errorType ?? "", at: at)
            return AttemptCompletion(state: complete.reason.attemptState, changed: true, retryID: next)
        }
    }

    public func refuseClaim(_ id: String, workerName: String, reason: String, at: Int64) async throws -> AttemptCompletion {
        try await database.write(isolation: .lockedRows) { db in
            guard case .apply(let transition) = try Self.decide(db, id, .refuseClaim(worker: workerName)) else {
                throw StoreError.conflict("attempt \(id) is not claimed")
            }
            let message = "the worker \(workerName) refused the attempt token: \(reason)"
            let retry = try Self.end(db, id, transition, reason: .exception, errorType: nil, errorMessage: message, why: message, at: at)
            return AttemptCompletion(state: .exception, changed: true, retryID: retry)
        }
    }

    /// After attempt `id` ended `lost` or `exception` (a platform fault, not the job's): a new attempt of the same
    /// work order when the workflow's `retries` allows one more, with a first log line that says why.
    static func retryIfAllowed(_ db: any SQLSession, _ id: String, reason: ExitReason, why: String, at: Int64) throws -> String? {
        guard let a = try db.fetchOne("SELECT * FROM attempts WHERE id = ?", [id]) else { return nil }
        let retries = try definition(db, snapshotID: a["snapshot_id"])?.options.retries ?? 0
        // Automatic retries so far: this attempt and those before it, back along retry_of, up to the first attempt
        // or an operator's rerun (which starts a fresh count).
        var automatic = 0
        var cursor: SQLRow? = a
        while let row = cursor, (row["retry_of"] as String?) != nil, (row["rerun_by"] as String?) == nil {
            automatic += 1
            cursor = try db.fetchOne("SELECT retry_of, rerun_by FROM attempts WHERE id = ?", [row["retry_of"] as String])
        }
        guard AttemptLifecycle.retryAllowed(automatic: automatic, retries: retries) else { return nil }
        // `why` may quote a worker's error message: stored like any log line, without escape sequences.
        return try insertFollowUp(db, a, at: at,
                                  note: "retry \(automatic + 1) of \(retries): attempt \(id) ended \(reason.rawValue)" + (why.isEmpty ? "" : " (\(why))"))
    }

    /// An attempt its worker stopped to put back: a new attempt of the work order from the same start, named as a retry
    /// of it (and not counted against the workflow's retries: its step did not fail).
    static func requeue(_ db: any SQLSession, _ id: String, at: Int64) throws -> String? {
        guard let a = try db.fetchOne("SELECT * FROM attempts WHERE id = ?", [id]) else { return nil }
        return try insertFollowUp(db, a, at: at, note: "requeued: attempt \(id) was stopped by a drain of worker \(a["worker_name"] as String? ?? "?")")
    }

    /// Inserts the next attempt of `a`'s work order (same workflow snapshot and limits), numbered after the last, as
    /// available; returns its id. The work order's row is locked first, so two made at once (a retry and a rerun)
    /// never get the same number.
    static func insertNextAttempt(_ db: any SQLSession, after a: SQLRow, dataclipID: SQLValue, startingJobID: SQLValue,
                                  rerunBy: String?, at: Int64) throws -> String {
        try db.execute("SELECT id FROM work_orders WHERE id = ?\(db.dialect.forNoKeyUpdate)", [a.value("work_order_id")])
        let number = (try db.int("SELECT MAX(attempt_number) FROM attempts WHERE work_order_id = ?", [a.value("work_order_id")]) ?? 0) + 1
        let newID = Self.newID()
        try db.execute("""
            INSERT INTO attempts (id, work_order_id, workflow_id, snapshot_id, dataclip_id, state, run_timeout_ms, log_limit_bytes,
                retry_of, attempt_number, starting_job_id, rerun_by, inserted_at)
            VALUES (?, ?, ?, ?, ?, 'available', ?, ?, ?, ?, ?, ?, ?)
            """, [newID, a.value("work_order_id"), a.value("workflow_id"), a.value("snapshot_id"), dataclipID, a.value("run_timeout_ms"),
                  a.value("log_limit_bytes"), a.value("id"), number, startingJobID, rerunBy, at])
        try db.signal(.workAvailable)
        return newID
    }

    /// Inserts the attempt that follows `a` (same work order, snapshot, input and start), with `note` as its first log line.
    private static func insertFollowUp(_ db: any SQLSession, _ a: SQLRow, at: Int64, note text: String) throws -> String {
        let newID = try insertNextAttempt(db, after: a, dataclipID: a.value("dataclip_id"), startingJobID: a.value("starting_job_id"),
                                          rerunBy: nil, at: at)
        let note = LogText.clean(text)
        try db.execute("""
            INSERT INTO log_lines (attempt_id, seq, level, source, message, timestamp) VALUES (?, 1, 'warn', ?, ?, ?)
            """, [newID, LogSource.lightning, note, at])
        return newID
    }

    /// The notice that says how many lines Lightning dropped past the attempt's log limit, once it is final.
    static func addLimitNotice(_ db: any SQLSession, _ id: String, at: Int64) throws {
        guard let row = try db.fetchOne("SELECT log_dropped, log_limit_bytes FROM attempts WHERE id = ?", [id]),
            let dropped: Int64 = row["log_dropped"], dropped > 0
        else { return }
        let seq = (try db.int64("SELECT MAX(seq) FROM log_lines WHERE attempt_id = ?", [id]) ?? 0) + 1
        let limit: Int64 = row["log_limit_bytes"] ?? Int64(Wire.defaultLogLimitMB) * 1_000_000
        try db.execute("""
            INSERT INTO log_lines (attempt_id, seq, level, source, message, timestamp) VALUES (?, ?, 'warn', ?, ?, ?)
            """, [id, seq, LogSource.lightning,
                             "\(dropped) log lines were dropped: this attempt went over its log limit of \(limit / 1_000_000) MB", at])
    }

    public func attemptResult(_ id: String) async throws -> AttemptResult {
        try await read { db in
            guard let row = try db.fetchOne("SELECT \(Self.attemptColumns) WHERE a.id = ?", [id]) else {
                throw StoreError.notFound("no attempt \(id)")
            }
            let a = Self.attempt(from: row)
            let state = try a.finalDataclipID.flatMap {
                try db.bytes("SELECT body FROM dataclips WHERE id = ?", [$0]).map(Array.init)
            }
            let response = try db.string("""
                SELECT webhook_response FROM steps WHERE attempt_id = ? AND webhook_response IS NOT NULL
                ORDER BY finished_at DESC, \(db.dialect.insertionOrder) DESC LIMIT 1
                """, [id])
            return AttemptResult(attempt: a, finalState: state, webhookResponse: response)
        }
    }

    public func workersHoldingAttempts() async throws -> [(name: String, disconnectedAt: Int64?)] {
        try await read { db in
            try db.fetchAll("""
                SELECT DISTINCT a.worker_name AS name, w.disconnected_at FROM attempts a LEFT JOIN workers w ON w.name = a.worker_name
                WHERE a.state IN ('claimed', 'started') AND a.worker_name IS NOT NULL ORDER BY name
                """).map { (name: $0["name"], disconnectedAt: $0["disconnected_at"]) }
        }
    }

    public func cancel(_ id: String, at: Int64) async throws -> AttemptState {
        try await database.write(isolation: .lockedRows) { db in
            switch try Self.decide(db, id, .cancel) {
            case .apply(let transition):
                _ = try Self.end(db, id, transition, reason: .cancel, errorType: ErrorType.cancelled,
                                 errorMessage: "cancelled before a worker claimed it", why: "", at: at)
                return .cancelled
            case .unchanged(let state):
                return state
            case .resend, .refuse:
                preconditionFailure("a cancel is applied, left unchanged or thrown")
            }
        }
    }

    // MARK: Logs

    public func appendLogs(attemptID: String, _ lines: [NewLogLine]) async throws -> AppendedLogs {
        guard !lines.isEmpty else { return AppendedLogs(seqs: [], stored: []) }
        return try await database.write(isolation: .lockedRows) { db in try LogWriter.insert(db, attemptID: attemptID, lines: lines).get() }
    }

    public func logs(attemptID: String, since: Int64, limit: Int) async throws -> [LogLineRecord] {
        try await read { db in
            try db.fetchAll("""
                SELECT * FROM log_lines WHERE attempt_id = ? AND seq > ? ORDER BY seq LIMIT ?
                """, [attemptID, since, limit]).map {
                LogLineRecord(attemptID: $0["attempt_id"], seq: $0["seq"], stepID: $0["step_id"], level: $0["level"],
                              source: $0["source"], message: $0["message"], timestamp: $0["timestamp"])
            }
        }
    }

    public func steps(attemptID: String) async throws -> [StepRecord] {
        try await read { db in
            try db.fetchAll("SELECT * FROM steps WHERE attempt_id = ? ORDER BY started_at, \(db.dialect.insertionOrder)", [attemptID]).map {
                StepRecord(id: $0["id"], attemptID: $0["attempt_id"], jobID: $0["job_id"], inputDataclipID: $0["input_dataclip_id"],
                           outputDataclipID: $0["output_dataclip_id"], reason: $0["reason"], errorType: $0["error_type"],
                           errorMessage: $0["error_message"], startedAt: $0["started_at"], finishedAt: $0["finished_at"])
            }
        }
    }

    // MARK: Workers and the janitor

    public func workerConnected(_ w: WorkerJoin, at: Int64) async throws {
        let labels = w.labels.isEmpty ? nil : (try? JSONEncoder().encode(w.labels)).map { String(decoding: $0, as: UTF8.self) }
        try await database.write(isolation: .lockedRows) { db in
            // Fleet control given to another process of this name (a restarted worker) no longer applies.
            try db.execute("""
                INSERT INTO workers (name, capacity, version, connected_at, last_seen_at, disconnected_at, host, labels, deployment_id,
                                     grp, instance_id, auth_mode, credential_expires_at, connection_id)
                VALUES (?, ?, ?, ?, ?, NULL, ?, ?, ?, ?, ?, ?, ?, ?)
                ON CONFLICT(name) DO UPDATE SET capacity = excluded.capacity, version = excluded.version,
                    connected_at = excluded.connected_at, last_seen_at = excluded.last_seen_at, disconnected_at = NULL,
                    host = excluded.host, labels = excluded.labels, deployment_id = excluded.deployment_id, grp = excluded.grp,
                    control = CASE WHEN workers.instance_id IS NOT DISTINCT FROM excluded.instance_id THEN workers.control ELSE NULL END,
                    instance_id = excluded.instance_id, auth_mode = excluded.auth_mode,
                    credential_expires_at = excluded.credential_expires_at, connection_id = excluded.connection_id
                """, [w.name, w.capacity, w.version, at, at, w.host, labels, w.deploymentID, w.group, w.instanceID,
                                 w.authMode, w.credentialExpiresAt, w.connectionID])
        }
    }

    public func workerDisconnected(name: String, connectionID: String?, at: Int64) async throws {
        try await database.write(isolation: .lockedRows) { db in
            try db.execute("""
                UPDATE workers SET disconnected_at = ?, last_seen_at = ? WHERE name = ? AND connection_id IS NOT DISTINCT FROM ?
                """, [at, at, name, connectionID])
        }
    }

    public func workersSeen(connectionIDs: [String], at: Int64) async throws {
        guard !connectionIDs.isEmpty else { return }
        try await database.write(isolation: .lockedRows) { db in
            var start = 0
            while start < connectionIDs.count {
                let chunk = connectionIDs[start..<min(start + 500, connectionIDs.count)]
                try db.execute("UPDATE workers SET last_seen_at = ? WHERE disconnected_at IS NULL AND connection_id IN ("
                               + chunk.map { _ in "?" }.joined(separator: ",") + ")", [at] + chunk.map { $0 as any SQLBindable })
                start += chunk.count
            }
        }
    }

    public func workers() async throws -> [WorkerRecord] {
        try await read { db in
            try db.fetchAll("""
                SELECT w.*, (SELECT COUNT(*) FROM attempts a WHERE a.worker_name = w.name AND a.state IN ('claimed', 'started')) AS current
                FROM workers w ORDER BY \(db.dialect.byteOrder("w.name"))
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

    public func markLost(goneWorkers gone: [String], now: Int64, graceMicros: Int64, aliveWithinMicros: Int64) async throws
        -> (lost: [String], spared: [String])
    {
        try await database.write(isolation: .lockedRows) { db in
            var ids = Set<String>()
            var spared: [String] = []
            for name in gone {
                // Liveness is shared through the database: a worker whose record says connected and whose replica
                // refreshed it lately is alive there (it joined another replica, or this one's disconnect lost to its
                // new connection's record), and one that left some replica within the grace period may come back.
                if let w = try db.fetchOne("SELECT last_seen_at, disconnected_at FROM workers WHERE name = ?", [name]) {
                    let seen: Int64? = w["last_seen_at"], disconnectedAt: Int64? = w["disconnected_at"]
                    if disconnectedAt == nil, let seen, seen >= now - aliveWithinMicros { spared.append(name); continue }
                    if let disconnectedAt, disconnectedAt >= now - graceMicros { spared.append(name); continue }
                }
                ids.formUnion(try db.strings("SELECT id FROM attempts WHERE worker_name = ? AND state IN ('claimed', 'started')",
                                                  [name]))
            }
            ids.formUnion(try db.strings("""
                SELECT id FROM attempts WHERE state IN ('claimed', 'started') AND claimed_at + run_timeout_ms * 1000 + ? < ?
                """, [graceMicros, now]))
            for id in ids.sorted() {
                // Locked, and looked at again: an event of its worker may have ended it since it was picked.
                guard let facts = try Self.facts(db, id), case .apply(let transition) = AttemptLifecycle(attemptID: id).decide(facts, .lose),
                    let errorType = transition.errorType
                else {
                    ids.remove(id)
                    continue
                }
                try db.execute("""
                    UPDATE steps SET reason = 'lost', error_type = ?, finished_at = ? WHERE attempt_id = ? AND finished_at IS NULL
                    """, [errorType, now, id])
                _ = try Self.end(db, id, transition, reason: .lost, errorType: nil,
                                 errorMessage: "the worker went away and did not come back within the grace period", why: errorType, at: now)
            }
            return (ids.sorted(), spared)
        }
    }
}

/// The log path's insert (a write like any other).
enum LogWriter {
    /// Inserts one request's lines after the attempt's last seq. A refused request (unknown or final attempt)
    /// is a failed result, so it cannot fail the others in the same transaction. Lines past the attempt's log
    /// limit are dropped (counted; the first one dropped leaves a notice), whatever the worker does.
    static func insert(_ db: any SQLSession, attemptID: String, lines: [NewLogLine]) throws -> Result<AppendedLogs, any Error> {
        guard let attempt = try db.fetchOne("""
            SELECT state, log_bytes, log_limit_bytes, log_dropped FROM attempts WHERE id = ?\(db.dialect.forUpdate)
            """, [attemptID]) else {
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
        let last = try db.fetchOne("SELECT seq, worker_seq FROM log_lines WHERE attempt_id = ? ORDER BY seq DESC LIMIT 1",
                                   [attemptID])
        var seq: Int64 = last?["seq"] ?? 0
        var highWater: Int64 = last?["worker_seq"] ?? 0
        // Seqs of lines resent (after a lost reply): read backwards from the attempt's last line, a page at a time,
        // until below the lowest resent worker_seq (worker_seq has no index: a query on it would read every line of
        // the attempt, and a resend is of its last lines).
        var seen: [Int64: Int64] = [:]
        if let lowest = lines.lazy.compactMap(\.workerSeq).filter({ $0 <= highWater }).min() {
            var before = seq + 1
            scan: while true {
                let page = try db.fetchAll("""
                    SELECT seq, worker_seq FROM log_lines WHERE attempt_id = ? AND seq < ? ORDER BY seq DESC LIMIT 500
                    """, [attemptID, before])
                for row in page {
                    before = row["seq"]
                    guard let w: Int64 = row["worker_seq"] else { continue }
                    if w < lowest { break scan }
                    seen[w] = before
                }
                if page.count < 500 { break }
            }
        }
        var seqs: [Int64?] = []
        seqs.reserveCapacity(lines.count)
        var rows: [(seq: Int64, line: NewLogLine)] = []
        rows.reserveCapacity(lines.count)
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
                    seq += 1
                    rows.append((seq, NewLogLine(stepID: line.stepID, level: "warn", source: LogSource.lightning,
                                                 message: "this attempt reached its log limit of \(limit / 1_000_000) MB: further lines are dropped",
                                                 timestamp: line.timestamp)))
                }
                dropped += 1
                seqs.append(nil)
                continue
            }
            logBytes += size
            seq += 1
            rows.append((seq, line))
            seqs.append(seq)
        }
        try db.insertLogLines(attemptID: attemptID, rows)
        if !rows.isEmpty { try db.signal(.logs(attemptID: attemptID)) }
        if logBytes != startBytes || dropped != startDropped {
            try db.execute("UPDATE attempts SET log_bytes = ?, log_dropped = ? WHERE id = ?", [logBytes, dropped, attemptID])
        }
        let stored = rows.map {
            LogLineRecord(attemptID: attemptID, seq: $0.seq, stepID: $0.line.stepID, level: $0.line.level, source: $0.line.source,
                          message: $0.line.message, timestamp: $0.line.timestamp)
        }
        return .success(AppendedLogs(seqs: seqs, stored: stored))
    }
}
