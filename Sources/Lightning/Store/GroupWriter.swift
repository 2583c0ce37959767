import GRDB

/// Group commit for every write: writes from all connections reach this one writer, which runs everything that
/// queued up while the last transaction was being committed in the next one (one fsync for many), each write in
/// a savepoint of its own so one refused write (a late event, a conflict) undoes only itself. A caller hears
/// back only after the commit: nothing is acknowledged before it is on disk (`synchronous=FULL` stays).
/// One attempt's events stay in order because its worker waits for each reply before the next.
actor GroupWriter {
    private let pool: DatabasePool
    private typealias Work = @Sendable (Database) throws -> any Sendable
    private var pending: [(work: Work, done: CheckedContinuation<any Sendable, any Error>)] = []
    private var writing = false
    /// Transactions committed, and the writes they carried (their ratio is the batching).
    private(set) var transactions = 0
    private(set) var writes = 0

    init(pool: DatabasePool) { self.pool = pool }

    func write<T: Sendable>(_ body: @escaping @Sendable (Database) throws -> T) async throws -> T {
        let value = try await withCheckedThrowingContinuation { (c: CheckedContinuation<any Sendable, any Error>) in
            pending.append(({ db in try body(db) }, c))
            if !writing {
                writing = true
                Task { await self.flush() }
            }
        }
        return value as! T
    }

    private func flush() async {
        while !pending.isEmpty {
            let batch = pending
            pending = []
            let works = batch.map(\.work)
            do {
                let results: [Result<any Sendable, any Error>] = try await pool.write { db in
                    works.map { work in
                        do {
                            var value: (any Sendable)?
                            try db.inSavepoint {
                                value = try work(db)
                                return .commit
                            }
                            return .success(value!)
                        } catch {
                            return .failure(error)
                        }
                    }
                }
                transactions += 1
                writes += batch.count
                for (item, result) in zip(batch, results) { item.done.resume(with: result) }
            } catch {
                // The commit itself failed (disk full, I/O error): nothing of the batch is stored or acknowledged.
                for item in batch { item.done.resume(throwing: error) }
            }
        }
        writing = false
    }
}
