import Channels
import Foundation
import LightningProtocol
import Testing
import TestSupport
@testable import Lightning
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// A raw HTTP exchange with full control of the headers (cookies, Origin), and the response's headers.
struct RawExchange {
    var status: Int
    var headers: [String: String]
    var json: JSON
    var text: String
}

/// No cookie jar: each request carries exactly the headers the test gives it.
func bareConfiguration() -> URLSessionConfiguration {
    let c = URLSessionConfiguration.ephemeral
    c.httpCookieStorage = nil
    c.httpShouldSetCookies = false
    c.httpCookieAcceptPolicy = .never
    return c
}

extension Harness {
    var origin: String { "http://127.0.0.1:\(port)" }

    func raw(_ method: String, _ path: String, headers: [String: String] = [:], body: String? = nil) async throws -> RawExchange {
        var request = URLRequest(url: URL(string: "http://127.0.0.1:\(port)\(path)")!)
        request.httpMethod = method
        for (k, v) in headers { request.setValue(v, forHTTPHeaderField: k) }
        // A fresh connection each time (`freshHTTPExchange`): a kept one may be closing, or point at an earlier
        // test's server whose port the kernel has since given to this one, and read back an empty reply.
        if request.value(forHTTPHeaderField: "Connection") == nil { request.setValue("close", forHTTPHeaderField: "Connection") }
        if let body { request.httpBody = Data(body.utf8) }
        let (data, response) = try await freshHTTPExchange(request, configuration: bareConfiguration())
        let http = response as! HTTPURLResponse
        var fields: [String: String] = [:]
        for (k, v) in http.allHeaderFields { fields[String(describing: k).lowercased()] = String(describing: v) }
        let text = String(decoding: data, as: UTF8.self)
        return RawExchange(status: http.statusCode, headers: fields, json: (try? JSON.parse(text)) ?? .null, text: text)
    }

    /// Signs in to the console; returns the session cookie (`name=value`).
    func signIn(_ token: String) async throws -> String {
        let r = try await raw("POST", "/console/session", headers: ["Origin": origin, "Content-Type": "application/json"],
                              body: #"{"token":"\#(token)"}"#)
        #expect(r.status == 200, "\(r.text)")
        let setCookie = try #require(r.headers["set-cookie"])
        return String(try #require(setCookie.split(separator: ";").first))
    }
}

@Suite("The operator console: pages, sessions, and the API behind them", .serialized)
struct ConsoleTests {
    /// The console's files as committed, read from the source tree.
    static let consoleDirectory = TestSupport.packageRoot.appendingPathComponent("Sources/Lightning/Console")

    static func committedFiles() throws -> [String: String] {
        var files: [String: String] = [:]
        let root = consoleDirectory.standardizedFileURL.path
        let walk = try #require(FileManager.default.enumerator(atPath: root))
        for case let relative as String in walk {
            var isDirectory: ObjCBool = false
            let path = root + "/" + relative
            if FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), !isDirectory.boolValue {
                files[relative] = try String(contentsOfFile: path, encoding: .utf8)
            }
        }
        return files
    }

    @Test("every console file is compiled in byte for byte, served with its type and a strict CSP; other paths are 404")
    func assets() async throws {
        let committed = try Self.committedFiles()
        #expect(committed["index.html"] != nil && committed["app.js"] != nil)
        #expect(Set(ConsoleAssets.files.keys) == Set(committed.keys))
        for (name, text) in committed {
            #expect(ConsoleAssets.files[name].map { Lightning.bytes($0) } == Array(text.utf8), "\(name) differs from the compiled copy")
        }

        let h = try Harness()
        defer { Task { await h.stop() } }
        for page in ["/", "/login", "/attempts", "/attempts/abc-123", "/workflows", "/workflows/greet", "/workers"] {
            let r = try await h.raw("GET", page)
            #expect(r.status == 200 && r.headers["content-type"]?.hasPrefix("text/html") == true, "\(page): \(r.status)")
            #expect(r.text == committed["index.html"])
            let csp = try #require(r.headers["content-security-policy"])
            #expect(csp.contains("script-src 'self'") && csp.contains("frame-ancestors 'none'") && !csp.contains("unsafe"))
            #expect(r.headers["x-content-type-options"] == "nosniff" && r.headers["cache-control"] == "no-store")
        }
        for (name, text) in committed {
            let r = try await h.raw("GET", "/console/" + name)
            #expect(r.status == 200 && r.text == text, "\(name)")
            let expected = name.hasSuffix(".js") ? "text/javascript" : name.hasSuffix(".css") ? "text/css" : name.hasSuffix(".html") ? "text/html" : ""
            #expect(r.headers["content-type"]?.hasPrefix(expected) == true, "\(name): \(r.headers["content-type"] ?? "-")")
            #expect(r.headers["content-security-policy"] != nil)
        }
        for missing in ["/console/nope.js", "/console/../Package.swift", "/attempts/a/b", "/nothing/here", "/api2"] {
            #expect(try await h.raw("GET", missing).status == 404, "\(missing)")
        }
        #expect(try await h.raw("POST", "/nothing").status == 404)
        #expect(try await h.raw("POST", "/attempts").status == 405)
        // The API and the webhooks are where they were.
        #expect(try await h.raw("GET", "/healthz").status == 200)
        #expect(try await h.raw("GET", "/api/workflows").status == 401)

        let off = try Harness { $0.consoleEnabled = false }
        defer { Task { await off.stop() } }
        #expect(try await off.raw("GET", "/").status == 404)
        #expect(try await off.raw("GET", "/console/app.js").status == 404)
    }

    @Test("the page's own code builds no HTML from strings, runs nothing inline and loads nothing from elsewhere")
    func noInlineOrStringHTML() throws {
        let files = try Self.committedFiles()
        for (name, source) in files where name.hasSuffix(".js") {
            // The SVG namespace is a name, not a place anything is loaded from.
            let text = source.replacingOccurrences(of: "'http://www.w3.org/2000/svg'", with: "")
            for banned in ["innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function", "setAttribute('style'",
                           "setAttribute(\"style\"", "http://", "https://"] {
                #expect(!text.contains(banned), "\(name) uses \(banned)")
            }
        }
        for (name, text) in files where name.hasSuffix(".html") {
            // Every script has a src on this origin; no inline handlers or styles.
            let scripts = text.components(separatedBy: "<script").dropFirst()
            for s in scripts {
                let tag = s.prefix { $0 != ">" }
                #expect(tag.contains("src=\"/console/"), "\(name): a script without a local src: <script\(tag)>")
            }
            #expect(text.range(of: #"\son[a-z]+\s*="#, options: .regularExpression) == nil, "\(name) has an inline event handler")
            #expect(!text.contains("style="), "\(name) has an inline style")
            #expect(!text.contains("http://") && !text.contains("https://"), "\(name) refers to another origin")
        }
    }

    @Test("sign-in: a token for an HttpOnly SameSite=Strict cookie; roles, cross-origin refusal, revocation and sign-out", arguments: Engine.all)
    func sessions(_ engine: Engine) async throws {
        let h = try await Harness.make(engine)
        defer { Task { await h.stop() } }
        let (admin, viewer) = try await h.tokens()
        try await h.t.workflow(freeWorkflow)
        let json = ["Content-Type": "application/json"]

        // Bad sign-ins: each says why and sets nothing.
        for (headers, body, status) in [
            (json.merging(["Origin": h.origin]) { $1 }, #"{"token":"lro_\#(String(repeating: "A", count: 43))"}"#, 401),
            (json.merging(["Origin": h.origin]) { $1 }, #"{"token":""}"#, 400),
            (json.merging(["Origin": h.origin]) { $1 }, "not json", 400),
            (json, #"{"token":"\#(admin)"}"#, 403),
            (json.merging(["Origin": "http://evil.example"]) { $1 }, #"{"token":"\#(admin)"}"#, 403),
        ] as [([String: String], String, Int)] {
            let r = try await h.raw("POST", "/console/session", headers: headers, body: body)
            #expect(r.status == status && r.headers["set-cookie"] == nil && r.json["error"]?.stringValue != nil, "\(body): \(r.status) \(r.text)")
        }

        let r = try await h.raw("POST", "/console/session", headers: json.merging(["Origin": h.origin]) { $1 }, body: #"{"token":"\#(admin)"}"#)
        #expect(r.status == 200 && r.json["name"] == "root" && r.json["role"] == "admin", "\(r.text)")
        let setCookie = try #require(r.headers["set-cookie"])
        for attribute in ["HttpOnly", "SameSite=Strict", "Path=/", "Max-Age="] { #expect(setCookie.contains(attribute), "\(setCookie)") }
        #expect(!setCookie.contains(admin) && setCookie.hasPrefix("lightning_session=lrs_"))
        #expect(r.headers["cache-control"] == "no-store")
        let adminCookie = String(setCookie.split(separator: ";")[0])
        let viewerCookie = try await h.signIn(viewer)

        // The cookie authenticates the API; the role is the token's.
        let me = try await h.raw("GET", "/console/session", headers: ["Cookie": adminCookie])
        #expect(me.status == 200 && me.json["role"] == "admin")
        #expect(try await h.raw("GET", "/console/session").status == 401)
        #expect(try await h.raw("GET", "/api/workflows", headers: ["Cookie": viewerCookie]).status == 200)
        let start = #"{"workflow":"free"}"#
        let refused = try await h.raw("POST", "/api/attempts", headers: ["Cookie": viewerCookie, "Origin": h.origin], body: start)
        #expect(refused.status == 403 && refused.text.contains("viewer"), "\(refused.text)")
        #expect(try await h.raw("POST", "/api/attempts", headers: ["Cookie": adminCookie, "Origin": h.origin], body: start).status == 201)
        // A state change carried by the cookie must come from the console's origin.
        #expect(try await h.raw("POST", "/api/attempts", headers: ["Cookie": adminCookie], body: start).status == 403)
        #expect(try await h.raw("POST", "/api/attempts", headers: ["Cookie": adminCookie, "Origin": "http://127.0.0.1:1"], body: start).status == 403)
        // A forged or session-shaped bearer token is not a session, and a session is not a bearer token.
        let secret = String(adminCookie.dropFirst("lightning_session=".count))
        #expect(try await h.raw("GET", "/api/workflows", headers: ["Authorization": "Bearer \(secret)"]).status == 401)
        #expect(try await h.raw("GET", "/api/workflows", headers: ["Cookie": "lightning_session=\(admin)"]).status == 401)
        #expect(try await h.raw("GET", "/api/workflows", headers: ["Cookie": "lightning_session=lrs_\(String(repeating: "A", count: 43))"]).status == 401)

        // Revoking the token ends its sessions.
        _ = try await h.t.store.revokeOperatorToken("watcher", at: Timestamp.nowMicros())
        let ended = try await h.raw("GET", "/api/workflows", headers: ["Cookie": viewerCookie])
        #expect(ended.status == 401 && ended.text.contains("sign in again"), "\(ended.text)")

        // Signing out ends the session and clears the cookie.
        let out = try await h.raw("DELETE", "/console/session", headers: ["Cookie": adminCookie, "Origin": h.origin])
        #expect(out.status == 200 && out.headers["set-cookie"]?.contains("Max-Age=0") == true)
        #expect(try await h.raw("GET", "/console/session", headers: ["Cookie": adminCookie]).status == 401)
    }

    @Test("times are rendered as Foundation's ISO 8601 formatter renders them, and parsed back")
    func times() {
        let f = ISO8601DateFormatter()
        f.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        for micros: Int64 in [0, 1, 999, 1_000, 999_999, 1_000_000, 1_764_633_600_123_456, 4_102_444_799_999_999, 951_782_400_000_000] {
            #expect(Render.iso8601(micros) == f.string(from: Date(timeIntervalSince1970: Double(micros / 1000) / 1e3)), "\(micros)")
            #expect(Lightning.parseISO8601(Render.iso8601(micros)) == micros / 1000 * 1000)
        }
        #expect(Lightning.parseISO8601("2026-12-02T10:00") == Lightning.parseISO8601("2026-12-02T10:00:00Z"))
        #expect(Lightning.parseISO8601("2026-12-02T10:00:00.5Z") == 1_796_205_600_500_000)
        #expect(Lightning.parseISO8601("2026-12-02T12:00+02:00") == Lightning.parseISO8601("2026-12-02T10:00:00Z"))
        #expect(Lightning.parseISO8601("2026-12-02T08:30:00-0130") == Lightning.parseISO8601("2026-12-02T10:00:00Z"))
        #expect(Lightning.parseISO8601("2026-12-02") == Lightning.parseISO8601("2026-12-02T00:00:00Z"))
        #expect(Lightning.parseISO8601("2026-12-02 10:00:00.123456789Z") == 1_796_205_600_123_456)
        for bad in ["yesterday", "2026-13-02T10:00:00Z", "2026-02-30", "2026-12-02T25:00", "2026-12-02T10:00:00Zjunk", "1796205600", ""] {
            #expect(Lightning.parseISO8601(bad) == nil, "\(bad)")
        }
    }

    static let socketScript = TestSupport.packageRoot.appendingPathComponent("Tests/LightningTests/Interop/console_socket.py").path

    /// A socket opened with the cookie joins `attempts`; `end` is then done; the server must close the socket.
    static func socketClosed(_ h: Harness, cookie: String, by end: () async throws -> Void) async throws {
        let flag = h.t.dir.appendingPathComponent("joined-\(UUID().uuidString.prefix(6))").path
        async let result = TestSupport.python(socketScript, ["\(h.port)", cookie, h.origin, "joined-until-closed", flag])
        try await waitUntil("the socket joined", timeout: .seconds(60)) { FileManager.default.fileExists(atPath: flag) }
        try await end()
        let r = try await result
        #expect(r.status == 0, "\(r.stdout) \(r.stderr)")
    }

    @Test("the operator socket takes the cookie only from the console's origin, and closes when the session ends", arguments: Engine.all)
    func socketSessions(_ engine: Engine) async throws {
        let h = try await Harness.make(engine)
        defer { Task { await h.stop() } }
        let (admin, _) = try await h.tokens()
        let cookie = try await h.signIn(admin)
        for origin in ["http://evil.example", "-"] {
            let r = try await TestSupport.python(Self.socketScript, ["\(h.port)", cookie, origin, "refused"])
            #expect(r.status == 0, "origin \(origin): \(r.stdout) \(r.stderr)")
        }
        // Signing out closes the sockets of that session.
        try await Self.socketClosed(h, cookie: cookie) {
            _ = try await h.raw("DELETE", "/console/session", headers: ["Cookie": cookie, "Origin": h.origin])
        }
        // Revoking the token closes them too.
        let second = try await h.signIn(admin)
        try await Self.socketClosed(h, cookie: second) { _ = try await h.http("DELETE", "/api/tokens/root", token: admin) }
    }

    @Test("an expired session's sockets are closed by the janitor's check (given a clock past the session's end)", arguments: Engine.all)
    func socketExpiry(_ engine: Engine) async throws {
        let h = try await Harness.make(engine)
        defer { Task { await h.stop() } }
        let (admin, _) = try await h.tokens()
        let cookie = try await h.signIn(admin)
        try await Self.socketClosed(h, cookie: cookie) {
            // Now: nothing to close. Thirteen hours on (sessions last twelve): closed.
            h.lightning.closeExpiredConsoleSockets(now: Timestamp.nowMicros())
            #expect(h.lightning.operatorSocketCount() == 1)
            h.lightning.closeExpiredConsoleSockets(now: Timestamp.nowMicros() + 13 * 3600 * 1_000_000)
        }
    }

    @Test("behind a proxy: --public-url is the only origin accepted, and an https one makes the cookie Secure")
    func publicURL() async throws {
        let h = try Harness { $0.publicURL = "https://ops.example.com/" }
        defer { Task { await h.stop() } }
        let (admin, _) = try await h.tokens()
        let json = ["Content-Type": "application/json"]
        let local = try await h.raw("POST", "/console/session", headers: json.merging(["Origin": h.origin]) { $1 }, body: #"{"token":"\#(admin)"}"#)
        #expect(local.status == 403, "the server's own address is not the public origin: \(local.text)")
        let r = try await h.raw("POST", "/console/session", headers: json.merging(["Origin": "https://OPS.example.com"]) { $1 },
                                body: #"{"token":"\#(admin)"}"#)
        #expect(r.status == 200, "\(r.text)")
        #expect(r.headers["set-cookie"]?.contains("; Secure") == true, "\(r.headers["set-cookie"] ?? "-")")
        #expect(Lightning.origin(of: "https://ops.example.com:8443/console/") == "https://ops.example.com:8443")
    }

    @Test("sessions expire")
    func expiry() async throws {
        let h = try Harness { $0.consoleSessionSeconds = 60 }
        defer { Task { await h.stop() } }
        let (admin, _) = try await h.tokens()
        let cookie = try await h.signIn(admin)
        #expect(try await h.raw("GET", "/console/session", headers: ["Cookie": cookie]).status == 200)
        // The store decides by the clock it is given: the same session, a minute on, is over.
        let secret = String(cookie.dropFirst("lightning_session=".count))
        #expect(try h.t.store.consoleSession(secret: secret, at: Timestamp.nowMicros()) != nil)
        #expect(try h.t.store.consoleSession(secret: secret, at: Timestamp.nowMicros() + 60_000_001) == nil)
    }

    @Test("attempts: filters by state, workflow, time and log text; pages by cursor without gaps or repeats", arguments: Engine.all)
    func filtersAndPaging(_ engine: Engine) async throws {
        let h = try await Harness.make(engine)
        defer { Task { await h.stop() } }
        let (_, viewer) = try await h.tokens()
        try await h.t.workflow(freeWorkflow)
        try await h.t.workflow(freeWorkflow.replacingOccurrences(of: "name: free", with: "name: other"))
        var ids: [String] = []
        for i in 0..<130 {
            let created = try await h.lightning.startWork(workflow: i % 3 == 0 ? "other" : "free", input: Array("{}".utf8))
            ids.append(created.attemptID)
        }
        // Log text in a few: one literal "50%_done" (LIKE's wildcards must match only themselves), one "50x-done".
        _ = try await h.t.store.appendLogs(attemptID: ids[7], [NewLogLine(stepID: nil, level: "info", source: "JOB", message: "at 50%_done now", timestamp: 1)])
        _ = try await h.t.store.appendLogs(attemptID: ids[8], [NewLogLine(stepID: nil, level: "info", source: "JOB", message: "at 50x-done now", timestamp: 1)])
        _ = try await h.t.store.appendLogs(attemptID: ids[9], [NewLogLine(stepID: nil, level: "info", source: "JOB", message: "BOOM in step", timestamp: 1)])
        _ = try await h.t.store.cancel(ids[20], at: Timestamp.nowMicros())

        func page(_ query: String) async throws -> (ids: [String], next: String?) {
            let r = try await h.http("GET", "/api/attempts?" + query, token: viewer)
            #expect(r.status == 200, "\(query): \(r.text)")
            return ((r.json["attempts"]?.arrayValue ?? []).compactMap { $0["id"]?.stringValue }, r.json["next_before"]?.stringValue)
        }
        var seen: [String] = []
        var cursor: String? = nil
        repeat {
            let p = try await page("limit=40" + (cursor.map { "&before=\($0)" } ?? ""))
            seen += p.ids
            cursor = p.next
        } while cursor != nil
        #expect(seen == ids.reversed(), "paging: \(seen.count) ids")

        let other = try await page("workflow=other&limit=1000")
        #expect(other.ids == ids.enumerated().filter { $0.offset % 3 == 0 }.map(\.element).reversed() && other.next == nil)
        #expect(try await page("state=cancelled").ids == [ids[20]])
        #expect(try await page("q=50%25_done").ids == [ids[7]])
        #expect(try await page("q=boom").ids == [ids[9]], "the text search ignores case")
        #expect(try await page("q=nothing-like-this").ids.isEmpty)
        #expect(try await page("workflow=other&q=boom").ids == [ids[9]])
        let future = try await page("since=2999-01-01T00:00:00Z")
        #expect(future.ids.isEmpty)
        #expect(try await page("until=2999-01-01T00:00&limit=1000").ids.count == 130)
        #expect(try await page("until=2000-01-01T00:00:00.000Z").ids.isEmpty)
        for bad in ["since=yesterday", "since=1796205600", "before=abc", "before=-3", "state=nope", "limit=5000", "q=" + String(repeating: "x", count: 201)] {
            let r = try await h.http("GET", "/api/attempts?" + bad, token: viewer)
            #expect(r.status == 400 && r.json["error"]?.stringValue != nil, "\(bad): \(r.status) \(r.text)")
        }
    }

    @Test("rerun from a step: a new attempt of the work order that starts at that job with the step's recorded input", arguments: Engine.all)
    func rerunFromStep(_ engine: Engine) async throws {
        let h = try await Harness.make(engine)
        defer { Task { await h.stop() } }
        let (admin, viewer) = try await h.tokens()
        try await h.t.workflow(Self.twoSteps)
        let store = h.t.store
        let created = try await h.lightning.startWork(workflow: "two", input: Array(#"{"n":1}"#.utf8))
        let id = created.attemptID
        let plan = try await store.plan(attemptID: id)
        let (first, second) = (plan.jobs[0], plan.jobs[1])
        #expect(plan.startingNodeID == first.id)

        // Still running: no rerun yet.
        _ = try await store.claim(demand: 1, workerName: "w")
        try await store.startAttempt(id, workerName: "w", at: 1)
        let early = try await h.http("POST", "/api/attempts/\(id)/rerun", token: admin, body: "{}")
        #expect(early.status == 409 && early.text.contains("started"), "\(early.text)")

        try await store.startStep(attemptID: id, stepID: "s1", jobID: first.id, inputDataclipID: created.dataclipID, at: 2)
        try await store.completeStep(attemptID: id, StepComplete(stepID: "s1", jobID: first.id, reason: .success, outputDataclipID: "out-1"),
                                     outputState: Array(#"{"n":2}"#.utf8), at: 3)
        try await store.startStep(attemptID: id, stepID: "s2", jobID: second.id, inputDataclipID: "out-1", at: 4)
        try await store.completeStep(attemptID: id, StepComplete(stepID: "s2", jobID: second.id, reason: .fail, errorType: "Boom"),
                                     outputState: nil, at: 5)
        _ = try await store.completeAttempt(id, AttemptComplete(reason: .fail, errorType: "Boom"), finalState: nil, at: 6)

        #expect(try await h.http("POST", "/api/attempts/\(id)/rerun", token: viewer, body: "{}").status == 403)
        let unknown = try await h.http("POST", "/api/attempts/\(id)/rerun", token: admin, body: #"{"from":"no-such-step"}"#)
        #expect(unknown.status == 404 && unknown.text.contains("no-such-step"), "\(unknown.text)")
        #expect(try await h.http("POST", "/api/attempts/\(id)/rerun", token: admin, body: #"{"from":3}"#).status == 400)
        #expect(try await h.http("POST", "/api/attempts/nope/rerun", token: admin, body: "{}").status == 404)

        // From the second step, named by its job's name: starts there, with what that step was given.
        let rerun = try await h.http("POST", "/api/attempts/\(id)/rerun", token: admin, body: #"{"from":"second"}"#)
        #expect(rerun.status == 201, "\(rerun.text)")
        let newID = try #require(rerun.json["attempt_id"]?.stringValue)
        #expect(rerun.json["work_order_id"]?.stringValue == created.workOrderID)
        let newPlan = try await store.plan(attemptID: newID)
        #expect(newPlan.startingNodeID == second.id && newPlan.dataclipID == "out-1")
        #expect(newPlan.jobs.map(\.id) == plan.jobs.map(\.id), "the same snapshot")
        let shown = try await h.http("GET", "/api/attempts/\(newID)", token: viewer)
        #expect(shown.json["starting_job_name"] == "second" && shown.json["retry_of"]?.stringValue == id && shown.json["attempt_number"] == 2)
        #expect(shown.json["work_order_attempts"]?.arrayValue?.count == 2)
        #expect(shown.json["state"] == "available")

        // The live events name the starting job too: the page merges them into what it shows, and must not lose
        // "rerun from second" when the attempt ends (a browser test caught the header going blank).
        let v = try h.viewer(viewer)
        defer { v.close() }
        let (seen, _) = try await h.watch(v, newID)
        // (A change made while the join is under way reaches the viewer too: OperatorTests.changeDuringJoin.)
        try await waitUntil("the viewer is counted") { h.lightning.viewers.watched.contains(newID) }
        #expect(try await store.claim(demand: 1, workerName: "w").map(\.id) == [newID])
        try await store.startAttempt(newID, workerName: "w", at: 7)
        await h.lightning.attemptChanged(newID)
        // The hub reads the attempt when its drain gets to it: it must see it started, not already ended.
        try await waitUntil("the update reaches the viewer") { seen.events.contains("attempt:update") }
        _ = try await store.completeAttempt(newID, AttemptComplete(reason: .fail, errorType: "Boom"), finalState: nil, at: 8)
        await h.lightning.attemptChanged(newID)
        try await waitUntil("the rerun's end reaches its viewer") { seen.complete != nil }
        let events = zip(seen.events, seen.pushes).filter { $0.0.hasPrefix("attempt:") }
        #expect(events.map(\.0).contains("attempt:update") && events.last?.0 == "attempt:complete", "\(seen.events)")
        for (event, payload) in events {
            #expect(payload["starting_job_name"] == "second", "\(event): \(payload)")
        }

        // By step id, and from the start (retry): the work order's own input, the first job.
        let bySteps = try await h.http("POST", "/api/attempts/\(id)/rerun", token: admin, body: #"{"from":"s1"}"#)
        let p1 = try await store.plan(attemptID: try #require(bySteps.json["attempt_id"]?.stringValue))
        #expect(p1.startingNodeID == first.id && p1.dataclipID == created.dataclipID)
        let retry = try await h.http("POST", "/api/attempts/\(id)/retry", token: admin)
        let p2 = try await store.plan(attemptID: try #require(retry.json["attempt_id"]?.stringValue))
        #expect(retry.status == 201 && p2.startingNodeID == first.id && p2.dataclipID == created.dataclipID)
        #expect(try await store.attempt(try #require(retry.json["attempt_id"]?.stringValue)).attemptNumber == 4)
    }

    @Test("reruns and automatic retries: numbers never repeat, and a rerun gets the workflow's retries afresh", arguments: Engine.all)
    func rerunsAndRetries(_ engine: Engine) async throws {
        let h = try await Harness.make(engine)
        defer { Task { await h.stop() } }
        try await h.t.workflow("name: flaky\noptions:\n  retries: 1\njobs:\n  - {name: a, adaptor: sh, body: 'true'}\n")
        let store = h.t.store
        /// Claims the attempt and refuses its token: it ends `exception`, a platform fault that may be retried.
        func fault(_ id: String) async throws -> String? {
            let claimed = try await store.claim(demand: 10, workerName: "w")
            #expect(claimed.contains { $0.id == id })
            return try await store.refuseClaim(id, workerName: "w", reason: "test", at: Timestamp.nowMicros()).retryID
        }
        let first = try await h.lightning.startWork(workflow: "flaky", input: Array("{}".utf8)).attemptID
        let retry = try #require(try await fault(first))           // #2, automatic
        #expect(try await fault(retry) == nil)                      // retries: 1, used up
        let rerunA = try await store.rerun(attemptID: first, fromStep: nil, by: "ada", at: Timestamp.nowMicros()).attemptID   // #3
        let retryOfA = try #require(try await fault(rerunA), "a rerun gets the workflow's retry afresh")   // #4
        #expect(try await fault(retryOfA) == nil)
        let rerunB = try await store.rerun(attemptID: retryOfA, fromStep: nil, by: "ada", at: Timestamp.nowMicros()).attemptID  // #5
        let numbers = try await store.attempts(workOrderID: try await store.attempt(first).workOrderID).map(\.attemptNumber)
        #expect(numbers == [1, 2, 3, 4, 5], "\(numbers)")
        #expect(try await store.attempt(rerunB).state == .available)
        let note = try await store.logs(attemptID: retryOfA, since: 0, limit: 1).first?.message ?? ""
        #expect(note.hasPrefix("retry 1 of 1: attempt \(rerunA) ended exception"), "\(note)")
    }

    static let twoSteps = """
        name: two
        triggers:
          - {name: hook, type: webhook, path: two}
        jobs:
          - {name: first, adaptor: sh, body: "echo 1"}
          - {name: second, adaptor: sh, body: "exit 3"}
        edges:
          - {from: hook, to: first}
          - {from: first, to: second, condition: on_job_success}
        """

    @Test("dataclips are shown without configuration and with every credential value masked", arguments: Engine.all)
    func dataclipsScrubbed(_ engine: Engine) async throws {
        let h = try await Harness.make(engine)
        defer { Task { await h.stop() } }
        let (_, viewer) = try await h.tokens()
        _ = try await h.t.store.setCredential(name: "api", body: Array(#"{"username":"ada","password":"pa55word-xyz","pin":48213}"#.utf8))
        try await h.t.workflow(freeWorkflow)
        let input = #"{"data":{"note":"the password is pa55word-xyz","pin":48213,"list":["pa55word-xyz",1]},"configuration":{"password":"pa55word-xyz"}}"#
        let created = try await h.lightning.startWork(workflow: "free", input: Array(input.utf8))
        let r = try await h.http("GET", "/api/dataclips/\(created.dataclipID)", token: viewer)
        #expect(r.status == 200 && r.json["type"] == "http_request", "\(r.text)")
        #expect(!r.text.contains("pa55word-xyz") && !r.text.contains("48213") && r.json["body"]?["configuration"] == nil, "\(r.text)")
        #expect(r.json["body"]?["data"]?["note"] == "the password is ***")
        #expect(try await h.http("GET", "/api/dataclips/nope", token: viewer).status == 404)
        #expect(try await h.http("GET", "/api/dataclips/\(created.dataclipID)", token: nil).status == 401)
    }

    @Test("a workflow's graph, versions, webhooks and recent attempts", arguments: Engine.all)
    func workflowDetail(_ engine: Engine) async throws {
        let h = try await Harness.make(engine)
        defer { Task { await h.stop() } }
        let (_, viewer) = try await h.tokens()
        try await h.t.workflow(Self.twoSteps)
        try await h.t.workflow(Self.twoSteps.replacingOccurrences(of: "exit 3", with: "exit 0"))
        let created = try await h.lightning.startWork(workflow: "two", input: Array("{}".utf8))
        let r = try await h.http("GET", "/api/workflows/two", token: viewer)
        #expect(r.status == 200, "\(r.text)")
        #expect(r.json["version"] == 2 && r.json["versions"]?.arrayValue?.compactMap { $0["version"]?.intValue } == [2, 1])
        #expect(r.json["webhooks"] == ["/i/two"])
        let jobs = r.json["jobs"]?.arrayValue ?? []
        #expect(jobs.compactMap { $0["name"]?.stringValue } == ["first", "second"])
        let edges = r.json["edges"]?.arrayValue ?? []
        #expect(edges.count == 2 && edges[1]["condition"] == "on_job_success" && edges[1]["source_job_id"] == jobs[0]["id"]
                && edges[1]["target_job_id"] == jobs[1]["id"] && edges[0]["source_trigger_id"] == r.json["triggers"]?[0]?["id"])
        #expect(r.json["recent_attempts"]?.arrayValue?.first?["id"]?.stringValue == created.attemptID)
        #expect(try await h.http("GET", "/api/workflows/nope", token: viewer).status == 404)
    }

    @Test("the attempts feed: attempts created, claimed and finished appear as they happen", arguments: Engine.all)
    func attemptsFeed(_ engine: Engine) async throws {
        let h = try await Harness.make(engine)
        defer { Task { await h.stop() } }
        let (_, viewerToken) = try await h.tokens()
        try await h.t.workflow(freeWorkflow)
        let viewer = try h.viewer(viewerToken)
        defer { viewer.close() }
        try await waitUntil("viewer connected") { viewer.connected }
        let seen = Seen()
        _ = try await viewer.join(topic: "attempts", payload: { [:] }) { seen.take($0) }
        let worker = try await h.connectedWorker()
        defer { worker.close() }
        let (id, topic) = try await h.startedAttempt(worker)
        // Each push carries the attempt as the feed reads it when its turn comes: a change that another overtook
        // shows the later state (the feed shows what is, it is not a log of events). So: in order, up to started.
        let order = ["available", "claimed", "started"]
        try await waitUntil("the attempt pushed up to started") {
            seen.pushes.contains { $0["id"]?.stringValue == id && $0["state"] == "started" }
        }
        let states = seen.pushes.filter { $0["id"]?.stringValue == id }.compactMap { $0["state"]?.stringValue }
        let ranks = states.compactMap { order.firstIndex(of: $0) }
        #expect(ranks.count == states.count && ranks == ranks.sorted(), "\(states)")
        #expect(try await worker.push(topic: topic, event: "run:complete", payload: ["reason": "success"]).isOK)
        try await waitUntil("success pushed") {
            seen.pushes.contains { $0["id"]?.stringValue == id && $0["state"] == "success" && $0["final"] == true }
        }
        let refused = try await viewer.push(topic: "attempts", event: "anything", payload: [:])
        #expect(!refused.isOK)
    }
}
