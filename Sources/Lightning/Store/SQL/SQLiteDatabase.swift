import Channels
import Foundation
import GRDB
import GRDBSQLite

/// The embedded engine: one SQLite file in WAL mode, one writer, `synchronous = FULL`, so that a committed
/// event survives a power cut and an acknowledged event is never lost. Every write goes through the group
/// writer (one fsync for many).
public final class SQLiteDatabase: StoreDatabase {
    let pool: DatabasePool
    let writer: GroupWriter
    /// A connection of the socket service thread's own for `readHere`: the worker socket's events are handled there
    /// (`SocketEndpoint.handlesOnServiceThread`), and it must never wait for one of the pool's readers while the
    /// console's or viewers' reads hold them all (every socket would wait meanwhile). Reads only (`query_only`).
    private let serviceReader: DatabaseQueue
    public var dialect: SQLDialect { .sqlite }

    /// Opens (creating when missing) the database at `path` and runs pending migrations.
    public init(path: String) throws {
        let dir = (path as NSString).deletingLastPathComponent
        if !dir.isEmpty { try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true) }
        var config = Configuration()
        config.prepareDatabase { db in
            try db.execute(sql: "PRAGMA synchronous = FULL")
            try db.execute(sql: "PRAGMA foreign_keys = ON")
        }
        config.busyMode = .timeout(10)
        pool = try DatabasePool(path: path, configuration: config)
        // GRDB's pool sets `synchronous = NORMAL` on its writer after `prepareDatabase` has run (WAL is synced only at
        // checkpoints then: a commit survives a crash of this process, not of the machine). Every write goes
        // through this one connection: FULL here syncs the WAL at each commit, so nothing acknowledged is lost.
        try pool.writeWithoutTransaction { db in try db.execute(sql: "PRAGMA synchronous = FULL") }
        try Migrations.sqliteMigrator.migrate(pool)
        writer = GroupWriter(pool: pool)
        var readerConfig = Configuration()
        readerConfig.prepareDatabase { db in try db.execute(sql: "PRAGMA query_only = 1") }
        readerConfig.busyMode = .timeout(10)
        serviceReader = try DatabaseQueue(path: path, configuration: readerConfig)
    }

    /// A read run on the calling thread with GRDB's synchronous API: no hop to a reader connection's queue and
    /// back (two thread wake-ups, most of a short read's cost here). For the short reads of the worker's path:
    /// it holds the calling thread for the read itself (tens of microseconds), and waits only while every reader
    /// connection is busy (never on the socket service thread, which has a connection of its own).
    ///
    /// One deferred transaction (one snapshot for every query of `body`), begun and ended with statements prepared
    /// once per connection: GRDB's `read` parses its BEGIN and COMMIT on every call and toggles `query_only`
    /// around them, five statements more than the read's own.
    public func readHere<T>(_ body: (any SQLSession) throws -> T) throws -> T {
        let reader: any DatabaseReader = SocketServiceThread.isCurrent ? serviceReader : pool
        return try reader.unsafeRead { db in
            try db.cachedStatement(sql: "BEGIN DEFERRED TRANSACTION").execute()
            defer {
                // A read-only transaction ends either way; one left open would hold its snapshot (and the WAL) forever.
                if (try? db.cachedStatement(sql: "COMMIT TRANSACTION").execute()) == nil, sqlite3_get_autocommit(db.sqliteConnection) == 0 {
                    try? db.cachedStatement(sql: "ROLLBACK TRANSACTION").execute()
                }
            }
            return try body(SQLiteSession(db: db))
        }
    }

    /// A read on a reader connection's own queue, the reader given back there: the task waits without holding a
    /// thread, and no reader waits for a task to be scheduled again. (GRDB's async `read` gives its reader back
    /// only once the awaiting task runs again on the cooperative pool: with the pool's threads blocked in `readHere`
    /// waiting for a reader, none came back. Lightning stopped answering with 1,000 viewers joining at once.)
    public func read<T: Sendable>(_ body: @escaping @Sendable (any SQLSession) throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { (c: CheckedContinuation<T, any Error>) in
            pool.asyncRead { db in c.resume(with: Result { try body(SQLiteSession(db: db.get())) }) }
        }
    }

    /// Every write is serial here (one writer): `isolation` has nothing to add.
    public func write<T: Sendable>(isolation: WriteIsolation, _ body: @escaping @Sendable (any SQLSession) throws -> T,
                                   ordered: (@Sendable (T) -> Void)?) async throws -> T
    {
        try await writer.write({ db in try body(SQLiteSession(db: db)) }, ordered: ordered)
    }

    public var commits: (transactions: Int, writes: Int) { (writer.transactions, writer.writes) }

    /// One process on one file: there is nobody else to tell.
    public func publish(_ signal: ClusterSignal) async throws {}
    public func subscribe(_ handler: @escaping @Sendable (ClusterSignal) -> Void) {}
}

/// Statements run through SQLite's C API on GRDB's per-connection statement cache: prepared once per connection
/// (parsing the SQL of every query anew was a large part of what an event cost, issue 11's profile), bound and
/// read without GRDB's argument and row conversions (which cost more than a short query itself).
struct SQLiteSession: SQLSession {
    let db: Database
    var dialect: SQLDialect { .sqlite }

    private static let transient = unsafeBitCast(-1, to: sqlite3_destructor_type.self)

    private func prepared(_ sql: String, _ arguments: [SQLValue]) throws -> Statement {
        let statement = try db.cachedStatement(sql: sql)
        let s = statement.sqliteStatement
        sqlite3_reset(s)
        guard Int(sqlite3_bind_parameter_count(s)) == arguments.count else {
            throw DatabaseError(resultCode: .SQLITE_MISUSE,
                                message: "\(arguments.count) arguments for \(sqlite3_bind_parameter_count(s)) parameters", sql: sql)
        }
        for (i, value) in arguments.enumerated() {
            let index = Int32(i + 1)
            switch value {
            case .null: sqlite3_bind_null(s, index)
            case .int(let v): sqlite3_bind_int64(s, index, v)
            case .double(let v): sqlite3_bind_double(s, index, v)
            case .text(let v): sqlite3_bind_text(s, index, v, -1, Self.transient)
            case .blob(let v):
                v.withUnsafeBytes { b in
                    // A zero-length blob still needs a non-NULL pointer, or SQLite stores NULL.
                    sqlite3_bind_blob(s, index, b.baseAddress ?? UnsafeRawPointer(bitPattern: 1), Int32(b.count), Self.transient)
                }
            }
        }
        return statement
    }

    private func failure(_ rc: Int32, _ statement: Statement) -> DatabaseError {
        DatabaseError(resultCode: ResultCode(rawValue: rc), message: String(cString: sqlite3_errmsg(db.sqliteConnection)),
                      sql: statement.sql)
    }

    @discardableResult func execute(_ sql: String, _ arguments: [SQLValue]) throws -> Int {
        let statement = try prepared(sql, arguments)
        let s = statement.sqliteStatement
        var rc = sqlite3_step(s)
        while rc == SQLITE_ROW { rc = sqlite3_step(s) }
        sqlite3_reset(s)
        guard rc == SQLITE_DONE else { throw failure(rc, statement) }
        return Int(sqlite3_changes(db.sqliteConnection))
    }

    func fetchAll(_ sql: String, _ arguments: [SQLValue]) throws -> [SQLRow] {
        let statement = try prepared(sql, arguments)
        let s = statement.sqliteStatement
        let columns = statement.columnNames
        let n = Int32(columns.count)
        var rows: [SQLRow] = []
        var rc = sqlite3_step(s)
        while rc == SQLITE_ROW {
            var values: [SQLiteValue] = []
            values.reserveCapacity(columns.count)
            for i in 0..<n {
                switch sqlite3_column_type(s, i) {
                case SQLITE_INTEGER: values.append(.int(sqlite3_column_int64(s, i)))
                case SQLITE_FLOAT: values.append(.double(sqlite3_column_double(s, i)))
                case SQLITE_TEXT:
                    let count = Int(sqlite3_column_bytes(s, i))
                    let p = sqlite3_column_text(s, i)
                    values.append(.text(p.map { String(decoding: UnsafeBufferPointer(start: $0, count: count), as: UTF8.self) } ?? ""))
                case SQLITE_BLOB:
                    let count = Int(sqlite3_column_bytes(s, i))
                    if let p = sqlite3_column_blob(s, i), count > 0 {
                        values.append(.blob(Array(UnsafeRawBufferPointer(start: p, count: count))))
                    } else {
                        values.append(.blob([]))
                    }
                default: values.append(.null)
                }
            }
            rows.append(SQLRow(columns: columns, storage: .sqlite(values)))
            rc = sqlite3_step(s)
        }
        sqlite3_reset(s)
        guard rc == SQLITE_DONE else { throw failure(rc, statement) }
        return rows
    }

    func signal(_ signal: ClusterSignal) throws {}

    /// One prepared statement, bound and stepped per row.
    func insertLogLines(attemptID: String, _ rows: [(seq: Int64, line: NewLogLine)]) throws {
        let statement = try db.cachedStatement(sql: """
            INSERT INTO log_lines (attempt_id, seq, step_id, level, source, message, timestamp, worker_seq)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?)
            """)
        let s = statement.sqliteStatement
        func text(_ i: Int32, _ v: String?) {
            if let v { sqlite3_bind_text(s, i, v, -1, Self.transient) } else { sqlite3_bind_null(s, i) }
        }
        for (seq, line) in rows {
            sqlite3_reset(s)
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
            guard rc == SQLITE_DONE else { throw failure(rc, statement) }
        }
    }
}
