import ArgumentParser
import Channels
import Foundation
import Lightning

/// How the operator commands reach Lightning.
struct ClientOptions: ParsableArguments {
    static let defaultTokenFile = "keys/operator_token"

    @Option(help: "Lightning's HTTP URL (env LIGHTNING_SERVER).")
    var server: String = ProcessInfo.processInfo.environment["LIGHTNING_SERVER"] ?? "http://127.0.0.1:4000"
    @Option(help: "Operator token (env LIGHTNING_TOKEN; else read from --token-file).")
    var token: String?
    @Option(help: "File holding the operator token (env LIGHTNING_TOKEN_FILE).")
    var tokenFile: String = ProcessInfo.processInfo.environment["LIGHTNING_TOKEN_FILE"] ?? ClientOptions.defaultTokenFile
    @Flag(help: "Print JSON for scripts instead of text.")
    var json = false

    func client() throws -> APIClient {
        let env = ProcessInfo.processInfo.environment
        var secret = token ?? env["LIGHTNING_TOKEN"].flatMap { $0.isEmpty ? nil : $0 }
        if secret == nil, let text = try? String(contentsOfFile: tokenFile, encoding: .utf8) {
            secret = text.trimmingCharacters(in: .whitespacesAndNewlines)
        }
        guard let secret, !secret.isEmpty else {
            throw CLIError(message: """
                no operator token: pass --token, set LIGHTNING_TOKEN, or run where \(tokenFile) is \
                (the first `lightning serve` on a new database writes an admin token there)
                """)
        }
        return try APIClient(server: server, token: secret)
    }

    func emit(_ value: JSON) { print(String(decoding: value.encoded(), as: UTF8.self)) }
}

/// Runs a command body and turns a CLIError into its message and exit status.
func runCLI(_ body: () async throws -> Void) async throws {
    do { try await body() } catch let e as CLIError {
        FileHandle.standardError.write(Data("error: \(e.message)\n".utf8))
        throw ExitCode(e.exitCode)
    }
}

/// Reads `@FILE`, `-` (standard input) or the text itself.
func argumentText(_ value: String) throws -> String {
    if value == "-" { return String(decoding: FileHandle.standardInput.readDataToEndOfFile(), as: UTF8.self) }
    if value.hasPrefix("@") {
        let path = String(value.dropFirst())
        guard let text = try? String(contentsOfFile: path, encoding: .utf8) else { throw CLIError(message: "cannot read \(path)") }
        return text
    }
    return value
}

/// Columns padded to their widest cell.
func table(_ header: [String], _ rows: [[String]]) -> String {
    let all = [header] + rows
    let widths = header.indices.map { i in all.map { $0[i].count }.max() ?? 0 }
    return all.map { row in
        row.enumerated().map { i, cell in i == row.count - 1 ? cell : cell.padding(toLength: widths[i], withPad: " ", startingAt: 0) }
            .joined(separator: "  ")
    }.joined(separator: "\n")
}

extension String {
    func ifEmpty(_ fallback: String) -> String { isEmpty ? fallback : self }
}

extension JSON {
    /// A scalar as text for tables ("-" for null).
    var cell: String {
        switch self {
        case .null: "-"
        case .string(let s): s
        case .bool(let b): b ? "yes" : "no"
        default: text
        }
    }
}

extension LightningCommand {
    struct Workflows: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Workflows.", subcommands: [Apply.self, List.self])

        struct Apply: AsyncParsableCommand {
            static let configuration = CommandConfiguration(abstract: "Create or update a workflow from a YAML or JSON file.")
            @OptionGroup var options: ClientOptions
            @Argument(help: "The workflow file (- for standard input).") var file: String

            func run() async throws {
                try await runCLI {
                    let text = try argumentText(file == "-" ? "-" : "@" + file)
                    // Checked here too, so a mistake is named before anything is sent.
                    do { _ = try WorkflowDefinition.parse(text) } catch { throw CLIError(message: "\(file): \(error)") }
                    let r = try await options.client().call("PUT", "/api/workflows", body: Array(text.utf8), contentType: "application/yaml")
                    if options.json { options.emit(r); return }
                    print("workflow \(r["name"]?.cell ?? "?"): version \(r["version"]?.cell ?? "?") (\(r["id"]?.cell ?? "?"))")
                }
            }
        }

        struct List: AsyncParsableCommand {
            static let configuration = CommandConfiguration(abstract: "List workflows.")
            @OptionGroup var options: ClientOptions
            func run() async throws {
                try await runCLI {
                    let r = try await options.client().call("GET", "/api/workflows")
                    if options.json { options.emit(r); return }
                    let rows = (r["workflows"]?.arrayValue ?? []).map { w in
                        [w["name"]?.cell ?? "", "v" + (w["version"]?.cell ?? ""), w["concurrency"]?.cell ?? "-",
                         (w["webhooks"]?.arrayValue ?? []).map(\.cell).joined(separator: " ")]
                    }
                    print(table(["NAME", "VERSION", "CONCURRENCY", "WEBHOOKS"], rows))
                }
            }
        }
    }

    /// An attempt was made (`{"attempt_id"}`): tail it until it ends (exit status 0 only on success), or print its id.
    static func started(_ r: JSON, client: APIClient, options: ClientOptions, follow: Bool, noColor: Bool) async throws {
        guard let id = r["attempt_id"]?.stringValue else { throw CLIError(message: "unexpected reply: \(r.text)") }
        if follow {
            if !options.json { FileHandle.standardError.write(Data("attempt \(id)\n".utf8)) }
            let code = try await LogTail(client: client, attemptID: id, since: 0, json: options.json,
                                         color: LogTail.wantsColor(noColor: noColor)).run()
            throw ExitCode(code)
        }
        if options.json { options.emit(r) } else { print(id) }
    }

    struct Attempts: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Attempts.", subcommands: [Start.self, Status.self, List.self, Tail.self, Cancel.self, Rerun.self])

        struct Start: AsyncParsableCommand {
            static let configuration = CommandConfiguration(abstract: "Start an attempt of a workflow; prints its id.")
            @OptionGroup var options: ClientOptions
            @Argument(help: "Workflow name or id.") var workflow: String
            @Option(help: "Input state: a JSON object, @FILE or - for standard input.") var input: String = "{}"
            @Flag(help: "Then tail its log until it ends (exit status 0 only on success).") var follow = false
            @Flag(help: "With --follow: no colour.") var noColor = false

            func run() async throws {
                try await runCLI {
                    let text = try argumentText(input)
                    let parsed: JSON
                    do { parsed = try JSON.parse(text) } catch { throw CLIError(message: "--input is not valid JSON: \(error)") }
                    guard case .object = parsed else { throw CLIError(message: "--input must be a JSON object") }
                    let client = try options.client()
                    let r = try await client.call("POST", "/api/attempts", body: (["workflow": .string(workflow), "input": parsed] as JSON).encoded())
                    try await LightningCommand.started(r, client: client, options: options, follow: follow, noColor: noColor)
                }
            }
        }

        struct Status: AsyncParsableCommand {
            static let configuration = CommandConfiguration(abstract: "Show an attempt, its steps and its log.")
            @OptionGroup var options: ClientOptions
            @Argument(help: "Attempt id.") var id: String
            @Flag(help: "Only the attempt, not its log.") var noLogs = false

            func run() async throws {
                try await runCLI {
                    let client = try options.client()
                    let a = try await client.call("GET", "/api/attempts/\(id)")
                    if options.json { options.emit(a); return }
                    print("\(a["id"]?.cell ?? id) \(a["workflow"]?.cell ?? "") \(a["state"]?.cell ?? "")"
                          + (a["error_type"].flatMap { $0 == .null ? nil : " \($0.cell)" } ?? "")
                          + (a["error_message"].flatMap { $0 == .null ? nil : " \($0.cell)" } ?? ""))
                    let chain = a["work_order_attempts"]?.arrayValue ?? []
                    if chain.count > 1 {
                        // Retries: every attempt of the work order, this one marked.
                        for c in chain {
                            let mark = c["id"] == a["id"] ? "*" : " "
                            print(" \(mark)attempt \(c["attempt_number"]?.cell ?? "?") \(c["id"]?.cell ?? "") \(c["state"]?.cell ?? "")"
                                  + (c["error_type"].flatMap { $0 == .null ? nil : " \($0.cell)" } ?? ""))
                        }
                    }
                    for s in a["steps"]?.arrayValue ?? [] {
                        print("  step \(s["job_name"].flatMap { $0 == .null ? nil : $0.cell } ?? s["job_id"]?.cell ?? "") \(s["reason"]?.cell ?? "running")\(s["error_type"].flatMap { $0 == .null ? nil : " \($0.cell)" } ?? "")")
                    }
                    if noLogs { return }
                    var since: Int64 = 0
                    while true {
                        let page = try await client.call("GET", "/api/attempts/\(id)/logs", query: ["since": "\(since)", "limit": "5000"])
                        let lines = page["logs"]?.arrayValue ?? []
                        for l in lines { print("\(l["seq"]?.cell ?? "")\t\(l["level"]?.cell ?? "")\t\(l["source"]?.cell ?? "")\t\(l["message"]?.cell ?? "")") }
                        guard let last = lines.last?["seq"]?.intValue, lines.count == 5000 else { break }
                        since = last
                    }
                }
            }
        }

        struct List: AsyncParsableCommand {
            static let configuration = CommandConfiguration(abstract: "List recent attempts, newest first.")
            @OptionGroup var options: ClientOptions
            @Option(help: "Only attempts in this state.") var state: String?
            @Option(help: "Only attempts of this workflow (name or id).") var workflow: String?
            @Option(help: "Only attempts created at or after this time (ISO 8601, UTC).") var since: String?
            @Option(help: "Only attempts created before this time (ISO 8601, UTC).") var until: String?
            @Option(name: .customLong("grep"), help: "Only attempts with a log line containing this text.") var text: String?
            @Option(help: "How many (1-1000).") var limit: Int = 50

            func run() async throws {
                try await runCLI {
                    var query = ["limit": "\(limit)"]
                    if let state { query["state"] = state }
                    if let workflow { query["workflow"] = workflow }
                    if let since { query["since"] = since }
                    if let until { query["until"] = until }
                    if let text { query["q"] = text }
                    let r = try await options.client().call("GET", "/api/attempts", query: query)
                    if options.json { options.emit(r); return }
                    let rows = (r["attempts"]?.arrayValue ?? []).map { a in
                        [a["id"]?.cell ?? "", a["workflow"]?.cell ?? "", a["state"]?.cell ?? "", a["worker"]?.cell ?? "-",
                         a["inserted_at"]?.cell ?? "", a["error_type"]?.cell ?? "-"]
                    }
                    print(table(["ID", "WORKFLOW", "STATE", "WORKER", "CREATED", "ERROR"], rows))
                }
            }
        }

        struct Tail: AsyncParsableCommand {
            static let configuration = CommandConfiguration(
                abstract: "Print an attempt's log, then its live lines, until it ends.",
                discussion: "Exit status: 0 when the attempt succeeded, 1 for any other final state or an error.")
            @OptionGroup var options: ClientOptions
            @Argument(help: "Attempt id.") var id: String
            @Option(help: "Start after this log seq (0: from the first line).") var since: Int64 = 0
            @Flag(help: "No colour, even on a terminal (also NO_COLOR).") var noColor = false

            func validate() throws { if since < 0 { throw ValidationError("--since must be 0 or more") } }

            func run() async throws {
                try await runCLI {
                    let code = try await LogTail(client: try options.client(), attemptID: id, since: since, json: options.json,
                                                 color: LogTail.wantsColor(noColor: noColor)).run()
                    throw ExitCode(code)
                }
            }
        }

        struct Cancel: AsyncParsableCommand {
            static let configuration = CommandConfiguration(abstract: "Cancel an attempt.")
            @OptionGroup var options: ClientOptions
            @Argument(help: "Attempt id.") var id: String
            func run() async throws {
                try await runCLI {
                    let r = try await options.client().call("POST", "/api/attempts/\(id)/cancel")
                    if options.json { options.emit(r); return }
                    print("\(id): \(r["state"]?.cell ?? "") (\(r["message"]?.cell ?? ""))")
                }
            }
        }

        struct Rerun: AsyncParsableCommand {
            static let configuration = CommandConfiguration(
                abstract: "Run a finished attempt's work order again, as a new attempt; prints its id.",
                discussion: "Without --from it starts from the beginning with the work order's input. With --from STEP it "
                    + "starts at that step's job with the input that step had (STEP: a step id, job id or job name of this attempt).")
            @OptionGroup var options: ClientOptions
            @Argument(help: "Attempt id.") var id: String
            @Option(help: "The step to start from.") var from: String?
            @Flag(help: "Then tail the new attempt's log until it ends (exit status 0 only on success).") var follow = false
            @Flag(help: "With --follow: no colour.") var noColor = false

            func run() async throws {
                try await runCLI {
                    let client = try options.client()
                    let body: JSON = from.map { ["from": .string($0)] } ?? [:]
                    let r = try await client.call("POST", "/api/attempts/\(id)/rerun", body: body.encoded())
                    try await LightningCommand.started(r, client: client, options: options, follow: follow, noColor: noColor)
                }
            }
        }
    }

    struct Workers: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Workers: list, register, revoke, and fleet control (drain, pause, resume).",
            subcommands: [List.self, Register.self, Revoke.self, Drain.self, Pause.self, Resume.self])

        struct List: AsyncParsableCommand {
            static let configuration = CommandConfiguration(abstract: "List the workers Lightning has seen.")
            @OptionGroup var options: ClientOptions
            func run() async throws {
                try await runCLI {
                    let r = try await options.client().call("GET", "/api/workers")
                    if options.json { options.emit(r); return }
                    let rows = (r["workers"]?.arrayValue ?? []).map { w in
                        [w["name"]?.cell ?? "", w["status"]?.cell ?? "-",
                         "\(w["current_attempts"]?.cell ?? "0")/\(w["capacity"]?.cell ?? "?")", w["version"]?.cell ?? "-",
                         w["host"]?.cell ?? "-", (w["labels"]?.arrayValue ?? []).compactMap(\.stringValue).joined(separator: ",").ifEmpty("-"),
                         w["deployment_id"]?.cell ?? "-", w["auth_mode"]?.cell ?? "-", w["credential_expires_at"]?.cell ?? "-",
                         w["last_seen_at"]?.cell ?? "-"]
                    }
                    print(table(["NAME", "STATUS", "RUNNING", "VERSION", "HOST", "LABELS", "DEPLOYMENT", "AUTH", "CREDENTIAL EXPIRES",
                                 "LAST SEEN"], rows))
                }
            }
        }

        struct Register: AsyncParsableCommand {
            static let configuration = CommandConfiguration(
                abstract: "Mint a registration token for a worker; prints it once.",
                discussion: """
                    Start the worker with `runtime-worker --name NAME --registration-token TOKEN`, or POST it to a waiting \
                    worker's admin port: `curl -d '{"token":"TOKEN"}' http://WORKER:PORT/register`. It is used once; the \
                    worker then holds a short-lived auth token it renews by itself.
                    """)
            @OptionGroup var options: ClientOptions
            @Argument(help: "The worker's name (its --name; by default its host name).") var name: String
            @Option(help: "How long the token may wait to be used: 90s, 30m, 1h, 2d (default 1h).") var ttl: String = "1h"
            func run() async throws {
                try await runCLI {
                    guard let seconds = parseDuration(ttl) else { throw CLIError(message: "--ttl must look like 90s, 30m, 1h or 2d") }
                    let encoded = pathComponent(name)
                    let r = try await options.client().call("POST", "/api/workers/\(encoded)/registration",
                                                            body: (["ttl_seconds": .double(seconds)] as JSON).encoded())
                    if options.json { options.emit(r); return }
                    print(r["token"]?.stringValue ?? "")
                    FileHandle.standardError.write(Data("registration token for worker \(name), valid until \(r["expires_at"]?.cell ?? "?"), used once; shown only now\n".utf8))
                }
            }
        }

        struct Revoke: AsyncParsableCommand {
            static let configuration = CommandConfiguration(
                abstract: "Revoke a worker: its socket is closed and its credentials (and the shared secret, for its name) refused from now on.")
            @OptionGroup var options: ClientOptions
            @Argument(help: "The worker's name.") var name: String
            func run() async throws {
                try await runCLI {
                    let r = try await options.client().call("POST", "/api/workers/\(pathComponent(name))/revoke")
                    if options.json { options.emit(r); return }
                    print("revoked worker \(name); \(r["sockets_closed"]?.cell ?? "0") socket(s) closed")
                }
            }
        }

        struct Selection: ParsableArguments {
            @Argument(help: "Worker names.") var names: [String] = []
            @Flag(help: "Every connected worker.") var all = false
            @Option(help: "Every connected worker whose deployment id is not this one (rotate away a stale launch configuration).")
            var deploymentNot: String?

            func validate() throws {
                let given = (names.isEmpty ? 0 : 1) + (all ? 1 : 0) + (deploymentNot == nil ? 0 : 1)
                if given != 1 { throw ValidationError("say which workers: NAME..., --all or --deployment-not ID (one of them)") }
            }

            var body: [String: JSON] {
                if all { return ["all": true] }
                if let deploymentNot { return ["deployment_not": .string(deploymentNot)] }
                return ["workers": .array(names.map { .string($0) })]
            }
        }

        static func control(_ options: ClientOptions, _ selection: Selection, _ action: String, _ extra: [String: JSON] = [:]) async throws {
            var body = selection.body.merging(extra) { a, _ in a }
            body["action"] = .string(action)
            let r = try await options.client().call("POST", "/api/workers/control", body: JSON.object(body).encoded())
            if options.json { options.emit(r); return }
            let rows = (r["workers"]?.arrayValue ?? []).map { [$0["name"]?.cell ?? "", $0["result"]?.cell ?? ""] }
            print(rows.isEmpty ? "no connected worker matched" : table(["NAME", "RESULT"], rows))
        }

        struct Drain: AsyncParsableCommand {
            static let configuration = CommandConfiguration(
                abstract: "Drain workers: they stop claiming; by the deadline their running attempts have finished, or are stopped (finish), put back as new attempts (requeue) or cancelled (cancel); then they exit 0, or stay connected and idle with --stay.")
            @OptionGroup var options: ClientOptions
            @OptionGroup var selection: Selection
            @Option(help: "How long running attempts get: 0s, 90s, 10m, 1h (default 10m).") var deadline: String = "10m"
            @Option(help: "For attempts still running at the deadline: finish (stop them), requeue or cancel.") var policy: String = "finish"
            @Flag(help: "Stay connected and idle afterwards instead of exiting (resume brings it back).") var stay = false
            func validate() throws {
                if !["finish", "requeue", "cancel"].contains(policy) { throw ValidationError("--policy must be finish, requeue or cancel") }
                if parseDuration(deadline, allowZero: true) == nil { throw ValidationError("--deadline must look like 0s, 90s, 10m or 1h") }
            }
            func run() async throws {
                try await runCLI {
                    try await Workers.control(options, selection, "drain", [
                        "policy": .string(policy), "deadline_seconds": .double(parseDuration(deadline, allowZero: true) ?? 600), "stay": .bool(stay),
                    ])
                }
            }
        }

        struct Pause: AsyncParsableCommand {
            static let configuration = CommandConfiguration(abstract: "Pause workers: they claim nothing more; running attempts go on.")
            @OptionGroup var options: ClientOptions
            @OptionGroup var selection: Selection
            func run() async throws {
                try await runCLI { try await Workers.control(options, selection, "pause") }
            }
        }

        struct Resume: AsyncParsableCommand {
            static let configuration = CommandConfiguration(abstract: "Resume paused (or --stay drained) workers.")
            @OptionGroup var options: ClientOptions
            @OptionGroup var selection: Selection
            func run() async throws {
                try await runCLI { try await Workers.control(options, selection, "resume") }
            }
        }
    }

    /// "90s", "30m", "1h", "2d" or plain seconds.
    static func parseDuration(_ text: String, allowZero: Bool = false) -> Double? {
        let units: [Character: Double] = ["s": 1, "m": 60, "h": 3600, "d": 86400]
        var number = Substring(text.trimmingCharacters(in: .whitespaces)), scale = 1.0
        if let last = number.last, let unit = units[last] {
            scale = unit
            number = number.dropLast()
        }
        guard let n = Double(number), n.isFinite, allowZero ? n >= 0 : n > 0 else { return nil }
        return n * scale
    }

    static func pathComponent(_ text: String) -> String {
        text.addingPercentEncoding(withAllowedCharacters: .urlPathAllowed.subtracting(["/"])) ?? text
    }

    struct Tokens: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Operator tokens (admin only).", subcommands: [Create.self, Revoke.self, List.self])

        struct Create: AsyncParsableCommand {
            static let configuration = CommandConfiguration(
                abstract: "Create an operator token; prints the secret once.",
                discussion: """
                    With --database the token is written straight into that database (for a server that is down, \
                    or when no admin token is left); otherwise it is created through the API.
                    """)
            @OptionGroup var options: ClientOptions
            @Argument(help: "A name for the token (who or what uses it).") var name: String
            @Option(help: "viewer (read, watch) or admin (also create, start, cancel).") var role: String = "viewer"
            @Option(help: "Create it directly in this database (a SQLite file or a PostgreSQL URL) instead of through the API.") var database: String?

            func validate() throws {
                if OperatorToken.Role(rawValue: role) == nil { throw ValidationError("--role must be viewer or admin") }
            }

            func run() async throws {
                try await runCLI {
                    let secret: String, id: String
                    if let database {
                        let store = try SQLStore.open(database, cipher: nil)
                        let made = try await store.createOperatorToken(name: name, role: OperatorToken.Role(rawValue: role)!)
                        (secret, id) = (made.secret, made.record.id)
                        if options.json { options.emit(["id": .string(id), "name": .string(name), "role": .string(role), "token": .string(secret)]) ; return }
                    } else {
                        let r = try await options.client().call("POST", "/api/tokens", body: (["name": .string(name), "role": .string(role)] as JSON).encoded())
                        if options.json { options.emit(r); return }
                        (secret, id) = (r["token"]?.stringValue ?? "", r["id"]?.cell ?? "")
                    }
                    print(secret)
                    FileHandle.standardError.write(Data("token \(id) (\(name), \(role)) created; the secret above is shown only once\n".utf8))
                }
            }
        }

        struct Revoke: AsyncParsableCommand {
            static let configuration = CommandConfiguration(abstract: "Revoke a token by id or name; its sockets are closed.")
            @OptionGroup var options: ClientOptions
            @Argument(help: "Token id or name.") var token: String
            func run() async throws {
                try await runCLI {
                    let encoded = token.addingPercentEncoding(withAllowedCharacters: .urlPathAllowed.subtracting(["/"])) ?? token
                    let r = try await options.client().call("DELETE", "/api/tokens/\(encoded)")
                    if options.json { options.emit(r); return }
                    print("revoked \(r["revoked"]?.cell ?? "0") token(s)")
                }
            }
        }

        struct List: AsyncParsableCommand {
            static let configuration = CommandConfiguration(abstract: "List tokens (never their secrets).")
            @OptionGroup var options: ClientOptions
            func run() async throws {
                try await runCLI {
                    let r = try await options.client().call("GET", "/api/tokens")
                    if options.json { options.emit(r); return }
                    let rows = (r["tokens"]?.arrayValue ?? []).map { t in
                        [t["id"]?.cell ?? "", t["name"]?.cell ?? "", t["role"]?.cell ?? "", t["revoked"] == .bool(true) ? "revoked" : "live",
                         t["last_used_at"]?.cell ?? "-"]
                    }
                    print(table(["ID", "NAME", "ROLE", "STATUS", "LAST USED"], rows))
                }
            }
        }
    }

    struct Credentials: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Credentials.", subcommands: [Set.self])

        struct Set: AsyncParsableCommand {
            static let configuration = CommandConfiguration(
                abstract: "Store a credential (a JSON object); Lightning encrypts it with LIGHTNING_ENCRYPTION_KEY.")
            @OptionGroup var options: ClientOptions
            @Argument(help: "Credential name, as jobs refer to it.") var name: String
            @Option(help: "The JSON object, @FILE, or - for standard input.") var body: String

            func run() async throws {
                try await runCLI {
                    let text = try argumentText(body)
                    guard case .object = (try? JSON.parse(text)) ?? .null else { throw CLIError(message: "--body must be a JSON object") }
                    let r = try await options.client().call("PUT", "/api/credentials/\(name)", body: Array(text.utf8))
                    if options.json { options.emit(r); return }
                    print("credential \(name) stored (\(r["id"]?.cell ?? ""))")
                }
            }
        }
    }
}
