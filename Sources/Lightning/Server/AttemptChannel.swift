import Channels
import Foundation
import Synchronization
import JWT

/// `run:<attempt id>` (PROTOCOL.md 4 and 5): one worker's events for one attempt, each committed before its
/// reply goes out.
struct AttemptChannel: RawPayloadHandler {
    let lightning: Lightning
    private let scrubbers = AttemptCache<CredentialScrubber>()

    var store: any LightningStore { lightning.store }

    func join(topic: String, payload: JSON, socket: ChannelSocket) async -> JoinResult {
        guard let worker = socket.context as? WorkerIdentity, let id = Wire.Topic.attemptID(fromAttemptTopic: topic) else {
            return .error(["reason": "unauthorized"])
        }
        if lightning.configuration.testExitOnAttemptJoin {
            lightning.logger.critical("test hook: exiting on the join of \(topic)")
            exit(75)
        }
        let attempt: AttemptRecord
        do { attempt = try await store.attempt(id) } catch { return .error(["reason": "not_found"]) }
        guard let token = payload["token"]?.stringValue,
            lightning.isIssuedToken(token, attemptID: id)
                || (try? AttemptTokenClaims.verify(token, key: lightning.attemptVerifyKey, attemptID: id)) != nil
        else { return .error(["reason": "unauthorized"]) }
        guard attempt.workerName == worker.name, !attempt.state.isFinal else {
            return .error(["reason": "unauthorized"])
        }
        lightning.workerRejoined(worker.name)
        return .ok([:])
    }

    func leave(topic: String, socket: ChannelSocket) async {}

    func handle(event: String, topic: String, payload: JSON, socket: ChannelSocket) async -> ChannelReply? {
        await handled(event: event, topic: topic, socket: socket) { id, worker in
            // A dataclip (megabytes read and copied) and a credential (decrypted) are fetched on the cooperative pool,
            // not on the socket service thread where the worker socket's events are handled.
            let fetch = event == Wire.Event.fetchDataclip || event == Wire.Event.fetchCredential
            return try await withTaskExecutorPreference(fetch ? globalConcurrentExecutor : nil) {
                try await handle(event: event, attemptID: id, worker: worker, payload: payload)
            }
        }
    }

    /// A `run:log` batch is read from the frame's bytes in one pass when it has the usual shape (LogBatchReader),
    /// else parsed and handled like any other event.
    var rawPayloadEvents: Set<String> { Self.rawEvents }
    private static let rawEvents: Set<String> = [Wire.Event.log, Wire.Event.batchLogs]

    func handle(event: String, topic: String, rawPayload: ArraySlice<UInt8>, socket: ChannelSocket) async -> RawEventResult {
        guard let wire = LogBatchReader.read(rawPayload) else {
            return await handleParsing(event: event, topic: topic, rawPayload: rawPayload, socket: socket)
        }
        lightning.metrics.logBatchesOnePass.increment()
        return .reply(await handled(event: event, topic: topic, socket: socket) { id, _ in
            let scrubber = try await scrubber(id)
            var lines: [NewLogLine] = []
            lines.reserveCapacity(wire.count)
            for w in wire {
                lines.append(try logLine(text: w.text, level: w.level, source: w.source, stepID: w.stepID, workerSeq: w.workerSeq,
                                         timestamp: w.timestamp.flatMap(Timestamp.parse) ?? Timestamp.nowMicros(), scrubber: scrubber))
            }
            try await storeLogs(id, lines)
            return .ok([:])
        })
    }

    /// Runs one event's handling for the worker that joined the topic: timed, logged, its errors made replies.
    private func handled(event: String, topic: String, socket: ChannelSocket,
                         _ body: (String, WorkerIdentity) async throws -> ChannelReply) async -> ChannelReply {
        guard let id = Wire.Topic.attemptID(fromAttemptTopic: topic), let worker = socket.context as? WorkerIdentity else {
            return .error(reason: "unauthorized")
        }
        let started = ContinuousClock.now
        defer {
            let took = ContinuousClock.now - started
            lightning.metrics.eventHandled(event, took)
            lightning.logger.debug("worker event", metadata: ["attempt.id": "\(id)", "event": "\(event)", "worker.name": "\(worker.name)",
                                                              "ms": "\(took.milliseconds)"])
        }
        do {
            return try await body(id, worker)
        } catch StoreError.unavailable(let message) {
            // Nothing was stored: the worker keeps the event and sends it again (our extension; `retry_after`
            // is ignored by workers that do not know it, which then see an ordinary error).
            // (A full disk, or a PostgreSQL server that cannot be reached: the message says which.)
            lightning.logger.error("a worker event was refused: the store cannot take it now", metadata: [
                "event": "\(event)", "attempt.id": "\(id)", "reason": "\(message)",
            ])
            return .error(["errors": ["store": .array([.string(message)])], "retry_after": .int(Int64(StoreError.retryAfterSeconds))])
        } catch let error as StoreError {
            return Self.errors(event == Wire.Event.fetchCredential || event == Wire.Event.fetchDataclip ? "id" : "attempt",
                               error.description)
        } catch let error as WireFieldError {
            return Self.errors(error.field, error.message)
        } catch {
            return Self.errors("event", "\(error)")
        }
    }

    static func errors(_ field: String, _ message: String) -> ChannelReply {
        .error(["errors": [field: .array([.string(message)])]])
    }


    private func field(_ payload: JSON, _ name: String) throws -> String {
        guard let v = payload[name]?.stringValue, !v.isEmpty else { throw WireFieldError(name, "can't be blank") }
        return v
    }

    /// The event's timestamp, or Lightning's clock when the worker sent none (older ws-workers).
    private func timestamp(_ payload: JSON) -> Int64 {
        (try? WireFields(payload))?.timestamp() ?? Timestamp.nowMicros()
    }

    private func handle(event: String, attemptID id: String, worker: WorkerIdentity, payload: JSON) async throws -> ChannelReply {
        switch event {
        case Wire.Event.fetchPlan:
            return .ok(try await plan(id).wire)

        case Wire.Event.fetchDataclip:
            let dataclipID = try field(payload, "id")
            let plan = try await plan(id)
            guard dataclipID == plan.dataclipID else {
                throw WireFieldError("id", "dataclip \(dataclipID) is not this attempt's input")
            }
            return .binary(try await store.dataclip(dataclipID))

        case Wire.Event.fetchCredential:
            let credentialID = try field(payload, "id")
            if credentialID.hasPrefix(Plan.missingCredentialPrefix) {
                let name = credentialID.dropFirst(Plan.missingCredentialPrefix.count)
                throw WireFieldError("id", "credential \"\(name)\" is not set (lightning credentials set \(name) --body ...)")
            }
            guard try await store.credentialIDs(attemptID: id).contains(credentialID) else {
                throw WireFieldError("id", "credential \(credentialID) is not used by this attempt")
            }
            let body = try await store.credentialBody(id: credentialID)
            return .ok(try JSON.parse(body))

        case Wire.Event.attemptStart:
            // A resend (its reply was lost) is acknowledged with no second effect.
            if try await store.startAttempt(id, workerName: worker.name, at: timestamp(payload)) {
                await lightning.attemptChanged(id)
            }
            return .ok(.null)

        case Wire.Event.stepStart:
            let step = try StepStart(wire: payload)
            if try await store.startStep(attemptID: id, stepID: step.stepID, jobID: step.jobID,
                                         inputDataclipID: step.inputDataclipID, at: timestamp(payload)) {
                if lightning.viewers.watched.contains(id) { lightning.viewerFeed.post(.event(id, "step:start", [
                    "step_id": .string(step.stepID), "job_id": .string(step.jobID), "attempt_id": .string(id),
                    "job_name": Render.opt(await jobName(id, step.jobID)),
                ])) }
            }
            return .ok(["step_id": .string(step.stepID)])

        case Wire.Event.log where payload["logs"] == nil:
            // One line per event (ws-worker without batching, lexicon LegacyRunLogPayload).
            let line = try logLine(payload, scrubber: try await scrubber(id))
            let appended = try await store.appendLogs(attemptID: id, [line])
            await publish(id, appended)
            return .ok(["log_line_id": .string("\(id):\(appended.seqs.first.flatMap { $0 } ?? 0)")])

        case Wire.Event.log, Wire.Event.batchLogs:
            // A batch: `run:log` with `logs` (ws-worker's batching, lexicon RunLogPayload), or our older name.
            guard let logs = payload["logs"]?.arrayValue else { throw WireFieldError("logs", "must be a list") }
            lightning.metrics.logBatchesParsed.increment()
            let scrubber = try await scrubber(id)
            var lines: [NewLogLine] = []
            lines.reserveCapacity(logs.count)
            for entry in logs { lines.append(try logLine(entry, scrubber: scrubber)) }
            try await storeLogs(id, lines)
            return .ok([:])

        case Wire.Event.stepComplete:
            let step = try StepComplete(wire: payload)
            let plan = try await plan(id)
            var output: [UInt8]? = nil
            if let text = step.outputDataclip {
                let bytes = Array(text.utf8)
                if bytes.count <= plan.options.payloadLimitMB * 1_000_000 { output = bytes }
            }
            if try await store.completeStep(attemptID: id, step, outputState: output, at: timestamp(payload)) {
                if lightning.viewers.watched.contains(id) { lightning.viewerFeed.post(.event(id, "step:complete", [
                    "step_id": .string(step.stepID), "job_id": .string(step.jobID), "attempt_id": .string(id),
                    "job_name": .string(plan.jobs.first { $0.id == step.jobID }?.name ?? step.jobID),
                    "reason": .string(step.reason.rawValue), "error_type": Render.opt(step.errorType),
                    "error_message": Render.opt(step.errorMessage),
                ])) }
            }
            return .ok(["step_id": .string(step.stepID)])

        case Wire.Event.attemptComplete:
            let complete = try AttemptComplete(wire: payload)
            var finalState = complete.finalStateBytes
            if let bytes = finalState, bytes.count > (try await plan(id)).options.payloadLimitMB * 1_000_000 {
                finalState = nil  // the same rule as an oversize step output
            }
            let done = try await store.completeAttempt(id, complete, finalState: finalState, at: timestamp(payload))
            guard done.changed else { return .ok(.null) }
            scrubbers.forget(id)
            lightning.plans.forget(id)
            lightning.issuedTokens.forget(id)
            await lightning.attemptChanged(id)
            lightning.logger.info("attempt finished", metadata: ["attempt.id": "\(id)", "attempt.state": "\(done.state.rawValue)"])
            if let retry = done.retryID { lightning.retryCreated(retry, after: id, state: done.state) }
            return .ok(.null)

        default:
            throw WireFieldError("event", "unknown event \(event)")
        }
    }

    private func plan(_ attemptID: String) async throws -> Plan { try await lightning.plan(attemptID) }

    /// The job's name, for viewers (only fetched when someone watches).
    private func jobName(_ attemptID: String, _ jobID: String) async -> String? {
        guard lightning.viewers.watched.contains(attemptID) else { return nil }
        return await store.jobNames(attemptID: attemptID)[jobID]
    }

    private func storeLogs(_ attemptID: String, _ lines: [NewLogLine]) async throws {
        let appended = try await store.appendLogs(attemptID: attemptID, lines)
        await publish(attemptID, appended)
    }

    /// Hands newly stored lines to the attempt's viewers (a resent line has the seq it got the first time, which
    /// viewers already passed, so it is not shown twice).
    private func publish(_ attemptID: String, _ appended: AppendedLogs) async {
        lightning.metrics.logLines.increment(by: Int64(appended.stored.count))
        let dropped = appended.seqs.reduce(0) { $0 + ($1 == nil ? 1 : 0) }
        if dropped > 0 { lightning.metrics.logLinesDropped.increment(by: Int64(dropped)) }
        guard !appended.stored.isEmpty, lightning.viewers.watched.contains(attemptID) else { return }
        // Handed over, not awaited: the worker's reply goes out after the commit, not after every viewer's frames
        // are made. In order, by one drain; the caller waits only if viewers fall far behind.
        let bytes = appended.stored.reduce(0) { $0 + $1.message.utf8.count + 120 }
        await lightning.viewerFeed.add(.lines(attemptID, appended.stored), weight: bytes)
    }

    /// A stored log line: message items joined by a space, control characters stripped (newlines kept: a
    /// message of several lines stays one entry), credential values masked, and a line over the limit replaced
    /// by a notice.
    private func logLine(_ payload: JSON, scrubber: CredentialScrubber) throws -> NewLogLine {
        let items: [JSON]
        switch payload["message"] {
        case .array(let a): items = a
        case .string(let s): items = [.string(s)]  // a worker that sends the text itself
        default: throw WireFieldError("message", "must be a list")
        }
        let text = items.count == 1 ? (items[0].stringValue ?? items[0].text) : items.map { $0.stringValue ?? $0.text }.joined(separator: " ")
        // A worker_seq that is not an integer is refused after the level and source are checked (as it always was).
        let w = payload["worker_seq"]
        return try logLine(text: text, level: payload["level"]?.stringValue, source: payload["source"]?.stringValue,
                           stepID: payload["step_id"]?.stringValue, workerSeq: w?.intValue ?? (w == nil ? nil : 0),
                           timestamp: timestamp(payload), scrubber: scrubber)
    }

    /// The rules for a line, however it was read. `workerSeq` 0 or below is refused (0 also stands for a worker_seq
    /// that was not an integer).
    private func logLine(text: String, level: String?, source: String?, stepID: String?, workerSeq: Int64?, timestamp: Int64,
                         scrubber: CredentialScrubber) throws -> NewLogLine {
        // Escapes go before the scrubber looks (one between a secret's halves would hide it), and again after, in
        // case a masked value sat inside a colour sequence.
        var text = LogText.clean(text)
        if !scrubber.secrets.isEmpty {
            text = scrubber.scrub(text)
            text = LogText.clean(text)
        }
        if text.utf8.count > lightning.configuration.maxLogLineBytes {
            text = "(log line of \(text.utf8.count) bytes removed: over the \(lightning.configuration.maxLogLineBytes)-byte limit)"
        }
        let level = level ?? "info"
        guard LogLevel(rawValue: level) != nil else { throw WireFieldError("level", "unknown level \(level)") }
        let source = source ?? "JOB"
        guard source.count <= LogSource.maxLength else {
            throw WireFieldError("source", "at most \(LogSource.maxLength) characters")
        }
        if let workerSeq, workerSeq <= 0 { throw WireFieldError("worker_seq", "must be a positive integer") }
        return NewLogLine(stepID: stepID, level: level, source: source, message: text, timestamp: timestamp, workerSeq: workerSeq)
    }

    private func scrubber(_ attemptID: String) async throws -> CredentialScrubber {
        if let s = scrubbers.get(attemptID) { return s }
        var bodies: [Any] = []
        for id in try await store.credentialIDs(attemptID: attemptID) {
            if let body = try? await store.credentialBody(id: id), let json = try? JSONSerialization.jsonObject(with: Data(body)) {
                bodies.append(json)
            }
        }
        let s = CredentialScrubber(credentialBodies: bodies)
        scrubbers.put(attemptID, s)
        return s
    }
}

/// Values per running attempt (its plan, its credential scrubber), by attempt id. Bounded: entries of attempts
/// that never complete here (lost, or completed through another replica) go when the cache is full, and are
/// rebuilt from the store if needed again.
final class AttemptCache<Value: Sendable>: Sendable {
    private let values = Mutex<[String: Value]>([:])
    let limit = 10_000
    func get(_ id: String) -> Value? { values.withLock { $0[id] } }
    func put(_ id: String, _ value: Value) {
        values.withLock { values in
            if values.count >= limit { values.removeAll(keepingCapacity: true) }
            values[id] = value
        }
    }
    func forget(_ id: String) { values.withLock { _ = $0.removeValue(forKey: id) } }
}
