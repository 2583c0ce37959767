import Foundation

/// Helpers shared by the test targets: real processes, temporary directories, built binaries.
public enum TestSupport {
    /// The package root, found from this file's path.
    public static let packageRoot: URL = URL(fileURLWithPath: #filePath)
        .deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    public struct ProcessResult: Sendable {
        public var status: Int32
        public var stdout: String
        public var stderr: String
    }

    public struct Failure: Error, CustomStringConvertible {
        public var description: String
        public init(_ description: String) { self.description = description }
    }

    /// Runs a program to completion and captures its output. `environment` is added to this process's.
    public static func run(
        _ executable: String, _ arguments: [String], environment: [String: String] = [:], input: String? = nil,
        user: (uid: uid_t, gid: gid_t)? = nil
    ) throws -> ProcessResult {
        let process = Process()
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        let out = Pipe(), err = Pipe(), inPipe = Pipe()
        process.standardOutput = out
        process.standardError = err
        process.standardInput = inPipe
        try Spawn.start(process, executable: executable, arguments: arguments, user: user)
        if let input { inPipe.fileHandleForWriting.write(Data(input.utf8)) }
        try inPipe.fileHandleForWriting.close()
        // Read both pipes concurrently so neither can fill up and stall the child.
        nonisolated(unsafe) var errData = Data()
        let group = DispatchGroup()
        group.enter()
        DispatchQueue.global().async {
            errData = err.fileHandleForReading.readDataToEndOfFile()
            group.leave()
        }
        let outData = out.fileHandleForReading.readDataToEndOfFile()
        group.wait()
        process.waitUntilExit()
        return ProcessResult(
            status: process.terminationStatus, stdout: String(decoding: outData, as: UTF8.self),
            stderr: String(decoding: errData, as: UTF8.self))
    }

    /// The same, from async code: the program runs and is waited for on a thread of its own, so the test does
    /// not hold one of the few cooperative threads that every other test's tasks share.
    public static func run(
        _ executable: String, _ arguments: [String], environment: [String: String] = [:], input: String? = nil,
        user: (uid: uid_t, gid: gid_t)? = nil
    ) async throws -> ProcessResult {
        try await onThread { try run(executable, arguments, environment: environment, input: input, user: user) as ProcessResult }
    }

    /// Runs blocking work (a blocking socket read, a process wait) on a thread of its own and awaits it, so the test
    /// does not hold one of the few cooperative threads that every other test's tasks share, an in-process server's
    /// handlers included (a blocking read of an answer whose handler needs that thread waits for nothing).
    public static func onThread<T: Sendable>(_ body: @escaping @Sendable () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { (c: CheckedContinuation<T, any Error>) in
            Thread { c.resume(with: Result { try body() }) }.start()
        }
    }

    /// `python3` with a script, failing clearly when python3 is missing.
    public static func python(_ script: String, _ arguments: [String]) throws -> ProcessResult {
        guard let python = which("python3") else {
            throw Failure("python3 is not installed; run scripts/test, which installs it")
        }
        return try run(python, [script] + arguments)
    }

    /// The same, from async code, on a thread of its own (see the async `run`). A synchronous call from a task, even
    /// a detached one, holds a cooperative thread for as long as the script runs: two long scripts at once held
    /// both of this machine's, and every other test stalled for 21 s (a push timed out in CI).
    public static func python(_ script: String, _ arguments: [String]) async throws -> ProcessResult {
        guard let python = which("python3") else {
            throw Failure("python3 is not installed; run scripts/test, which installs it")
        }
        return try await run(python, [script] + arguments)
    }

    public static func which(_ name: String) -> String? {
        for dir in (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin").split(separator: ":") {
            let path = "\(dir)/\(name)"
            if FileManager.default.isExecutableFile(atPath: path) { return path }
        }
        return nil
    }

    /// A binary of this package built by `swift build` (debug), next to the running test bundle.
    public static func builtBinary(_ name: String) throws -> String {
        var candidates: [String] = []
        // The test bundle lives in the same build directory as the products.
        let bundle = Bundle.main.bundleURL
        candidates.append(bundle.appendingPathComponent(name).path)
        candidates.append(bundle.deletingLastPathComponent().appendingPathComponent(name).path)
        candidates.append(packageRoot.appendingPathComponent(".build/debug/\(name)").path)
        for path in candidates where FileManager.default.isExecutableFile(atPath: path) { return path }
        throw Failure("\(name) is not built (looked in \(candidates)); run `swift build` first")
    }

    /// A fresh directory, removed by `remove()`.
    public static func temporaryDirectory(_ label: String = "test") throws -> URL {
        let url = FileManager.default.temporaryDirectory
            .appendingPathComponent("lightning-\(label)-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
        return url
    }
}
