import Channels
import Foundation
import Testing
import TestSupport
@testable import Lightning

/// Issue 15, exhaustion: the database on a small tmpfs that fills up.
@Suite("A full disk under the database", .serialized)
struct DiskFullTests {
    @Test("new work is answered 503 with Retry-After, everything stored stays readable, and it recovers by itself when space returns")
    func fullDisk() async throws {
        let dir = try TestSupport.temporaryDirectory("diskfull")
        // A tmpfs of its own (root only, as the sandbox tests): the full disk is real, not simulated.
        let mounted = mount("tmpfs", dir.path, "tmpfs", 0, "size=3m")
        try #require(mounted == 0, "mounting a tmpfs needs root: \(String(cString: strerror(errno)))")
        defer {
            umount2(dir.path, Int32(MNT_DETACH))
            try? FileManager.default.removeItem(at: dir)
        }
        let h = try Harness(storeDirectory: dir)
        try await h.t.workflow("""
            name: hooked
            triggers: [{name: hook, type: webhook, path: hooked}]
            jobs: [{name: a, adaptor: sh, body: "true"}]
            """)
        let (admin, _) = try await h.tokens()
        var stored: [String] = []
        for i in 0..<3 {
            let r = try await h.http("POST", "/i/hooked", token: nil, body: #"{"n":\#(i)}"#)
            #expect(r.status == 200, "\(r.text)")
            stored.append(try #require(r.json["attempt_id"]?.stringValue))
        }
        // Fill what is left of the disk.
        let filler = dir.appendingPathComponent("filler").path
        let fd = open(filler, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
        try #require(fd >= 0)
        let chunk = [UInt8](repeating: 0x61, count: 16 * 1024)
        while chunk.withUnsafeBytes({ write(fd, $0.baseAddress, $0.count) }) > 0 {}
        let full = errno
        close(fd)
        #expect(full == ENOSPC)
        // SQLite may still have room in pages it holds: new work is refused at the latest when those are used.
        var refused: Exchange?
        var others: [Int] = []
        let big = "{\"pad\":\"" + String(repeating: "x", count: 20_000) + "\"}"
        for _ in 0..<40 {
            let r = try await h.http("POST", "/i/hooked", token: nil, body: big)
            if r.status == 503 { refused = r; break }
            if r.status != 200 { others.append(r.status) }
        }
        let answer = try #require(refused, "no 503 while the disk is full (other answers: \(others))")
        #expect(others.isEmpty, "only 200 or 503, never a 500: \(others)")
        #expect(answer.json["error"]?.stringValue?.contains("disk is full") == true, "\(answer.text)")
        // Everything acknowledged is still there (reads need no space).
        for id in stored {
            #expect(try await h.http("GET", "/api/attempts/\(id)", token: admin).status == 200)
        }
        // Space returns: new work is taken again, with nothing restarted.
        unlink(filler)
        let recovered = try await h.http("POST", "/i/hooked", token: nil, body: "{}")
        #expect(recovered.status == 200, "\(recovered.text)")
        await h.stop()
    }
}

