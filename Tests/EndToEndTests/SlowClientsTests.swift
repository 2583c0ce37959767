import Foundation
import Testing
import TestSupport

/// Issue 15, exhaustion: slow HTTP clients (slowloris) against the real `lightning serve`.
@Suite("Slow clients", .serialized)
struct SlowClientsTests {
    @Test("2,000 connections that never finish their headers: /healthz is answered throughout, a worker still connects, and the server closes every slow one")
    func slowloris() async throws {
        let b = try await Binaries()
        defer { b.remove() }
        let script = TestSupport.packageRoot.appendingPathComponent("Tests/EndToEndTests/Interop/slow_clients.py").path
        let python = try #require(TestSupport.which("python3"))
        // 16 s of trickling: past the server's 10 s header timeout, so every slow connection should be cut before.
        async let flood = TestSupport.run(python, [script, "\(b.port)", "2000", "16"])
        try await Task.sleep(for: .seconds(2))
        let worker = try b.worker("steady")
        defer { worker.stop() }
        _ = try await b.lightning.waitForLog(#"worker\.name=steady.*worker joined the queue"#, timeout: 60)
        let r = try await flood
        #expect(r.status == 0, "\(r.stderr)")
        let report = try JSONSerialization.jsonObject(with: Data(r.stdout.utf8)) as? [String: Any] ?? [:]
        let opened = report["opened"] as? Int ?? -1
        #expect(opened == report["connections"] as? Int, "\(report)")
        #expect(report["closed"] as? Int == opened, "every slow connection closed by the server: \(report)")
        #expect((report["healthz_count"] as? Int ?? 0) > 5, "/healthz answered 200 throughout: \(report)")
        // The latencies are a benchmark's figures, not a test's: printed for the log.
        print("slowloris: \(report)")
    }
}
