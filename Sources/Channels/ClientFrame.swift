internal import CLibWebSockets
import Foundation

/// A client's WebSocket frame (RFC 6455 section 5.2), built in place in front of its payload and masked here.
///
/// libwebsockets masks a client's payload one byte at a time, reloading and storing its mask index for every
/// byte: a third of the worker's CPU while it streamed a step's log lines (`perf record`, lws 4.1). The frame is
/// built here instead, the payload masked eight bytes at a time, and handed to lws as raw bytes
/// (`LWS_WRITE_RAW`), which it sends or buffers whole, so nothing of its own (a pong) goes out inside the frame.
enum ClientFrame {
    /// Largest header: 2 bytes, an 8-byte length, the 4-byte masking key.
    static let maxHeaderBytes = 14

    /// XORs `count` bytes at `p` with the masking key (its little-endian bytes, in turn from the first byte).
    static func mask(_ p: UnsafeMutableRawPointer, count: Int, key: UInt32) {
        let wide = UInt64(key.littleEndian) | UInt64(key.littleEndian) << 32
        var i = 0
        while i + 8 <= count {
            let v = p.loadUnaligned(fromByteOffset: i, as: UInt64.self)
            p.storeBytes(of: v ^ wide.littleEndian, toByteOffset: i, as: UInt64.self)
            i += 8
        }
        withUnsafeBytes(of: key.littleEndian) { k in
            while i < count {
                p.storeBytes(of: p.load(fromByteOffset: i, as: UInt8.self) ^ k[i & 3], toByteOffset: i, as: UInt8.self)
                i += 1
            }
        }
    }

    /// Turns `buffer` (`pre` bytes of room, then the payload) into a final, masked text frame in place: the header (2
    /// bytes, the 16- or 64-bit length when the payload needs it, the masking key) is written just before the payload.
    /// Returns the offset where the frame starts; it runs to the end of the buffer.
    static func build(_ buffer: inout [UInt8], pre: Int, key: UInt32) -> Int {
        let length = buffer.count - pre
        let lengthBytes = length < 126 ? 0 : length < 65536 ? 2 : 8
        let start = pre - (2 + lengthBytes + 4)
        precondition(start >= 0, "a frame's header needs \(maxHeaderBytes) bytes of room")
        buffer.withUnsafeMutableBytes { b in
            mask(b.baseAddress! + pre, count: length, key: key)
            b[start] = 0x81  // FIN, text
            b[start + 1] = 0x80 | (lengthBytes == 0 ? UInt8(length) : lengthBytes == 2 ? 126 : 127)
            for i in 0..<lengthBytes { b[start + 2 + i] = UInt8((UInt64(length) >> UInt64(8 * (lengthBytes - 1 - i))) & 0xff) }
            withUnsafeBytes(of: key.littleEndian) { k in
                for i in 0..<4 { b[pre - 4 + i] = k[i] }
            }
        }
        return start
    }
}

/// Masking keys from the kernel's random source, 4 KB read at a time (RFC 6455 asks for a fresh, unpredictable key
/// per frame; lws read 4 bytes from /dev/urandom for each). One per connection's service thread: not thread-safe.
struct MaskingKeys {
    private var pool = [UInt32](repeating: 0, count: 1024)
    private var next = 1024

    mutating func take() -> UInt32 {
        if next == pool.count {
            pool.withUnsafeMutableBytes { b in
                var filled = 0
                while filled < b.count {
                    let n = clws_getrandom(b.baseAddress! + filled, b.count - filled)
                    if n > 0 { filled += Int(n) } else if errno != EINTR { break }
                }
                // getrandom refused (a seccomp profile): the same source as a file.
                if filled < b.count, let urandom = FileHandle(forReadingAtPath: "/dev/urandom"),
                   let data = try? urandom.read(upToCount: b.count - filled), data.count == b.count - filled {
                    data.copyBytes(to: UnsafeMutableRawBufferPointer(rebasing: b[filled...]))
                    filled = b.count
                }
                precondition(filled == b.count, "no random source for WebSocket masking keys (getrandom and /dev/urandom both failed)")
            }
            next = 0
        }
        defer { next += 1 }
        return pool[next]
    }
}
