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
            option by its long name (e.g. `capacity: 4`); flags win over the environment, which wins over the file. \
            --print-config shows the result and where each value came from.

            Credentials (docs/workers.md), first that applies: --registration-token (exchanged at the first join for \
            a worker auth token, renewed over the socket and saved in --credential-file); a saved credential still \
            good; WORKER_SECRET (or keys/worker_secret); none, with --admin-port: wait for a registration token POSTed \
            to /register.

            A worker need not run as root: it then isolates steps with user namespaces, and `runtime-worker \
            setup-cgroups --user U`, run once per boot as root, gives it cgroups for their limits.
            """,
        version: RuntimeVersion.current,
        subcommands: [SetupCgroups.self])

    @Option(help: "Lightning's worker socket, e.g. ws://127.0.0.1:4000/worker (env LIGHTNING_URL or WORKER_LIGHTNING_SERVICE_URL); /websocket is added when missing. Replicas of one Lightning: repeat it or separate URLs by commas; after a lost connection the next is tried, in turn.")
    var lightning: [String] = []
    @Option(help: "Attempts run at once (env WORKER_CAPACITY; default: from the machine, two per core and no more than memory / 500 MB).")
    var capacity: Int?
    @Option(help: "This worker's name (env WORKER_NAME; default: host name and pid, or for a registered worker its host name).")
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
    @Option(help: "A registration token from `lightning workers register NAME` (env WORKER_REGISTRATION_TOKEN): exchanged for a worker auth token at the first join.")
    var registrationToken: String?
    @Option(help: "Where a registered worker keeps its auth token between starts (default <work-dir>/credential.json, mode 0600).")
    var credentialFile: String?
    @Option(help: "The launch configuration this worker comes from (env WORKER_DEPLOYMENT_ID): `lightning workers drain --deployment-not NEW` drains the others.")
    var deploymentID: String?
    @Option(help: "The worker's group (env WORKER_GROUP), shown by `lightning workers list`.")
    var group: String?
    @Option(name: .customLong("label"), help: "A label shown by `lightning workers list` (repeat for several; env WORKER_LABELS, comma-separated).")
    var labels: [String] = []
    @Option(help: "What SIGTERM does with attempts still running when --shutdown-timeout ends: finish (stop them), requeue (stop them and have Lightning run them again) or cancel (env WORKER_SHUTDOWN_POLICY; default finish).")
    var shutdownPolicy: String?
    @Flag(help: "Print the merged settings and where each came from (secrets as ***), then exit.")
    var printConfig = false
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
        let configPath = self.config ?? ""
        // Each value with where it came from, for --print-config.
        var report: [(key: String, value: String, source: String)] = []
        func setting(_ flag: String?, _ envNames: [String], _ key: String, _ fallback: String, secret: Bool = false) -> String {
            let value: String, source: String
            if let flag {
                (value, source) = (flag, "flag --\(key)")
            } else if let found = envNames.lazy.compactMap({ n in env[n].map { (n, $0) } }).first {
                (value, source) = (found.1, "env \(found.0)")
            } else if let v = file[key] {
                (value, source) = (v, "file \(configPath)")
            } else {
                (value, source) = (fallback, "default")
            }
            let shown = value.isEmpty ? "(none)" : secret ? "***" : value
            let lightningMaySet = source == "default" && ["capacity", "shutdown-timeout", "shutdown-policy"].contains(key)
            report.append((key, shown, lightningMaySet ? "default; Lightning's group defaults apply at join" : source))
            return value
        }
        let keysDir = setting(keysDir, [], "keys-dir", "keys")
        let url = setting(lightning.isEmpty ? nil : lightning.joined(separator: ","), ["LIGHTNING_URL", "WORKER_LIGHTNING_SERVICE_URL"],
                          "lightning", "ws://127.0.0.1:4000/worker")
        let urls = url.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        guard let firstURL = urls.first else { throw ValidationError("--lightning needs a URL, e.g. ws://127.0.0.1:4000/worker") }
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
        let registration = setting(registrationToken, ["WORKER_REGISTRATION_TOKEN"], "registration-token", "", secret: true)
        let secret = env["WORKER_SECRET"]
            ?? (try? String(contentsOfFile: keysDir + "/worker_secret", encoding: .utf8))?.trimmingCharacters(in: .whitespacesAndNewlines)
        report.append(("worker-secret", secret == nil ? "(none)" : "***",
                       env["WORKER_SECRET"] != nil ? "env WORKER_SECRET" : secret != nil ? "file \(keysDir)/worker_secret" : "-"))
        // A registered worker's name is its credential's subject, so it must not change between starts: the host
        // name. A shared-secret worker adds its pid, as before.
        let credentialPath = setting(credentialFile, [], "credential-file", workRoot + "/credential.json")
        // (A saved credential is checked against the key further down; here only whether this host registered.)
        let host = ProcessInfo.processInfo.hostName
        let registered = !registration.isEmpty || secret == nil || WorkerCredentials.hasUsableSaved(credentialPath, name: name ?? env["WORKER_NAME"] ?? file["name"] ?? host, key: nil)
        let workerName = setting(name, ["WORKER_NAME"], "name", registered ? host : "\(host)-\(getpid())")
        // A credential is bound to the name, so a registered worker's must be one Lightning can register.
        guard !registered || Wire.isWorkerName(workerName) else {
            throw ValidationError("a registered worker's --name must be 1-100 letters, digits, - _ . or : (got \"\(workerName)\")")
        }
        let deployment = setting(deploymentID, ["WORKER_DEPLOYMENT_ID"], "deployment-id", "")
        let groupName = setting(group, ["WORKER_GROUP"], "group", "")
        let labelList = setting(labels.isEmpty ? nil : labels.joined(separator: ","), ["WORKER_LABELS"], "labels", "")
            .split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
        guard let policy = DrainPolicy(rawValue: setting(shutdownPolicy, ["WORKER_SHUTDOWN_POLICY"], "shutdown-policy", "finish")) else {
            throw ValidationError("--shutdown-policy must be finish, requeue or cancel")
        }
        let adminPortSetting = setting(adminPort.map(String.init), ["WORKER_ADMIN_PORT"], "admin-port", "")
        let adminHostSetting = setting(adminHost, ["WORKER_ADMIN_HOST"], "admin-host", "127.0.0.1")
        let graceSetting = setting(livezGrace.map { String($0) }, ["WORKER_LIVEZ_GRACE"], "livez-grace", "60")

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
        report.append(("lightning-public-key", publicKey == nil ? "(none: tokens not verified)" : "set",
                       env["LIGHTNING_PUBLIC_KEY"] != nil ? "env LIGHTNING_PUBLIC_KEY" : env["WORKER_LIGHTNING_PUBLIC_KEY"] != nil
                           ? "env WORKER_LIGHTNING_PUBLIC_KEY" : publicKey != nil ? "file \(keysDir)/attempts_public.pem" : "-"))

        // Which credential: a registration token, a saved credential still good, the shared secret, or wait for one.
        let authentication: WorkerAuthentication
        let saved = WorkerCredentials.hasUsableSaved(credentialPath, name: workerName, key: insecureSkipTokenVerification ? nil : publicKey)
        if !registration.isEmpty {
            authentication = .registration(registration)
        } else if saved {
            authentication = .registration(nil)
        } else if let secret {
            authentication = .sharedSecret(secret)
        } else if !adminPortSetting.isEmpty {
            authentication = .registration(nil)
        } else {
            throw ValidationError("""
                no credentials: set WORKER_SECRET (or put it in \(keysDir)/worker_secret), pass --registration-token \
                (from `lightning workers register \(workerName)`), or pass --admin-port and POST a registration token to /register
                """)
        }
        let authText: String = switch authentication {
        case .sharedSecret: "shared secret (WORKER_SECRET)"
        case .registration(.some) where !saved: "registration token, exchanged at the first join"
        case .registration: saved ? "saved credential (\(credentialPath))" : "none yet: waiting for POST /register on the admin port"
        }
        report.append(("credentials", authText, "chosen"))
        if printConfig {
            let width = report.map(\.key.count).max() ?? 0
            for r in report {
                print("\(r.key.padding(toLength: width, withPad: " ", startingAt: 0))  \(r.value)  (\(r.source))")
            }
            return
        }

        try FileManager.default.createDirectory(atPath: workRoot, withIntermediateDirectories: true)
        let runner: SandboxRunner
        do {
            runner = try SandboxRunner(mode: mode, network: network, stateDirectory: workRoot)
        } catch let error as SandboxError {
            logger.critical("\(error.description)")
            throw ExitCode(78)
        }
        var config = WorkerConfiguration(lightningURL: firstURL, name: workerName, workerSecret: secret ?? "",
                                         lightningPublicKey: insecureSkipTokenVerification ? nil : publicKey, workRoot: workRoot)
        config.fallbackLightningURLs = Array(urls.dropFirst())
        config.authentication = authentication
        config.credentialFile = credentialPath
        config.waitForRegistration = !adminPortSetting.isEmpty
        config.capacity = capacity
        config.shutdownTimeout = .milliseconds(Int(shutdown * 1000))
        config.shutdownPolicy = policy
        config.deploymentID = deployment.isEmpty ? nil : deployment
        config.group = groupName.isEmpty ? nil : groupName
        config.labels = labelList
        // What Lightning's group defaults may not override: everything given here rather than defaulted.
        config.configuredKeys = Set(report.filter { !$0.source.hasPrefix("default") }.map(\.key))
        guard let grace = Double(graceSetting), grace >= 0 else {
            throw ValidationError("--livez-grace must be a number of seconds")
        }
        config.livezGrace = .milliseconds(Int(grace * 1000))
        let worker = try Worker(configuration: config, runner: runner, logger: logger)
        var admin: AdminServer?
        if !adminPortSetting.isEmpty {
            guard let port = Int(adminPortSetting), (0...65535).contains(port) else {
                throw ValidationError("--admin-port must be a port number from 0 to 65535")
            }
            let host = adminHostSetting
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
        // A drain from Lightning ends the worker by itself: that is a clean end (exit 0), not a failure.
        let service = ServiceGroupConfiguration.ServiceConfiguration(service: WorkerService(worker: worker),
                                                                     successTerminationBehavior: .gracefullyShutdownGroup)
        let group = ServiceGroup(configuration: .init(services: [service], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger))
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
