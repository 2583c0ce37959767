import Foundation
import Postgres
import Testing
import TestSupport

/// The PostgreSQL client against a real server (a throwaway one per test, TestSupport.PostgresServer): what the
/// PostgreSQL store of issue 12 is built on. Each connection is used from one thread at a time, off the
/// cooperative pool (`TestSupport.onThread`), as the store will use them.
@Suite("PostgreSQL over libpq, against a real server", .serialized)
struct PostgresTests {
    static func connect(_ server: PostgresServer) async throws -> UncheckedBox<PostgresConnection> {
        let url = server.url()
        return try await TestSupport.onThread { UncheckedBox(try PostgresConnection(url)) }
    }

    @Test("values of each type go in as parameters and come back the same; NULL stays NULL")
    func roundTrip() async throws {
        let server = try await PostgresServer()
        defer { server.stop() }
        let db = try await Self.connect(server)
        let texts = ["", "plain", "quote ' and \" and \\ backslash", "é 😀 ✓", String(repeating: "x", count: 100_000)]
        let bodies: [[UInt8]] = [[], [0, 1, 2, 0, 255], Array(repeating: 0, count: 70_000), Array("{\"a\":1}".utf8)]
        let ints: [Int64] = [0, -1, Int64.max, Int64.min, 1_764_633_600_000_001]
        try await TestSupport.onThread { [db] in
            try db.value.execute("""
                CREATE TABLE t (id serial PRIMARY KEY, s text, n bigint, d double precision, b boolean, body bytea);
                """)
            var rows: [(PostgresValue, PostgresValue, PostgresValue, PostgresValue, PostgresValue)] = []
            for (i, text) in texts.enumerated() {
                rows.append((.text(text), .int(ints[i % ints.count]), .double(Double(i) / 3), .bool(i % 2 == 0),
                             .bytes(bodies[i % bodies.count])))
            }
            rows.append((.null, .null, .null, .null, .null))
            for r in rows {
                let inserted = try db.value.query("INSERT INTO t (s, n, d, b, body) VALUES ($1, $2, $3, $4, $5)", [r.0, r.1, r.2, r.3, r.4])
                #expect(inserted.affected == 1)
            }
            let back = try db.value.query("SELECT s, n, d, b, body FROM t ORDER BY id")
            #expect(back.count == rows.count && back.columns == ["s", "n", "d", "b", "body"])
            for (i, text) in texts.enumerated() {
                let row = back[i]
                #expect(try row.string("s") == text)
                #expect(try row.int("n") == ints[i % ints.count])
                #expect(try row.double("d") == Double(i) / 3)
                #expect(try row.bool("b") == (i % 2 == 0))
                #expect(try row.bytes("body") == bodies[i % bodies.count])
            }
            let nulls = back[texts.count]
            #expect(try nulls.string("s") == nil && nulls.int("n") == nil && nulls.bool("b") == nil && nulls.bytes("body") == nil)
            #expect(throws: PostgresError.self) { try nulls.string("no_such_column") }
            #expect(throws: PostgresError.self) { try back[0].int("s") }
        }
    }

    @Test("errors carry the server's SQLSTATE and message, and the connection goes on working")
    func errors() async throws {
        let server = try await PostgresServer()
        defer { server.stop() }
        let db = try await Self.connect(server)
        try await TestSupport.onThread { [db] in
            try db.value.execute("CREATE TABLE names (name text PRIMARY KEY)")
            try db.value.query("INSERT INTO names VALUES ($1)", ["ada"])
            let duplicate = #expect(throws: PostgresError.self) { try db.value.query("INSERT INTO names VALUES ($1)", ["ada"]) }
            #expect(duplicate?.sqlState == PostgresError.uniqueViolation && duplicate?.message.contains("names_pkey") == true,
                    "\(String(describing: duplicate))")
            let syntax = #expect(throws: PostgresError.self) { try db.value.query("SELEKT 1") }
            #expect(syntax?.sqlState == "42601", "\(String(describing: syntax))")
            #expect(try db.value.query("SELECT count(*) AS n FROM names").first?.int("n") == 1)
            // A NUL cannot be sent as text (it would cut the value short): refused before anything is sent.
            #expect(throws: PostgresError(sqlState: PostgresError.characterNotInRepertoire, message: "a text parameter cannot hold a NUL byte")) {
                try db.value.query("INSERT INTO names VALUES ($1)", [.text("ada\u{0}lovelace")])
            }
            // Thousands of parameters in one statement, and RETURNING counts what it touched.
            let many = (1...5000).map { PostgresValue.text("name-\($0)") }
            let placeholders = (1...5000).map { "($\($0))" }.joined(separator: ",")
            let inserted = try db.value.query("INSERT INTO names VALUES \(placeholders) RETURNING name", many)
            #expect(inserted.count == 5000 && inserted.affected == 5000)
        }
    }

    @Test("a session the server ends is reported, never silently replaced by a new one")
    func lostConnection() async throws {
        let server = try await PostgresServer()
        defer { server.stop() }
        let victim = try await Self.connect(server)
        let admin = try await Self.connect(server)
        try await TestSupport.onThread { [victim, admin] in
            try victim.value.listen("work_available")
            #expect(victim.value.isConnected)
            try admin.value.query("SELECT pg_terminate_backend($1)", [.int(Int64(victim.value.backendPID))])
            #expect(throws: PostgresError.self) { try victim.value.query("SELECT 1") }
            #expect(!victim.value.isConnected)
            let again = #expect(throws: PostgresError.self) { try victim.value.notifications(timeout: .milliseconds(10)) }
            #expect(again?.message.contains("lost") == true, "\(String(describing: again))")
        }
    }

    @Test("BEGIN sent with the first statement (one round trip): commits, rolls back, reports BEGIN's own error, costs nothing unused")
    func pipelinedBegin() async throws {
        let server = try await PostgresServer()
        defer { server.stop() }
        let db = try await Self.connect(server)
        try await TestSupport.onThread { [db] in
            let c = db.value
            try c.execute("CREATE TABLE t (n bigint PRIMARY KEY)")
            // Committed: the statement ran inside the transaction BEGIN opened.
            c.beginWithFirstStatement("BEGIN ISOLATION LEVEL SERIALIZABLE")
            #expect(try c.queryPrepared("INSERT INTO t (n) VALUES ($1) RETURNING n", [.int(1)]).first?.int("n") == 1)
            #expect(try c.query("SELECT current_setting('transaction_isolation') AS i").first?.string("i") == "serializable")
            try c.commit()
            // Rolled back: nothing of it stays.
            c.beginWithFirstStatement("BEGIN")
            try c.query("INSERT INTO t (n) VALUES (2)")
            #expect(c.inTransaction)
            try c.rollback()
            // The first statement fails: its error, and the transaction is rolled back whole.
            c.beginWithFirstStatement("BEGIN")
            let dup = #expect(throws: PostgresError.self) { try c.query("INSERT INTO t (n) VALUES (1)") }
            #expect(dup?.sqlState == PostgresError.uniqueViolation)
            try c.rollback()
            // BEGIN itself fails: its error, not the statement's, and the statement did not run.
            c.beginWithFirstStatement("BEGIN ISOLATION LEVEL NO_SUCH_LEVEL")
            let bad = #expect(throws: PostgresError.self) { try c.query("INSERT INTO t (n) VALUES (3)") }
            #expect(bad?.sqlState == "42601", "\(String(describing: bad))")
            try c.rollback()
            // Begun and ended with no statement: nothing was sent, nothing is open.
            c.beginWithFirstStatement("BEGIN")
            try c.commit()
            #expect(try c.query("SELECT n FROM t ORDER BY n").all.map { try $0.int("n") } == [1])
            #expect(!c.inTransaction, "no transaction left open")
            #expect(c.isConnected)
        }
    }

    @Test("a malformed connection string that libpq quotes back: the password is not in the error", arguments: [
        "postgresql://lightning:s3cretPW@[::1/db",            // libpq quotes the whole URL
        "postgresql://lightning:s3cretPW@/db?host=/nowhere&x=%zz",
        "host=/nowhere dbname=db user=lightning password=s3cretPW sslmode=nonsense",
    ])
    func secretsNotInErrors(_ conninfo: String) async throws {
        let error = #expect(throws: PostgresError.self) { _ = try PostgresConnection(conninfo, timeoutSeconds: 2) }
        #expect(error.map { !$0.description.contains("s3cretPW") } == true, "\(String(describing: error))")
    }

    @Test("a transaction that throws is rolled back whole")
    func transactions() async throws {
        let server = try await PostgresServer()
        defer { server.stop() }
        let db = try await Self.connect(server)
        try await TestSupport.onThread { [db] in
            let c = db.value
            try c.execute("CREATE TABLE events (n int PRIMARY KEY)")
            try c.transaction { t in
                try t.query("INSERT INTO events VALUES (1)")
                try t.query("INSERT INTO events VALUES (2)")
            }
            #expect(throws: PostgresError.self) {
                try c.transaction { t in
                    try t.query("INSERT INTO events VALUES (3)")
                    try t.query("INSERT INTO events VALUES (1)")  // a duplicate: the 3 goes too
                }
            }
            struct Refused: Error {}
            #expect(throws: Refused.self) {
                try c.transaction { t in
                    try t.query("INSERT INTO events VALUES (4)")
                    throw Refused()
                }
            }
            #expect(try c.query("SELECT n FROM events ORDER BY n").all.map { try $0.int("n") } == [1, 2])
        }
    }

    @Test("LISTEN/NOTIFY: a notification reaches another connection, in order, only after its transaction commits")
    func notifications() async throws {
        let server = try await PostgresServer()
        defer { server.stop() }
        let listener = try await Self.connect(server)
        let sender = try await Self.connect(server)
        try await TestSupport.onThread { [listener, sender] in
            try listener.value.listen("work_available")
            #expect(try listener.value.notifications(timeout: .milliseconds(50)).isEmpty)
            try sender.value.transaction { t in
                try t.notify("work_available", payload: "first 'quoted'")
                try t.notify("work_available", payload: "second")
                // Not yet: NOTIFY goes out at commit.
                #expect(try listener.value.notifications(timeout: .milliseconds(100)).isEmpty)
            }
            var got: [PostgresNotification] = []
            let deadline = Date(timeIntervalSinceNow: 30)
            while got.count < 2 && Date() < deadline { got += try listener.value.notifications(timeout: .seconds(5)) }
            #expect(got.map(\.payload) == ["first 'quoted'", "second"] && got.allSatisfy { $0.channel == "work_available" })
            #expect(got.first?.senderPID == sender.value.backendPID)
            #expect(throws: PostgresError.self) { try listener.value.listen("no spaces; DROP TABLE x") }
        }
    }

    @Test("claims with FOR UPDATE SKIP LOCKED from three connections at once: every row claimed exactly once")
    func skipLockedClaims() async throws {
        let server = try await PostgresServer()
        defer { server.stop() }
        let setup = try await Self.connect(server)
        try await TestSupport.onThread { [setup] in
            try setup.value.execute("CREATE TABLE queue (id int PRIMARY KEY, claimed_by text)")
            try setup.value.query("INSERT INTO queue SELECT g, NULL FROM generate_series(1, 300) g")
        }
        let url = server.url()
        let claimed = try await withThrowingTaskGroup(of: [Int64].self) { group in
            for replica in 0..<3 {
                group.addTask {
                    try await TestSupport.onThread {
                        let c = try PostgresConnection(url)
                        var mine: [Int64] = []
                        while true {
                            let rows = try c.transaction { t in
                                try t.query("""
                                    UPDATE queue SET claimed_by = $1 WHERE id IN (
                                      SELECT id FROM queue WHERE claimed_by IS NULL ORDER BY id LIMIT 3 FOR UPDATE SKIP LOCKED)
                                    RETURNING id
                                    """, [.text("replica-\(replica)")])
                            }
                            if rows.isEmpty { return mine }
                            mine += try rows.all.compactMap { try $0.int("id") }
                        }
                    }
                }
            }
            return try await group.reduce(into: [[Int64]]()) { $0.append($1) }
        }
        let all = claimed.flatMap { $0 }
        #expect(all.count == 300 && Set(all) == Set(1...300), "\(claimed.map(\.count)) claimed")
        let left = try await TestSupport.onThread { [setup] in
            try setup.value.query("SELECT count(*) AS n FROM queue WHERE claimed_by IS NULL").first?.int("n")
        }
        #expect(left == 0)
    }

    @Test("a server that is not there: a clear error that names the socket and never the password")
    func refusedConnection() async throws {
        let dir = try TestSupport.temporaryDirectory("pg-none")
        defer { try? FileManager.default.removeItem(at: dir) }
        let error = await #expect(throws: PostgresError.self) {
            try await TestSupport.onThread { () -> Int in
                _ = try PostgresConnection("postgresql://ada:s3cret-pa55@/db?host=\(dir.path)&port=5999", timeoutSeconds: 2)
                return 0
            }
        }
        let text = "\(String(describing: error))"
        #expect(text.contains("could not connect") && text.contains(dir.path) && !text.contains("s3cret-pa55"), "\(text)")
    }
}

/// Hands a connection (not Sendable: one owner at a time) from the thread that made it to the one that uses it,
/// in tests that use it from one thread at a time.
struct UncheckedBox<T>: @unchecked Sendable {
    let value: T
    init(_ value: T) { self.value = value }
}
