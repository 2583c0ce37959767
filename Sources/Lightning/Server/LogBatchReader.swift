import Channels

/// One line of a `run:log` batch as the worker sent it, before Lightning's rules (cleaning, scrubbing, limits).
struct WireLogLine: Equatable {
    /// The message items joined by a space.
    var text: String
    var level: String?
    var source: String?
    var stepID: String?
    var workerSeq: Int64?
    var timestamp: String?
}

/// Reads a `run:log` batch payload (`{"run_id": ..., "logs": [{"message": [...], "level": ..., ...}, ...]}`) in one
/// pass from the frame's bytes, with no `JSON` value per line. It takes only the usual shape, the one both our worker
/// and ws-worker send: message items that are strings, and string level, source, timestamp and step id (or null), an
/// integer worker_seq. Anything else, and any text that is not JSON, gives nil, and the payload is read the usual way
/// (`JSON.parse`, then the same rules), so an unusual batch is stored, or refused, exactly as before.
enum LogBatchReader {
    private struct Unusual: Error {}

    /// Depths count from the payload (0), which sits at depth 1 in its frame: the nesting limit is the frame's.
    static func read(_ payload: ArraySlice<UInt8>) -> [WireLogLine]? {
        try? JSONCursor.read(payload, maxDepth: 511) { c -> [WireLogLine] in
            var lines: [WireLogLine]? = nil
            try c.expect(UInt8(ascii: "{"))
            if !c.take(UInt8(ascii: "}")) {
                repeat {
                    guard let key = try c.string() else { throw Unusual() }
                    try c.expect(UInt8(ascii: ":"))
                    if key == "logs" { lines = try readLines(&c) } else { try c.skipValue(depth: 1) }  // the last of a repeated key wins
                } while c.take(UInt8(ascii: ","))
                try c.expect(UInt8(ascii: "}"))
            }
            try c.end()
            guard let lines else { throw Unusual() }  // one line per event (the legacy form): the usual way
            return lines
        }
    }

    private static func readLines(_ c: inout JSONCursor) throws -> [WireLogLine] {
        try c.expect(UInt8(ascii: "["))
        var lines: [WireLogLine] = []
        if c.take(UInt8(ascii: "]")) { return lines }
        repeat { lines.append(try readLine(&c)) } while c.take(UInt8(ascii: ","))
        try c.expect(UInt8(ascii: "]"))
        return lines
    }

    private static func readLine(_ c: inout JSONCursor) throws -> WireLogLine {
        try c.expect(UInt8(ascii: "{"))
        var text: String? = nil
        var line = WireLogLine(text: "")
        if !c.take(UInt8(ascii: "}")) {
            repeat {
                guard let key = try c.string() else { throw Unusual() }
                try c.expect(UInt8(ascii: ":"))
                switch key {
                case "message": text = try message(&c)
                case "level": line.level = try requiredString(&c)
                case "source": line.source = try requiredString(&c)
                case "timestamp": line.timestamp = try requiredString(&c)
                case "step_id": line.stepID = try c.null() ? nil : try requiredString(&c)
                case "worker_seq":
                    guard let n = try c.integer() else { throw Unusual() }
                    line.workerSeq = n
                default: try c.skipValue(depth: 3)
                }
            } while c.take(UInt8(ascii: ","))
            try c.expect(UInt8(ascii: "}"))
        }
        guard let text else { throw Unusual() }  // no message: the usual way says what is wrong
        line.text = text
        return line
    }

    private static func requiredString(_ c: inout JSONCursor) throws -> String {
        guard let s = try c.string() else { throw Unusual() }
        return s
    }

    /// A list of strings joined by a space, or one string (a worker that sends the text itself).
    private static func message(_ c: inout JSONCursor) throws -> String {
        if let s = try c.string() { return s }
        try c.expect(UInt8(ascii: "["))
        var items: [String] = []
        if !c.take(UInt8(ascii: "]")) {
            repeat { items.append(try requiredString(&c)) } while c.take(UInt8(ascii: ","))
            try c.expect(UInt8(ascii: "]"))
        }
        return items.count == 1 ? items[0] : items.joined(separator: " ")
    }
}
