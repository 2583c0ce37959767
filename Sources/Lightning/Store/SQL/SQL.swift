import Foundation

/// The store's rules are written once, against this narrow seam, and run on either engine: SQLite (embedded,
/// `SQLiteDatabase`) or PostgreSQL (several replicas, `PostgresDatabase`). The SQL itself is the common subset of
/// both (`?` placeholders, `ON CONFLICT`, `IS NOT DISTINCT FROM`, `RETURNING`); where the engines differ a statement
/// asks `session.dialect`.
public enum SQLDialect: Sendable {
    case sqlite, postgres

    /// The column that orders rows of `steps` and `triggers` by insertion (SQLite's implicit `rowid`; an explicit
    /// identity column `ord` in PostgreSQL).
    var insertionOrder: String { self == .sqlite ? "rowid" : "ord" }

    /// Locks the rows a `SELECT` reads until the transaction ends (nothing to add with SQLite's one writer).
    var forUpdate: String { self == .sqlite ? "" : " FOR UPDATE" }

    /// The same for a row others only reference: `FOR NO KEY UPDATE` does not wait for (or hold up) inserts of
    /// rows with a foreign key to it, only other writers that lock it too.
    var forNoKeyUpdate: String { self == .sqlite ? "" : " FOR NO KEY UPDATE" }

    /// `column` ordered by its bytes, as SQLite orders text (PostgreSQL would use the database's collation).
    func byteOrder(_ column: String) -> String { self == .sqlite ? column : "\(column) COLLATE \"C\"" }

    /// `LIKE` that ignores the case of ASCII letters (SQLite's `LIKE` does; PostgreSQL's needs `ILIKE`).
    var caseInsensitiveLike: String { self == .sqlite ? "LIKE" : "ILIKE" }

    /// An aggregate joining `expression`'s values with commas.
    func commaJoined(_ expression: String) -> String {
        self == .sqlite ? "GROUP_CONCAT(\(expression))" : "string_agg(\(expression), ',')"
    }
}

/// A value bound to a statement.
public enum SQLValue: Sendable, Equatable {
    case null
    case int(Int64)
    case double(Double)
    case text(String)
    case blob([UInt8])
}

/// A Swift value that can be bound to a statement.
public protocol SQLBindable {
    var sqlValue: SQLValue { get }
}

extension String: SQLBindable { public var sqlValue: SQLValue { .text(self) } }
extension Int: SQLBindable { public var sqlValue: SQLValue { .int(Int64(self)) } }
extension Int64: SQLBindable { public var sqlValue: SQLValue { .int(self) } }
extension Bool: SQLBindable { public var sqlValue: SQLValue { .int(self ? 1 : 0) } }
extension Double: SQLBindable { public var sqlValue: SQLValue { .double(self) } }
extension Data: SQLBindable { public var sqlValue: SQLValue { .blob(Array(self)) } }
extension Array: SQLBindable where Element == UInt8 { public var sqlValue: SQLValue { .blob(self) } }
extension SQLValue: SQLBindable { public var sqlValue: SQLValue { self } }
extension Optional: SQLBindable where Wrapped: SQLBindable {
    public var sqlValue: SQLValue { self?.sqlValue ?? .null }
}

/// A column's value read back: from SQLite's storage classes, or from PostgreSQL's text format.
public protocol SQLColumn {
    init?(sqlite value: SQLiteValue)
    init?(postgresText text: String)
}

/// What SQLite stored (the adapter copies it out of GRDB's row).
public enum SQLiteValue {
    case null, int(Int64), double(Double), text(String), blob([UInt8])
}

extension String: SQLColumn {
    public init?(sqlite value: SQLiteValue) {
        switch value {
        case .text(let s): self = s
        case .int(let i): self = String(i)
        case .double(let d): self = String(d)
        case .blob(let b): self = String(decoding: b, as: UTF8.self)
        case .null: return nil
        }
    }
    public init?(postgresText text: String) { self = text }
}

extension Int64: SQLColumn {
    public init?(sqlite value: SQLiteValue) {
        switch value {
        case .int(let i): self = i
        case .double(let d): self = Int64(d)
        case .text(let s): guard let i = Int64(s) else { return nil }; self = i
        default: return nil
        }
    }
    public init?(postgresText text: String) {
        if let i = Int64(text) { self = i } else if let d = Double(text) { self = Int64(d) } else { return nil }
    }
}

extension Int: SQLColumn {
    public init?(sqlite value: SQLiteValue) { guard let i = Int64(sqlite: value) else { return nil }; self = Int(i) }
    public init?(postgresText text: String) { guard let i = Int64(postgresText: text) else { return nil }; self = Int(i) }
}

extension Double: SQLColumn {
    public init?(sqlite value: SQLiteValue) {
        switch value {
        case .int(let i): self = Double(i)
        case .double(let d): self = d
        default: return nil
        }
    }
    public init?(postgresText text: String) { guard let d = Double(text) else { return nil }; self = d }
}

extension Bool: SQLColumn {
    public init?(sqlite value: SQLiteValue) { guard let i = Int64(sqlite: value) else { return nil }; self = i != 0 }
    public init?(postgresText text: String) {
        switch text {
        case "t", "true": self = true
        case "f", "false": self = false
        default: guard let i = Int64(text) else { return nil }; self = i != 0
        }
    }
}

extension Array: SQLColumn where Element == UInt8 {
    public init?(sqlite value: SQLiteValue) {
        switch value {
        case .blob(let b): self = b
        case .text(let s): self = Array(s.utf8)
        default: return nil
        }
    }
    /// `bytea` in its hex output format (`\x0a1b…`).
    public init?(postgresText text: String) {
        let u = Array(text.utf8)
        guard u.count >= 2, u[0] == UInt8(ascii: "\\"), u[1] == UInt8(ascii: "x"), u.count % 2 == 0 else { return nil }
        func nibble(_ c: UInt8) -> UInt8? {
            switch c {
            case 0x30...0x39: return c - 0x30
            case 0x61...0x66: return c - 0x61 + 10
            case 0x41...0x46: return c - 0x41 + 10
            default: return nil
            }
        }
        var out: [UInt8] = []
        out.reserveCapacity((u.count - 2) / 2)
        var i = 2
        while i < u.count {
            guard let hi = nibble(u[i]), let lo = nibble(u[i + 1]) else { return nil }
            out.append(hi << 4 | lo)
            i += 2
        }
        self = out
    }
}

/// One row of a result, its columns by name.
public struct SQLRow {
    let columns: [String]
    let storage: Storage

    enum Storage {
        case sqlite([SQLiteValue])
        case postgres([String?])
    }

    private func index(_ column: String) -> Int {
        guard let i = columns.firstIndex(of: column) else {
            preconditionFailure("the store read a column that its query does not select: \(column)")
        }
        return i
    }

    /// The column's value, nil for NULL.
    public subscript<T: SQLColumn>(_ column: String) -> T? {
        let i = index(column)
        switch storage {
        case .sqlite(let values):
            if case .null = values[i] { return nil }
            guard let v = T(sqlite: values[i]) else { preconditionFailure("column \(column) does not hold a \(T.self)") }
            return v
        case .postgres(let values):
            guard let text = values[i] else { return nil }
            guard let v = T(postgresText: text) else { preconditionFailure("column \(column) does not hold a \(T.self)") }
            return v
        }
    }

    /// The column's value, which the schema says is never NULL.
    public subscript<T: SQLColumn>(_ column: String) -> T {
        guard let v: T = self[column] else { preconditionFailure("column \(column) is NULL where the store needs a \(T.self)") }
        return v
    }

    /// The value as it would be bound again (to copy a row's column into another statement).
    public func value(_ column: String) -> SQLValue {
        let i = index(column)
        switch storage {
        case .sqlite(let values):
            switch values[i] {
            case .null: return .null
            case .int(let v): return .int(v)
            case .double(let v): return .double(v)
            case .text(let v): return .text(v)
            case .blob(let v): return .blob(v)
            }
        case .postgres(let values):
            return values[i].map { .text($0) } ?? .null
        }
    }
}

/// A connection lent for one read or one write (inside the write's transaction), on one engine.
public protocol SQLSession {
    var dialect: SQLDialect { get }
    /// Runs a statement; returns the rows it changed.
    @discardableResult func execute(_ sql: String, _ arguments: [SQLValue]) throws -> Int
    func fetchAll(_ sql: String, _ arguments: [SQLValue]) throws -> [SQLRow]
    /// Inserts log lines (the bulk write of the log path), each engine its fastest way.
    func insertLogLines(attemptID: String, _ rows: [(seq: Int64, line: NewLogLine)]) throws
    /// Tells the other replicas, once this write commits (and only if it does). Nothing to do with one process.
    func signal(_ signal: ClusterSignal) throws
}

/// What one replica tells the others through the database (PostgreSQL `LISTEN`/`NOTIFY`).
public enum ClusterSignal: Sendable, Equatable {
    /// An attempt became available: nudge this replica's workers.
    case workAvailable
    /// An operator cancelled this attempt: its worker may be connected to any replica.
    case cancel(attemptID: String)
    /// Log lines of this attempt were stored: viewers on other replicas read them from the database.
    case logs(attemptID: String)
    /// This attempt (or one of its steps) changed: viewers, lists and webhook waiters elsewhere learn of it.
    case attemptChanged(attemptID: String)
}

extension SQLSession {
    @discardableResult func execute(_ sql: String, _ arguments: [any SQLBindable] = []) throws -> Int {
        try execute(sql, arguments.map(\.sqlValue))
    }

    func fetchAll(_ sql: String, _ arguments: [any SQLBindable] = []) throws -> [SQLRow] {
        try fetchAll(sql, arguments.map(\.sqlValue))
    }

    func fetchOne(_ sql: String, _ arguments: [any SQLBindable] = []) throws -> SQLRow? {
        try fetchAll(sql, arguments.map(\.sqlValue)).first
    }

    /// The first column of the first row (nil: no row, or NULL).
    func value<T: SQLColumn>(_ sql: String, _ arguments: [any SQLBindable] = []) throws -> T? {
        guard let row = try fetchOne(sql, arguments) else { return nil }
        return row[row.columns[0]]
    }

    /// The first column of every row (NULLs left out).
    func values<T: SQLColumn>(_ sql: String, _ arguments: [any SQLBindable] = []) throws -> [T] {
        try fetchAll(sql, arguments).compactMap { $0[$0.columns[0]] }
    }
}

/// How a write is isolated from concurrent ones on an engine with several writers (SQLite has one writer, so
/// every write there is serial whatever this says).
public enum WriteIsolation: Sendable {
    /// As if the writes ran one after another: the default, the guarantee the store's rules were written for.
    case serializable
    /// The write locks the rows its rules depend on (`FOR UPDATE`: an attempt's events and log lines lock the
    /// attempt's row, a claim the rows it takes and a capped workflow's row), so it is correct at `READ COMMITTED`:
    /// writes of different attempts never fail each other, and those of one attempt take turns. The worker's hot
    /// path; at `SERIALIZABLE` PostgreSQL's predicate locks made unrelated attempts fail each other's commits.
    case lockedRows
}

extension StoreDatabase {
    func write<T: Sendable>(_ body: @escaping @Sendable (any SQLSession) throws -> T) async throws -> T {
        try await write(isolation: .serializable, body, ordered: nil)
    }

    func write<T: Sendable>(isolation: WriteIsolation, _ body: @escaping @Sendable (any SQLSession) throws -> T) async throws -> T {
        try await write(isolation: isolation, body, ordered: nil)
    }
}

/// The engine under a store: reads, and writes that each run in a transaction of their own (SQLite: a savepoint
/// inside a group commit) and are acknowledged only once committed.
public protocol StoreDatabase: Sendable {
    var dialect: SQLDialect { get }
    /// A read on the calling thread (short reads of the worker's path and the socket's upgrade checks).
    func readHere<T>(_ body: (any SQLSession) throws -> T) throws -> T
    /// A read that does not hold a thread of the cooperative pool while it waits for a connection.
    func read<T: Sendable>(_ body: @escaping @Sendable (any SQLSession) throws -> T) async throws -> T
    /// A write in a transaction of its own, returned once committed. `ordered`, when given, is called with its value as
    /// soon as every write started after that call is sure to see this one: SQLite, once the body has run in the
    /// group's open transaction, before its commit (the one writer runs later writes after it), so that what the caller
    /// starts overlaps the commit's fsync; PostgreSQL, once committed (other connections see nothing sooner). After
    /// `ordered` the commit can still fail (disk full), so it may only start what is harmless then; it must not block.
    /// On SQLite a read made from `ordered` does not see the write yet.
    func write<T: Sendable>(isolation: WriteIsolation, _ body: @escaping @Sendable (any SQLSession) throws -> T,
                            ordered: (@Sendable (T) -> Void)?) async throws -> T
    /// Transactions committed and the writes they carried (their ratio is the batching).
    var commits: (transactions: Int, writes: Int) { get }
    /// Sends `signal` to the other replicas now.
    func publish(_ signal: ClusterSignal) async throws
    /// Calls `handler` with each signal another replica sends (and once after a lost listening connection comes back,
    /// with `.workAvailable`: what was sent meanwhile is not known). Nothing ever comes with one process.
    func subscribe(_ handler: @escaping @Sendable (ClusterSignal) -> Void)
}

// The first column of the first row, typed (nil: no row, or NULL); and of every row.
extension SQLSession {
    func string(_ sql: String, _ arguments: [any SQLBindable] = []) throws -> String? { try value(sql, arguments) }
    func int(_ sql: String, _ arguments: [any SQLBindable] = []) throws -> Int? { try value(sql, arguments) }
    func int64(_ sql: String, _ arguments: [any SQLBindable] = []) throws -> Int64? { try value(sql, arguments) }
    func bool(_ sql: String, _ arguments: [any SQLBindable] = []) throws -> Bool? { try value(sql, arguments) }
    func bytes(_ sql: String, _ arguments: [any SQLBindable] = []) throws -> [UInt8]? { try value(sql, arguments) }
    func strings(_ sql: String, _ arguments: [any SQLBindable] = []) throws -> [String] { try values(sql, arguments) }
}
