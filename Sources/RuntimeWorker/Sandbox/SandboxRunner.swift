internal import CSandbox
import Channels
import Foundation
import Synchronization
import Logging

public enum SandboxMode: String, Sendable, CaseIterable {
    /// Namespaces when the host allows them; refuse to run steps otherwise.
    case auto
    case namespaces
    /// No isolation beyond a clean environment, rlimits, a process group and cgroups when available.
    case none
}

public enum StepNetwork: String, Sendable, CaseIterable {
    /// An empty network namespace: no interfaces but a down loopback.
    case none
    case host
}

public enum SandboxError: Error, CustomStringConvertible, Equatable {
    case unavailable(String)
    case spawn(String)
    case cgroup(String)

    public var description: String {
        switch self {
        case .unavailable(let m): m
        case .spawn(let m): "the step could not start: \(m)"
        case .cgroup(let m): "cgroup: \(m)"
        }
    }
}

/// What one step is and may use.
public struct StepLaunch: Sendable {
    public var executable: String
    public var arguments: [String]
    public var environment: [String: String]
    /// Private writable directory (seen as /work inside the sandbox).
    public var workDirectory: String
    /// Private /tmp.
    public var tmpDirectory: String
    public var memoryLimitBytes: Int64
    public var pidsLimit: Int
    public var timeout: Duration
    public var maxLineBytes: Int
    public var fileSizeLimitBytes: Int

    public init(
        executable: String, arguments: [String], environment: [String: String], workDirectory: String, tmpDirectory: String,
        memoryLimitBytes: Int64 = 500 << 20, pidsLimit: Int = 256, timeout: Duration = .seconds(300),
        maxLineBytes: Int = 1_000_000, fileSizeLimitBytes: Int = 1 << 30
    ) {
        self.executable = executable
        self.arguments = arguments
        self.environment = environment
        self.workDirectory = workDirectory
        self.tmpDirectory = tmpDirectory
        self.memoryLimitBytes = memoryLimitBytes
        self.pidsLimit = pidsLimit
        self.timeout = timeout
        self.maxLineBytes = maxLineBytes
        self.fileSizeLimitBytes = fileSizeLimitBytes
    }
}

public enum StepStream: Sendable { case stdout, stderr }

public struct StepTermination: Sendable, Equatable {
    public var exitCode: Int32?
    public var signal: Int32?
    public var timedOut: Bool
    public var oomKilled: Bool
    public var cancelled: Bool
    public var peakMemoryBytes: Int64
    public var durationMS: Int64
}

/// Stops a running step from outside (cancel, shutdown).
public final class StepControl: Sendable {
    private struct State {
        var pid: pid_t = 0
        var cancelled = false
        var group: Cgroups.Group?
        var started: ContinuousClock.Instant?
        var held = false
        var release: (@Sendable () -> Void)?
    }

    private let state = Mutex(State())

    public init() {}

    func attach(pid: pid_t, group: Cgroups.Group?) -> Bool {
        state.withLock { s in
            s.pid = pid
            s.group = group
            s.started = ContinuousClock.now
            return !s.cancelled
        }
    }

    /// When the step's process was started (nil until then): the executor's spawn latency.
    public var startedAt: ContinuousClock.Instant? { state.withLock { $0.started } }

    var wasCancelled: Bool { state.withLock { $0.cancelled } }

    /// Set by the step reactor while it watches this step: it reads the pipes again.
    var onRelease: (@Sendable () -> Void)? {
        get { state.withLock { $0.release } }
        set { state.withLock { $0.release = newValue } }
    }

    /// The consumer of the step's lines holds too many: the runner stops reading the step's output (the step
    /// blocks once its pipe is full) until `releaseOutput()`. Nothing is dropped.
    public func holdOutput() { state.withLock { $0.held = true } }

    public func releaseOutput() {
        let r: (@Sendable () -> Void)? = state.withLock { s in
            guard s.held else { return nil }
            s.held = false
            return s.release
        }
        r?()
    }

    var outputHeld: Bool { state.withLock { $0.held } }

    /// SIGTERM to the step's whole tree, then SIGKILL after `grace`.
    public func terminate(grace: Duration = .seconds(5)) {
        let p: pid_t = state.withLock { s in
            s.cancelled = true
            return s.pid
        }
        guard p > 0 else { return }
        kill(-p, SIGTERM)
        kill(p, SIGTERM)
        Task.detached {
            try? await Task.sleep(for: grace)
            // Only if the step has not ended meanwhile: by then its pid and its pooled cgroup may be another step's.
            self.killNow()
        }
    }

    /// The step's process has ended (called while it is still an unreaped zombie): nothing of it is signalled from
    /// now on, since its pid and its cgroup can be reused once it is reaped.
    func processEnded() {
        state.withLock { s in
            s.pid = 0
            s.group = nil
        }
    }

    static func killTree(_ p: pid_t, _ g: Cgroups.Group?) {
        kill(-p, SIGKILL)
        kill(p, SIGKILL)
        for q in g?.pids ?? [] { kill(q, SIGKILL) }
    }

    func killNow() {
        let (p, g) = state.withLock { ($0.pid, $0.group) }
        if p > 0 { Self.killTree(p, g) }
    }
}

/// Spawns steps in the sandbox and reads their output (see ARCHITECTURE.md, "Sandbox").
///
/// With namespaces the step is PID 1 of its own pid namespace (when it exits, the kernel kills everything it
/// left behind), in its own mount, IPC and UTS namespaces, in one empty network namespace shared by all steps
/// (or the host's with `--step-network host`), as uid/gid 65534 with no capabilities and no_new_privs, and sees
/// only a read-only system (`/usr`, `/bin`, `/lib*`, a few `/etc` files), its work directory at `/work`, a private
/// `/tmp`, a fresh `/proc` and `/dev/null`-like devices: never the worker's files, keys or environment. A worker
/// that is not root does the same in a user namespace of the step's own, where its uid and gid are mapped to 65534,
/// with an empty network namespace per step and cgroups in the subtree `setup-cgroups` handed to its user.
public final class SandboxRunner: @unchecked Sendable {
    public let mode: SandboxMode
    public let network: StepNetwork
    let useNamespaces: Bool
    let cgroups: Cgroups?
    let netnsFD: Int32
    /// Each step makes an empty network namespace of its own (a worker that is not root).
    let ownNetworkNamespace: Bool
    let rootDirectory: String
    let logger: Logger
    private static let counter = NSLock()
    nonisolated(unsafe) private static var sequence = 0
    nonisolated(unsafe) private static var runners = 0
    static func nextRunnerNumber() -> Int {
        counter.withLock {
            runners += 1
            return runners
        }
    }
    static func nextStepNumber() -> Int {
        counter.withLock {
            sequence += 1
            return sequence
        }
    }

    public static let defaultReadOnlyPaths = [
        "/usr", "/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32", "/etc/alternatives", "/etc/ld.so.cache",
        "/etc/ld.so.conf", "/etc/ld.so.conf.d", "/etc/localtime", "/etc/ssl/certs", "/etc/ca-certificates",
        "/etc/nsswitch.conf", "/etc/passwd", "/etc/group", "/etc/python3", "/etc/mime.types", "/opt/swift/usr/bin/never",
    ]
    public let readOnlyPaths: [String]
    /// Clone the way the first version did, copying the worker's page tables: only for the benchmark's baseline.
    public var copyAddressSpace = false
    /// Build the read-only view of the system for each step, as the first version did, instead of once on the
    /// spawner thread: only for the benchmark's baseline.
    public var buildRootPerStep = false
    /// The read-only view is built again this often, so that host files bound into it (`/etc/passwd`,
    /// `/etc/ld.so.cache`, which are replaced, not edited) are at most this old in a step.
    public var preparedRootLifetime: Duration = .seconds(60)
    /// When the spawner thread built the view (touched only on that thread); nil: build it at the next step.
    nonisolated(unsafe) private var preparedRootAt: ContinuousClock.Instant?
    /// The spawner thread's namespace generation the view was built in (a fresh namespace drops older views).
    nonisolated(unsafe) private var preparedGeneration: Int32 = 0
    nonisolated(unsafe) private var preparedRootFailed = false
    /// A mount namespace holding only the prepared view (csandbox_view_namespace): steps copy it instead of the
    /// spawner's whole namespace. -1: none (each step copies the spawner's and pivots into the view).
    nonisolated(unsafe) private var viewNamespaceFD: Int32 = -1
    /// Set when the view namespace could not be made (logged once; steps take the longer way).
    nonisolated(unsafe) private var viewNamespaceFailed = false
    /// Make no view namespace: only for the benchmark's baseline.
    public var skipViewNamespace = false

    public init(mode: SandboxMode, network: StepNetwork = .none, stateDirectory: String, extraReadOnlyPaths: [String] = [],
                logger: Logger = Logger(label: "runtime-worker.sandbox")) throws {
        self.mode = mode
        self.network = network
        self.logger = logger
        readOnlyPaths = Self.defaultReadOnlyPaths.filter { !$0.hasPrefix("/opt/swift") } + extraReadOnlyPaths
            + (network == .host ? ["/etc/resolv.conf", "/etc/hosts"] : [])
        // One per runner: the spawner thread holds each runner's prepared view at its own root.
        rootDirectory = stateDirectory + "/sandbox-root-\(Self.nextRunnerNumber())"
        try FileManager.default.createDirectory(atPath: rootDirectory, withIntermediateDirectories: true)
        cgroups = Cgroups(name: "lightning-runtime-\(getpid())") { "step-\(SandboxRunner.nextStepNumber())" }
        useNamespaces = mode != .none
        // A worker that is not root cannot join a network namespace it made (it holds no capability over it): each
        // step gets an empty one of its own in its user namespace instead (about 0.8 ms more per step).
        ownNetworkNamespace = useNamespaces && network == .none && geteuid() != 0
        if useNamespaces && network == .none && !ownNetworkNamespace {
            netnsFD = csandbox_empty_netns()
            if netnsFD < 0 {
                throw SandboxError.unavailable(Self.howToFix("could not create an empty network namespace: \(String(cString: strerror(errno)))"))
            }
        } else {
            netnsFD = -1
        }
        if useNamespaces { try probe() }
        logger.info("sandbox ready", metadata: [
            "sandbox.mode": "\(mode.rawValue)", "sandbox.namespaces": "\(useNamespaces)", "sandbox.network": "\(network.rawValue)",
            "sandbox.cgroups": "\(cgroups?.description ?? "unavailable: no memory or pids limits")",
            "sandbox.user": "\(geteuid() == 0 ? "root" : "uid \(geteuid()), in user namespaces")",
        ])
        if geteuid() != 0 && useNamespaces {
            if cgroups == nil {
                let fix = FileManager.default.fileExists(atPath: Cgroups.v1Hierarchies[0] + "/cgroup.procs")
                    ? "hand this user a cgroup subtree once per boot, as root: runtime-worker setup-cgroups --user \(Self.userName(geteuid()))"
                    : "this worker does not yet use a delegated cgroup v2 subtree (docs/workers.md)"
                logger.warning("no cgroup for steps: their memory and process limits are off (only rlimits apply); \(fix)")
            }
            let groups = Self.supplementaryGroups()
            if !groups.isEmpty {
                logger.warning("""
                    the worker's supplementary groups (\(groups.map(String.init).joined(separator: ", "))) stay with its \
                    steps: a user namespace made without privileges cannot drop them. Run the worker as a user in no \
                    other group.
                    """)
            }
        }
    }

    /// This process's groups other than its own gid.
    static func supplementaryGroups() -> [gid_t] {
        let n = getgroups(0, nil)
        guard n > 0 else { return [] }
        var list = [gid_t](repeating: 0, count: Int(n))
        let got = getgroups(n, &list)
        return got > 0 ? Array(list.prefix(Int(got))).filter { $0 != getegid() } : []
    }

    /// The name of user `uid`, or the number when it has none.
    static func userName(_ uid: uid_t) -> String {
        guard let pw = getpwuid(uid), let name = pw.pointee.pw_name else { return "\(uid)" }
        return String(cString: name)
    }

    /// What stops user namespaces on this host, read from the settings that can (nil when none of them is set).
    static func userNamespaceBlocker() -> String? {
        func value(_ path: String) -> String? {
            (try? String(contentsOfFile: path, encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines)
        }
        if value("/proc/sys/kernel/unprivileged_userns_clone") == "0" {
            return "kernel.unprivileged_userns_clone is 0 (sysctl -w kernel.unprivileged_userns_clone=1)"
        }
        if value("/proc/sys/user/max_user_namespaces") == "0" {
            return "user.max_user_namespaces is 0 (sysctl -w user.max_user_namespaces=10000)"
        }
        if value("/proc/sys/kernel/apparmor_restrict_unprivileged_userns") == "1" {
            return "AppArmor restricts unprivileged user namespaces (sysctl -w kernel.apparmor_restrict_unprivileged_userns=0, "
                + "or an AppArmor profile for runtime-worker that allows userns)"
        }
        return nil
    }

    static func howToFix(_ problem: String) -> String {
        guard geteuid() != 0 else {
            return "the step sandbox is unavailable: \(problem). Pass --sandbox none to run steps without isolation, knowingly."
        }
        let blocker = userNamespaceBlocker().map { "; on this host \($0)" } ?? ""
        return """
            the step sandbox is unavailable: \(problem). A worker that is not root needs unprivileged user \
            namespaces\(blocker). Allow them, run the worker as root, or pass --sandbox none to run steps without \
            isolation, knowingly (they then run as this worker's user, with its rights over its own files).
            """
    }

    /// Runs /bin/true in the sandbox once, so a host without namespaces is found at start, not at the first step.
    private func probe() throws {
        let dir = rootDirectory + "-probe"
        try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: dir) }
        chown(dir, 65534, 65534)
        var pipe: [Int32] = [0, 0]
        guard Glibc.pipe(&pipe) == 0 else { throw SandboxError.unavailable("pipe failed") }
        defer { close(pipe[0]) }
        do {
            let launch = StepLaunch(executable: "/bin/true", arguments: ["true"], environment: [:], workDirectory: dir, tmpDirectory: dir)
            let pid = try SpawnerThread.shared.runBlocking { try self.spawnHere(launch, stdout: pipe[1], stderr: pipe[1], group: nil) }
            close(pipe[1])
            var status: Int32 = 0
            waitpid(pid, &status, 0)
        } catch {
            close(pipe[1])
            throw SandboxError.unavailable(Self.howToFix("\(error)"))
        }
    }

    /// Spawns on the one long-lived spawner thread: the parent-death signal follows the thread that cloned the
    /// step, and Dispatch's pool threads exit when idle (which killed steps after about 5 s).
    private func spawn(_ launch: StepLaunch, stdout: Int32, stderr: Int32, group: Cgroups.Group?) async throws -> pid_t {
        // The work directory as this thread (in the host's mount namespace) sees it, for the spawner to compare.
        var st = stat()
        let work: (dev_t, ino_t)? = stat(launch.workDirectory, &st) == 0 ? (st.st_dev, st.st_ino) : nil
        return try await SpawnerThread.shared.run {
            try self.spawnHere(launch, stdout: stdout, stderr: stderr, group: group, work: work)
        }
    }

    /// On the spawner thread: the read-only view of the system, built at most once per `preparedRootLifetime` (as
    /// root, with namespaces). It is built from a fresh copy of the host's mounts when its lifetime ran out or when
    /// the step's work directory (`work`: device and inode as the caller sees it) is not the same directory in the
    /// spawner's copy (a mount made on the host since, which reaches that copy only if it was shared). False: each
    /// step builds the view (not root, or building it failed).
    private func preparedRoot(workDirectory: String, work: (dev_t, ino_t)?) throws -> Bool {
        guard useNamespaces, !buildRootPerStep, !preparedRootFailed, geteuid() == 0 else { return false }
        let sees = { () -> Bool in work.map { Self.sameFile(workDirectory, $0) } ?? true }
        var fresh = preparedRootAt.map { ContinuousClock.now - $0 >= preparedRootLifetime } ?? false
        if !fresh, preparedRootAt != nil {
            if !sees() { fresh = true }
            else if preparedGeneration == csandbox_namespace_generation() { return true }
        }
        try buildView(fresh: fresh)
        if preparedRootFailed { return false }
        if !sees() {
            throw SandboxError.spawn("the work directory \(workDirectory) is not the same directory in the sandbox's view of the host's mounts")
        }
        return true
    }

    static func sameFile(_ path: String, _ id: (dev_t, ino_t)) -> Bool {
        var st = stat()
        return stat(path, &st) == 0 && st.st_dev == id.0 && st.st_ino == id.1
    }

    private func buildView(fresh: Bool) throws {
        var error = [CChar](repeating: 0, count: 512)
        let paths = readOnlyPaths.map { strdup($0) }
        defer { paths.forEach { free($0) } }
        let binds = paths.map { UnsafePointer($0) } + [nil]
        let r = binds.withUnsafeBufferPointer {
            csandbox_prepare_root(rootDirectory, $0.baseAddress, fresh ? 1 : 0, &error, error.count)
        }
        guard r == 0 else {
            preparedRootFailed = true
            dropViewNamespace()  // its mounts go with it
            logger.warning("could not prepare the read-only view of the system once; each step builds its own", metadata: [
                "error": "\(Self.text(error))"])
            return
        }
        preparedRootAt = .now
        preparedGeneration = csandbox_namespace_generation()
        dropViewNamespace()  // steps running keep their own copies
        guard !viewNamespaceFailed else { return }
        viewNamespaceFD = csandbox_view_namespace(rootDirectory, &error, error.count)
        if viewNamespaceFD < 0 {
            viewNamespaceFailed = true
            logger.notice("steps copy the host's mount namespace (slower): no namespace of the view alone", metadata: [
                "error": "\(Self.text(error))"])
        }
    }

    /// Closes the view namespace's fd, if any (on the spawner thread).
    private func dropViewNamespace() {
        if viewNamespaceFD >= 0 { close(viewNamespaceFD) }
        viewNamespaceFD = -1
    }

    /// The C side's NUL-terminated error text.
    static func text(_ buffer: [CChar]) -> String {
        String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
    }

    deinit {
        // The prepared view lives in the spawner thread's mount namespace only: unmount it there.
        SpawnerThread.shared.post { [rootDirectory, preparedRootAt, preparedGeneration, viewNamespaceFD] in
            if viewNamespaceFD >= 0 { close(viewNamespaceFD) }
            if preparedRootAt != nil && preparedGeneration == csandbox_namespace_generation() {
                _ = umount2(rootDirectory, Int32(MNT_DETACH))
            }
            _ = rmdir(rootDirectory)
        }
    }

    /// Whether a spawn failed at a stage of the view namespace's own (csandbox.c) for want of permission or
    /// support, not for the step's sake (a missing directory or program fails the longer way too).
    static func refusedViewNamespace(_ message: String) -> Bool {
        let stages = ["clone the work directory's mount", "clone the private /tmp's mount", "make the step's directories nosuid,nodev",
                      "enter the view's mount namespace", "copy the view's mount namespace", "attach the work directory",
                      "attach the private /tmp"]
        let refusals = [EPERM, EACCES, ENOSYS, EINVAL].map { String(cString: strerror($0)) }
        return stages.contains { message.hasPrefix($0 + ":") } && refusals.contains { message.hasSuffix(": " + $0) }
    }

    private func spawnHere(_ launch: StepLaunch, stdout: Int32, stderr: Int32, group: Cgroups.Group?,
                           work: (dev_t, ino_t)? = nil) throws -> pid_t {
        let prepared = try preparedRoot(workDirectory: launch.workDirectory, work: work)
        var cStrings: [UnsafeMutablePointer<CChar>?] = []
        defer { cStrings.forEach { free($0) } }
        func c(_ s: String) -> UnsafeMutablePointer<CChar>? {
            let p = strdup(s)
            cStrings.append(p)
            return p
        }
        let argv = launch.arguments.map(c) + [nil]
        let envp = launch.environment.sorted { $0.key < $1.key }.map { c("\($0.key)=\($0.value)") } + [nil]
        let binds = readOnlyPaths.map { UnsafePointer(c($0)) } + [nil]
        let fds = group?.procsFDs ?? []
        var error = [CChar](repeating: 0, count: 512)
        let pid: pid_t = argv.withUnsafeBufferPointer { argvBuf in
            envp.withUnsafeBufferPointer { envBuf in
                binds.withUnsafeBufferPointer { bindBuf in
                    fds.withUnsafeBufferPointer { fdBuf in
                        var config = csandbox_config()
                        config.path = UnsafePointer(c(launch.executable))
                        config.argv = UnsafePointer(argvBuf.baseAddress)
                        config.envp = UnsafePointer(envBuf.baseAddress)
                        config.workdir = UnsafePointer(c(launch.workDirectory))
                        config.tmpdir = UnsafePointer(c(launch.tmpDirectory))
                        config.rootdir = UnsafePointer(c(rootDirectory))
                        config.ro_binds = UnsafePointer(bindBuf.baseAddress)
                        config.stdout_fd = stdout
                        config.stderr_fd = stderr
                        config.flags = (useNamespaces ? Int32(CSANDBOX_NAMESPACES) : 0)
                            | (netnsFD >= 0 ? Int32(CSANDBOX_SHARE_NETNS) : 0)
                            | (copyAddressSpace ? Int32(CSANDBOX_COPY_VM) : 0)
                            | (prepared ? Int32(CSANDBOX_PREPARED_ROOT) : 0)
                            | (ownNetworkNamespace ? Int32(CSANDBOX_NEW_NETNS) : 0)
                        config.netns_fd = netnsFD
                        config.view_ns_fd = prepared && !skipViewNamespace ? viewNamespaceFD : -1
                        config.cgroup_procs_fds = fdBuf.baseAddress
                        config.cgroup_count = Int32(fdBuf.count)
                        config.uid = 65534
                        config.gid = 65534
                        config.rlimit_nofile = 1024
                        config.rlimit_fsize = launch.fileSizeLimitBytes
                        // Without a pids cgroup, RLIMIT_NPROC is the fork-bomb guard (per uid: shared by all steps).
                        config.rlimit_nproc = group == nil ? launch.pidsLimit * 4 : 0
                        return csandbox_spawn(&config, &error, error.count)
                    }
                }
            }
        }
        if pid < 0 {
            let message = Self.text(error)
            if prepared && viewNamespaceFD >= 0 && !skipViewNamespace && Self.refusedViewNamespace(message) {
                // Entering the view's namespace or attaching the directories was refused (a seccomp profile, an
                // older kernel than the probe saw): this and every later step take the longer way.
                logger.notice("steps copy the host's mount namespace (slower): the view's own was refused", metadata: [
                    "error": "\(message)"])
                viewNamespaceFailed = true
                dropViewNamespace()
                return try spawnHere(launch, stdout: stdout, stderr: stderr, group: group, work: work)
            }
            throw SandboxError.spawn(message)
        }
        return pid
    }

    /// Runs one step to completion. `onLines` gets its output lines in order, on the step reactor's thread,
    /// which every step shares: it must not block. A consumer that holds too many lines calls
    /// `control.holdOutput()`, which pauses reading (and so, once the pipe is full, the step): nothing is dropped.
    public func run(_ launch: StepLaunch, control: StepControl = StepControl(),
                    onLines: @escaping @Sendable ([(StepStream, String)]) -> Void) async throws -> StepTermination {
        // The step's uid must be able to use its directories (as root it drops to 65534 in every mode).
        if geteuid() == 0 {
            chown(launch.workDirectory, 65534, 65534)
            chown(launch.tmpDirectory, 65534, 65534)
        }
        let group = try cgroups?.acquire(memoryBytes: launch.memoryLimitBytes, pids: launch.pidsLimit)
        var out: [Int32] = [0, 0], err: [Int32] = [0, 0]
        guard csandbox_pipe_cloexec(&out) == 0, csandbox_pipe_cloexec(&err) == 0 else {
            group.map { cgroups?.release($0) }
            throw SandboxError.spawn("pipe: \(String(cString: strerror(errno)))")
        }
        let started = ContinuousClock.now
        let pid: pid_t
        do {
            pid = try await spawn(launch, stdout: out[1], stderr: err[1], group: group)
        } catch {
            for fd in out + err { close(fd) }
            group.map { cgroups?.release($0) }
            throw error
        }
        close(out[1])
        close(err[1])
        if !control.attach(pid: pid, group: group) { control.killNow() }

        let timedOut = Flag()
        let status = await StepReactor.shared.watch(pid: pid, group: group, control: control, out: out[0], err: err[0],
                                                    maxLineBytes: launch.maxLineBytes, deadline: started + launch.timeout,
                                                    onTimeout: {
                                                        timedOut.set()
                                                        control.killNow()
                                                    }, onLines: onLines)
        let termination = StepTermination(
            exitCode: (status & 0x7f) == 0 ? (status >> 8) & 0xff : nil,
            signal: (status & 0x7f) != 0 ? status & 0x7f : nil,
            timedOut: timedOut.isSet, oomKilled: group?.oomKilled ?? false, cancelled: control.wasCancelled,
            peakMemoryBytes: group?.peakMemoryBytes ?? 0,
            durationMS: Int64((ContinuousClock.now - started).components.seconds * 1000
                + (ContinuousClock.now - started).components.attoseconds / 1_000_000_000_000_000))
        group.map { cgroups?.release($0) }
        return termination
    }
}

/// One thread that lives as long as the process and does every clone(), so that steps die with the worker
/// (PR_SET_PDEATHSIG fires when the *thread* that created the child exits).
final class SpawnerThread: @unchecked Sendable {
    static let shared = SpawnerThread()
    private let condition = NSCondition()
    private var work: [() -> Void] = []

    private init() {
        let thread = Thread { [self] in
            nameCurrentThread("step-spawner")
            while true {
                condition.lock()
                while work.isEmpty { condition.wait() }
                let next = work.removeFirst()
                condition.unlock()
                next()
            }
        }
        thread.start()
    }

    /// Runs `body` on the spawner thread and waits (blocking: only for the probe at start).
    func runBlocking<T>(_ body: @escaping () throws -> T) throws -> T {
        let done = DispatchSemaphore(value: 0)
        nonisolated(unsafe) var result: Result<T, any Error>?
        post {
            result = Result { try body() }
            done.signal()
        }
        done.wait()
        return try result!.get()
    }

    /// Runs `body` on the spawner thread; the caller's task waits without holding a thread.
    func run<T: Sendable>(_ body: @escaping () throws -> T) async throws -> T {
        try await withCheckedThrowingContinuation { (c: CheckedContinuation<T, any Error>) in
            post { c.resume(with: Result { try body() }) }
        }
    }

    func post(_ job: @escaping () -> Void) {
        condition.lock()
        work.append(job)
        condition.signal()
        condition.unlock()
    }
}

final class Flag: Sendable {
    private let value = Atomic<Bool>(false)
    func set() { value.store(true, ordering: .sequentiallyConsistent) }
    var isSet: Bool { value.load(ordering: .sequentiallyConsistent) }
}
