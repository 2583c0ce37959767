import CLibPQ
import Foundation

/// An error from PostgreSQL or from libpq, with the server's SQLSTATE when it sent one (`23505` for a unique
/// violation, `40001` for a serialization failure, ...). Never carries the connection string: it may hold a password.
public struct PostgresError: Error, Equatable, CustomStringConvertible {
    public var sqlState: String?
    public var message: String
    public init(sqlState: String? = nil, message: String) {
        self.sqlState = sqlState
        self.message = message
    }
    public var description: String { sqlState.map { "PostgreSQL error \($0): \(message)" } ?? "PostgreSQL: \(message)" }

    public static let uniqueViolation = "23505"
    public static let serializationFailure = "40001"
    /// What PostgreSQL itself says of text it cannot store (a NUL character, invalid UTF-8).
    public static let characterNotInRepertoire = "22021"
    /// "cached plan must not change result type": a prepared statement's table changed since it was prepared.
    public static let cachedPlanChanged = "0A000"
}

/// A parameter of a query (`$1`, `$2`, ...). Sent as text, but bytes in binary (no escaping of a large body).
public enum PostgresValue: Sendable, Equatable {
    case text(String)
    case int(Int64)
    case double(Double)
    case bool(Bool)
    case bytes([UInt8])
    case null
}

extension PostgresValue: ExpressibleByStringLiteral, ExpressibleByIntegerLiteral, ExpressibleByNilLiteral,
    ExpressibleByBooleanLiteral
{
    public init(stringLiteral value: String) { self = .text(value) }
    public init(integerLiteral value: Int64) { self = .int(value) }
    public init(nilLiteral: ()) { self = .null }
    public init(booleanLiteral value: Bool) { self = .bool(value) }
}

/// The rows of a query, read in text format and copied out of libpq's result (which is freed at once).
public struct PostgresRows: Sendable {
    public let columns: [String]
    /// Values by row, then column; nil is SQL NULL.
    public let values: [[String?]]
    /// Rows an INSERT, UPDATE or DELETE touched (0 for other commands).
    public let affected: Int

    public var count: Int { values.count }
    public var isEmpty: Bool { values.isEmpty }

    public subscript(row: Int) -> PostgresRow { PostgresRow(columns: columns, values: values[row]) }
    public var first: PostgresRow? { values.isEmpty ? nil : self[0] }
    public var all: [PostgresRow] { values.map { PostgresRow(columns: columns, values: $0) } }
}

/// One row; columns by name. A getter returns nil for NULL, and throws when the text is not of its type.
public struct PostgresRow: Sendable {
    let columns: [String]
    let values: [String?]

    private func raw(_ column: String) throws -> String? {
        guard let i = columns.firstIndex(of: column) else {
            throw PostgresError(message: "no column \(column) in the result (\(columns.joined(separator: ", ")))")
        }
        return values[i]
    }

    public func string(_ column: String) throws -> String? { try raw(column) }

    public func int(_ column: String) throws -> Int64? {
        guard let text = try raw(column) else { return nil }
        guard let v = Int64(text) else { throw PostgresError(message: "column \(column) is not an integer: \(text)") }
        return v
    }

    public func double(_ column: String) throws -> Double? {
        guard let text = try raw(column) else { return nil }
        guard let v = Double(text) else { throw PostgresError(message: "column \(column) is not a number: \(text)") }
        return v
    }

    public func bool(_ column: String) throws -> Bool? {
        switch try raw(column) {
        case nil: return nil
        case "t": return true
        case "f": return false
        case let text?: throw PostgresError(message: "column \(column) is not a boolean: \(text)")
        }
    }

    /// A `bytea` column (text format: `\x` and hex digits).
    public func bytes(_ column: String) throws -> [UInt8]? {
        guard let text = try raw(column) else { return nil }
        let utf8 = Array(text.utf8)
        guard utf8.count >= 2, utf8[0] == UInt8(ascii: "\\"), utf8[1] == UInt8(ascii: "x"), utf8.count % 2 == 0 else {
            throw PostgresError(message: "column \(column) is not bytea in hex form")
        }
        func nibble(_ c: UInt8) throws -> UInt8 {
            switch c {
            case 0x30...0x39: return c - 0x30
            case 0x61...0x66: return c - 0x61 + 10
            case 0x41...0x46: return c - 0x41 + 10
            default: throw PostgresError(message: "column \(column) has a bad hex digit")
            }
        }
        var out: [UInt8] = []
        out.reserveCapacity((utf8.count - 2) / 2)
        var i = 2
        while i < utf8.count {
            out.append(try nibble(utf8[i]) << 4 | nibble(utf8[i + 1]))
            i += 2
        }
        return out
    }
}

/// A notification from `LISTEN` (PostgreSQL's `NOTIFY channel, 'payload'`).
public struct PostgresNotification: Sendable, Equatable {
    public var channel: String
    public var payload: String
    /// The backend that sent it (its `pg_backend_pid()`).
    public var senderPID: Int32
}

/// One connection to PostgreSQL through libpq. libpq's calls block, so a connection is owned by one thread at a
/// time and never used from the cooperative pool: the way the SQLite handles are (a writer thread of its own, or
/// a pool of connections each lent to one caller). Not `Sendable` for that reason.
public final class PostgresConnection {
    private var conn: OpaquePointer?

    /// Connects with a libpq connection string: a URL (`postgresql://user@host:5432/db`, `?host=/socket/dir`) or
    /// `key=value` pairs. Errors name what failed, never the string itself (it may hold a password).
    public init(_ conninfo: String, timeoutSeconds: Int = 10) throws {
        var withTimeout = conninfo
        // A connect that hangs, and (over TCP) a path that dies silently, end in errors within seconds rather than
        // the system's TCP timeouts (about 15 minutes): keepalives, and a bound on unacknowledged writes.
        for (key, value) in [("connect_timeout", "\(timeoutSeconds)"), ("keepalives_idle", "10"), ("keepalives_interval", "5"),
                             ("keepalives_count", "3"), ("tcp_user_timeout", "30000")] where !conninfo.contains(key) {
            let url = withTimeout.contains("://")
            withTimeout += url ? (withTimeout.contains("?") ? "&" : "?") + "\(key)=\(value)" : " \(key)=\(value)"
        }
        guard let c = PQconnectdb(withTimeout) else { throw PostgresError(message: "libpq could not allocate a connection") }
        conn = c
        guard PQstatus(c) == CONNECTION_OK else {
            // libpq may quote the connection string, or a part of it, in its message (a malformed URL): never the
            // password.
            let message = Self.withoutSecrets(Self.errorText(PQerrorMessage(c)), conninfo: conninfo)
            PQfinish(c)
            conn = nil
            throw PostgresError(message: "could not connect: \(message)")
        }
        // Notices (and the server's goodbye when it shuts down under an idle connection) would be printed to
        // standard error by libpq's default processor; what matters comes back as results and errors.
        PQsetNoticeProcessor(c, { _, _ in }, nil)
    }

    deinit { if let conn { PQfinish(conn) } }

    /// Closes the connection (a later call throws).
    public func close() {
        if let conn { PQfinish(conn) }
        conn = nil
    }

    /// The server process serving this connection.
    public var backendPID: Int32 { conn.map { PQbackendPID($0) } ?? 0 }

    /// Runs one statement with `$1`... parameters and returns its rows (none for commands).
    @discardableResult
    public func query(_ sql: String, _ parameters: [PostgresValue] = []) throws -> PostgresRows {
        try run(sql, parameters, prepared: nil)
    }

    /// Statements this connection has prepared, by their SQL, and their names.
    private var preparedNames: [String: String] = [:]
    /// At most this many statements are kept prepared per connection; past it, statements run unprepared.
    public var maxPrepared = 512

    /// `query`, with the statement prepared on this connection the first time it is seen and run by name after
    /// (the server parses and plans it once, not on every call). For SQL whose text does not vary with its values.
    @discardableResult
    public func queryPrepared(_ sql: String, _ parameters: [PostgresValue] = []) throws -> PostgresRows {
        let c = try live()
        if let name = preparedNames[sql] {
            do {
                return try run(sql, parameters, prepared: name)
            } catch let e as PostgresError where e.sqlState == PostgresError.cachedPlanChanged {
                // The table changed under the statement (a migration by another process): it is prepared afresh
                // next time. The error stands (inside a transaction, the transaction is aborted: run it again).
                preparedNames[sql] = nil
                throw e
            }
        }
        guard preparedNames.count < maxPrepared else { return try run(sql, parameters, prepared: nil) }
        preparedCount += 1
        let name = "s\(preparedCount)"
        _ = try Self.rows(PQprepare(c, name, sql, Int32(parameters.count), nil), connection: c)
        preparedNames[sql] = name
        return try run(sql, parameters, prepared: name)
    }

    /// Statements prepared so far (their names are never reused).
    private var preparedCount = 0

    private func run(_ sql: String, _ parameters: [PostgresValue], prepared name: String?) throws -> PostgresRows {
        let c = try live()
        // Every parameter's bytes in one buffer (text NUL-terminated, bytes binary with a length), then pointers
        // into it: no recursion or allocation per parameter however many there are.
        var buffer: [UInt8] = []
        var offsets: [Int?] = []
        var lengths: [Int32] = []
        var formats: [Int32] = []
        for p in parameters {
            func text(_ s: String) throws {
                guard !s.utf8.contains(0) else {
                    throw PostgresError(sqlState: PostgresError.characterNotInRepertoire, message: "a text parameter cannot hold a NUL byte")
                }
                offsets.append(buffer.count)
                buffer.append(contentsOf: s.utf8)
                buffer.append(0)
                lengths.append(0)
                formats.append(0)
            }
            switch p {
            case .null: offsets.append(nil); lengths.append(0); formats.append(0)
            case .text(let s): try text(s)
            case .int(let i): try text(String(i))
            case .double(let d): try text("\(d)")
            case .bool(let b): try text(b ? "t" : "f")
            case .bytes(let b):
                offsets.append(buffer.count)
                buffer.append(contentsOf: b)
                lengths.append(Int32(b.count))
                formats.append(1)
            }
        }
        if let begin = deferredBegin {
            deferredBegin = nil
            let sent: Bool = buffer.withUnsafeBufferPointer { b in
                let base = UnsafeRawPointer(b.baseAddress ?? UnsafePointer(bitPattern: 1)!)
                let pointers: [UnsafePointer<CChar>?] = offsets.map { $0.map { (base + $0).assumingMemoryBound(to: CChar.self) } }
                guard PQenterPipelineMode(c) == 1, PQsendQueryParams(c, begin, 0, nil, nil, nil, nil, 0) == 1 else { return false }
                if let name { return PQsendQueryPrepared(c, name, Int32(parameters.count), pointers, lengths, formats, 0) == 1 }
                return PQsendQueryParams(c, sql, Int32(parameters.count), nil, pointers, lengths, formats, 0) == 1
            }
            return try pipelineResults(sent: sent, connection: c)
        }
        let result: OpaquePointer? = buffer.withUnsafeBufferPointer { b in
            let base = UnsafeRawPointer(b.baseAddress ?? UnsafePointer(bitPattern: 1)!)
            let pointers: [UnsafePointer<CChar>?] = offsets.map { $0.map { (base + $0).assumingMemoryBound(to: CChar.self) } }
            if let name { return PQexecPrepared(c, name, Int32(parameters.count), pointers, lengths, formats, 0) }
            return PQexecParams(c, sql, Int32(parameters.count), nil, pointers, lengths, formats, 0)
        }
        return try Self.rows(result, connection: c)
    }

    // MARK: Transactions begun with their first statement

    /// A `BEGIN …` not sent yet: it goes with the next statement, in one round trip (libpq's pipeline mode).
    private var deferredBegin: String?

    /// Starts a transaction with `begin` (`BEGIN ISOLATION LEVEL …`) sent together with the transaction's first
    /// statement, saving a round trip per transaction. `commit()`/`rollback()` end it (and send nothing when no
    /// statement ran).
    public func beginWithFirstStatement(_ begin: String) {
        deferredBegin = begin
    }

    /// Ends a transaction begun by `beginWithFirstStatement`.
    public func commit() throws {
        if deferredBegin != nil { deferredBegin = nil; return }
        try execute("COMMIT")
    }

    public func rollback() throws {
        if deferredBegin != nil { deferredBegin = nil; return }
        try execute("ROLLBACK")
    }

    /// Reads a pipeline of `BEGIN` and one statement up to its sync point: the statement's rows, or the first error
    /// (`BEGIN`'s, if it failed: the statement was then not run).
    private func pipelineResults(sent: Bool, connection c: OpaquePointer) throws -> PostgresRows {
        var beginError: (any Error)?
        var outcome: Result<PostgresRows, any Error>?
        if sent && PQpipelineSync(c) == 1 {
            var query = 0  // 0: BEGIN, 1: the statement; a NULL result ends each
            var nulls = 0
            while true {
                guard let r = PQgetResult(c) else {
                    query += 1
                    nulls += 1
                    // More than one NULL in a row: the connection broke before the sync point came.
                    if nulls > 1 || PQstatus(c) != CONNECTION_OK { break }
                    continue
                }
                nulls = 0
                if PQresultStatus(r) == PGRES_PIPELINE_SYNC { PQclear(r); break }
                if PQresultStatus(r) == PGRES_PIPELINE_ABORTED { PQclear(r); continue }
                if query == 0 {
                    do { _ = try Self.rows(r, connection: c) } catch { beginError = error }
                } else if query == 1 {
                    outcome = Result { try Self.rows(r, connection: c) }
                } else {
                    PQclear(r)
                }
            }
        }
        _ = PQexitPipelineMode(c)
        if let beginError { throw beginError }
        guard let outcome else {
            throw PostgresError(message: "the pipeline of BEGIN and its first statement broke off: \(Self.errorText(PQerrorMessage(c)))")
        }
        return try outcome.get()
    }

    /// Runs statements without parameters (several, separated by `;`: a migration).
    public func execute(_ sql: String) throws {
        let c = try live()
        _ = try Self.rows(PQexec(c, sql), connection: c)
    }

    /// `body` inside BEGIN … COMMIT; any error rolls back and is thrown again.
    public func transaction<T>(_ body: (PostgresConnection) throws -> T) throws -> T {
        try execute("BEGIN")
        do {
            let value = try body(self)
            try execute("COMMIT")
            return value
        } catch {
            try? execute("ROLLBACK")
            throw error
        }
    }

    /// Starts listening on `channel` (an identifier: letters, digits and `_`).
    public func listen(_ channel: String) throws {
        guard !channel.isEmpty, channel.utf8.allSatisfy({ $0 == UInt8(ascii: "_") || ($0 >= 0x30 && $0 <= 0x39)
            || ($0 >= 0x41 && $0 <= 0x5A) || ($0 >= 0x61 && $0 <= 0x7A) }) else {
            throw PostgresError(message: "a channel name is letters, digits and _: \(channel)")
        }
        try execute("LISTEN \(channel)")
    }

    /// `NOTIFY channel, payload` (through `pg_notify`, so the payload needs no quoting). Sent at commit when inside
    /// a transaction.
    public func notify(_ channel: String, payload: String) throws {
        try query("SELECT pg_notify($1, $2)", [.text(channel), .text(payload)])
    }

    /// Notifications that arrived, waiting up to `timeout` for the first one (none: an empty list).
    public func notifications(timeout: Duration) throws -> [PostgresNotification] {
        let c = try live()
        var found = try drainNotifications(c)
        if !found.isEmpty { return found }
        var pfd = pollfd(fd: PQsocket(c), events: Int16(POLLIN), revents: 0)
        let deadline = ContinuousClock.now + timeout
        while found.isEmpty {
            let left = deadline - ContinuousClock.now
            if left <= .zero { break }
            let ms = Int32(min(Int64(left.components.seconds) * 1000 + left.components.attoseconds / 1_000_000_000_000_000 + 1, 60_000))
            let ready = poll(&pfd, 1, ms)
            if ready < 0 && errno != EINTR { throw PostgresError(message: "poll: \(String(cString: strerror(errno)))") }
            if ready > 0 { found = try drainNotifications(c) }
        }
        return found
    }

    private func drainNotifications(_ c: OpaquePointer) throws -> [PostgresNotification] {
        guard PQconsumeInput(c) == 1 else { throw PostgresError(message: Self.errorText(PQerrorMessage(c))) }
        var out: [PostgresNotification] = []
        while let n = PQnotifies(c) {
            out.append(PostgresNotification(channel: String(cString: n.pointee.relname), payload: String(cString: n.pointee.extra),
                                            senderPID: n.pointee.be_pid))
            PQfreemem(n)
        }
        return out
    }

    /// The connection, or an error when it was closed or lost. Never reconnected behind the caller's back: a new
    /// session would have lost its LISTENs and any transaction under way, so whoever owns the connection makes a
    /// new one and knows to listen again.
    private func live() throws -> OpaquePointer {
        guard let conn else { throw PostgresError(message: "the connection is closed") }
        guard PQstatus(conn) == CONNECTION_OK else {
            throw PostgresError(message: "the connection was lost: \(Self.errorText(PQerrorMessage(conn)))")
        }
        return conn
    }

    /// Ready for the next user: not inside a transaction, not in pipeline mode.
    public var isIdle: Bool {
        guard let conn else { return false }
        return PQtransactionStatus(conn) == PQTRANS_IDLE && PQpipelineStatus(conn) == PQ_PIPELINE_OFF
    }

    /// True inside a transaction (begun, or failed and not yet rolled back).
    public var inTransaction: Bool { conn.map { PQtransactionStatus($0) != PQTRANS_IDLE } ?? false }

    /// False once the server went away (a query or a wait for notifications saw it).
    public var isConnected: Bool { conn.map { PQstatus($0) == CONNECTION_OK } ?? false }

    /// `text` with the connection string and any password in it replaced by `***`.
    static func withoutSecrets(_ text: String, conninfo: String) -> String {
        var out = text.replacingOccurrences(of: conninfo, with: "***")
        var secrets: [String] = []
        // postgresql://user:PASSWORD@host/…
        if let scheme = conninfo.range(of: "://") {
            let rest = conninfo[scheme.upperBound...]
            let authority = rest.prefix { $0 != "/" && $0 != "?" }
            if let at = authority.lastIndex(of: "@"), let colon = authority[..<at].firstIndex(of: ":") {
                secrets.append(String(authority[authority.index(after: colon)..<at]))
            }
        }
        // password=… (key=value, or in a URL's query)
        for match in conninfo.matches(of: /password=([^ &]*)/) { secrets.append(String(match.1)) }
        for secret in secrets where !secret.isEmpty {
            out = out.replacingOccurrences(of: secret, with: "***")
            if let decoded = secret.removingPercentEncoding, decoded != secret { out = out.replacingOccurrences(of: decoded, with: "***") }
        }
        return out
    }

    private static func errorText(_ text: UnsafePointer<CChar>?) -> String {
        guard let text else { return "unknown error" }
        return String(cString: text).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// Copies a result out and frees it; an error result becomes a `PostgresError` with its SQLSTATE.
    private static func rows(_ result: OpaquePointer?, connection c: OpaquePointer) throws -> PostgresRows {
        guard let result else { throw PostgresError(message: errorText(PQerrorMessage(c))) }
        defer { PQclear(result) }
        switch PQresultStatus(result) {
        case PGRES_COMMAND_OK, PGRES_EMPTY_QUERY:
            return PostgresRows(columns: [], values: [], affected: Int(String(cString: PQcmdTuples(result))) ?? 0)
        case PGRES_TUPLES_OK:
            let n = Int(PQntuples(result)), m = Int(PQnfields(result))
            let columns = (0..<m).map { String(cString: PQfname(result, Int32($0))) }
            var values: [[String?]] = []
            values.reserveCapacity(n)
            for r in 0..<n {
                values.append((0..<m).map { f in
                    PQgetisnull(result, Int32(r), Int32(f)) == 1 ? nil : String(cString: PQgetvalue(result, Int32(r), Int32(f)))
                })
            }
            // PQcmdTuples counts the rows of an INSERT/UPDATE/DELETE … RETURNING too (empty for a SELECT).
            return PostgresRows(columns: columns, values: values, affected: Int(String(cString: PQcmdTuples(result))) ?? 0)
        default:
            let state = PQresultErrorField(result, Int32(UInt8(ascii: "C"))).map { String(cString: $0) }
            let primary = PQresultErrorField(result, Int32(UInt8(ascii: "M"))).map { String(cString: $0) }
            throw PostgresError(sqlState: state, message: primary ?? errorText(PQresultErrorMessage(result)))
        }
    }
}
