/// What a log message may carry once Lightning has stored it: text, tabs, newlines and ANSI colour (SGR)
/// sequences, which the console and `attempts tail` draw. Every other control character and escape sequence
/// (cursor movement, OSC titles and hyperlinks, device queries) is removed, so no job can drive an operator's
/// terminal or page.
public enum LogText {
    static let escape: UInt8 = 0x1B

    /// A cheap byte scan: C0 controls (but tab and newline), DEL, and the lead byte of C1 controls (U+0080-U+009F).
    public static func mayNeedCleaning(_ text: String) -> Bool {
        var text = text
        // Over the contiguous UTF-8 buffer (no copy for native strings): a closure per byte through String.UTF8View
        // was a visible part of every streamed line's cost.
        return text.withUTF8 { u in
            for b in u where (b < 0x20 && b != 0x09 && b != 0x0A) || b == 0x7F || b == 0xC2 { return true }
            return false
        }
    }

    /// CR LF and a lone CR become a newline; SGR sequences (`ESC [ params m`, params digits and `;`, at most 64)
    /// are kept; any other escape sequence is removed whole; then every control character but tab and newline.
    public static func clean(_ text: String) -> String {
        guard mayNeedCleaning(text) else { return text }
        let bytes = Array(text.utf8)
        var out: [UInt8] = []
        out.reserveCapacity(bytes.count)
        var i = 0
        while i < bytes.count {
            let b = bytes[i]
            if b == escape {
                i = skipOrCopyEscape(bytes, at: i, into: &out)
                continue
            }
            if b == 0x0D {
                out.append(0x0A)
                i += (i + 1 < bytes.count && bytes[i + 1] == 0x0A) ? 2 : 1
                continue
            }
            out.append(b)
            i += 1
        }
        // Other controls (C0, DEL and C1) go by scalar, so multi-byte text is left whole.
        let cleaned = String(decoding: out, as: UTF8.self)
        return String(String.UnicodeScalarView(cleaned.unicodeScalars.filter {
            $0 == "\t" || $0 == "\n" || $0.value == UInt32(escape) || $0.properties.generalCategory != .control
        }))
    }

    /// At an ESC: copies a well-formed SGR sequence, drops any other sequence (CSI to its final byte, OSC/DCS/APC/PM
    /// to BEL or ST, else ESC and the next byte). Returns the index after it.
    private static func skipOrCopyEscape(_ b: [UInt8], at start: Int, into out: inout [UInt8]) -> Int {
        var i = start + 1
        guard i < b.count else { return i }
        switch b[i] {
        case UInt8(ascii: "["):
            i += 1
            let paramsStart = i
            while i < b.count, b[i] >= 0x30, b[i] <= 0x3F { i += 1 }  // parameter bytes
            let paramsEnd = i
            while i < b.count, b[i] >= 0x20, b[i] <= 0x2F { i += 1 }  // intermediate bytes
            guard i < b.count, b[i] >= 0x40, b[i] <= 0x7E else { return i }  // malformed: dropped up to here
            let final = b[i]
            i += 1
            let params = b[paramsStart..<paramsEnd]
            if final == UInt8(ascii: "m"), paramsEnd == i - 1, params.count <= 64,
               params.allSatisfy({ ($0 >= 0x30 && $0 <= 0x39) || $0 == UInt8(ascii: ";") }) {
                out.append(escape)
                out.append(UInt8(ascii: "["))
                out.append(contentsOf: params)
                out.append(final)
            }
            return i
        case UInt8(ascii: "]"), UInt8(ascii: "P"), UInt8(ascii: "_"), UInt8(ascii: "^"), UInt8(ascii: "X"):
            var j = i + 1
            while j < b.count {
                if b[j] == 0x07 { return j + 1 }
                if b[j] == escape, j + 1 < b.count, b[j + 1] == UInt8(ascii: "\\") { return j + 2 }
                j += 1
            }
            // Never terminated: no terminal would show the rest either, but without its ESC it is plain text.
            return i + 1
        default:
            // ESC, intermediate bytes (`ESC ( B` from `tput sgr0`), one final byte. A non-ASCII byte is text: kept.
            while i < b.count, b[i] >= 0x20, b[i] <= 0x2F { i += 1 }
            if i < b.count, b[i] >= 0x30, b[i] <= 0x7E { i += 1 }
            return i
        }
    }

    /// The text without its colour sequences: for a terminal that is not to be coloured, or plain search.
    public static func withoutColour(_ text: String) -> String {
        guard text.utf8.contains(escape) else { return text }
        var out: [UInt8] = []
        let b = Array(text.utf8)
        var i = 0
        while i < b.count {
            if b[i] == escape, i + 1 < b.count, b[i + 1] == UInt8(ascii: "[") {
                var j = i + 2
                while j < b.count, (b[j] >= 0x30 && b[j] <= 0x39) || b[j] == UInt8(ascii: ";") { j += 1 }
                if j < b.count, b[j] == UInt8(ascii: "m") { i = j + 1; continue }
            }
            if b[i] != escape { out.append(b[i]) }
            i += 1
        }
        return String(decoding: out, as: UTF8.self)
    }
}
