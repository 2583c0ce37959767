import Foundation
import LightningProtocol

/// What the operator console (and the API behind it) reads and writes beyond the worker's path: filtered pages of
/// attempts, browser sessions, reruns from a step, a workflow's graph and versions.
extension SQLStore {
    // MARK: Attempts, filtered and paged

    public func attempts(matching filter: AttemptFilter) async throws -> AttemptPage {
        try await read { db in
            var conditions: [String] = []
            var arguments: [any SQLBindable] = []
            if let before = filter.before { conditions.append("a.seq < ?"); arguments += [before] }
            if let state = filter.state { conditions.append("a.state = ?"); arguments += [state.rawValue] }
            if let workflow = filter.workflow {
                // One id, looked up first, so the (workflow_id, seq) index serves the page.
                conditions.append("a.workflow_id = (SELECT id FROM workflows WHERE name = ? OR id = ? LIMIT 1)")
                arguments += [workflow, workflow]
            }
            if let since = filter.since { conditions.append("a.inserted_at >= ?"); arguments += [since] }
            if let until = filter.until { conditions.append("a.inserted_at < ?"); arguments += [until] }
            if let text = filter.text, !text.isEmpty {
                // No index serves a substring search: it reads the log lines of each candidate, newest first,
                // and stops at the page's end.
                conditions.append("EXISTS (SELECT 1 FROM log_lines l WHERE l.attempt_id = a.id AND l.message \(db.dialect.caseInsensitiveLike) ? ESCAPE '\\')")
                arguments += ["%" + Self.likeEscaped(text) + "%"]
            }
            arguments += [filter.limit + 1]
            let sql = "SELECT \(Self.attemptColumns)" + (conditions.isEmpty ? "" : " WHERE " + conditions.joined(separator: " AND "))
                + " ORDER BY a.seq DESC LIMIT ?"
            let rows = try db.fetchAll(sql, arguments)
            let page = rows.prefix(filter.limit)
            let next: Int64? = rows.count > filter.limit ? page.last.map { $0["seq"] } : nil
            return AttemptPage(attempts: page.map(Self.attempt(from:)), nextBefore: next)
        }
    }

    static func likeEscaped(_ text: String) -> String {
        var out = ""
        for c in text {
            if c == "%" || c == "_" || c == "\\" { out.append("\\") }
            out.append(c)
        }
        return out
    }

    // MARK: Console sessions

    public func createConsoleSession(tokenID: String, lifetimeMicros: Int64, at now: Int64) async throws -> String {
        let secret = try OperatorToken.generate(prefix: OperatorToken.sessionPrefix)
        try await database.write { db in
            // Sessions past their end are of no use to anyone: swept as new ones are made.
            try db.execute("DELETE FROM console_sessions WHERE expires_at < ? OR ended_at IS NOT NULL", [now])
            try db.execute("INSERT INTO console_sessions (hash, token_id, inserted_at, expires_at) VALUES (?, ?, ?, ?)",
                           [secret.hash, tokenID, now, now + lifetimeMicros])
        }
        return secret.plaintext
    }

    /// The operator token behind a live session (not ended, not expired, its token not revoked), or nil.
    public func consoleSession(secret: String, at now: Int64) throws -> ConsoleSession? {
        guard OperatorToken.isWellFormed(secret, prefix: OperatorToken.sessionPrefix) else { return nil }
        let hash = OperatorToken.hash(secret)
        return try database.readHere { db in
            try db.fetchOne("""
                SELECT t.*, s.expires_at AS session_expires_at FROM console_sessions s JOIN operator_tokens t ON t.id = s.token_id
                WHERE s.hash = ? AND s.ended_at IS NULL AND s.expires_at > ? AND t.revoked_at IS NULL
                """, [hash, now])
        }.map { ConsoleSession(token: Self.token(from: $0), hash: hash, expiresAt: $0["session_expires_at"]) }
    }

    public func endConsoleSession(secret: String, at now: Int64) async throws {
        let hash = OperatorToken.hash(secret)
        try await database.write { db in
            try db.execute("UPDATE console_sessions SET ended_at = ? WHERE hash = ?", [now, hash])
        }
    }

    // MARK: Reruns

    /// A new attempt of `attemptID`'s work order on the same workflow snapshot. From a step: it starts at that
    /// step's job with the input that step had; without one: from the start with the work order's input.
    public func rerun(attemptID: String, fromStep stepRef: String?, by: String, at now: Int64) async throws -> CreatedWork {
        let created = try await database.write { db -> CreatedWork in
            guard let a = try db.fetchOne("SELECT * FROM attempts WHERE id = ?", [attemptID]) else {
                throw StoreError.notFound("no attempt \(attemptID)")
            }
            let state = AttemptState(rawValue: a["state"]) ?? .available
            guard state.isFinal else {
                throw StoreError.conflict("attempt \(attemptID) is \(state.rawValue): rerun it once it has finished (or cancel it first)")
            }
            var dataclipID: String = a["dataclip_id"]
            var startingJobID: String? = nil
            if let stepRef, !stepRef.isEmpty {
                // A step of this attempt, by step id, job id or job name.
                guard let step = try db.fetchOne("""
                    SELECT s.id, s.job_id, s.input_dataclip_id, j.name FROM steps s LEFT JOIN jobs j ON j.id = s.job_id
                    WHERE s.attempt_id = ? AND (s.id = ? OR s.job_id = ? OR j.name = ?) ORDER BY s.started_at LIMIT 1
                    """, [attemptID, stepRef, stepRef, stepRef]) else {
                    throw StoreError.notFound("attempt \(attemptID) has no step \"\(stepRef)\" (give a step id, a job id or a job name)")
                }
                guard let input: String = step["input_dataclip_id"] else {
                    throw StoreError.conflict("the input of step \(step["id"] as String) was not kept, so it cannot be rerun from there")
                }
                dataclipID = input
                startingJobID = step["job_id"]
            }
            let newID = try Self.insertNextAttempt(db, after: a, dataclipID: .text(dataclipID),
                                                   startingJobID: startingJobID.map { .text($0) } ?? .null, rerunBy: by, at: now)
            return CreatedWork(workOrderID: a["work_order_id"], attemptID: newID, dataclipID: dataclipID,
                               webhookReply: nil, webhookReplyTimeoutMS: nil, runTimeoutMS: a["run_timeout_ms"])
        }
        return created
    }

    // MARK: Workflows

    public func workflowDetail(_ nameOrID: String) async throws -> WorkflowDetail {
        try await read { db in
            guard let w = try db.fetchOne("""
                SELECT w.id, w.name, w.concurrency, w.current_snapshot_id, s.version FROM workflows w
                JOIN workflow_snapshots s ON s.id = w.current_snapshot_id WHERE w.name = ? OR w.id = ?
                """, [nameOrID, nameOrID]) else { throw StoreError.notFound("no workflow named \"\(nameOrID)\"") }
            let snapshotID: String = w["current_snapshot_id"]
            let versions = try db.fetchAll("""
                SELECT id, version, inserted_at FROM workflow_snapshots WHERE workflow_id = ? ORDER BY version DESC
                """, [w.value("id")]).map { WorkflowDetail.Version(version: $0["version"], snapshotID: $0["id"], insertedAt: $0["inserted_at"]) }
            let jobs = try db.fetchAll("SELECT id, name, adaptor, credential_name FROM jobs WHERE snapshot_id = ? ORDER BY position",
                                        [snapshotID]).map {
                WorkflowDetail.Job(id: $0["id"], name: $0["name"], adaptor: $0["adaptor"], credential: $0["credential_name"])
            }
            let triggers = try db.fetchAll("""
                SELECT id, name, type, webhook_path, cron_expression FROM triggers WHERE snapshot_id = ? ORDER BY \(db.dialect.insertionOrder)
                """, [snapshotID]).map {
                WorkflowDetail.Trigger(id: $0["id"], name: $0["name"], type: $0["type"], webhookPath: $0["webhook_path"], cron: $0["cron_expression"])
            }
            let edges = try db.fetchAll("SELECT * FROM edges WHERE snapshot_id = ? ORDER BY position", [snapshotID]).map {
                Plan.Edge(id: $0["id"], sourceTriggerID: $0["source_trigger_id"], sourceJobID: $0["source_job_id"],
                          targetJobID: $0["target_job_id"], condition: $0["condition"], enabled: $0["enabled"])
            }
            return WorkflowDetail(id: w["id"], name: w["name"], version: w["version"], concurrency: w["concurrency"],
                                  versions: versions, jobs: jobs, triggers: triggers, edges: edges)
        }
    }

    // MARK: Dataclips

    public func dataclipRecord(_ id: String) async throws -> (type: String, body: [UInt8]) {
        guard let clip = try await read({ db -> (String, [UInt8])? in
            try db.fetchOne("SELECT type, body FROM dataclips WHERE id = ?", [id]).map { ($0["type"], $0["body"] as [UInt8]) }
        }) else { throw StoreError.notFound("no dataclip \(id)") }
        return (clip.0, clip.1)
    }

    /// Every stored credential's body (decrypted): what an operator-facing view must never show.
    public func allCredentialBodies() async throws -> [[UInt8]] {
        let ids = try await read { db in try db.strings("SELECT id FROM credentials") }
        var bodies: [[UInt8]] = []
        for id in ids { bodies.append(try await credentialBody(id: id)) }
        return bodies
    }
}
