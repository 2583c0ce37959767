/// The connections that have not finished a request's headers, oldest first (service thread only). Past a limit,
/// each new one pushes out the oldest: `arrived` says which to close.
struct UnfinishedRequests {
    /// wsi → its arrival number; the arrivals in order (entries whose connection finished or went are skipped when met).
    private var numbers: [UInt: UInt64] = [:]
    private var arrivals: [(number: UInt64, wsi: OpaquePointer)] = []
    private var head = 0
    private var count: UInt64 = 0

    /// `wsi` arrived, or was answered and kept alive: it is unfinished from now. Returns the oldest ones past `limit`,
    /// which are no longer counted.
    mutating func arrived(_ wsi: OpaquePointer, limit: Int) -> [OpaquePointer] {
        count += 1
        numbers[UInt(bitPattern: wsi)] = count
        arrivals.append((count, wsi))
        var evicted: [OpaquePointer] = []
        while numbers.count > limit, head < arrivals.count {
            let oldest = arrivals[head]
            head += 1
            let key = UInt(bitPattern: oldest.wsi)
            // Skipped: finished, gone, or the address reused by a later connection.
            guard numbers[key] == oldest.number else { continue }
            numbers.removeValue(forKey: key)
            evicted.append(oldest.wsi)
        }
        // Keep the arrival list about as long as the live entries: drop what was passed over, or rebuild it from the
        // live entries when finished ones pile up behind a long-lived unfinished one.
        if head > 1024 && head * 2 > arrivals.count {
            arrivals.removeFirst(head)
            head = 0
        }
        if arrivals.count - head > 2 * numbers.count + 1024 {
            arrivals = arrivals[head...].filter { numbers[UInt(bitPattern: $0.wsi)] == $0.number }
            head = 0
        }
        return evicted
    }

    /// `wsi`'s request headers are in, or it is gone.
    mutating func finished(_ wsi: OpaquePointer) { numbers.removeValue(forKey: UInt(bitPattern: wsi)) }
}

/// Counts events and says, at most once per `interval`, how many there were since it last said (a warning that must
/// not flood the log).
struct ThrottledCount {
    let interval: Duration
    private var since = 0
    private var last: ContinuousClock.Instant?

    init(every interval: Duration) { self.interval = interval }

    /// Counts one more; returns the count to report when it is time to, else nil.
    mutating func add(_ n: Int = 1, now: ContinuousClock.Instant = .now) -> Int? {
        since += n
        guard since > 0, last.map({ now - $0 >= interval }) ?? true else { return nil }
        defer { last = now; since = 0 }
        return since
    }
}
