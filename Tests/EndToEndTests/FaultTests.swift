import Channels
import Foundation
import JWT
import Lightning
import Testing
import TestSupport

/// Faults, load and bad input against the real `lightning` and `runtime-worker` binaries.
@Suite("Faults and load with the real binaries", .serialized)
struct FaultTests {
    @Test("the example through the CLI: a clear exception without its credential, success with it; a failure branch; cancel")
    func example() async throws {
        let key = Data((0..<32).map { _ in UInt8.random(in: 0...255) }).base64EncodedString()
        let b = try await Binaries(environment: ["LIGHTNING_ENCRYPTION_KEY": key])
        defer { b.remove() }
        try await b.lightning.waitForLog("created admin token")
        let worker = try b.worker("example")
        defer { worker.stop() }
        let example = TestSupport.packageRoot.appendingPathComponent("examples/hello.yaml").path
        #expect(try await b.cli(["workflows", "apply", example]).status == 0)
        let store = try b.store()

        // No credential yet: `count` ends with an exception that names it (it does not run without it).
        let first = try await b.cli(["attempts", "start", "hello", "--follow"])
        #expect(first.status == 1, "\(first)")
        let firstID = try #require(try await store.attempts(state: nil, limit: 1).first?.id, "\(first)")
        let failed = try await store.waitUntilFinal(firstID)
        #expect(failed.state == .exception && failed.errorMessage?.contains("\"example-api\" is not set") == true, "\(failed)")

        // A failing step takes the on_job_failure branch.
        let branchy = b.dir.appendingPathComponent("branchy.yaml")
        try """
            name: branchy
            jobs:
              - {name: try, adaptor: sh, body: "echo trying; exit 3"}
              - {name: recover, adaptor: sh, body: "echo recovered"}
              - {name: celebrate, adaptor: sh, body: "echo never"}
            edges:
              - {from: try, to: recover, condition: on_job_failure}
              - {from: try, to: celebrate, condition: on_job_success}
            """.write(to: branchy, atomically: true, encoding: .utf8)
        #expect(try await b.cli(["workflows", "apply", branchy.path]).status == 0)
        let branched = try await b.cli(["attempts", "start", "branchy", "--follow"])
        #expect(branched.stdout.contains("trying") && branched.stdout.contains("recovered") && !branched.stdout.contains("never"),
                "\(branched)")
        let branchedID = try #require(try await store.attempts(state: nil, limit: 1).first?.id)
        let names = try await store.plan(attemptID: branchedID).jobs.reduce(into: [String: String]()) { $0[$1.id] = $1.name }
        let steps = try await store.steps(attemptID: branchedID).map { "\(names[$0.jobID] ?? "?"):\($0.reason ?? "?")" }
        #expect(steps == ["try:fail", "recover:success"], "\(steps)")

        // With the credential, the success branch; its password never reaches the log.
        let set = try await b.cli(["credentials", "set", "example-api", "--body", #"{"username":"ada","password":"correct-horse-battery"}"#])
        #expect(set.status == 0, "\(set)")
        let second = try await b.cli(["attempts", "start", "hello", "--input", #"{"data":{"name":"Ada"}}"#, "--follow"])
        #expect(second.status == 0, "\(second)")
        #expect(second.stdout.contains("total is 9") && !second.stdout.contains("correct-horse-battery"), "\(second.stdout)")

        // Cancel from the CLI while a step runs.
        _ = try await store.applyWorkflow(try WorkflowDefinition.parse("""
            name: long
            jobs: [{name: wait, adaptor: sh, body: "echo waiting; sleep 60"}]
            """))
        let started = try await b.cli(["attempts", "start", "long"])
        let longID = started.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        try await store.waitForFirstLog(longID)
        let cancel = try await b.cli(["attempts", "cancel", longID])
        #expect(cancel.status == 0, "\(cancel)")
        let cancelled = try await store.waitUntilFinal(longID)
        #expect(cancelled.state == .cancelled, "\(cancelled)")
    }

    @Test("out of memory and timeout end with reason kill and the right error types")
    func limits() async throws {
        let b = try await Binaries()
        defer { b.remove() }
        let store = try b.store()
        _ = try await store.applyWorkflow(try WorkflowDefinition.parse("""
            name: hog
            options: {run_memory_limit_mb: 64}
            jobs:
              - {name: eat, adaptor: python3, body: "x = bytearray(400 * 1024 * 1024)\\nprint('allocated')"}
            """))
        _ = try await store.applyWorkflow(try WorkflowDefinition.parse("""
            name: sleepy
            options: {run_timeout_ms: 1000}
            jobs:
              - {name: nap, adaptor: sh, body: "echo napping; sleep 30"}
            """))
        let worker = try b.worker("limits")
        defer { worker.stop() }
        let hog = try await store.createWorkOrder(workflow: "hog", input: Array("{}".utf8))
        let sleepy = try await store.createWorkOrder(workflow: "sleepy", input: Array("{}".utf8))
        let h = try await store.waitUntilFinal(hog.attemptID)
        #expect(h.state == .killed && h.errorType == "OOMError", "\(h)")
        let s = try await store.waitUntilFinal(sleepy.attemptID)
        #expect(s.state == .killed && s.errorType == "TimeoutError", "\(s)")
    }

    @Test("Lightning stops right after answering a claim, before the run:<id> join: after the restart the worker joins and the attempt succeeds")
    func stoppedAfterClaim() async throws {
        // The test hook makes the cut deterministic: Lightning exits the moment the worker, holding the claim reply,
        // joins the attempt's channel; the join is never answered.
        var b = try await Binaries(environment: ["LIGHTNING_TEST_EXIT_ON_ATTEMPT_JOIN": "1"])
        defer { b.remove() }
        let store = try b.store()
        _ = try await store.applyWorkflow(try WorkflowDefinition.parse("""
            name: after-claim
            jobs: [{name: a, adaptor: sh, body: "echo carried on"}]
            """))
        let worker = try b.worker("carrier")
        defer { worker.stop() }
        try await worker.waitForLog("connected to Lightning")
        let created = try await store.createWorkOrder(workflow: "after-claim", input: Array("{}".utf8))
        #expect(await b.lightning.waitForExit(timeout: 60) == 75, "\(b.lightning.log)")
        #expect(b.lightning.log.contains("test hook: exiting on the join of run:\(created.attemptID)"))
        #expect(try await store.attempt(created.attemptID).state == .claimed)
        try await b.restartLightning()
        let a = try await store.waitUntilFinal(created.attemptID)
        #expect(a.state == .success, "\(a)\n\(worker.log)")
        #expect(try await store.logs(attemptID: created.attemptID, since: 0, limit: 10).map(\.message) == ["carried on"])
        #expect(worker.log.contains("joining the attempt's channel failed; trying again"), "\(worker.log)")
    }

    @Test("kill -9 of Lightning mid-attempt and a restart on the same database: the attempt completes, every line once, in order")
    func lightningKilled() async throws {
        var b = try await Binaries()
        defer { b.remove() }
        let store = try b.store()
        _ = try await store.applyWorkflow(try WorkflowDefinition.parse("""
            name: chatty
            jobs:
              - {name: talk, adaptor: sh, body: "for i in $(seq 1 40); do echo line $i; sleep 0.1; done"}
            """))
        let worker = try b.worker("survivor")
        defer { worker.stop() }
        let created = try await store.createWorkOrder(workflow: "chatty", input: Array("{}".utf8))
        try await store.waitForFirstLog(created.attemptID)
        try await b.killAndRestartLightning()
        let a = try await b.store().waitUntilFinal(created.attemptID)
        #expect(a.state == .success, "\(a)\n\(worker.log)")
        let lines = try await b.store().logs(attemptID: created.attemptID, since: 0, limit: 1000)
        #expect(lines.map(\.message) == (1...40).map { "line \($0)" })
        #expect(lines.map(\.seq) == Array(1...40))
        try await worker.waitForLog("rejoined")
    }

    @Test("--lightning given twice: when the Lightning in use goes, the worker moves to the other and works there, and back")
    func failover() async throws {
        var a = try await Binaries()
        let b = try await Binaries()
        defer { a.remove(); b.remove() }
        let flow = try WorkflowDefinition.parse("name: hop\njobs:\n  - {name: h, adaptor: sh, body: \"echo hop\"}\n")
        _ = try await a.store().applyWorkflow(flow)
        _ = try await b.store().applyWorkflow(flow)
        let worker = try a.worker("hopper", extra: ["--lightning", "ws://127.0.0.1:\(b.port)/worker"])
        defer { worker.stop() }
        let first = try await a.store().createWorkOrder(workflow: "hop", input: Array("{}".utf8))
        #expect(try await a.store().waitUntilFinal(first.attemptID, timeout: .seconds(60)).state == .success, "\(worker.log)")

        // A goes: the worker lands on B and runs B's work.
        a.lightning.signal(SIGKILL)
        let second = try await b.store().createWorkOrder(workflow: "hop", input: Array("{}".utf8))
        let onB = try await b.store().waitUntilFinal(second.attemptID, timeout: .seconds(60))
        #expect(onB.state == .success && onB.workerName == "hopper", "\(onB)\n\(worker.log)")
        _ = try await worker.waitForLog("url=ws://127.0.0.1:\(b.port)/worker/websocket .*connected to Lightning")

        // A is back (its port, its database) and B goes: the worker returns to A.
        try await a.restartLightning()
        b.lightning.signal(SIGKILL)
        let third = try await a.store().createWorkOrder(workflow: "hop", input: Array("{}".utf8))
        let back = try await a.store().waitUntilFinal(third.attemptID, timeout: .seconds(60))
        #expect(back.state == .success && back.workerName == "hopper", "\(back)\n\(worker.log)")
        #expect(try await a.store().logs(attemptID: third.attemptID, since: 0, limit: 10).map(\.message) == ["hop"])
    }

    @Test("two workers and 200 attempts: every attempt runs exactly once")
    func twoWorkers() async throws {
        let b = try await Binaries()
        defer { b.remove() }
        let store = try b.store()
        _ = try await store.applyWorkflow(try WorkflowDefinition.parse("""
            name: once
            jobs:
              - {name: mark, adaptor: sh, body: "echo ran $ATTEMPT_ID"}
            """))
        var ids: [String] = []
        for _ in 0..<200 { ids.append(try await store.createWorkOrder(workflow: "once", input: Array("{}".utf8)).attemptID) }
        let w1 = try b.worker("one", extra: ["--capacity", "4"]), w2 = try b.worker("two", extra: ["--capacity", "4"])
        defer { w1.stop(); w2.stop() }
        var byWorker: [String: Int] = [:]
        for id in ids {
            let a = try await store.waitUntilFinal(id, timeout: .seconds(240))
            #expect(a.state == .success, "\(a)")
            byWorker[a.workerName ?? "?", default: 0] += 1
            let logs = try await store.logs(attemptID: id, since: 0, limit: 10).map(\.message)
            #expect(logs == ["ran \(id)"], "exactly one run of \(id): \(logs)")
            #expect(try await store.steps(attemptID: id).count == 1)
        }
        #expect(byWorker.values.reduce(0, +) == 200)
        #expect(Set(byWorker.keys) == ["one", "two"], "both workers took work: \(byWorker)")
    }

    @Test("an operator tailing a running attempt with the CLI gets every line, in order")
    func tailEveryLine() async throws {
        let b = try await Binaries()
        defer { b.remove() }
        try await b.lightning.waitForLog("created admin token")
        let store = try b.store()
        _ = try await store.applyWorkflow(try WorkflowDefinition.parse("""
            name: stream
            jobs:
              - {name: a, adaptor: sh, body: "for i in $(seq 1 3000); do echo a$i; done; sleep 0.5; echo tail-end"}
              - {name: b, adaptor: python3, body: "import sys\\nfor i in range(1, 2001): print('b%d' % i, file=sys.stderr if i % 2 else sys.stdout)"}
            edges:
              - {from: a, to: b}
            """))
        let created = try await store.createWorkOrder(workflow: "stream", input: Array("{}".utf8))
        // The tail starts before any worker exists: it sees the attempt go from available to its end.
        let tail = try ChildProcess(try TestSupport.builtBinary("lightning"),
                                    ["attempts", "tail", created.attemptID, "--json", "--server", "http://127.0.0.1:\(b.port)"],
                                    environment: ["LIGHTNING_TOKEN_FILE": b.dir.appendingPathComponent("keys/operator_token").path],
                                    directory: b.dir, logName: "tail.log")
        defer { tail.stop() }
        try await Task.sleep(for: .milliseconds(300))
        let worker = try b.worker("streamer")
        defer { worker.stop() }
        #expect(await tail.waitForExit(timeout: 120) == 0, "\(tail.log.suffix(2000))")
        let printed = tail.log.split(separator: "\n").compactMap { try? JSON.parse(String($0)) }.filter { $0["seq"] != nil }
        #expect(printed.map { $0["seq"]?.intValue ?? 0 } == Array(1...5001))
        let messages = printed.map { $0["message"]?.stringValue ?? "" }
        #expect(Array(messages.prefix(3001)) == (1...3000).map { "a\($0)" } + ["tail-end"])
        // stdout and stderr are two pipes: each keeps its order; how they interleave is up to the step.
        let second = Array(printed.dropFirst(3001))
        let out: [String] = second.filter { $0["level"] == "info" }.map { $0["message"]?.stringValue ?? "" }
        let err: [String] = second.filter { $0["level"] == "error" }.map { $0["message"]?.stringValue ?? "" }
        let evens: [String] = stride(from: 2, through: 2000, by: 2).map { "b\($0)" }
        let odds: [String] = stride(from: 1, through: 1999, by: 2).map { "b\($0)" }
        #expect(out == evens)
        #expect(err == odds)
    }

    @Test("a CLI tail too slow for its socket is closed by Lightning, resumes by itself, and still prints every line once, in order")
    func slowTail() async throws {
        let b = try await Binaries(extra: ["--viewer-queue-bytes", "262144"])
        defer { b.remove() }
        try await b.lightning.waitForLog("created admin token")
        let store = try b.store()
        _ = try await store.applyWorkflow(try WorkflowDefinition.parse("""
            name: flood
            jobs: [{name: a, adaptor: sh, body: "seq 1 100000"}]
            """))
        let worker = try b.worker("flooder")
        defer { worker.stop() }
        let created = try await store.createWorkOrder(workflow: "flood", input: Array("{}".utf8))
        let tail = Process()
        tail.environment = ProcessInfo.processInfo.environment.merging(
            ["LIGHTNING_TOKEN_FILE": b.dir.appendingPathComponent("keys/operator_token").path, "LIGHTNING_TOKEN": ""]) { $1 }
        let out = Pipe(), err = Pipe()
        tail.standardOutput = out
        tail.standardError = err
        try Spawn.start(tail, executable: try TestSupport.builtBinary("lightning"),
                        arguments: ["attempts", "tail", created.attemptID, "--json", "--server", "http://127.0.0.1:\(b.port)"])
        defer { if tail.isRunning { tail.terminate() } }
        // Read its output slowly: its writes block, so it stops reading its socket, and Lightning's queue for it fills.
        // (On a thread of its own: blocking reads must not hold a cooperative thread.)
        let reader = out.fileHandleForReading, errors = err.fileHandleForReading
        let (data, stderr) = await withCheckedContinuation { (c: CheckedContinuation<(Data, String), Never>) in
            Thread {
                var data = Data()
                // Nothing is read until Lightning has closed the tail as too slow (or a minute passed): however slowly
                // a loaded machine runs the step, its lines pile up behind the blocked tail until they do.
                let giveUp = Date().addingTimeInterval(60)
                while !b.lightning.log.contains("closing a slow consumer"), Date() < giveUp { Thread.sleep(forTimeInterval: 0.05) }
                while true {
                    let chunk = reader.readData(ofLength: 32 * 1024)
                    if chunk.isEmpty { break }
                    data += chunk
                    Thread.sleep(forTimeInterval: 0.015)
                }
                tail.waitUntilExit()
                c.resume(returning: (data, String(decoding: errors.readDataToEndOfFile(), as: UTF8.self)))
            }.start()
        }
        #expect(tail.terminationStatus == 0, "\(stderr)")
        let seqs = String(decoding: data, as: UTF8.self).split(separator: "\n").compactMap { try? JSON.parse(String($0))["seq"]?.intValue }
        #expect(seqs == Array(1...100_000), "\(seqs.count) lines; \(stderr)")
        #expect(b.lightning.log.contains("closing a slow consumer"), "the tail was too slow at least once")
    }

    @Test("bad input to the webhook and the API gets a clear 4xx, and the server keeps serving")
    func badInput() async throws {
        let b = try await Binaries(extra: ["--max-http-body-bytes", "1000000"])
        defer { b.remove() }
        try await b.lightning.waitForLog("created admin token")
        let token = try String(contentsOf: b.dir.appendingPathComponent("keys/operator_token"), encoding: .utf8)
            .trimmingCharacters(in: .whitespacesAndNewlines)
        let store = try b.store()
        _ = try await store.applyWorkflow(try WorkflowDefinition.parse("""
            name: hooked
            triggers: [{name: in, type: webhook, path: in}]
            jobs: [{name: a, adaptor: sh, body: "true"}]
            """))
        let base = "http://127.0.0.1:\(b.port)"
        let huge = b.dir.appendingPathComponent("huge.json")
        try Data(("{\"x\":\"" + String(repeating: "y", count: 2_000_000) + "\"}").utf8).write(to: huge)
        func curl(_ args: [String]) async throws -> (status: Int, body: String) {
            let r = try await TestSupport.run("/usr/bin/curl", ["-s", "-w", "\n%{http_code}"] + args)
            let parts = r.stdout.split(separator: "\n", omittingEmptySubsequences: false)
            return (Int(parts.last ?? "") ?? 0, parts.dropLast().joined(separator: "\n"))
        }
        let cases: [(String, [String], Int, String)] = [
            ("webhook, invalid JSON", ["-X", "POST", "-d", "{nope", "\(base)/i/in"], 415, "not JSON"),
            ("webhook, a form upload", ["-X", "POST", "-F", "f=hello", "\(base)/i/in"], 415, "multipart/form-data"),
            ("webhook, a JSON array", ["-X", "POST", "-d", "[1,2]", "\(base)/i/in"], 400, "JSON object"),
            ("webhook, unknown path", ["-X", "POST", "-d", "{}", "\(base)/i/nowhere"], 404, "/i/nowhere"),
            ("webhook, a huge body", ["-X", "POST", "--data-binary", "@\(huge.path)", "\(base)/i/in"], 413, "limit"),
            ("API, no token", ["\(base)/api/attempts"], 401, "token"),
            ("API, a bad token", ["-H", "Authorization: Bearer lro_bad", "\(base)/api/attempts"], 401, "token"),
            ("API, invalid JSON", ["-H", "Authorization: Bearer \(token)", "-X", "POST", "-d", "{", "\(base)/api/attempts"], 400, "JSON"),
            ("API, unknown workflow", ["-H", "Authorization: Bearer \(token)", "-X", "POST", "-d", #"{"workflow":"ghost"}"#,
                                       "\(base)/api/attempts"], 404, "ghost"),
            ("API, a huge body", ["-H", "Authorization: Bearer \(token)", "-X", "PUT", "--data-binary", "@\(huge.path)",
                                  "\(base)/api/workflows"], 413, "limit"),
            ("API, an unknown state", ["-H", "Authorization: Bearer \(token)", "\(base)/api/attempts?state=weird"], 400, "state"),
        ]
        for (what, args, status, fragment) in cases {
            let r = try await curl(args)
            #expect(r.status == status && r.body.contains(fragment), "\(what): \(r.status) \(r.body.prefix(300))")
            #expect(try await curl(["\(base)/healthz"]).status == 200, "still serving after: \(what)")
        }
        let ok = try await curl(["-X", "POST", "-d", #"{"fine":true}"#, "\(base)/i/in"])
        #expect(ok.status == 200 && ok.body.contains("attempt_id"))
        #expect(try await store.attempts(state: nil, limit: 10).count == 1, "no bad request made work")
    }
}
