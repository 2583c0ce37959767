import Channels
import Foundation
import Testing
import TestSupport
@testable import RuntimeWorker

private func inode(_ path: String) -> UInt64? {
    var st = stat()
    return lstat(path, &st) == 0 ? UInt64(st.st_ino) : nil
}

private func names(_ dir: String) -> [String] {
    ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []).sorted()
}

@Suite("Reused step directories: nothing of one step reaches the next", .serialized)
struct StepDirectoriesTests {
    @Test("a directory comes back empty but for the worker's own files, rewritten in place")
    func reuse() throws {
        let root = try TestSupport.temporaryDirectory("stepdirs")
        defer { try? FileManager.default.removeItem(at: root) }
        let pool = try StepDirectories(root: root.path + "/steps", keep: 4)
        var a = try pool.take()
        let state = try pool.write(&a, name: "state.json", Array(#"{"n":1}"#.utf8), mode: 0o444)
        let first = inode(state)
        // Held open, the first file's inode cannot be given to a new file: "the same inode" below means the same file.
        let held = open(state, O_RDONLY)
        defer { close(held) }
        // What a step leaves: files, a nested directory it made unreadable, its work directory closed to everyone,
        // and things in /tmp.
        try "left".write(toFile: a.work + "/leftover", atomically: false, encoding: .utf8)
        try FileManager.default.createDirectory(atPath: a.work + "/deep/er", withIntermediateDirectories: true)
        chmod(a.work + "/deep", 0)
        try "t".write(toFile: a.tmp + "/scratch", atomically: false, encoding: .utf8)
        chmod(a.work, 0)
        pool.give(a)

        var b = try pool.take()
        #expect(b.path == a.path)
        #expect(pool.reused == 1)
        #expect(names(b.work) == ["state.json"])
        #expect(names(b.tmp).isEmpty)
        var st = stat()
        #expect(stat(b.work, &st) == 0 && st.st_mode & 0o777 == 0o755)
        let again = try pool.write(&b, name: "state.json", Array(#"{"n":2}"#.utf8), mode: 0o444)
        #expect(inode(again) == first, "the same file, rewritten")
        #expect(try String(contentsOfFile: again, encoding: .utf8) == #"{"n":2}"#)
        var fromHeld = [UInt8](repeating: 0, count: 16)
        #expect(String(decoding: fromHeld[..<max(0, pread(held, &fromHeld, 16, 0))], as: UTF8.self) == #"{"n":2}"#, "written in place")
        #expect(stat(again, &st) == 0 && st.st_mode & 0o777 == 0o444)
        // Shorter and longer contents than before: written over and cut to length.
        _ = try pool.write(&b, name: "state.json", Array("{}".utf8), mode: 0o444)
        #expect(try String(contentsOfFile: again, encoding: .utf8) == "{}")
        _ = try pool.write(&b, name: "state.json", Array(#"{"longer":true}"#.utf8), mode: 0o444)
        #expect(try String(contentsOfFile: again, encoding: .utf8) == #"{"longer":true}"#)
        #expect(inode(again) == first)
        pool.give(b)
    }

    @Test("a worker file swapped for a link, or linked from elsewhere, is replaced and never written through")
    func swappedFiles() throws {
        let root = try TestSupport.temporaryDirectory("stepdirs")
        defer { try? FileManager.default.removeItem(at: root) }
        let pool = try StepDirectories(root: root.path + "/steps", keep: 4)
        let outside = root.path + "/outside.json", linked = root.path + "/linked.json"
        try "precious".write(toFile: outside, atomically: false, encoding: .utf8)

        var a = try pool.take()
        let state = try pool.write(&a, name: "state.json", Array("one".utf8), mode: 0o444)
        let job = try pool.write(&a, name: "job", Array("true".utf8), mode: 0o644)
        // The step (with write access to its directory) replaces the state with a link to a file outside, and the
        // job body gets a second name outside the pool.
        unlink(state)
        #expect(symlink(outside, state) == 0)
        #expect(link(job, linked) == 0)
        // Between two steps, and also while the next step's files are written.
        var b = a
        _ = try pool.write(&b, name: "state.json", Array("two".utf8), mode: 0o444)
        _ = try pool.write(&b, name: "job", Array("echo".utf8), mode: 0o644)
        #expect(try String(contentsOfFile: outside, encoding: .utf8) == "precious")
        #expect(try String(contentsOfFile: linked, encoding: .utf8) == "true")
        var st = stat()
        #expect(lstat(state, &st) == 0 && (st.st_mode & S_IFMT) == S_IFREG && st.st_nlink == 1)
        #expect(try String(contentsOfFile: state, encoding: .utf8) == "two")
        // After a give-back: the same checks at reset.
        unlink(state)
        #expect(symlink(outside, state) == 0)
        pool.give(b)
        var c = try pool.take()
        #expect(names(c.work) == ["job"])
        _ = try pool.write(&c, name: "state.json", Array("three".utf8), mode: 0o444)
        #expect(try String(contentsOfFile: outside, encoding: .utf8) == "precious")
        pool.give(c)
    }

    @Test("past the number kept, and when the directory was swapped, a directory is removed, not kept")
    func removed() throws {
        let root = try TestSupport.temporaryDirectory("stepdirs")
        defer { try? FileManager.default.removeItem(at: root) }
        let pool = try StepDirectories(root: root.path + "/steps", keep: 1)
        let a = try pool.take(), b = try pool.take()
        pool.give(a)
        pool.give(b)
        #expect(FileManager.default.fileExists(atPath: a.path) && !FileManager.default.fileExists(atPath: b.path))
        #expect(pool.discarded == 1)
        let c = try pool.take()
        #expect(c.path == a.path)
        // The step's work directory replaced by a link to somewhere else: the whole directory goes.
        try FileManager.default.removeItem(atPath: c.work)
        #expect(symlink(root.path, c.work) == 0)
        pool.give(c)
        #expect(!FileManager.default.fileExists(atPath: c.path) && FileManager.default.fileExists(atPath: root.path))
        #expect(pool.discarded == 2)
        // A new worker on the same root starts clean.
        let d = try pool.take()
        try "x".write(toFile: d.work + "/x", atomically: false, encoding: .utf8)
        _ = try StepDirectories(root: root.path + "/steps", keep: 1)
        #expect(names(root.path + "/steps").isEmpty)
    }

    @Test("OUTPUT_PATH is read only as a plain file: a link or a FIFO there is refused")
    func output() throws {
        let root = try TestSupport.temporaryDirectory("stepdirs")
        defer { try? FileManager.default.removeItem(at: root) }
        let path = root.path + "/output.json"
        #expect(AttemptExecutor.readOutput(path) == .absent)
        try #"{"secret":"of another step"}"#.write(toFile: root.path + "/other.json", atomically: false, encoding: .utf8)
        #expect(symlink(root.path + "/other.json", path) == 0)
        guard case .refused(let why) = AttemptExecutor.readOutput(path) else {
            Issue.record("a link was followed")
            return
        }
        #expect(why.contains("symbolic link"))
        unlink(path)
        #expect(mkfifo(path, 0o644) == 0)
        #expect(AttemptExecutor.readOutput(path) == .refused("is not a plain file"))
        unlink(path)
        try #"{"y":2}"#.write(toFile: path, atomically: false, encoding: .utf8)
        #expect(AttemptExecutor.readOutput(path) == .bytes(Array(#"{"y":2}"#.utf8)))
    }

    @Test("in the real sandbox, a later attempt sees none of an earlier one's files, and a linked output is refused")
    func sandboxed() async throws {
        let f = try SandboxFixture()
        defer { f.remove() }
        let pool = try StepDirectories(root: f.dir.path + "/steps", keep: 2)
        func attempt(_ id: String, _ body: String) async throws -> (AttemptComplete, Recorder) {
            let recorder = Recorder()
            var executor = AttemptExecutor(attemptID: id, plan: makePlan([("a", body)], edges: []), input: Array(#"{"x":1}"#.utf8),
                                           credentials: [:], runner: f.runner, events: recorder, workRoot: f.dir.path)
            executor.directories = pool
            return (try await executor.run(), recorder)
        }
        let (first, _) = try await attempt("a1", """
            echo secret > /work/left; mkdir -p /work/d/e; echo t > /tmp/t; chmod 000 /work/d; chmod 700 /work
            ln -s state.json "$OUTPUT_PATH"
            """)
        #expect(first.reason == .crash)
        #expect(first.errorMessage?.contains("symbolic link") == true)
        let (second, r) = try await attempt("a2", "ls -A /work; echo --; ls -A /tmp; cat \"$STATE_PATH\"; echo; stat -c %a /work")
        #expect(second.reason == .success)
        #expect(r.logLines == ["job", "state.json", "--", #"{"x":1}"#, "755"])
        #expect(pool.reused == 1)
    }
}
