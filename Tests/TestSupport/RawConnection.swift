import Foundation

/// A blocking TCP connection to a port on 127.0.0.1, for HTTP by hand; reads time out after `timeout` seconds.
/// (Used from one thread at a time; from async code, through `TestSupport.onThread`.)
public final class RawConnection: @unchecked Sendable {
    public let fd: Int32

    public init(port: Int, timeout seconds: Int = 60) throws {
        fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw TestSupport.Failure("socket: errno \(errno)") }
        var timeout = timeval(tv_sec: seconds, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var a = Self.loopback(port: port)
        let r = withUnsafePointer(to: &a) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        guard r == 0 else { close(fd); throw TestSupport.Failure("connect: errno \(errno)") }
    }

    /// The address of `port` on 127.0.0.1.
    public static func loopback(port: Int) -> sockaddr_in {
        var a = sockaddr_in()
        a.sin_family = sa_family_t(AF_INET)
        a.sin_port = in_port_t(UInt16(port).bigEndian)
        a.sin_addr.s_addr = inet_addr("127.0.0.1")
        return a
    }

    /// Everything until the server closes (or the read times out).
    public func readToEnd() -> String {
        var answer: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 4096)
        while true {
            let n = recv(fd, &buffer, buffer.count, 0)
            if n <= 0 { break }
            answer += buffer[0..<n]
        }
        return String(decoding: answer, as: UTF8.self)
    }

    deinit { close(fd) }

    public func send(_ text: String) throws {
        let bytes = Array(text.utf8)
        let n = bytes.withUnsafeBytes { Foundation.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
        guard n == bytes.count else { throw TestSupport.Failure("send: errno \(errno)") }
    }

    /// Sends `text` and reads one answer: its head and a body of its Content-Length.
    public func exchange(_ text: String) throws -> String {
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
    public func readsEndOfStream() throws -> Bool {
        var byte: UInt8 = 0
        let n = recv(fd, &byte, 1, 0)
        return n == 0 || (n < 0 && errno == ECONNRESET)
    }
}
