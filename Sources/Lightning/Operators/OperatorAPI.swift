import Channels
import Foundation
import LightningProtocol

/// The operator HTTP API (PROTOCOL.md 6): JSON, `Authorization: Bearer <operator token>`. Viewers may read;
/// admins may also create, start and cancel. Every refusal says what is wrong.
extension Lightning {
    func operatorAPI(_ request: HTTPRequest) async -> HTTPResponse {
        let parts = request.path.split(separator: "/", omittingEmptySubsequences: true).map(String.init)
        // parts[0] == "api"
        let route = Array(parts.dropFirst())
        let method = request.method.uppercased()
        let needed: OperatorToken.Role = method == "GET" ? .viewer : .admin
        let who: OperatorIdentity
        switch authorize(request, needed: needed) {
        case .success(let identity): who = identity
        case .failure(let refusal): return refusal.response
        }
        do {
            return try await dispatch(method: method, route: route, request: request, who: who)
        } catch let e as StoreError {
            switch e {
            case .notFound(let m): return .error(404, m)
            case .conflict(let m): return .error(409, m)
            case .invalid(let m): return .error(400, m)
            case .unavailable(let m): return Self.unavailable(m)
            }
        } catch let e as APIError {
            return .error(e.status, e.message)
        } catch {
            logger.error("operator API request failed", metadata: ["path": "\(request.path)", "error": "\(error)"])
            return .error(500, "internal error: \(error)")
        }
    }

    struct APIError: Error {
        var status: Int
        var message: String
    }

    struct Refusal: Error {
        var response: HTTPResponse
    }

    func authorize(_ request: HTTPRequest, needed: OperatorToken.Role) -> Result<OperatorIdentity, Refusal> {
        authorize(presented: request.headers["authorization"], headers: request.headers, method: request.method, needed: needed,
                  client: authLimiter.client(peer: request.peerAddress, headers: request.headers))
    }

    /// 503 with `Retry-After`: the store cannot take writes now.
    static func unavailable(_ message: String) -> HTTPResponse {
        var r = HTTPResponse.error(503, message)
        r.headers.append(("retry-after", "\(StoreError.retryAfterSeconds)"))
        return r
    }

    /// 429 with `Retry-After`, for a client over its failed token checks.
    static func throttled(_ wait: Int) -> HTTPResponse {
        var r = HTTPResponse.error(429, "too many failed token checks from this address: try again in \(wait) s")
        r.headers.append(("retry-after", "\(wait)"))
        return r
    }

    /// Checks a bearer token (an `Authorization` header value, or a bare token) for a role; without one, the
    /// console's session cookie, for requests from the console's own origin.
    func authorize(presented header: String?, headers: [String: String], method: String, needed: OperatorToken.Role,
                   client: String) -> Result<OperatorIdentity, Refusal>
    {
        let presented = (header?.isEmpty == false) || Self.cookie(Self.sessionCookie, in: headers["cookie"]) != nil
        if presented, let wait = authLimiter.retryAfter(client) {
            metrics.authThrottled.increment()
            return .failure(Refusal(response: Self.throttled(wait)))
        }
        let result = checkCredentials(presented: header, headers: headers, method: method, needed: needed)
        // Wrong, revoked or expired credentials count against the address; a missing one, a role that is not
        // enough (the token was good) or a store error does not.
        if presented, case .failure(let refusal) = result, refusal.response.status == 401 { authLimiter.failed(client) }
        return result
    }

    private func checkCredentials(presented header: String?, headers: [String: String], method: String, needed: OperatorToken.Role)
        -> Result<OperatorIdentity, Refusal>
    {
        let record: OperatorTokenRecord?
        if let header, !header.isEmpty {
            let secret = header.hasPrefix("Bearer ") ? String(header.dropFirst(7)).trimmingCharacters(in: .whitespaces) : header
            do { record = try store.verifyOperatorToken(secret: secret) } catch {
                return .failure(Refusal(response: .error(503, "could not check the token: \(error)")))
            }
            guard record != nil else {
                return .failure(Refusal(response: .error(401, "invalid or revoked operator token")))
            }
        } else if let secret = Self.cookie(Self.sessionCookie, in: headers["cookie"]) {
            if let refusal = crossOriginRefusal(headers, method: method) { return .failure(refusal) }
            let found: ConsoleSession?
            do { found = try store.consoleSession(secret: secret, at: Timestamp.nowMicros()) } catch {
                return .failure(Refusal(response: .error(503, "could not check the session: \(error)")))
            }
            guard let session = found else {
                return .failure(Refusal(response: .error(401, "the console session has ended or expired: sign in again")))
            }
            guard session.token.role.allows(needed) else {
                return .failure(Refusal(response: .error(403, "token \"\(session.token.name)\" is a \(session.token.role.rawValue); this needs \(needed.rawValue)")))
            }
            return .success(OperatorIdentity(tokenID: session.token.id, name: session.token.name, role: session.token.role,
                                             sessionHash: session.hash, sessionExpiresAt: session.expiresAt))
        } else {
            return .failure(Refusal(response: .error(401, "missing operator token: send Authorization: Bearer <token> (or sign in to the console)")))
        }
        guard let record else { return .failure(Refusal(response: .error(401, "invalid or revoked operator token"))) }
        guard record.role.allows(needed) else {
            return .failure(Refusal(response: .error(403, "token \"\(record.name)\" is a \(record.role.rawValue); this needs \(needed.rawValue)")))
        }
        let store = self.store
        Task { try? await store.touchOperatorToken(record, at: Timestamp.nowMicros()) }
        return .success(OperatorIdentity(tokenID: record.id, name: record.name, role: record.role))
    }

    private func dispatch(method: String, route: [String], request: HTTPRequest, who: OperatorIdentity) async throws -> HTTPResponse {
        switch (method, route.first, route.count) {
        case ("GET", "workflows", 1):
            return .json(200, ["workflows": .array(try await store.workflows().map(Render.workflow))])

        case ("PUT", "workflows", 1), ("POST", "workflows", 1):
            let text = try utf8(request.body, what: "the workflow")
            let definition: WorkflowDefinition
            do { definition = try WorkflowDefinition.parse(text) } catch {
                throw APIError(status: 400, message: "invalid workflow: \(error)")
            }
            let applied = try await store.applyWorkflow(definition)
            logger.info("workflow applied", metadata: ["workflow": "\(definition.name)", "version": "\(applied.version)", "by": "\(who.name)"])
            return .json(200, ["id": .string(applied.workflowID), "name": .string(definition.name),
                               "version": .int(Int64(applied.version)), "snapshot_id": .string(applied.snapshotID)])

        case ("POST", "attempts", 1):
            let body = try jsonObject(request.body)
            guard let workflow = body["workflow"]?.stringValue, !workflow.isEmpty else {
                throw APIError(status: 400, message: "\"workflow\" (a workflow name or id) is required")
            }
            let input = body["input"] ?? .object([:])
            guard case .object = input else { throw APIError(status: 400, message: "\"input\" must be a JSON object") }
            let created = try await startWork(workflow: workflow, input: input.encoded())
            logger.info("attempt started by an operator", metadata: ["attempt.id": "\(created.attemptID)", "by": "\(who.name)"])
            return .json(201, ["work_order_id": .string(created.workOrderID), "attempt_id": .string(created.attemptID)])

        case ("GET", "attempts", 1):
            var filter = AttemptFilter()
            if let s = request.query["state"], !s.isEmpty {
                guard let parsed = AttemptState(rawValue: s) else {
                    throw APIError(status: 400, message: "unknown state \"\(s)\"; one of: \(AttemptState.allCases.map(\.rawValue).joined(separator: ", "))")
                }
                filter.state = parsed
            }
            filter.limit = try intParameter(request.query["limit"], name: "limit", default: 50, range: 1...1000)
            if let w = request.query["workflow"], !w.isEmpty { filter.workflow = w }
            filter.since = try timeParameter(request.query["since"], name: "since")
            filter.until = try timeParameter(request.query["until"], name: "until")
            if let q = request.query["q"], !q.isEmpty {
                guard q.count <= 200 else { throw APIError(status: 400, message: "q (text in the logs) is at most 200 characters") }
                filter.text = q
            }
            if let b = request.query["before"], !b.isEmpty {
                guard let n = Int64(b), n > 0 else { throw APIError(status: 400, message: "before must be a next_before value from a previous page, not \"\(b)\"") }
                filter.before = n
            }
            let page = try await store.attempts(matching: filter)
            return .json(200, ["attempts": .array(page.attempts.map { Render.attempt($0) }),
                               "next_before": page.nextBefore.map { .string(String($0)) } ?? .null])

        case ("POST", "attempts", 3) where route[2] == "rerun" || route[2] == "retry":
            let body = request.body.isEmpty ? [:] : try jsonObject(request.body)
            var from: String? = nil
            if route[2] == "rerun", let f = body["from"], f != .null {
                guard let text = f.stringValue else { throw APIError(status: 400, message: "\"from\" is a step id, job id or job name") }
                from = text.isEmpty ? nil : text
            }
            let created = try await store.rerun(attemptID: route[1], fromStep: from, by: who.name, at: Timestamp.nowMicros())
            signAhead(created)
            nudgeWorkers()
            attemptsChanged([created.attemptID])
            logger.info("attempt rerun by an operator", metadata: ["attempt.id": "\(created.attemptID)", "rerun.of": "\(route[1])",
                                                                   "from": "\(from ?? "the start")", "by": "\(who.name)"])
            return .json(201, ["work_order_id": .string(created.workOrderID), "attempt_id": .string(created.attemptID)])

        case ("GET", "dataclips", 2):
            let (type, body) = try await store.dataclipRecord(route[1])
            return .json(200, ["id": .string(route[1]), "type": .string(type), "body": try await shownDataclip(body)])

        case ("GET", "workflows", 2):
            let detail = try await store.workflowDetail(route[1])
            let recent = try await store.attempts(matching: AttemptFilter(workflow: detail.id, limit: 20)).attempts
            return .json(200, Render.workflow(detail, recent: recent))

        case ("GET", "attempts", 2):
            let id = route[1]
            let attempt = try await store.attempt(id)
            let names = await store.jobNames(attemptID: id)
            var shown = Render.attempt(attempt, steps: try await store.steps(attemptID: id),
                                       lastSeq: try await store.lastLogSeq(attemptID: id), jobNames: names)
            // The work order's attempts, oldest first: the retry chain this one belongs to.
            if case .object(var o) = shown {
                o["work_order_attempts"] = .array(try await store.attempts(workOrderID: attempt.workOrderID).map {
                    ["id": .string($0.id), "attempt_number": .int(Int64($0.attemptNumber)), "state": .string($0.state.rawValue),
                     "reason": Render.opt($0.reason), "error_type": Render.opt($0.errorType)]
                })
                shown = .object(o)
            }
            return .json(200, shown)

        case ("GET", "attempts", 3) where route[2] == "logs":
            let id = route[1]
            _ = try await store.attempt(id)
            let since = try intParameter(request.query["since"], name: "since", default: 0, range: 0...Int.max)
            let limit = try intParameter(request.query["limit"], name: "limit", default: 1000, range: 1...10_000)
            let lines = try await store.logs(attemptID: id, since: Int64(since), limit: limit)
            return .json(200, ["logs": .array(lines.map(Render.log)), "last_seq": .int(lines.last?.seq ?? Int64(since))])

        case ("POST", "attempts", 3) where route[2] == "cancel":
            let state = try await cancel(attemptID: route[1])
            logger.info("attempt cancel requested", metadata: ["attempt.id": "\(route[1])", "by": "\(who.name)"])
            return .json(200, ["state": .string(state.rawValue),
                               "message": .string(state.isFinal ? "the attempt is \(state.rawValue)" : "its worker was asked to stop it")])

        case ("GET", "workers", 1):
            let connected = Set(connectedWorkerNames())
            return .json(200, ["workers": .array(try await store.workers().map { Render.worker($0, connected: connected.contains($0.name)) })])

        case ("POST", "workers", 3) where route[2] == "registration":
            let body = request.body.isEmpty ? [:] : try jsonObject(request.body)
            let ttl = body["ttl_seconds"]?.doubleValue ?? 3600
            return .json(201, try await registerWorker(route[1], ttlSeconds: ttl, by: who.name))

        case ("POST", "workers", 3) where route[2] == "revoke":
            return .json(200, try await revokeWorker(route[1], by: who.name))

        case ("POST", "workers", 2) where route[1] == "control":
            let body = try jsonObject(request.body)
            let action = body["action"]?.stringValue ?? ""
            guard ["drain", "pause", "resume"].contains(action) else {
                throw APIError(status: 400, message: "\"action\" must be drain, pause or resume")
            }
            let selector: WorkerSelector
            if body["all"] == .bool(true) {
                selector = .all
            } else if let id = body["deployment_not"]?.stringValue, !id.isEmpty {
                selector = .deploymentNot(id)
            } else if let names = body["workers"]?.arrayValue?.compactMap(\.stringValue), !names.isEmpty {
                selector = .names(names)
            } else {
                throw APIError(status: 400, message: "say which workers: \"workers\": [names], \"all\": true or \"deployment_not\": ID")
            }
            let policyText = body["policy"]?.stringValue ?? "finish"
            guard let policy = WorkerControl.Policy(rawValue: policyText) else {
                throw APIError(status: 400, message: "unknown policy \"\(policyText)\"; one of: finish, requeue, cancel")
            }
            let deadline = body["deadline_seconds"]?.doubleValue ?? 600
            guard deadline >= 0, deadline <= 7 * 86400 else { throw APIError(status: 400, message: "deadline_seconds must be from 0 to 7 days") }
            return .json(200, try await controlWorkers(selector, action: action, policy: policy, deadlineSeconds: deadline,
                                                       stay: body["stay"] == .bool(true), by: who.name))

        case ("PUT", "credentials", 2):
            let name = route[1]
            guard name.count <= 100, name.allSatisfy({ $0.isLetter || $0.isNumber || "-_.".contains($0) }) else {
                throw APIError(status: 400, message: "a credential name is 1-100 letters, digits, - _ or .")
            }
            _ = try jsonObject(request.body)
            let id = try await store.setCredential(name: name, body: request.body)
            logger.info("credential set", metadata: ["credential": "\(name)", "by": "\(who.name)"])
            return .json(200, ["id": .string(id), "name": .string(name)])

        case ("GET", "tokens", 1):
            guard who.role == .admin else { throw APIError(status: 403, message: "listing tokens needs admin") }
            return .json(200, ["tokens": .array(try await store.operatorTokens().map(Render.token))])

        case ("POST", "tokens", 1):
            let body = try jsonObject(request.body)
            guard let name = body["name"]?.stringValue else { throw APIError(status: 400, message: "\"name\" is required") }
            let roleText = body["role"]?.stringValue ?? "viewer"
            guard let role = OperatorToken.Role(rawValue: roleText) else {
                throw APIError(status: 400, message: "unknown role \"\(roleText)\"; one of: viewer, admin")
            }
            let (record, secret) = try await store.createOperatorToken(name: name, role: role)
            logger.info("operator token created", metadata: ["token.id": "\(record.id)", "token.name": "\(record.name)", "by": "\(who.name)"])
            var out = Render.token(record)
            if case .object(var o) = out { o["token"] = .string(secret); out = .object(o) }
            return .json(201, out)

        case ("DELETE", "tokens", 2):
            let n = try await store.revokeOperatorToken(route[1], at: Timestamp.nowMicros())
            guard n > 0 else { throw APIError(status: 404, message: "no live token with id or name \"\(route[1])\"") }
            closeOperatorSockets { $0.tokenID == route[1] || $0.name == route[1] }
            logger.info("operator token revoked", metadata: ["token": "\(route[1])", "by": "\(who.name)"])
            return .json(200, ["revoked": .int(Int64(n))])

        default:
            let known = "GET|PUT /api/workflows, GET /api/workflows/<name>, POST|GET /api/attempts, GET /api/attempts/<id>, "
                + "GET /api/attempts/<id>/logs, POST /api/attempts/<id>/cancel, POST /api/attempts/<id>/retry, "
                + "POST /api/attempts/<id>/rerun, GET /api/dataclips/<id>, GET /api/workers, POST /api/workers/<name>/registration, POST /api/workers/<name>/revoke, POST /api/workers/control, PUT /api/credentials/<name>, "
                + "GET|POST /api/tokens, DELETE /api/tokens/<id>"
            return .error(404, "no such endpoint: \(method) \(request.path) (the API has: \(known))")
        }
    }

    private func utf8(_ body: [UInt8], what: String) throws -> String {
        guard !body.isEmpty else { throw APIError(status: 400, message: "the request body is empty: send \(what)") }
        guard let text = String(validating: body, as: UTF8.self) else { throw APIError(status: 400, message: "\(what) is not UTF-8 text") }
        return text
    }

    private func jsonObject(_ body: [UInt8]) throws -> [String: JSON] {
        guard !body.isEmpty else { throw APIError(status: 400, message: "the request body is empty: send a JSON object") }
        let parsed: JSON
        do { parsed = try JSON.parse(body) } catch { throw APIError(status: 400, message: "the body is not valid JSON: \(error)") }
        guard case .object(let o) = parsed else { throw APIError(status: 400, message: "the body must be a JSON object") }
        return o
    }

    /// A time filter: ISO 8601 (`2026-12-02T10:00:00Z`, with or without seconds, fractions or the `Z`, which is
    /// then assumed: times are UTC), or microseconds since the epoch.
    private func timeParameter(_ text: String?, name: String) throws -> Int64? {
        guard let text, !text.isEmpty else { return nil }
        if let micros = Self.parseISO8601(text) { return micros }
        throw APIError(status: 400, message: "\(name) must be an ISO 8601 time such as 2026-12-02T10:00:00Z, 2026-12-02T12:00+02:00 "
                       + "or 2026-12-02 (UTC unless an offset is given), not \"\(text)\"")
    }

    /// `2026-12-02`, `2026-12-02T10:00`, `2026-12-02T10:00:00.5`, each with `Z`, `+02:00`, `-0130` or nothing
    /// (UTC); a space may stand for the `T`. Returns microseconds since the epoch; nil for anything else.
    static func parseISO8601(_ text: String) -> Int64? {
        let t = Array(text.trimmingCharacters(in: .whitespaces).utf8)
        var i = 0
        func number(_ digits: Int) -> Int? {
            guard i + digits <= t.count else { return nil }
            var n = 0
            for k in i..<(i + digits) {
                guard t[k] >= 0x30, t[k] <= 0x39 else { return nil }
                n = n * 10 + Int(t[k] - 0x30)
            }
            i += digits
            return n
        }
        func take(_ c: Character) -> Bool {
            guard i < t.count, t[i] == c.asciiValue! else { return false }
            i += 1
            return true
        }
        guard let year = number(4), take("-"), let month = number(2), take("-"), let day = number(2),
              (1...12).contains(month), (1...31).contains(day) else { return nil }
        var hour = 0, minute = 0, second = 0, micros = 0, offsetSeconds = 0
        if i < t.count {
            guard take("T") || take("t") || take(" "), let h = number(2), take(":"), let m = number(2), h < 24, m < 60 else { return nil }
            hour = h; minute = m
            if take(":") {
                guard let sec = number(2), sec < 61 else { return nil }
                second = min(sec, 59)
                if take(".") || take(",") {
                    var digits = 0
                    while i < t.count, t[i] >= 0x30, t[i] <= 0x39 {
                        if digits < 6 { micros = micros * 10 + Int(t[i] - 0x30) }
                        digits += 1; i += 1
                    }
                    guard digits > 0 else { return nil }
                    for _ in digits..<max(digits, 6) { micros *= 10 }
                }
            }
            if take("Z") || take("z") {
            } else if i < t.count, t[i] == UInt8(ascii: "+") || t[i] == UInt8(ascii: "-") {
                let sign = t[i] == UInt8(ascii: "-") ? -1 : 1
                i += 1
                guard let oh = number(2), oh < 24 else { return nil }
                _ = take(":")
                guard let om = number(2), om < 60 else { return nil }
                offsetSeconds = sign * (oh * 3600 + om * 60)
            }
        }
        guard i == t.count else { return nil }
        var parts = tm()
        parts.tm_year = Int32(year - 1900); parts.tm_mon = Int32(month - 1); parts.tm_mday = Int32(day)
        parts.tm_hour = Int32(hour); parts.tm_min = Int32(minute); parts.tm_sec = Int32(second)
        let seconds = timegm(&parts)
        // timegm normalises 31 February to 3 March: such a date is not a date.
        guard parts.tm_mday == Int32(day), parts.tm_mon == Int32(month - 1) else { return nil }
        return (Int64(seconds) - Int64(offsetSeconds)) * 1_000_000 + Int64(micros)
    }

    /// A dataclip as an operator may see it: JSON (or a string when it is not JSON), without `configuration`
    /// (the worker drops it; this holds for any older or foreign dataclip too) and with every credential value
    /// masked, as in logs.
    private func shownDataclip(_ body: [UInt8]) async throws -> JSON {
        var value = (try? JSON.parse(body)) ?? .string(String(decoding: body, as: UTF8.self))
        if case .object(var o) = value { o["configuration"] = nil; value = .object(o) }
        var bodies: [Any] = []
        for b in try await store.allCredentialBodies() {
            if let json = try? JSONSerialization.jsonObject(with: Data(b)) { bodies.append(json) }
        }
        let scrubber = CredentialScrubber(credentialBodies: bodies)
        return scrubber.isEmpty ? value : Self.scrubbed(value, scrubber)
    }

    static func scrubbed(_ value: JSON, _ scrubber: CredentialScrubber) -> JSON {
        switch value {
        case .string(let s): return .string(scrubber.scrub(s))
        case .array(let items): return .array(items.map { scrubbed($0, scrubber) })
        case .object(let o):
            // Keys too: a header map or a lookup table may be keyed by a secret.
            var out: [String: JSON] = [:]
            for (k, v) in o { out[scrubber.scrub(k)] = scrubbed(v, scrubber) }
            return .object(out)
        default:
            // A number that is a credential value (a PIN, an account number) is masked too.
            let text = String(decoding: value.encoded(), as: UTF8.self)
            return scrubber.scrub(text) == text ? value : .string(CredentialScrubber.mask)
        }
    }

    private func intParameter(_ text: String?, name: String, default value: Int, range: ClosedRange<Int>) throws -> Int {
        guard let text, !text.isEmpty else { return value }
        guard let n = Int(text), range.contains(n) else {
            throw APIError(status: 400, message: "\(name) must be an integer from \(range.lowerBound) to \(range.upperBound), not \"\(text)\"")
        }
        return n
    }
}
