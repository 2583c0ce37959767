import Foundation
import Yams

/// A workflow as an operator writes it, in YAML or JSON (docs/workflows.md).
public struct WorkflowDefinition: Codable, Sendable, Equatable {
    public var name: String
    public var jobs: [Job]
    public var triggers: [Trigger]
    public var edges: [Edge]
    public var options: Options

    public struct Job: Codable, Sendable, Equatable {
        public var name: String
        public var adaptor: String
        public var body: String
        /// Name of a credential set with `lightning credentials set`.
        public var credential: String?
    }

    public struct Trigger: Codable, Sendable, Equatable {
        public enum Kind: String, Codable, Sendable { case webhook, cron, manual }
        public var name: String
        public var type: Kind
        /// Webhook path: `POST /i/<path>`.
        public var path: String?
        /// Cron expression (5 fields, UTC).
        public var cron: String?
        /// Webhooks only: `before_start` (the default) answers the POST at once with the work order and attempt
        /// ids; `after_completion` holds it until the attempt is final and answers with the step's
        /// `state.webhookResponse` or the final state, as Lightning's synchronous webhooks do.
        public var webhookReply: WebhookReply?
        /// With `after_completion`: how long the POST may wait, in ms (default 30,000).
        public var webhookReplyTimeoutMS: Int?

        public enum WebhookReply: String, Codable, Sendable { case beforeStart = "before_start", afterCompletion = "after_completion" }

        enum CodingKeys: String, CodingKey {
            case name, type, path, cron
            case webhookReply = "webhook_reply"
            case webhookReplyTimeoutMS = "webhook_reply_timeout_ms"
        }

        public init(name: String, type: Kind, path: String? = nil, cron: String? = nil, webhookReply: WebhookReply? = nil,
                    webhookReplyTimeoutMS: Int? = nil) {
            self.name = name
            self.type = type
            self.path = path
            self.cron = cron
            self.webhookReply = webhookReply
            self.webhookReplyTimeoutMS = webhookReplyTimeoutMS
        }
    }

    public struct Edge: Codable, Sendable, Equatable {
        /// A trigger's or a job's name.
        public var from: String
        /// A job's name.
        public var to: String
        public var condition: String
        public var enabled: Bool

        enum CodingKeys: String, CodingKey { case from, to, condition, enabled }
        public init(from: String, to: String, condition: String = "always", enabled: Bool = true) {
            self.from = from
            self.to = to
            self.condition = condition
            self.enabled = enabled
        }
        public init(from decoder: any Decoder) throws {
            let c = try decoder.container(keyedBy: CodingKeys.self)
            from = try c.decode(String.self, forKey: .from)
            to = try c.decode(String.self, forKey: .to)
            condition = try c.decodeIfPresent(String.self, forKey: .condition) ?? "always"
            enabled = try c.decodeIfPresent(Bool.self, forKey: .enabled) ?? true
        }
    }

    public struct Options: Codable, Sendable, Equatable {
        /// At most this many attempts of the workflow claimed or started at once (nil: no limit).
        public var concurrency: Int?
        public var runTimeoutMS: Int?
        public var runMemoryLimitMB: Int?
        public var outputDataclips: Bool?
        public var payloadLimitMB: Int?
        public var logPayloadLimitMB: Int?
        /// All the log output of one attempt, in MB (default 100).
        public var logLimitMB: Int?
        /// An attempt that ends `lost` or `exception` (a platform fault) is tried again this many times, each
        /// time as a new attempt of the same work order (default 0).
        public var retries: Int?

        public init() {}
        enum CodingKeys: String, CodingKey {
            case concurrency
            case runTimeoutMS = "run_timeout_ms"
            case runMemoryLimitMB = "run_memory_limit_mb"
            case outputDataclips = "output_dataclips"
            case payloadLimitMB = "payload_limit_mb"
            case logPayloadLimitMB = "log_payload_limit_mb"
            case logLimitMB = "log_limit_mb"
            case retries
        }
    }

    enum CodingKeys: String, CodingKey { case name, jobs, triggers, edges, options }

    public init(name: String, jobs: [Job], triggers: [Trigger] = [], edges: [Edge] = [], options: Options = Options()) {
        self.name = name
        self.jobs = jobs
        self.triggers = triggers
        self.edges = edges
        self.options = options
    }

    public init(from decoder: any Decoder) throws {
        let c = try decoder.container(keyedBy: CodingKeys.self)
        name = try c.decode(String.self, forKey: .name)
        jobs = try c.decodeIfPresent([Job].self, forKey: .jobs) ?? []
        triggers = try c.decodeIfPresent([Trigger].self, forKey: .triggers) ?? []
        edges = try c.decodeIfPresent([Edge].self, forKey: .edges) ?? []
        options = try c.decodeIfPresent(Options.self, forKey: .options) ?? Options()
    }
}

/// Why a workflow definition was refused; `description` names the exact problem.
public struct WorkflowValidationError: Error, Equatable, Sendable, CustomStringConvertible {
    public var problems: [String]
    public var description: String { problems.joined(separator: "; ") }
}

extension WorkflowDefinition {
    /// Parses YAML or JSON text (JSON is YAML), then validates.
    public static func parse(_ text: String) throws -> WorkflowDefinition {
        let definition: WorkflowDefinition
        do {
            definition = try YAMLDecoder().decode(WorkflowDefinition.self, from: text)
        } catch let error as DecodingError {
            throw WorkflowValidationError(problems: [error.fieldDescription])
        } catch {
            throw WorkflowValidationError(problems: ["not valid YAML or JSON: \(error)"])
        }
        try definition.validate()
        return definition
    }

    /// The longest webhook path taken.
    public static let maxWebhookPathLength = 200

    /// Why `path` cannot be a webhook's path, or nil. A path is what follows `/i/` in the URL, taken as it is: one
    /// segment of the characters a URL path carries unescaped (RFC 3986 `pchar`: letters, digits, `- . _ ~` and
    /// `: @ ! $ ' ( ) * =`), and not `.` or `..`, so that nothing between the client and the route rewrites it: `.`
    /// and `..` are folded away, `%20` decoded or not, a NUL cut; libwebsockets reads `+` in a path as a space and
    /// ends it at `&` or `;` (tried: such paths were stored and answered 404); and a `,` would split the stored list
    /// of a workflow's paths.
    static func webhookPathProblem(_ path: String) -> String? {
        let rule = "one segment of ASCII letters, digits and - . _ ~ : @ ! $ ' ( ) * = (not . or .. alone)"
        if path.isEmpty { return "needs a path (POST /i/<path>): \(rule)" }
        if path.utf8.count > maxWebhookPathLength {
            return "has a path of \(path.utf8.count) bytes: at most \(maxWebhookPathLength)"
        }
        let punctuation = Set("-._~:@!$'()*=".utf8)
        let allowed = path.utf8.allSatisfy { byte in
            (byte >= 0x30 && byte <= 0x39) || (byte >= 0x41 && byte <= 0x5A) || (byte >= 0x61 && byte <= 0x7A)
                || punctuation.contains(byte)
        }
        guard allowed, path != ".", path != ".." else {
            let shown = path.unicodeScalars.map { $0.isASCII && $0.value >= 0x20 && $0.value < 0x7F ? String($0) : "\\u{\(String($0.value, radix: 16))}" }.joined()
            return "has path \"\(shown)\", which no URL reaches as it is: a path is \(rule)"
        }
        return nil
    }

    /// Every problem at once, each naming what is wrong and where.
    public func validate() throws {
        var problems: [String] = []
        if name.trimmingCharacters(in: .whitespaces).isEmpty { problems.append("the workflow has no name") }
        if jobs.isEmpty { problems.append("the workflow has no jobs") }
        var seen = Set<String>()
        for job in jobs {
            if job.name.isEmpty { problems.append("a job has an empty name") }
            if !seen.insert(job.name).inserted { problems.append("duplicate name \"\(job.name)\"") }
            if job.body.trimmingCharacters(in: .whitespacesAndNewlines).isEmpty {
                problems.append("job \"\(job.name)\" has no body")
            }
            if job.adaptor.isEmpty { problems.append("job \"\(job.name)\" has no adaptor") }
        }
        for trigger in triggers {
            if !seen.insert(trigger.name).inserted { problems.append("duplicate name \"\(trigger.name)\"") }
            switch trigger.type {
            case .webhook:
                if let problem = Self.webhookPathProblem(trigger.path ?? "") {
                    problems.append("webhook trigger \"\(trigger.name)\" \(problem)")
                }
            case .cron:
                do { _ = try CronExpression(trigger.cron ?? "") } catch {
                    problems.append("cron trigger \"\(trigger.name)\": \(error)")
                }
            case .manual: break
            }
        }
        let jobNames = Set(jobs.map(\.name)), triggerNames = Set(triggers.map(\.name))
        for (i, edge) in edges.enumerated() {
            let label = "edge \(i + 1) (\(edge.from) -> \(edge.to))"
            if !jobNames.contains(edge.from) && !triggerNames.contains(edge.from) {
                problems.append("\(label) starts at unknown node \"\(edge.from)\"")
            }
            if !jobNames.contains(edge.to) {
                problems.append(triggerNames.contains(edge.to) ? "\(label) points at trigger \"\(edge.to)\"; edges end at jobs"
                                                               : "\(label) points at unknown job \"\(edge.to)\"")
            }
            do { _ = try EdgeCondition.parse(edge.condition) } catch {
                problems.append("\(label) has an invalid condition: \(error)")
            }
        }
        if let c = options.concurrency, c < 1 { problems.append("options.concurrency must be at least 1") }
        if let t = options.runTimeoutMS, t < 1 { problems.append("options.run_timeout_ms must be positive") }
        if let m = options.runMemoryLimitMB, m < 1 { problems.append("options.run_memory_limit_mb must be positive") }
        if let l = options.logLimitMB, l < 1 { problems.append("options.log_limit_mb must be positive") }
        if let r = options.retries, r < 0 || r > 10 { problems.append("options.retries must be from 0 to 10") }
        for trigger in triggers where trigger.webhookReply != nil || trigger.webhookReplyTimeoutMS != nil {
            if trigger.type != .webhook { problems.append("trigger \"\(trigger.name)\": webhook_reply is for webhook triggers") }
            if let t = trigger.webhookReplyTimeoutMS, t < 1 || t > 600_000 {
                problems.append("trigger \"\(trigger.name)\": webhook_reply_timeout_ms must be from 1 to 600000")
            }
        }
        if let cycle = findCycle() { problems.append("the edges form a cycle: \(cycle.joined(separator: " -> "))") }
        if problems.isEmpty, startingJob == nil { problems.append("no job to start from") }
        if !problems.isEmpty { throw WorkflowValidationError(problems: problems) }
    }

    /// The job a run starts at: the target of the first trigger edge, or else the first job no edge points at.
    public var startingJob: String? {
        if let e = edges.first(where: { e in triggers.contains { $0.name == e.from } }) { return e.to }
        let targets = Set(edges.map(\.to))
        return jobs.first { !targets.contains($0.name) }?.name
    }

    private func findCycle() -> [String]? {
        var next: [String: [String]] = [:]
        for e in edges { next[e.from, default: []].append(e.to) }
        var state: [String: Int] = [:]  // 1 visiting, 2 done
        var stack: [String] = []
        func visit(_ n: String) -> [String]? {
            if state[n] == 2 { return nil }
            if state[n] == 1 {
                let start = stack.firstIndex(of: n) ?? 0
                return Array(stack[start...]) + [n]
            }
            state[n] = 1
            stack.append(n)
            for m in next[n] ?? [] { if let c = visit(m) { return c } }
            stack.removeLast()
            state[n] = 2
            return nil
        }
        for job in jobs { if let c = visit(job.name) { return c } }
        return nil
    }
}
