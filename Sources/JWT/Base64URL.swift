/// Base64url without padding (RFC 7515 section 2), strict: no padding, no whitespace, no other alphabet, and
/// no non-zero bits left over in the last character.
enum Base64URL {
    private static let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".utf8)
    private static let table: [UInt8] = {
        var t = [UInt8](repeating: 0xFF, count: 256)
        for (i, c) in alphabet.enumerated() { t[Int(c)] = UInt8(i) }
        return t
    }()

    static func encode<C: Collection<UInt8>>(_ bytes: C) -> String {
        var out = [UInt8]()
        out.reserveCapacity((bytes.count * 4 + 2) / 3)
        var it = bytes.makeIterator()
        while let a = it.next() {
            let b = it.next(), c = it.next()
            let n = UInt32(a) << 16 | UInt32(b ?? 0) << 8 | UInt32(c ?? 0)
            out.append(alphabet[Int(n >> 18 & 63)])
            out.append(alphabet[Int(n >> 12 & 63)])
            if b != nil { out.append(alphabet[Int(n >> 6 & 63)]) }
            if c != nil { out.append(alphabet[Int(n & 63)]) }
        }
        return String(decoding: out, as: UTF8.self)
    }

    static func decode<C: Collection<UInt8>>(_ text: C) -> [UInt8]? {
        if let decoded = text.withContiguousStorageIfAvailable({ decode(buffer: $0) }) { return decoded }
        return Array(text).withUnsafeBufferPointer { decode(buffer: $0) }
    }

    static func decode(buffer text: UnsafeBufferPointer<UInt8>) -> [UInt8]? {
        if text.count % 4 == 1 { return nil }
        var valid = true
        // The table is read through a pointer taken once: read as `table[i]` it was a `swift_once` check and a
        // bounds check per character.
        let out = table.withUnsafeBufferPointer { table in
            [UInt8](unsafeUninitializedCapacity: text.count * 3 / 4) { out, written in
                var acc: UInt32 = 0, bits = 0, j = 0
                for c in text {
                    let v = table[Int(c)]
                    if v == 0xFF {
                        valid = false
                        break
                    }
                    acc = acc << 6 | UInt32(v)
                    bits += 6
                    if bits >= 8 {
                        bits -= 8
                        out[j] = UInt8(truncatingIfNeeded: acc >> UInt32(bits))
                        j += 1
                    }
                }
                // Leftover bits must be zero (canonical encoding).
                if valid, bits > 0, acc & ((1 << UInt32(bits)) - 1) != 0 { valid = false }
                written = j
            }
        }
        return valid ? out : nil
    }

    /// Standard base64 with padding (for environment variables holding PEM text).
    static func decodeStandard(_ text: String) -> [UInt8]? {
        let cleaned = text.utf8.filter { $0 != 0x0A && $0 != 0x0D && $0 != 0x20 && $0 != 0x3D }
        let mapped = cleaned.map { c -> UInt8 in c == 0x2B ? 0x2D : (c == 0x2F ? 0x5F : c) }
        return decode(mapped)
    }

    static func encodeStandard(_ bytes: [UInt8]) -> String {
        var s = Array(encode(bytes).utf8).map { c -> UInt8 in c == 0x2D ? 0x2B : (c == 0x5F ? 0x2F : c) }
        while s.count % 4 != 0 { s.append(0x3D) }
        return String(decoding: s, as: UTF8.self)
    }
}
