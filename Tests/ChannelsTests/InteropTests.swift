import Foundation
import Testing
import TestSupport
@testable import Channels

@Suite("Wire compatibility with Python's websockets", .serialized)
struct InteropTests {
    @Test("a foreign client joins, gets the right refs, heartbeats, decodes a binary reply, sends fragments, and sees HTTP/1.1 401")
    func pythonClient() async throws {
        let server = try makeServer()
        defer { server.stop() }
        let script = TestSupport.packageRoot.appendingPathComponent("Tests/ChannelsTests/Interop/phoenix_client.py").path
        let port = server.port
        let result = try await TestSupport.python(script, ["\(port)", "good", "bad"])
        #expect(result.status == 0, "\(result.stderr)")
        let found = try JSON.parse(result.stdout.trimmingCharacters(in: .whitespacesAndNewlines))
        #expect(found["join"] == ["1", "1", "room:py", "phx_reply",
                                  ["status": "ok", "response": ["joined": "room:py", "who": "user-1"]]])
        #expect(found["heartbeat"] == [nil, "2", "phoenix", "phx_reply", ["status": "ok", "response": [:]]])
        #expect(found["echo"]?[1] == "3")
        #expect(found["echo"]?[4]?["response"]?["n"] == .int(1_700_000_000_123_456))
        #expect(found["binary"] == ["kind": 1, "join_ref": "1", "ref": "4", "topic": "room:py", "status": "ok",
                                    "payload": ["k": "v"]])
        #expect(found["unmatched"] == ["9", "5", "room:other", "phx_reply",
                                       ["status": "error", "response": ["reason": "unmatched topic"]]])
        #expect(found["bad_token"] == ["status": 401, "reason": "Unauthorized"])
        #expect(found["fragmented"]?[1] == "6")
        #expect(found["fragmented"]?[4]?["response"]?["fragmented"] == .string(String(repeating: "x", count: 3000)))
    }
}
