internal import CSandbox
import Channels
import LightningProtocol
import Foundation
import Synchronization
import Logging

/// Runs a step in some process runner: the sandbox in production, a fake in tests.
public protocol StepRunning: Sendable {
    /// Where a file of the work directory is seen by the step.
    func stepPath(_ hostPath: String, workDirectory: String) -> String
    func run(_ launch: StepLaunch, control: StepControl, onLines: @escaping @Sendable ([(StepStream, String)]) -> Void)
        async throws -> StepTermination
    /// A step will start soon: do slow preparation now, off the critical path.
    func prepare()
    /// True when nothing a step started can run on after the step ended (so its directories can be reused).
    var stepsEndWhole: Bool { get }
}

extension StepRunning {
    public func prepare() {}
    public var stepsEndWhole: Bool { false }
}

extension SandboxRunner: StepRunning {
    public func prepare() { cgroups?.warmUp() }
    /// With namespaces each step is PID 1 of its own pid namespace: when it exits, the kernel kills the rest.
    public var stepsEndWhole: Bool { useNamespaces }

    public func stepPath(_ hostPath: String, workDirectory: String) -> String {
        useNamespaces ? "/work" + hostPath.dropFirst(workDirectory.count) : hostPath
    }
}

/// Sends one attempt's events in order and waits for each reply.
public protocol AttemptEventSink: Sendable {
    func send(_ event: String, _ payload: JSON) async throws -> ChannelClientReply
    /// The same, for a payload already encoded as JSON text (a log batch written line by line as the lines came).
    func send(_ event: String, encoded payload: [UInt8]) async throws -> ChannelClientReply
}

/// An event's payload on its way out: a value, or JSON text already encoded (a log batch).
enum AttemptEventPayload: Sendable {
    case value(JSON)
    case encoded([UInt8])
}

extension AttemptEventSink {
    /// For sinks that only take values: the text is parsed back (our own encoding: it parses).
    public func send(_ event: String, encoded payload: [UInt8]) async throws -> ChannelClientReply {
        try await send(event, try JSON.parse(payload))
    }
}

/// Executes one attempt: steps one after another from the plan's starting node, following edges (PROTOCOL.md
/// 5.1), with the step contract of ARCHITECTURE.md, and every event of section 5 in order.
///
/// A state over the payload limit (`payload_limit_mb`) does not stop the attempt: as PROTOCOL.md 5.2 describes,
/// its `step:complete` omits `output_dataclip` (and `output_dataclip_id`) and says `output_dataclip_error:
/// "DATACLIP_TOO_LARGE"`, the next steps still get the whole state, and an oversize final state is left out
/// of `run:complete`. `StateTooLargeError`/kill is therefore never used for state size; the step's own memory
/// and file-size limits bound how large a state can get.
public struct AttemptExecutor: Sendable {
    public let attemptID: String
    public let plan: Plan
    public let input: [UInt8]
    /// Credential bodies by credential id.
    public let credentials: [String: [UInt8]]
    /// Why a credential could not be loaded, by credential id: the jobs that use it end in an exception that says so.
    public let credentialErrors: [String: String]
    public let runner: any StepRunning
    public let events: any AttemptEventSink
    public let workRoot: String
    public let control: AttemptControl
    public let logger: Logger
    public var interpreters: [String: String] = AttemptExecutor.defaultInterpreters()
    /// The attempt's log cap (the plan's `log_limit_mb`).
    public var maxLogBytesPerAttempt: Int
    /// Where spawn latency and log counts go (the admin port's /metrics), when the worker keeps figures.
    public var metrics: WorkerMetrics?
    /// Reused step directories, for a runner whose steps cannot outlive their end; nil: the attempt gets
    /// directories of its own (the same type, keeping none) under its own directory, removed with it.
    public var directories: StepDirectories?
    /// The largest message Lightning takes (what it named at the worker's join, else PROTOCOL.md's 11,000,000 bytes);
    /// nil: no bound but the plan's. States and log lines are bounded to fit in it: a larger event would close the
    /// socket, and its resend would, for ever.
    public var messageLimit: Int?
    /// Awaited before each step's process starts; a throw ends the attempt with that error, before any step ran.
    /// The worker passes the `run:<id>` join: the attempt is prepared (files written, events queued) while the join
    /// is on its way, but nothing of it runs until Lightning has accepted the claim as current.
    public var startGate: (@Sendable () async throws -> Void)?

    /// Room left in a message for what an event carries beside its state or log line (ids, reason, memory figures).
    static let envelopeAllowance = 64 * 1024

    /// The most bytes of state (and webhook response) a step:complete or run:complete carries: the plan's payload
    /// limit, or less when Lightning's message limit is lower.
    var payloadLimitBytes: Int {
        let plan = plan.options.payloadLimitMB * 1_000_000
        guard let messageLimit else { return plan }
        return max(0, min(plan, messageLimit - Self.envelopeAllowance))
    }

    public init(attemptID: String, plan: Plan, input: [UInt8], credentials: [String: [UInt8]],
                credentialErrors: [String: String] = [:], runner: any StepRunning,
                events: any AttemptEventSink, workRoot: String, control: AttemptControl = AttemptControl(),
                logger: Logger = Logger(label: "runtime-worker.attempt")) {
        self.attemptID = attemptID
        self.plan = plan
        self.input = input
        self.credentials = credentials
        self.credentialErrors = credentialErrors
        maxLogBytesPerAttempt = plan.options.logLimitMB * 1_000_000
        self.runner = runner
        self.events = events
        self.workRoot = workRoot
        self.control = control
        self.logger = logger
    }

    public static func defaultInterpreters() -> [String: String] {
        var found: [String: String] = [:]
        for (name, candidates) in [("sh", ["/bin/sh"]), ("bash", ["/bin/bash", "/usr/bin/bash"]),
                                   ("python3", ["/usr/bin/python3"]), ("node", ["/usr/bin/node", "/usr/local/bin/node"])] {
            if let path = candidates.first(where: { FileManager.default.isExecutableFile(atPath: $0) }) { found[name] = path }
        }
        return found
    }

    struct Outcome {
        var reason: ExitReason
        var errorType: String?
        var errorMessage: String?
        var state: [String: Any]
        /// The step that produced this outcome, and the id of its output dataclip when it was sent.
        var stepID: String? = nil
        var outputID: String? = nil
    }

    /// Runs the attempt and returns how it ended (after sending `run:complete`).
    @discardableResult
    public func run() async throws -> AttemptComplete {
        let scrubber = CredentialScrubber(credentialBodies: credentials.values.compactMap {
            try? JSONSerialization.jsonObject(with: Data($0))
        })
        let attemptDir = workRoot + "/" + attemptID
        let stepDirectories = try directories ?? StepDirectories(root: attemptDir, keep: 0)
        defer { if directories == nil { Self.removeTree(attemptDir) } }
        let deadline = ContinuousClock.now + .milliseconds(plan.options.runTimeoutMS)
        // Events go through an outbox: the ones whose replies are not needed are posted, not waited for.
        let out = (events as? AttemptOutbox) ?? AttemptOutbox(events)
        let logs = LogBatcher(attemptID: attemptID, events: out, scrubber: scrubber, maxBytes: maxLogBytesPerAttempt,
                              messageLimit: messageLimit.map { $0 - Self.envelopeAllowance }, logger: logger, metrics: metrics)

        try out.post(Wire.Event.attemptStart, ["versions": ["runtime-worker": .string(RuntimeVersion.current)],
                                               "timestamp": .string(Timestamp.now())])
        guard let initial = (try? JSONSerialization.jsonObject(with: Data(input))) as? [String: Any] else {
            return try await complete(Outcome(reason: .exception, errorType: ErrorType.dataclip,
                                              errorMessage: "the input dataclip is not a JSON object", state: [:]),
                                      finalState: nil, finalDataclipID: nil, out: out)
        }
        var walk = PlanWalker(plan: plan, initial: initial)
        while let step = walk.next() {
            if control.isCancelled {
                walk.stopped(stopped(step.input))
                break
            }
            let (outcome, outputID) = try await runStep(step.job, state: step.input,
                                                        inputDataclipID: step.inputDataclipID, directories: stepDirectories,
                                                        deadline: deadline, logs: logs, out: out)
            walk.finished(step, outcome, outputID: outputID)
        }
        await logs.finish()
        // As ws-worker: one leaf's state is the final state (and its output dataclip the final dataclip);
        // several leaves' states are keyed by their step ids.
        let (worst, finalState, finalDataclipID) = walk.result
        return try await complete(worst, finalState: finalState, finalDataclipID: finalDataclipID, out: out)
    }

    /// How an attempt stopped from outside ends: `cancel` for an operator, `kill` for the worker's shutdown.
    /// A drain's `requeue` ends it as `kill` with error type `Requeued`: Lightning puts it back as a new attempt.
    private func stopped(_ state: [String: Any]) -> Outcome {
        switch control.stopKind {
        case .shutdown: Outcome(reason: .kill, errorType: ErrorType.shutdown, errorMessage: control.reason, state: state)
        case .requeue: Outcome(reason: .kill, errorType: Wire.requeuedErrorType, errorMessage: control.reason, state: state)
        case .cancel: Outcome(reason: .cancel, errorType: ErrorType.cancelled, errorMessage: control.reason, state: state)
        }
    }

    /// Sends `run:complete` and waits for its reply, which comes after the replies to every event before it.
    private func complete(_ o: Outcome, finalState state: [String: Any]?, finalDataclipID: String?,
                          out: AttemptOutbox) async throws -> AttemptComplete {
        var finalState: JSON? = nil
        if let state, let data = try? JSONSerialization.data(withJSONObject: state) {
            if data.count > payloadLimitBytes {
                // Same rule as an oversize step output (5.2): the state is not sent, the attempt's reason stands.
                logger.warning("the final state is over the payload limit and is not sent", metadata: ["bytes": "\(data.count)"])
            } else {
                finalState = try? JSON.parse(Array(data))
            }
        }
        let c = AttemptComplete(reason: o.reason, errorType: o.errorType, errorMessage: o.errorMessage,
                                finalDataclipID: finalDataclipID, finalState: finalState)
        _ = try await out.send(Wire.Event.attemptComplete, c.wire)
        return c
    }

    private func runStep(_ job: Plan.Job, state input: [String: Any], inputDataclipID: String?, directories: StepDirectories,
                         deadline: ContinuousClock.Instant, logs: LogBatcher, out: AttemptOutbox) async throws -> (Outcome, String?) {
        let stepID = RandomID.uuidString()
        // Posted: the step starts without waiting for the reply (the outbox keeps the order).
        try out.post(Wire.Event.stepStart, StepStart(stepID: stepID, jobID: job.id, inputDataclipID: inputDataclipID).wire)
        let started = ContinuousClock.now
        var outcome = Outcome(reason: .success, state: input)
        var termination: StepTermination?
        do {
            (outcome, termination) = try await execute(job, stepID: stepID, input: input, directories: directories,
                                                       deadline: deadline, logs: logs)
        } catch let error as SandboxError {
            outcome = Outcome(reason: .exception, errorType: ErrorType.sandbox, errorMessage: error.description, state: input)
        }
        await logs.flush()
        outcome.state.removeValue(forKey: "configuration")
        let outputID = RandomID.uuidString()
        var outputText = (try? JSONSerialization.data(withJSONObject: outcome.state)).map { String(decoding: $0, as: UTF8.self) }
        var outputError: String?
        let limit = payloadLimitBytes
        var webhookResponse = outcome.state["webhookResponse"].flatMap { value -> JSON? in
            guard JSONSerialization.isValidJSONObject([value]), let data = try? JSONSerialization.data(withJSONObject: [value]) else {
                return nil
            }
            return (try? JSON.parse(Array(data)))?[0]
        }
        // Counted as they go on the wire, where the output is a string (each quote and backslash escaped) beside the
        // webhook response: over the payload limit they are left out, as the state is (5.2). A step:complete over the
        // server's message limit would close the socket, and its resend would, for ever (`payloadLimitBytes` is under it).
        let responseBytes = webhookResponse.map { $0.encoded().count } ?? 0
        if responseBytes > limit {
            logger.warning("the step's webhookResponse is over the payload limit and is not sent", metadata: ["bytes": "\(responseBytes)"])
            webhookResponse = nil
        }
        if let text = outputText, JSON.encodedStringLength(text) + (webhookResponse == nil ? 0 : responseBytes) > limit {
            outputText = nil
            outputError = "DATACLIP_TOO_LARGE"
        }
        let complete = StepComplete(
            stepID: stepID, jobID: job.id, reason: outcome.reason, errorType: outcome.errorType, errorMessage: outcome.errorMessage,
            outputDataclipID: outputText == nil ? nil : outputID, outputDataclip: plan.options.outputDataclips ? outputText : nil,
            outputDataclipError: outputError,
            mem: MemoryUse(job: termination?.peakMemoryBytes ?? 0, system: Int64(ProcessInfo.processInfo.physicalMemory)),
            duration: termination?.durationMS ?? Int64((ContinuousClock.now - started).components.seconds * 1000),
            webhookResponse: webhookResponse)
        try out.post(Wire.Event.stepComplete, complete.wire)
        outcome.stepID = stepID
        // The output is kept by Lightning only when it was sent in full.
        outcome.outputID = outputText != nil && plan.options.outputDataclips ? outputID : nil
        return (outcome, outputText == nil ? nil : outputID)
    }

    private func execute(_ job: Plan.Job, stepID: String, input: [String: Any], directories: StepDirectories,
                         deadline: ContinuousClock.Instant, logs: LogBatcher) async throws -> (Outcome, StepTermination?) {
        guard let interpreter = interpreters[job.adaptor] else {
            let known = interpreters.keys.sorted().joined(separator: ", ")
            return (Outcome(reason: .crash, errorType: ErrorType.importError,
                            errorMessage: "adaptor \"\(job.adaptor)\" cannot run on this worker (it runs: \(known))", state: input), nil)
        }
        var entry = try directories.take()
        defer { directories.give(entry) }
        let work = entry.work, tmp = entry.tmp
        var state = input
        if let credentialID = job.credentialID {
            guard let body = credentials[credentialID], let config = try? JSONSerialization.jsonObject(with: Data(body)) else {
                return (Outcome(reason: .exception, errorType: ErrorType.credential,
                                errorMessage: credentialID.hasPrefix(Plan.missingCredentialPrefix)
                                    ? "credential \"\(credentialID.dropFirst(Plan.missingCredentialPrefix.count))\" is not set in Lightning"
                                    : "credential \(credentialID) could not be loaded: \(credentialErrors[credentialID] ?? "no body")",
                                state: input), nil)
            }
            state["configuration"] = config
        }
        let outputPath = work + "/output.json"
        let stateBytes = Array(try JSONSerialization.data(withJSONObject: state))
        let statePath = try directories.write(&entry, name: "state.json", stateBytes, mode: 0o444)
        let bodyPath = try directories.write(&entry, name: "job", Array(job.body.utf8), mode: 0o644)
        let remaining = deadline - ContinuousClock.now
        guard remaining > .zero else {
            return (Outcome(reason: .kill, errorType: ErrorType.timeout, errorMessage: "the attempt ran out of time", state: input), nil)
        }
        let inside = { (p: String) in runner.stepPath(p, workDirectory: work) }
        let launch = StepLaunch(
            executable: interpreter, arguments: [interpreter, inside(bodyPath)],
            environment: ["PATH": "/usr/local/bin:/usr/bin:/bin", "HOME": inside(work), "LANG": "C.UTF-8",
                          "STATE_PATH": inside(statePath), "OUTPUT_PATH": inside(outputPath), "ATTEMPT_ID": attemptID,
                          "STEP_ID": stepID, "JOB_ID": job.id],
            workDirectory: work, tmpDirectory: tmp, memoryLimitBytes: Int64(plan.options.runMemoryLimitMB) << 20,
            timeout: remaining, maxLineBytes: plan.options.logPayloadLimitMB * 1_000_000)
        // The environment's names only: its values are paths and ids, but the rule is simpler kept whole.
        logger.debug("starting step", metadata: ["step.id": "\(stepID)", "job.id": "\(job.id)", "interpreter": "\(interpreter)",
                                                 "work": "\(work)", "env": "\(launch.environment.keys.sorted().joined(separator: ","))",
                                                 "state.bytes": "\(stateBytes.count)"])
        if let startGate {
            try await startGate()
            if control.isCancelled { return (stopped(input), nil) }
        }
        let stepControl = StepControl()
        control.attach(stepControl)
        defer { control.detach() }
        let spawning = ContinuousClock.now
        let t = try await runner.run(launch, control: stepControl) { lines in logs.add(lines, stepID: stepID, control: stepControl) }
        if let metrics, let started = stepControl.startedAt { metrics.record(metrics.stepSpawn, started - spawning) }

        if t.cancelled || control.isCancelled { return (stopped(input), t) }
        if t.timedOut {
            return (Outcome(reason: .kill, errorType: ErrorType.timeout,
                            errorMessage: "the attempt's time limit of \(plan.options.runTimeoutMS) ms ran out", state: input), t)
        }
        if t.oomKilled {
            return (Outcome(reason: .kill, errorType: ErrorType.oom,
                            errorMessage: "the step went over its memory limit of \(plan.options.runMemoryLimitMB) MB", state: input), t)
        }
        if let signal = t.signal {
            return (Outcome(reason: .crash, errorType: ErrorType.crash, errorMessage: "the step was killed by signal \(signal)",
                            state: input), t)
        }
        if let code = t.exitCode, code != 0 {
            return (Outcome(reason: .fail, errorType: ErrorType.job, errorMessage: "the step exited with code \(code)", state: input), t)
        }
        let data: [UInt8]
        switch Self.readOutput(outputPath) {
        case .absent: return (Outcome(reason: .success, state: input), t)
        case .refused(let why):
            return (Outcome(reason: .crash, errorType: ErrorType.crash, errorMessage: "OUTPUT_PATH \(why)", state: input), t)
        case .bytes(let b): data = b
        }
        guard let output = (try? JSONSerialization.jsonObject(with: Data(data))) as? [String: Any] else {
            return (Outcome(reason: .crash, errorType: ErrorType.crash,
                            errorMessage: "the step's output in OUTPUT_PATH \(Self.outputProblem(data))", state: input), t)
        }
        return (Outcome(reason: .success, state: output), t)
    }

    /// What is wrong with an output that is not a JSON object, for the step's author: where the JSON breaks, or
    /// what it holds instead of an object.
    static func outputProblem(_ data: [UInt8]) -> String {
        let value: JSON
        do {
            value = try JSON.parse(data)
        } catch {
            return "could not be read as JSON: \(error) (of \(data.count) bytes); a step's output is one JSON object"
        }
        if case .object = value { return "could not be read as a JSON object" }
        return "holds \(value.kindName), not a JSON object; a step's output is one JSON object"
    }
}

extension AttemptExecutor {
    /// One mkdir (Foundation's createDirectory looks at every component first); an existing directory is fine.
    static func makeDirectory(_ path: String) throws {
        if mkdir(path, 0o755) == 0 || errno == EEXIST { return }
        if errno == ENOENT {
            // The work root itself is missing (removed under a running worker): make the whole path.
            try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
            return
        }
        throw CocoaError(.fileWriteUnknown, userInfo: [NSFilePathErrorKey: path, "errno": errno])
    }

    /// Removes an attempt's directory and whatever its steps left there (no links followed, no mounts crossed).
    static func removeTree(_ path: String) {
        if csandbox_remove_tree(path) != 0 && errno != ENOENT { try? FileManager.default.removeItem(atPath: path) }
    }

    enum OutputFile: Equatable {
        case absent
        case refused(String)
        case bytes([UInt8])
    }

    /// Reads the file a step left at OUTPUT_PATH as the step could see it: a plain file, never through a link
    /// (the worker reads it with its own rights, on the host: a link could point at any file there, another
    /// step's input with its credentials included). Its size is bound by the step's file-size limit.
    static func readOutput(_ path: String) -> OutputFile {
        let fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC)
        if fd < 0 {
            if errno == ENOENT { return .absent }
            if errno == ELOOP { return .refused("is a symbolic link: the output must be a plain file") }
            return .refused("could not be read: \(String(cString: strerror(errno)))")
        }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0, (st.st_mode & S_IFMT) == S_IFREG else { return .refused("is not a plain file") }
        var bytes = [UInt8](repeating: 0, count: Int(st.st_size))
        var done = 0
        while done < bytes.count {
            let n = bytes[done...].withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            if n < 0 { return .refused("could not be read: \(String(cString: strerror(errno)))") }
            if n == 0 { break }
            done += n
        }
        return .bytes(done == bytes.count ? bytes : Array(bytes[..<done]))
    }

}

/// Cancelling a running attempt from outside (`run:cancel`, shutdown).
public final class AttemptControl: Sendable {
    private struct State {
        var cancelled = false
        var kind = StopKind.cancel
        var why = "cancelled"
        var step: StepControl?
        var grace: Duration = .seconds(5)
    }

    private let state = Mutex(State())

    public init() {}

    /// How long a stopped step has between SIGTERM and SIGKILL.
    public var grace: Duration {
        get { state.withLock { $0.grace } }
        set { state.withLock { $0.grace = newValue } }
    }

    /// How an attempt was stopped from outside.
    public enum StopKind: Sendable {
        /// An operator's cancel (`run:cancel`), or a drain's `cancel` policy: reason `cancel`.
        case cancel
        /// The worker is shutting down and its timeout ran out: reason `kill`.
        case shutdown
        /// A drain's `requeue` policy: reason `kill`, put back by Lightning as a new attempt.
        case requeue
    }

    public var isCancelled: Bool { state.withLock { $0.cancelled } }
    /// Stopped by the worker's own shutdown rather than by an operator.
    public var isShutdown: Bool { state.withLock { $0.kind == .shutdown } }
    public var stopKind: StopKind { state.withLock { $0.kind } }
    var reason: String { state.withLock { $0.why } }

    /// An operator's cancel (`run:cancel`): the attempt ends with reason `cancel`.
    public func cancel(reason: String) { stop(reason: reason, kind: .cancel) }

    /// The worker is shutting down and its timeout ran out: the attempt ends with reason `kill`.
    public func shutDown(reason: String) { stop(reason: reason, kind: .shutdown) }

    public func stop(reason: String, kind: StopKind) {
        let (step, grace) = state.withLock { s in
            s.cancelled = true
            s.kind = kind
            s.why = reason
            return (s.step, s.grace)
        }
        step?.terminate(grace: grace)
    }

    func attach(_ step: StepControl) {
        let (already, grace) = state.withLock { s in
            s.step = step
            return (s.cancelled, s.grace)
        }
        if already { step.terminate(grace: grace) }
    }

    func detach() { state.withLock { $0.step = nil } }
}

/// Batches a step's output lines into `run:batch_logs`, in order, scrubbed of credential values. A batch goes as
/// soon as the previous one is acknowledged, with every line that arrived meanwhile (at most `batchLines`): one
/// line alone goes at once, a flood goes in large batches. The step's reader thread blocks when `maxPending`
/// lines are waiting (backpressure on the pipe).
final class LogBatcher: @unchecked Sendable {
    let attemptID: String
    let events: any AttemptEventSink
    let scrubber: CredentialScrubber
    let maxBytes: Int
    /// The largest encoded line or batch (`run:log`'s payload) that fits in a message Lightning takes: a line over it is
    /// sent as a notice of its size instead, and batches end before it.
    let maxMessagePayload: Int
    let logger: Logger
    private let lock = NSLock()
    /// Lines waiting, each already encoded as its JSON object (on the reader's thread, while the previous batch is
    /// on its way): sending a batch is then joining bytes, not encoding thousands of values.
    private var pending: [[UInt8]] = []
    /// The encoded bytes of `pending`.
    private var pendingBytes = 0
    private var bytes = 0
    private var capped = false
    private var droppedLines = 0
    private var droppedBytes = 0
    /// Numbers every line this attempt sends (`worker_seq`), so Lightning stores a batch resent after a lost
    /// reply only once.
    private var nextSeq: Int64 = 0
    private var flushing: Task<Void, Never>?
    /// The step whose output is held until the lines waiting fall below `maxPending`.
    private var held: StepControl?
    /// A batch ends at `batchLines` lines or `batchBytes` encoded bytes, whichever comes first (one line is sent alone
    /// even when larger): a step's lines may be up to 1 MB each, and a frame over the server's message limit (11 MB in
    /// PROTOCOL.md) closes the socket, whose resend would be closed again, for ever.
    let batchLines = 10_000
    let batchBytes: Int
    /// Past this many lines or bytes waiting, the step's output is held until they are sent.
    let maxPending = 30_000
    let maxPendingBytes = 8_000_000

    let metrics: WorkerMetrics?

    init(attemptID: String, events: any AttemptEventSink, scrubber: CredentialScrubber, maxBytes: Int, messageLimit: Int? = nil,
         logger: Logger = Logger(label: "runtime-worker.logs"), metrics: WorkerMetrics? = nil) {
        // What a batch adds around its lines: `{"run_id":"<uuid>","logs":[`, a comma between lines, `]}`.
        maxMessagePayload = max(1024, (messageLimit ?? Int.max / 2) - 256 - batchLines)
        batchBytes = min(2_000_000, maxMessagePayload)
        self.logger = logger
        self.metrics = metrics
        self.attemptID = attemptID
        self.events = events
        self.scrubber = scrubber
        self.maxBytes = maxBytes
    }

    /// Takes a step's lines, never blocking (it is called on the step reactor's thread). Over `maxPending` lines
    /// waiting, it holds the step's output through `control`: the runner stops reading its pipes until enough were
    /// sent.
    func add(_ lines: [(StepStream, String)], stepID: String, control: StepControl) {
        // One timestamp per chunk read from the pipe: the lines arrived together. What every line of the chunk
        // shares is encoded once.
        let tail = Self.encodeTail(timestamp: Timestamp.now(), stepID: stepID)
        lock.lock()
        var added = 0
        for (stream, text) in lines {
            // Past the cap, lines are counted, not sent; `finish()` says how many.
            if capped || bytes + text.utf8.count > maxBytes {
                capped = true
                droppedLines += 1
                droppedBytes += text.utf8.count
                metrics?.logLinesDropped.increment()
                continue
            }
            bytes += text.utf8.count
            added += 1
            nextSeq += 1
            var line = Self.encodeLine(scrubber.scrub(text), error: stream != .stdout, tail: tail, seq: nextSeq)
            if line.count > maxMessagePayload {
                // Escaped (quotes, backslashes, control characters), the line is over what Lightning takes in a message.
                let notice = "(a log line of \(text.utf8.count) bytes was removed: encoded, it is over Lightning's message limit)"
                line = Self.encodeLine(notice, error: stream != .stdout, tail: tail, seq: nextSeq)
                metrics?.logLinesDropped.increment()
            }
            pendingBytes += line.count
            pending.append(line)
        }
        let start = flushing == nil
        if start { flushing = Task { await self.flushLoop() } }
        if pending.count >= maxPending || pendingBytes >= maxPendingBytes {
            held = control
            control.holdOutput()
        }
        lock.unlock()
        if added > 0 { metrics?.outbox(added) }
    }

    /// What the lines of one chunk share: `,"source":"JOB","timestamp":T,"step_id":S,"worker_seq":`.
    static func encodeTail(timestamp: String, stepID: String) -> [UInt8] {
        var tail: [UInt8] = Array(#","source":"JOB","timestamp":"#.utf8)
        JSON.writeString(timestamp, to: &tail)
        tail.append(contentsOf: Array(#","step_id":"#.utf8))
        JSON.writeString(stepID, to: &tail)
        tail.append(contentsOf: Array(#","worker_seq":"#.utf8))
        return tail
    }

    /// `{"message":[TEXT],"level":"info"|"error"` then the chunk's shared `tail` and the line's number.
    static func encodeLine(_ text: String, error: Bool, tail: [UInt8], seq: Int64) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(text.utf8.count + tail.count + 48)
        out.append(contentsOf: LinePieces.message)
        JSON.writeString(text, to: &out)
        out.append(contentsOf: error ? LinePieces.levelError : LinePieces.levelInfo)
        out.append(contentsOf: tail)
        out.append(contentsOf: String(seq).utf8)
        out.append(UInt8(ascii: "}"))
        return out
    }

    private enum LinePieces {
        static let message = Array(#"{"message":["#.utf8)
        static let levelInfo = Array(#"],"level":"info""#.utf8)
        static let levelError = Array(#"],"level":"error""#.utf8)
    }

    /// `{"run_id":ID,"logs":[LINE,...]}` from encoded lines.
    static func encodeBatch(attemptID: String, _ lines: ArraySlice<[UInt8]>) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(lines.reduce(64) { $0 + $1.count + 1 })
        out.append(contentsOf: Array(#"{"run_id":"#.utf8))
        JSON.writeString(attemptID, to: &out)
        out.append(contentsOf: Array(#","logs":["#.utf8))
        for (i, line) in lines.enumerated() {
            if i > 0 { out.append(UInt8(ascii: ",")) }
            out.append(contentsOf: line)
        }
        out.append(contentsOf: Array("]}".utf8))
        return out
    }

    private func flushLoop() async {
        while true {
            let (batch, release): (ArraySlice<[UInt8]>, StepControl?) = lock.withLock {
                // All of it when it fits (no copy); else a copy of the first lines, the rest shifted in place (a
                // slice of `pending` kept while removing would copy all the rest instead).
                var count = 0, size = 0
                while count < min(pending.count, batchLines), count == 0 || size + pending[count].count <= batchBytes {
                    size += pending[count].count
                    count += 1
                }
                let b: ArraySlice<[UInt8]>
                if count == pending.count {
                    b = pending[...]
                    pending = []
                } else {
                    b = Array(pending.prefix(count))[...]
                    pending.removeFirst(count)
                }
                pendingBytes -= size
                if b.isEmpty { flushing = nil }
                let r = pending.count < maxPending && pendingBytes < maxPendingBytes ? held : nil
                if r != nil { held = nil }
                return (b, r)
            }
            release?.releaseOutput()
            if batch.isEmpty { return }
            metrics?.outbox(-batch.count)
            metrics?.logLinesSent.increment(by: Int64(batch.count))
            do {
                // `run:log` with a list of lines: the batched form OpenFn's Lightning and ws-worker use.
                _ = try await events.send(Wire.Event.log, encoded: Self.encodeBatch(attemptID: attemptID, batch))
            } catch {
                // The sink retries across reconnects itself; an error here means the attempt's channel is gone.
                logger.error("log lines could not be sent", metadata: ["lines": "\(batch.count)", "error": "\(error)"])
            }
        }
    }

    /// At the attempt's end: one notice of the lines dropped past the cap (if any), and everything sent.
    func finish() async {
        let notice: JSON? = lock.withLock {
            guard droppedLines > 0 else { return nil }
            nextSeq += 1
            let limit = maxBytes >= 1_000_000 && maxBytes % 1_000_000 == 0 ? "\(maxBytes / 1_000_000) MB" : "\(maxBytes) bytes"
            let text = "\(droppedLines) log lines (\(droppedBytes) bytes) were dropped: this attempt went over its log limit of \(limit)"
            droppedLines = 0
            return .object(["message": .array([.string(text)]), "level": "warn", "source": .string(LogSource.runtime),
                            "timestamp": .string(Timestamp.now()), "worker_seq": .int(nextSeq)])
        }
        await flush()
        if let notice {
            do { _ = try await events.send(Wire.Event.log, ["run_id": .string(attemptID), "logs": [notice]]) } catch {
                logger.error("the log-limit notice could not be sent", metadata: ["error": "\(error)"])
            }
        }
    }

    /// Waits until every line added so far was sent.
    func flush() async {
        while true {
            let task: Task<Void, Never>? = lock.withLock { flushing }
            guard let task else { return }
            await task.value
        }
    }
}
