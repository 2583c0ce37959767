import Glibc

/// The process's limit on open files.
public enum FileDescriptorLimit {
    /// The soft limit (nil: unlimited).
    public static var current: Int? {
        var r = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &r) == 0, r.rlim_cur != rlim_t.max else { return nil }
        return Int(r.rlim_cur)
    }

    /// Raises the soft limit to the hard one, as servers do (the soft limit is often 1,024, which 1,000 sockets
    /// exhaust); returns the limits before and after, or nil when nothing changed.
    @discardableResult
    public static func raiseToHard() -> (from: Int, to: Int)? {
        var r = rlimit()
        guard getrlimit(Int32(RLIMIT_NOFILE.rawValue), &r) == 0, r.rlim_cur < r.rlim_max else { return nil }
        let from = r.rlim_cur
        r.rlim_cur = r.rlim_max
        guard setrlimit(Int32(RLIMIT_NOFILE.rawValue), &r) == 0 else { return nil }
        return (Int(from), r.rlim_max == rlim_t.max ? Int.max : Int(r.rlim_max))
    }
}