import Channels
import Foundation
import JWT

/// `worker:queue` (PROTOCOL.md 3): workers join with their capacity and push `claim`.
struct QueueChannel: ChannelHandler {
    let lightning: Lightning

    func join(topic: String, payload: JSON, socket: ChannelSocket) async -> JoinResult {
        guard let worker = socket.context as? WorkerIdentity else { return .error(["reason": "unauthorized"]) }
        do {
            let joinedAt = Timestamp.nowMicros()
            let (credential, defaults) = try await lightning.workerJoined(worker, socket: socket, payload: payload)
            if let held = payload["held"]?.arrayValue {
                // Claims whose replies never reached this worker (its Lightning went between the claim and the reply):
                // back to the queue now, not after the claim timeout.
                let released = try await lightning.store.releaseClaims(workerName: worker.name, keeping: Set(held.compactMap(\.stringValue)),
                                                                       claimedBefore: joinedAt)
                if !released.isEmpty {
                    lightning.logger.warning("claims the worker never received returned to the queue", metadata: [
                        "worker.name": "\(worker.name)", "attempts": "\(released)",
                    ])
                    lightning.attemptsChanged(released)
                    lightning.nudgeWorkers()
                }
            }
            let asked = Set((payload["extensions"]?.arrayValue ?? []).compactMap(\.stringValue))
            lightning.state.setCheckout(socket.id, asked.contains(Wire.Extension.claimCheckout))
            lightning.state.setFleetControl(socket.id, asked.contains(Wire.Extension.fleetControl))
            // Our extensions, offered so that workers use them only with a Lightning that has them (OpenFn's replies {}).
            var reply: [String: JSON] = ["extensions": [.string(Wire.Extension.attemptRefused), .string(Wire.Extension.claimCheckout),
                                                        .string(Wire.Extension.fleetControl), .string(Wire.Extension.workerRenew)]]
            // The largest message this server takes: the worker refuses to send a larger one (the socket would close
            // on it, and on its resend, for ever) and bounds its log lines and outputs to fit.
            reply[Wire.maxMessageBytesField] = .int(Int64(lightning.configuration.channel.maxMessageBytes))
            if let credential { reply["credential"] = credential }
            if let defaults { reply["config"] = defaults }
            return .ok(.object(reply))
        } catch StoreError.conflict(let m) {
            return .error(["reason": .string(m)])
        } catch {
            return .error(["reason": .string("could not record the worker: \(error)")])
        }
    }

    func joined(topic: String, socket: ChannelSocket) async {
        guard let worker = socket.context as? WorkerIdentity else { return }
        await lightning.workerJoinedQueue(worker, socket: socket)
    }

    func handle(event: String, topic: String, payload: JSON, socket: ChannelSocket) async -> ChannelReply? {
        guard let worker = socket.context as? WorkerIdentity else { return .error(reason: "unauthorized") }
        if event == Wire.Event.attemptRefused { return await refused(payload, worker: worker) }
        if event == Wire.Event.workerRenew { return await lightning.renewCredential(worker, socket: socket) }
        guard event == Wire.Event.claim else { return .error(["errors": ["event": .array([.string("unknown event \(event)")])]]) }
        guard let demand = payload["demand"]?.intValue, demand > 0, demand <= 1000 else {
            return .error(["errors": ["demand": ["must be a number from 1 to 1000"]]])
        }
        do {
            let claimed = try await lightning.store.claim(demand: Int(demand), workerName: worker.name)
            lightning.state.setFreeSlots(socket.id, claimed.count < demand)
            let ids = claimed.map(\.id)
            lightning.metrics.claims.increment()
            lightning.metrics.claimedAttempts.increment(by: Int64(claimed.count))
            lightning.attemptsChanged(ids)
            // RS256 signing runs here, in the connection's task, never on the socket service thread; several
            // tokens are signed side by side (0.7 ms each, one core each).
            var runs: [JSON]
            do {
                let tokens = try await Self.sign(claimed, with: lightning)
                runs = zip(claimed, tokens).map { c, token in ["id": .string(c.id), "token": .string(token)] }
            } catch {
                // Nothing was handed out: put the claims back rather than leave them to time out.
                try? await lightning.store.unclaim(ids, workerName: worker.name)
                lightning.logger.error("could not sign attempt tokens; claims returned to the queue", metadata: ["error": "\(error)"])
                return .error(["errors": ["claim": .array([.string("could not sign attempt tokens")])]])
            }
            await lightning.configuration.testBeforeClaimReply?()
            if lightning.state.wantsCheckout(socket.id) {
                for i in runs.indices { runs[i] = await checkout(runs[i]) }
            }
            let store = lightning.store
            let logger = lightning.logger
            let state = lightning.state
            return .ok(["runs": .array(runs)], onDelivered: { delivered in
                guard !delivered, !ids.isEmpty else { return }
                state.claimUndelivered()
                // The worker never got them: put them back for someone else.
                Task {
                    do { try await store.unclaim(ids, workerName: worker.name) } catch {
                        logger.error("could not return undelivered claims", metadata: ["error": "\(error)"])
                    }
                    logger.warning("claim reply undelivered; attempts returned to the queue", metadata: ["attempts": "\(ids)"])
                }
            })
        } catch {
            return .error(["errors": ["claim": .array([.string("\(error)")])]])
        }
    }

    /// The claimed attempts' tokens, in order: one signed here, several in a task group.
    static func sign(_ claimed: [ClaimedAttempt], with lightning: Lightning) async throws -> [String] {
        if claimed.count < 2 {
            var tokens: [String] = []
            for c in claimed { tokens.append(try await lightning.signAttemptToken(c)) }
            return tokens
        }
        return try await withThrowingTaskGroup(of: (Int, String).self) { group in
            for (i, c) in claimed.enumerated() { group.addTask { (i, try await lightning.signAttemptToken(c)) } }
            var tokens = [String](repeating: "", count: claimed.count)
            for try await (i, token) in group { tokens[i] = token }
            return tokens
        }
    }

    /// `run:refused` `{"id", "reason"}`: the worker would not run an attempt it claimed because its token did not
    /// verify. Only the worker that holds the claim can end it this way.
    private func refused(_ payload: JSON, worker: WorkerIdentity) async -> ChannelReply {
        guard let id = payload["id"]?.stringValue, !id.isEmpty else { return .error(["errors": ["id": ["can't be blank"]]]) }
        let reason = String((payload["reason"]?.stringValue ?? "no reason given").prefix(2000))
        do {
            try await lightning.claimRefused(id, worker: worker.name, reason: reason)
            return .ok([:])
        } catch {
            return .error(["errors": ["id": .array([.string("\(error)")])]])
        }
    }

    /// The claim:checkout extension: the attempt's plan, and its input dataclip when small, in the claim reply.
    /// Anything that cannot be read is left out: the worker then fetches it as usual.
    private func checkout(_ run: JSON) async -> JSON {
        guard case .object(var o) = run, let id = o["id"]?.stringValue,
            let plan = try? await lightning.plan(id)
        else { return run }
        o["plan"] = plan.wire
        // A larger one is not read at all (this may run on the socket service thread).
        if let bytes = try? await lightning.store.dataclip(plan.dataclipID, atMost: Wire.claimCheckoutMaxDataclipBytes),
            bytes.count <= Wire.claimCheckoutMaxDataclipBytes, let value = try? JSON.parse(bytes)
        {
            o["dataclip"] = value
        }
        return .object(o)
    }
}
