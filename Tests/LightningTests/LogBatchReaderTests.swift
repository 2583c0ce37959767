import Channels
import Testing
@testable import Lightning

/// The one-pass `run:log` reader: what it takes gives the lines the JSON path gives; what it does not take (nil) goes
/// the JSON way, so only the usual shape may come back non-nil.
@Suite("run:log batches read in one pass")
struct LogBatchReaderTests {
    /// What the JSON path reads from one usual line (AttemptChannel.logLine before its rules).
    static func reference(_ line: JSON) -> WireLogLine {
        let items = line["message"]?.arrayValue ?? [line["message"]!]
        return WireLogLine(text: items.map { $0.stringValue! }.joined(separator: " "), level: line["level"]?.stringValue,
                           source: line["source"]?.stringValue, stepID: line["step_id"]?.stringValue,
                           workerSeq: line["worker_seq"]?.intValue, timestamp: line["timestamp"]?.stringValue)
    }

    static func read(_ text: String) -> [WireLogLine]? { LogBatchReader.read(Array(text.utf8)[...]) }

    @Test("the usual batch, as our worker and ws-worker send it")
    func usual() throws {
        let lines = try #require(Self.read("""
            { "run_id" : "r", "logs" : [ {"message":["a","b c"],"level":"info","source":"JOB","timestamp":"1700000000000001",
            "step_id":"s-1","worker_seq":7}, {"message":"text itself","step_id":null,"other":{"x":[1,2]}} , {"message":[]} ] }
            """))
        #expect(lines == [
            WireLogLine(text: "a b c", level: "info", source: "JOB", stepID: "s-1", workerSeq: 7, timestamp: "1700000000000001"),
            WireLogLine(text: "text itself"),
            WireLogLine(text: ""),
        ])
        #expect(Self.read(#"{"logs":[]}"#) == [])
        #expect(Self.read(#"{"logs":[{"message":["first"]}],"logs":[{"message":["last"]}]}"#) == [WireLogLine(text: "last")],
                "a repeated key: the last wins, as in the JSON path")
    }

    @Test("anything unusual is left to the JSON path", arguments: [
        #"{"run_id":"r"}"#,  // one line per event: no logs
        #"{"logs":"no"}"#, #"{"logs":[5]}"#, #"{"logs":[{"level":"info"}]}"#,
        #"{"logs":[{"message":["a",{"n":1}]}]}"#, #"{"logs":[{"message":5}]}"#, #"{"logs":[{"message":["a"],"level":3}]}"#,
        #"{"logs":[{"message":["a"],"timestamp":1700000000000001}]}"#, #"{"logs":[{"message":["a"],"worker_seq":1.5}]}"#,
        #"{"logs":[{"message":["a"],"worker_seq":"1"}]}"#, #"{"logs":[{"message":["a"],"step_id":5}]}"#,
        #"{"logs":[{"message":["a"]}]} x"#, #"{"logs":[{"message":["a"]}]"#, #"{"logs":[{"message":["a]}]}"#, "[]", "",
        #"{"logs":[{"message":["a"]},]}"#, "{\"logs\":[{\"message\":[\"a\u{1}\"]}]}",  // a raw control character: not JSON
    ])
    func unusual(text: String) {
        #expect(Self.read(text) == nil)
    }

    @Test("random usual batches read the same as through JSON values")
    func sameAsJSON() throws {
        let pieces = ["line", "é", "😀", "\"", "\\", "\n", "\t", "\u{1b}[31m", " ", "{", "]"]
        var g = SystemRandomNumberGenerator()
        func text() -> String { (0..<Int.random(in: 0...6, using: &g)).map { _ in pieces.randomElement(using: &g)! }.joined() }
        for _ in 0..<200 {
            let logs: [JSON] = (0..<Int.random(in: 0...20, using: &g)).map { i in
                var o: [String: JSON] = ["message": Bool.random(using: &g) ? .array((0..<Int.random(in: 1...3, using: &g)).map { _ in .string(text()) }) : .string(text())]
                if Bool.random(using: &g) { o["level"] = .string(["info", "debug", "error", "loud"].randomElement(using: &g)!) }
                if Bool.random(using: &g) { o["source"] = .string(text()) }
                if Bool.random(using: &g) { o["timestamp"] = .string(String(Int64.random(in: 1...Int64.max, using: &g))) }
                if Bool.random(using: &g) { o["step_id"] = Bool.random(using: &g) ? .string(text()) : .null }
                if Bool.random(using: &g) { o["worker_seq"] = .int(Int64.random(in: -5...Int64.max, using: &g)) }
                return .object(o)
            }
            let payload = JSON.object(["run_id": .string("r-\(Int.random(in: 0...9, using: &g))"), "logs": .array(logs)])
            let lines = try #require(LogBatchReader.read(payload.encoded()[...]), "\(payload.text)")
            #expect(lines == logs.map(Self.reference), "\(payload.text)")
        }
    }
}
