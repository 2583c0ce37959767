import Channels

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

    /// The JSON its `Encodable` form makes (absent optionals left out), built directly.
    public var wire: JSON {
        var o: [String: JSON] = ["demand": .int(Int64(demand))]
        if let workerName { o["worker_name"] = .string(workerName) }
        if let queues { o["queues"] = .array(queues.map(JSON.string)) }
        return .object(o)
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
    public var timestamp: String?
    public init(stepID: String, jobID: String, inputDataclipID: String?, timestamp: String? = Timestamp.now()) {
        self.stepID = stepID
        self.jobID = jobID
        self.inputDataclipID = inputDataclipID
        self.timestamp = timestamp
    }

    /// Reads a `step:start` (lexicon `StepStartPayload`): `step_id` and `job_id` required.
    public init(wire payload: JSON) throws(WireFieldError) {
        let f = try WireFields(payload)
        stepID = try f.id("step_id")
        jobID = try f.id("job_id")
        inputDataclipID = f.text("input_dataclip_id")
        timestamp = f.timestamp().map(Timestamp.string)
    }

    public var wire: JSON {
        var j: JSON = ["step_id": .string(stepID), "job_id": .string(jobID)]
        j.set("input_dataclip_id", inputDataclipID.map(JSON.string))
        j.set("timestamp", timestamp.map(JSON.string))
        return j
    }

    public init(from decoder: any Decoder) throws { try self.init(wire: JSON(from: decoder)) }
    public func encode(to encoder: any Encoder) throws { try wire.encode(to: encoder) }
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

/// PROTOCOL.md 5.2, lexicon `StepCompletePayload`. Required: `step_id`, `job_id`, `reason`; everything else
/// optional and read liberally (see `WireFields`).
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
    public var mem: MemoryUse?
    /// Milliseconds.
    public var duration: Int64?
    /// ws-worker sends its engine thread as a number; we keep the text.
    public var threadID: String?
    public var timestamp: String?
    /// The step's `state.webhookResponse` (any JSON), for a webhook that waits on the result.
    public var webhookResponse: JSON?

    public init(
        stepID: String, jobID: String, reason: ExitReason, errorType: String? = nil, errorMessage: String? = nil,
        outputDataclipID: String? = nil, outputDataclip: String? = nil, outputDataclipError: String? = nil,
        mem: MemoryUse? = MemoryUse(job: 0, system: 0), duration: Int64? = 0, threadID: String? = nil,
        timestamp: String? = Timestamp.now(), webhookResponse: JSON? = nil
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
        self.webhookResponse = webhookResponse
    }

    public init(wire payload: JSON) throws(WireFieldError) {
        let f = try WireFields(payload)
        stepID = try f.id("step_id")
        jobID = try f.id("job_id")
        reason = try f.reason()
        errorType = f.text("error_type")
        errorMessage = f.text("error_message")
        outputDataclipID = f.text("output_dataclip_id")
        switch f.value("output_dataclip") {
        case .string(let s): outputDataclip = s
        // A worker that sends the state itself rather than its JSON text: keep it as text.
        case .some(let v) where v.objectValue != nil || v.arrayValue != nil: outputDataclip = v.text
        default: outputDataclip = nil
        }
        outputDataclipError = f.text("output_dataclip_error")
        if let m = f.value("mem").flatMap({ try? WireFields($0) }) {
            mem = MemoryUse(job: m.int("job") ?? 0, system: m.int("system") ?? 0)
        } else {
            mem = nil
        }
        duration = f.int("duration")
        threadID = f.text("thread_id")
        timestamp = f.timestamp().map(Timestamp.string)
        webhookResponse = f.value("webhook_response")
    }

    public var wire: JSON {
        var j: JSON = ["step_id": .string(stepID), "job_id": .string(jobID), "reason": .string(reason.rawValue)]
        // The lexicon declares these `string | null`: sent as null on success, never left out.
        j.set("error_type", nullable: errorType)
        j.set("error_message", nullable: errorMessage)
        j.set("output_dataclip_id", outputDataclipID.map(JSON.string))
        j.set("output_dataclip", outputDataclip.map(JSON.string))
        j.set("output_dataclip_error", outputDataclipError.map(JSON.string))
        j.set("mem", mem.map { ["job": .int($0.job), "system": .int($0.system)] })
        j.set("duration", duration.map(JSON.int))
        j.set("thread_id", threadID.map(JSON.string))
        j.set("timestamp", timestamp.map(JSON.string))
        j.set("webhook_response", webhookResponse)
        return j
    }

    public init(from decoder: any Decoder) throws { try self.init(wire: JSON(from: decoder)) }
    public func encode(to encoder: any Encoder) throws { try wire.encode(to: encoder) }
}

/// PROTOCOL.md 5.3, lexicon `RunCompletePayload`. Required: `reason`.
public struct AttemptComplete: Codable, Sendable, Equatable {
    public var reason: ExitReason
    public var errorType: String?
    public var errorMessage: String?
    /// The single leaf's output dataclip, reused as the attempt's final dataclip.
    public var finalDataclipID: String?
    /// The final state: a JSON object as ws-worker sends it (any JSON value is accepted).
    public var finalState: JSON?
    public var timestamp: String?

    public init(
        reason: ExitReason, errorType: String? = nil, errorMessage: String? = nil, finalDataclipID: String? = nil,
        finalState: JSON? = nil, timestamp: String? = Timestamp.now()
    ) {
        self.reason = reason
        self.errorType = errorType
        self.errorMessage = errorMessage
        self.finalDataclipID = finalDataclipID
        self.finalState = finalState
        self.timestamp = timestamp
    }

    public init(wire payload: JSON) throws(WireFieldError) {
        let f = try WireFields(payload)
        reason = try f.reason()
        errorType = f.text("error_type")
        errorMessage = f.text("error_message")
        finalDataclipID = f.text("final_dataclip_id")
        finalState = f.value("final_state")
        timestamp = f.timestamp().map(Timestamp.string)
    }

    public var wire: JSON {
        var j: JSON = ["reason": .string(reason.rawValue)]
        j.set("error_type", nullable: errorType)
        j.set("error_message", nullable: errorMessage)
        j.set("final_dataclip_id", finalDataclipID.map(JSON.string))
        j.set("final_state", finalState)
        j.set("timestamp", timestamp.map(JSON.string))
        return j
    }

    /// The final state as the bytes of a dataclip. A string is what our workers before 0.3 sent (the state's
    /// JSON text): when it parses, its content is the state; any other value is stored as it is.
    public var finalStateBytes: [UInt8]? {
        guard let finalState else { return nil }
        if case .string(let text) = finalState, let parsed = try? JSON.parse(text),
            parsed.objectValue != nil || parsed.arrayValue != nil
        {
            return Array(text.utf8)
        }
        return finalState.encoded()
    }

    public init(from decoder: any Decoder) throws { try self.init(wire: JSON(from: decoder)) }
    public func encode(to encoder: any Encoder) throws { try wire.encode(to: encoder) }
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
