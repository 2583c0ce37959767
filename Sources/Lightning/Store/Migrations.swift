import GRDB
import Postgres

/// Append-only, named migrations, one list for both engines: never edit one that has shipped; add the next, with
/// its SQLite and its PostgreSQL text. They differ only where the engines do: PostgreSQL's `BIGINT` for SQLite's
/// `INTEGER` (times are µs), `BYTEA` for `BLOB`, an identity column for `AUTOINCREMENT`, and an explicit `ord`
/// identity on `steps` and `triggers` where SQLite orders by its implicit `rowid` (`SQLDialect.insertionOrder`).
struct Migration {
    var name: String
    var sqlite: String
    var postgres: String
}

enum Migrations {
    static let list: [Migration] = [
        Migration(
            name: "2026-11-22-001-initial",
            sqlite: """
            CREATE TABLE workflows (
                id TEXT PRIMARY KEY,
                name TEXT NOT NULL UNIQUE,
                current_snapshot_id TEXT,
                concurrency INTEGER,
                inserted_at INTEGER NOT NULL,
                updated_at INTEGER NOT NULL
            );
            -- Immutable: a work order runs the snapshot it was created with.
            CREATE TABLE workflow_snapshots (
                id TEXT PRIMARY KEY,
                workflow_id TEXT NOT NULL REFERENCES workflows(id),
                version INTEGER NOT NULL,
                definition TEXT NOT NULL,
                inserted_at INTEGER NOT NULL,
                UNIQUE (workflow_id, version)
            );
            CREATE TABLE jobs (
                id TEXT PRIMARY KEY,
                snapshot_id TEXT NOT NULL REFERENCES workflow_snapshots(id),
                position INTEGER NOT NULL,
                name TEXT NOT NULL,
                adaptor TEXT NOT NULL,
                body TEXT NOT NULL,
                credential_name TEXT
            );
            CREATE TABLE triggers (
                id TEXT PRIMARY KEY,
                snapshot_id TEXT NOT NULL REFERENCES workflow_snapshots(id),
                workflow_id TEXT NOT NULL REFERENCES workflows(id),
                name TEXT NOT NULL,
                type TEXT NOT NULL,
                webhook_path TEXT,
                cron_expression TEXT
            );
            CREATE INDEX triggers_webhook ON triggers(webhook_path);
            CREATE TABLE edges (
                id TEXT PRIMARY KEY,
                snapshot_id TEXT NOT NULL REFERENCES workflow_snapshots(id),
                position INTEGER NOT NULL,
                source_trigger_id TEXT,
                source_job_id TEXT,
                target_job_id TEXT NOT NULL,
                condition TEXT NOT NULL,
                enabled INTEGER NOT NULL
            );
            CREATE TABLE credentials (
                id TEXT PRIMARY KEY,
                name TEXT NOT NULL UNIQUE,
                sealed_body BLOB NOT NULL,
                inserted_at INTEGER NOT NULL,
                updated_at INTEGER NOT NULL
            );
            CREATE TABLE dataclips (
                id TEXT PRIMARY KEY,
                type TEXT NOT NULL,
                body BLOB NOT NULL,
                inserted_at INTEGER NOT NULL
            );
            CREATE TABLE work_orders (
                id TEXT PRIMARY KEY,
                workflow_id TEXT NOT NULL REFERENCES workflows(id),
                snapshot_id TEXT NOT NULL REFERENCES workflow_snapshots(id),
                trigger_id TEXT,
                dataclip_id TEXT NOT NULL REFERENCES dataclips(id),
                inserted_at INTEGER NOT NULL
            );
            CREATE TABLE attempts (
                seq INTEGER PRIMARY KEY AUTOINCREMENT,
                id TEXT NOT NULL UNIQUE,
                work_order_id TEXT NOT NULL REFERENCES work_orders(id),
                workflow_id TEXT NOT NULL REFERENCES workflows(id),
                snapshot_id TEXT NOT NULL REFERENCES workflow_snapshots(id),
                dataclip_id TEXT NOT NULL REFERENCES dataclips(id),
                state TEXT NOT NULL,
                reason TEXT,
                error_type TEXT,
                error_message TEXT,
                worker_name TEXT,
                final_dataclip_id TEXT,
                run_timeout_ms INTEGER NOT NULL,
                inserted_at INTEGER NOT NULL,
                claimed_at INTEGER,
                started_at INTEGER,
                finished_at INTEGER
            );
            CREATE INDEX attempts_state ON attempts(state, seq);
            CREATE TABLE steps (
                id TEXT PRIMARY KEY,
                attempt_id TEXT NOT NULL REFERENCES attempts(id),
                job_id TEXT NOT NULL,
                input_dataclip_id TEXT,
                output_dataclip_id TEXT,
                reason TEXT,
                error_type TEXT,
                error_message TEXT,
                duration_ms INTEGER,
                mem_job INTEGER,
                mem_system INTEGER,
                started_at INTEGER NOT NULL,
                finished_at INTEGER
            );
            CREATE INDEX steps_attempt ON steps(attempt_id);
            CREATE TABLE log_lines (
                attempt_id TEXT NOT NULL,
                seq INTEGER NOT NULL,
                step_id TEXT,
                level TEXT NOT NULL,
                source TEXT NOT NULL,
                message TEXT NOT NULL,
                timestamp INTEGER NOT NULL,
                PRIMARY KEY (attempt_id, seq)
            ) WITHOUT ROWID;
            CREATE TABLE workers (
                name TEXT PRIMARY KEY,
                capacity INTEGER NOT NULL,
                version TEXT,
                connected_at INTEGER,
                last_seen_at INTEGER,
                disconnected_at INTEGER
            );
            """,
            postgres: """
            CREATE TABLE workflows (
                id TEXT PRIMARY KEY,
                name TEXT NOT NULL UNIQUE,
                current_snapshot_id TEXT,
                concurrency BIGINT,
                inserted_at BIGINT NOT NULL,
                updated_at BIGINT NOT NULL
            );
            -- Immutable: a work order runs the snapshot it was created with.
            CREATE TABLE workflow_snapshots (
                id TEXT PRIMARY KEY,
                workflow_id TEXT NOT NULL REFERENCES workflows(id),
                version BIGINT NOT NULL,
                definition TEXT NOT NULL,
                inserted_at BIGINT NOT NULL,
                UNIQUE (workflow_id, version)
            );
            CREATE TABLE jobs (
                id TEXT PRIMARY KEY,
                snapshot_id TEXT NOT NULL REFERENCES workflow_snapshots(id),
                position BIGINT NOT NULL,
                name TEXT NOT NULL,
                adaptor TEXT NOT NULL,
                body TEXT NOT NULL,
                credential_name TEXT
            );
            CREATE TABLE triggers (
                id TEXT PRIMARY KEY,
                ord BIGINT GENERATED ALWAYS AS IDENTITY,
                snapshot_id TEXT NOT NULL REFERENCES workflow_snapshots(id),
                workflow_id TEXT NOT NULL REFERENCES workflows(id),
                name TEXT NOT NULL,
                type TEXT NOT NULL,
                webhook_path TEXT,
                cron_expression TEXT
            );
            CREATE INDEX triggers_webhook ON triggers(webhook_path);
            CREATE TABLE edges (
                id TEXT PRIMARY KEY,
                snapshot_id TEXT NOT NULL REFERENCES workflow_snapshots(id),
                position BIGINT NOT NULL,
                source_trigger_id TEXT,
                source_job_id TEXT,
                target_job_id TEXT NOT NULL,
                condition TEXT NOT NULL,
                enabled BIGINT NOT NULL
            );
            CREATE TABLE credentials (
                id TEXT PRIMARY KEY,
                name TEXT NOT NULL UNIQUE,
                sealed_body BYTEA NOT NULL,
                inserted_at BIGINT NOT NULL,
                updated_at BIGINT NOT NULL
            );
            CREATE TABLE dataclips (
                id TEXT PRIMARY KEY,
                type TEXT NOT NULL,
                body BYTEA NOT NULL,
                inserted_at BIGINT NOT NULL
            );
            CREATE TABLE work_orders (
                id TEXT PRIMARY KEY,
                workflow_id TEXT NOT NULL REFERENCES workflows(id),
                snapshot_id TEXT NOT NULL REFERENCES workflow_snapshots(id),
                trigger_id TEXT,
                dataclip_id TEXT NOT NULL REFERENCES dataclips(id),
                inserted_at BIGINT NOT NULL
            );
            CREATE TABLE attempts (
                seq BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                id TEXT NOT NULL UNIQUE,
                work_order_id TEXT NOT NULL REFERENCES work_orders(id),
                workflow_id TEXT NOT NULL REFERENCES workflows(id),
                snapshot_id TEXT NOT NULL REFERENCES workflow_snapshots(id),
                dataclip_id TEXT NOT NULL REFERENCES dataclips(id),
                state TEXT NOT NULL,
                reason TEXT,
                error_type TEXT,
                error_message TEXT,
                worker_name TEXT,
                final_dataclip_id TEXT,
                run_timeout_ms BIGINT NOT NULL,
                inserted_at BIGINT NOT NULL,
                claimed_at BIGINT,
                started_at BIGINT,
                finished_at BIGINT
            );
            CREATE INDEX attempts_state ON attempts(state, seq);
            CREATE TABLE steps (
                id TEXT PRIMARY KEY,
                ord BIGINT GENERATED ALWAYS AS IDENTITY,
                attempt_id TEXT NOT NULL REFERENCES attempts(id),
                job_id TEXT NOT NULL,
                input_dataclip_id TEXT,
                output_dataclip_id TEXT,
                reason TEXT,
                error_type TEXT,
                error_message TEXT,
                duration_ms BIGINT,
                mem_job BIGINT,
                mem_system BIGINT,
                started_at BIGINT NOT NULL,
                finished_at BIGINT
            );
            CREATE INDEX steps_attempt ON steps(attempt_id);
            CREATE TABLE log_lines (
                attempt_id TEXT NOT NULL,
                seq BIGINT NOT NULL,
                step_id TEXT,
                level TEXT NOT NULL,
                source TEXT NOT NULL,
                message TEXT NOT NULL,
                timestamp BIGINT NOT NULL,
                PRIMARY KEY (attempt_id, seq)
            );
            CREATE TABLE workers (
                name TEXT PRIMARY KEY,
                capacity BIGINT NOT NULL,
                version TEXT,
                connected_at BIGINT,
                last_seen_at BIGINT,
                disconnected_at BIGINT
            );
            """),
        // Makes run:batch_logs idempotent: a batch resent after a lost reply (Lightning restarted, the socket
        // dropped) is recognised by the worker's line numbers and not stored twice.
        Migration(
            name: "2026-12-01-002-log-worker-seq",
            sqlite: "ALTER TABLE log_lines ADD COLUMN worker_seq INTEGER",
            postgres: "ALTER TABLE log_lines ADD COLUMN worker_seq BIGINT"),
        Migration(
            name: "2026-12-01-003-operators-and-cron",
            sqlite: """
            -- Operator tokens: only the SHA-256 of the secret is kept.
            CREATE TABLE operator_tokens (
                id TEXT PRIMARY KEY,
                hash TEXT NOT NULL UNIQUE,
                name TEXT NOT NULL,
                role TEXT NOT NULL,
                inserted_at INTEGER NOT NULL,
                last_used_at INTEGER,
                revoked_at INTEGER
            );
            -- The next due slot of each cron trigger, keyed by workflow and trigger name so that it survives
            -- a re-applied workflow; advanced by compare-and-set in the transaction that makes the work order.
            CREATE TABLE cron_slots (
                workflow_id TEXT NOT NULL REFERENCES workflows(id),
                trigger_name TEXT NOT NULL,
                expression TEXT NOT NULL,
                next_slot INTEGER NOT NULL,
                last_fired_slot INTEGER,
                PRIMARY KEY (workflow_id, trigger_name)
            );
            """,
            postgres: """
            -- Operator tokens: only the SHA-256 of the secret is kept.
            CREATE TABLE operator_tokens (
                id TEXT PRIMARY KEY,
                hash TEXT NOT NULL UNIQUE,
                name TEXT NOT NULL,
                role TEXT NOT NULL,
                inserted_at BIGINT NOT NULL,
                last_used_at BIGINT,
                revoked_at BIGINT
            );
            -- The next due slot of each cron trigger, keyed by workflow and trigger name so that it survives
            -- a re-applied workflow; advanced by compare-and-set in the transaction that makes the work order.
            CREATE TABLE cron_slots (
                workflow_id TEXT NOT NULL REFERENCES workflows(id),
                trigger_name TEXT NOT NULL,
                expression TEXT NOT NULL,
                next_slot BIGINT NOT NULL,
                last_fired_slot BIGINT,
                PRIMARY KEY (workflow_id, trigger_name)
            );
            """),
        Migration(
            name: "2026-12-02-004-compatibility-retries-limits",
            sqlite: """
            -- Automatic retries: a retry is a new attempt of the same work order that names the one before it.
            ALTER TABLE attempts ADD COLUMN retry_of TEXT;
            ALTER TABLE attempts ADD COLUMN attempt_number INTEGER NOT NULL DEFAULT 1;
            -- The per-attempt log cap (log_limit_mb), enforced as lines arrive.
            ALTER TABLE attempts ADD COLUMN log_limit_bytes INTEGER;
            ALTER TABLE attempts ADD COLUMN log_bytes INTEGER NOT NULL DEFAULT 0;
            ALTER TABLE attempts ADD COLUMN log_dropped INTEGER NOT NULL DEFAULT 0;
            -- The step's state.webhookResponse, for a webhook that waits on the attempt.
            ALTER TABLE steps ADD COLUMN webhook_response TEXT;
            CREATE INDEX attempts_work_order ON attempts(work_order_id);
            CREATE INDEX steps_output ON steps(output_dataclip_id);
            """,
            postgres: """
            -- Automatic retries: a retry is a new attempt of the same work order that names the one before it.
            ALTER TABLE attempts ADD COLUMN retry_of TEXT;
            ALTER TABLE attempts ADD COLUMN attempt_number BIGINT NOT NULL DEFAULT 1;
            -- The per-attempt log cap (log_limit_mb), enforced as lines arrive.
            ALTER TABLE attempts ADD COLUMN log_limit_bytes BIGINT;
            ALTER TABLE attempts ADD COLUMN log_bytes BIGINT NOT NULL DEFAULT 0;
            ALTER TABLE attempts ADD COLUMN log_dropped BIGINT NOT NULL DEFAULT 0;
            -- The step's state.webhookResponse, for a webhook that waits on the attempt.
            ALTER TABLE steps ADD COLUMN webhook_response TEXT;
            CREATE INDEX attempts_work_order ON attempts(work_order_id);
            CREATE INDEX steps_output ON steps(output_dataclip_id);
            """),
        Migration(
            name: "2026-12-02-005-console",
            sqlite: """
            -- Browser sessions of the operator console: an HttpOnly cookie whose SHA-256 is kept here, bound to
            -- the operator token it was exchanged for (revoking the token ends its sessions).
            CREATE TABLE console_sessions (
                hash TEXT PRIMARY KEY,
                token_id TEXT NOT NULL REFERENCES operator_tokens(id),
                inserted_at INTEGER NOT NULL,
                expires_at INTEGER NOT NULL,
                ended_at INTEGER
            );
            -- An attempt rerun from a chosen step starts at that step's job, with that step's recorded input.
            ALTER TABLE attempts ADD COLUMN starting_job_id TEXT;
            -- Who asked for a rerun (NULL: the first attempt, or an automatic retry).
            ALTER TABLE attempts ADD COLUMN rerun_by TEXT;
            -- The console's filters: attempts of one workflow, newest first.
            CREATE INDEX attempts_workflow ON attempts(workflow_id, seq);
            """,
            postgres: """
            -- Browser sessions of the operator console: an HttpOnly cookie whose SHA-256 is kept here, bound to
            -- the operator token it was exchanged for (revoking the token ends its sessions).
            CREATE TABLE console_sessions (
                hash TEXT PRIMARY KEY,
                token_id TEXT NOT NULL REFERENCES operator_tokens(id),
                inserted_at BIGINT NOT NULL,
                expires_at BIGINT NOT NULL,
                ended_at BIGINT
            );
            -- An attempt rerun from a chosen step starts at that step's job, with that step's recorded input.
            ALTER TABLE attempts ADD COLUMN starting_job_id TEXT;
            -- Who asked for a rerun (NULL: the first attempt, or an automatic retry).
            ALTER TABLE attempts ADD COLUMN rerun_by TEXT;
            -- The console's filters: attempts of one workflow, newest first.
            CREATE INDEX attempts_workflow ON attempts(workflow_id, seq);
            """),
        Migration(
            name: "2026-12-02-006-worker-fleet",
            sqlite: """
            -- What a worker says of itself at join, and how it authenticated.
            ALTER TABLE workers ADD COLUMN host TEXT;
            ALTER TABLE workers ADD COLUMN labels TEXT;
            ALTER TABLE workers ADD COLUMN deployment_id TEXT;
            ALTER TABLE workers ADD COLUMN grp TEXT;
            -- A new value per worker process: fleet control is bound to the process it was given to.
            ALTER TABLE workers ADD COLUMN instance_id TEXT;
            ALTER TABLE workers ADD COLUMN auth_mode TEXT;
            ALTER TABLE workers ADD COLUMN credential_expires_at INTEGER;
            -- Worker auth tokens carry the generation they were minted in; revoking or registering again moves
            -- it on, so every earlier token is refused.
            ALTER TABLE workers ADD COLUMN auth_generation INTEGER NOT NULL DEFAULT 0;
            ALTER TABLE workers ADD COLUMN revoked_at INTEGER;
            -- A revoked name stays refused with the shared secret, even once registered again.
            ALTER TABLE workers ADD COLUMN secret_revoked_at INTEGER;
            -- Fleet control in force for the process instance_id names (JSON: drain or pause), NULL: none.
            ALTER TABLE workers ADD COLUMN control TEXT;
            -- Registration tokens: minted by an admin for one worker name, used once.
            CREATE TABLE worker_registrations (
                jti TEXT PRIMARY KEY,
                worker_name TEXT NOT NULL,
                created_by TEXT,
                inserted_at INTEGER NOT NULL,
                expires_at INTEGER NOT NULL,
                used_at INTEGER
            );
            """,
            postgres: """
            -- What a worker says of itself at join, and how it authenticated.
            ALTER TABLE workers ADD COLUMN host TEXT;
            ALTER TABLE workers ADD COLUMN labels TEXT;
            ALTER TABLE workers ADD COLUMN deployment_id TEXT;
            ALTER TABLE workers ADD COLUMN grp TEXT;
            -- A new value per worker process: fleet control is bound to the process it was given to.
            ALTER TABLE workers ADD COLUMN instance_id TEXT;
            ALTER TABLE workers ADD COLUMN auth_mode TEXT;
            ALTER TABLE workers ADD COLUMN credential_expires_at BIGINT;
            -- Worker auth tokens carry the generation they were minted in; revoking or registering again moves
            -- it on, so every earlier token is refused.
            ALTER TABLE workers ADD COLUMN auth_generation BIGINT NOT NULL DEFAULT 0;
            ALTER TABLE workers ADD COLUMN revoked_at BIGINT;
            -- A revoked name stays refused with the shared secret, even once registered again.
            ALTER TABLE workers ADD COLUMN secret_revoked_at BIGINT;
            -- Fleet control in force for the process instance_id names (JSON: drain or pause), NULL: none.
            ALTER TABLE workers ADD COLUMN control TEXT;
            -- Registration tokens: minted by an admin for one worker name, used once.
            CREATE TABLE worker_registrations (
                jti TEXT PRIMARY KEY,
                worker_name TEXT NOT NULL,
                created_by TEXT,
                inserted_at BIGINT NOT NULL,
                expires_at BIGINT NOT NULL,
                used_at BIGINT
            );
            """),
        // Which connection (replica and socket) the worker record describes: a replica records a disconnect only of
        // its own connection, and refreshes last_seen_at of the workers connected to it (liveness shared by
        // replicas, issue 12).
        Migration(
            name: "2026-12-06-007-worker-connection",
            sqlite: "ALTER TABLE workers ADD COLUMN connection_id TEXT",
            postgres: "ALTER TABLE workers ADD COLUMN connection_id TEXT"),
    ]

    /// SQLite: GRDB's migrator (its `grdb_migrations` table records what ran), by the same names as always.
    static var sqliteMigrator: DatabaseMigrator {
        var m = DatabaseMigrator()
        for migration in list {
            m.registerMigration(migration.name) { db in try db.execute(sql: migration.sqlite) }
        }
        return m
    }

    /// PostgreSQL: the pending steps in one transaction under an advisory lock, so that replicas started together
    /// migrate once (the others wait, then find nothing to do). DDL is transactional there: a failed step leaves
    /// the schema as it was.
    static func migratePostgres(_ c: PostgresConnection) throws {
        try c.transaction { c in
            // An arbitrary constant shared by every replica: "lightning schema migrations". Taken before anything,
            // the bookkeeping table's creation included (two replicas creating it at once would collide).
            try c.query("SELECT pg_advisory_xact_lock(7461346372)")
            try c.execute("CREATE TABLE IF NOT EXISTS schema_migrations (name TEXT PRIMARY KEY, applied_at BIGINT NOT NULL)")
            let applied = Set(try c.query("SELECT name FROM schema_migrations").all.compactMap { try $0.string("name") })
            for migration in list where !applied.contains(migration.name) {
                try c.execute(migration.postgres)
                try c.query("INSERT INTO schema_migrations (name, applied_at) VALUES ($1, $2)",
                            [.text(migration.name), .int(Timestamp.nowMicros())])
            }
        }
    }
}
