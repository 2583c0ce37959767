/// Payloads of the worker protocol (PROTOCOL.md 3 and 5), as our worker sends them.
/// Lightning decodes the same types, tolerating what other workers may add.

public struct QueueJoin: Codable, Sendable, Equatable {
    public var capacity: Int
    public var queues: [String: Int]?
    public init(capacity: Int, queues: [String: Int]? = nil) {
        self.capacity = capacity
        self.queues = queues
    }
}

public struct ClaimRequest: Codable, Sendable, Equatable {
    public var demand: Int
    public var workerName: String?
    public var queues: [String]?
    public init(demand: Int, workerName: String?, queues: [String]? = ["manual", "*"]) {
        self.demand = demand
        self.workerName = workerName
        self.queues = queues
    }
    enum CodingKeys: String, CodingKey {
        case demand, queues
        case workerName = "worker_name"
    }
}

public struct ClaimReply: Codable, Sendable, Equatable {
    public struct Claimed: Codable, Sendable, Equatable {
        public var id: String
        public var token: String
        public init(id: String, token: String) {
            self.id = id
            self.token = token
        }
    }
    /// The wire calls claimed attempts "runs".
    public var runs: [Claimed]
    public init(runs: [Claimed]) { self.runs = runs }
}

public struct AttemptJoin: Codable, Sendable, Equatable {
    public var token: String
    public init(token: String) { self.token = token }
}

public struct FetchByID: Codable, Sendable, Equatable {
    public var id: String
    public init(id: String) { self.id = id }
}

public struct AttemptStart: Codable, Sendable, Equatable {
    public var versions: [String: String]
    public var timestamp: String
    public init(versions: [String: String], timestamp: String = Timestamp.now()) {
        self.versions = versions
        self.timestamp = timestamp
    }
}

public struct StepStart: Codable, Sendable, Equatable {
    public var stepID: String
    public var jobID: String
    public var inputDataclipID: String?
    public var timestamp: String
    public init(stepID: String, jobID: String, inputDataclipID: String?, timestamp: String = Timestamp.now()) {
        self.stepID = stepID
        self.jobID = jobID
        self.inputDataclipID = inputDataclipID
        self.timestamp = timestamp
    }
    enum CodingKeys: String, CodingKey {
        case timestamp
        case stepID = "step_id"
        case jobID = "job_id"
        case inputDataclipID = "input_dataclip_id"
    }
}

public struct StepReply: Codable, Sendable, Equatable {
    public var stepID: String
    public init(stepID: String) { self.stepID = stepID }
    enum CodingKeys: String, CodingKey { case stepID = "step_id" }
}

/// One log line as our worker sends it. `message` items are strings here; Lightning also accepts any JSON
/// values from other workers and joins them with a space.
public struct LogLine: Codable, Sendable, Equatable {
    public var attemptID: String
    public var message: [String]
    public var level: LogLevel
    public var source: String
    public var timestamp: String
    public var stepID: String?
    public init(
        attemptID: String, message: [String], level: LogLevel, source: String, timestamp: String = Timestamp.now(),
        stepID: String? = nil
    ) {
        self.attemptID = attemptID
        self.message = message
        self.level = level
        self.source = source
        self.timestamp = timestamp
        self.stepID = stepID
    }
    enum CodingKeys: String, CodingKey {
        case message, level, source, timestamp
        case attemptID = "run_id"
        case stepID = "step_id"
    }
}

public struct BatchLogs: Codable, Sendable, Equatable {
    public var attemptID: String
    public var logs: [LogLine]
    public init(attemptID: String, logs: [LogLine]) {
        self.attemptID = attemptID
        self.logs = logs
    }
    enum CodingKeys: String, CodingKey {
        case logs
        case attemptID = "run_id"
    }
}

public struct LogReply: Codable, Sendable, Equatable {
    public var logLineID: String
    public init(logLineID: String) { self.logLineID = logLineID }
    enum CodingKeys: String, CodingKey { case logLineID = "log_line_id" }
}

public struct MemoryUse: Codable, Sendable, Equatable {
    public var job: Int64
    public var system: Int64
    public init(job: Int64, system: Int64) {
        self.job = job
        self.system = system
    }
}

/// PROTOCOL.md 5.2.
public struct StepComplete: Codable, Sendable, Equatable {
    public var stepID: String
    public var jobID: String
    public var reason: ExitReason
    public var errorType: String?
    public var errorMessage: String?
    public var outputDataclipID: String?
    /// The output state as a JSON string; omitted when `output_dataclips` is false or the payload limit is hit.
    public var outputDataclip: String?
    /// `DATACLIP_TOO_LARGE` when the output was over the payload limit.
    public var outputDataclipError: String?
    public var mem: MemoryUse
    /// Milliseconds.
    public var duration: Int64
    public var threadID: String
    public var timestamp: String

    public init(
        stepID: String, jobID: String, reason: ExitReason, errorType: String? = nil, errorMessage: String? = nil,
        outputDataclipID: String? = nil, outputDataclip: String? = nil, outputDataclipError: String? = nil,
        mem: MemoryUse = MemoryUse(job: 0, system: 0), duration: Int64 = 0, threadID: String = "0",
        timestamp: String = Timestamp.now()
    ) {
        self.stepID = stepID
        self.jobID = jobID
        self.reason = reason
        self.errorType = errorType
        self.errorMessage = errorMessage
        self.outputDataclipID = outputDataclipID
        self.outputDataclip = outputDataclip
        self.outputDataclipError = outputDataclipError
        self.mem = mem
        self.duration = duration
        self.threadID = threadID
        self.timestamp = timestamp
    }

    enum CodingKeys: String, CodingKey {
        case reason, mem, duration, timestamp
        case stepID = "step_id"
        case jobID = "job_id"
        case errorType = "error_type"
        case errorMessage = "error_message"
        case outputDataclipID = "output_dataclip_id"
        case outputDataclip = "output_dataclip"
        case outputDataclipError = "output_dataclip_error"
        case threadID = "thread_id"
    }
}

/// PROTOCOL.md 5.3.
public struct AttemptComplete: Codable, Sendable, Equatable {
    public var reason: ExitReason
    public var errorType: String?
    public var errorMessage: String?
    public var finalDataclipID: String?
    /// The final state as a JSON string.
    public var finalState: String?
    public var timestamp: String

    public init(
        reason: ExitReason, errorType: String? = nil, errorMessage: String? = nil, finalDataclipID: String? = nil,
        finalState: String? = nil, timestamp: String = Timestamp.now()
    ) {
        self.reason = reason
        self.errorType = errorType
        self.errorMessage = errorMessage
        self.finalDataclipID = finalDataclipID
        self.finalState = finalState
        self.timestamp = timestamp
    }

    enum CodingKeys: String, CodingKey {
        case reason, timestamp
        case errorType = "error_type"
        case errorMessage = "error_message"
        case finalDataclipID = "final_dataclip_id"
        case finalState = "final_state"
    }
}

public struct CancelRequest: Codable, Sendable, Equatable {
    public var reason: String
    public init(reason: String) { self.reason = reason }
}

/// `{"errors": {"<field>": ["message"]}}`, the body of an error reply.
public struct ErrorsReply: Codable, Sendable, Equatable {
    public var errors: [String: [String]]
    public init(errors: [String: [String]]) { self.errors = errors }
    public init(_ field: String, _ message: String) { self.errors = [field: [message]] }
}
