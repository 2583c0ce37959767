import Channels
import Foundation

extension AttemptRepository {
    /// Job id -> name for an attempt's plan (empty when the plan cannot be read): steps are shown by name.
    func jobNames(attemptID: String) async -> [String: String] {
        guard let plan = try? await plan(attemptID: attemptID) else { return [:] }
        return Dictionary(plan.jobs.map { ($0.id, $0.name) }) { first, _ in first }
    }
}

/// How records look to operators (the HTTP API and the operator socket share these).
enum Render {
    static func attempt(_ a: AttemptRecord, steps: [StepRecord]? = nil, lastSeq: Int64? = nil, jobNames: [String: String] = [:]) -> JSON {
        var o: [String: JSON] = [
            "id": .string(a.id), "work_order_id": .string(a.workOrderID), "workflow_id": .string(a.workflowID),
            "workflow": .string(a.workflowName), "state": .string(a.state.rawValue), "final": .bool(a.state.isFinal),
            "reason": opt(a.reason), "error_type": opt(a.errorType), "error_message": opt(a.errorMessage),
            "worker": opt(a.workerName), "final_dataclip_id": opt(a.finalDataclipID),
            "run_timeout_ms": .int(Int64(a.runTimeoutMS)), "inserted_at": time(a.insertedAt), "claimed_at": time(a.claimedAt),
            "started_at": time(a.startedAt), "finished_at": time(a.finishedAt),
            "attempt_number": .int(Int64(a.attemptNumber)), "retry_of": opt(a.retryOf),
            "starting_job_id": opt(a.startingJobID), "starting_job_name": opt(a.startingJobID.flatMap { jobNames[$0] }),
        ]
        if let steps {
            o["steps"] = .array(steps.map { s in
                guard case .object(var fields) = step(s) else { return step(s) }
                fields["job_name"] = opt(jobNames[s.jobID])
                return .object(fields)
            })
        }
        if let lastSeq { o["last_seq"] = .int(lastSeq) }
        return .object(o)
    }

    static func step(_ s: StepRecord) -> JSON {
        [
            "id": .string(s.id), "job_id": .string(s.jobID), "input_dataclip_id": opt(s.inputDataclipID),
            "output_dataclip_id": opt(s.outputDataclipID), "reason": opt(s.reason), "error_type": opt(s.errorType),
            "error_message": opt(s.errorMessage), "started_at": time(s.startedAt), "finished_at": time(s.finishedAt),
        ]
    }

    static func log(_ l: LogLineRecord) -> JSON {
        [
            "seq": .int(l.seq), "step_id": opt(l.stepID), "level": .string(l.level), "source": .string(l.source),
            "message": .string(l.message), "timestamp": .string(String(l.timestamp)),
        ]
    }

    /// The same object as `log`, written straight to bytes: a batch for viewers is encoded once, without a JSON
    /// value per line (the keys in a fixed order).
    static func writeLog(_ l: LogLineRecord, to out: inout [UInt8]) {
        out.append(contentsOf: LogKeys.seq)
        appendDecimal(l.seq, to: &out)
        out.append(contentsOf: LogKeys.stepID)
        if let step = l.stepID { JSON.writeString(step, to: &out) } else { out.append(contentsOf: LogKeys.null) }
        out.append(contentsOf: LogKeys.level)
        JSON.writeString(l.level, to: &out)
        out.append(contentsOf: LogKeys.source)
        JSON.writeString(l.source, to: &out)
        out.append(contentsOf: LogKeys.message)
        JSON.writeString(l.message, to: &out)
        out.append(contentsOf: LogKeys.timestamp)
        appendDecimal(l.timestamp, to: &out)
        out.append(contentsOf: LogKeys.end)
    }

    /// The fixed parts of a rendered line, made once (an `Array(literal.utf8)` per part and line was a third of
    /// the rendering's time).
    private enum LogKeys {
        static let seq = Array(#"{"seq":"#.utf8)
        static let stepID = Array(#","step_id":"#.utf8)
        static let null = Array("null".utf8)
        static let level = Array(#","level":"#.utf8)
        static let source = Array(#","source":"#.utf8)
        static let message = Array(#","message":"#.utf8)
        static let timestamp = Array(#","timestamp":""#.utf8)
        static let end = Array(#""}"#.utf8)
    }

    /// `n` in decimal, written straight into `out`.
    static func appendDecimal(_ n: Int64, to out: inout [UInt8]) {
        if n < 0 { out.append(UInt8(ascii: "-")) }
        var m = n.magnitude
        var digits: (UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8,
                     UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8, UInt8) =
            (0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
        withUnsafeMutableBytes(of: &digits) { buffer in
            var i = buffer.count
            repeat {
                i -= 1
                buffer[i] = UInt8(ascii: "0") + UInt8(m % 10)
                m /= 10
            } while m > 0
            out.append(contentsOf: UnsafeRawBufferPointer(rebasing: buffer[i...]))
        }
    }

    static func encodedLogs(_ lines: [LogLineRecord]) -> [[UInt8]] {
        lines.map { l in
            var out: [UInt8] = []
            out.reserveCapacity(l.message.utf8.count + 120)
            writeLog(l, to: &out)
            return out
        }
    }

    /// `logs` payloads of at most about `maxBytes` each (a line longer than that goes alone): a frame must stay
    /// well under any client's message limit (PROTOCOL.md's 11 MB), whatever the lines. And small: libwebsockets keeps
    /// a copy of what the kernel did not take of a frame, per socket and outside any send-queue limit, so 1 MB
    /// frames to 1,000 viewers that stopped reading held about a gigabyte.
    static func logBatches(_ encoded: ArraySlice<[UInt8]>, maxBytes: Int = 64 << 10) -> [[UInt8]] {
        var batches: [[UInt8]] = []
        var start = encoded.startIndex
        var size = 0
        for i in encoded.indices {
            if i > start, size + encoded[i].count + 1 > maxBytes {
                batches.append(logBatch(encoded[start..<i]))
                start = i
                size = 0
            }
            size += encoded[i].count + 1
        }
        if start < encoded.endIndex { batches.append(logBatch(encoded[start...])) }
        return batches
    }

    /// `{"lines": [line, ...]}` from lines already written by `writeLog`.
    static func logBatch(_ encoded: ArraySlice<[UInt8]>) -> [UInt8] {
        var out = Array(#"{"lines":["#.utf8)
        out.reserveCapacity(encoded.reduce(16) { $0 + $1.count + 1 })
        var first = true
        for line in encoded {
            if !first { out.append(UInt8(ascii: ",")) }
            first = false
            out.append(contentsOf: line)
        }
        out.append(contentsOf: Array("]}".utf8))
        return out
    }

    static func worker(_ w: WorkerRecord, connected: Bool) -> JSON {
        [
            "name": .string(w.name), "status": .string(status(w, connected: connected)), "capacity": .int(Int64(w.capacity)),
            "version": opt(w.version), "connected": .bool(connected),
            "connected_at": time(w.connectedAt), "disconnected_at": time(w.disconnectedAt),
            // A connected worker checks in all the time (heartbeats keep its socket open): seen now.
            "last_seen_at": time(connected ? Timestamp.nowMicros() : w.lastSeenAt),
            "current_attempts": .int(Int64(w.currentAttempts)), "host": opt(w.host), "labels": .array(w.labels.map { .string($0) }),
            "deployment_id": opt(w.deploymentID), "group": opt(w.group), "auth_mode": opt(w.authMode),
            "credential_expires_at": time(w.credentialExpiresAt), "revoked_at": time(w.revokedAt),
            "control": w.control.map { c in
                ["action": .string(c.action.rawValue), "policy": opt(c.policy?.rawValue), "deadline_at": time(c.deadlineAt),
                 "stay": c.stay.map { .bool($0) } ?? .null]
            } ?? .null,
        ]
    }

    /// revoked, registered (never connected), disconnected, draining / drained, paused, busy or idle.
    static func status(_ w: WorkerRecord, connected: Bool) -> String {
        if w.revokedAt != nil { return "revoked" }
        guard connected else { return w.connectedAt == nil ? "registered" : "disconnected" }
        switch w.control?.action {
        case .drain: return w.currentAttempts > 0 ? "draining" : "drained"
        case .pause: return "paused"
        case nil: return w.currentAttempts > 0 ? "busy" : "idle"
        }
    }

    static func workflow(_ w: WorkflowSummary) -> JSON {
        [
            "id": .string(w.id), "name": .string(w.name), "version": .int(Int64(w.version)),
            "concurrency": w.concurrency.map { .int(Int64($0)) } ?? .null, "webhooks": .array(w.webhookPaths.map { .string("/i/" + $0) }),
        ]
    }

    static func workflow(_ w: WorkflowDetail, recent: [AttemptRecord]) -> JSON {
        [
            "id": .string(w.id), "name": .string(w.name), "version": .int(Int64(w.version)),
            "concurrency": w.concurrency.map { .int(Int64($0)) } ?? .null,
            "webhooks": .array(w.triggers.compactMap { $0.webhookPath.map { .string("/i/" + $0) } }),
            "versions": .array(w.versions.map { ["version": .int(Int64($0.version)), "snapshot_id": .string($0.snapshotID),
                                                 "inserted_at": time($0.insertedAt)] }),
            "triggers": .array(w.triggers.map { ["id": .string($0.id), "name": .string($0.name), "type": .string($0.type),
                                                 "webhook_path": opt($0.webhookPath), "cron": opt($0.cron)] }),
            "jobs": .array(w.jobs.map { ["id": .string($0.id), "name": .string($0.name), "adaptor": .string($0.adaptor),
                                         "credential": opt($0.credential)] }),
            "edges": .array(w.edges.map { ["id": .string($0.id), "source_trigger_id": opt($0.sourceTriggerID),
                                           "source_job_id": opt($0.sourceJobID), "target_job_id": .string($0.targetJobID),
                                           "condition": .string($0.condition), "enabled": .bool($0.enabled)] }),
            "recent_attempts": .array(recent.map { attempt($0) }),
        ]
    }

    static func token(_ t: OperatorTokenRecord) -> JSON {
        [
            "id": .string(t.id), "name": .string(t.name), "role": .string(t.role.rawValue), "inserted_at": time(t.insertedAt),
            "last_used_at": time(t.lastUsedAt), "revoked": .bool(t.revokedAt != nil),
        ]
    }

    static func opt(_ s: String?) -> JSON { s.map { .string($0) } ?? .null }
    /// Times are ISO 8601 in UTC with milliseconds, from the stored microseconds.
    static func time(_ micros: Int64?) -> JSON {
        guard let micros else { return .null }
        return .string(iso8601(micros))
    }
    /// `2026-12-02T10:00:00.123Z`. By hand: a formatter made per call was most of the time of a page of
    /// attempts (four times each), and one shared formatter is not documented as safe across threads.
    static func iso8601(_ micros: Int64) -> String {
        var seconds = time_t(micros >= 0 ? micros / 1_000_000 : (micros - 999_999) / 1_000_000)
        let millis = Int((micros - Int64(seconds) * 1_000_000) / 1000)
        var t = tm()
        gmtime_r(&seconds, &t)
        func pad(_ n: Int, _ width: Int) -> String {
            let s = String(n)
            return s.count >= width ? s : String(repeating: "0", count: width - s.count) + s
        }
        return pad(Int(t.tm_year) + 1900, 4) + "-" + pad(Int(t.tm_mon) + 1, 2) + "-" + pad(Int(t.tm_mday), 2) + "T"
            + pad(Int(t.tm_hour), 2) + ":" + pad(Int(t.tm_min), 2) + ":" + pad(Int(t.tm_sec), 2) + "." + pad(millis, 3) + "Z"
    }
}
