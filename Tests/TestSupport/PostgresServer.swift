import Foundation
import Synchronization

/// A throwaway PostgreSQL server for one test: Debian's `postgresql` binaries, `initdb` in a temporary directory,
/// listening only on a unix socket in that directory (no TCP port, so nothing to collide with), stopped by its pid
/// and its directory removed. As root it runs as the `postgres` user the package creates (PostgreSQL refuses
/// root), through `setpriv`, and dies with the test runner like every program the tests start.
public final class PostgresServer: @unchecked Sendable {
    public let directory: URL
    /// The socket's directory and port (the port only names the socket file `.s.PGSQL.<port>`).
    public let socketDirectory: String
    public let port = 5432
    public let user = "lightning"
    private var process = Process()
    private let log: URL
    private let bin: String
    private let data: String
    private let owner: (uid: uid_t, gid: gid_t)?
    private let timeout: TimeInterval

    /// A libpq URL for `database`.
    public func url(database: String = "postgres") -> String {
        "postgresql://\(user)@/\(database)?host=\(socketDirectory)&port=\(port)"
    }

    /// Why PostgreSQL cannot run here, or nil when it can (tests say the reason instead of failing obscurely).
    public static var unavailableReason: String? {
        binDirectory == nil ? "PostgreSQL's server binaries are not installed (Debian: apt-get install postgresql)" : nil
    }

    /// The newest `/usr/lib/postgresql/<version>/bin` with `initdb` and `postgres` in it.
    static let binDirectory: String? = {
        let root = "/usr/lib/postgresql"
        let versions = ((try? FileManager.default.contentsOfDirectory(atPath: root)) ?? []).compactMap(Int.init).sorted(by: >)
        return versions.map { "\(root)/\($0)/bin" }.first { FileManager.default.isExecutableFile(atPath: "\($0)/postgres") }
    }()

    /// Starts a server and waits until it takes connections (at most `timeout` seconds).
    public init(timeout: TimeInterval = 60) async throws {
        guard let bin = Self.binDirectory else { throw TestSupport.Failure(Self.unavailableReason!) }
        self.bin = bin
        self.timeout = timeout
        directory = try TestSupport.temporaryDirectory("pg")
        // The server trusts whoever reaches its socket: only its own user (and root) may enter the directory.
        guard chmod(directory.path, 0o700) == 0 else { throw TestSupport.Failure("chmod \(directory.path): \(String(cString: strerror(errno)))") }
        socketDirectory = directory.path
        log = directory.appendingPathComponent("postgres.log")
        let data = directory.appendingPathComponent("data").path
        self.data = data
        var owner: (uid: uid_t, gid: gid_t)? = nil
        if geteuid() == 0 {
            guard let pw = getpwnam("postgres") else {
                throw TestSupport.Failure("running as root, PostgreSQL needs the `postgres` user (the postgresql package makes it)")
            }
            owner = (pw.pointee.pw_uid, pw.pointee.pw_gid)
            guard chown(directory.path, pw.pointee.pw_uid, pw.pointee.pw_gid) == 0 else {
                throw TestSupport.Failure("chown \(directory.path): \(String(cString: strerror(errno)))")
            }
        }
        let initdb = try await TestSupport.run("\(bin)/initdb", ["-D", data, "-U", user, "--auth=trust", "-E", "UTF8",
                                                                  "--locale=C", "--no-sync"], user: owner)
        guard initdb.status == 0 else { throw TestSupport.Failure("initdb failed: \(initdb.stdout)\(initdb.stderr)") }
        self.owner = owner
        FileManager.default.createFile(atPath: log.path, contents: nil)
        if let owner { _ = chown(log.path, owner.uid, owner.gid) }
        try await launch()
    }

    /// Starts the server on its directory and waits until it takes connections.
    private func launch() async throws {
        let (bin, data, owner, timeout, socketDirectory, port, log) = (bin, data, owner, timeout, socketDirectory, port, log)
        process = Process()
        let handle = try FileHandle(forWritingTo: log)
        handle.seekToEndOfFile()
        process.standardOutput = handle
        process.standardError = handle
        // fsync off: the server lives for one test, and a crash of this machine ends the test anyway.
        try Spawn.start(process, executable: "\(bin)/postgres",
                        arguments: ["-D", data, "-k", socketDirectory, "-p", "\(port)", "-c", "listen_addresses=",
                                    "-c", "fsync=off", "-c", "max_connections=400"],
                        user: owner)
        try handle.close()  // the server has its own copy
        let ready = try await TestSupport.onThread { [bin, socketDirectory, port, process] () -> Bool in
            let deadline = Date(timeIntervalSinceNow: timeout)
            while Date() < deadline && process.isRunning {
                let r = try TestSupport.run("\(bin)/pg_isready", ["-h", socketDirectory, "-p", "\(port)", "-q"])
                if r.status == 0 { return true }
                Thread.sleep(forTimeInterval: 0.05)
            }
            return false
        }
        guard ready else {
            stop()
            throw TestSupport.Failure("PostgreSQL did not start: \((try? String(contentsOf: log, encoding: .utf8)) ?? "")")
        }
    }

    /// A fast shutdown, then the same server started again on its data (what clients see when their database
    /// restarts: every connection they held is gone).
    public func restart() async throws {
        halt()
        try await launch()
    }

    /// One server for the whole test process, started by the first test that asks for it and stopped when the
    /// process exits (a fresh database per test keeps the tests apart: `newDatabase`). Starting a server per test
    /// would cost each store test a second or two.
    public static func shared() async throws -> PostgresServer {
        try await sharedServer.value
    }

    private static let sharedServer = Task { () throws -> PostgresServer in
        let server = try await PostgresServer()
        sharedForExit.withLock { $0 = server }
        atexit { PostgresServer.sharedForExit.withLock { $0 }?.stop() }
        return server
    }

    private static let sharedForExit = Mutex<PostgresServer?>(nil)

    /// A new, empty database on this server; returns its URL.
    public func newDatabase() async throws -> String {
        let name = "t_" + UUID().uuidString.lowercased().replacingOccurrences(of: "-", with: "")
        let r = try await TestSupport.run("\(Self.binDirectory!)/createdb", ["-h", socketDirectory, "-p", "\(port)", "-U", user, name])
        guard r.status == 0 else { throw TestSupport.Failure("createdb failed: \(r.stderr)") }
        return url(database: name)
    }

    /// What the server wrote (for a failing test's message).
    public var logText: String { (try? String(contentsOf: log, encoding: .utf8)) ?? "" }

    /// A fast shutdown (SIGINT: connections are closed, nothing waits for clients), then the directory goes.
    public func stop() {
        halt()
        try? FileManager.default.removeItem(at: directory)
    }

    private func halt() {
        if process.isRunning {
            kill(process.processIdentifier, SIGINT)
            let deadline = Date(timeIntervalSinceNow: 15)
            while process.isRunning && Date() < deadline { Thread.sleep(forTimeInterval: 0.02) }
            if process.isRunning { kill(process.processIdentifier, SIGKILL) }
            process.waitUntilExit()
        }
    }

    deinit { stop() }
}
