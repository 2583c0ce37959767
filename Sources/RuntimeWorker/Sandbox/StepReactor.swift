internal import CSandbox
import Channels
import Foundation

/// One thread and one epoll set for every running step: it reads each step's stdout and stderr, splits lines,
/// and sees the step's process end through a pidfd. No thread is started per step (there were two: a pipe
/// reader and a `waitpid` waiter).
///
/// Output is never dropped and never piles up: when a step's consumer holds too many lines it calls
/// `StepControl.holdOutput()`; the reactor then stops reading that step's pipes (so, once they are full, the
/// step blocks in write) until `releaseOutput()`. A callback must not block: every step shares this thread.
final class StepReactor: @unchecked Sendable {
    static let shared = StepReactor()

    /// Largest chunk read from one pipe per wake-up: a step that floods its pipe does not starve the others.
    static let chunk = 64 * 1024
    /// EPOLLIN (the header's enum is not imported through the packed struct's module).
    static let readable: UInt32 = 0x001

    private final class Watched {
        let id: UInt64
        let pid: pid_t
        let group: Cgroups.Group?
        let control: StepControl
        var fds: [Int32]          // stdout, stderr; -1 once closed
        var pidfd: Int32
        var splitters: [LineSplitter]
        let onLines: @Sendable ([(StepStream, String)]) -> Void
        var status: Int32?
        var armed = true
        /// When the step is out of time (nil: no limit, or already acted on).
        var deadline: ContinuousClock.Instant?
        let onTimeout: @Sendable () -> Void
        let done: CheckedContinuation<Int32, Never>

        init(id: UInt64, pid: pid_t, group: Cgroups.Group?, control: StepControl, out: Int32, err: Int32, pidfd: Int32,
             maxLineBytes: Int, onLines: @escaping @Sendable ([(StepStream, String)]) -> Void,
             deadline: ContinuousClock.Instant?, onTimeout: @escaping @Sendable () -> Void, done: CheckedContinuation<Int32, Never>) {
            self.deadline = deadline
            self.onTimeout = onTimeout
            self.id = id
            self.pid = pid
            self.group = group
            self.control = control
            fds = [out, err]
            self.pidfd = pidfd
            splitters = [LineSplitter(stream: .stdout, maxLineBytes: maxLineBytes),
                         LineSplitter(stream: .stderr, maxLineBytes: maxLineBytes)]
            self.onLines = onLines
            self.done = done
        }
    }

    private let epfd: Int32
    private let wakeFD: Int32
    private let lock = NSLock()
    private var incoming: [Watched] = []
    private var exitedWithoutPidfd: [(UInt64, Int32)] = []
    private var rearm: Set<UInt64> = []
    private var watched: [UInt64: Watched] = [:]
    private var nextID: UInt64 = 1
    private var buffer = [UInt8](repeating: 0, count: StepReactor.chunk)

    private init() {
        epfd = csandbox_epoll_create()
        wakeFD = csandbox_eventfd()
        precondition(epfd >= 0 && wakeFD >= 0, "epoll/eventfd: \(String(cString: strerror(errno)))")
        _ = csandbox_epoll_ctl(epfd, 1, wakeFD, Self.readable, 0)
        let thread = Thread { [self] in
            nameCurrentThread("step-reactor")
            loop()
        }
        thread.start()
    }

    /// Watches a started step until its process has ended and both pipes are at end of file (everything it
    /// left behind killed); returns its wait status. Takes ownership of `out` and `err`. At `deadline` (if the
    /// step is still running) `onTimeout` is called once, on the reactor's thread: it must not block. The
    /// reactor's own wait keeps the time, so a step costs no timer task.
    func watch(pid: pid_t, group: Cgroups.Group?, control: StepControl, out: Int32, err: Int32, maxLineBytes: Int,
               deadline: ContinuousClock.Instant? = nil, onTimeout: @escaping @Sendable () -> Void = {},
               onLines: @escaping @Sendable ([(StepStream, String)]) -> Void) async -> Int32 {
        _ = csandbox_set_nonblocking(out)
        _ = csandbox_set_nonblocking(err)
        let pidfd = csandbox_pidfd_open(pid)
        return await withCheckedContinuation { (done: CheckedContinuation<Int32, Never>) in
            let id: UInt64 = lock.withLock {
                defer { nextID += 1 }
                return nextID
            }
            let w = Watched(id: id, pid: pid, group: group, control: control, out: out, err: err, pidfd: pidfd,
                            maxLineBytes: maxLineBytes, onLines: onLines, deadline: deadline, onTimeout: onTimeout, done: done)
            control.onRelease = { [weak self] in self?.post { $0.rearm.insert(id) } }
            post { $0.incoming.append(w) }
            if pidfd < 0 {
                // No pidfd (a kernel before 5.3): one thread waits for this step's end and tells the reactor.
                let waiter = Thread { [weak self] in
                    var status: Int32 = 0
                    while waitpid(pid, &status, 0) < 0 && errno == EINTR {}
                    self?.post { $0.exitedWithoutPidfd.append((id, status)) }
                }
                waiter.name = "step-wait"
                waiter.start()
            }
        }
    }

    private func post(_ change: (StepReactor) -> Void) {
        lock.withLock { change(self) }
        var one: UInt64 = 1
        _ = write(wakeFD, &one, 8)
    }

    // Tokens: id << 2 | 0 stdout, 1 stderr, 2 pidfd; token 0 is the wake-up eventfd.
    private func loop() {
        var tokens = [UInt64](repeating: 0, count: 64)
        var events = [UInt32](repeating: 0, count: 64)
        while true {
            let n = csandbox_epoll_wait(epfd, &tokens, &events, 64, waitMilliseconds())
            expireDeadlines()
            if n < 0 { continue }  // EINTR
            for i in 0..<Int(n) {
                let token = tokens[i]
                if token == 0 {
                    var value: UInt64 = 0
                    _ = read(wakeFD, &value, 8)
                    takeRequests()
                    continue
                }
                guard let w = watched[token >> 2] else { continue }
                let kind = Int(token & 3)
                if kind == 2 { reap(w) } else { readPipe(w, kind) }
                finishIfDone(w)
            }
        }
    }

    /// Until the nearest step deadline, rounded up to a whole millisecond; -1 (no timeout) when none.
    private func waitMilliseconds() -> Int32 {
        guard let next = watched.values.compactMap(\.deadline).min() else { return -1 }
        let left = next - .now
        if left <= .zero { return 0 }
        let ms = left.components.seconds * 1000 + (left.components.attoseconds + 999_999_999_999_999) / 1_000_000_000_000_000
        return Int32(min(ms, Int64(Int32.max)))
    }

    private func expireDeadlines() {
        let now = ContinuousClock.now
        for w in watched.values where w.status == nil {
            guard let d = w.deadline, d <= now else { continue }
            w.deadline = nil
            w.onTimeout()
        }
    }

    private func takeRequests() {
        let (new, exited, again) = lock.withLock {
            defer { incoming = []; exitedWithoutPidfd = []; rearm = [] }
            return (incoming, exitedWithoutPidfd, rearm)
        }
        for w in new {
            watched[w.id] = w
            for k in 0..<2 { _ = csandbox_epoll_ctl(epfd, 1, w.fds[k], Self.readable, w.id << 2 | UInt64(k)) }
            if w.pidfd >= 0 { _ = csandbox_epoll_ctl(epfd, 1, w.pidfd, Self.readable, w.id << 2 | 2) }
        }
        for (id, status) in exited {
            guard let w = watched[id] else { continue }
            ended(w, status)
            finishIfDone(w)
        }
        for id in again {
            guard let w = watched[id], !w.armed else { continue }
            w.armed = true
            for k in 0..<2 where w.fds[k] >= 0 {
                _ = csandbox_epoll_ctl(epfd, 1, w.fds[k], Self.readable, w.id << 2 | UInt64(k))
            }
        }
    }

    private func reap(_ w: Watched) {
        // The pidfd is readable: the step has exited and is a zombie until reaped, so its pid (and process group
        // id) cannot have been reused yet. Kill what it left behind first, then reap it.
        StepControl.killTree(w.pid, w.group)
        w.control.processEnded()
        var status: Int32 = 0
        var r: pid_t
        repeat { r = waitpid(w.pid, &status, WNOHANG) } while r < 0 && errno == EINTR
        if r == 0 { return }  // not reapable yet: the pidfd stays readable and comes back
        if r < 0 {
            // Reaped elsewhere (SIGCHLD ignored, or another waiter): the status is lost. End the step as killed
            // rather than watch a readable pidfd forever.
            status = SIGKILL
        }
        _ = csandbox_epoll_ctl(epfd, 2, w.pidfd, 0, 0)
        close(w.pidfd)
        w.pidfd = -1
        w.status = status
    }

    /// Without a pidfd: the waiter thread reaped the step already.
    private func ended(_ w: Watched, _ status: Int32) {
        w.status = status
        // The step is gone: nothing it left behind may keep running (or keep its pipes open).
        StepControl.killTree(w.pid, w.group)
        w.control.processEnded()
    }

    private func readPipe(_ w: Watched, _ k: Int) {
        let fd = w.fds[k]
        // Not while held: an event for this fd may still be in the batch epoll returned before the hold.
        guard fd >= 0, w.armed else { return }
        let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
        var lines: [(StepStream, String)] = []
        if n > 0 {
            buffer.withUnsafeBufferPointer { w.splitters[k].feed($0.baseAddress!, count: n, into: &lines) }
        } else if n == 0 || (errno != EAGAIN && errno != EINTR) {
            _ = csandbox_epoll_ctl(epfd, 2, fd, 0, 0)
            close(fd)
            w.fds[k] = -1
            w.splitters[k].end(into: &lines)
        }
        if !lines.isEmpty { w.onLines(lines) }
        if w.armed && w.control.outputHeld {
            w.armed = false
            // Out of the set, not just disarmed: a hang-up is reported even for a disarmed fd, and would spin.
            for j in 0..<2 where w.fds[j] >= 0 { _ = csandbox_epoll_ctl(epfd, 2, w.fds[j], 0, 0) }
            // Released meanwhile: arm again at once.
            if !w.control.outputHeld { post { $0.rearm.insert(w.id) } }
        }
    }

    private func finishIfDone(_ w: Watched) {
        guard let status = w.status, w.fds.allSatisfy({ $0 < 0 }), watched[w.id] != nil else { return }
        watched[w.id] = nil
        w.control.onRelease = nil
        w.done.resume(returning: status)
    }
}

/// Splits one pipe's bytes into lines. A line over the limit is replaced by a notice; a last line without a
/// newline is kept when the pipe ends.
struct LineSplitter {
    let stream: StepStream
    let maxLineBytes: Int
    private var partial: [UInt8] = []
    private var oversize = false

    init(stream: StepStream, maxLineBytes: Int) {
        self.stream = stream
        self.maxLineBytes = maxLineBytes
    }

    mutating func feed(_ base: UnsafePointer<UInt8>, count: Int, into lines: inout [(StepStream, String)]) {
        var start = 0
        while start < count, let hit = memchr(base + start, 0x0A, count - start) {
            let newline = UnsafeRawPointer(hit).assumingMemoryBound(to: UInt8.self) - base
            if !oversize { partial.append(contentsOf: UnsafeBufferPointer(start: base + start, count: newline - start)) }
            lines.append(line(oversize || partial.count > maxLineBytes))
            partial.removeAll(keepingCapacity: true)
            oversize = false
            start = newline + 1
        }
        if start < count && !oversize {
            partial.append(contentsOf: UnsafeBufferPointer(start: base + start, count: count - start))
            if partial.count > maxLineBytes {
                oversize = true
                partial = []
            }
        }
    }

    mutating func end(into lines: inout [(StepStream, String)]) {
        if !partial.isEmpty || oversize { lines.append(line(oversize)) }
        partial = []
        oversize = false
    }

    private func line(_ tooLong: Bool) -> (StepStream, String) {
        if tooLong { return (stream, "(a line over \(maxLineBytes) bytes was removed)") }
        return (stream, String(decoding: partial, as: UTF8.self))
    }
}
