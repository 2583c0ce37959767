import Foundation
import Testing
import TestSupport
@testable import RuntimeWorker

/// Children of this process that were cloned by the spawner thread for a step under a directory named `marker`
/// and have not exec'd yet: a clone keeps its thread's name (`step-spawner`) until its exec gives it the program's,
/// and it has its work directory bound (with namespaces) or as its working directory (without) by then. The marker
/// tells this test's step from those of suites running beside it.
func heldChildren(marker: String) -> [pid_t] {
    func text(_ path: String) -> String { (try? String(contentsOfFile: path, encoding: .utf8)) ?? "" }
    let tasks = (try? FileManager.default.contentsOfDirectory(atPath: "/proc/self/task")) ?? []
    return tasks.flatMap { tid -> [pid_t] in
        text("/proc/self/task/\(tid)/children").split(separator: " ").compactMap { pid_t($0.trimmingCharacters(in: .whitespacesAndNewlines)) }
    }.filter { pid in
        guard text("/proc/\(pid)/comm").trimmingCharacters(in: .whitespacesAndNewlines) == "step-spawner" else { return false }
        let cwd = (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/\(pid)/cwd")) ?? ""
        return cwd.contains(marker) || text("/proc/\(pid)/mountinfo").contains(marker)
    }
}

/// A directory for one gated test's steps, with a name no other test's steps have.
func gateDirectory(_ f: SandboxFixture) throws -> (path: String, marker: String) {
    let marker = "gate-\(UUID().uuidString)"
    let path = f.dir.appendingPathComponent(marker).path
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    return (path, marker)
}

struct GateRefused: Error, Equatable {}

/// The step held before its exec until a gate opens (the worker's `run:<id>` join), in every sandbox mode.
extension SandboxTests {
    @Test("a gated step is made ready up to its exec and runs nothing until the gate opens", arguments: [SandboxMode.namespaces, .none])
    func gateHolds(mode: SandboxMode) async throws {
        let f = try SandboxFixture(mode: mode)
        defer { f.remove() }
        let (under, marker) = try gateDirectory(f)
        let sawLines = Flag(), heldWhileWaiting = Flag(), linesWhileWaiting = Flag()
        let (t, out) = try await f.run("echo ran", under: under, gate: {
            if heldChildren(marker: marker).count == 1 { heldWhileWaiting.set() }
            try await Task.sleep(for: .milliseconds(200))
            if sawLines.isSet { linesWhileWaiting.set() }
        }, onLines: { _ in sawLines.set() })
        #expect(heldWhileWaiting.isSet, "the process was not made before the gate opened")
        #expect(!linesWhileWaiting.isSet)
        #expect(t.exitCode == 0)
        #expect(out.stdout == ["ran"])
        #expect(heldChildren(marker: marker).isEmpty)
    }

    @Test("a gate that throws: the held process is killed before its exec, reaped, and the gate's error is thrown", arguments: [SandboxMode.namespaces, .none])
    func gateRefused(mode: SandboxMode) async throws {
        let f = try SandboxFixture(mode: mode)
        defer { f.remove() }
        let (under, marker) = try gateDirectory(f)
        let sawLines = Flag()
        let held = PIDBox()
        await #expect(throws: GateRefused.self) {
            _ = try await f.run("echo ran", under: under, gate: {
                held.pids = heldChildren(marker: marker)
                throw GateRefused()
            }, onLines: { _ in sawLines.set() })
        }
        #expect(held.pids.count == 1)
        for pid in held.pids { #expect(kill(pid, 0) == -1 && errno == ESRCH, "process \(pid) is still there") }
        #expect(!sawLines.isSet)
        // The runner goes on: the next step runs.
        let (t, out) = try await f.run("echo next")
        #expect(t.exitCode == 0 && out.stdout == ["next"])
    }

    @Test("a gated step whose exec fails after the gate opens is a clear spawn error")
    func gateThenMissingInterpreter() async throws {
        let f = try SandboxFixture()
        defer { f.remove() }
        let (under, marker) = try gateDirectory(f)
        do {
            _ = try await f.run("x", interpreter: "/usr/bin/no-such-interpreter", under: under, gate: {})
            Issue.record("the run did not fail")
        } catch {
            #expect("\(error)".contains("exec: No such file or directory"), "\(error)")
        }
        #expect(heldChildren(marker: marker).isEmpty)
    }
}

final class PIDBox: @unchecked Sendable {
    private let lock = NSLock()
    private var value: [pid_t] = []
    var pids: [pid_t] {
        get { lock.withLock { value } }
        set { lock.withLock { value = newValue } }
    }
}
