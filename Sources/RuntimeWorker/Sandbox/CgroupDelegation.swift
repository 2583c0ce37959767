import Foundation

/// `runtime-worker setup-cgroups --user U`: hands user U a subtree of each cgroup v1 hierarchy that steps are
/// limited through (memory, pids), so that a worker running as U makes its steps' groups there. Run as root, once
/// per boot (cgroup directories do not survive a reboot).
public enum CgroupDelegation {
    public enum Failure: Error, CustomStringConvertible {
        case notRoot
        case unifiedOnly
        case missingHierarchy(String)
        case system(String)

        public var description: String {
            switch self {
            case .notRoot: "setup-cgroups must run as root: it hands a cgroup subtree to another user"
            case .unifiedOnly:
                """
                this host has cgroup v2 only: there the worker's own cgroup must be delegated to it, which is the \
                service manager's job (systemd: Delegate=memory pids in the worker's unit, see docs/workers.md); \
                setup-cgroups handles cgroup v1
                """
            case .missingHierarchy(let path): "no cgroup v1 hierarchy at \(path): mount the memory and pids controllers first"
            case .system(let message): message
            }
        }
    }

    /// The subtrees made (or found) and handed to `uid`:`gid`: a directory per hierarchy, it and its control files
    /// owned by the user. Idempotent.
    @discardableResult
    public static func delegate(uid: uid_t, gid: gid_t, root: String = "/sys/fs/cgroup") throws -> [String] {
        guard geteuid() == 0 else { throw Failure.notRoot }
        let fm = FileManager.default
        let hierarchies = Cgroups.v1Hierarchies.map { root + "/" + ($0 as NSString).lastPathComponent }
        if !hierarchies.contains(where: { fm.fileExists(atPath: $0 + "/cgroup.procs") }),
            fm.fileExists(atPath: root + "/cgroup.controllers")
        {
            throw Failure.unifiedOnly
        }
        var made: [String] = []
        for hierarchy in hierarchies {
            guard fm.fileExists(atPath: hierarchy + "/cgroup.procs") else { throw Failure.missingHierarchy(hierarchy) }
            let dir = hierarchy + "/" + Cgroups.delegatedName(uid: uid)
            if mkdir(dir, 0o755) != 0 && errno != EEXIST {
                throw Failure.system("cannot make \(dir): \(String(cString: strerror(errno)))")
            }
            // The directory (so the user can make groups in it) and its files; groups the user makes are its own.
            let files = ((try? fm.contentsOfDirectory(atPath: dir)) ?? []).map { dir + "/" + $0 }
            for path in [dir] + files where !isDirectory(path) || path == dir {
                if chown(path, uid, gid) != 0 {
                    throw Failure.system("cannot hand \(path) to uid \(uid): \(String(cString: strerror(errno)))")
                }
            }
            made.append(dir)
        }
        return made
    }

    /// uid and gid of a user given by name or number.
    public static func user(_ nameOrID: String) -> (uid: uid_t, gid: gid_t)? {
        if let pw = getpwnam(nameOrID) { return (pw.pointee.pw_uid, pw.pointee.pw_gid) }
        if let id = uid_t(nameOrID) { return (id, getpwuid(id)?.pointee.pw_gid ?? gid_t(id)) }
        return nil
    }

    private static func isDirectory(_ path: String) -> Bool {
        var st = stat()
        return lstat(path, &st) == 0 && (st.st_mode & S_IFMT) == S_IFDIR
    }
}
