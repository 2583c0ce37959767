import Foundation
import GRDB
import Synchronization
import Testing
import TestSupport
@testable import Lightning

/// The group writer on a real SQLite file: what a refused write undoes, alone and among others.
@Suite("Group commit", .serialized)
struct GroupWriterTests {
    struct Refused: Error {}

    /// A pool with one table, and its writer.
    func open() throws -> (DatabasePool, GroupWriter, URL) {
        let dir = try TestSupport.temporaryDirectory("group-writer")
        let pool = try DatabasePool(path: dir.appendingPathComponent("w.db").path)
        try pool.write { db in try db.execute(sql: "CREATE TABLE t (v TEXT NOT NULL)") }
        return (pool, GroupWriter(pool: pool), dir)
    }

    func values(_ pool: DatabasePool) throws -> [String] {
        try pool.read { db in try String.fetchAll(db, sql: "SELECT v FROM t ORDER BY v") }
    }

    @Test("a write alone in its transaction that fails after writing leaves nothing, and the next write commits")
    func aloneRefused() async throws {
        let (pool, writer, dir) = try open()
        defer { try? FileManager.default.removeItem(at: dir) }
        await #expect(throws: Refused.self) {
            try await writer.write { db in
                try db.execute(sql: "INSERT INTO t VALUES ('refused')")
                throw Refused()
            }
        }
        try await writer.write { db in try db.execute(sql: "INSERT INTO t VALUES ('kept')") }
        #expect(try values(pool) == ["kept"])
        #expect(writer.transactions == 1 && writer.writes == 1, "the refused write committed nothing")
        let left = try await pool.writeWithoutTransaction { db in db.isInsideTransaction }
        #expect(!left, "the writer's connection is not left inside a transaction")
    }

    @Test("in one group transaction a refused write undoes only itself; the others commit and each caller hears its own result")
    func refusedAmongOthers() async throws {
        let (pool, writer, dir) = try open()
        defer { try? FileManager.default.removeItem(at: dir) }
        // The first write holds the writer until the others are queued behind it: they then form one batch.
        let holding = DispatchSemaphore(value: 0), release = DispatchSemaphore(value: 0)
        async let first: Void = writer.write { db in
            holding.signal()
            release.wait()
            try db.execute(sql: "INSERT INTO t VALUES ('a')")
        }
        await withCheckedContinuation { c in DispatchQueue.global().async { holding.wait(); c.resume() } }
        let results = try await withThrowingTaskGroup(of: (String, Bool).self) { group in
            for name in ["b", "c", "d", "e"] {
                group.addTask {
                    do {
                        try await writer.write { db in
                            try db.execute(sql: "INSERT INTO t VALUES (?)", arguments: [name])
                            if name == "c" { throw Refused() }
                        }
                        return (name, true)
                    } catch is Refused {
                        return (name, false)
                    }
                }
            }
            // Every write is queued before the first one goes on.
            while writer.queued < 4 { try await Task.sleep(for: .milliseconds(5)) }
            release.signal()
            var r: [String: Bool] = [:]
            for try await (name, ok) in group { r[name] = ok }
            return r
        }
        try await first
        #expect(results == ["b": true, "c": false, "d": true, "e": true])
        #expect(try values(pool) == ["a", "b", "d", "e"])
        #expect(writer.writes == 5, "every write of both transactions is counted, the refused one too")
        #expect(writer.transactions == 2, "the four queued writes shared one transaction")
    }

    @Test("`ordered` sees the value in the open transaction, before the caller hears of the commit")
    func orderedBeforeCommit() async throws {
        let (pool, writer, dir) = try open()
        defer { try? FileManager.default.removeItem(at: dir) }
        let seen = Mutex<[String]>([])
        let value = try await writer.write({ db -> String in
            try db.execute(sql: "INSERT INTO t VALUES ('x')")
            return "x"
        }, ordered: { v in seen.withLock { $0.append("ordered \(v)") } })
        seen.withLock { $0.append("returned \(value)") }
        #expect(seen.withLock { $0 } == ["ordered x", "returned x"])
        #expect(try values(pool) == ["x"])
    }
}

@Suite("SQLite durability")
struct SQLiteDurabilityTests {
    @Test("the connection every write goes through syncs the WAL at each commit (synchronous = FULL), on a new file and on reopening it")
    func writerIsFull() async throws {
        let dir = try TestSupport.temporaryDirectory("durability")
        defer { try? FileManager.default.removeItem(at: dir) }
        let path = dir.appendingPathComponent("l.db").path
        for _ in 0..<2 {
            let database = try SQLiteDatabase(path: path)
            // 2 is FULL; GRDB's pool left its writer at 1 (NORMAL) before.
            let level = try await database.pool.writeWithoutTransaction { db in try Int.fetchOne(db, sql: "PRAGMA synchronous") }
            #expect(level == 2)
            let walMode = try await database.pool.writeWithoutTransaction { db in try String.fetchOne(db, sql: "PRAGMA journal_mode") }
            #expect(walMode == "wal")
        }
    }
}
