import Foundation
import Lightning
import Testing
import TestSupport

/// 1,000 viewers of one attempt that stop reading, while its step prints 1,000,000 lines (docs/security.md):
/// Lightning's memory stays bounded, every line is stored, and the attempt ends as it would unwatched.
@Suite("Many viewers of one attempt", .serialized)
struct ManyViewersTests {
    /// Joins `count` operator sockets to `topic` (batched lines), each with a tiny receive buffer, reads nothing
    /// more, says JOINED, and holds them until `release` exists.
    static let viewers = """
        import json, os, sys, time
        sys.path.insert(0, sys.argv[6])
        from raw_websocket import connect, frame
        port, token, topic, count, release = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
        held = []
        for i in range(count):
            s = connect(port, "/socket/websocket?token=%s&vsn=2.0.0" % token, receive_buffer=4096, timeout=60)
            s.sendall(frame(json.dumps(["1", "1", topic, "phx_join", {"batch": True}])))
            held.append(s)
        print("JOINED %d" % len(held), flush=True)
        while not os.path.exists(release):
            time.sleep(0.05)
        """

    /// The peak resident memory of a process, in bytes (VmHWM).
    static func peakMemory(_ pid: pid_t) -> Int {
        let status = (try? String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)) ?? ""
        let line = status.split(separator: "\n").first { $0.hasPrefix("VmHWM:") } ?? ""
        return (Int(line.split(separator: " ", omittingEmptySubsequences: true).dropFirst().first ?? "") ?? 0) * 1024
    }

    @Test("1,000 viewers that stop reading while a step prints 1,000,000 lines: Lightning's memory stays bounded and every line is stored")
    func stalledViewers() async throws {
        let b = try await Binaries()
        defer { b.remove() }
        let store = try b.store()
        _ = try await store.applyWorkflow(try WorkflowDefinition.parse("""
            name: loud
            jobs: [{name: a, adaptor: sh, body: "seq 1 1000000"}]
            """))
        // The same attempt unwatched first: the figure the watched one is compared with (printed, not asserted).
        let worker = try b.worker("loud-worker")
        defer { worker.stop() }
        let unwatchedStart = ContinuousClock.now
        let unwatched = try await store.createWorkOrder(workflow: "loud", input: Array("{}".utf8))
        #expect(try await store.waitUntilFinal(unwatched.attemptID, timeout: .seconds(600)).state == .success)
        let unwatchedTime = ContinuousClock.now - unwatchedStart
        // Paused while the viewers join, so that every line flows while all of them are joined and read nothing.
        worker.signal(SIGSTOP)
        let created = try await store.createWorkOrder(workflow: "loud", input: Array("{}".utf8))
        let token = try b.operatorToken()
        let script = b.dir.appendingPathComponent("viewers.py")
        try Self.viewers.write(to: script, atomically: true, encoding: .utf8)
        let release = b.dir.appendingPathComponent("release").path
        let viewers = try ChildProcess("/usr/bin/python3", [script.path, "\(b.port)", token, "attempt:\(created.attemptID)", "1000", release,
                                        TestSupport.packageRoot.appendingPathComponent("Tests/TestSupport/Python").path],
                                       directory: b.dir, logName: "viewers.log")
        defer { viewers.stop() }
        do { try await viewers.waitForLog("JOINED 1000", timeout: 300) } catch {
            print("ManyViewersTests: the end of Lightning's log:", String(b.lightning.log.suffix(3000)))
            throw error
        }
        let before = Self.peakMemory(b.lightning.pid)

        let watchedStart = ContinuousClock.now
        worker.signal(SIGCONT)
        let done = try await store.waitUntilFinal(created.attemptID, timeout: .seconds(600))
        let watchedTime = ContinuousClock.now - watchedStart
        let peak = Self.peakMemory(b.lightning.pid)
        FileManager.default.createFile(atPath: release, contents: nil)
        #expect(done.state == .success, "\(done)")
        #expect(try await store.lastLogSeq(attemptID: created.attemptID) == 1_000_000, "every line stored")
        print("ManyViewersTests: Lightning's peak RSS \(before >> 20) MB with 1,000 viewers joined, \(peak >> 20) MB after 1,000,000 lines; "
              + "the attempt took \(watchedTime) watched, \(unwatchedTime) unwatched")
        #expect(peak < 512 << 20, "Lightning's peak RSS: \(peak >> 20) MB")
    }
}
