internal import CSandbox
import Foundation

/// Step directories (`work/` and `tmp/`) kept for reuse instead of made and removed for every step: on ext4 the
/// four `mkdir`s, four `rmdir`s and two new inodes of each step were about a sixth of the worker's CPU (`perf`,
/// `inode` allocation scanning recently deleted inodes).
///
/// Only for a runner whose steps cannot outlive their end (pid namespaces: when the step exits the kernel kills
/// whatever it left running), so nothing writes into a directory after it is given back. Given back, a directory
/// is emptied, its mode, owner and ACLs reset, and only then handed to a later step; the two files the worker
/// writes there (the state and the job body) are kept and rewritten in place when they are still exactly the
/// files the worker made (same inode, a plain file, one link, owned by the worker). Anything else, or anything
/// that cannot be cleaned, is removed whole and the next step gets a fresh directory.
public final class StepDirectories: @unchecked Sendable {
    public struct Entry: Sendable {
        public let path: String
        public var work: String { path + "/work" }
        public var tmp: String { path + "/tmp" }
        /// Files the worker wrote into `work`, by name: device and inode as made.
        var files: [String: FileIdentity] = [:]
    }

    struct FileIdentity: Sendable, Equatable {
        var device: UInt64
        var inode: UInt64
    }

    public let root: String
    /// At most this many clean directories are kept.
    public let keep: Int
    private let lock = NSLock()
    private var ready: [Entry] = []
    private var made = 0
    /// Directories reused, and ones removed instead (for tests and figures).
    public private(set) var reused = 0
    public private(set) var discarded = 0

    /// Takes `root` over: whatever a previous run left there is removed first. With `keep` 0 nothing is reused:
    /// each directory is removed when given back (an attempt's own directories, when steps may outlive their end).
    public init(root: String, keep: Int) throws {
        self.root = root
        self.keep = max(0, keep)
        AttemptExecutor.removeTree(root)
        try AttemptExecutor.makeDirectory(root)
    }

    /// A clean directory with an empty `work/` and `tmp/`.
    public func take() throws -> Entry {
        if let entry = lock.withLock({ ready.popLast() }) {
            lock.withLock { reused += 1 }
            return entry
        }
        let n = lock.withLock { () -> Int in
            made += 1
            return made
        }
        let entry = Entry(path: root + "/\(n)")
        for d in [entry.path, entry.work, entry.tmp] { try AttemptExecutor.makeDirectory(d) }
        return entry
    }

    /// Writes `name` in the entry's `work/` with `mode`, rewriting the file the worker made there before when it
    /// is still that file, and never following a link or writing to a file with another name elsewhere.
    func write(_ entry: inout Entry, name: String, _ bytes: [UInt8], mode: mode_t) throws -> String {
        let path = entry.work + "/" + name
        if let known = entry.files[name] {
            // Looked at without opening it for writing (no link followed), and opened for writing only once it is
            // known to be that file: through /proc, the very inode, with the write bit that a worker that is not
            // root needs (its files are read-only, 0444, and the step may have changed their mode).
            let handle = csandbox_open_path(path)
            if handle >= 0 {
                defer { close(handle) }
                var st = stat()
                let inode = "/proc/self/fd/\(handle)"
                if fstat(handle, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG, st.st_nlink == 1, st.st_uid == geteuid(),
                    FileIdentity(device: UInt64(st.st_dev), inode: UInt64(st.st_ino)) == known, chmod(inode, 0o600) == 0
                {
                    let fd = open(inode, O_WRONLY | O_CLOEXEC | O_NONBLOCK)
                    if fd >= 0 {
                        defer { close(fd) }
                        // Written over, then cut to length: truncating to zero first makes ext4 flush the file at
                        // close (its "replace by truncate" heuristic) and free and allocate its blocks again.
                        try Self.writeAll(fd, bytes, path: path)
                        if Int(st.st_size) > bytes.count, ftruncate(fd, off_t(bytes.count)) != 0 {
                            throw CocoaError(.fileWriteUnknown, userInfo: [NSFilePathErrorKey: path, "errno": errno])
                        }
                        _ = fchmod(fd, mode)
                        return path
                    }
                }
            }
            // Not the worker's file any more: replaced by a new one.
            entry.files[name] = nil
            if unlink(path) != 0 && errno != ENOENT { AttemptExecutor.removeTree(path) }
        }
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, mode)
        guard fd >= 0 else { throw CocoaError(.fileWriteUnknown, userInfo: [NSFilePathErrorKey: path, "errno": errno]) }
        defer { close(fd) }
        _ = fchmod(fd, mode)  // the umask may have taken bits away
        try Self.writeAll(fd, bytes, path: path)
        var st = stat()
        if fstat(fd, &st) == 0 { entry.files[name] = FileIdentity(device: UInt64(st.st_dev), inode: UInt64(st.st_ino)) }
        return path
    }

    /// Gives a directory back after its step ended (and every process of the step is gone).
    public func give(_ entry: Entry) {
        var entry = entry
        let clean = lock.withLock { ready.count < keep } && reset(&entry)
        if clean {
            lock.withLock { ready.append(entry) }
        } else {
            AttemptExecutor.removeTree(entry.path)
            lock.withLock { discarded += 1 }
        }
    }

    /// Empties `work/` (but for the worker's own files, still exactly as made) and `tmp/`, and resets both
    /// directories' mode, owner and ACLs. False when anything could not be put back as new.
    private func reset(_ entry: inout Entry) -> Bool {
        var st = stat()
        // The entry itself must still be the worker's plain directory.
        guard lstat(entry.path, &st) == 0, (st.st_mode & S_IFMT) == S_IFDIR, st.st_uid == geteuid() else { return false }
        for dir in [entry.work, entry.tmp] {
            guard lstat(dir, &st) == 0, (st.st_mode & S_IFMT) == S_IFDIR, UInt64(st.st_dev) == UInt64(Self.device(entry.path)) else {
                return false
            }
            // A directory the step made unreadable is still emptied (the worker is its owner or root).
            guard chmod(dir, 0o755) == 0, chown(dir, geteuid(), getegid()) == 0 || geteuid() != 0 else { return false }
            guard csandbox_clear_acls(dir) == 0 else { return false }
            guard let names = Self.children(dir) else { return false }
            for name in names {
                let path = dir + "/" + name
                if dir == entry.work, let known = entry.files[name], lstat(path, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG,
                    st.st_nlink == 1, st.st_uid == geteuid(), FileIdentity(device: UInt64(st.st_dev), inode: UInt64(st.st_ino)) == known
                {
                    continue
                }
                if dir == entry.work { entry.files[name] = nil }
                AttemptExecutor.removeTree(path)
                if lstat(path, &st) == 0 { return false }
            }
        }
        // Files the worker wrote that the step removed are made anew next time.
        for name in entry.files.keys where lstat(entry.work + "/" + name, &st) != 0 { entry.files[name] = nil }
        return true
    }

    private static func device(_ path: String) -> UInt64 {
        var st = stat()
        return lstat(path, &st) == 0 ? UInt64(st.st_dev) : UInt64.max
    }

    /// The names in a directory (without `.` and `..`), nil when it cannot be read.
    private static func children(_ dir: String) -> [String]? {
        guard let d = opendir(dir) else { return nil }
        defer { closedir(d) }
        var names: [String] = []
        while let e = readdir(d) {
            let name = withUnsafeBytes(of: e.pointee.d_name) { raw in
                String(cString: raw.bindMemory(to: CChar.self).baseAddress!)
            }
            if name != "." && name != ".." { names.append(name) }
        }
        return names
    }

    /// Writes all of `bytes` (files that live only as long as the step: no fsync, which cost about 1 ms each).
    private static func writeAll(_ fd: Int32, _ bytes: [UInt8], path: String) throws {
        var done = 0
        while done < bytes.count {
            let n = bytes[done...].withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                throw CocoaError(.fileWriteUnknown, userInfo: [NSFilePathErrorKey: path, "errno": errno])
            }
            done += n
        }
    }
}
