import Foundation
import Testing
@testable import LightningProtocol

private func state(_ json: String) -> Any {
    try! JSONSerialization.jsonObject(with: Data(json.utf8), options: [.fragmentsAllowed])
}

private func holds(_ condition: String, _ json: String, failed: Bool = false) throws -> Bool {
    try EdgeCondition.parse(condition).holds(upstreamFailed: failed, state: state(json))
}

@Suite("Edge conditions")
struct EdgeConditionTests {
    @Test("the three keywords follow the upstream outcome")
    func keywords() async throws {
        #expect(try holds("always", "{}", failed: true))
        #expect(try holds("on_job_success", "{}", failed: false))
        #expect(try !holds("on_job_success", "{}", failed: true))
        #expect(try holds("on_job_failure", "{}", failed: true))
        #expect(try !holds("on_job_failure", "{}", failed: false))
    }

    @Test("property access, literals and comparisons", arguments: [
        ("state.data.count > 2", #"{"data":{"count":3}}"#, true),
        ("state.data.count > 2", #"{"data":{"count":2}}"#, false),
        ("state.data.count >= 2 && state.ok === true", #"{"data":{"count":2},"ok":true}"#, true),
        ("state['data'][\"name\"] == 'x'", #"{"data":{"name":"x"}}"#, true),
        ("state.items[1] === 'b'", #"{"items":["a","b"]}"#, true),
        ("state.items.length == 2", #"{"items":["a","b"]}"#, true),
        ("!state.error", #"{"error":null}"#, true),
        ("!state.error", #"{"error":"boom"}"#, false),
        ("state.missing === undefined", #"{}"#, true),
        ("state.missing == null", #"{}"#, true),
        ("state.missing === null", #"{}"#, false),
        ("state.n == '5'", #"{"n":5}"#, true),
        ("state.n === '5'", #"{"n":5}"#, false),
        ("state.n !== 5 || (state.m < 1)", #"{"n":5,"m":0}"#, true),
        ("state.s < 'b'", #"{"s":"a"}"#, true),
        ("state.a?.b?.c", #"{}"#, false),
        ("state.flag", #"{"flag":0}"#, false),
        ("state.list", #"{"list":[]}"#, true),
        ("-1 < state.x", #"{"x":0}"#, true),
    ])
    func expressions(condition: String, json: String, expected: Bool) throws {
        #expect(try holds(condition, json) == expected)
    }

    @Test("anything outside the subset is refused at parse time", arguments: [
        "process.exit(1)",
        "state.x = 1",
        "state.f()",
        "require('fs')",
        "state.a +",
        "(state.a",
        "state[1",
        "'unterminated",
        "state.a; state.b",
        "this.constructor",
        "state.a + 1",
    ])
    func refused(condition: String) {
        #expect(throws: EdgeCondition.Error.self) { try EdgeCondition.parse(condition) }
    }

    @Test("reading a property of null fails evaluation with a message")
    func nullAccess() async throws {
        let c = try EdgeCondition.parse("state.a.b")
        let error = #expect(throws: EdgeCondition.Error.self) {
            try c.holds(upstreamFailed: false, state: state(#"{"a":null}"#))
        }
        #expect(error?.message.contains("null") == true)
    }

    @Test("parse errors name the position")
    func positions() {
        let error = #expect(throws: EdgeCondition.Error.self) { try EdgeCondition.parse("state.a === @") }
        #expect(error?.message.contains("position 13") == true)
    }

    @Test("a condition nested or chained beyond the bounds is refused with a message, on a task's thread, never crashing",
          arguments: [
              (String(repeating: "(", count: 100_000) + "state" + String(repeating: ")", count: 100_000), "nested deeper than 100 levels"),
              (String(repeating: "!", count: 100_000) + "state", "nested deeper than 100 levels"),
              (String(repeating: "state[", count: 100_000) + "0" + String(repeating: "]", count: 100_000), "nested deeper than 100 levels"),
              ("state" + String(repeating: ".a", count: 100_000), "more than 1000 operators"),
              (Array(repeating: "state.a", count: 100_000).joined(separator: " || "), "more than 1000 operators"),
          ])
    func bounds(_ condition: String, _ message: String) async throws {
        // 20,000 parentheses crashed Lightning at apply (a stack overflow): found by a hostile-input review.
        let error = await Task.detached { #expect(throws: EdgeCondition.Error.self) { try EdgeCondition.parse(condition) } }.value
        #expect(error?.message.contains(message) == true, "\(error?.message.prefix(200) ?? "")")
    }

    @Test("conditions within the bounds parse and run: 99 levels, 900 operators")
    func withinBounds() throws {
        let nested = String(repeating: "(", count: 99) + "state.a" + String(repeating: ")", count: 99)
        #expect(try holds(nested + " === 1", #"{"a":1}"#))
        let chain = Array(repeating: "state.a === 2", count: 300).joined(separator: " || ") + " || state.a === 1"
        #expect(try holds(chain, #"{"a":1}"#))
    }
}

@Suite("Credential scrubbing")
struct CredentialScrubberTests {
    @Test("a secret is masked whatever follows it: a combining mark or a variation selector does not hide it")
    func bytewise() {
        let scrubber = CredentialScrubber(secrets: ["hunter2pass", "pässwörd"])
        #expect(scrubber.scrub("a hunter2pass\u{301} b") == "a ***\u{301} b")
        #expect(scrubber.scrub("hunter2pass\u{FE0F}") == "***\u{FE0F}")
        #expect(scrubber.scrub("xhunter2passhunter2passy pässwörd é") == "x******y *** é")
        #expect(scrubber.scrub("hunter2pas") == "hunter2pas")
        #expect(scrubber.scrub("") == "")
        // The same masking as before for plain text: against String's own replacement, on random text.
        var generator = SystemRandomNumberGenerator()
        let alphabet = Array("hunter2pasx é")
        for _ in 0..<300 {
            let text = String((0..<Int.random(in: 0..<60, using: &generator)).map { _ in alphabet.randomElement(using: &generator)! })
            #expect(scrubber.scrub(text) == text.replacingOccurrences(of: "hunter2pass", with: "***"), "\(text.debugDescription)")
        }
    }

    @Test("strings, numbers and basic-auth pairs are masked; booleans and short values are not")
    func masks() async throws {
        let body = state(#"{"username":"alice","password":"s3cr3t-pw","port":54321,"ssl":true,"x":"ab"}"#)
        let scrubber = CredentialScrubber(credentialBodies: [body])
        let basic = Data("alice:s3cr3t-pw".utf8).base64EncodedString()
        let line = "login alice with s3cr3t-pw on 54321 (Basic \(basic)) ssl=true ab"
        #expect(scrubber.scrub(line) == "login *** with *** on *** (Basic ***) ssl=true ab")
    }

    @Test("a secret containing another is masked whole")
    func longestFirst() {
        let scrubber = CredentialScrubber(secrets: ["token", "token-extended"])
        #expect(scrubber.scrub("x token-extended y token") == "x *** y ***")
    }
}
