import Channels
import Foundation
import Lightning
import Testing
import TestSupport

/// The operator console in a real browser: headless Chromium (Debian's `chromium` and `chromium-driver`, installed
/// by scripts/test) driven by selenium, against the real `lightning` and `runtime-worker` binaries. Each test
/// prepares its data here and runs one scenario of `Browser/console_browser.py`, which saves screenshots under
/// `screenshots/console/` (git-ignored; docs/console.md shows copies of them).
@Suite("The operator console in a real browser", .serialized)
struct ConsoleBrowserTests {
    static let script = TestSupport.packageRoot.appendingPathComponent("Tests/EndToEndTests/Browser/console_browser.py").path
    static let screenshots = TestSupport.packageRoot.appendingPathComponent("screenshots/console").path

    /// Lightning, one worker, the admin token `serve` wrote and a viewer token made with the CLI.
    struct Setup {
        var b: Binaries
        let worker: ChildProcess
        let admin: String
        let viewer: String
        var base: String { "http://127.0.0.1:\(b.port)" }

        init() async throws {
            b = try await Binaries()
            try await b.lightning.waitForLog("created admin token")
            admin = try String(contentsOf: b.dir.appendingPathComponent("keys/operator_token"), encoding: .utf8)
                .trimmingCharacters(in: .whitespacesAndNewlines)
            let made = try await b.cli(["tokens", "create", "watcher", "--role", "viewer"])
            guard made.status == 0, let secret = made.stdout.split(whereSeparator: \.isWhitespace).first(where: { $0.hasPrefix("lro_") }) else {
                throw TestSupport.Failure("could not make a viewer token: \(made)")
            }
            viewer = String(secret)
            worker = try b.worker("console-worker")
            try await worker.waitForLog("worker joined|connected to Lightning")
        }

        func apply(_ yaml: String) async throws { try await b.apply(yaml) }

        func start(_ workflow: String, input: String = "{}") async throws -> String {
            let r = try await b.cli(["attempts", "start", workflow, "--input", input])
            guard r.status == 0 else { throw TestSupport.Failure("start failed: \(r)") }
            return r.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        }

        func waitFinal(_ id: String) async throws -> AttemptRecord {
            let store = try b.store()
            let deadline = ContinuousClock.now + .seconds(120)
            while ContinuousClock.now < deadline {
                let a = try await store.attempt(id)
                if a.state.isFinal { return a }
                try await Task.sleep(for: .milliseconds(50))
            }
            throw TestSupport.Failure("attempt \(id) did not finish")
        }

        func context(_ extra: [String: JSON]) -> JSON {
            var o: [String: JSON] = ["base": .string(base), "admin": .string(admin), "viewer": .string(viewer),
                                     "dir": .string(b.dir.path), "screenshots": .string(ConsoleBrowserTests.screenshots)]
            for (k, v) in extra { o[k] = v }
            return .object(o)
        }

        /// Runs a scenario in the browser; fails the test with the script's own report.
        func browse(_ scenario: String, _ extra: [String: JSON] = [:]) async throws {
            try await ConsoleBrowserTests.browse(scenario, context: context(extra), in: b.dir)
        }

        func stop() {
            worker.stop()
            b.remove()
        }
    }

    static func browse(_ scenario: String, context: JSON, in dir: URL) async throws {
        let file = dir.appendingPathComponent("context-\(scenario).json")
        try Data(context.encoded()).write(to: file)
        let r = try await TestSupport.python(script, [scenario, file.path])
        #expect(r.status == 0, "\(scenario):\n\(r.stdout)\n\(r.stderr.suffix(4000))")
    }

    static let chatty = """
        name: chatty
        jobs:
          - name: talk
            adaptor: sh
            body: |
              for i in $(seq 1 300); do echo "line $i"; done
              echo "something went sideways" >&2
        """

    @Test("sign in with a token for an HttpOnly cookie; a wrong token is refused; sign out")
    func signIn() async throws {
        let s = try await Setup()
        defer { s.stop() }
        try await s.browse("signin")
    }

    @Test("an attempt's live log: every line once and in order, search, level filter, line links, the steps")
    func liveLog() async throws {
        let s = try await Setup()
        defer { s.stop() }
        try await s.apply(Self.chatty)
        let id = try await s.start("chatty")
        // "line 17" and "line 170" ... "line 179": 11 of the job's lines.
        try await s.browse("live-log", ["attempt": .string(id), "matches": 11, "errors": 1])
    }

    @Test("a Lightning restart in the middle of an attempt: the page's log resumes with no gap and no duplicate")
    func restart() async throws {
        var s = try await Setup()
        defer { s.stop() }
        try await s.apply("""
            name: slow
            jobs:
              - name: drip
                adaptor: sh
                body: 'for i in $(seq 1 40); do echo "drip $i"; sleep 0.15; done'
            """)
        let id = try await s.start("slow")
        let flag = s.b.dir.appendingPathComponent("restart-now").path
        let context = s.context(["attempt": .string(id)])
        let dir = s.b.dir
        async let browsed: Void = Self.browse("restart", context: context, in: dir)
        // The page asks for the restart once it has lines; kill -9, then a new Lightning on the same port and file.
        let deadline = ContinuousClock.now + .seconds(120)
        while !FileManager.default.fileExists(atPath: flag) && ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(50))
        }
        try await s.b.killAndRestartLightning()
        FileManager.default.createFile(atPath: s.b.dir.appendingPathComponent("restarted").path, contents: nil)
        try await browsed
    }

    @Test("the attempts page: filters by state, workflow and log text, kept in the URL; new attempts appear live")
    func filters() async throws {
        let s = try await Setup()
        defer { s.stop() }
        try await s.apply("name: free\njobs:\n  - {name: a, adaptor: sh, body: \"echo fine\"}\n")
        try await s.apply("name: other\njobs:\n  - {name: b, adaptor: sh, body: 'echo other; exit 2'}\n")
        var all: [String] = [], failed: [String] = [], other: [String] = []
        for i in 0..<5 {
            let workflow = i % 2 == 0 ? "free" : "other"
            let id = try await s.start(workflow)
            all.append(id)
            if workflow == "other" { other.append(id); failed.append(id) }
            _ = try await s.waitFinal(id)
        }
        // One attempt whose log alone has the text searched for.
        try await s.apply("name: third\njobs:\n  - {name: c, adaptor: sh, body: 'echo unique-haystack-7'}\n")
        let unique = try await s.start("third")
        all.append(unique)
        _ = try await s.waitFinal(unique)
        try await s.browse("filters", ["all": .array(all.map { .string($0) }), "failed": .array(failed.map { .string($0) }),
                                       "other": .array(other.map { .string($0) }), "needle": "unique-haystack",
                                       "needle_attempt": .string(unique)])
    }

    @Test("cancel: hidden from and refused to a viewer, done by an admin")
    func cancelRoles() async throws {
        let s = try await Setup()
        defer { s.stop() }
        try await s.apply("name: sleepy\njobs:\n  - {name: nap, adaptor: sh, body: 'echo napping; sleep 120'}\n")
        let id = try await s.start("sleepy")
        let store = try s.b.store()
        let deadline = ContinuousClock.now + .seconds(60)
        while try await store.attempt(id).state != .started, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(50)) }
        try await s.browse("cancel-roles", ["attempt": .string(id)])
    }

    @Test("log lines, inputs and outputs carrying <script> and <img onerror> stay inert text")
    func inertMarkup() async throws {
        let s = try await Setup()
        defer { s.stop() }
        try await s.apply("""
            name: hostile
            triggers:
              - {name: hook, type: webhook, path: hostile}
            jobs:
              - name: evil
                adaptor: sh
                body: |
                  echo '<script>window.__xss=1</script>'
                  echo '<img src=x onerror="window.__xss=2">'
                  printf '\\033[31mred\\033[0m <b>bold?</b>\\n'
            """)
        let input = #"{"data":{"html":"<img src=x onerror=\"window.__xss=3\">","s":"<script>window.__xss=4</script>"}}"#
        let id = try await s.start("hostile", input: input)
        try await s.browse("xss", ["attempt": .string(id), "workflow": "hostile"])
    }

    @Test("a 100,000-line log loads whole and scrolls with only the visible lines in the page")
    func bigLog() async throws {
        let s = try await Setup()
        defer { s.stop() }
        try await s.apply("name: big\njobs:\n  - {name: flood, adaptor: sh, body: 'seq 1 100000'}\n")
        let id = try await s.start("big")
        _ = try await s.waitFinal(id)
        try await s.browse("big-log", ["attempt": .string(id)])
    }

    @Test("rerun from a chosen step: the new attempt starts there with that step's recorded input")
    func rerun() async throws {
        let s = try await Setup()
        defer { s.stop() }
        try await s.apply("""
            name: two
            jobs:
              - {name: first, adaptor: sh, body: 'echo one'}
              - {name: second, adaptor: sh, body: 'echo two; exit 4'}
            edges:
              - {from: first, to: second, condition: on_job_success}
            """)
        let id = try await s.start("two")
        let a = try await s.waitFinal(id)
        #expect(a.state == .failed)
        let steps = try await s.b.store().steps(attemptID: id)
        let second = try #require(steps.last)
        try await s.browse("rerun", ["attempt": .string(id), "step": .string(second.id),
                                     "input": .string(try #require(second.inputDataclipID))])
    }

    @Test("the workflows page draws the graph with its conditions; the workers page lists the worker")
    func workflowsAndWorkers() async throws {
        let s = try await Setup()
        defer { s.stop() }
        try await s.apply("""
            name: graph
            triggers:
              - {name: hook, type: webhook, path: graph-hook}
            jobs:
              - {name: fetch, adaptor: sh, body: 'true'}
              - {name: store, adaptor: sh, body: 'true'}
              - {name: alert, adaptor: sh, body: 'true'}
            edges:
              - {from: hook, to: fetch}
              - {from: fetch, to: store, condition: on_job_success}
              - {from: fetch, to: alert, condition: on_job_failure}
            """)
        try await s.browse("workflows", ["workflow": "graph", "nodes": 4, "edges": 3, "webhook": "graph-hook",
                                         "worker": "console-worker"])
    }
}
