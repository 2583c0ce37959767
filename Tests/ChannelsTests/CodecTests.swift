import Foundation
import Testing
@testable import Channels

@Suite("JSON and the Phoenix V2 codec")
struct CodecTests {
    @Test("JSON round trips, keeping 16-digit integers exact and unicode intact")
    func jsonRoundTrip() async throws {
        let text = #"{"ts":"1700000000123456","n":1700000000123456,"f":1.5,"neg":-3,"s":"héllo \"q\" \n\u0001 😀","a":[true,false,null],"o":{}}"#
        let v = try JSON.parse(text)
        #expect(v["n"] == .int(1_700_000_000_123_456))
        #expect(v["f"] == .double(1.5))
        #expect(v["s"]?.stringValue == "héllo \"q\" \n\u{1} 😀")
        #expect(try JSON.parse(v.encoded()) == v)
        #expect(try JSON.parse(#""\ud83d\ude00""#) == .string("😀"))
    }

    @Test("strings with escapes anywhere (first, last, in a row, alone) encode as Foundation reads them back")
    func stringEscapes() async throws {
        let pieces = ["a", "é", "😀", "\"", "\\", "\n", "\r", "\t", "\u{1}", "\u{1f}", " ", "/", "plain text"]
        var generator = SystemRandomNumberGenerator()
        var cases = ["", "\"", "\"\"", "\\\n", "abc\u{0}", "\u{7}abc"]
        for _ in 0..<500 {
            cases.append((0..<Int.random(in: 1...12, using: &generator)).map { _ in pieces.randomElement(using: &generator)! }.joined())
        }
        for text in cases {
            var out: [UInt8] = []
            JSON.writeString(text, to: &out)
            #expect(try JSON.parse(out) == .string(text), "\(text.debugDescription)")
            let foundation = try JSONSerialization.jsonObject(with: Data(out), options: .fragmentsAllowed) as? String
            #expect(foundation == text, "\(text.debugDescription) -> \(String(decoding: out, as: UTF8.self))")
            #expect(!out.contains { $0 < 0x20 }, "no raw control character goes out")
            #expect(JSON.encodedStringLength(text) == out.count, "\(text.debugDescription)")
        }
    }

    @Test("malformed JSON is refused with an offset", arguments: [
        "{", "[1,]", "{\"a\" 1}", "01", "\"\\x\"", "\"\\ud800\"", "tru", "1 2", "\"a\u{1}\"", "-",
    ])
    func badJSON(text: String) {
        #expect(throws: JSONParseError.self) { try JSON.parse(text) }
    }

    @Test("deep nesting is refused rather than crashing")
    func deep() {
        #expect(throws: JSONParseError.self) { try JSON.parse(String(repeating: "[", count: 100_000)) }
    }

    @Test("frames nest up to twice a webhook body's limit, read on a task's thread: a 512-deep state fits in any event that carries it")
    func deepFrames() async throws {
        func frame(_ depth: Int) -> [UInt8] {
            // The frame's array, the payload object, then arrays: `depth` levels in all.
            Array(("[null,\"1\",\"t\",\"e\",{\"d\":" + String(repeating: "[", count: depth - 2) + String(repeating: "]", count: depth - 2) + "}]").utf8)
        }
        let deepest = frame(PhoenixMessage.maxDepth), over = frame(PhoenixMessage.maxDepth + 1)
        try await Task.detached {
            _ = try PhoenixMessage.decode(text: deepest)
            let envelope = try PhoenixMessage.envelope(text: deepest)
            _ = try PhoenixMessage.message(envelope, frame: deepest)
            #expect(throws: PhoenixMessage.DecodeError.self) { try PhoenixMessage.decode(text: over) }
        }.value
        #expect(PhoenixMessage.maxDepth >= 512 + 8)
    }

    @Test("a frame's envelope: the four fields as decode reads them, and where the unparsed payload lies")
    func envelope() throws {
        for text in [#"["1","2","run:a","run:log",{"logs":[{"message":["x"]}]}]"#, #" [ null , 7 , "t" , "e" , [1, 2] ] "#,
                     #"[null,null,"phoenix","heartbeat",{}]"#, "[\"1\",\"2\",\"t\",\"e\",\n  \"s\"\n]"] {
            let bytes = Array(text.utf8)
            let e = try PhoenixMessage.envelope(text: bytes)
            let m = try PhoenixMessage.decode(text: bytes)
            #expect(e.joinRef == m.joinRef && e.ref == m.ref && e.topic == m.topic && e.event == m.event, "\(text)")
            #expect(try JSON.parse(bytes[e.payload]) == m.payload.json, "\(text)")
            #expect(try PhoenixMessage.message(e, frame: bytes) == m, "\(text)")
        }
        #expect(throws: PhoenixMessage.DecodeError.notAnArray) { try PhoenixMessage.envelope(text: Array("{}".utf8)) }
        #expect(throws: PhoenixMessage.DecodeError.notAnArray) { try PhoenixMessage.envelope(text: Array(#"["1","2","t","e"]"#.utf8)) }
        #expect(throws: PhoenixMessage.DecodeError.notAnArray) { try PhoenixMessage.envelope(text: Array(#"["1","2","t","e",]"#.utf8)) }
        #expect(throws: PhoenixMessage.DecodeError.notAnArray) { try PhoenixMessage.envelope(text: Array(#"["1","2","t","e",{}"#.utf8)) }
        #expect(throws: PhoenixMessage.DecodeError.wrongFieldTypes) { try PhoenixMessage.envelope(text: Array(#"[null,null,1,"e",{}]"#.utf8)) }
        let long = String(repeating: "t", count: 256)
        #expect(throws: PhoenixMessage.DecodeError.fieldTooLong("topic")) {
            try PhoenixMessage.envelope(text: Array(#"[null,null,"\#(long)","e",{}]"#.utf8))
        }
        // A sixth element is the payload's problem: it does not parse.
        let six = Array(#"["1","2","t","e",{},6]"#.utf8)
        #expect(throws: JSONParseError.self) { try JSON.parse(six[try PhoenixMessage.envelope(text: six).payload]) }
    }

    @Test("text frames: five-element arrays both ways")
    func textFrames() async throws {
        let m = try PhoenixMessage.decode(text: Array(#"["1","2","run:a","fetch:plan",{"x":1}]"#.utf8))
        #expect(m.joinRef == "1" && m.ref == "2" && m.topic == "run:a" && m.event == "fetch:plan")
        #expect(m.payload.json?["x"] == .int(1))
        let back = try PhoenixMessage.decode(text: m.encodeText())
        #expect(back == m)
        let nulls = try PhoenixMessage.decode(text: Array(#"[null,null,"phoenix","heartbeat",{}]"#.utf8))
        #expect(nulls.joinRef == nil && nulls.ref == nil)
        #expect(throws: PhoenixMessage.DecodeError.notAnArray) { try PhoenixMessage.decode(text: Array("{}".utf8)) }
        #expect(throws: PhoenixMessage.DecodeError.wrongFieldTypes) {
            try PhoenixMessage.decode(text: Array(#"[null,null,1,"e",{}]"#.utf8))
        }
    }

    @Test("binary reply frames: kind 1, four lengths, then the raw payload")
    func binaryFrames() async throws {
        let payload = Array(#"{"data":{"big":true}}"#.utf8)
        let bytes = PhoenixMessage.encodeBinary(kind: .reply, joinRef: "3", ref: "12", topic: "run:x", status: "ok",
                                                payload: payload)
        #expect(Array(bytes.prefix(5)) == [1, 1, 2, 5, 2])
        let m = try PhoenixMessage.decode(binary: bytes)
        #expect(m.joinRef == "3" && m.ref == "12" && m.topic == "run:x" && m.event == "phx_reply")
        #expect(m.binaryStatus == "ok")
        #expect(m.payload == .binary(payload))
        #expect(throws: PhoenixMessage.DecodeError.binaryTooShort) { try PhoenixMessage.decode(binary: [1, 9, 0, 0, 0]) }
        #expect(throws: PhoenixMessage.DecodeError.unknownBinaryKind(7)) { try PhoenixMessage.decode(binary: [7]) }
    }

    @Test("refs longer than a binary frame's one-byte length are refused, and encoding never traps")
    func longFields() {
        let long = String(repeating: "r", count: 300)
        #expect(throws: PhoenixMessage.DecodeError.fieldTooLong("ref")) {
            try PhoenixMessage.decode(text: Array(#"["1","\#(long)","run:a","fetch:dataclip",{}]"#.utf8))
        }
        let bytes = PhoenixMessage.encodeBinary(kind: .reply, joinRef: "1", ref: long, topic: "t", status: "ok", payload: [1])
        #expect(bytes[2] == 255)
    }
}
