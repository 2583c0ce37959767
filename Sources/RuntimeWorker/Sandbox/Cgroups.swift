import Foundation

/// Memory and pids limits for steps through cgroups: v2 where the host's unified hierarchy has both
/// controllers, v1 otherwise. Each step gets its own group under one parent made at start.
final class Cgroups: @unchecked Sendable {
    enum Version { case v1(memory: String, pids: String), v2(String) }
    let version: Version
    /// This process's own cgroup.procs in the v1 pids hierarchy, for `warmUp()`.
    private let ownProcs: String?

    /// nil when no usable hierarchy is writable here.
    init?(name: String) {
        ownProcs = Self.ownV1Procs()
        let fm = FileManager.default
        for unified in ["/sys/fs/cgroup", "/sys/fs/cgroup/unified"] {
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
        let memory = "/sys/fs/cgroup/memory/" + name, pids = "/sys/fs/cgroup/pids/" + name
        do {
            try fm.createDirectory(atPath: memory, withIntermediateDirectories: true)
            try fm.createDirectory(atPath: pids, withIntermediateDirectories: true)
        } catch { return nil }
        // Allow setting memsw limits below the parent's.
        version = .v1(memory: memory, pids: pids)
    }

    /// Moving a process into a v1 cgroup takes a kernel-wide lock whose first use after a quiet spell waits for an
    /// RCU grace period: 7-10 ms on this machine, paid once per hierarchy by the step's spawn. Taking the lock
    /// early (writing our own pid into our own group: nothing moves) puts that wait off the critical path, so the
    /// step's attach a few milliseconds later is cheap. Does nothing on v2, where no such wait was seen.
    func warmUp() {
        guard case .v1 = version, let path = ownProcs else { return }
        DispatchQueue.global().async {
            let fd = open(path, O_WRONLY | O_CLOEXEC)
            guard fd >= 0 else { return }
            let pid = Array(String(getpid()).utf8)
            _ = pid.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
            close(fd)
        }
    }

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

    /// One step's group.
    final class Group: @unchecked Sendable {
        let dirs: [String]
        let procsFDs: [Int32]
        let version: Version

        init(version: Version, name: String, memoryBytes: Int64, pids: Int) throws {
            self.version = version
            let fm = FileManager.default
            switch version {
            case .v1(let memory, let pidsRoot):
                dirs = [memory + "/" + name, pidsRoot + "/" + name]
                for d in dirs { try fm.createDirectory(atPath: d, withIntermediateDirectories: true) }
                try Self.write("\(memoryBytes)", dirs[0] + "/memory.limit_in_bytes")
                if fm.fileExists(atPath: dirs[0] + "/memory.memsw.limit_in_bytes") {
                    try? Self.write("\(memoryBytes)", dirs[0] + "/memory.memsw.limit_in_bytes")
                }
                try Self.write("\(pids)", dirs[1] + "/pids.max")
            case .v2(let root):
                dirs = [root + "/" + name]
                try fm.createDirectory(atPath: dirs[0], withIntermediateDirectories: true)
                try Self.write("\(memoryBytes)", dirs[0] + "/memory.max")
                try? Self.write("0", dirs[0] + "/memory.swap.max")
                try Self.write("\(pids)", dirs[0] + "/pids.max")
            }
            procsFDs = dirs.map { open($0 + "/cgroup.procs", O_WRONLY | O_CLOEXEC) }
            if procsFDs.contains(-1) { throw SandboxError.cgroup("cannot open cgroup.procs in \(dirs)") }
        }

        static func write(_ text: String, _ path: String) throws {
            let fd = open(path, O_WRONLY | O_CLOEXEC)
            guard fd >= 0 else { throw SandboxError.cgroup("cannot open \(path): \(String(cString: strerror(errno)))") }
            defer { close(fd) }
            let ok = text.withCString { Glibc.write(fd, $0, strlen($0)) } >= 0
            if !ok { throw SandboxError.cgroup("cannot write \(text) to \(path): \(String(cString: strerror(errno)))") }
        }

        func read(_ file: String, in dir: Int = 0) -> String {
            (try? String(contentsOfFile: dirs[dir] + "/" + file, encoding: .utf8)) ?? ""
        }

        /// Whether the kernel's OOM killer acted in this group.
        var oomKilled: Bool {
            switch version {
            case .v1:
                let control = read("memory.oom_control")
                if let line = control.split(separator: "\n").first(where: { $0.hasPrefix("oom_kill ") }),
                    let n = Int(line.split(separator: " ").last ?? "0") { return n > 0 }
                return (Int(read("memory.failcnt").trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0) > 0
            case .v2:
                let events = read("memory.events")
                return events.split(separator: "\n").contains { $0.hasPrefix("oom_kill ") && !$0.hasSuffix(" 0") }
            }
        }

        var peakMemoryBytes: Int64 {
            switch version {
            case .v1: Int64(read("memory.max_usage_in_bytes").trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0
            case .v2: Int64(read("memory.peak").trimmingCharacters(in: .whitespacesAndNewlines))
                ?? Int64(read("memory.current").trimmingCharacters(in: .whitespacesAndNewlines)) ?? 0
            }
        }

        /// Every process still in the group.
        var pids: [pid_t] {
            dirs.flatMap { d in
                ((try? String(contentsOfFile: d + "/cgroup.procs", encoding: .utf8)) ?? "").split(separator: "\n").compactMap { pid_t($0) }
            }
        }

        /// Kills what is left and removes the group.
        func destroy() {
            for fd in procsFDs where fd >= 0 { close(fd) }
            for _ in 0..<100 {
                let left = pids
                if left.isEmpty { break }
                for p in left { kill(p, SIGKILL) }
                usleep(2000)
            }
            for d in dirs { rmdir(d) }
        }
    }

    func group(name: String, memoryBytes: Int64, pids: Int) throws -> Group {
        try Group(version: version, name: name, memoryBytes: memoryBytes, pids: pids)
    }
}
