import LightningProtocol
import Testing

@Suite("Log text: colours kept, every other control and escape removed")
struct LogTextTests {
    @Test("cleaning", arguments: [
        ("plain text", "plain text"),
        ("tab\tand\nnewline", "tab\tand\nnewline"),
        ("cr lf\r\nand cr\rend", "cr lf\nand cr\nend"),
        ("\u{1B}[31mred\u{1B}[0m", "\u{1B}[31mred\u{1B}[0m"),
        ("\u{1B}[38;5;208morange\u{1B}[39m", "\u{1B}[38;5;208morange\u{1B}[39m"),
        ("\u{1B}[mreset", "\u{1B}[mreset"),
        // Cursor movement, erase, device status query: removed whole.
        ("a\u{1B}[2Jb\u{1B}[10;5Hc\u{1B}[6nd", "abcd"),
        // Private-mode and intermediate bytes are not SGR.
        ("\u{1B}[?25lhidden\u{1B}[ q", "hidden"),
        // OSC title and hyperlink, ended by BEL or ST; DCS.
        ("\u{1B}]0;pwned\u{7}x\u{1B}]8;;http://evil\u{1B}\\link\u{1B}]8;;\u{1B}\\", "xlink"),
        ("\u{1B}Pq#0;2;0;0;0\u{1B}\\after", "after"),
        // Two-byte escapes, a lone ESC at the end, C1 CSI (U+009B), BEL, DEL, NUL.
        ("\u{1B}cfull reset\u{1B}", "full reset"),
        ("\u{9B}31mc1\u{7}\u{7F}\u{0}", "31mc1"),
        // An unterminated sequence does not swallow the rest of the message.
        ("\u{1B}[31", ""),
        ("\u{1B}]0;no end, then text", "0;no end, then text"),
        // tput sgr0 (ESC ( B), keypad mode (ESC =), an ESC before a multi-byte character.
        ("\u{1B}(Bplain\u{1B}=\u{1B}é", "plainé"),
        ("é ü 日本 \u{1B}[1m✓\u{1B}[0m", "é ü 日本 \u{1B}[1m✓\u{1B}[0m"),
    ])
    func clean(input: String, expected: String) {
        #expect(LogText.clean(input) == expected)
    }

    @Test("an SGR with too many parameters is not kept")
    func longSGR() {
        let long = "\u{1B}[" + String(repeating: "1;", count: 40) + "m"
        #expect(LogText.clean(long + "x") == "x")
    }

    @Test("colours removed for a plain terminal")
    func withoutColour() {
        #expect(LogText.withoutColour("\u{1B}[1;31mred\u{1B}[0m and \u{1B}[mplain") == "red and plain")
        #expect(LogText.withoutColour("no escapes") == "no escapes")
    }
}
