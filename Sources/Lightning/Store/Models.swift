import Foundation

public enum StoreError: Error, Equatable, Sendable, CustomStringConvertible {
    case notFound(String)
    /// The request conflicts with the current state (e.g. an event for a final attempt).
    case conflict(String)
    case invalid(String)
    /// The store cannot take writes now (its disk is full): nothing of the request was stored; try again later.
    case unavailable(String)

    public var description: String {
        switch self {
        case .notFound(let m), .conflict(let m), .invalid(let m), .unavailable(let m): m
        }
    }

    /// Seconds a client is told to wait after `.unavailable`.
    public static let retryAfterSeconds = 30
}

public struct AppliedWorkflow: Sendable, Equatable {
    public var workflowID: String
    public var snapshotID: String
    public var version: Int
}

public struct WorkflowSummary: Sendable, Equatable {
    public var id: String
    public var name: String
    public var version: Int
    public var concurrency: Int?
    public var webhookPaths: [String]
}

public struct CreatedWork: Sendable, Equatable {
    public var workOrderID: String
    public var attemptID: String
    public var dataclipID: String
    /// For a webhook: whether its POST waits for the attempt (`after_completion`) and for how long.
    public var webhookReply: WorkflowDefinition.Trigger.WebhookReply? = nil
    public var webhookReplyTimeoutMS: Int? = nil
    /// The attempt's run timeout (its token's lifetime less the grace period); nil when not read.
    public var runTimeoutMS: Int? = nil
}

/// What a worker's `run:complete` (or Lightning's own verdict) did.
public struct AttemptCompletion: Sendable, Equatable {
    public var state: AttemptState
    /// False for a resend of the completion already stored: acknowledged with no second effect.
    public var changed: Bool
    /// The next attempt of the same work order, when the workflow's `retries` allowed one.
    public var retryID: String?
}

/// What `appendLogs` did with a batch.
public struct AppendedLogs: Sendable, Equatable {
    /// The seq of each line given, in order: for a line resent after a lost reply the seq it got the first time,
    /// nil for a line dropped past the attempt's log limit.
    public var seqs: [Int64?]
    /// The lines this call stored, in seq order, Lightning's own notices included: what viewers have not seen.
    public var stored: [LogLineRecord]
}

/// What a webhook waiting on its attempt answers with.
public struct AttemptResult: Sendable, Equatable {
    public var attempt: AttemptRecord
    /// The final state's JSON bytes, when one was stored.
    public var finalState: [UInt8]?
    /// The last finished step's `webhook_response` (JSON text), when it sent one.
    public var webhookResponse: String?
}

public struct ClaimedAttempt: Sendable, Equatable {
    public var id: String
    public var runTimeoutMS: Int
}

public struct AttemptRecord: Sendable, Equatable {
    public var id: String
    public var workOrderID: String
    public var workflowID: String
    public var workflowName: String
    public var state: AttemptState
    public var reason: String?
    public var errorType: String?
    public var errorMessage: String?
    public var workerName: String?
    public var finalDataclipID: String?
    public var runTimeoutMS: Int
    public var insertedAt: Int64
    public var claimedAt: Int64?
    public var startedAt: Int64?
    public var finishedAt: Int64?
    /// 1 for a work order's first attempt, 2 for its first retry, ...
    public var attemptNumber: Int = 1
    /// The attempt this one retries (or reruns).
    public var retryOf: String? = nil
    /// Set when the attempt was rerun from a step: the job it starts at.
    public var startingJobID: String? = nil
}

public struct StepRecord: Sendable, Equatable {
    public var id: String
    public var attemptID: String
    public var jobID: String
    public var inputDataclipID: String?
    public var outputDataclipID: String?
    public var reason: String?
    public var errorType: String?
    public var errorMessage: String?
    public var startedAt: Int64
    public var finishedAt: Int64?
}

/// A log line to store; `message` is already joined, control characters stripped, and scrubbed.
public struct NewLogLine: Sendable, Equatable {
    public var stepID: String?
    public var level: String
    public var source: String
    public var message: String
    public var timestamp: Int64
    /// The worker's own per-attempt line counter (our extension, `worker_seq`): a line resent after a lost reply
    /// carries the same number and is stored once. Nil for workers that do not send it.
    public var workerSeq: Int64?
    public init(stepID: String?, level: String, source: String, message: String, timestamp: Int64, workerSeq: Int64? = nil) {
        self.workerSeq = workerSeq
        self.stepID = stepID
        self.level = level
        self.source = source
        self.message = message
        self.timestamp = timestamp
    }
}

public struct LogLineRecord: Sendable, Equatable {
    public var attemptID: String
    /// Gap-free, per attempt, from 1.
    public var seq: Int64
    public var stepID: String?
    public var level: String
    public var source: String
    public var message: String
    public var timestamp: Int64
}

public struct WorkerRecord: Sendable, Equatable {
    public var name: String
    public var capacity: Int
    public var version: String?
    public var connectedAt: Int64?
    public var lastSeenAt: Int64?
    public var disconnectedAt: Int64?
    public var currentAttempts: Int
    public var host: String? = nil
    public var labels: [String] = []
    public var deploymentID: String? = nil
    public var group: String? = nil
    public var instanceID: String? = nil
    /// `secret` (WORKER_SECRET) or `token` (registered), as of its last join.
    public var authMode: String? = nil
    public var credentialExpiresAt: Int64? = nil
    public var revokedAt: Int64? = nil
    public var control: WorkerControl? = nil
}

/// What a worker says of itself when it joins `worker:queue`.
public struct WorkerJoin: Sendable, Equatable {
    public var name: String
    public var capacity: Int
    public var version: String?
    public var host: String? = nil
    public var labels: [String] = []
    public var deploymentID: String? = nil
    public var group: String? = nil
    public var instanceID: String? = nil
    public var authMode: String
    public var credentialExpiresAt: Int64? = nil
    /// The connection this join came on (its replica and socket), so that only its own disconnect is recorded.
    public var connectionID: String? = nil

    public init(name: String, capacity: Int, version: String?, authMode: String) {
        self.name = name
        self.capacity = capacity
        self.version = version
        self.authMode = authMode
    }
}

/// Fleet control in force for one worker process: paused, or draining with a policy and a deadline.
public struct WorkerControl: Codable, Sendable, Equatable {
    public enum Action: String, Codable, Sendable { case drain, pause }
    public enum Policy: String, Codable, Sendable, CaseIterable { case finish, requeue, cancel }
    public var action: Action
    public var policy: Policy?
    /// Microseconds since the epoch.
    public var deadlineAt: Int64?
    public var stay: Bool?
    /// The worker process it was given to (a restarted worker is not drained again).
    public var instanceID: String?

    public init(action: Action, policy: Policy? = nil, deadlineAt: Int64? = nil, stay: Bool? = nil, instanceID: String?) {
        self.action = action
        self.policy = policy
        self.deadlineAt = deadlineAt
        self.stay = stay
        self.instanceID = instanceID
    }

    enum CodingKeys: String, CodingKey {
        case action, policy, stay
        case deadlineAt = "deadline_at"
        case instanceID = "instance_id"
    }
}

/// What decides whether a worker's credential is still good.
public struct WorkerAuthState: Sendable, Equatable {
    /// Moved on by every registration used and every revocation: auth tokens of another generation are refused.
    public var generation: Int64
    /// Revoked and not registered again since.
    public var revokedAt: Int64?
    /// Revoked once: the shared secret is refused for this name from then on.
    public var secretRevokedAt: Int64?
}

/// A registration token's record (its secret is the signed token itself; this keeps it single use).
public struct WorkerRegistration: Sendable, Equatable {
    public var jti: String
    public var workerName: String
    public var expiresAt: Int64
    public var usedAt: Int64?
}

/// What Lightning keeps: narrow repositories, one per concern, which the server's parts take separately (the
/// viewer hub reads attempts and logs, the cron scheduler cron and the queue). `SQLStore` implements them all once,
/// over SQLite or PostgreSQL (`StoreDatabase`).
public protocol LightningStore: WorkflowRepository, CredentialRepository, QueueRepository, AttemptRepository, LogRepository,
    WorkerRepository, OperatorRepository, CronRepository, ClusterBus {}

/// Workflows: definitions applied as immutable snapshots, and what the console shows of them.
public protocol WorkflowRepository: Sendable {
    func applyWorkflow(_ definition: WorkflowDefinition) async throws -> AppliedWorkflow
    func workflows() async throws -> [WorkflowSummary]
    func workflowDetail(_ nameOrID: String) async throws -> WorkflowDetail
}

/// Credentials, sealed at rest; only workers running an attempt that names one get its body.
public protocol CredentialRepository: Sendable {
    func setCredential(name: String, body: [UInt8]) async throws -> String
    func credentialBody(id: String) async throws -> [UInt8]
    func credentialIDs(attemptID: String) async throws -> Set<String>
    func allCredentialBodies() async throws -> [[UInt8]]
}

/// The queue: work orders in, attempts claimed FIFO within each workflow's concurrency, reruns.
public protocol QueueRepository: Sendable {
    /// Creates a work order and its attempt. `ordered`, when given, is called as soon as a claim started from then on
    /// would find the attempt, which may be before the commit (see `StoreDatabase.write`); the call returns once committed.
    func createWorkOrder(workflow: String, input: [UInt8], ordered: (@Sendable (CreatedWork) -> Void)?) async throws -> CreatedWork
    func createWorkOrder(webhookPath: String, input: [UInt8], ordered: (@Sendable (CreatedWork) -> Void)?) async throws -> CreatedWork
    func claim(demand: Int, workerName: String) async throws -> [ClaimedAttempt]
    func unclaim(_ ids: [String], workerName: String) async throws
    /// Puts back in the queue the attempts claimed by `workerName` before `claimedBefore` that it does not hold
    /// (it said so as it joined: their claim replies never reached it). Returns their ids.
    func releaseClaims(workerName: String, keeping held: Set<String>, claimedBefore: Int64) async throws -> [String]
    /// A new attempt of the same work order: from the start, or from a step of this attempt with its recorded input.
    /// `by`: the operator, recorded on the attempt (a rerun does not count against the workflow's automatic retries).
    func rerun(attemptID: String, fromStep: String?, by: String, at now: Int64) async throws -> CreatedWork
}

extension QueueRepository {
    public func createWorkOrder(workflow: String, input: [UInt8]) async throws -> CreatedWork {
        try await createWorkOrder(workflow: workflow, input: input, ordered: nil)
    }

    public func createWorkOrder(webhookPath: String, input: [UInt8]) async throws -> CreatedWork {
        try await createWorkOrder(webhookPath: webhookPath, input: input, ordered: nil)
    }
}

/// Attempts and their steps: what workers report, what operators read, the janitor's sweep.
public protocol AttemptRepository: Sendable {
    func attempt(_ id: String) async throws -> AttemptRecord
    func attempts(state: AttemptState?, limit: Int) async throws -> [AttemptRecord]
    /// Attempts of the work order, oldest first (the retry chain).
    func attempts(workOrderID: String) async throws -> [AttemptRecord]
    func attempts(matching filter: AttemptFilter) async throws -> AttemptPage
    func plan(attemptID: String) async throws -> Plan
    func dataclip(_ id: String) async throws -> [UInt8]
    /// The body when it is at most `maxBytes` long; nil when it is longer (then it is not read) or missing.
    func dataclip(_ id: String, atMost maxBytes: Int) async throws -> [UInt8]?
    func dataclipRecord(_ id: String) async throws -> (type: String, body: [UInt8])
    /// Each worker event below is idempotent: a resend after a lost reply returns `false` (nothing changed).
    @discardableResult func startAttempt(_ id: String, workerName: String, at: Int64) async throws -> Bool
    @discardableResult func startStep(attemptID: String, stepID: String, jobID: String, inputDataclipID: String?, at: Int64)
        async throws -> Bool
    @discardableResult func completeStep(attemptID: String, _ step: StepComplete, outputState: [UInt8]?, at: Int64)
        async throws -> Bool
    /// `finalState` is stored as a new dataclip unless `complete.finalDataclipID` names a step output of this
    /// attempt, which is then reused. A resend of the stored completion (same reason) is acknowledged unchanged;
    /// any other event for a final attempt is refused.
    @discardableResult func completeAttempt(_ id: String, _ complete: AttemptComplete, finalState: [UInt8]?, at: Int64)
        async throws -> AttemptCompletion
    /// Ends a claimed attempt whose token its worker refused (`exception`, with the worker's reason).
    func refuseClaim(_ id: String, workerName: String, reason: String, at: Int64) async throws -> AttemptCompletion
    func cancel(_ id: String, at: Int64) async throws -> AttemptState
    func attemptResult(_ id: String) async throws -> AttemptResult
    func steps(attemptID: String) async throws -> [StepRecord]
    /// Marks lost every unfinished attempt of the `goneWorkers` (gone from this replica past the grace period), and
    /// every attempt whose claim is older than its timeout plus `graceMicros`. Returns the ids marked lost. Liveness
    /// is shared through the database: a worker whose record says connected and was seen within `aliveWithinMicros`
    /// (its replica refreshes it), or that left some replica within the grace period, is left alone.
    /// `spared`: the gone workers left alone this time (to be looked at again).
    func markLost(goneWorkers: [String], now: Int64, graceMicros: Int64, aliveWithinMicros: Int64) async throws
        -> (lost: [String], spared: [String])
    func attemptCounts() async throws -> [AttemptState: Int]
}

/// Log lines, numbered per attempt in the order they were stored.
public protocol LogRepository: Sendable {
    func appendLogs(attemptID: String, _ lines: [NewLogLine]) async throws -> AppendedLogs
    func logs(attemptID: String, since: Int64, limit: Int) async throws -> [LogLineRecord]
    /// The attempt's highest log seq (0 when it has none).
    func lastLogSeq(attemptID: String) async throws -> Int64
    func logLineCount() async throws -> Int64
}

/// Workers: who is connected, their credentials (docs/workers.md) and fleet control.
public protocol WorkerRepository: Sendable {
    /// Workers that hold claimed or started attempts, with when they disconnected (nil: the record says
    /// connected, e.g. Lightning was killed while they were).
    func workersHoldingAttempts() async throws -> [(name: String, disconnectedAt: Int64?)]
    func workerConnected(_ join: WorkerJoin, at: Int64) async throws
    /// Worker credentials (docs/workers.md): a registration for `name`, valid until `expiresAt`.
    func createWorkerRegistration(name: String, jti: String, expiresAt: Int64, by: String, at: Int64) async throws
    /// The registration with this id, or nil. Synchronous, for the socket's upgrade check.
    func workerRegistration(jti: String) throws -> WorkerRegistration?
    /// Uses a registration once: moves the worker's credential generation on (earlier tokens are refused from
    /// then on), clears a revocation, and returns the new generation. Throws `.conflict` when already used or
    /// expired.
    func useWorkerRegistration(jti: String, name: String, at: Int64) async throws -> Int64
    /// The worker's credential generation and revocations. Synchronous, for the socket's upgrade check.
    func workerAuthState(name: String) throws -> WorkerAuthState?
    /// Revokes a worker: its tokens and unused registrations are refused from now on. False when unknown.
    func revokeWorker(name: String, at: Int64) async throws -> Bool
    func workerCredentialRenewed(name: String, expiresAt: Int64) async throws
    /// The fleet control in force for this worker (nil: none).
    func workerControl(name: String) async throws -> WorkerControl?
    /// Sets (or clears, with nil) the fleet control of these workers.
    func setWorkerControl(_ controls: [(name: String, control: WorkerControl?)]) async throws
    /// Records the worker gone, if the record still describes this connection (it may have joined another replica
    /// since: that one's record stands).
    func workerDisconnected(name: String, connectionID: String?, at: Int64) async throws
    /// Heartbeat: these connections' workers are connected (to this replica) at `at`.
    func workersSeen(connectionIDs: [String], at: Int64) async throws
    func workers() async throws -> [WorkerRecord]
}

/// Operator tokens and console sessions (PROTOCOL.md 6).
public protocol OperatorRepository: Sendable {
    func createOperatorToken(name: String, role: OperatorToken.Role) async throws -> (record: OperatorTokenRecord, secret: String)
    /// The live (not revoked) token with this plaintext, or nil. Synchronous (one indexed read), so that the
    /// socket's upgrade hook can answer 401 itself.
    func verifyOperatorToken(secret: String) throws -> OperatorTokenRecord?
    /// Records a token's use (to the minute).
    func touchOperatorToken(_ record: OperatorTokenRecord, at: Int64) async throws
    func operatorTokens() async throws -> [OperatorTokenRecord]
    /// Revokes by id or by name; returns how many were revoked.
    func revokeOperatorToken(_ idOrName: String, at: Int64) async throws -> Int
    /// A new session for a live operator token; returns the cookie's secret (only its hash is kept).
    func createConsoleSession(tokenID: String, lifetimeMicros: Int64, at now: Int64) async throws -> String
    /// Synchronous, like `verifyOperatorToken`: the socket's upgrade hook checks the cookie itself.
    func consoleSession(secret: String, at now: Int64) throws -> ConsoleSession?
    func endConsoleSession(secret: String, at now: Int64) async throws
}

/// Cron triggers and their next due slots.
public protocol CronRepository: Sendable {
    func cronTriggers() async throws -> [CronTrigger]
    /// Fires `trigger` for the slot `due` if that slot is still its next due one: advances it to `next` and
    /// makes the work order in one transaction. Returns nil when another scheduler (or an earlier run) fired it.
    func fireCron(_ trigger: CronTrigger, due: Int64, next: Int64) async throws -> CreatedWork?
    /// Records the first due slot of a trigger seen for the first time; keeps an existing one.
    func scheduleCron(_ trigger: CronTrigger, next: Int64) async throws -> Int64
}

/// Replicas on one database (PostgreSQL): what one tells the others. Nothing is sent or heard with SQLite.
public protocol ClusterBus: Sendable {
    func publish(_ signal: ClusterSignal) async throws
    func subscribe(_ handler: @escaping @Sendable (ClusterSignal) -> Void)
}

public struct OperatorTokenRecord: Sendable, Equatable {
    public var id: String
    public var name: String
    public var role: OperatorToken.Role
    public var insertedAt: Int64
    public var lastUsedAt: Int64?
    public var revokedAt: Int64?
}

public struct CronTrigger: Sendable, Equatable {
    public var workflowID: String
    public var workflowName: String
    public var triggerID: String
    public var triggerName: String
    public var expression: String
    /// The stored next due slot (µs), when the scheduler has seen this trigger before.
    public var nextSlot: Int64?
}

/// The console's and the API's attempt filters; `before` is the cursor of the page before (an attempt's seq).
public struct AttemptFilter: Sendable, Equatable {
    public var state: AttemptState?
    public var workflow: String?
    /// Inserted at or after / before, in microseconds.
    public var since: Int64?
    public var until: Int64?
    /// Text in the attempt's log lines.
    public var text: String?
    public var before: Int64?
    public var limit: Int = 50
    public init(state: AttemptState? = nil, workflow: String? = nil, since: Int64? = nil, until: Int64? = nil, text: String? = nil,
                before: Int64? = nil, limit: Int = 50) {
        self.state = state; self.workflow = workflow; self.since = since; self.until = until; self.text = text
        self.before = before; self.limit = limit
    }
}

public struct ConsoleSession: Sendable, Equatable {
    public var token: OperatorTokenRecord
    /// SHA-256 of the cookie's secret: how the session is named in the store and on its sockets.
    public var hash: String
    public var expiresAt: Int64
}

public struct AttemptPage: Sendable, Equatable {
    public var attempts: [AttemptRecord]
    /// Pass as `before` for the next, older page; nil on the last page.
    public var nextBefore: Int64?
}

public struct WorkflowDetail: Sendable, Equatable {
    public struct Version: Sendable, Equatable { public var version: Int; public var snapshotID: String; public var insertedAt: Int64 }
    public struct Job: Sendable, Equatable { public var id: String; public var name: String; public var adaptor: String; public var credential: String? }
    public struct Trigger: Sendable, Equatable {
        public var id: String; public var name: String; public var type: String; public var webhookPath: String?; public var cron: String?
    }
    public var id: String
    public var name: String
    public var version: Int
    public var concurrency: Int?
    public var versions: [Version]
    public var jobs: [Job]
    public var triggers: [Trigger]
    public var edges: [Plan.Edge]
}
