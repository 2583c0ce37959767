import ArgumentParser
import RuntimeWorker

extension RuntimeWorkerCommand {
    /// `runtime-worker setup-cgroups --user U`: gives a worker that runs as U its steps' memory and pids limits.
    struct SetupCgroups: ParsableCommand {
        static let configuration = CommandConfiguration(
            commandName: "setup-cgroups",
            abstract: "As root, once per boot: hand a user the cgroup v1 subtrees a worker running as that user limits its steps with.",
            discussion: """
                Makes /sys/fs/cgroup/{memory,pids}/lightning-runtime-user-<uid> owned by the user. A worker running as \
                that user (it isolates steps with user namespaces) makes its steps' groups there; without them its \
                steps run without memory and process limits, and it says so at start. See docs/workers.md.
                """)

        @Option(help: "The user the worker runs as (a name or a uid).")
        var user: String

        func run() throws {
            guard let (uid, gid) = CgroupDelegation.user(user) else {
                throw ValidationError("no user \"\(user)\" on this host")
            }
            // A failure is printed as it says (CgroupDelegation.Failure), without the usage text.
            for dir in try CgroupDelegation.delegate(uid: uid, gid: gid) { print("\(dir): owned by uid \(uid)") }
        }
    }
}
