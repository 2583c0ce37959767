import Foundation
import Testing
@testable import Channels

/// The client's frames, built and masked here (RFC 6455 section 5.2), read back by a plain reading of the RFC.
@Suite("Client frames")
struct ClientFrameTests {
    /// Reads one frame as a server would: FIN and opcode, the mask bit, the three length forms, the key, unmasked
    /// one byte at a time.
    func read(_ frame: [UInt8]) throws -> (fin: Bool, opcode: UInt8, payload: [UInt8]) {
        var i = 2
        #expect(frame[1] & 0x80 != 0, "a client's frame is masked")
        var length = Int(frame[1] & 0x7f)
        if length == 126 {
            length = Int(frame[2]) << 8 | Int(frame[3])
            i = 4
        } else if length == 127 {
            length = frame[2..<10].reduce(0) { $0 << 8 | Int($1) }
            i = 10
        }
        let key = Array(frame[i..<(i + 4)])
        i += 4
        #expect(frame.count - i == length, "the length field matches the payload")
        return (frame[0] & 0x80 != 0, frame[0] & 0x0f, frame[i...].enumerated().map { $0.element ^ key[$0.offset % 4] })
    }

    @Test("every length form (0, 1, 125, 126, 65535, 65536 and between) reads back as its payload, with the key in its header",
          arguments: [0, 1, 7, 8, 9, 125, 126, 127, 1000, 65535, 65536, 70001])
    func roundTrip(length: Int) throws {
        var keys = MaskingKeys()
        let payload = (0..<length).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ 7) }
        let pre = 16
        var buffer = [UInt8](repeating: 0, count: pre) + payload
        let key = keys.take()
        let start = ClientFrame.build(&buffer, pre: pre, key: key)
        let frame = Array(buffer[start...])
        let (fin, opcode, read) = try read(frame)
        #expect(fin && opcode == 1, "a final text frame")
        #expect(read == payload)
        if length >= 8 { #expect(Array(buffer[pre...]) != payload || key == 0, "the payload went out masked") }
    }

    @Test("masking eight bytes at a time equals the RFC's byte-at-a-time XOR, at every length and start")
    func maskMatchesByteWise() {
        var keys = MaskingKeys()
        for length in 0..<70 {
            for offset in 0..<3 {
                let key = keys.take()
                var bytes = (0..<(length + offset)).map { _ in UInt8.random(in: 0...255) }
                let k = withUnsafeBytes(of: key.littleEndian) { Array($0) }
                let expected = Array(bytes[..<offset]) + bytes[offset...].enumerated().map { $0.element ^ k[$0.offset % 4] }
                bytes.withUnsafeMutableBytes { ClientFrame.mask($0.baseAddress! + offset, count: length, key: key) }
                #expect(bytes == expected, "length \(length), offset \(offset)")
            }
        }
    }

    @Test("masking keys differ from frame to frame, across refills of the pool")
    func keysDiffer() {
        var keys = MaskingKeys()
        let taken = (0..<3000).map { _ in keys.take() }
        // 3,000 draws of 32 random bits: a repeat is possible (p ≈ 0.001); more than two means no randomness.
        #expect(Set(taken).count >= taken.count - 2)
    }
}
