import Channels
import Foundation
import Testing
@testable import Lightning

@Suite("Rendering log lines for viewers")
struct RenderingTests {
    static func line(_ seq: Int64, _ message: String, step: String? = "s-1") -> LogLineRecord {
        LogLineRecord(attemptID: "a", seq: seq, stepID: step, level: "info", source: "JOB", message: message, timestamp: 1_764_633_600_000_001)
    }

    @Test("a line written by hand is the same JSON as the rendered value, escapes included")
    func writeLog() throws {
        for l in [Self.line(1, "plain"), Self.line(2, "quote \" backslash \\ newline\n tab\t \u{1B}[31m ✓", step: nil)] {
            var out: [UInt8] = []
            Render.writeLog(l, to: &out)
            #expect(try JSON.parse(out) == Render.log(l))
        }
        for n in [0, 7, 10, 99, 1_764_633_600_000_001, Int64.max, -1, -10, Int64.min] {
            var out: [UInt8] = []
            Render.appendDecimal(n, to: &out)
            #expect(String(decoding: out, as: UTF8.self) == String(n))
        }
    }

    @Test("batches stay under the frame budget, keep every line in order, and a long line goes alone")
    func batches() throws {
        var lines = (1...3000).map { Self.line(Int64($0), String(repeating: "x", count: 700)) }
        lines.insert(Self.line(0, String(repeating: "y", count: 2_000_000)), at: 1500)
        let batches = Render.logBatches(Render.encodedLogs(lines)[...], maxBytes: 1 << 20)
        #expect(batches.count > 2)
        var seen: [Int64] = []
        for b in batches {
            let parsed = try JSON.parse(b)
            let items = parsed["lines"]?.arrayValue ?? []
            #expect(b.count <= (1 << 20) + 200 || items.count == 1, "a batch of \(b.count) bytes with \(items.count) lines")
            seen += items.compactMap { $0["seq"]?.intValue }
        }
        #expect(seen == lines.map(\.seq))
        #expect(Render.logBatches([][...]).isEmpty)
    }
}
