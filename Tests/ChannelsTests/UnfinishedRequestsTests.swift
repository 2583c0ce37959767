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
}

/// A blocking TCP connection for HTTP by hand; reads time out after 60 s. (Used from one thread at a time.)
final class RawConnection: @unchecked Sendable {
    let fd: Int32

    init(port: Int) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw TestSupport.Failure("socket: errno \(errno)") }
        var timeout = timeval(tv_sec: 60, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var a = sockaddr_in()
        a.sin_family = sa_family_t(AF_INET)
        a.sin_port = in_port_t(UInt16(port).bigEndian)
        a.sin_addr.s_addr = inet_addr("127.0.0.1")
        let r = withUnsafePointer(to: &a) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        guard r == 0 else { close(fd); throw TestSupport.Failure("connect: errno \(errno)") }
    }

    deinit { close(fd) }

    func send(_ text: String) throws {
        let bytes = Array(text.utf8)
        let n = bytes.withUnsafeBytes { Foundation.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        guard n == bytes.count else { throw TestSupport.Failure("send: errno \(errno)") }
    }

    /// Sends `text` and reads one answer: its head and a body of its Content-Length.
    func exchange(_ text: String) throws -> String {
        try send(text)
        var answer: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            if let end = answer.firstRange(of: Array("\r\n\r\n".utf8)) {
                let head = String(decoding: answer[..<end.lowerBound], as: UTF8.self)
                let length = head.split(separator: "\r\n").first { $0.lowercased().hasPrefix("content-length:") }
                    .flatMap { Int($0.split(separator: ":")[1].trimmingCharacters(in: .whitespaces)) } ?? 0
                if answer.count >= end.upperBound + length { return String(decoding: answer, as: UTF8.self) }
            }
            let n = recv(fd, &buffer, buffer.count, 0)
            guard n > 0 else { return String(decoding: answer, as: UTF8.self) }
            answer += buffer[0..<n]
        }
    }

    /// True when the server closed the connection (end of stream or reset) without a byte; false on data or a timeout.
    func readsEndOfStream() throws -> Bool {
        var byte: UInt8 = 0
        let n = recv(fd, &byte, 1, 0)
        return n == 0 || (n < 0 && errno == ECONNRESET)
    }
}
