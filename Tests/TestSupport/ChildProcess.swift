import Foundation

/// A long-running program started by a test (a server, a worker): its stderr goes to a file the test can
/// search, and it is killed when the test is done with it.
public final class ChildProcess: @unchecked Sendable {
    public let process = Process()
    public let logPath: String

    public init(_ executable: String, _ arguments: [String], environment: [String: String] = [:], directory: URL,
                logName: String, user: (uid: uid_t, gid: gid_t)? = nil) throws {
        logPath = directory.appendingPathComponent(logName).path
        FileManager.default.createFile(atPath: logPath, contents: nil)
        process.currentDirectoryURL = directory
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        let log = try FileHandle(forWritingTo: URL(fileURLWithPath: logPath))
        process.standardError = log
        process.standardOutput = log
        self.executable = executable
        try Spawn.start(process, executable: executable, arguments: arguments, user: user)
    }

    /// The program (the process itself runs it under setpriv, which execs it in place).
    public let executable: String

    public var pid: pid_t { process.processIdentifier }
    public var log: String { (try? String(contentsOfFile: logPath, encoding: .utf8)) ?? "" }

    /// Waits until the log matches `pattern` (a regular expression) and returns the first match.
    /// (Async, sleeping with Task.sleep: a test that blocks one of the few cooperative threads starves every
    /// other test's tasks, their heartbeats included.)
    @discardableResult
    public func waitForLog(_ pattern: String, timeout: TimeInterval = 30) async throws -> String {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            let text = log
            if let r = text.range(of: pattern, options: .regularExpression) { return String(text[r]) }
            if !process.isRunning { break }
            try await Task.sleep(for: .milliseconds(20))
        }
        throw TestSupport.Failure("no \(pattern) in the log of \((executable as NSString).lastPathComponent):\n\(log)")
    }

    public func signal(_ signal: Int32) { kill(pid, signal) }

    /// Waits for the exit and returns the status (nil on timeout).
    public func waitForExit(timeout: TimeInterval = 30) async -> Int32? {
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning && Date() < deadline { try? await Task.sleep(for: .milliseconds(20)) }
        return process.isRunning ? nil : process.terminationStatus
    }

    public func stop() {
        if process.isRunning {
            kill(pid, SIGKILL)
            process.waitUntilExit()
        }
    }

    deinit { stop() }
}
