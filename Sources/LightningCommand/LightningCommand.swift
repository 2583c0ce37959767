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
        subcommands: [Serve.self, Workflows.self, Attempts.self, Workers.self, Tokens.self, Credentials.self])
}

/// Options every subcommand that touches the database shares.
struct DatabaseOptions: ParsableArguments {
    @Option(name: .long, help: """
        A SQLite database file, or a PostgreSQL URL (postgres://user@host:5432/db) for several replicas on one \
        database (env LIGHTNING_DATABASE).
        """)
    var database: String = ProcessInfo.processInfo.environment["LIGHTNING_DATABASE"] ?? "./data/lightning.db"

    func open() throws -> SQLStore {
        let key = ProcessInfo.processInfo.environment[CredentialCipher.environmentVariable]
        return try SQLStore.open(database, cipher: try key.map { try CredentialCipher(base64Key: $0) })
    }
}

extension LightningCommand {
    struct Serve: AsyncParsableCommand {
        static let configuration = CommandConfiguration(
            abstract: "Run Lightning: the worker and operator sockets, the HTTP API, webhooks, cron and the janitor.")

        @OptionGroup var db: DatabaseOptions
        @Option(help: "Address to listen on (env LIGHTNING_HOST).")
        var host: String = ProcessInfo.processInfo.environment["LIGHTNING_HOST"] ?? "127.0.0.1"
        @Option(help: "Port; 0 lets the kernel pick (env PORT).")
        var port: Int = Int(ProcessInfo.processInfo.environment["PORT"] ?? "") ?? 4000
        @Option(help: "Seconds a worker may be gone before its attempts are lost.")
        var graceSeconds: Double = 30
        @Option(help: "Where development keys live when the key variables are not set.")
        var keysDir: String = "keys"
        @Option(help: "Largest WebSocket message, in bytes. Plans handed to workers lower payload_limit_mb and log_payload_limit_mb to what fits: (this - 1 MB) / 2, for quotes escaped.")
        var maxMessageBytes: Int = Wire.maxMessageBytes
        @Option(help: "Largest HTTP request body (webhooks, the API), in bytes.")
        var maxHttpBodyBytes: Int = 11_000_000
        @Option(help: "Seconds of silence after which a socket is closed.")
        var idleTimeout: Int = 60
        @Flag(help: "Refuse worker tokens that have no exp claim.")
        var requireWorkerTokenExpiry = false
        @Flag(help: "Refuse workers that authenticate with WORKER_SECRET: only registered workers connect (docs/workers.md).")
        var noSharedSecret = false
        @Option(help: "Seconds a registered worker's auth token lasts; it is renewed over the socket at half that (default 1200).")
        var workerTokenTtl: Double = 1200
        @Option(help: "A YAML file of settings sent to workers at join, by group (`default:` for workers that name none): capacity, shutdown-timeout, shutdown-policy. A worker's own flags, environment and config file come first.")
        var workerGroups: String?
        @Option(help: "TLS certificate (PEM); with --tls-key serves wss/https.")
        var tlsCert: String?
        @Option(help: "TLS private key (PEM).")
        var tlsKey: String?
        @Option(help: "CA for client certificates (mutual TLS).")
        var tlsCA: String?
        @Flag(help: "Require client certificates signed by --tls-ca.")
        var requireClientCert = false
        @Option(help: "Bytes queued for one operator viewer before it is closed as too slow (it resumes by itself).")
        var viewerQueueBytes: Int = 4 * 1024 * 1024
        @Option(help: "Bytes queued for all operator viewers together; past it, viewers with a backlog are closed as too slow (they resume by themselves).")
        var viewersQueueBytes: Int = 64 * 1024 * 1024
        @Option(help: "Connections that have not finished their first request's headers held at once; past it the oldest of them is closed for each new one (slow-client floods; default 1024).")
        var maxUnfinishedRequests = 1024
        @Flag(help: "Do not serve GET /metrics.")
        var noMetrics = false
        @Flag(help: "Do not run the cron scheduler here (another Lightning on this database does).")
        var noCron = false
        @Flag(help: "Do not serve the operator console at / (the API and the operator socket stay).")
        var noConsole = false
        @Option(help: "Failed token checks (operator, worker, console sign-in) allowed per client address before it gets 429 (default 20; 0: no limit).")
        var authFailureBurst = 20
        @Option(help: "Failed token checks forgiven per second per address after the burst (default 1).")
        var authFailuresPerSecond = 1.0
        @Option(help: "A proxy's address whose X-Forwarded-For names the client for that limit (repeat for several).")
        var trustedProxy: [String] = []
        @Option(help: "Log level: trace, debug, info, notice, warning, error or critical (env LOG_LEVEL; default info). No level logs secrets.")
        var logLevel: String?
        @Option(help: "The URL browsers reach Lightning at, behind a proxy (e.g. https://ops.example.com): the console's requests must come from it, and its cookie is Secure when it is https.")
        var publicURL: String?

        func validate() throws {
            do { _ = try LogLevelSetting.parse(logLevel) } catch { throw ValidationError("--log-level: \(error)") }
            if authFailureBurst < 0 { throw ValidationError("--auth-failure-burst must be 0 or more") }
            if !(authFailuresPerSecond > 0) { throw ValidationError("--auth-failures-per-second must be more than 0") }
            if (tlsCert == nil) != (tlsKey == nil) { throw ValidationError("--tls-cert and --tls-key go together") }
            if requireClientCert && tlsCA == nil { throw ValidationError("--require-client-cert needs --tls-ca") }
            if !(0...65535).contains(port) { throw ValidationError("--port must be 0...65535") }
            if maxUnfinishedRequests < 1 { throw ValidationError("--max-unfinished-requests must be 1 or more") }
            if viewerQueueBytes < 1 || viewersQueueBytes < 1 { throw ValidationError("--viewer-queue-bytes and --viewers-queue-bytes must be 1 or more") }
            if !(workerTokenTtl >= 2 && workerTokenTtl <= 86400) { throw ValidationError("--worker-token-ttl must be from 2 s to a day") }
            if let publicURL, !(publicURL.hasPrefix("http://") || publicURL.hasPrefix("https://")) || publicURL.contains(" ") {
                throw ValidationError("--public-url must be an http:// or https:// URL, such as https://ops.example.com")
            }
        }

        func run() async throws {
            do {
                LogLevelSetting.bootstrap(try LogLevelSetting.resolve(flag: logLevel, environment: ProcessInfo.processInfo.environment))
            } catch { throw ValidationError("\(error)") }
            let logger = Logger(label: "lightning")
            // Every worker and viewer is a socket: allow as many as the hard limit does.
            if let raised = FileDescriptorLimit.raiseToHard() {
                logger.debug("open files limit raised", metadata: ["from": "\(raised.from)", "to": "\(raised.to)"])
            }
            // Read before anything is made on disk: a bad file stops here.
            var groupDefaults: [String: JSON] = [:]
            if let workerGroups {
                let text: String
                do { text = try String(contentsOfFile: workerGroups, encoding: .utf8) } catch {
                    throw ValidationError("cannot read --worker-groups \(workerGroups): \(error.localizedDescription)")
                }
                do { groupDefaults = try WorkerGroupDefaults.parse(yaml: text) } catch {
                    throw ValidationError("--worker-groups \(workerGroups): \(error)")
                }
            }
            let keys = try KeySetup.load(environment: ProcessInfo.processInfo.environment, keysDirectory: keysDir, logger: logger)
            var config = LightningConfiguration(attemptSigningKey: keys.attemptSigningKey, workerSecretKey: keys.workerSecretKey)
            config.host = host
            config.port = port
            config.databasePath = SQLStore.redacted(db.database)
            config.graceSeconds = graceSeconds
            config.requireWorkerTokenExpiry = requireWorkerTokenExpiry
            config.sharedSecretEnabled = !noSharedSecret
            config.workerTokenLifetimeSeconds = workerTokenTtl
            config.workerGroupDefaults = groupDefaults
            config.testExitOnAttemptJoin = ProcessInfo.processInfo.environment["LIGHTNING_TEST_EXIT_ON_ATTEMPT_JOIN"] == "1"
            config.channel.maxMessageBytes = maxMessageBytes
            config.channel.idleTimeoutSeconds = idleTimeout
            config.channel.maxHTTPBodyBytes = maxHttpBodyBytes
            config.channel.maxUnfinishedRequests = maxUnfinishedRequests
            if let tlsCert, let tlsKey {
                config.channel.tls = TLSConfiguration(certificatePath: tlsCert, privateKeyPath: tlsKey, caPath: tlsCA,
                                                      requireClientCertificate: requireClientCert)
            }
            config.metricsEnabled = !noMetrics
            config.viewerMaxQueuedBytes = viewerQueueBytes
            config.viewersMaxQueuedBytes = viewersQueueBytes
            config.cronEnabled = !noCron
            config.consoleEnabled = !noConsole
            config.publicURL = publicURL
            config.authFailureBurst = authFailureBurst
            config.authFailuresForgivenPerSecond = authFailuresPerSecond
            config.trustedProxies = trustedProxy
            let store = try db.open()
            try await OperatorBootstrap.firstAdminToken(store: store, keysDirectory: keysDir, logger: logger)
            let lightning = try Lightning(configuration: config, store: store, logger: logger)
            // Listening first: the janitor and cron run only once the server does (a port in use stops serve before
            // either has touched the database).
            try lightning.start(runningBackgroundServices: false)
            // A graceful shutdown stops the services in reverse order: the janitor and cron first, the server last.
            let group = ServiceGroup(configuration: Lightning.boundingShutdown(.init(
                services: [LightningService(lightning: lightning)] + lightning.backgroundServices,
                gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)))
            try await group.run()
        }
    }
}

/// Keeps Lightning (started already) until SIGTERM/SIGINT, then shuts it down gracefully.
struct LightningService: Service {
    let lightning: Lightning
    func run() async throws {
        try? await gracefulShutdown()
        await lightning.shutdown()
    }
}
