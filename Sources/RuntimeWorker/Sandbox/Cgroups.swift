import Channels
import Foundation

/// Memory and pids limits for steps through cgroups: v2 where the host's unified hierarchy has both
/// controllers, v1 otherwise. Each step gets a group of its own under one parent made at start. Groups are
/// pooled: a finished step's group is emptied, reset and handed to a later step, so a step costs no mkdir or
/// rmdir (about 0.4 ms for the two v1 hierarchies); one is made ahead when a claim arrives.
final class Cgroups: @unchecked Sendable {
    enum Version { case v1(memory: String, pids: String), v2(String) }
    let version: Version
    /// This process's own cgroup.procs in the v1 pids hierarchy, for `warmUp()`.
    private let ownProcs: String?
    private let poolLock = NSLock()
    private var idle: [Group] = []
    /// Idle groups kept at most; more are removed.
    let maxIdle = 64
    /// Names for new groups, unique in this process.
    private let nextName: @Sendable () -> String

    /// The v1 hierarchies steps are limited through.
    static let v1Hierarchies = ["/sys/fs/cgroup/memory", "/sys/fs/cgroup/pids"]

    /// The subtree of each v1 hierarchy that `runtime-worker setup-cgroups --user` hands to the user `uid`: a worker
    /// that is not root makes its groups there.
    static func delegatedName(uid: uid_t) -> String { "lightning-runtime-user-\(uid)" }

    /// Where this process makes its groups in each v1 hierarchy: the hierarchy itself as root, else the subtree
    /// handed to its user.
    static func v1Parents() -> [String] {
        geteuid() == 0 ? v1Hierarchies : v1Hierarchies.map { $0 + "/" + delegatedName(uid: geteuid()) }
    }

    /// nil when no usable hierarchy is writable here.
    init?(name: String, nextName: @escaping @Sendable () -> String) {
        self.nextName = nextName
        ownProcs = Self.ownV1Procs()
        let fm = FileManager.default
        Self.removeStale(prefix: "lightning-runtime-")
        for unified in ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"] where geteuid() == 0 {
            let controllers = (try? String(contentsOfFile: unified + "/cgroup.controllers", encoding: .utf8)) ?? ""
            if controllers.contains("memory") && controllers.contains("pids") {
                let dir = unified + "/" + name
                try? fm.createDirectory(atPath: dir, withIntermediateDirectories: true)
                try? "+memory +pids".write(toFile: dir + "/cgroup.subtree_control", atomically: false, encoding: .utf8)
                if fm.isWritableFile(atPath: dir + "/cgroup.subtree_control") {
                    version = .v2(dir)
                    return
                }
            }
        }
        let parents = Self.v1Parents()
        let memory = parents[0] + "/" + name, pids = parents[1] + "/" + name
        do {
            try fm.createDirectory(atPath: memory, withIntermediateDirectories: true)
            try fm.createDirectory(atPath: pids, withIntermediateDirectories: true)
        } catch { return nil }
        // Allow setting memsw limits below the parent's.
        version = .v1(memory: memory, pids: pids)
    }

    deinit {
        for g in poolLock.withLock({ idle }) { g.destroy() }
    }

    /// Groups left by workers that are gone (killed, or exited with groups pooled): removed at start.
    static func removeStale(prefix: String) {
        let fm = FileManager.default
        for root in Self.v1Parents() + ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"] {
            for entry in (try? fm.contentsOfDirectory(atPath: root)) ?? [] where entry.hasPrefix(prefix) {
                guard let pid = pid_t(entry.dropFirst(prefix.count)), pid != getpid(), kill(pid, 0) != 0, errno == ESRCH else { continue }
                let dir = root + "/" + entry
                for child in (try? fm.contentsOfDirectory(atPath: dir)) ?? [] where child.hasPrefix("step-") { rmdir(dir + "/" + child) }
                rmdir(dir)
            }
        }
    }

    /// A group for one step with these limits: a pooled one when there is one, else a new one.
    func acquire(memoryBytes: Int64, pids: Int) throws -> Group {
        if let g = poolLock.withLock({ idle.popLast() }) {
            do {
                try g.setLimits(memoryBytes: memoryBytes, pids: pids)
                return g
            } catch {
                g.destroy()
            }
        }
        let g = try Group(version: version, name: nextName())
        try g.setLimits(memoryBytes: memoryBytes, pids: pids)
        return g
    }

    /// The step is over: its group is emptied and kept for the next step (or removed when it cannot be reset
    /// or enough are idle).
    func release(_ g: Group) {
        keepAttachWarm()  // the next step (often the next attempt's) comes soon
        guard g.empty(), g.reset(), poolLock.withLock({ idle.count < maxIdle }) else {
            g.destroy()
            return
        }
        poolLock.withLock { idle.append(g) }
    }

    /// Groups idle in the pool.
    var idleCount: Int { poolLock.withLock { idle.count } }

    /// Makes one group ahead when none is idle, off the step's path.
    private func fillPool() {
        guard poolLock.withLock({ idle.isEmpty }) else { return }
        DispatchQueue.global().async { [self] in
            guard let g = try? Group(version: version, name: nextName()) else { return }
            if g.reset() { poolLock.withLock { idle.append(g) } } else { g.destroy() }
        }
    }

    /// Moving a process into a v1 cgroup takes a kernel-wide lock (the threadgroup rwsem) whose first use after a
    /// quiet spell waits for an RCU grace period: 14 ms here after 100 ms of quiet, 0.01 ms when it was used a few
    /// ms before. A worker that runs one attempt now and then paid that on every step. So while work is about
    /// (for `warmSeconds` after a claim or a step), a thread takes the lock every 3 ms by writing our own pid into
    /// our own group (nothing moves; about 20 µs each), and every step's attach is cheap. The proper fix is to not
    /// attach at all (a spawner already in the pooled group; CLONE_INTO_CGROUP on v2). Nothing on v2, where no
    /// such wait was seen.
    func warmUp() {
        fillPool()
        keepAttachWarm()
    }

    private func keepAttachWarm() {
        guard case .v1 = version, let path = ownProcs else { return }
        let start = poolLock.withLock { () -> Bool in
            warmUntil = ContinuousClock.now + .seconds(warmSeconds)
            defer { warming = true }
            return !warming
        }
        guard start else { return }
        let thread = Thread { [self] in
            nameCurrentThread("cgroup-warm")
            let fd = open(path, O_WRONLY | O_CLOEXEC)
            defer { if fd >= 0 { close(fd) } }
            let pid = Array(String(getpid()).utf8)
            while fd >= 0 {
                _ = pid.withUnsafeBytes { pwrite(fd, $0.baseAddress, $0.count, 0) }
                let more = poolLock.withLock { () -> Bool in
                    if ContinuousClock.now < warmUntil { return true }
                    warming = false
                    return false
                }
                if !more { return }
                usleep(3000)
            }
            poolLock.withLock { warming = false }
        }
        thread.start()
    }

    private var warmUntil = ContinuousClock.now
    private var warming = false
    /// How long after the last claim or step the attach lock is kept warm.
    let warmSeconds = 2

    private static func ownV1Procs() -> String? {
        guard let text = try? String(contentsOfFile: "/proc/self/cgroup", encoding: .utf8) else { return nil }
        for line in text.split(separator: "\n") {
            let parts = line.split(separator: ":", maxSplits: 2, omittingEmptySubsequences: false)
            guard parts.count == 3, parts[1].split(separator: ",").contains("pids") else { continue }
            let path = "/sys/fs/cgroup/pids" + (parts[2] == "/" ? "" : String(parts[2])) + "/cgroup.procs"
            return FileManager.default.isWritableFile(atPath: path) ? path : nil
        }
        return nil
    }

    var description: String {
        switch version {
        case .v1: "cgroup v1 (memory, pids)"
        case .v2: "cgroup v2"
        }
    }

    /// One step's group (reused by later steps through the pool).
    final class Group: @unchecked Sendable {
        let dirs: [String]
        let procsFDs: [Int32]
        let version: Version
        private var limits: (memory: Int64, pids: Int)?
        /// The OOM-kill count when this use of the group began: counters only grow, so a reused group is judged
        /// by what changed.
        private var oomBaseline = 0
        /// v2: memory.peak opened once; writing to it resets the peak seen through this descriptor (Linux 6.12+).
        private var peakFD: Int32 = -1
        private var peakResettable = false
        /// The control files a step reads or writes, each opened on first use and kept until `destroy()`: a step
        /// reads or writes nine of them, and an open and close of a cgroup file (a path walk, a kernfs open) cost
        /// more than the read. Reading at offset 0 makes the kernel render the file afresh. Used by one step at a
        /// time (the pool hands a group to one runner), so no lock.
        private var kept: [String: Int32] = [:]

        /// An empty group; `setLimits` gives it its limits before each step.
        init(version: Version, name: String) throws {
            self.version = version
            let fm = FileManager.default
            switch version {
            case .v1(let memory, let pidsRoot):
                dirs = [memory + "/" + name, pidsRoot + "/" + name]
                for d in dirs { try fm.createDirectory(atPath: d, withIntermediateDirectories: true) }
            case .v2(let root):
                dirs = [root + "/" + name]
                try fm.createDirectory(atPath: dirs[0], withIntermediateDirectories: true)
                try? Self.write("0", dirs[0] + "/memory.swap.max")
                peakFD = open(dirs[0] + "/memory.peak", O_RDWR | O_CLOEXEC)
            }
            procsFDs = dirs.map { open($0 + "/cgroup.procs", O_WRONLY | O_CLOEXEC) }
            if procsFDs.contains(-1) {
                for fd in procsFDs where fd >= 0 { close(fd) }
                for d in dirs { rmdir(d) }
                throw SandboxError.cgroup("cannot open cgroup.procs in \(dirs)")
            }
        }

        /// Sets the limits for the next step (only those that differ from the last).
        func setLimits(memoryBytes: Int64, pids: Int) throws {
            if let l = limits, l.memory == memoryBytes, l.pids == pids { return }
            let fm = FileManager.default
            switch version {
            case .v1:
                // memsw must stay >= the memory limit: lower it last, raise it first.
                let memsw = dirs[0] + "/memory.memsw.limit_in_bytes"
                let hasMemsw = fm.fileExists(atPath: memsw)
                if hasMemsw { try? Self.write("\(max(memoryBytes, limits?.memory ?? 0))", memsw) }
                try Self.write("\(memoryBytes)", dirs[0] + "/memory.limit_in_bytes")
                if hasMemsw { try? Self.write("\(memoryBytes)", memsw) }
                try Self.write("\(pids)", dirs[1] + "/pids.max")
            case .v2:
                try Self.write("\(memoryBytes)", dirs[0] + "/memory.max")
                try Self.write("\(pids)", dirs[0] + "/pids.max")
            }
            limits = (memoryBytes, pids)
        }

        /// True when no process is left (it kills what it finds, for a while).
        func empty() -> Bool {
            for _ in 0..<100 {
                let left = pids
                if left.isEmpty { return true }
                for p in left { kill(p, SIGKILL) }
                usleep(2000)
            }
            return pids.isEmpty
        }

        /// Clears what the last step left (charged memory, peak, fail counts) so the next is measured alone.
        /// False when this host cannot reset a group: it is then not reused.
        func reset() -> Bool {
            switch version {
            case .v1:
                // What the last step left charged (page cache of files it wrote) is reclaimed when it is more than
                // a little: force_empty costs about 0.5 ms, more than the rest of a step's cgroup work together.
                let left = Int64(read("memory.usage_in_bytes").trimmingCharacters(in: .whitespacesAndNewlines)) ?? .max
                if left > Self.leftoverBytes {
                    guard (try? Self.write("0", dirs[0] + "/memory.force_empty")) != nil else { return false }
                }
                guard (try? writeKept("0", dirs[0] + "/memory.max_usage_in_bytes")) != nil else { return false }
                try? writeKept("0", dirs[0] + "/memory.failcnt")
            case .v2:
                guard peakFD >= 0, "reset".withCString({ Glibc.write(peakFD, $0, 5) }) == 5 else { return false }
                peakResettable = true
                try? Self.write("1", dirs[0] + "/memory.reclaim")
            }
            oomBaseline = oomKillCount
            return true
        }

        /// Memory a reused group may carry over from its last step (so the next step's peak is off by at most this).
        static let leftoverBytes: Int64 = 4 << 20

        private var oomKillCount: Int {
            let text = read(version.isV1 ? "memory.oom_control" : "memory.events")
            guard let line = text.split(separator: "\n").first(where: { $0.hasPrefix("oom_kill ") }) else { return 0 }
            return Int(line.split(separator: " ").last ?? "0") ?? 0
        }

        /// A kept descriptor of `path` ("r" or "w"), or -1.
        private func kept(_ path: String, writing: Bool) -> Int32 {
            let key = (writing ? "w " : "r ") + path
            if let fd = kept[key] { return fd }
            let fd = open(path, (writing ? O_WRONLY : O_RDONLY) | O_CLOEXEC)
            if fd >= 0 { kept[key] = fd }
            return fd
        }

        /// A control file read whole through its kept descriptor (`pread` from offset 0, so the kernel renders it
        /// afresh); a file over 4 KB (a cgroup.procs of a fork bomb) takes several reads.
        private func readKept(_ path: String) -> String {
            let fd = kept(path, writing: false)
            guard fd >= 0 else { return "" }
            var out: [UInt8] = []
            var buffer = [UInt8](repeating: 0, count: 4096)
            var offset = 0
            while true {
                let n = buffer.withUnsafeMutableBytes { pread(fd, $0.baseAddress, $0.count, off_t(offset)) }
                if n < 0 && errno == EINTR { continue }
                guard n > 0 else { break }
                out.append(contentsOf: buffer[..<n])
                offset += n
            }
            return String(decoding: out, as: UTF8.self)
        }

        /// `write` through a kept descriptor.
        private func writeKept(_ text: String, _ path: String) throws {
            try Self.write(text, fd: kept(path, writing: true), path: path)
        }

        static func write(_ text: String, _ path: String) throws {
            let fd = open(path, O_WRONLY | O_CLOEXEC)
            defer { if fd >= 0 { close(fd) } }
            try write(text, fd: fd, path: path)
        }

        /// Writes `text` at offset 0 of `fd`, opened from `path` (-1: it could not be, and errno says why).
        private static func write(_ text: String, fd: Int32, path: String) throws {
            guard fd >= 0 else { throw SandboxError.cgroup("cannot open \(path): \(String(cString: strerror(errno)))") }
            let ok = text.withCString { pwrite(fd, $0, strlen($0), 0) } >= 0
            if !ok { throw SandboxError.cgroup("cannot write \(text) to \(path): \(String(cString: strerror(errno)))") }
        }

        func read(_ file: String, in dir: Int = 0) -> String {
            readKept(dirs[dir] + "/" + file)
        }

        /// Whether the kernel's OOM killer acted in this group during this use of it.
        var oomKilled: Bool {
            if version.isV1, !read("memory.oom_control").contains("oom_kill ") {
                // Kernels without the counter: any failed charge counts.
                return (Int(read("memory.failcnt").trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0) > 0
            }
            return oomKillCount > oomBaseline
        }

        var peakMemoryBytes: Int64 {
            switch version {
            case .v1: return Int64(read("memory.max_usage_in_bytes").trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0
            case .v2:
                if peakFD >= 0 {
                    var buffer = [UInt8](repeating: 0, count: 32)
                    let n = pread(peakFD, &buffer, buffer.count, 0)
                    if n > 0, let v = Int64(String(decoding: buffer[..<n], as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)) {
                        return v
                    }
                }
                return Int64(read("memory.current").trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0
            }
        }

        /// Every process still in the group.
        var pids: [pid_t] {
            dirs.flatMap { d in
                readKept(d + "/cgroup.procs").split(separator: "\n").compactMap { pid_t($0) }
            }
        }

        /// Kills what is left and removes the group.
        func destroy() {
            _ = empty()
            for fd in procsFDs where fd >= 0 { close(fd) }
            for fd in kept.values { close(fd) }
            kept = [:]
            if peakFD >= 0 { close(peakFD) }
            for d in dirs { rmdir(d) }
        }
    }
}

extension Cgroups.Version {
    var isV1: Bool { if case .v1 = self { true } else { false } }
}
