import Foundation
import Testing
import TestSupport
@testable import Channels

/// Slow-client floods (docs/security.md): past `maxUnfinishedRequests` connections that have not finished a
/// request's headers, the oldest of them is closed for each new one; finished ones never count.
@Suite("Unfinished requests", .serialized)
struct UnfinishedRequestsTests {
    @Test("past the limit of unfinished requests the oldest unfinished connection is closed, an idle keep-alive one counting from its last answer; requests whose headers are in are served")
    func oldestUnfinishedClosed() async throws {
        // Timeouts far past the test's length: only the limit may close a connection here, however loaded the machine.
        let server = try makeServer {
            $0.maxUnfinishedRequests = 3
            $0.headerTimeoutSeconds = 300
            $0.keepAliveTimeoutSeconds = 300
        }
        defer { server.stop() }
        let port = server.port
        let request = "GET /hello?name=x HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        // Every socket call blocks, so each runs on a thread of its own (TestSupport.onThread): on a cooperative
        // thread it could hold the one the server's handler needs to answer it.
        func exchange(_ c: RawConnection, _ text: String) async throws -> String { try await TestSupport.onThread { try c.exchange(text) } }
        func closedByServer(_ c: RawConnection) async throws -> Bool { try await TestSupport.onThread { try c.readsEndOfStream() } }
        func open(sending text: String? = nil) async throws -> RawConnection {
            try await TestSupport.onThread {
                let c = try RawConnection(port: port)
                if let text { try c.send(text) }
                return c
            }
        }
        // Three that never finish their headers: at the limit, nothing is closed.
        var slow: [RawConnection] = []
        for _ in 0..<3 { slow.append(try await open(sending: request)) }
        // A fourth arrives (a whole request: connections are accepted in order, so its answer means the three came
        // first): the oldest unfinished, slow[0], is closed. The fourth's own headers are in: it does not count.
        let first = try await open()
        #expect(try await exchange(first, request + "Connection: close\r\n\r\n").hasPrefix("HTTP/1.1 200"))
        #expect(try await closedByServer(slow[0]), "the oldest unfinished connection is closed")
        #expect(server.evictedUnfinishedCount == 1)
        // slow[1] finishes its request and is kept alive: idle, it is unfinished again, now the newest.
        #expect(try await exchange(slow[1], "\r\n").hasPrefix("HTTP/1.1 200"), "a newer unfinished one is served")
        // Unfinished now: slow[2], then slow[1]. One more slow one fills the limit; a whole request past it closes
        // the oldest, slow[2], and not the idle keep-alive slow[1], which came after it.
        let third = try await open(sending: request)
        let second = try await open()
        #expect(try await exchange(second, request + "Connection: close\r\n\r\n").hasPrefix("HTTP/1.1 200"))
        #expect(try await closedByServer(slow[2]), "the oldest unfinished connection is closed")
        #expect(server.evictedUnfinishedCount == 2)
        #expect(try await exchange(slow[1], request + "\r\n").hasPrefix("HTTP/1.1 200"), "the kept-alive connection's next request is served")
        #expect(try await exchange(third, "\r\n").hasPrefix("HTTP/1.1 200"), "the newest unfinished one is served")
        #expect(server.evictedUnfinishedCount == 2)
    }

    @Test("the bookkeeping alone: oldest first past the limit, finished ones and reused addresses skipped, the list kept short")
    func bookkeeping() {
        func wsi(_ n: Int) -> OpaquePointer { OpaquePointer(bitPattern: 0x1000 * n)! }
        var u = UnfinishedRequests()
        for n in 1...3 { #expect(u.arrived(wsi(n), limit: 3).isEmpty) }
        #expect(u.arrived(wsi(4), limit: 3) == [wsi(1)])
        u.finished(wsi(2))
        #expect(u.arrived(wsi(5), limit: 3).isEmpty, "a finished one no longer counts")
        // wsi(3)'s address comes back as a new connection: it is the newest now, not the oldest.
        u.finished(wsi(3))
        #expect(u.arrived(wsi(3), limit: 3).isEmpty)
        #expect(u.arrived(wsi(6), limit: 3) == [wsi(4)])
        #expect(u.arrived(wsi(7), limit: 3) == [wsi(5)])
        #expect(u.arrived(wsi(8), limit: 3) == [wsi(3)])
        // Many that finish at once never pile up or get evicted.
        for n in 100..<20_000 { _ = u.arrived(wsi(n), limit: 1_000_000); u.finished(wsi(n)) }
        #expect(u.arrived(wsi(9), limit: 3) == [wsi(6)])
    }

    @Test("a throttled count reports at most once per interval, with everything since its last report")
    func throttledCount() {
        var t = ThrottledCount(every: .seconds(10))
        let start = ContinuousClock.now
        #expect(t.add(now: start) == 1)
        #expect(t.add(now: start + .seconds(1)) == nil)
        #expect(t.add(2, now: start + .seconds(5)) == nil)
        #expect(t.add(now: start + .seconds(10)) == 4)
        #expect(t.add(now: start + .seconds(11)) == nil)
    }
}
