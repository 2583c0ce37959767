import Foundation

extension SQLStore {
    // MARK: Operator tokens

    public func createOperatorToken(name: String, role: OperatorToken.Role) async throws -> (record: OperatorTokenRecord, secret: String) {
        let trimmed = name.trimmingCharacters(in: .whitespaces)
        guard !trimmed.isEmpty, trimmed.count <= 100 else { throw StoreError.invalid("a token needs a name of 1 to 100 characters") }
        let token = try OperatorToken.generate()
        // The id is public (shown in lists, used to revoke); it is not derived from the secret.
        let id = String(Self.newID().prefix(8))
        let now = Timestamp.nowMicros()
        try await database.write { db in
            try db.execute("INSERT INTO operator_tokens (id, hash, name, role, inserted_at) VALUES (?, ?, ?, ?, ?)",
                           [id, token.hash, trimmed, role.rawValue, now])
        }
        return (OperatorTokenRecord(id: id, name: trimmed, role: role, insertedAt: now), token.plaintext)
    }

    public func verifyOperatorToken(secret: String) throws -> OperatorTokenRecord? {
        guard OperatorToken.isWellFormed(secret) else { return nil }
        let hash = OperatorToken.hash(secret)
        return try database.readHere { db in
            try db.fetchOne("SELECT * FROM operator_tokens WHERE hash = ? AND revoked_at IS NULL", [hash])
        }.map(Self.token(from:))
    }

    public func touchOperatorToken(_ record: OperatorTokenRecord, at: Int64) async throws {
        // Kept to the minute: a busy API must not write on every request.
        guard (record.lastUsedAt ?? 0) < at - 60_000_000 else { return }
        try await database.write { db in
            try db.execute("UPDATE operator_tokens SET last_used_at = ? WHERE id = ?", [at, record.id])
        }
    }

    public func lastLogSeq(attemptID: String) async throws -> Int64 {
        try await read { db in
            try db.int64("SELECT MAX(seq) FROM log_lines WHERE attempt_id = ?", [attemptID]) ?? 0
        }
    }

    public func operatorTokens() async throws -> [OperatorTokenRecord] {
        try await read { db in
            try db.fetchAll("SELECT * FROM operator_tokens ORDER BY inserted_at").map(Self.token(from:))
        }
    }

    public func revokeOperatorToken(_ idOrName: String, at: Int64) async throws -> Int {
        try await database.write { db in
            try db.execute("UPDATE operator_tokens SET revoked_at = ? WHERE (id = ? OR name = ?) AND revoked_at IS NULL",
                           [at, idOrName, idOrName])
        }
    }

    static func token(from row: SQLRow) -> OperatorTokenRecord {
        OperatorTokenRecord(id: row["id"], name: row["name"], role: OperatorToken.Role(rawValue: row["role"]) ?? .viewer,
                            insertedAt: row["inserted_at"], lastUsedAt: row["last_used_at"], revokedAt: row["revoked_at"])
    }

    // MARK: Figures for /metrics

    public func attemptCounts() async throws -> [AttemptState: Int] {
        try await read { db in
            var counts: [AttemptState: Int] = [:]
            for row in try db.fetchAll("SELECT state, COUNT(*) AS n FROM attempts GROUP BY state") {
                if let s = AttemptState(rawValue: row["state"]) { counts[s] = row["n"] }
            }
            return counts
        }
    }

    public func logLineCount() async throws -> Int64 {
        try await read { db in try db.int64("SELECT COUNT(*) FROM log_lines") ?? 0 }
    }

    // MARK: Cron

    public func cronTriggers() async throws -> [CronTrigger] {
        try await read { db in
            try db.fetchAll("""
                SELECT w.id AS workflow_id, w.name AS workflow_name, t.id AS trigger_id, t.name AS trigger_name,
                       t.cron_expression, c.next_slot, c.expression AS scheduled_expression
                FROM triggers t JOIN workflows w ON w.current_snapshot_id = t.snapshot_id
                LEFT JOIN cron_slots c ON c.workflow_id = w.id AND c.trigger_name = t.name
                WHERE t.type = 'cron' AND t.cron_expression IS NOT NULL ORDER BY \(db.dialect.byteOrder("w.name")), \(db.dialect.byteOrder("t.name"))
                """).map { row in
                let expression: String = row["cron_expression"]
                // A changed expression starts a fresh schedule.
                let sameSchedule = (row["scheduled_expression"] as String?) == expression
                return CronTrigger(workflowID: row["workflow_id"], workflowName: row["workflow_name"], triggerID: row["trigger_id"],
                                   triggerName: row["trigger_name"], expression: expression,
                                   nextSlot: sameSchedule ? row["next_slot"] : nil)
            }
        }
    }

    public func scheduleCron(_ trigger: CronTrigger, next: Int64) async throws -> Int64 {
        try await database.write { db in
            try db.execute("""
                INSERT INTO cron_slots (workflow_id, trigger_name, expression, next_slot) VALUES (?, ?, ?, ?)
                ON CONFLICT(workflow_id, trigger_name) DO UPDATE SET expression = excluded.expression,
                    next_slot = excluded.next_slot WHERE cron_slots.expression != excluded.expression
                """, [trigger.workflowID, trigger.triggerName, trigger.expression, next])
            return try db.int64("SELECT next_slot FROM cron_slots WHERE workflow_id = ? AND trigger_name = ?",
                                      [trigger.workflowID, trigger.triggerName]) ?? next
        }
    }

    public func fireCron(_ trigger: CronTrigger, due: Int64, next: Int64) async throws -> CreatedWork? {
        struct AlreadyFired: Error {}
        let input = Array(#"{"cron":{"trigger":"\#(trigger.triggerName)","slot":\#(due / 1_000_000)}}"#.utf8)
        do {
            return try await createWorkOrder(input: input) { db in
                let fired = try db.execute("""
                    UPDATE cron_slots SET next_slot = ?, last_fired_slot = ?
                    WHERE workflow_id = ? AND trigger_name = ? AND next_slot = ? AND expression = ?
                    """, [next, due, trigger.workflowID, trigger.triggerName, due, trigger.expression])
                guard fired == 1 else { throw AlreadyFired() }
                guard let row = try db.fetchOne("""
                    SELECT w.id, w.current_snapshot_id FROM workflows w JOIN triggers t ON t.snapshot_id = w.current_snapshot_id
                    WHERE w.id = ? AND t.name = ? AND t.type = 'cron'
                    """, [trigger.workflowID, trigger.triggerName]) else { throw AlreadyFired() }
                return (row["id"], row["current_snapshot_id"], trigger.triggerID)
            }
        } catch is AlreadyFired {
            return nil
        }
    }
}
