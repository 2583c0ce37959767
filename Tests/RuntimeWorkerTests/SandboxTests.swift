import Foundation
import Testing
import TestSupport
@testable import RuntimeWorker

final class Collected: @unchecked Sendable {
    private let lock = NSLock()
    private var lines: [(StepStream, String)] = []
    private var bytes = 0
    private var largestBatch = 0
    func add(_ batch: [(StepStream, String)]) {
        lock.withLock {
            var size = 0
            for l in batch where l.0 == .stdout { size += l.1.utf8.count + 1 }
            bytes += size
            largestBatch = max(largestBatch, size)
            if lines.count < 10_000 { lines += batch }
        }
    }
    var stdout: [String] { lock.withLock { lines.filter { $0.0 == .stdout }.map(\.1) } }
    var stderr: [String] { lock.withLock { lines.filter { $0.0 == .stderr }.map(\.1) } }
    var byteCount: Int { lock.withLock { bytes } }
    /// The most stdout bytes handed over at once.
    var largestBatchBytes: Int { lock.withLock { largestBatch } }
}

struct SandboxFixture {
    let dir: URL
    let runner: SandboxRunner

    init(mode: SandboxMode = .namespaces, network: StepNetwork = .none, extraReadOnlyPaths: [String] = []) throws {
        dir = try TestSupport.temporaryDirectory("sandbox")
        runner = try SandboxRunner(mode: mode, network: network, stateDirectory: dir.path, extraReadOnlyPaths: extraReadOnlyPaths)
    }

    func remove() { try? FileManager.default.removeItem(at: dir) }

    func run(_ script: String, env: [String: String] = [:], timeout: Duration = .seconds(20), memoryMB: Int64 = 256,
             pids: Int = 64, interpreter: String = "/bin/sh", scriptName: String = "step", control: StepControl = StepControl(),
             under: String? = nil,
             onLines: (@Sendable ([(StepStream, String)]) -> Void)? = nil) async throws -> (StepTermination, Collected) {
        let parent = under.map { URL(fileURLWithPath: $0) } ?? dir
        let work = parent.appendingPathComponent("work-\(UUID().uuidString.prefix(6))")
        let tmp = parent.appendingPathComponent("tmp-\(UUID().uuidString.prefix(6))")
        try FileManager.default.createDirectory(at: work, withIntermediateDirectories: true)
        try FileManager.default.createDirectory(at: tmp, withIntermediateDirectories: true)
        try script.write(to: work.appendingPathComponent(scriptName), atomically: true, encoding: .utf8)
        let inside = runner.useNamespaces ? "/work/" + scriptName : work.appendingPathComponent(scriptName).path
        let launch = StepLaunch(executable: interpreter, arguments: [interpreter, inside],
                                environment: ["PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": "/work"].merging(env) { $1 },
                                workDirectory: work.path, tmpDirectory: tmp.path, memoryLimitBytes: memoryMB << 20,
                                pidsLimit: pids, timeout: timeout)
        let collected = Collected()
        let t = try await runner.run(launch, control: control) { lines in
            collected.add(lines)
            onLines?(lines)
        }
        return (t, collected)
    }
}

@Suite("The step sandbox, with real processes", .serialized)
struct SandboxTests {
    @Test("a step runs, its stdout and stderr arrive as lines, its exit code is kept")
    func basics() async throws {
        let f = try SandboxFixture()
        defer { f.remove() }
        let (t, out) = try await f.run("echo one; echo two >&2; printf 'no newline'; exit 3")
        #expect(t.exitCode == 3 && !t.timedOut && !t.oomKilled)
        #expect(out.stdout == ["one", "no newline"])
        #expect(out.stderr == ["two"])
    }

    @Test("the step cannot see the worker's environment")
    func environment() async throws {
        setenv("LR_WORKER_SECRET", "do-not-leak", 1)
        let f = try SandboxFixture()
        defer { f.remove() }
        let (_, out) = try await f.run("env", env: ["STEP_ONLY": "yes"])
        #expect(out.stdout.contains("STEP_ONLY=yes"))
        #expect(!out.stdout.joined().contains("do-not-leak"))
    }

    @Test("the step cannot read the worker's files or write outside its directories")
    func filesystem() async throws {
        let f = try SandboxFixture()
        defer { f.remove() }
        let keyDir = URL(fileURLWithPath: "/var/tmp/lr-key-\(UUID().uuidString.prefix(6))")
        try FileManager.default.createDirectory(at: keyDir, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: keyDir) }
        try "PRIVATE".write(to: keyDir.appendingPathComponent("attempts_private.pem"), atomically: true, encoding: .utf8)
        let script = """
            cat \(keyDir.path)/attempts_private.pem && echo READ-KEY
            ls /root && echo SAW-ROOT
            cat \(f.dir.path)/../*/attempts_private.pem 2>/dev/null && echo READ-OTHER
            touch /usr/lr-evil && echo WROTE-USR
            touch /etc/lr-evil && echo WROTE-ETC
            touch /lr-evil && echo WROTE-ROOT
            echo ok > /work/out && echo WROTE-WORK
            echo ok > /tmp/x && echo WROTE-TMP
            id -u
            """
        let (_, out) = try await f.run(script)
        for bad in ["READ-KEY", "SAW-ROOT", "READ-OTHER", "WROTE-USR", "WROTE-ETC", "WROTE-ROOT"] {
            #expect(!out.stdout.contains(bad), "\(bad): \(out.stdout)")
        }
        #expect(out.stdout.contains("WROTE-WORK") && out.stdout.contains("WROTE-TMP"))
        #expect(out.stdout.last == "65534", "the step runs unprivileged")
        #expect(!FileManager.default.fileExists(atPath: "/usr/lr-evil"))
    }

    @Test("the step cannot connect to a port on the host's loopback")
    func network() async throws {
        let f = try SandboxFixture()
        defer { f.remove() }
        let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        defer { close(listener) }
        var addr = sockaddr_in()
        addr.sin_family = sa_family_t(AF_INET)
        addr.sin_addr.s_addr = inet_addr("127.0.0.1")
        _ = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(listener, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        listen(listener, 8)
        var len = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(listener, $0, &len) } }
        let port = Int(UInt16(bigEndian: addr.sin_port))
        let probe = "import socket\ntry:\n    socket.create_connection(('127.0.0.1', \(port)), timeout=3)\n    print('CONNECTED')\nexcept OSError as e:\n    print('refused', e)\n"
        let (_, out) = try await f.run(probe, interpreter: "/usr/bin/python3")
        #expect(!out.stdout.contains("CONNECTED"), "\(out.stdout) \(out.stderr)")
        // The same probe with the host's network connects: the test can tell.
        let host = try SandboxFixture(network: .host)
        defer { host.remove() }
        let (_, hostOut) = try await host.run(probe, interpreter: "/usr/bin/python3")
        #expect(hostOut.stdout.contains("CONNECTED"), "\(hostOut.stdout) \(hostOut.stderr)")
    }

    @Test("the step cannot lift its own limits: under a worker that is not root it may make no user namespace, so it cannot mount its cgroup")
    func noNestedUserNamespace() async throws {
        let f = try SandboxFixture()
        defer { f.remove() }
        // With a user namespace of its own, a step of a worker that is not root (its files are the worker's, and so
        // are its cgroup's) could mount its memory cgroup and raise its limit.
        let (_, out) = try await f.run("""
            mkdir -p /tmp/cg
            unshare -Urm --cgroup sh -c 'echo IN-NAMESPACE; mount -t cgroup -o memory none /tmp/cg && echo MOUNTED && echo 4000000000 > /tmp/cg/memory.limit_in_bytes && echo RAISED'
            echo done
            """)
        #expect(out.stdout.last == "done", "\(out.stdout) \(out.stderr)")
        // A root worker's steps are 65534 in the host's user namespace, where this host lets anyone make user
        // namespaces; their cgroup's files are root's, so nothing is raised. A worker that is not root forbids them.
        let forbidden = geteuid() == 0 ? ["RAISED"] : ["IN-NAMESPACE", "MOUNTED", "RAISED"]
        for bad in forbidden { #expect(!out.stdout.contains(bad), "\(bad): \(out.stdout) \(out.stderr)") }
    }

    @Test("the step has its own PID namespace and a fresh /proc")
    func pidNamespace() async throws {
        let f = try SandboxFixture()
        defer { f.remove() }
        let (_, out) = try await f.run("echo $$; ls /proc | grep -c '^[0-9]'; hostname")
        #expect(out.stdout.first == "1")
        #expect((Int(out.stdout.dropFirst().first ?? "99") ?? 99) < 5)
        #expect(out.stdout.last == "step")
    }

    @Test("a fork bomb is contained and nothing of it survives")
    func forkBomb() async throws {
        let f = try SandboxFixture()
        defer { f.remove() }
        // A unique script name marks every copy of the bomb (its forks keep the command line).
        let name = "bomb-\(UUID().uuidString.prefix(8))"
        let (t, _) = try await f.run("b() { b | b & }; b; sleep 2; echo survived", timeout: .seconds(6), pids: 32,
                                     interpreter: "/bin/bash", scriptName: name)
        #expect(t.exitCode != nil || t.signal != nil)
        let left = try await TestSupport.run("/usr/bin/pgrep", ["-c", "-f", name])
        #expect(left.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "0", "bomb processes left: \(left.stdout)")
    }

    @Test("a memory hog ends OOM-killed")
    func memoryHog() async throws {
        let f = try SandboxFixture()
        defer { f.remove() }
        let (t, _) = try await f.run("x = bytearray(400 * 1024 * 1024)\nprint('allocated')", memoryMB: 64, interpreter: "/usr/bin/python3")
        #expect(t.oomKilled, "\(t)")
        #expect(t.exitCode != 0)
    }

    @Test("pooled cgroups: a group reused after an OOM kill reports the next step alone (no OOM, its own peak, its own limits)")
    func pooledGroups() async throws {
        let f = try SandboxFixture()
        defer { f.remove() }
        guard let cgroups = f.runner.cgroups else { return }  // no cgroups on this host: nothing is pooled
        let (hog, _) = try await f.run("x = bytearray(400 * 1024 * 1024)", memoryMB: 64, interpreter: "/usr/bin/python3")
        #expect(hog.oomKilled)
        #expect(cgroups.idleCount == 1, "the hog's group went back to the pool")
        let (small, _) = try await f.run("echo small", memoryMB: 64)
        #expect(small.exitCode == 0 && !small.oomKilled, "\(small)")
        #expect(small.peakMemoryBytes < 32 << 20, "the hog's 64 MB peak is not the next step's: \(small.peakMemoryBytes)")
        #expect(cgroups.idleCount == 1, "one group served both steps")
        // Page cache a step leaves charged (a 40 MB file it wrote) is not counted as the next step's peak.
        let (writer, _) = try await f.run("dd if=/dev/zero of=/work/big bs=1M count=40 2>/dev/null; sync", memoryMB: 256)
        #expect(writer.exitCode == 0)
        let (after, _) = try await f.run("echo after", memoryMB: 256)
        #expect(after.peakMemoryBytes < 32 << 20, "the writer's page cache is not the next step's peak: \(after.peakMemoryBytes)")
        // A larger limit on the reused group: 100 MB fits in 256 MB.
        let (big, out) = try await f.run("x = bytearray(100 * 1024 * 1024)\nprint('ok')", memoryMB: 256, interpreter: "/usr/bin/python3")
        #expect(big.exitCode == 0 && !big.oomKilled && out.stdout == ["ok"], "\(big)")
        // And a smaller one again still holds.
        let (again, _) = try await f.run("x = bytearray(400 * 1024 * 1024)", memoryMB: 64, interpreter: "/usr/bin/python3")
        #expect(again.oomKilled)
    }

    @Test("a sleeper past the timeout is killed, with no process left")
    func timeout() async throws {
        let f = try SandboxFixture()
        defer { f.remove() }
        let marker = "lr-sleeper-\(UUID().uuidString.prefix(6))"
        // Both the background sleeper and the step itself carry the marker.
        let (t, _) = try await f.run("(exec -a \(marker)-bg sleep 300) & exec -a \(marker) sleep 300",
                                     timeout: .milliseconds(500), interpreter: "/bin/bash")
        #expect(t.timedOut && t.signal == SIGKILL)
        let left = try await TestSupport.run("/usr/bin/pgrep", ["-f", marker])
        #expect(left.stdout.isEmpty, "processes left: \(left.stdout)")
    }

    @Test("1 GB of output passes without the worker's memory growing")
    func bigOutput() async throws {
        let f = try SandboxFixture()
        defer { f.remove() }
        func rss() -> Int {
            let s = (try? String(contentsOfFile: "/proc/self/status", encoding: .utf8)) ?? ""
            return Int(s.split(separator: "\n").first { $0.hasPrefix("VmRSS:") }?.split(separator: " ")[1] ?? "0") ?? 0
        }
        let before = rss()
        // A generous limit: under load the machine may move 1 GB slowly, and this is not a speed test.
        let (t, out) = try await f.run("yes 'a line of output that is about sixty bytes long, give or take' | head -c 1000000000",
                                       timeout: .seconds(180))
        #expect(t.exitCode == 0)
        // Every byte arrived; the count adds one newline per line, including the cut-off last line, which had none.
        #expect(out.byteCount == 1_000_000_001)
        // The runner hands lines over as it reads them: one read's worth at a time (64 KB, and a line carried
        // over from the read before), never an accumulation.
        #expect(out.largestBatchBytes <= 64 * 1024 + 1024, "one batch held \(out.largestBatchBytes) bytes")
        // The process's RSS is shared with the tests running beside this one (in-process Lightnings, stores), so
        // it is only a coarse check here: holding even a third of the output would show as well above this.
        #expect(rss() - before < 350_000, "RSS grew by \(rss() - before) KB")
    }

    @Test("a consumer that holds the output pauses reading: the step waits on its full pipe, nothing is lost or reordered")
    func heldOutput() async throws {
        let f = try SandboxFixture()
        defer { f.remove() }
        let control = StepControl()
        let probe = HoldProbe(control: control)
        let (t, out) = try await f.run("seq 400000", timeout: .seconds(120), control: control) { probe.saw($0) }
        #expect(t.exitCode == 0)
        let (count, wrong) = probe.order
        #expect(count == 400_000 && wrong == nil, "\(count) lines; the first out of order: \(wrong ?? "-")")
        let (holds, mostWhileHeld) = probe.figures
        #expect(holds >= 5, "the output was held \(holds) times")
        // While held, the reactor finishes at most the read it was in: one 64 KB chunk.
        #expect(mostWhileHeld <= StepReactor.chunk, "\(mostWhileHeld) bytes were read while the output was held")
    }

    @Test("the read-only view is built once and again after its lifetime: a host file replaced by rename is seen after the rebuild",
          .enabled(if: geteuid() == 0, "only a root worker builds the view once; one that is not root builds it for each step"))
    func preparedViewRebuilt() async throws {
        // Not under /tmp: the step's private /tmp is mounted over it.
        let host = URL(fileURLWithPath: "/var/tmp/lr-view-\(UUID().uuidString.prefix(8))")
        try FileManager.default.createDirectory(at: host, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: host) }
        let file = host.appendingPathComponent("settings").path
        try "first".write(toFile: file, atomically: false, encoding: .utf8)
        let f = try SandboxFixture(extraReadOnlyPaths: [file])
        defer { f.remove() }
        f.runner.preparedRootLifetime = .seconds(3600)
        #expect(try await f.run("cat \(file)").1.stdout == ["first"])
        // Replaced the way package managers replace files: the view still holds the old one, as a bind mount does.
        try "second".write(toFile: file, atomically: true, encoding: .utf8)
        #expect(try await f.run("cat \(file)").1.stdout == ["first"], "the view is built once, not per step")
        f.runner.preparedRootLifetime = .zero
        #expect(try await f.run("cat \(file)").1.stdout == ["second"], "a view past its lifetime is built again")
        // Still read-only after the rebuild.
        let (_, out) = try await f.run("echo x > \(file) 2>/dev/null && echo WROTE; echo x > /usr/x 2>/dev/null && echo WROTE; echo done")
        #expect(out.stdout == ["done"])
    }

    @Test("a step's mounts are the read-only view and its own three: /work and /tmp nosuid and nodev, nothing of the host's tree",
          arguments: ["the view's namespace", "the host's mounts copied", "the view built per step"])
    func mountsAreTheViewOnly(way: String) async throws {
        let f = try SandboxFixture()
        defer { f.remove() }
        // The longer ways: a copy of the spawner's namespace, pivoted (a kernel before 5.12), or the view built in
        // it by the step (a worker that is not root).
        f.runner.skipViewNamespace = way == "the host's mounts copied"
        f.runner.buildRootPerStep = way == "the view built per step"
        let (t, out) = try await f.run("cat /proc/self/mountinfo")
        #expect(t.exitCode == 0, "\(out.stderr)")
        // mountinfo: id parent major:minor root mount-point options ... - type source super-options
        let mounts = out.stdout.map { $0.split(separator: " ").map(String.init) }.filter { $0.count > 6 }
        let points = Set(mounts.map { $0[4] })
        var allowed: Set<String> = ["/", "/work", "/tmp", "/proc", "/dev/null", "/dev/zero", "/dev/random", "/dev/urandom"]
        allowed.formUnion(f.runner.readOnlyPaths)
        #expect(points.isSubset(of: allowed), "mounts beyond the view: \(points.subtracting(allowed).sorted())")
        #expect(points.isSuperset(of: ["/", "/work", "/tmp", "/proc", "/usr", "/dev/null"]), "\(points.sorted())")
        for m in mounts where m[4] == "/work" || m[4] == "/tmp" {
            let options = Set(m[5].split(separator: ",").map(String.init))
            #expect(options.isSuperset(of: ["nosuid", "nodev"]), "\(m[4]) is mounted \(m[5])")
            // Optional fields (up to "-"): no `master:` or `shared:`, so no mount event reaches it from the host.
            let optional = m.dropFirst(6).prefix { $0 != "-" }
            #expect(optional.isEmpty, "\(m[4]) propagates: \(optional.joined(separator: " "))")
        }
        for m in mounts where m[4] == "/" || m[4] == "/usr" {
            #expect(m[5].split(separator: ",").contains("ro"), "\(m[4]) is mounted \(m[5])")
        }
    }

    @Test("only a refusal at one of the view namespace's own stages sends steps the longer way; a missing directory or program does not")
    func viewNamespaceRefusals() {
        #expect(SandboxRunner.refusedViewNamespace("enter the view's mount namespace: Operation not permitted"))
        #expect(SandboxRunner.refusedViewNamespace("attach the work directory: Invalid argument"))
        #expect(SandboxRunner.refusedViewNamespace("clone the work directory's mount: Function not implemented"))
        #expect(!SandboxRunner.refusedViewNamespace("clone the work directory's mount: No such file or directory"))
        #expect(!SandboxRunner.refusedViewNamespace("exec: No such file or directory"))
        #expect(!SandboxRunner.refusedViewNamespace("exec: Permission denied"))
    }

    @Test("a work directory on a mount made after the worker started (not propagated) is the step's /work all the same",
          .enabled(if: geteuid() == 0, "the test mounts a tmpfs, which takes root (and only a root worker keeps a copy of the mounts)"))
    func workDirectoryOnLaterMount() async throws {
        let f = try SandboxFixture()
        defer { f.remove() }
        #expect(try await f.run("echo ready").0.exitCode == 0)  // the view is prepared
        // A private mount point, so that nothing mounted under it reaches the spawner's copy of the host's mounts.
        let base = f.dir.appendingPathComponent("later").path
        try FileManager.default.createDirectory(atPath: base, withIntermediateDirectories: true)
        #expect(mount(base, base, nil, UInt(MS_BIND), nil) == 0 && mount(nil, base, nil, UInt(MS_PRIVATE), nil) == 0)
        defer { umount2(base, Int32(MNT_DETACH)) }
        #expect(mount("tmpfs", base, "tmpfs", 0, "size=8m") == 0)
        let (t, out) = try await f.run("cat /work/step >/dev/null && echo sees-its-script", under: base)
        #expect(t.exitCode == 0 && out.stdout == ["sees-its-script"], "\(out.stdout) \(out.stderr)")
    }

    @Test("a step that ends on SIGTERM within its grace is not SIGKILLed later: its pid and pooled cgroup may be another step's by then")
    func noLateKill() async throws {
        let f = try SandboxFixture()
        defer { f.remove() }
        let first = StepControl()
        let stopping = Task { try await f.run("sleep 30", control: first) }
        for _ in 0..<2000 where first.startedAt == nil { try await Task.sleep(for: .milliseconds(5)) }
        first.terminate(grace: .milliseconds(800))
        _ = try await stopping.value
        // The next step most likely takes the same cgroup from the pool; it outlives the first one's grace.
        let (t, out) = try await f.run("sleep 2; echo alive")
        #expect(t.exitCode == 0 && t.signal == nil && out.stdout == ["alive"], "\(t)")
    }

    @Test("the step gets default signal dispositions, not the worker's (SIGPIPE ends a writer to a closed pipe)")
    func signals() async throws {
        signal(SIGPIPE, SIG_IGN)  // as a Swift server process has it
        let f = try SandboxFixture()
        defer { f.remove() }
        let (t, out) = try await f.run("yes | head -c 10 > /dev/null; echo \"${PIPESTATUS[0]}\"; grep SigIgn /proc/self/status",
                                       interpreter: "/bin/bash")
        #expect(t.exitCode == 0)
        #expect(out.stdout.first == "141", "yes must die of SIGPIPE (128 + 13): \(out.stdout) \(out.stderr)")
        #expect(out.stderr.isEmpty, "\(out.stderr)")
    }

    @Test("a missing interpreter is a clear spawn error")
    func missingInterpreter() async throws {
        let f = try SandboxFixture()
        defer { f.remove() }
        await #expect(throws: SandboxError.self) { try await f.run("x", interpreter: "/usr/bin/no-such-interpreter") }
        do { _ = try await f.run("x", interpreter: "/usr/bin/no-such-interpreter") } catch {
            #expect("\(error)".contains("exec: No such file or directory"), "\(error)")
        }
    }

    @Test("--sandbox none still gives a clean environment and kills the tree on timeout")
    func noneMode() async throws {
        setenv("LR_WORKER_SECRET", "do-not-leak", 1)
        let f = try SandboxFixture(mode: .none)
        defer { f.remove() }
        let (_, out) = try await f.run("env")
        #expect(!out.stdout.joined().contains("do-not-leak"))
        // The step (uid 65534 when the worker is root) can write its output next to its script.
        let (w, written) = try await f.run("echo '{}' > \"$(dirname \"$0\")/output.json\" && echo wrote")
        #expect(w.exitCode == 0 && written.stdout == ["wrote"], "\(written.stderr)")
        let marker = "lr-none-\(UUID().uuidString.prefix(6))"
        let (t, _) = try await f.run("(exec -a \(marker) sleep 300) & sleep 300", timeout: .milliseconds(500), interpreter: "/bin/bash")
        #expect(t.timedOut)
        try await Task.sleep(for: .milliseconds(100))
        #expect(try await TestSupport.run("/usr/bin/pgrep", ["-f", marker]).stdout.isEmpty)
    }
}

/// Holds a step's output after every 20,000 lines and releases it 30 ms later from another thread, counting the
/// bytes that still arrive while it is held.
final class HoldProbe: @unchecked Sendable {
    let control: StepControl
    private let lock = NSLock()
    private var sinceRelease = 0
    private var held = false
    private var heldBytes = 0
    private var holds = 0
    private var most = 0

    init(control: StepControl) { self.control = control }

    private var count = 0
    private var wrong: String?

    func saw(_ lines: [(StepStream, String)]) {
        let bytes = lines.reduce(0) { $0 + $1.1.utf8.count + 1 }
        let hold: Bool = lock.withLock {
            for (_, text) in lines {
                count += 1
                if wrong == nil && text != String(count) { wrong = "line \(count) is \(text)" }
            }
            if held {
                heldBytes += bytes
                most = max(most, heldBytes)
                return false
            }
            sinceRelease += lines.count
            guard sinceRelease >= 20_000 else { return false }
            sinceRelease = 0
            held = true
            heldBytes = 0
            holds += 1
            return true
        }
        guard hold else { return }
        control.holdOutput()
        DispatchQueue.global().asyncAfter(deadline: .now() + .milliseconds(30)) { [self] in
            lock.withLock { held = false }
            control.releaseOutput()
        }
    }

    var figures: (holds: Int, mostWhileHeld: Int) { lock.withLock { (holds, most) } }
    var order: (count: Int, firstWrong: String?) { lock.withLock { (count, wrong) } }
}
