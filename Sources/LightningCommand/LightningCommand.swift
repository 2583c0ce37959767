import ArgumentParser
import Channels
import Foundation
import Lightning
import Logging
import ServiceLifecycle

@main
struct LightningCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lightning",
        abstract: "The lightning-runtime orchestrator.",
        version: RuntimeVersion.current,
        subcommands: [Serve.self, Workflows.self, Attempts.self, Credentials.self])
}

/// Options every subcommand that touches the database shares.
struct DatabaseOptions: ParsableArguments {
    @Option(name: .long, help: "SQLite database file (env LIGHTNING_DATABASE).")
    var database: String = ProcessInfo.processInfo.environment["LIGHTNING_DATABASE"] ?? "./data/lightning.db"

    func open() throws -> SQLiteStore {
        let key = ProcessInfo.processInfo.environment[CredentialCipher.environmentVariable]
        return try SQLiteStore(path: database, cipher: try key.map { try CredentialCipher(base64Key: $0) })
    }
}

extension LightningCommand {
    struct Serve: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Run Lightning: the worker socket, webhooks, the janitor.")

        @OptionGroup var db: DatabaseOptions
        @Option(help: "Address to listen on (env LIGHTNING_HOST).")
        var host: String = ProcessInfo.processInfo.environment["LIGHTNING_HOST"] ?? "127.0.0.1"
        @Option(help: "Port; 0 lets the kernel pick (env PORT).")
        var port: Int = Int(ProcessInfo.processInfo.environment["PORT"] ?? "") ?? 4000
        @Option(help: "Seconds a worker may be gone before its attempts are lost.")
        var graceSeconds: Double = 30
        @Option(help: "Where development keys live when the key variables are not set.")
        var keysDir: String = "keys"
        @Option(help: "Largest WebSocket message, in bytes.")
        var maxMessageBytes: Int = 11_000_000
        @Option(help: "Seconds of silence after which a socket is closed.")
        var idleTimeout: Int = 60
        @Flag(help: "Refuse worker tokens that have no exp claim.")
        var requireWorkerTokenExpiry = false
        @Option(help: "TLS certificate (PEM); with --tls-key serves wss/https.")
        var tlsCert: String?
        @Option(help: "TLS private key (PEM).")
        var tlsKey: String?
        @Option(help: "CA for client certificates (mutual TLS).")
        var tlsCA: String?
        @Flag(help: "Require client certificates signed by --tls-ca.")
        var requireClientCert = false

        func validate() throws {
            if (tlsCert == nil) != (tlsKey == nil) { throw ValidationError("--tls-cert and --tls-key go together") }
            if requireClientCert && tlsCA == nil { throw ValidationError("--require-client-cert needs --tls-ca") }
            if !(0...65535).contains(port) { throw ValidationError("--port must be 0...65535") }
        }

        func run() async throws {
            LoggingSystem.bootstrap { StreamLogHandler.standardError(label: $0) }
            let logger = Logger(label: "lightning")
            let keys = try KeySetup.load(environment: ProcessInfo.processInfo.environment, keysDirectory: keysDir, logger: logger)
            var config = LightningConfiguration(attemptSigningKey: keys.attemptSigningKey, workerSecretKey: keys.workerSecretKey)
            config.host = host
            config.port = port
            config.databasePath = db.database
            config.graceSeconds = graceSeconds
            config.requireWorkerTokenExpiry = requireWorkerTokenExpiry
            config.channel.maxMessageBytes = maxMessageBytes
            config.channel.idleTimeoutSeconds = idleTimeout
            if let tlsCert, let tlsKey {
                config.channel.tls = TLSConfiguration(certificatePath: tlsCert, privateKeyPath: tlsKey, caPath: tlsCA,
                                                      requireClientCertificate: requireClientCert)
            }
            let lightning = try Lightning(configuration: config, store: try db.open(), logger: logger)
            let group = ServiceGroup(configuration: .init(
                services: [LightningService(lightning: lightning)], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
            try await group.run()
        }
    }

    struct Workflows: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Workflows.", subcommands: [Apply.self, List.self])

        struct Apply: AsyncParsableCommand {
            static let configuration = CommandConfiguration(abstract: "Create or update a workflow from a YAML or JSON file.")
            @OptionGroup var db: DatabaseOptions
            @Argument(help: "The workflow file.") var file: String
            func run() async throws {
                let text = try String(contentsOfFile: file, encoding: .utf8)
                let definition = try WorkflowDefinition.parse(text)
                let applied = try await db.open().applyWorkflow(definition)
                print("workflow \(definition.name): version \(applied.version) (\(applied.workflowID))")
            }
        }

        struct List: AsyncParsableCommand {
            static let configuration = CommandConfiguration(abstract: "List workflows.")
            @OptionGroup var db: DatabaseOptions
            func run() async throws {
                for w in try await db.open().workflows() {
                    print("\(w.name)\tv\(w.version)\t\(w.webhookPaths.map { "/i/\($0)" }.joined(separator: " "))")
                }
            }
        }
    }

    struct Attempts: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Attempts.", subcommands: [Start.self, Status.self])

        struct Start: AsyncParsableCommand {
            static let configuration = CommandConfiguration(abstract: "Start an attempt of a workflow.")
            @OptionGroup var db: DatabaseOptions
            @Argument(help: "Workflow name.") var workflow: String
            @Option(help: "Input state as a JSON object.") var input: String = "{}"
            func run() async throws {
                let created = try await db.open().createWorkOrder(workflow: workflow, input: Array(input.utf8))
                print(created.attemptID)
            }
        }

        struct Status: AsyncParsableCommand {
            static let configuration = CommandConfiguration(abstract: "Show an attempt and its log.")
            @OptionGroup var db: DatabaseOptions
            @Argument(help: "Attempt id.") var id: String
            func run() async throws {
                let store = try db.open()
                let a = try await store.attempt(id)
                print("\(a.id) \(a.workflowName) \(a.state.rawValue)\(a.errorType.map { " \($0)" } ?? "") \(a.errorMessage ?? "")")
                for line in try await store.logs(attemptID: id, since: 0, limit: 100_000) {
                    print("\(line.seq)\t\(line.level)\t\(line.source)\t\(line.message)")
                }
            }
        }
    }
}

extension LightningCommand {
    struct Credentials: AsyncParsableCommand {
        static let configuration = CommandConfiguration(abstract: "Credentials.", subcommands: [Set.self])

        struct Set: AsyncParsableCommand {
            static let configuration = CommandConfiguration(
                abstract: "Store a credential (a JSON object), encrypted with LIGHTNING_ENCRYPTION_KEY.")
            @OptionGroup var db: DatabaseOptions
            @Argument(help: "Credential name, as jobs refer to it.") var name: String
            @Option(help: "The JSON object, or @FILE to read it from a file.") var body: String

            func run() async throws {
                let text = body.hasPrefix("@") ? try String(contentsOfFile: String(body.dropFirst()), encoding: .utf8) : body
                let id = try await db.open().setCredential(name: name, body: Array(text.utf8))
                print("credential \(name) stored (\(id))")
            }
        }
    }
}

/// Runs Lightning until SIGTERM/SIGINT, then shuts it down gracefully.
struct LightningService: Service {
    let lightning: Lightning
    func run() async throws {
        try lightning.start()
        try? await gracefulShutdown()
        await lightning.shutdown()
    }
}
