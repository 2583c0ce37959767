import Foundation
import JWT
import Lightning
import Testing
import TestSupport

/// The test user a worker runs as here: made when missing (a system user with no home and no shell).
enum UnprivilegedUser {
    static let name = "lightning-test"
    private static let made = Result { () throws -> (uid: uid_t, gid: gid_t) in
        if getpwnam(name) == nil {
            let r = try TestSupport.run("/usr/sbin/useradd", ["--system", "--no-create-home", "--shell", "/usr/sbin/nologin", name])
            guard r.status == 0 || getpwnam(name) != nil else { throw TestSupport.Failure("useradd \(name) failed: \(r)") }
        }
        guard let pw = getpwnam(name) else { throw TestSupport.Failure("no user \(name) after useradd") }
        return (pw.pointee.pw_uid, pw.pointee.pw_gid)
    }

    /// uid and gid of the test user, made once per run.
    static func ids() throws -> (uid: uid_t, gid: gid_t) { try made.get() }

    /// A copy of a built binary where the user can run it (the build directory may be under a home it cannot enter).
    /// Copied by `cp`, a process of its own: a copy written from this process could not be run while any child forked
    /// meanwhile by another test still held the write descriptor (ETXTBSY, seen once under load in CI).
    static func binary(_ name: String, in dir: URL) async throws -> String {
        let copy = dir.appendingPathComponent("bin/\(name)")
        try FileManager.default.createDirectory(at: copy.deletingLastPathComponent(), withIntermediateDirectories: true)
        try? FileManager.default.removeItem(at: copy)
        let cp = try await TestSupport.run("/bin/cp", [try TestSupport.builtBinary(name), copy.path])
        guard cp.status == 0 else { throw TestSupport.Failure("cp \(name): \(cp.stderr)") }
        chmod(copy.path, 0o755)
        chmod(copy.deletingLastPathComponent().path, 0o755)
        return copy.path
    }
}

/// A worker run as an ordinary user (docs/workers.md, "Running a worker as an ordinary user"): the same sandbox
/// through user namespaces, limits through a cgroup subtree handed to that user, and a clear refusal where user
/// namespaces are not allowed. The sandbox suites themselves run as that user too (scripts/test).
@Suite("A worker that is not root", .serialized, .enabled(if: geteuid() == 0, "the test starts the worker as another user, which takes root"))
struct UnprivilegedWorkerTests {
    @Test("setup-cgroups hands the user its subtrees; the worker, as that user, runs steps as no one, behind the same walls, within their limits",
          .enabled(if: FileManager.default.fileExists(atPath: "/sys/fs/cgroup/memory/cgroup.procs"),
                   "setup-cgroups hands out cgroup v1 subtrees, and this host has no v1 memory hierarchy"))
    func runsAttempts() async throws {
        let user = try UnprivilegedUser.ids()
        let setup = try await TestSupport.run(try TestSupport.builtBinary("runtime-worker"), ["setup-cgroups", "--user", UnprivilegedUser.name])
        #expect(setup.status == 0, "\(setup)")
        for hierarchy in ["memory", "pids"] {
            var st = stat()
            let dir = "/sys/fs/cgroup/\(hierarchy)/lightning-runtime-user-\(user.uid)"
            #expect(stat(dir, &st) == 0 && st.st_uid == user.uid, "\(dir) is the user's")
        }
        // Refused for a user that does not exist, and when not run as root (here: as the user itself).
        let unknown = try await TestSupport.run(try TestSupport.builtBinary("runtime-worker"), ["setup-cgroups", "--user", "no-such-user-x"])
        #expect(unknown.status != 0 && unknown.stderr.contains("no user \"no-such-user-x\""), "\(unknown)")

        let b = try await Binaries()
        defer { b.remove() }
        chmod(b.dir.path, 0o755)
        let worker = try await UnprivilegedUser.binary("runtime-worker", in: b.dir)
        let asUser = try await TestSupport.run(worker, ["setup-cgroups", "--user", UnprivilegedUser.name], user: user)
        #expect(asUser.status != 0 && asUser.stderr.contains("must run as root"), "\(asUser)")

        let work = b.dir.appendingPathComponent("work-unprivileged")
        try FileManager.default.createDirectory(at: work, withIntermediateDirectories: true)
        chown(work.path, user.uid, user.gid)
        // A file of the worker's own that no step may read, beside its work directories.
        let mine = work.appendingPathComponent("worker-only")
        try "WORKER-ONLY".write(to: mine, atomically: false, encoding: .utf8)
        chown(mine.path, user.uid, user.gid)
        let process = try ChildProcess(worker, ["--lightning", "ws://127.0.0.1:\(b.port)/worker", "--name", "unprivileged",
                                                "--work-dir", work.path, "--capacity", "2"],
                                       environment: ["WORKER_SECRET": b.keys.workerSecret, "LIGHTNING_PUBLIC_KEY": b.keys.lightningPublicKeyBase64,
                                                     "HOME": work.path],
                                       directory: b.dir, logName: "unprivileged.log", user: user)
        defer { process.stop() }
        try await process.waitForLog("worker joined|connected to Lightning")
        let status = try String(contentsOfFile: "/proc/\(process.pid)/status", encoding: .utf8)
        #expect(status.contains("Uid:\t\(user.uid)\t\(user.uid)\t\(user.uid)"), "the worker runs as the user")
        #expect(process.log.contains("sandbox.cgroups=cgroup v1 (memory, pids)") && process.log.contains("sandbox.namespaces=true"),
                "\(process.log)")

        try await b.apply("""
            name: walls
            jobs:
              - name: look
                adaptor: sh
                body: |
                  id -u
                  cat \(mine.path) 2>/dev/null && echo READ-WORKER-FILE
                  ls /root 2>/dev/null && echo SAW-ROOT
                  touch /usr/evil 2>/dev/null && echo WROTE-USR
                  echo '{"ok":true}' > "$OUTPUT_PATH"
            """)
        try await b.apply("""
            name: hog
            options: {run_memory_limit_mb: 64}
            jobs:
              - {name: eat, adaptor: python3, body: "x = bytearray(400 * 1024 * 1024)\\nprint('survived')"}
            """)
        let store = try b.store()
        let walls = try await store.createWorkOrder(workflow: "walls", input: Array("{}".utf8))
        let done = try await store.waitUntilFinal(walls.attemptID)
        let lines = try await store.logs(attemptID: walls.attemptID, since: 0, limit: 100).map(\.message)
        #expect(done.state == .success, "\(done) \(lines)")
        #expect(lines.contains("65534"), "the step is no one in its namespace: \(lines)")
        for bad in ["READ-WORKER-FILE", "SAW-ROOT", "WROTE-USR"] { #expect(!lines.contains(bad), "\(bad): \(lines)") }

        let hog = try await store.createWorkOrder(workflow: "hog", input: Array("{}".utf8))
        let hogDone = try await store.waitUntilFinal(hog.attemptID)
        let hogLines = try await store.logs(attemptID: hog.attemptID, since: 0, limit: 100).map(\.message)
        #expect(hogDone.state == .killed, "the memory limit holds through the user's cgroup: \(hogDone) \(hogLines)")
        #expect(!hogLines.contains("survived"))
    }

    @Test("where user namespaces are not allowed, the worker refuses to start and says what to change; --sandbox none runs only when asked")
    func refusesWithoutUserNamespaces() async throws {
        let user = try UnprivilegedUser.ids()
        let dir = try TestSupport.temporaryDirectory("no-userns")
        defer { try? FileManager.default.removeItem(at: dir) }
        chmod(dir.path, 0o755)
        let worker = try await UnprivilegedUser.binary("runtime-worker", in: dir)
        let work = dir.appendingPathComponent("work")
        try FileManager.default.createDirectory(at: work, withIntermediateDirectories: true)
        chown(work.path, user.uid, user.gid)
        let keys = try sharedTestKeys.get()
        // The worker runs as the user inside a user namespace whose limit on further user namespaces is 0: the
        // setting `sysctl user.max_user_namespaces=0` makes for the whole host, kept to this one process tree.
        let script = """
            import ctypes, os, sys
            uid, gid, argv = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
            libc = ctypes.CDLL(None, use_errno=True)
            ready_r, ready_w = os.pipe(); go_r, go_w = os.pipe()
            pid = os.fork()
            if pid == 0:
                if libc.unshare(0x10000000) != 0:
                    os._exit(90)
                os.write(ready_w, b"x"); os.read(go_r, 1)
                with open("/proc/sys/user/max_user_namespaces", "w") as f:
                    f.write("0")
                os.setgroups([]); os.setgid(gid); os.setuid(uid)
                libc.prctl(1, 9)  # PR_SET_PDEATHSIG, SIGKILL: the worker dies with this script
                os.execv(argv[0], argv)
            os.read(ready_r, 1)
            for name, own in (("uid_map", uid), ("gid_map", gid)):
                with open(f"/proc/{pid}/{name}", "w") as f:
                    f.write(f"0 0 1\\n{own} {own} 1\\n")
            os.write(go_w, b"x")
            _, status = os.waitpid(pid, 0)
            sys.exit(os.waitstatus_to_exitcode(status))
            """
        let file = dir.appendingPathComponent("in-namespace.py")
        try script.write(to: file, atomically: true, encoding: .utf8)
        let arguments = [file.path, "\(user.uid)", "\(user.gid)", worker, "--lightning", "ws://127.0.0.1:9/worker", "--work-dir", work.path]
        let environment = ["WORKER_SECRET": keys.workerSecret, "LIGHTNING_PUBLIC_KEY": keys.lightningPublicKeyBase64]
        let refused = try await TestSupport.run("/usr/bin/python3", arguments, environment: environment)
        #expect(refused.status == 78, "\(refused)")
        #expect(refused.stderr.contains("needs unprivileged user namespaces") && refused.stderr.contains("user.max_user_namespaces is 0")
                    && refused.stderr.contains("--sandbox none"), "\(refused.stderr)")
        // Told to run steps without the sandbox, it starts (and goes on trying to reach a Lightning that is not there).
        let told = try ChildProcess("/usr/bin/python3", arguments + ["--sandbox", "none"], environment: environment, directory: dir,
                                    logName: "told.log")
        defer { told.stop() }
        try await told.waitForLog(#"sandbox\.mode=none.*sandbox ready"#)
        #expect(!told.log.contains("unavailable"), "\(told.log)")
    }
}
