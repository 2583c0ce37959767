import Foundation

/// Starts the programs tests run so that they die with the test runner however it ends (a crash, kill -9, a CI
/// time-out): each runs under `setpriv --pdeathsig KILL`, and is forked from one long-lived thread, because the
/// parent-death signal follows the *thread* that forked and the cooperative pool's threads come and go.
public enum Spawn {
    /// `setpriv` from util-linux (essential on Debian); without it programs start plainly.
    static let setpriv: String? = ["/usr/bin/setpriv", "/bin/setpriv"].first { FileManager.default.isExecutableFile(atPath: $0) }

    /// Points `process` at `executable` run under setpriv, and starts it on the spawn thread. With `user` (uid and
    /// gid) it runs as that user, with no supplementary groups (the parent-death signal is set after the change).
    public static func start(_ process: Process, executable: String, arguments: [String], user: (uid: uid_t, gid: gid_t)? = nil) throws {
        if let user {
            guard let setpriv else { throw TestSupport.Failure("running a program as another user needs setpriv (util-linux)") }
            process.executableURL = URL(fileURLWithPath: setpriv)
            process.arguments = ["--pdeathsig", "KILL", "--reuid", "\(user.uid)", "--regid", "\(user.gid)", "--clear-groups", "--",
                                 executable] + arguments
        } else if let setpriv {
            process.executableURL = URL(fileURLWithPath: setpriv)
            process.arguments = ["--pdeathsig", "KILL", "--", executable] + arguments
        } else {
            process.executableURL = URL(fileURLWithPath: executable)
            process.arguments = arguments
        }
        try SpawnThread.shared.perform { try process.run() }
    }
}

/// One thread that lives as long as the test process and runs what is handed to it, one thing at a time.
final class SpawnThread: @unchecked Sendable {
    static let shared = SpawnThread()
    private let condition = NSCondition()
    private var work: [() -> Void] = []

    private init() {
        let thread = Thread { [self] in
            while true {
                condition.lock()
                while work.isEmpty { condition.wait() }
                let next = work.removeFirst()
                condition.unlock()
                next()
            }
        }
        thread.name = "test-spawner"
        thread.start()
    }

    /// Runs `body` on the spawn thread and waits for it (a spawn takes about a millisecond).
    func perform(_ body: @escaping () throws -> Void) throws {
        let done = NSCondition()
        var finished = false
        var failure: (any Error)?
        condition.lock()
        work.append {
            do { try body() } catch { failure = error }
            done.lock()
            finished = true
            done.signal()
            done.unlock()
        }
        condition.signal()
        condition.unlock()
        done.lock()
        while !finished { done.wait() }
        done.unlock()
        if let failure { throw failure }
    }
}
