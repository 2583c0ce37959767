import Foundation

/// Worker credentials and fleet control (docs/workers.md).
extension SQLStore {
    public func createWorkerRegistration(name: String, jti: String, expiresAt: Int64, by: String, at: Int64) async throws {
        try await database.write { db in
            // The worker appears in `workers list` from now on, as never connected.
            try db.execute("INSERT INTO workers (name, capacity) VALUES (?, 0) ON CONFLICT(name) DO NOTHING", [name])
            try db.execute("""
                INSERT INTO worker_registrations (jti, worker_name, created_by, inserted_at, expires_at) VALUES (?, ?, ?, ?, ?)
                """, [jti, name, by, at, expiresAt])
        }
    }

    public func workerRegistration(jti: String) throws -> WorkerRegistration? {
        try readHere { db in
            try db.fetchOne("SELECT * FROM worker_registrations WHERE jti = ?", [jti]).map {
                WorkerRegistration(jti: $0["jti"], workerName: $0["worker_name"], expiresAt: $0["expires_at"], usedAt: $0["used_at"])
            }
        }
    }

    public func useWorkerRegistration(jti: String, name: String, at: Int64) async throws -> Int64 {
        try await database.write { db in
            let used = try db.execute("""
                UPDATE worker_registrations SET used_at = ? WHERE jti = ? AND worker_name = ? AND used_at IS NULL AND expires_at > ?
                """, [at, jti, name, at])
            guard used == 1 else {
                throw StoreError.conflict("the registration token was already used, has expired, or was revoked")
            }
            try db.execute("""
                INSERT INTO workers (name, capacity, auth_generation) VALUES (?, 0, 1)
                ON CONFLICT(name) DO UPDATE SET auth_generation = workers.auth_generation + 1, revoked_at = NULL
                """, [name])
            return try db.int64("SELECT auth_generation FROM workers WHERE name = ?", [name]) ?? 1
        }
    }

    public func workerAuthState(name: String) throws -> WorkerAuthState? {
        try readHere { db in
            try db.fetchOne("SELECT auth_generation, revoked_at, secret_revoked_at FROM workers WHERE name = ?",
                             [name]).map {
                WorkerAuthState(generation: $0["auth_generation"], revokedAt: $0["revoked_at"], secretRevokedAt: $0["secret_revoked_at"])
            }
        }
    }

    public func revokeWorker(name: String, at: Int64) async throws -> Bool {
        try await database.write { db in
            let changed = try db.execute("""
                UPDATE workers SET revoked_at = ?, secret_revoked_at = ?, auth_generation = auth_generation + 1, control = NULL
                WHERE name = ?
                """, [at, at, name])
            let found = changed == 1
            try db.execute("UPDATE worker_registrations SET used_at = ? WHERE worker_name = ? AND used_at IS NULL",
                           [at, name])
            return found
        }
    }

    public func workerCredentialRenewed(name: String, expiresAt: Int64) async throws {
        try await database.write { db in
            try db.execute("UPDATE workers SET credential_expires_at = ? WHERE name = ?", [expiresAt, name])
        }
    }

    public func workerControl(name: String) async throws -> WorkerControl? {
        try await read { db in Self.control(try db.string("SELECT control FROM workers WHERE name = ?", [name])) }
    }

    /// A `workers.control` value, decoded.
    static func control(_ text: String?) -> WorkerControl? {
        text.flatMap { try? JSONDecoder().decode(WorkerControl.self, from: Data($0.utf8)) }
    }

    public func setWorkerControl(_ controls: [(name: String, control: WorkerControl?)]) async throws {
        let encoder = JSONEncoder()
        let rows = try controls.map { ($0.name, try $0.control.map { String(decoding: try encoder.encode($0), as: UTF8.self) }) }
        try await database.write { db in
            for (name, text) in rows {
                try db.execute("UPDATE workers SET control = ? WHERE name = ?", [text, name])
            }
        }
    }
}
