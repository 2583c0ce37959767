import Foundation
import Synchronization

/// Random (version 4) UUIDs as lowercase text, the ids of work orders, attempts, dataclips and steps.
///
/// Foundation's `UUID()` on Linux opens `/dev/urandom`, reads 16 bytes and closes it, every time: three system calls,
/// three times per attempt in Lightning and twice in the worker (seen with `strace`). Here `/dev/urandom` is opened
/// once (close-on-exec) and read 4 KB at a time, so one read serves 256 ids; each byte is handed out once. When it
/// cannot be opened, `SystemRandomNumberGenerator` (`getrandom(2)`) fills in.
public enum RandomID {
    private static let pool: Mutex<Pool> = {
        // A fork's child (none today: the sandbox's children exec at once) must not repeat its parent's ids.
        pthread_atfork(nil, nil, { _ = RandomID.forks.add(1, ordering: .relaxed) })
        return Mutex(Pool())
    }()

    /// How many times this process is a fork's child of the one that first made an id.
    fileprivate static let forks = Atomic<Int>(0)

    private struct Pool: ~Copyable {
        var fd: Int32 = -2  // -2: not opened yet; -1: could not be
        var bytes = [UInt8](repeating: 0, count: 4096)
        var next = 4096

        /// `forks` when the buffer was filled: a forked child refills, or it would hand out its parent's ids.
        var filledAt = -1

        mutating func take16(into out: UnsafeMutableRawBufferPointer) {
            if next + 16 > bytes.count || filledAt != forks.load(ordering: .relaxed) { refill() }
            bytes.withUnsafeBytes { out.copyMemory(from: UnsafeRawBufferPointer(rebasing: $0[next..<(next + 16)])) }
            // Handed out once: cleared as it goes.
            for i in next..<(next + 16) { bytes[i] = 0 }
            next += 16
        }

        mutating func refill() {
            if fd == -2 { fd = open("/dev/urandom", O_RDONLY | O_CLOEXEC) }
            var filled = 0
            if fd >= 0 {
                filled = bytes.withUnsafeMutableBytes { buffer in
                    var done = 0
                    while done < buffer.count {
                        let n = read(fd, buffer.baseAddress! + done, buffer.count - done)
                        if n > 0 { done += n } else if n < 0 && errno == EINTR { continue } else { break }
                    }
                    return done
                }
            }
            if filled < bytes.count {
                var generator = SystemRandomNumberGenerator()
                for i in stride(from: 0, to: bytes.count, by: 8) {
                    withUnsafeBytes(of: generator.next()) { word in
                        for j in 0..<8 { bytes[i + j] = word[j] }
                    }
                }
            }
            next = 0
            filledAt = forks.load(ordering: .relaxed)
        }
    }

    public static func uuid() -> UUID {
        var bytes: uuid_t = (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        withUnsafeMutableBytes(of: &bytes) { out in pool.withLock { $0.take16(into: out) } }
        bytes.6 = bytes.6 & 0x0F | 0x40  // version 4
        bytes.8 = bytes.8 & 0x3F | 0x80  // RFC 4122 variant
        return UUID(uuid: bytes)
    }

    /// `uuid()` as lowercase text (`xxxxxxxx-xxxx-4xxx-yxxx-xxxxxxxxxxxx`).
    public static func uuidString() -> String { uuid().uuidString.lowercased() }
}
