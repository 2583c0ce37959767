import Channels
import Foundation
import GRDB
import GRDBSQLite

/// Group commit for every write: writes from all connections reach this one writer, which runs everything that
/// queued up while the last transaction was being committed in the next one (one fsync for many), each write in
/// a savepoint of its own so one refused write (a late event, a conflict) undoes only itself (a write alone in its
/// transaction needs none). A caller hears back only after the commit: nothing is acknowledged before it is on disk
/// (`synchronous=FULL` stays).
/// One attempt's events stay in order because its worker waits for each reply before the next.
///
/// The transactions run on a thread of the writer's own, through GRDB's synchronous write (which runs on the
/// calling thread when the database's writer is free): a write costs the caller one wake-up of this thread and
/// one resumption, where an actor and GRDB's async API cost four thread switches. The thread ends after a quiet
/// second and starts again with the next write.
final class GroupWriter: @unchecked Sendable {
    private let pool: DatabasePool
    private typealias Work = @Sendable (Database) throws -> any Sendable
    private typealias Ordered = @Sendable (any Sendable) -> Void
    private typealias Item = (work: Work, ordered: Ordered?, done: CheckedContinuation<any Sendable, any Error>)
    private let condition = NSCondition()
    private var pending: [Item] = []
    private var running = false
    /// The writer thread is waiting for work (and must be signalled).
    private var idle = false
    private var counts = (transactions: 0, writes: 0)
    /// How long the thread waits for more work before it ends.
    private let idleSeconds: Double = 1

    init(pool: DatabasePool) { self.pool = pool }

    /// Transactions committed, and the writes they carried (their ratio is the batching).
    var transactions: Int { condition.withLock { counts.transactions } }
    var writes: Int { condition.withLock { counts.writes } }
    /// Writes waiting for the next transaction.
    var queued: Int { condition.withLock { pending.count } }

    /// Runs `body` in the next group transaction and returns once that is committed. `ordered`, when given, is called
    /// on the writer thread with the value as soon as `body` has run in the open transaction, before the commit: every
    /// write queued from then on runs after it and sees it, so the caller can start what depends on it (a nudge)
    /// while the commit's fsync runs. The commit can still fail after `ordered` (disk full): `ordered` may only start
    /// what is harmless then. It must not block or wait for another write, and a read made from it (on another
    /// connection) does not see the write yet.
    func write<T: Sendable>(_ body: @escaping @Sendable (Database) throws -> T,
                            ordered: (@Sendable (T) -> Void)? = nil) async throws -> T {
        let value = try await withCheckedThrowingContinuation { (c: CheckedContinuation<any Sendable, any Error>) in
            condition.lock()
            let typed: Ordered? = ordered.map { f in { @Sendable value in f(value as! T) } }
            pending.append(({ db in try body(db) }, typed, c))
            let start = !running
            running = true
            // Signalled after unlocking (a woken writer does not wait again for the lock), and only when it
            // waits: a write that arrives during a commit is taken by the loop when the commit ends.
            let wake = idle
            idle = false
            condition.unlock()
            if wake { condition.signal() }
            if start {
                let thread = Thread { [self] in
                    nameCurrentThread("lightning-write")
                    loop()
                }
                thread.stackSize = 1 << 20
                thread.start()
            }
        }
        return value as! T
    }

    private func loop() {
        while true {
            condition.lock()
            if pending.isEmpty {
                idle = true
                let until = Date(timeIntervalSinceNow: idleSeconds)
                while pending.isEmpty && condition.wait(until: until) {}
                idle = false
            }
            if pending.isEmpty {
                running = false
                condition.unlock()
                return
            }
            let batch = pending
            pending = []
            condition.unlock()
            commit(batch)
        }
    }

    private func commit(_ batch: [Item]) {
        do {
            let results: [Result<any Sendable, any Error>] = try pool.writeWithoutTransaction { db in
                try Self.transaction(db) {
                    // One write alone needs no savepoint: if it fails, the transaction is rolled back instead.
                    guard batch.count > 1 else {
                        let value = try batch[0].work(db)
                        batch[0].ordered?(value)
                        return [.success(value)]
                    }
                    return try batch.map { item in
                        do {
                            let value = try Self.savepoint(db) { try item.work(db) }
                            item.ordered?(value)
                            return .success(value)
                        } catch {
                            // SQLite ends the whole transaction itself on some errors (disk full, I/O): what the batch
                            // wrote before is gone then, and the writes after it would each commit on their own.
                            if sqlite3_get_autocommit(db.sqliteConnection) != 0 { throw error }
                            // Its changes could not be undone alone: the whole batch is rolled back.
                            if let undo = error as? UndoFailed { throw undo.error }
                            return .failure(error)
                        }
                    }
                }
            }
            condition.withLock {
                counts.transactions += 1
                counts.writes += batch.count
            }
            for (item, result) in zip(batch, results) { item.done.resume(with: result.mapError(Self.translate)) }
        } catch {
            // The commit failed (disk full, I/O error), or the only write did: nothing of the batch is stored or
            // acknowledged.
            let translated = Self.translate(error)
            for item in batch { item.done.resume(throwing: translated) }
        }
    }

    // BEGIN, COMMIT, SAVEPOINT and the rest as statements prepared once per connection: GRDB's `write` and
    // `inSavepoint` parse their SQL on every call (four to six parses per group transaction).

    /// Runs `body` in an immediate transaction: committed when it returns, rolled back when it throws or the commit fails.
    static func transaction<T>(_ db: Database, _ body: () throws -> T) throws -> T {
        try db.cachedStatement(sql: "BEGIN IMMEDIATE TRANSACTION").execute()
        let value: T
        do {
            value = try body()
            try db.cachedStatement(sql: "COMMIT TRANSACTION").execute()
        } catch {
            // GRDB's own rollback (interruptions ignored): a transaction left open would stop the writer for good.
            if sqlite3_get_autocommit(db.sqliteConnection) == 0 { try? db.rollback() }
            throw error
        }
        return value
    }

    /// A refused write's savepoint could not be rolled back: its changes are still in the transaction.
    struct UndoFailed: Error { var error: any Error }

    /// Runs `body` in a savepoint, undone alone when it throws (`UndoFailed` when that fails).
    static func savepoint<T>(_ db: Database, _ body: () throws -> T) throws -> T {
        try db.cachedStatement(sql: "SAVEPOINT groupwrite").execute()
        do {
            let value = try body()
            try db.cachedStatement(sql: "RELEASE SAVEPOINT groupwrite").execute()
            return value
        } catch {
            if sqlite3_get_autocommit(db.sqliteConnection) == 0 {
                // Undone, or the whole batch fails: a RELEASE after a failed ROLLBACK TO would keep what the
                // refused write changed.
                do {
                    try db.cachedStatement(sql: "ROLLBACK TRANSACTION TO SAVEPOINT groupwrite").execute()
                    try db.cachedStatement(sql: "RELEASE SAVEPOINT groupwrite").execute()
                } catch {
                    throw UndoFailed(error: error)
                }
            }
            throw error
        }
    }

    /// A full disk becomes `StoreError.unavailable` (callers answer 503 and nothing is lost: the write is undone);
    /// every other error stays as it is.
    static func translate(_ error: any Error) -> any Error {
        guard let e = error as? DatabaseError, e.resultCode == .SQLITE_FULL else { return error }
        return StoreError.unavailable("Lightning's database disk is full: nothing was stored; free space, then try again")
    }
}
