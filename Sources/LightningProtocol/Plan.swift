import Channels

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

    /// The plan as Lightning sends it: the same JSON its `Encodable` form makes (a job's `credential_id` left out
    /// when it has none, both edge sources always written), built directly instead of through `JSONEncoder`.
    public var wire: JSON {
        .object([
            "id": .string(id), "dataclip_id": .string(dataclipID), "starting_node_id": .string(startingNodeID),
            "triggers": .array(triggers.map { .object(["id": .string($0.id)]) }),
            "jobs": .array(jobs.map { j in
                var o: [String: JSON] = ["id": .string(j.id), "name": .string(j.name), "body": .string(j.body),
                                         "adaptor": .string(j.adaptor)]
                if let c = j.credentialID { o["credential_id"] = .string(c) }
                return .object(o)
            }),
            "edges": .array(edges.map { e in
                .object(["id": .string(e.id), "source_trigger_id": e.sourceTriggerID.map(JSON.string) ?? .null,
                         "source_job_id": e.sourceJobID.map(JSON.string) ?? .null, "target_job_id": .string(e.targetJobID),
                         "condition": .string(e.condition), "enabled": .bool(e.enabled)])
            }),
            "options": .object([
                "run_timeout_ms": .int(Int64(options.runTimeoutMS)), "run_memory_limit_mb": .int(Int64(options.runMemoryLimitMB)),
                "output_dataclips": .bool(options.outputDataclips), "payload_limit_mb": .int(Int64(options.payloadLimitMB)),
                "log_payload_limit_mb": .int(Int64(options.logPayloadLimitMB)), "log_limit_mb": .int(Int64(options.logLimitMB)),
            ]),
        ])
    }

    /// Reads a plan from its JSON. A plan in the usual shape is read directly; anything else (other types, a
    /// missing field) goes through the `Decodable` reading, which gives the same result and names what is wrong.
    public init(wire: JSON) throws {
        if let plan = Self.direct(wire) {
            self = plan
        } else {
            self = try wire.decode(Plan.self)
        }
    }

    /// Nil unless every field has exactly the type the `Decodable` reading wants (never more lenient than it).
    private static func direct(_ wire: JSON) -> Plan? {
        guard case .object(let o) = wire, let id = o["id"]?.stringValue, let dataclipID = o["dataclip_id"]?.stringValue,
            let start = o["starting_node_id"]?.stringValue, let jobValues = o["jobs"]?.arrayValue
        else { return nil }
        func optionalString(_ o: [String: JSON], _ key: String) -> String?? {
            switch o[key] {
            case nil, .null?: return .some(nil)
            case .string(let s)?: return .some(s)
            default: return nil
            }
        }
        var triggers: [Trigger] = []
        switch o["triggers"] {
        case nil, .null?: break
        case .array(let a)?:
            for t in a {
                guard let tid = t.objectValue?["id"]?.stringValue else { return nil }
                triggers.append(Trigger(id: tid))
            }
        default: return nil
        }
        var jobs: [Job] = []
        jobs.reserveCapacity(jobValues.count)
        for value in jobValues {
            guard case .object(let j) = value, let jid = j["id"]?.stringValue, let adaptor = j["adaptor"]?.stringValue,
                let name = optionalString(j, "name"), let body = optionalString(j, "body"),
                let credential = optionalString(j, "credential_id")
            else { return nil }
            jobs.append(Job(id: jid, name: name ?? jid, body: body ?? "", adaptor: adaptor, credentialID: credential))
        }
        var edges: [Edge] = []
        switch o["edges"] {
        case nil, .null?: break
        case .array(let a)?:
            for value in a {
                guard case .object(let e) = value, let eid = e["id"]?.stringValue, let target = e["target_job_id"]?.stringValue,
                    let trigger = optionalString(e, "source_trigger_id"), let job = optionalString(e, "source_job_id"),
                    let condition = optionalString(e, "condition")
                else { return nil }
                var enabled = true
                switch e["enabled"] {
                case nil, .null?: break
                case .bool(let b)?: enabled = b
                default: return nil
                }
                edges.append(Edge(id: eid, sourceTriggerID: trigger, sourceJobID: job, targetJobID: target,
                                  condition: condition ?? "always", enabled: enabled))
            }
        default: return nil
        }
        var options = Options()
        switch o["options"] {
        case nil, .null?: break
        case .object(let p)?:
            func int(_ key: String, _ into: inout Int) -> Bool {
                switch p[key] {
                case nil, .null?: return true
                case .int(let i)?: into = Int(i); return true
                default: return false
                }
            }
            guard int("run_timeout_ms", &options.runTimeoutMS), int("run_memory_limit_mb", &options.runMemoryLimitMB),
                int("payload_limit_mb", &options.payloadLimitMB), int("log_payload_limit_mb", &options.logPayloadLimitMB),
                int("log_limit_mb", &options.logLimitMB)
            else { return nil }
            switch p["output_dataclips"] {
            case nil, .null?: break
            case .bool(let b)?: options.outputDataclips = b
            default: return nil
            }
        default: return nil
        }
        return Plan(id: id, dataclipID: dataclipID, startingNodeID: start, triggers: triggers, jobs: jobs, edges: edges,
                    options: options)
    }

    /// Enabled edges leaving a node (a trigger or a job), in plan order.
    public func edges(from nodeID: String) -> [Edge] {
        edges.filter { $0.enabled && ($0.sourceJobID == nodeID || $0.sourceTriggerID == nodeID) }
    }

    public func job(_ id: String) -> Job? { jobs.first { $0.id == id } }
}
