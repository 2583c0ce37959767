import Channels
import CSandbox
import Foundation
import Testing
import TestSupport

/// Issue 15, exhaustion: 20,000 slow HTTP clients (slowloris) against the real `lightning serve`.
@Suite("Slow clients", .serialized)
struct SlowClientsTests {
    @Test("20,000 connections that never finish their headers: Lightning holds at most --max-unfinished-requests of them (closing the oldest), answers /healthz and a worker throughout, and closes the rest by its header timeout")
    func slowloris() async throws {
        // Both sides need room for the flood: where the hard open-files limit can be raised (root with
        // CAP_SYS_RESOURCE), it is, for this process (its descriptors hold the flood) and for Lightning; elsewhere as
        // many are opened as the hard limit leaves room for on both sides (Lightning keeps 64 in reserve), and said.
        let wanted = 20_000
        let room = wanted + 2_000
        let available = FloodClient.raiseOpenFiles(to: room)
        let count = min(wanted, available - 500)
        if count < wanted { print("slowloris: \(count) connections, not \(wanted): the open-files limit here is \(available) and cannot be raised") }
        // SLOWLORIS_LIMIT: another limit, to measure (docs/security.md has figures for several).
        let limit = ProcessInfo.processInfo.environment["SLOWLORIS_LIMIT"].flatMap { Int($0) } ?? 1024
        let held = min(limit, count)
        let b = try await Binaries(extra: ["--max-unfinished-requests", "\(limit)"],
                                   launcher: available >= room ? ["/usr/bin/prlimit", "--nofile=\(room):\(room)", "--"] : [])
        defer { b.remove() }

        let flood = FloodClient(port: b.port, count: count)
        let run = Thread { flood.run() }
        run.name = "slowloris"
        run.start()
        defer { flood.stop() }
        try await Self.waitUntil("\(count) slow connections open", timeout: 60) { flood.opened + flood.refused >= count }
        #expect(flood.refused == 0, "the server refused \(flood.refused) connections")
        // Past the limit the oldest are closed as new ones come: soon no more than the limit are held.
        try await Self.waitUntil("at most \(held) slow connections held", timeout: 30) { flood.openNow <= held }

        // With the slow connections held: a worker joins, and /healthz answers on new connections again and again.
        // A probe counts when at least half of what the server holds was still open after its answer (the held ones
        // are cut 10 s after they opened, whatever this machine's load).
        let worker = try b.worker("steady")
        defer { worker.stop() }
        // How many were held when the worker joined: read as soon as its join is in Lightning's log.
        let joinWatch = Task { () -> Int? in
            let joined = #"worker\.name=steady.*worker joined the queue"#
            while !Task.isCancelled {
                if b.lightning.log.range(of: joined, options: .regularExpression) != nil { return flood.openNow }
                try? await Task.sleep(for: .milliseconds(20))
            }
            return nil
        }
        var latencies: [Double] = []
        var answeredDuringFlood = 0
        while flood.openNow > held / 2 && latencies.count < 200 {
            let started = ContinuousClock.now
            let answer = try await TestSupport.onThread { try FloodClient.get(port: b.port, path: "/healthz") }
            let took = ContinuousClock.now - started
            latencies.append(Double(took.components.seconds) * 1000 + Double(took.components.attoseconds) / 1e15)
            #expect(answer.hasPrefix("HTTP/1.1 200"), "\(answer.prefix(200))")
            if flood.openNow > held / 2 { answeredDuringFlood += 1 }
            if ProcessInfo.processInfo.environment["SLOWLORIS_VERBOSE"] != nil { print("probe \(latencies.count): \(latencies.last!) ms, \(flood.openNow) open") }
            try await Task.sleep(for: .milliseconds(50))
        }
        #expect(answeredDuringFlood >= 3, "/healthz answered only \(answeredDuringFlood) times while the flood was held")
        _ = try await b.lightning.waitForLog(#"worker\.name=steady.*worker joined the queue"#, timeout: 60)
        let openWhenJoined = await joinWatch.value
        #expect(openWhenJoined ?? 0 > held / 2, "the worker joined with only \(openWhenJoined ?? 0) slow connections held")

        // Every slow one is closed by the server: the oldest at once, the rest by the 10 s header timeout (never by
        // the client: it trickles forever).
        try await Self.waitUntil("every slow connection closed by the server", timeout: 90) { flood.closed >= flood.opened }
        #expect(flood.longestLife < 40, "a slow connection lived \(flood.longestLife) s")
        let metrics = try await TestSupport.onThread { try FloodClient.get(port: b.port, path: "/metrics") }
        let evicted = metrics.split(separator: "\n").first { $0.hasPrefix("lightning_connections_closed_unfinished ") }
            .flatMap { Double($0.split(separator: " ").last ?? "") } ?? -1
        // About count - held were closed as the oldest; fewer where this machine was so slow to open them that some
        // reached the 10 s header timeout first.
        #expect(evicted >= Double(count - held) / 2, "lightning_connections_closed_unfinished says \(evicted)")
        latencies.sort()
        guard !latencies.isEmpty else { return }  // already failed above: no probe was made
        // The latencies are a benchmark's figures, not a test's: printed for the log.
        print(String(format: "slowloris: %d connections, at most %d held; /healthz p50 %.1f ms, p99 %.1f ms, max %.1f ms over %d probes "
                         + "(%d during the flood); worker joined with %d held; %d closed early, the rest after at most %.1f s",
                     count, limit, latencies[latencies.count / 2], latencies[latencies.count * 99 / 100], latencies.last ?? 0,
                     latencies.count, answeredDuringFlood, openWhenJoined ?? 0, flood.closedEarly, flood.longestLife))
    }

    /// Polls `condition` every 50 ms until it holds; throws, naming `what`, after `timeout` seconds.
    static func waitUntil(_ what: String, timeout: Int, _ condition: () -> Bool) async throws {
        let deadline = ContinuousClock.now + .seconds(timeout)
        while !condition() {
            guard ContinuousClock.now < deadline else { throw TestSupport.Failure("timed out after \(timeout) s waiting for: \(what)") }
            try await Task.sleep(for: .milliseconds(50))
        }
    }
}

/// Slowloris from one thread with epoll: `count` connections, each sends a request line and a header, then a byte
/// a second of a header that never ends, until the server closes it. Counters are read from other threads.
final class FloodClient: @unchecked Sendable {
    let port: Int
    let count: Int
    private let lock = NSLock()
    private var _opened = 0, _refused = 0, _closed = 0, _closedEarly = 0, _longest = 0.0, _stop = false

    init(port: Int, count: Int) {
        self.port = port
        self.count = count
    }

    private func locked<T>(_ body: () -> T) -> T { lock.lock(); defer { lock.unlock() }; return body() }
    var opened: Int { locked { _opened } }
    var refused: Int { locked { _refused } }
    /// Closed by the server (end of stream or a reset).
    var closed: Int { locked { _closed } }
    var openNow: Int { locked { _opened - _closed } }
    /// Closed by the server within 5 s of opening: before any header timeout.
    var closedEarly: Int { locked { _closedEarly } }
    /// The longest time, in seconds, a connection lived from its connect to the server's close.
    var longestLife: Double { locked { _longest } }
    func stop() { locked { _stop = true } }

    /// Raises this process's open-files limit to `wanted` where allowed (the hard limit too, as root), else the soft
    /// limit to the hard one; the soft limit after.
    static func raiseOpenFiles(to wanted: Int) -> Int {
        var r = rlimit()
        getrlimit(Int32(RLIMIT_NOFILE.rawValue), &r)
        r.rlim_max = max(r.rlim_max, rlim_t(wanted))
        r.rlim_cur = rlim_t(wanted)
        if (FileDescriptorLimit.current ?? .max) < wanted && setrlimit(Int32(RLIMIT_NOFILE.rawValue), &r) != 0 {
            FileDescriptorLimit.raiseToHard()
        }
        return FileDescriptorLimit.current ?? .max
    }

    /// One GET on a new connection, read to the end (the server closes: `Connection: close`); 20 s at most.
    static func get(port: Int, path: String) throws -> String {
        let c = try RawConnection(port: port, timeout: 20)
        try c.send("GET \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        return c.readToEnd()
    }

    // epoll's event bits (sys/epoll.h), through CSandbox's wrappers (epoll_event is packed on x86-64).
    static let epollIn: UInt32 = 0x001, epollOut: UInt32 = 0x004, epollErr: UInt32 = 0x008, epollHup: UInt32 = 0x010,
        epollRdHup: UInt32 = 0x2000

    func run() {
        let ep = csandbox_epoll_create()
        defer { close(ep) }
        struct Conn { var connected = false; var since = ContinuousClock.now }
        var conns: [Int32: Conn] = [:]
        var connecting = 0
        var next = 0
        var lastTrickle = ContinuousClock.now
        let head = Array("GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ".utf8)
        var tokens = [UInt64](repeating: 0, count: 1024)
        var flags = [UInt32](repeating: 0, count: 1024)
        var buffer = [UInt8](repeating: 0, count: 4096)

        /// A connection ended: refused when it never connected, else closed by the server (end of stream, a reset,
        /// or a failed send: this side never closes one while running).
        func finish(_ fd: Int32) {
            guard let conn = conns.removeValue(forKey: fd) else { return }
            _ = csandbox_epoll_ctl(ep, 2, fd, 0, 0)
            close(fd)
            let life = Double((ContinuousClock.now - conn.since).components.seconds)
            if !conn.connected { connecting -= 1 }
            locked {
                if !conn.connected { _refused += 1 }
                else { _closed += 1; _longest = max(_longest, life); if life < 5 { _closedEarly += 1 } }
            }
        }

        while !locked({ _stop }) {
            // A few hundred connects in flight at once: more would overflow the listen queue and wait for SYN retries.
            while next < count && connecting < 256 {
                next += 1
                let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
                if fd < 0 { locked { _refused += 1 }; continue }
                var a = RawConnection.loopback(port: port)
                let c = withUnsafePointer(to: &a) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
                if c != 0 && errno != EINPROGRESS { close(fd); locked { _refused += 1 }; continue }
                _ = csandbox_epoll_ctl(ep, 1, fd, Self.epollOut | Self.epollIn | Self.epollRdHup, UInt64(fd))
                conns[fd] = Conn()
                connecting += 1
            }
            let n = csandbox_epoll_wait(ep, &tokens, &flags, Int32(tokens.count), 100)
            for i in 0..<max(0, Int(n)) {
                let fd = Int32(tokens[i])
                guard var conn = conns[fd] else { continue }
                if !conn.connected {
                    var error: Int32 = 0
                    var length = socklen_t(MemoryLayout<Int32>.size)
                    getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length)
                    if error != 0 { finish(fd); continue }
                    conn.connected = true
                    conn.since = .now
                    conns[fd] = conn
                    connecting -= 1
                    locked { _opened += 1 }
                    _ = head.withUnsafeBytes { send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
                    _ = csandbox_epoll_ctl(ep, 3, fd, Self.epollIn | Self.epollRdHup, UInt64(fd))
                    continue
                }
                if flags[i] & (Self.epollIn | Self.epollRdHup | Self.epollHup | Self.epollErr) != 0 {
                    // Whatever the server says (a 408, or nothing), the connection ends at its close.
                    let r = recv(fd, &buffer, buffer.count, 0)
                    if r == 0 || (r < 0 && errno != EAGAIN) { finish(fd) }
                }
            }
            // A byte a second on every open connection: the header never ends.
            if ContinuousClock.now - lastTrickle >= .seconds(1) {
                lastTrickle = .now
                var x = UInt8(ascii: "x")
                for (fd, conn) in conns where conn.connected {
                    if send(fd, &x, 1, Int32(MSG_NOSIGNAL)) < 0 && errno != EAGAIN { finish(fd) }
                }
            }
        }
        for fd in conns.keys { close(fd) }
    }
}
