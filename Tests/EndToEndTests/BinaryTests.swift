import Channels
import Foundation
import JWT
import Lightning
import Testing
import TestSupport

/// One key set for the run (see Binaries.init): generating a 2048-bit RSA key holds a cooperative thread for up to a
/// second, and the suites starting at once each making their own starved every other test's tasks.
let sharedTestKeys = Result { try WorkerKeySet.generate() }

/// The real binaries: `lightning serve` and `runtime-worker` as processes.
struct Binaries {
    let dir: URL
    let keys: WorkerKeySet
    private(set) var lightning: ChildProcess
    let port: Int
    /// The SQLite file in `dir`, or the PostgreSQL URL given to `init`.
    let database: String

    /// `launcher`: a program that runs `lightning` (its arguments first, then the binary's path and arguments), such as
    /// `prlimit --nofile=N:N --`.
    /// `database`: a PostgreSQL URL, for replicas that share it (every Binaries of a test run has the same keys).
    init(extra: [String] = [], environment: [String: String] = [:], launcher: [String] = [], database: String? = nil) async throws {
        dir = try TestSupport.temporaryDirectory("binaries")
        keys = try sharedTestKeys.get()
        try keys.write(to: dir.appendingPathComponent("keys").path)
        self.database = database ?? dir.appendingPathComponent("lightning.db").path
        let (process, port) = try await Self.serve(dir: dir, port: 0, database: self.database, extra: extra, environment: environment,
                                                   log: "lightning.log", launcher: launcher)
        lightning = process
        self.port = port
    }

    private static func serve(dir: URL, port: Int, database: String, extra: [String], environment: [String: String] = [:], log: String,
                              launcher: [String] = []) async throws -> (ChildProcess, Int)
    {
        let binary = try TestSupport.builtBinary("lightning")
        let arguments = ["serve", "--port", "\(port)", "--database", database,
                         "--grace-seconds", "2"] + extra
        let process = try ChildProcess(launcher.first ?? binary, launcher.isEmpty ? arguments : launcher.dropFirst() + [binary] + arguments,
                                       environment: environment, directory: dir, logName: log)
        let line = try await process.waitForLog(#"port=\d+ \[Lightning\] Lightning is listening"#)
        return (process, Int(line.dropFirst(5).prefix { $0.isNumber }) ?? 0)
    }

    /// kill -9 of the Lightning process, then a new one on the same port and database.
    mutating func killAndRestartLightning(extra: [String] = []) async throws {
        lightning.signal(SIGKILL)
        try await restartLightning(extra: extra)
    }

    /// Waits for the Lightning process to be gone, then starts a new one on the same port and database.
    mutating func restartLightning(extra: [String] = []) async throws {
        _ = await lightning.waitForExit()
        var lastError: (any Error)?
        // The port is free as soon as the process is gone; retry briefly in case the kernel is slow to say so.
        for attempt in 0..<20 {
            do {
                (lightning, _) = try await Self.serve(dir: dir, port: port, database: database, extra: extra, log: "lightning-\(attempt)-restarted.log")
                return
            } catch {
                lastError = error
                try? await Task.sleep(for: .milliseconds(250))
            }
        }
        throw lastError!
    }

    /// `url`: where the worker connects (this Lightning when nil).
    func worker(_ name: String, extra: [String] = [], environment: [String: String] = [:], log: String? = nil, url: String? = nil)
        throws -> ChildProcess
    {
        try ChildProcess(try TestSupport.builtBinary("runtime-worker"),
                         ["--lightning", url ?? "ws://127.0.0.1:\(port)/worker", "--name", name, "--work-dir",
                          dir.appendingPathComponent("work-\(name)").path] + extra,
                         environment: environment, directory: dir, logName: log ?? "\(name).log")
    }

    func store() throws -> SQLStore { try SQLStore.open(database, cipher: nil) }

    /// The admin operator token `serve` wrote into keys/.
    func operatorToken() throws -> String {
        try String(contentsOf: dir.appendingPathComponent("keys/operator_token"), encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// Applies a workflow (YAML) with the CLI; throws with the CLI's output when it is refused.
    func apply(_ yaml: String) async throws {
        let file = dir.appendingPathComponent("workflow-\(UUID().uuidString.prefix(6)).yaml")
        try yaml.write(to: file, atomically: true, encoding: .utf8)
        let r = try await cli(["workflows", "apply", file.path])
        guard r.status == 0 else { throw TestSupport.Failure("apply failed: \(r)") }
    }

    /// Runs the `lightning` CLI against this server, with the admin token `serve` wrote into keys/.
    func cli(_ arguments: [String], environment: [String: String] = [:]) async throws -> TestSupport.ProcessResult {
        try await TestSupport.run(try TestSupport.builtBinary("lightning"), arguments + ["--server", "http://127.0.0.1:\(port)"],
                            environment: ["LIGHTNING_TOKEN_FILE": dir.appendingPathComponent("keys/operator_token").path,
                                          "LIGHTNING_TOKEN": ""].merging(environment) { $1 })
    }


    func remove() {
        lightning.stop()
        try? FileManager.default.removeItem(at: dir)
    }
}

@Suite("The real binaries", .serialized)
struct BinaryTests {
    @Test("SIGTERM and SIGINT stop lightning serve: its janitor and cron services stop, it exits 0, and its worker joins the next one",
          arguments: [SIGTERM, SIGINT])
    func gracefulLightning(signal: Int32) async throws {
        var b = try await Binaries()
        defer { b.remove() }
        let worker = try b.worker("watching")
        try await worker.waitForLog("worker joined|connected to Lightning")
        // The janitor is between sweeps and cron between ticks: a service that ignored the shutdown would hold the exit.
        b.lightning.signal(signal)
        #expect(await b.lightning.waitForExit(timeout: 30) == 0, "\(b.lightning.log)")
        #expect(!b.lightning.log.contains(" error "), "\(b.lightning.log)")
        // The worker saw its socket closed by the server's shutdown: it joins a new Lightning on the same port.
        try await b.restartLightning()
        try await b.lightning.waitForLog(#"worker\.name=watching \[Lightning\] worker joined the queue"#)
    }

    /// One attempt of the workflow `yaml` (named `name`) with `input` on fresh binaries: its end (waited for up to
    /// 120 s), its job's lines, and whether any message was too big for Lightning or the worker lost its socket.
    func runOnce(_ name: String, _ yaml: String, input: [UInt8] = Array("{}".utf8), lightning extra: [String] = [],
                 workerSaw: String? = nil) async throws
        -> (state: AttemptState, lines: [LogLineRecord], trouble: String?)
    {
        let b = try await Binaries(extra: extra)
        defer { b.remove() }
        let store = try b.store()
        _ = try await store.applyWorkflow(try WorkflowDefinition.parse(yaml))
        let worker = try b.worker(name)
        try await worker.waitForLog("worker joined|connected to Lightning")
        let created = try await store.createWorkOrder(workflow: name, input: input)
        let deadline = ContinuousClock.now + .seconds(120)
        while try await !store.attempt(created.attemptID).state.isFinal, ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(50))
        }
        let lines = try await store.logs(attemptID: created.attemptID, since: 0, limit: 100).filter { $0.source == "JOB" }
        let trouble = b.lightning.log.contains("message over the limit") || worker.log.contains("lost the connection")
            || workerSaw.map { !worker.log.contains($0) } == true
            ? "Lightning:\n\(b.lightning.log.suffix(1500))\nworker:\n\(worker.log.suffix(1500))" : nil
        return (try await store.attempt(created.attemptID).state, lines, trouble)
    }

    @Test("a step printing 30 lines of 900 KB succeeds with every line stored: the worker's batches stay under the server's message limit")
    func bigLines() async throws {
        let (state, lines, trouble) = try await runOnce("wide", """
            name: wide
            jobs:
              - {name: s, adaptor: sh, body: "i=0; while [ $i -lt 30 ]; do head -c 900000 /dev/zero | tr '\\\\0' x; echo; i=$((i+1)); done; echo done"}
            """)
        #expect(state == .success && trouble == nil, "\(trouble ?? "")")
        #expect(lines.count == 31 && lines.dropLast().allSatisfy { $0.message.utf8.count == 900_000 } && lines.last?.message == "done",
                "\(lines.count) lines")
    }

    @Test("a state under the payload limit but near the message limit once escaped in step:complete: the attempt succeeds, no socket closed")
    func quotedState() async throws {
        // 7.6 MB of JSON (under the 10 MB payload limit), 11.4 MB as a JSON string (over the 11 MB message limit
        // Lightning had: the worker now counts the escaped size, and Lightning takes up to 32 MB).
        let (state, _, trouble) = try await runOnce("quoted", """
            name: quoted
            jobs:
              - name: s
                adaptor: sh
                body: |
                  printf '{"d":[' > "$OUTPUT_PATH"
                  yes '"x",' | head -n 1900000 | tr -d '\\n' >> "$OUTPUT_PATH"
                  printf '"x"]}' >> "$OUTPUT_PATH"
                  echo wrote
            """)
        #expect(state == .success && trouble == nil, "\(trouble ?? "")")
    }

    @Test("Lightning started with a small message limit names it at the join: a log line over it once escaped arrives as a notice, no socket closed")
    func smallMessageLimit() async throws {
        // 1.5 MB messages: plans give 1 MB log lines; 900,000 quotes are under that, and 1.8 MB escaped.
        let (state, lines, trouble) = try await runOnce("narrow", """
            name: narrow
            jobs:
              - {name: s, adaptor: sh, body: "head -c 900000 /dev/zero | tr '\\\\0' '\\\"'; echo; echo done"}
            """, lightning: ["--max-message-bytes", "1500000"], workerSaw: "bytes=1500000")
        #expect(state == .success && trouble == nil, "\(trouble ?? "")")
        #expect(lines.map(\.message) == ["(a log line of 900000 bytes was removed: encoded, it is over Lightning's message limit)", "done"],
                "\(lines.map { $0.message.prefix(100) })")
    }

    @Test("an input nested as deep as Lightning takes goes through the claim reply, the step, step:complete and run:complete")
    func deepState() async throws {
        // 511 levels (an object, then arrays): the claim reply carries it 4 levels down, run:complete 2. At 512 for
        // frames, the worker refused the claim reply (the attempt sat claimed for minutes), and Lightning closed the
        // worker's socket on run:complete, sent again each second.
        let depth = 511
        let body = Array(("{\"d\":" + String(repeating: "[", count: depth - 1) + String(repeating: "]", count: depth - 1) + "}").utf8)
        let (state, lines, trouble) = try await runOnce("deep", """
            name: deep
            jobs:
              - name: s
                adaptor: sh
                body: |
                  cp "$STATE_PATH" "$OUTPUT_PATH"
                  tr -cd '[' < "$STATE_PATH" | wc -c
            """, input: body)
        #expect(state == .success && trouble == nil, "\(trouble ?? "")")
        #expect(lines.first?.message.trimmingCharacters(in: .whitespaces) == "\(depth - 1)", "\(lines.map(\.message))")
    }

    @Test("a webhook body just under the request limit reaches the step: fetch:dataclip's reply (body and header) is not too big for the worker")
    func bigInput() async throws {
        let body = Array(#"{"x":""#.utf8) + [UInt8](repeating: UInt8(ascii: "a"), count: 10_999_980) + Array(#""}"#.utf8)
        let (state, lines, trouble) = try await runOnce("wide-input", """
            name: wide-input
            jobs:
              - name: s
                adaptor: sh
                body: |
                  wc -c < "$STATE_PATH"
            """, input: body)
        #expect(state == .success && trouble == nil, "\(trouble ?? "")")
        #expect(Int(lines.first?.message.trimmingCharacters(in: .whitespaces) ?? "") ?? 0 > 10_999_980, "\(lines.map(\.message))")
    }

    @Test("SIGTERM: the worker stops claiming, lets its running attempt finish, and exits 0")
    func gracefulWorker() async throws {
        let b = try await Binaries()
        defer { b.remove() }
        let store = try b.store()
        _ = try await store.applyWorkflow(try WorkflowDefinition.parse("""
            name: slowish
            jobs:
              - {name: s, adaptor: sh, body: "echo start; sleep 1.5; echo done"}
            """))
        let worker = try b.worker("graceful")
        try await worker.waitForLog("worker joined|connected to Lightning")
        let first = try await store.createWorkOrder(workflow: "slowish", input: Array("{}".utf8))
        let deadline = ContinuousClock.now + .seconds(20)
        while try await store.attempt(first.attemptID).state != .started, ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(20))
        }
        worker.signal(SIGTERM)
        let second = try await store.createWorkOrder(workflow: "slowish", input: Array("{}".utf8))
        #expect(await worker.waitForExit(timeout: 30) == 0, "\(worker.log)")
        let a = try await store.attempt(first.attemptID)
        #expect(a.state == .success, "\(a)")
        #expect(try await store.logs(attemptID: first.attemptID, since: 0, limit: 10).map(\.message) == ["start", "done"])
        #expect(try await store.attempt(second.attemptID).state == .available, "a draining worker claims nothing")
    }

    @Test("SIGTERM past --shutdown-timeout stops the attempt with reason kill; a second signal exits at once")
    func shutdownTimeout() async throws {
        let b = try await Binaries()
        defer { b.remove() }
        let store = try b.store()
        _ = try await store.applyWorkflow(try WorkflowDefinition.parse("""
            name: endless
            jobs:
              - {name: s, adaptor: sh, body: "echo start; sleep 60"}
            """))
        for secondSignal in [false, true] {
            let worker = try b.worker("stopper-\(secondSignal)", extra: ["--shutdown-timeout", secondSignal ? "30" : "0.5"])
            let created = try await store.createWorkOrder(workflow: "endless", input: Array("{}".utf8))
            try await store.waitForFirstLog(created.attemptID)
            worker.signal(SIGTERM)
            if secondSignal {
                try await worker.waitForLog("shutting down: claiming nothing more")
                worker.signal(SIGTERM)
                #expect(await worker.waitForExit(timeout: 5) == 130, "\(worker.log)")
            } else {
                #expect(await worker.waitForExit(timeout: 20) == 0, "\(worker.log)")
                let a = try await store.attempt(created.attemptID)
                #expect(a.state == .killed && a.errorType == "ShutdownError", "\(a)")
            }
        }
    }

    @Test("the worker's admin port: /livez 200 while connected, 503 once Lightning has been gone past the grace; /metrics counts")
    func adminPort() async throws {
        var b = try await Binaries()
        defer { b.remove() }
        let store = try b.store()
        _ = try await store.applyWorkflow(try WorkflowDefinition.parse("""
            name: counted
            jobs: [{name: a, adaptor: sh, body: "echo one; echo two"}]
            """))
        let worker = try b.worker("admin", extra: ["--admin-port", "0", "--livez-grace", "1"])
        defer { worker.stop() }
        let line = try await worker.waitForLog(#"port=\d+ \[RuntimeWorkerCommand\] admin port listening"#)
        let port = Int(line.dropFirst(5).prefix { $0.isNumber }) ?? 0
        try await worker.waitForLog("connected to Lightning")
        func get(_ path: String) async throws -> (code: String, body: String) {
            let r = try await TestSupport.run("/usr/bin/curl", ["-s", "-w", "\n%{http_code}", "http://127.0.0.1:\(port)\(path)"])
            let parts = r.stdout.split(separator: "\n", omittingEmptySubsequences: false)
            return (String(parts.last ?? ""), parts.dropLast().joined(separator: "\n"))
        }
        let live = try await get("/livez")
        #expect(live.code == "200" && live.body.contains(#""status":"ok""#), "\(live)")
        let created = try await store.createWorkOrder(workflow: "counted", input: Array("{}".utf8))
        #expect(try await store.waitUntilFinal(created.attemptID).state == .success)
        // The attempt is final in the store a moment before the worker has counted it (it counts after Lightning
        // acknowledged run:complete): wait for the count rather than race it.
        var metrics = try await get("/metrics")
        let counted = ContinuousClock.now + .seconds(30)
        func settled(_ body: String) -> Bool {
            body.contains(#"worker_attempts_finished_total{reason="success"} 1"#) && body.contains("worker_attempts_running 0")
        }
        while !settled(metrics.body), ContinuousClock.now < counted {
            try await Task.sleep(for: .milliseconds(50))
            metrics = try await get("/metrics")
        }
        #expect(metrics.code == "200")
        #expect(metrics.body.contains(#"worker_attempts_finished_total{reason="success"} 1"#), "\(metrics.body)")
        #expect(metrics.body.contains("worker_log_lines_sent_total 2"), "\(metrics.body)")
        #expect(metrics.body.contains("worker_step_spawn_seconds_count 1"), "\(metrics.body)")
        #expect(metrics.body.contains("worker_claim_to_start_seconds_count 1"), "\(metrics.body)")
        #expect(metrics.body.contains("worker_attempts_running 0") && metrics.body.contains("worker_connected 1"), "\(metrics.body)")
        // Lightning goes away and stays away: past the 1 s grace the worker is not live.
        b.lightning.signal(SIGKILL)
        let deadline = ContinuousClock.now + .seconds(30)
        var last = try await get("/livez")
        while last.code != "503", ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(100))
            last = try await get("/livez")
        }
        #expect(last.code == "503" && last.body.contains("no connection to Lightning"), "\(last)")
        // It comes back: live again once reconnected.
        try await b.restartLightning()
        let back = ContinuousClock.now + .seconds(60)
        while try await get("/livez").code != "200", ContinuousClock.now < back { try await Task.sleep(for: .milliseconds(100)) }
        #expect(try await get("/livez").code == "200")
        #expect(try await get("/metrics").body.contains("worker_reconnects_total 1"))
    }

    @Test("kill -9 of a worker mid-attempt: the attempt is lost after the grace period, its step dies with the worker")
    func killedWorker() async throws {
        let b = try await Binaries()
        defer { b.remove() }
        let store = try b.store()
        let marker = "lr-orphan-\(UUID().uuidString.prefix(6))"
        _ = try await store.applyWorkflow(try WorkflowDefinition.parse("""
            name: forever
            jobs:
              - {name: s, adaptor: bash, body: "echo running; exec -a \(marker) sleep 120"}
            """))
        let worker = try b.worker("doomed")
        let created = try await store.createWorkOrder(workflow: "forever", input: Array("{}".utf8))
        try await store.waitForFirstLog(created.attemptID)
        worker.signal(SIGKILL)
        _ = await worker.waitForExit()
        let a = try await b.store().waitUntilFinal(created.attemptID, timeout: .seconds(30))
        #expect(a.state == .lost && a.errorType == "LostAfterStart")
        try await Task.sleep(for: .milliseconds(200))
        #expect(try await TestSupport.run("/usr/bin/pgrep", ["-f", marker]).stdout.isEmpty, "the step outlived its worker")
    }

    @Test("the lightning CLI against a real server and worker: apply, start --follow, tail, list --json, roles, clear errors")
    func cli() async throws {
        let b = try await Binaries()
        defer { b.remove() }
        try await b.lightning.waitForLog("created admin token")
        let token = try String(contentsOf: b.dir.appendingPathComponent("keys/operator_token"), encoding: .utf8)
        let mode = try FileManager.default.attributesOfItem(atPath: b.dir.appendingPathComponent("keys/operator_token").path)[.posixPermissions] as? Int
        #expect(mode == 0o600 && token.hasPrefix("lro_"))
        let worker = try b.worker("cli-worker")
        defer { worker.stop() }
        let file = b.dir.appendingPathComponent("flows.yaml")
        try """
            name: chatty
            jobs:
              - {name: talk, adaptor: sh, body: "for i in 1 2 3 4 5; do echo line $i; sleep 0.2; done"}
            """.write(to: file, atomically: true, encoding: .utf8)
        let applied = try await b.cli(["workflows", "apply", file.path])
        #expect(applied.status == 0 && applied.stdout.contains("workflow chatty: version 1"), "\(applied)")
        try "name: broken\njobs:\n  - {name: x, adaptor: sh, body: \"exit 3\"}\n".write(to: file, atomically: true, encoding: .utf8)
        #expect(try await b.cli(["workflows", "apply", file.path]).status == 0)
        try "name: [".write(to: file, atomically: true, encoding: .utf8)
        let bad = try await b.cli(["workflows", "apply", file.path])
        #expect(bad.status != 0 && bad.stderr.contains("flows.yaml"), "\(bad)")

        // start --follow prints the lines as they come and exits 0 only on success.
        let followed = try await b.cli(["attempts", "start", "chatty", "--follow"])
        #expect(followed.status == 0, "\(followed)")
        let printed = followed.stdout.split(separator: "\n").filter { $0.contains("line ") }
        #expect(printed.count == 5 && printed.enumerated().allSatisfy { $0.element.hasSuffix("line \($0.offset + 1)") }, "\(followed.stdout)")
        #expect(printed.allSatisfy { $0.contains("INFO") && $0.contains("JOB") }, "time, level, source, message")
        #expect(!followed.stdout.contains("\u{1B}["), "no colour into a pipe")
        let failed = try await b.cli(["attempts", "start", "broken", "--follow"])
        #expect(failed.status == 1 && failed.stderr.contains("failed"), "\(failed)")

        // list --json for scripts; tail of a finished attempt replays it; status.
        let listed = try await b.cli(["attempts", "list", "--json"])
        let attempts = try #require(try JSON.parse(listed.stdout)["attempts"]?.arrayValue)
        #expect(attempts.count == 2)
        let chattyID = try #require(attempts.first { $0["workflow"] == "chatty" }?["id"]?.stringValue)
        let tail = try await b.cli(["attempts", "tail", chattyID, "--since", "2", "--json"])
        let tailLines = tail.stdout.split(separator: "\n").compactMap { try? JSON.parse(String($0)) }
        #expect(tail.status == 0 && tailLines.compactMap { $0["seq"]?.intValue } == [3, 4, 5], "\(tail)")
        #expect(tailLines.last?["attempt"]?["state"] == "success")
        let workers = try await b.cli(["workers", "list"])
        #expect(workers.stdout.contains("cli-worker") && workers.stdout.contains("idle"), "\(workers)")

        // Roles and bad input.
        let made = try await b.cli(["tokens", "create", "reader", "--role", "viewer"])
        let viewer = made.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(made.status == 0 && viewer.hasPrefix("lro_") && made.stderr.contains("shown only once"))
        let refused = try await b.cli(["attempts", "start", "chatty"], environment: ["LIGHTNING_TOKEN": viewer])
        #expect(refused.status == 1 && refused.stderr.contains("403") && refused.stderr.contains("viewer"), "\(refused)")
        #expect(try await b.cli(["attempts", "list"], environment: ["LIGHTNING_TOKEN": viewer]).status == 0)
        #expect(try await b.cli(["tokens", "revoke", "reader"]).status == 0)
        let revoked = try await b.cli(["attempts", "list"], environment: ["LIGHTNING_TOKEN": viewer])
        #expect(revoked.status == 1 && revoked.stderr.contains("401"), "\(revoked)")
        let unknown = try await b.cli(["attempts", "start", "nope"])
        #expect(unknown.status == 1 && unknown.stderr.contains("no workflow named"), "\(unknown)")
        let badInput = try await b.cli(["attempts", "start", "chatty", "--input", "[1]"])
        #expect(badInput.status == 1 && badInput.stderr.contains("JSON object"), "\(badInput)")
        let noServer = try await TestSupport.run(try TestSupport.builtBinary("lightning"), ["workflows", "list", "--server", "http://127.0.0.1:1",
                                                                                        "--token", token.trimmingCharacters(in: .whitespacesAndNewlines)])
        #expect(noServer.status == 1 && noServer.stderr.contains("could not reach Lightning"), "\(noServer)")
        let noToken = try await b.cli(["workflows", "list"], environment: ["LIGHTNING_TOKEN_FILE": "/nonexistent"])
        #expect(noToken.status == 1 && noToken.stderr.contains("no operator token"), "\(noToken)")
    }

    @Test("the CLI: attempts list filters, and attempts rerun --from STEP runs only that step on with its recorded input")
    func cliRerun() async throws {
        let b = try await Binaries()
        defer { b.remove() }
        try await b.lightning.waitForLog("created admin token")
        let worker = try b.worker("rerun-worker")
        defer { worker.stop() }
        try await b.apply("""
            name: two
            jobs:
              - {name: first, adaptor: sh, body: 'echo first-ran'}
              - {name: second, adaptor: sh, body: 'echo second-ran; exit 4'}
            edges:
              - {from: first, to: second, condition: on_job_success}
            """)
        let first = try await b.cli(["attempts", "start", "two", "--follow"])
        #expect(first.status == 1 && first.stdout.contains("first-ran") && first.stdout.contains("second-ran"), "\(first)")
        let listed = try await b.cli(["attempts", "list", "--workflow", "two", "--grep", "first-ran", "--json"])
        let id = try #require(try JSON.parse(listed.stdout)["attempts"]?.arrayValue?.first?["id"]?.stringValue, "\(listed)")
        #expect(try await b.cli(["attempts", "list", "--grep", "never-printed", "--json"]).stdout.contains("[]"))
        let badTime = try await b.cli(["attempts", "list", "--since", "yesterday"])
        #expect(badTime.status == 1 && badTime.stderr.contains("ISO 8601"), "\(badTime)")

        // From the second step: only it runs, and it exits 4 again (status 1).
        let rerun = try await b.cli(["attempts", "rerun", id, "--from", "second", "--follow"])
        #expect(rerun.status == 1 && rerun.stdout.contains("second-ran") && !rerun.stdout.contains("first-ran"), "\(rerun)")
        let unknown = try await b.cli(["attempts", "rerun", id, "--from", "third"])
        #expect(unknown.status == 1 && unknown.stderr.contains("no step \"third\""), "\(unknown)")
        // From the start, printing the new attempt's id.
        let again = try await b.cli(["attempts", "rerun", id])
        let newID = again.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(again.status == 0 && !newID.isEmpty && newID != id, "\(again)")
        let done = try await b.store().waitUntilFinal(newID)
        #expect(done.retryOf == id && done.startingJobID == nil)
    }

    @Test("a worker with the wrong secret says so and exits non-zero")
    func wrongSecret() async throws {
        let b = try await Binaries()
        defer { b.remove() }
        let worker = try ChildProcess(try TestSupport.builtBinary("runtime-worker"),
                                      ["--lightning", "ws://127.0.0.1:\(b.port)/worker", "--work-dir", b.dir.appendingPathComponent("w").path],
                                      environment: ["WORKER_SECRET": String(repeating: "w", count: 44),
                                                    "LIGHTNING_PUBLIC_KEY": b.keys.lightningPublicKeyBase64],
                                      directory: b.dir, logName: "wrong.log")
        let status = await worker.waitForExit(timeout: 20)
        #expect(status != nil && status != 0)
        #expect(worker.log.contains("refused this worker's token (HTTP 401)"), "\(worker.log)")
    }
}

@Suite("Test programs die with the test runner")
struct ChildProcessTests {
    @Test("every program a test starts runs with a parent-death signal (KILL), so a killed test run leaves nothing behind")
    func parentDeathSignal() async throws {
        let dir = try TestSupport.temporaryDirectory("pdeath")
        defer { try? FileManager.default.removeItem(at: dir) }
        let python = try #require(TestSupport.which("python3"))
        let script = "import ctypes, ctypes.util; libc = ctypes.CDLL(ctypes.util.find_library('c'), use_errno=True); "
            + "v = ctypes.c_int(); libc.prctl(2, ctypes.byref(v)); print('pdeathsig', v.value)"  // PR_GET_PDEATHSIG
        let child = try ChildProcess(python, ["-c", script], directory: dir, logName: "child.log")
        _ = await child.waitForExit()
        #expect(child.log.contains("pdeathsig 9"), "\(child.log)")
        let run = try await TestSupport.run(python, ["-c", script])
        #expect(run.stdout.contains("pdeathsig 9"), "\(run)")
    }

    @Test("a program started from a thread that then exits keeps running (the signal follows the spawn thread, not the caller's)")
    func survivesCallerThread() async throws {
        let dir = try TestSupport.temporaryDirectory("pdeath")
        defer { try? FileManager.default.removeItem(at: dir) }
        let box = Box()
        let thread = Thread { box.child = try? ChildProcess("/bin/sleep", ["30"], directory: dir, logName: "sleep.log") }
        thread.start()
        while box.child == nil { try await Task.sleep(for: .milliseconds(10)) }
        // The starting thread is gone now; a parent-death signal tied to it would have killed the child at once.
        while !thread.isFinished { try await Task.sleep(for: .milliseconds(10)) }
        try await Task.sleep(for: .milliseconds(500))
        let child = try #require(box.child)
        #expect(child.process.isRunning)
        child.stop()
    }

    final class Box: @unchecked Sendable {
        private let lock = NSLock()
        private var _child: ChildProcess?
        var child: ChildProcess? {
            get { lock.withLock { _child } }
            set { lock.withLock { _child = newValue } }
        }
    }
}
