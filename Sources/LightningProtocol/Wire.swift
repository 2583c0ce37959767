/// The one mapping between the wire's vocabulary and ours (PROTOCOL.md, "Words").
///
/// Lightning's newer wire names say "run" where our code, CLI and docs say "attempt". Every topic and event
/// name used on a socket comes from here and nowhere else.
///
/// | ours                     | wire                 |
/// |--------------------------|----------------------|
/// | attempt channel          | `run:<id>`           |
/// | attempt started          | `run:start`          |
/// | attempt complete         | `run:complete`       |
/// | attempt log line         | `run:log`            |
/// | attempt log batch        | `run:batch_logs`     |
/// | cancel an attempt        | `run:cancel`         |
/// | claim reply list         | `runs`               |
/// | attempt id in log lines  | `run_id`             |
/// | operator attempt channel | `attempt:<id>`       |
public enum Wire {
    public enum Topic {
        public static let queue = "worker:queue"
        public static let attemptPrefix = "run:"
        public static let operatorAttemptPrefix = "attempt:"
        public static let phoenix = "phoenix"

        public static func attempt(_ id: String) -> String { attemptPrefix + id }
        public static func operatorAttempt(_ id: String) -> String { operatorAttemptPrefix + id }

        /// The attempt id of a `run:<id>` topic, or nil.
        public static func attemptID(fromAttemptTopic topic: String) -> String? {
            guard topic.hasPrefix(attemptPrefix) else { return nil }
            let id = String(topic.dropFirst(attemptPrefix.count))
            return id.isEmpty ? nil : id
        }
        public static func attemptID(fromOperatorTopic topic: String) -> String? {
            guard topic.hasPrefix(operatorAttemptPrefix) else { return nil }
            let id = String(topic.dropFirst(operatorAttemptPrefix.count))
            return id.isEmpty ? nil : id
        }
    }

    public enum Event {
        // Phoenix
        public static let join = "phx_join"
        public static let leave = "phx_leave"
        public static let reply = "phx_reply"
        public static let close = "phx_close"
        public static let error = "phx_error"
        public static let heartbeat = "heartbeat"
        // worker:queue
        public static let claim = "claim"
        public static let workAvailable = "work-available"
        /// Our extension: a worker tells Lightning it refused a claimed attempt's token (`{"id", "reason"}`).
        public static let attemptRefused = "run:refused"
        // run:<id>, worker -> Lightning
        public static let fetchPlan = "fetch:plan"
        public static let fetchDataclip = "fetch:dataclip"
        public static let fetchCredential = "fetch:credential"
        public static let attemptStart = "run:start"
        public static let stepStart = "step:start"
        public static let log = "run:log"
        public static let batchLogs = "run:batch_logs"
        public static let stepComplete = "step:complete"
        public static let attemptComplete = "run:complete"
        // run:<id>, Lightning -> worker (our extension)
        public static let cancel = "run:cancel"
        /// Our extensions on `worker:queue` (docs/workers.md): a registered worker asks for a fresh auth token;
        /// Lightning tells a worker to drain, pause or resume.
        public static let workerRenew = "worker:renew"
        public static let workerControl = "worker:control"
        // attempt:<id>, Lightning -> operators
        public static let operatorLog = "log"
        public static let operatorStepStart = "step:start"
        public static let operatorStepComplete = "step:complete"
        public static let operatorAttemptUpdate = "attempt:update"
        public static let operatorAttemptComplete = "attempt:complete"
    }

    /// Paths of the socket endpoints (PROTOCOL.md 1 and 6).
    public enum Path {
        public static let workerSocket = "/worker/websocket"
        public static let operatorSocket = "/socket/websocket"
    }

    /// Our extensions to the worker protocol, named in `worker:queue` join payloads (by workers) and replies (by
    /// Lightning): each side uses one only when the other named it, so OpenFn's workers and Lightning never see them.
    public enum Extension {
        /// A worker tells Lightning it refused a claimed attempt's token (`run:refused` on `worker:queue`).
        public static let attemptRefused = Event.attemptRefused
        /// Claim replies carry each attempt's plan and (when small) its input dataclip, saving the worker its
        /// `fetch:plan` and `fetch:dataclip` round trips.
        public static let claimCheckout = "claim:checkout"
        /// The worker understands `worker:control` pushes (drain, pause, resume); Lightning sends them only then.
        public static let fleetControl = Event.workerControl
        /// The worker renews a registered credential with `worker:renew`.
        public static let workerRenew = Event.workerRenew
    }
    /// The error type of an attempt a drain stopped to put back (`--policy requeue`): Lightning makes a new
    /// attempt of its work order.
    public static let requeuedErrorType = "Requeued"
    /// A worker name that a credential can be bound to: 1-100 ASCII letters, digits, `-`, `_`, `.` or `:`.
    public static func isWorkerName(_ name: String) -> Bool {
        (1...100).contains(name.count) && name.allSatisfy { $0.isASCII && ($0.isLetter || $0.isNumber || "-_.:".contains($0)) }
    }
    /// Query parameter a worker presents a registration token in (instead of `token`).
    public static let registrationTokenParameter = "registration_token"

    /// Largest input dataclip a claim reply carries (larger ones are fetched as usual).
    public static let claimCheckoutMaxDataclipBytes = 64 * 1024

    /// Issuers of the two token kinds (PROTOCOL.md 2 and 4).
    public static let workerTokenIssuer = "urn:openfn:worker"
    public static let attemptTokenIssuer = "Lightning"
    /// Clock leeway for `exp`/`nbf` checks, in seconds.
    public static let tokenLeewaySeconds = 5

    /// Default limits (PROTOCOL.md 1 and 5). The largest message Lightning takes is 32 MB, over PROTOCOL.md's
    /// 11,000,000: a state at the default payload limit, sent as a JSON string by a worker that counts the limit before
    /// escaping (OpenFn's ws-worker), can take twice its size; every message a peer keeping to 11 MB sends still fits.
    public static let maxMessageBytes = 32_000_000
    /// The largest message OpenFn's Lightning takes (PROTOCOL.md 1): what a worker assumes of a Lightning that does not
    /// name its own limit in the `worker:queue` join reply (`max_message_bytes`, our extension).
    public static let protocolMaxMessageBytes = 11_000_000
    public static let maxMessageBytesField = "max_message_bytes"
    public static let defaultPayloadLimitMB = 10
    public static let defaultLogPayloadLimitMB = 1
    public static let defaultRunTimeoutMS = 300_000
    public static let defaultMemoryLimitMB = 500
    public static let defaultLogLimitMB = 100
}
