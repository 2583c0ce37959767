import Channels
import Foundation
import Synchronization
import Postgres

/// PostgreSQL under the store, for several Lightning replicas on one database (issue 12).
///
/// libpq's calls block, so connections are never used on the cooperative pool: an async read or write is handed
/// to a thread of this class's own (started on demand, ended after a quiet second), and `readHere` borrows a
/// connection on the calling thread, as the SQLite store's short reads do. At most `maxConnections` are open.
///
/// Every write is one transaction at `SERIALIZABLE` (the rules were written for SQLite's single writer, and
/// serializable transactions give them the same guarantee with several writers on several replicas), or, for the
/// worker's hot path, at `READ COMMITTED` with the rows it depends on locked (`WriteIsolation.lockedRows`); either is
/// run again (up to `maxAttempts` times) when PostgreSQL reports a serialization failure or a deadlock. A commit whose outcome is
/// unknown (the connection was lost during it) is never run again: it is reported as unavailable.
public final class PostgresDatabase: StoreDatabase, @unchecked Sendable {
    public var dialect: SQLDialect { .postgres }
    private let conninfo: String
    private let maxConnections: Int
    private let maxAttempts = 30
    private let condition = NSCondition()
    private var idle: [PostgresConnection] = []
    private var open = 0
    private var jobs: [@Sendable () -> Void] = []
    private var threads = 0
    private var waitingThreads = 0
    private var counts = (transactions: 0, writes: 0)
    /// When a new connection last failed (nil: the last one succeeded).
    private var lastConnectFailure: ContinuousClock.Instant?
    /// SQL with `?` placeholders, as PostgreSQL's `$n`.
    private var translated: [String: String] = [:]

    /// Connects (once, to check the address and the credentials) and runs pending migrations.
    public init(url: String, maxConnections: Int = 8) throws {
        conninfo = url
        self.maxConnections = max(2, maxConnections)
        let first = try Self.connect(url)
        try Migrations.migratePostgres(first)
        idle.append(first)
        open = 1
    }

    private static func connect(_ conninfo: String, timeoutSeconds: Int = 10) throws -> PostgresConnection {
        do {
            let c = try PostgresConnection(conninfo, timeoutSeconds: timeoutSeconds)
            // Times are integers (µs) and text is UTF-8 whatever the server's defaults.
            try c.execute("SET client_encoding = 'UTF8'")
            // A replica that stops in the middle of a transaction (frozen, cut off) must not hold its locks, and
            // with them every other replica's writes, for long; no statement of Lightning's runs for minutes.
            try c.execute("SET idle_in_transaction_session_timeout = '30s'")
            try c.execute("SET statement_timeout = '120s'")
            // Notices (\"already exists, skipping\") would go to standard error through libpq.
            try c.execute("SET client_min_messages = warning")
            return c
        } catch let e as PostgresError {
            throw StoreError.unavailable("PostgreSQL: \(e.message)")
        }
    }

    public var commits: (transactions: Int, writes: Int) { condition.withLock { (counts.transactions, counts.writes) } }

    // MARK: The cluster bus

    /// `LISTEN`/`NOTIFY` channel of every replica on this database.
    static let channel = "lightning_cluster"
    /// This process's mark on what it sends, so that it does not act on its own signals.
    let origin = UUID().uuidString.lowercased().prefix(12)

    func payload(_ signal: ClusterSignal) -> String {
        switch signal {
        case .workAvailable: "\(origin) work"
        case .cancel(let id): "\(origin) cancel \(id)"
        case .logs(let id): "\(origin) logs \(id)"
        case .attemptChanged(let id): "\(origin) changed \(id)"
        }
    }

    static func decode(_ payload: String) -> (origin: Substring, signal: ClusterSignal)? {
        let parts = payload.split(separator: " ", maxSplits: 2)
        guard parts.count >= 2 else { return nil }
        switch parts[1] {
        case "work": return (parts[0], .workAvailable)
        case "cancel" where parts.count == 3: return (parts[0], .cancel(attemptID: String(parts[2])))
        case "logs" where parts.count == 3: return (parts[0], .logs(attemptID: String(parts[2])))
        case "changed" where parts.count == 3: return (parts[0], .attemptChanged(attemptID: String(parts[2])))
        default: return nil
        }
    }

    public func publish(_ signal: ClusterSignal) async throws {
        publishLater([payload(signal)])
    }

    /// Signals waiting to be sent, and whether a job is sending them.
    private var outgoing: [String] = []
    private var sending = false

    /// Sends `lines` soon, together with whatever else is waiting: one `NOTIFY` carries many (a line each), so a
    /// busy replica sends a few a millisecond, not one per write. A signal that cannot be sent (the server is gone)
    /// is dropped: they are hints (workers also poll, viewers catch up from the database).
    func publishLater(_ lines: [String]) {
        guard !lines.isEmpty else { return }
        let start: Bool = condition.withLock {
            outgoing += lines
            defer { sending = true }
            return !sending
        }
        guard start else { return }
        submit { [self] in
            while true {
                let batch: [String] = condition.withLock {
                    let b = outgoing
                    outgoing = []
                    if b.isEmpty { sending = false }
                    return b
                }
                if batch.isEmpty { return }
                // PostgreSQL takes payloads under 8,000 bytes; identical lines go once.
                var payloads: [String] = []
                var current = ""
                var seen = Set<String>()
                for line in batch where seen.insert(line).inserted {
                    if !current.isEmpty && current.utf8.count + line.utf8.count + 1 > 7_000 {
                        payloads.append(current)
                        current = ""
                    }
                    current += current.isEmpty ? line : "\n" + line
                }
                if !current.isEmpty { payloads.append(current) }
                do {
                    try withLiveConnection { c in for p in payloads { try c.notify(Self.channel, payload: p) } }
                } catch {
                    // Dropped: see above.
                }
            }
        }
    }

    /// A thread of its own with a connection of its own, listening for as long as this database object lives; a lost
    /// connection is made again (after a second), and the handler hears `.workAvailable` since signals may have been
    /// missed meanwhile.
    public func subscribe(_ handler: @escaping @Sendable (ClusterSignal) -> Void) {
        let conninfo = conninfo, origin = origin
        let thread = Thread { [weak self] in
            nameCurrentThread("lightning-pg-bus")
            var connection: PostgresConnection? = nil
            var wasLost = false
            var lastHeard = ContinuousClock.now
            while self != nil {
                if connection == nil {
                    do {
                        let c = try PostgresConnection(conninfo)
                        try c.listen(Self.channel)
                        connection = c
                        if wasLost { handler(.workAvailable) }
                    } catch {
                        wasLost = true
                        Thread.sleep(forTimeInterval: 1)
                        continue
                    }
                }
                do {
                    let heard = try connection!.notifications(timeout: .seconds(1))
                    for n in heard {
                        for line in n.payload.split(separator: "\n") {
                            guard let (from, signal) = Self.decode(String(line)), from != origin else { continue }
                            handler(signal)
                        }
                    }
                    // A quiet connection is asked something now and then: one whose network path died silently
                    // would otherwise wait for notifications that never come.
                    if !heard.isEmpty {
                        lastHeard = .now
                    } else if ContinuousClock.now - lastHeard > .seconds(10) {
                        try connection!.query("SELECT 1")
                        lastHeard = .now
                    }
                } catch {
                    connection = nil
                    wasLost = true
                }
            }
        }
        thread.stackSize = 1 << 20
        thread.start()
    }

    // MARK: Connections

    private func checkout() throws -> PostgresConnection {
        condition.lock()
        // Every connection busy: wait for one, but not forever (a server that stopped answering holds them all).
        let deadline = Date(timeIntervalSinceNow: 30)
        while idle.isEmpty && open >= maxConnections {
            if !condition.wait(until: deadline) && idle.isEmpty && open >= maxConnections {
                condition.unlock()
                throw StoreError.unavailable("every connection to PostgreSQL is busy and none came free in 30 s: nothing was stored; try again")
            }
        }
        if let c = idle.popLast() {
            condition.unlock()
            return c
        }
        // The server could not be reached a moment ago: say so at once rather than wait for another connect to time
        // out. Some reads run on the socket server's thread (the upgrade's token checks), which must not be held.
        if let failed = lastConnectFailure, ContinuousClock.now - failed < .seconds(1) {
            condition.unlock()
            throw StoreError.unavailable("the PostgreSQL server cannot be reached: nothing was stored; try again")
        }
        open += 1
        condition.unlock()
        do {
            let c = try Self.connect(conninfo, timeoutSeconds: 3)
            condition.withLock { lastConnectFailure = nil }
            return c
        } catch {
            condition.withLock {
                open -= 1
                lastConnectFailure = .now
            }
            condition.broadcast()
            throw error
        }
    }

    private func checkin(_ c: PostgresConnection) {
        condition.lock()
        var stale: [PostgresConnection] = []
        if c.isConnected && c.isIdle {
            idle.append(c)
        } else if c.isConnected {
            // Left inside a transaction or a pipeline by an error on the way out: not lent again.
            open -= 1
            stale = [c]
        } else {
            // Lost: the server most likely restarted or went, and the idle ones went with it. They are closed now
            // rather than each failing a request in turn.
            open -= 1 + idle.count
            stale = idle
            idle = []
        }
        condition.unlock()
        condition.broadcast()
        for s in stale { s.close() }
    }

    /// `withConnection`, once more on a new connection when the one it had turned out lost before anything could
    /// have been committed (a restarted server: every pooled connection is gone at once).
    private func withLiveConnection<T>(_ body: (PostgresConnection) throws -> T) throws -> T {
        do {
            return try withConnection(body)
        } catch let e as PostgresError where Self.isConnectionLoss(e) {
            return try withConnection(body)
        }
    }

    /// The connection is gone (no SQLSTATE: the client saw it; class 08 or 57P: the server said so).
    static func isConnectionLoss(_ e: PostgresError) -> Bool {
        guard let state = e.sqlState else { return true }
        return state.hasPrefix("08") || state.hasPrefix("57P")
    }

    private func withConnection<T>(_ body: (PostgresConnection) throws -> T) throws -> T {
        let c = try checkout()
        defer { checkin(c) }
        return try body(c)
    }

    /// Runs `job` on one of this class's threads.
    private func submit(_ job: @escaping @Sendable () -> Void) {
        condition.lock()
        jobs.append(job)
        // A thread more when the jobs waiting outnumber the threads waiting for jobs.
        let start = jobs.count > waitingThreads && threads < maxConnections
        if start { threads += 1 }
        condition.unlock()
        condition.broadcast()
        guard start else { return }
        let thread = Thread { [self] in
            nameCurrentThread("lightning-pg")
            while true {
                condition.lock()
                waitingThreads += 1
                let until = Date(timeIntervalSinceNow: 1)
                while jobs.isEmpty && condition.wait(until: until) {}
                waitingThreads -= 1
                if jobs.isEmpty {
                    threads -= 1
                    condition.unlock()
                    return
                }
                let job = jobs.removeFirst()
                condition.unlock()
                job()
            }
        }
        thread.stackSize = 1 << 20
        thread.start()
    }

    private func run<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { (c: CheckedContinuation<T, any Error>) in
            submit { c.resume(with: Result { try body() }) }
        }
    }

    // MARK: StoreDatabase

    public func readHere<T>(_ body: (any SQLSession) throws -> T) throws -> T {
        try translateErrors {
            try withLiveConnection { c in
                do {
                    return try body(PostgresSession(connection: c, database: self))
                } catch let e as PostgresError where e.sqlState == PostgresError.cachedPlanChanged {
                    return try body(PostgresSession(connection: c, database: self))  // prepared afresh
                }
            }
        }
    }

    public func read<T: Sendable>(_ body: @escaping @Sendable (any SQLSession) throws -> T) async throws -> T {
        try await run { [self] in try readHere(body) }
    }

    /// `ordered` runs after the commit: another connection sees nothing of a transaction before.
    public func write<T: Sendable>(isolation: WriteIsolation, _ body: @escaping @Sendable (any SQLSession) throws -> T,
                                   ordered: (@Sendable (T) -> Void)?) async throws -> T
    {
        try await run { [self] in
            let value = try translateErrors { try withLiveConnection { c in try transaction(c, isolation, body) } }
            ordered?(value)
            return value
        }
    }

    private func transaction<T>(_ c: PostgresConnection, _ isolation: WriteIsolation, _ body: (any SQLSession) throws -> T) throws -> T {
        var attempt = 0
        while true {
            attempt += 1
            let signals = SignalList()
            // Sent with the body's first statement, in one round trip.
            c.beginWithFirstStatement(isolation == .serializable ? "BEGIN ISOLATION LEVEL SERIALIZABLE" : "BEGIN ISOLATION LEVEL READ COMMITTED")
            let value: T
            do {
                value = try body(PostgresSession(connection: c, database: self, signals: signals))
            } catch {
                try? c.rollback()
                if Self.isRetryable(error) && attempt < maxAttempts { backOff(attempt); continue }
                throw error
            }
            do {
                try c.commit()
            } catch {
                // A serialization failure at commit rolled the transaction back: run it again. A lost connection
                // leaves the outcome unknown: reported, never run twice (not as a PostgresError, which the caller
                // would take for a loss before the commit and run again).
                if c.isConnected && Self.isRetryable(error) && attempt < maxAttempts { backOff(attempt); continue }
                if !c.isConnected {
                    throw StoreError.unavailable("the connection to PostgreSQL was lost while committing: whether this was stored is not known; send it again (every worker event is idempotent)")
                }
                throw error
            }
            condition.withLock {
                counts.transactions += 1
                counts.writes += 1
            }
            publishLater(signals.lines)
            return value
        }
    }

    private func backOff(_ attempt: Int) {
        // Up to a few milliseconds, randomised so that two transactions that collided do not collide again.
        usleep(UInt32.random(in: 0...UInt32(min(attempt, 10) * 500)))
    }

    /// Serialization failure, deadlock, or a prepared statement whose table changed (prepared again next time).
    static func isRetryable(_ error: any Error) -> Bool {
        guard let e = error as? PostgresError, let state = e.sqlState else { return false }
        return state == "40001" || state == "40P01"
            || (state == PostgresError.cachedPlanChanged && e.message.contains("cached plan must not change result type"))
    }

    /// A server that cannot be reached becomes `StoreError.unavailable` (callers answer 503; nothing was stored).
    private func translateErrors<T>(_ body: () throws -> T) throws -> T {
        do {
            return try body()
        } catch let e as PostgresError where Self.isConnectionLoss(e) {
            throw StoreError.unavailable("the PostgreSQL server cannot be reached (\(e.message)): nothing was stored; try again")
        } catch let e as PostgresError where e.sqlState == "53100" {
            throw StoreError.unavailable("PostgreSQL's disk is full: nothing was stored; free space, then try again")
        } catch let e as PostgresError where e.sqlState?.hasPrefix("22") == true {
            // A value PostgreSQL cannot take (a NUL character in text, a number out of range): the request's fault,
            // refused as such; nothing of it was stored.
            throw StoreError.invalid("PostgreSQL cannot store a value of this request (\(e.message)); nothing was stored")
        }
    }

    /// `sql` with its `?` placeholders numbered (`$1`, `$2`, …); quoted text and identifiers are left alone.
    func numbered(_ sql: String) -> String {
        if let done = condition.withLock({ translated[sql] }) { return done }
        var out = ""
        out.reserveCapacity(sql.utf8.count + 16)
        var n = 0
        var quote: Character? = nil
        for ch in sql {
            if let q = quote {
                if ch == q { quote = nil }
                out.append(ch)
            } else if ch == "'" || ch == "\"" {
                quote = ch
                out.append(ch)
            } else if ch == "?" {
                n += 1
                out += "$\(n)"
            } else {
                out.append(ch)
            }
        }
        condition.withLock {
            // Statements built from a varying number of parts are not kept (the cache stays bounded).
            if translated.count < 4096 { translated[sql] = out }
        }
        return out
    }
}

struct PostgresSession: SQLSession {
    let connection: PostgresConnection
    let database: PostgresDatabase
    /// Signals of the write under way, sent once it has committed (nil: a read, which sends none).
    var signals: SignalList? = nil
    var dialect: SQLDialect { .postgres }

    private static func parameters(_ arguments: [SQLValue]) -> [PostgresValue] {
        arguments.map {
            switch $0 {
            case .null: .null
            case .int(let v): .int(v)
            case .double(let v): .double(v)
            case .text(let v): .text(v)
            case .blob(let v): .bytes(v)
            }
        }
    }

    // Prepared per connection on first use: most of what the server spent on a short statement was parsing and
    // planning it again.
    @discardableResult func execute(_ sql: String, _ arguments: [SQLValue]) throws -> Int {
        try connection.queryPrepared(database.numbered(sql), Self.parameters(arguments)).affected
    }

    func fetchAll(_ sql: String, _ arguments: [SQLValue]) throws -> [SQLRow] {
        let rows = try connection.queryPrepared(database.numbered(sql), Self.parameters(arguments))
        return rows.values.map { SQLRow(columns: rows.columns, storage: .postgres($0)) }
    }

    /// `NOTIFY`, sent by PostgreSQL at commit (identical ones in one transaction go once).
    /// Kept until the write commits, then sent with others (`PostgresDatabase.publishLater`): a `NOTIFY` inside
    /// the transaction would hold PostgreSQL's notification lock through the commit's WAL flush, so every notifying
    /// transaction of every replica would commit one at a time.
    func signal(_ signal: ClusterSignal) throws {
        signals?.add(database.payload(signal))
    }

    /// Multi-row INSERTs of up to 1,000 lines each (8 parameters a line, well under PostgreSQL's 65,535).
    func insertLogLines(attemptID: String, _ rows: [(seq: Int64, line: NewLogLine)]) throws {
        var start = 0
        while start < rows.count {
            let chunk = rows[start..<min(start + 1000, rows.count)]
            var sql = "INSERT INTO log_lines (attempt_id, seq, step_id, level, source, message, timestamp, worker_seq) VALUES "
            var parameters: [PostgresValue] = []
            parameters.reserveCapacity(chunk.count * 8)
            for (i, row) in chunk.enumerated() {
                let b = i * 8
                sql += (i == 0 ? "" : ",") + "($\(b + 1),$\(b + 2),$\(b + 3),$\(b + 4),$\(b + 5),$\(b + 6),$\(b + 7),$\(b + 8))"
                let line = row.line
                parameters += [.text(attemptID), .int(row.seq), line.stepID.map { .text($0) } ?? .null, .text(line.level),
                               .text(line.source), .text(line.message), .int(line.timestamp), line.workerSeq.map { .int($0) } ?? .null]
            }
            try connection.query(sql, parameters)
            start += chunk.count
        }
    }
}

/// The signals of one write, gathered until it commits.
final class SignalList: Sendable {
    private let items = Mutex<[String]>([])
    func add(_ line: String) { items.withLock { $0.append(line) } }
    var lines: [String] { items.withLock { $0 } }
}
