#if canImport(Glibc)
import Glibc
#endif

/// Wire timestamps: strings of microseconds since the epoch (16 digits). Lightning also accepts milliseconds.
public enum Timestamp {
    /// Microseconds since the Unix epoch, from the real-time clock.
    public static func nowMicros() -> Int64 {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return Int64(ts.tv_sec) * 1_000_000 + Int64(ts.tv_nsec) / 1_000
    }

    public static func string(_ micros: Int64) -> String { String(micros) }
    public static func now() -> String { string(nowMicros()) }

    /// Parses a wire timestamp. 13 digits or fewer are read as milliseconds, more as microseconds.
    public static func parse(_ text: String) -> Int64? {
        // Digits only, scanned as bytes: this runs for every log line.
        var value: Int64 = 0
        var digits = 0
        for byte in text.utf8 {
            guard byte >= 0x30 && byte <= 0x39, digits < 19 else { return nil }
            // 19 digits may pass Int64.max: refused, never a trap (any joined worker can send one).
            let (times10, o1) = value.multipliedReportingOverflow(by: 10)
            let (next, o2) = times10.addingReportingOverflow(Int64(byte - 0x30))
            guard !o1, !o2 else { return nil }
            value = next
            digits += 1
        }
        guard digits > 0 else { return nil }
        return digits <= 13 ? value * 1_000 : value
    }
}
