/// The plan of one attempt (PROTOCOL.md 5.1), built by Lightning from the immutable workflow snapshot taken
/// when the work order was created, and fetched by the worker with `fetch:plan`.
public struct Plan: Codable, Sendable, Equatable {
    /// The `credential_id` of a job whose credential is named but not set: fetching it fails, by design.
    public static let missingCredentialPrefix = "missing:"

    public var id: String
    public var dataclipID: String
    public var startingNodeID: String
    public var triggers: [Trigger]
    public var jobs: [Job]
    public var edges: [Edge]
    public var options: Options

    public init(
        id: String, dataclipID: String, startingNodeID: String, triggers: [Trigger], jobs: [Job],
        edges: [Edge], options: Options
    ) {
        self.id = id
        self.dataclipID = dataclipID
        self.startingNodeID = startingNodeID
        self.triggers = triggers
        self.jobs = jobs
        self.edges = edges
        self.options = options
    }

    enum CodingKeys: String, CodingKey {
        case id, triggers, jobs, edges, options
        case dataclipID = "dataclip_id"
        case startingNodeID = "starting_node_id"
    }

    /// Reads a plan as the lexicon (`LightningPlan`) declares it: `id`, `dataclip_id`, `starting_node_id`,
    /// `jobs` and `edges` required (`triggers` and `options` may be absent), fields it does not know ignored.
    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        id = try c.decode(String.self, forKey: .id)
        dataclipID = try c.decode(String.self, forKey: .dataclipID)
        startingNodeID = try c.decode(String.self, forKey: .startingNodeID)
        triggers = try c.decodeIfPresent([Trigger].self, forKey: .triggers) ?? []
        jobs = try c.decode([Job].self, forKey: .jobs)
        edges = try c.decodeIfPresent([Edge].self, forKey: .edges) ?? []
        options = try c.decodeIfPresent(Options.self, forKey: .options) ?? Options()
    }

    public struct Trigger: Codable, Sendable, Equatable {
        public var id: String
        public init(id: String) { self.id = id }
    }

    public struct Job: Codable, Sendable, Equatable {
        public var id: String
        public var name: String
        public var body: String
        public var adaptor: String
        public var credentialID: String?

        public init(id: String, name: String, body: String, adaptor: String, credentialID: String? = nil) {
            self.id = id
            self.name = name
            self.body = body
            self.adaptor = adaptor
            self.credentialID = credentialID
        }

        enum CodingKeys: String, CodingKey {
            case id, name, body, adaptor
            case credentialID = "credential_id"
        }

        /// `id` and `adaptor` are required (lexicon `LightningJob`); a job without a name is called by its id,
        /// one without a body has an empty one.
        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            id = try c.decode(String.self, forKey: .id)
            name = try c.decodeIfPresent(String.self, forKey: .name) ?? id
            body = try c.decodeIfPresent(String.self, forKey: .body) ?? ""
            adaptor = try c.decode(String.self, forKey: .adaptor)
            credentialID = try c.decodeIfPresent(String.self, forKey: .credentialID)
        }
    }

    public struct Edge: Codable, Sendable, Equatable {
        public var id: String
        public var sourceTriggerID: String?
        public var sourceJobID: String?
        public var targetJobID: String
        /// `always`, `on_job_success`, `on_job_failure`, or an expression (see `EdgeCondition`).
        public var condition: String
        public var enabled: Bool

        public init(
            id: String, sourceTriggerID: String? = nil, sourceJobID: String? = nil, targetJobID: String,
            condition: String = "always", enabled: Bool = true
        ) {
            self.id = id
            self.sourceTriggerID = sourceTriggerID
            self.sourceJobID = sourceJobID
            self.targetJobID = targetJobID
            self.condition = condition
            self.enabled = enabled
        }

        enum CodingKeys: String, CodingKey {
            case id, condition, enabled
            case sourceTriggerID = "source_trigger_id"
            case sourceJobID = "source_job_id"
            case targetJobID = "target_job_id"
        }

        // Always write both source keys, null included, as Lightning does.
        public func encode(to encoder: any Encoder) throws {
            var c = encoder.container(keyedBy: CodingKeys.self)
            try c.encode(id, forKey: .id)
            try c.encode(sourceTriggerID, forKey: .sourceTriggerID)
            try c.encode(sourceJobID, forKey: .sourceJobID)
            try c.encode(targetJobID, forKey: .targetJobID)
            try c.encode(condition, forKey: .condition)
            try c.encode(enabled, forKey: .enabled)
        }

        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            id = try c.decode(String.self, forKey: .id)
            sourceTriggerID = try c.decodeIfPresent(String.self, forKey: .sourceTriggerID)
            sourceJobID = try c.decodeIfPresent(String.self, forKey: .sourceJobID)
            targetJobID = try c.decode(String.self, forKey: .targetJobID)
            condition = try c.decodeIfPresent(String.self, forKey: .condition) ?? "always"
            enabled = try c.decodeIfPresent(Bool.self, forKey: .enabled) ?? true
        }
    }

    public struct Options: Codable, Sendable, Equatable {
        public var runTimeoutMS: Int
        public var runMemoryLimitMB: Int
        public var outputDataclips: Bool
        public var payloadLimitMB: Int
        public var logPayloadLimitMB: Int
        /// All the log output one attempt may send, in MB (our extension, default 100): past it the worker drops
        /// lines and says how many, and Lightning stores no more.
        public var logLimitMB: Int

        public init(
            runTimeoutMS: Int = Wire.defaultRunTimeoutMS, runMemoryLimitMB: Int = Wire.defaultMemoryLimitMB,
            outputDataclips: Bool = true, payloadLimitMB: Int = Wire.defaultPayloadLimitMB,
            logPayloadLimitMB: Int = Wire.defaultLogPayloadLimitMB, logLimitMB: Int = Wire.defaultLogLimitMB
        ) {
            self.logLimitMB = logLimitMB
            self.runTimeoutMS = runTimeoutMS
            self.runMemoryLimitMB = runMemoryLimitMB
            self.outputDataclips = outputDataclips
            self.payloadLimitMB = payloadLimitMB
            self.logPayloadLimitMB = logPayloadLimitMB
        }

        enum CodingKeys: String, CodingKey {
            case runTimeoutMS = "run_timeout_ms"
            case runMemoryLimitMB = "run_memory_limit_mb"
            case outputDataclips = "output_dataclips"
            case payloadLimitMB = "payload_limit_mb"
            case logPayloadLimitMB = "log_payload_limit_mb"
            case logLimitMB = "log_limit_mb"
        }

        // Every option may be absent on the wire: absent means the default.
        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            let d = Options()
            runTimeoutMS = try c.decodeIfPresent(Int.self, forKey: .runTimeoutMS) ?? d.runTimeoutMS
            runMemoryLimitMB = try c.decodeIfPresent(Int.self, forKey: .runMemoryLimitMB) ?? d.runMemoryLimitMB
            outputDataclips = try c.decodeIfPresent(Bool.self, forKey: .outputDataclips) ?? d.outputDataclips
            payloadLimitMB = try c.decodeIfPresent(Int.self, forKey: .payloadLimitMB) ?? d.payloadLimitMB
            logPayloadLimitMB = try c.decodeIfPresent(Int.self, forKey: .logPayloadLimitMB) ?? d.logPayloadLimitMB
            logLimitMB = try c.decodeIfPresent(Int.self, forKey: .logLimitMB) ?? d.logLimitMB
        }
    }

    /// Enabled edges leaving a node (a trigger or a job), in plan order.
    public func edges(from nodeID: String) -> [Edge] {
        edges.filter { $0.enabled && ($0.sourceJobID == nodeID || $0.sourceTriggerID == nodeID) }
    }

    public func job(_ id: String) -> Job? { jobs.first { $0.id == id } }
}
