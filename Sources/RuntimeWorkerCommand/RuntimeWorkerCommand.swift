import Channels
import ArgumentParser
import Foundation
import JWT
import Logging
import RuntimeWorker
import ServiceLifecycle
import Yams

/// Settings are layered: flags over environment variables over a YAML `--config` file over defaults.
@main
struct RuntimeWorkerCommand: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "runtime-worker",
        abstract: "The lightning-runtime worker: claims attempts from Lightning and runs their steps in a sandbox.",
        discussion: """
            Environment: LIGHTNING_URL (or WORKER_LIGHTNING_SERVICE_URL), WORKER_SECRET, LIGHTNING_PUBLIC_KEY (or \
            WORKER_LIGHTNING_PUBLIC_KEY; base64 of a PEM). Without the variables, a development key set in --keys-dir \
            (made by `lightning serve` or `gen-worker-keys --out keys`) is used. A YAML --config file may set any \
            option by its long name (e.g. `capacity: 4`).
            """,
        version: RuntimeVersion.current)

    @Option(help: "Lightning's worker socket, e.g. ws://127.0.0.1:4000/worker (env LIGHTNING_URL or WORKER_LIGHTNING_SERVICE_URL); /websocket is added when missing.")
    var lightning: String?
    @Option(help: "Attempts run at once (env WORKER_CAPACITY; default: from the machine, two per core and no more than memory / 500 MB).")
    var capacity: Int?
    @Option(help: "This worker's name (env WORKER_NAME; default: host name and pid).")
    var name: String?
    @Option(help: "Step isolation: auto, namespaces or none (env WORKER_SANDBOX; default auto). auto refuses to run steps when namespaces are unavailable.")
    var sandbox: String?
    @Option(help: "Steps' network: none or host (default none).")
    var stepNetwork: String?
    @Option(help: "Where steps' work directories are made (default ./data/worker).")
    var workDir: String?
    @Option(help: "Seconds running attempts get to finish on SIGTERM before they are stopped (default 30).")
    var shutdownTimeout: Double?
    @Option(help: "Where development keys are looked up (default keys).")
    var keysDir: String?
    @Option(help: "A YAML file of settings.")
    var config: String?
    @Option(help: "Serve GET /livez and GET /metrics on this port (env WORKER_ADMIN_PORT; off by default; 0: the kernel picks).")
    var adminPort: Int?
    @Option(help: "Address of the admin port (env WORKER_ADMIN_HOST; default 127.0.0.1).")
    var adminHost: String?
    @Option(help: "Seconds GET /livez stays 200 while reconnecting to Lightning (env WORKER_LIVEZ_GRACE; default 60).")
    var livezGrace: Double?
    @Option(help: "Log level: trace, debug, info, notice, warning, error or critical (env LOG_LEVEL; default info). No level logs secrets.")
    var logLevel: String?
    @Flag(help: "Run attempts without verifying their tokens. Dangerous; for development only.")
    var insecureSkipTokenVerification = false

    func run() async throws {
        let env = ProcessInfo.processInfo.environment
        do { LogLevelSetting.bootstrap(try LogLevelSetting.resolve(flag: logLevel, environment: env)) } catch {
            throw ValidationError("\(error)")
        }
        let logger = Logger(label: "runtime-worker")
        var file: [String: String] = [:]
        if let config {
            let text = try String(contentsOfFile: config, encoding: .utf8)
            guard let map = try Yams.load(yaml: text) as? [String: Any] else {
                throw ValidationError("\(config) is not a YAML mapping of settings")
            }
            file = map.mapValues { "\($0)" }
        }
        func setting(_ flag: String?, _ envNames: [String], _ key: String, _ fallback: String) -> String {
            flag ?? envNames.lazy.compactMap { env[$0] }.first ?? file[key] ?? fallback
        }
        let keysDir = setting(keysDir, [], "keys-dir", "keys")
        let url = setting(lightning, ["LIGHTNING_URL", "WORKER_LIGHTNING_SERVICE_URL"], "lightning", "ws://127.0.0.1:4000/worker")
        let machine = WorkerConfiguration.machineCapacity()
        guard let capacity = Int(setting(capacity.map(String.init), ["WORKER_CAPACITY"], "capacity", "\(machine.capacity)")),
            capacity > 0
        else {
            throw ValidationError("capacity must be a positive number")
        }
        guard let mode = SandboxMode(rawValue: setting(sandbox, ["WORKER_SANDBOX"], "sandbox", "auto")) else {
            throw ValidationError("--sandbox must be auto, namespaces or none")
        }
        guard let network = StepNetwork(rawValue: setting(stepNetwork, [], "step-network", "none")) else {
            throw ValidationError("--step-network must be none or host")
        }
        // Absolute, so a step that runs from its own directory (as with --sandbox none) still finds its files.
        let workRoot = URL(fileURLWithPath: setting(workDir, [], "work-dir", "./data/worker")).standardizedFileURL.path
        let shutdown = Double(setting(shutdownTimeout.map { String($0) }, [], "shutdown-timeout", "30")) ?? 30
        let workerName = setting(name, ["WORKER_NAME"], "name", "\(ProcessInfo.processInfo.hostName)-\(getpid())")

        guard let secret = env["WORKER_SECRET"]
            ?? (try? String(contentsOfFile: keysDir + "/worker_secret", encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines)
        else {
            throw ValidationError("WORKER_SECRET is not set and \(keysDir)/worker_secret does not exist")
        }
        var publicKey: JWTKey?
        if let b64 = env["LIGHTNING_PUBLIC_KEY"] ?? env["WORKER_LIGHTNING_PUBLIC_KEY"] {
            publicKey = try JWTKey.rsa(base64PEM: b64)
        } else if let pem = try? String(contentsOfFile: keysDir + "/attempts_public.pem", encoding: .utf8) {
            publicKey = try JWTKey.rsa(pem: pem)
        }
        if publicKey == nil && !insecureSkipTokenVerification {
            throw ValidationError("LIGHTNING_PUBLIC_KEY is not set (nor \(keysDir)/attempts_public.pem): attempt tokens cannot be verified. "
                + "Set it, or pass --insecure-skip-token-verification knowingly.")
        }

        try FileManager.default.createDirectory(atPath: workRoot, withIntermediateDirectories: true)
        let runner: SandboxRunner
        do {
            runner = try SandboxRunner(mode: mode, network: network, stateDirectory: workRoot)
        } catch let error as SandboxError {
            logger.critical("\(error.description)")
            throw ExitCode(78)
        }
        var config = WorkerConfiguration(lightningURL: url, name: workerName, workerSecret: secret,
                                         lightningPublicKey: insecureSkipTokenVerification ? nil : publicKey, workRoot: workRoot)
        config.capacity = capacity
        config.shutdownTimeout = .milliseconds(Int(shutdown * 1000))
        guard let grace = Double(setting(livezGrace.map { String($0) }, ["WORKER_LIVEZ_GRACE"], "livez-grace", "60")), grace >= 0 else {
            throw ValidationError("--livez-grace must be a number of seconds")
        }
        config.livezGrace = .milliseconds(Int(grace * 1000))
        let worker = try Worker(configuration: config, runner: runner, logger: logger)
        var admin: AdminServer?
        let adminPortSetting = setting(adminPort.map(String.init), ["WORKER_ADMIN_PORT"], "admin-port", "")
        if !adminPortSetting.isEmpty {
            guard let port = Int(adminPortSetting), (0...65535).contains(port) else {
                throw ValidationError("--admin-port must be a port number from 0 to 65535")
            }
            let host = setting(adminHost, ["WORKER_ADMIN_HOST"], "admin-host", "127.0.0.1")
            let server = AdminServer(worker: worker, host: host, port: port)
            do { try server.start() } catch {
                throw ValidationError("could not listen on the admin port \(host):\(port): \(error)")
            }
            logger.info("admin port listening", metadata: ["port": "\(server.port)", "host": "\(host)"])
            admin = server
        }
        logger.info("runtime-worker starting", metadata: ["worker.name": "\(workerName)", "worker.capacity": "\(capacity)",
                                                          "worker.capacity.machine": "\(machine.capacity) (\(machine.why))",
                                                          "lightning": "\(url)"])
        let group = ServiceGroup(configuration: .init(services: [WorkerService(worker: worker)],
                                                      gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
        do {
            try await group.run()
            await admin?.shutdown()
        } catch let error as WorkerError {
            logger.critical("\(error.description)")
            throw ExitCode(77)
        }
    }
}

/// Runs the worker until SIGTERM/SIGINT, then drains it; a second signal exits at once.
struct WorkerService: Service {
    let worker: Worker
    func run() async throws {
        try await withGracefulShutdownHandler {
            try await worker.run()
        } onGracefulShutdown: {
            SecondSignal.exitOnNext()
            Task { await worker.drain() }
        }
    }
}

/// After the first SIGTERM/SIGINT started a graceful shutdown, the next one ends the process at once.
enum SecondSignal {
    nonisolated(unsafe) static var sources: [DispatchSourceSignal] = []

    static func exitOnNext() {
        for sig in [SIGTERM, SIGINT] {
            let source = DispatchSource.makeSignalSource(signal: sig, queue: .global())
            source.setEventHandler {
                FileHandle.standardError.write(Data("runtime-worker: second signal, exiting now\n".utf8))
                exit(130)
            }
            source.resume()
            sources.append(source)
        }
    }
}
