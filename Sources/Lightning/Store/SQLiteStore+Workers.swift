import Foundation
import GRDB

/// Worker credentials and fleet control (docs/workers.md).
extension SQLiteStore {
    public func createWorkerRegistration(name: String, jti: String, expiresAt: Int64, by: String, at: Int64) async throws {
        try await pool.write { db in
            // The worker appears in `workers list` from now on, as never connected.
            try db.execute(sql: "INSERT INTO workers (name, capacity) VALUES (?, 0) ON CONFLICT(name) DO NOTHING", arguments: [name])
            try db.execute(sql: """
                INSERT INTO worker_registrations (jti, worker_name, created_by, inserted_at, expires_at) VALUES (?, ?, ?, ?, ?)
                """, arguments: [jti, name, by, at, expiresAt])
        }
    }

    public func workerRegistration(jti: String) throws -> WorkerRegistration? {
        try readHere { db in
            try Row.fetchOne(db, sql: "SELECT * FROM worker_registrations WHERE jti = ?", arguments: [jti]).map {
                WorkerRegistration(jti: $0["jti"], workerName: $0["worker_name"], expiresAt: $0["expires_at"], usedAt: $0["used_at"])
            }
        }
    }

    public func useWorkerRegistration(jti: String, name: String, at: Int64) async throws -> Int64 {
        try await pool.write { db in
            try db.execute(sql: """
                UPDATE worker_registrations SET used_at = ? WHERE jti = ? AND worker_name = ? AND used_at IS NULL AND expires_at > ?
                """, arguments: [at, jti, name, at])
            guard db.changesCount == 1 else {
                throw StoreError.conflict("the registration token was already used, has expired, or was revoked")
            }
            try db.execute(sql: """
                INSERT INTO workers (name, capacity, auth_generation) VALUES (?, 0, 1)
                ON CONFLICT(name) DO UPDATE SET auth_generation = workers.auth_generation + 1, revoked_at = NULL
                """, arguments: [name])
            return try Int64.fetchOne(db, sql: "SELECT auth_generation FROM workers WHERE name = ?", arguments: [name]) ?? 1
        }
    }

    public func workerAuthState(name: String) throws -> WorkerAuthState? {
        try readHere { db in
            try Row.fetchOne(db, cached: "SELECT auth_generation, revoked_at, secret_revoked_at FROM workers WHERE name = ?",
                             arguments: [name]).map {
                WorkerAuthState(generation: $0["auth_generation"], revokedAt: $0["revoked_at"], secretRevokedAt: $0["secret_revoked_at"])
            }
        }
    }

    public func revokeWorker(name: String, at: Int64) async throws -> Bool {
        try await pool.write { db in
            try db.execute(sql: """
                UPDATE workers SET revoked_at = ?, secret_revoked_at = ?, auth_generation = auth_generation + 1, control = NULL
                WHERE name = ?
                """, arguments: [at, at, name])
            let found = db.changesCount == 1
            try db.execute(sql: "UPDATE worker_registrations SET used_at = ? WHERE worker_name = ? AND used_at IS NULL",
                           arguments: [at, name])
            return found
        }
    }

    public func workerCredentialRenewed(name: String, expiresAt: Int64) async throws {
        try await writer.write { db in
            try db.execute(cached: "UPDATE workers SET credential_expires_at = ? WHERE name = ?", arguments: [expiresAt, name])
        }
    }

    public func workerControl(name: String) async throws -> WorkerControl? {
        try await read { db in Self.control(try String.fetchOne(db, cached: "SELECT control FROM workers WHERE name = ?", arguments: [name])) }
    }

    /// A `workers.control` value, decoded.
    static func control(_ text: String?) -> WorkerControl? {
        text.flatMap { try? JSONDecoder().decode(WorkerControl.self, from: Data($0.utf8)) }
    }

    public func setWorkerControl(_ controls: [(name: String, control: WorkerControl?)]) async throws {
        let encoder = JSONEncoder()
        let rows = try controls.map { ($0.name, try $0.control.map { String(decoding: try encoder.encode($0), as: UTF8.self) }) }
        try await writer.write { db in
            for (name, text) in rows {
                try db.execute(cached: "UPDATE workers SET control = ? WHERE name = ?", arguments: [text, name])
            }
        }
    }
}
