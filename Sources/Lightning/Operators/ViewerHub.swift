import Channels
import Foundation
import LightningProtocol
import Logging
import Metrics

/// Who an operator socket belongs to, from its verified token.
public struct OperatorIdentity: Sendable, Equatable {
    public var tokenID: String
    public var name: String
    public var role: OperatorToken.Role
    /// Set when a console session cookie (not a token) authenticated it: its hash and when it ends.
    public var sessionHash: String? = nil
    public var sessionExpiresAt: Int64? = nil

    /// False once a console session behind it has expired (a token's identity never expires by itself).
    func isLive(at now: Int64) -> Bool { sessionExpiresAt.map { $0 > now } ?? true }
}

/// Delivers an attempt's log lines and events to the operators watching it (`attempt:<id>`).
///
/// Every viewer has a cursor: the last log `seq` it was sent. Live lines go straight to viewers whose cursor is
/// right behind them; a viewer that is behind (just joined, or lines arrived out of order) catches up from the
/// store in chunks, at its own pace (each chunk waits until it is written), while live lines for it are skipped
/// and re-read. So every viewer gets every line once, in order, and a slow viewer never slows the attempt:
/// if its send queue passes the endpoint's limit, the server closes it and it resumes later with `since`.
actor ViewerHub {
    struct Viewer {
        let socket: ChannelSocket
        var cursor: Int64
        /// Joined with `{"batch": true}`: lines arrive as `logs` pushes of many lines, not one `log` push each.
        var batched = false
        var catchingUp = false
        var missed = false
        var sentComplete = false
    }

    private let store: any AttemptRepository & LogRepository
    private let logger: Logger
    private let chunk: Int
    /// attempt id -> socket id -> viewer
    private var viewers: [String: [Int: Viewer]] = [:]
    /// A viewer between the start of its join and `attach` (after the join reply): its cursor (the backlog in the
    /// reply), and what happened to the attempt meanwhile, which the reply may not show. Without this a change in
    /// that window (the attempt started, a step began) never reached the viewer.
    struct Pending {
        var cursor: Int64 = 0
        var batched = false
        var events: [(String, JSON)] = []
        var changed = false
    }
    /// "socket-id attempt-id" -> the viewer joining
    private var pending: [String: Pending] = [:]

    /// Viewers watching now, kept current on every attach and detach.
    private let gauge: Metrics.Gauge?

    init(store: any AttemptRepository & LogRepository, logger: Logger, gauge: Metrics.Gauge? = nil, chunk: Int = 500) {
        self.store = store
        self.logger = logger
        self.gauge = gauge
        self.chunk = chunk
    }

    var count: Int { viewers.values.reduce(0) { $0 + $1.count } }

    /// The attempts with a viewer (each counted once), kept beside `viewers` and readable without a hop to the
    /// hub: the worker's events ask it first, so nothing is queued for the hub while nobody watches.
    nonisolated let watched = KeyCounts()

    static func topic(_ attemptID: String) -> String { "attempt:" + attemptID }

    /// A join of `attempt:<id>` begins, before it reads the attempt: from now on what happens to the attempt is kept
    /// for this viewer until `attach` (or `abandon`, when the join fails). `watched` counts it already, so the events
    /// are posted to the hub.
    func expect(attemptID: String, socket: ChannelSocket, batched: Bool) {
        let key = "\(socket.id) \(attemptID)"
        if pending[key] == nil { watched.add(attemptID, 1) }
        pending[key] = Pending(batched: batched)
    }

    /// The join read the log up to `cursor` (its reply carries that backlog).
    func prepare(attemptID: String, socket: ChannelSocket, cursor: Int64) {
        pending["\(socket.id) \(attemptID)"]?.cursor = cursor
    }

    /// The join failed: nothing kept for it.
    func abandon(attemptID: String, socketID: Int) {
        if pending.removeValue(forKey: "\(socketID) \(attemptID)") != nil { watched.add(attemptID, -1) }
    }

    /// After the join reply: the viewer gets what happened since the join read the attempt, then the log from its cursor.
    func attach(attemptID: String, socket: ChannelSocket) async {
        guard let p = pending.removeValue(forKey: "\(socket.id) \(attemptID)") else { return }
        // Counted once as a viewer from here (the pending count goes).
        if viewers[attemptID] != nil { watched.add(attemptID, -1) }
        viewers[attemptID, default: [:]][socket.id] = Viewer(socket: socket, cursor: p.cursor, batched: p.batched)
        gauge?.record(count)
        let topic = Self.topic(attemptID)
        for (event, payload) in p.events { socket.push(topic: topic, event: event, payload: payload) }
        // Ended meanwhile: `catchUp` says so once the log is complete.
        if p.changed, let a = try? await store.attempt(attemptID), !a.state.isFinal {
            socket.push(topic: topic, event: "attempt:update", payload: await rendered(a))
        }
        await catchUp(attemptID, socket.id)
    }

    func detach(attemptID: String, socketID: Int) {
        if viewers[attemptID]?.removeValue(forKey: socketID) != nil { gauge?.record(count) }
        if viewers[attemptID]?.isEmpty == true {
            viewers[attemptID] = nil
            watched.add(attemptID, -1)
        }
        abandon(attemptID: attemptID, socketID: socketID)
    }

    func detachAll(socketID: Int) {
        for attemptID in Array(viewers.keys) { detach(attemptID: attemptID, socketID: socketID) }
        for key in pending.keys where key.hasPrefix("\(socketID) ") {
            abandon(attemptID: String(key.dropFirst("\(socketID) ".count)), socketID: socketID)
        }
    }

    /// The keys of the viewers joining this attempt.
    private func joining(_ attemptID: String) -> [String] {
        pending.keys.filter { $0.hasSuffix(" " + attemptID) }
    }

    /// Lines just stored for an attempt, in seq order.
    func published(attemptID: String, lines: [LogLineRecord]) async {
        guard let watching = viewers[attemptID], let first = lines.first, let last = lines.last else { return }
        // Rendered once, whatever the number of viewers, and only in the forms someone needs.
        let rendered = watching.values.contains { !$0.batched } ? lines.map(Render.log) : []
        let encoded = watching.values.contains { $0.batched } ? Render.encodedLogs(lines) : []
        var batchesFrom: [Int: [[UInt8]]] = [:]
        for (id, var v) in watching {
            if v.catchingUp { v.missed = true; viewers[attemptID]?[id] = v; continue }
            if v.cursor >= last.seq { continue }
            if v.cursor + 1 < first.seq {
                // A gap: read it from the store.
                Task { await self.catchUp(attemptID, id) }
                continue
            }
            let from = lines.firstIndex { $0.seq > v.cursor } ?? lines.count
            if v.batched {
                let batches = batchesFrom[from] ?? Render.logBatches(encoded[from...])
                batchesFrom[from] = batches
                for batch in batches { v.socket.push(topic: Self.topic(attemptID), event: "logs", rawPayload: batch) }
            } else {
                v.socket.push(topic: Self.topic(attemptID), event: "log", payloads: Array(rendered[from...]))
            }
            v.cursor = last.seq
            viewers[attemptID]?[id] = v
        }
        // One round's frames reach the sockets' queues (and their limits) before the next round is made: with many
        // viewers that stopped reading, rounds would otherwise pile up in the service thread's inbox.
        await watching.values.first?.socket.handedOver()
    }

    /// Lines of this attempt were stored through another replica: each viewer reads what it has not had yet from the
    /// database, from its cursor, so it gets them once and in order whichever replica the worker writes through.
    func storedElsewhere(_ attemptID: String) {
        for (id, var v) in viewers[attemptID] ?? [:] {
            if v.catchingUp {
                v.missed = true
                viewers[attemptID]?[id] = v
            } else {
                Task { await self.catchUp(attemptID, id) }
            }
        }
    }

    /// A step or attempt event, pushed to every viewer as is (kept for the ones joining).
    func event(attemptID: String, event: String, payload: JSON) {
        for key in joining(attemptID) { pending[key]?.events.append((event, payload)) }
        for v in viewers[attemptID]?.values ?? [:].values {
            v.socket.push(topic: Self.topic(attemptID), event: event, payload: payload)
        }
    }

    /// The attempt changed state: viewers get `attempt:update`, or `attempt:complete` (once) when it is final.
    func attemptChanged(_ attemptID: String) async {
        for key in joining(attemptID) { pending[key]?.changed = true }
        guard viewers[attemptID] != nil, let a = try? await store.attempt(attemptID) else { return }
        if a.state.isFinal {
            await sendComplete(a, to: Array(viewers[attemptID]?.keys ?? [:].keys))
        } else {
            event(attemptID: attemptID, event: "attempt:update", payload: await rendered(a))
        }
    }

    /// The attempt as the events carry it: with its starting job's name when it is a rerun (a page merging the event
    /// into what it holds must not lose the name it was shown at load).
    private func rendered(_ a: AttemptRecord, lastSeq: Int64? = nil) async -> JSON {
        let names = a.startingJobID == nil ? [:] : await store.jobNames(attemptID: a.id)
        return Render.attempt(a, lastSeq: lastSeq, jobNames: names)
    }

    /// `attempt:complete`, with the log's last seq, to each of these viewers that has not had it yet.
    private func sendComplete(_ a: AttemptRecord, to socketIDs: [Int]) async {
        let lastSeq = (try? await store.lastLogSeq(attemptID: a.id)) ?? 0
        let payload = await rendered(a, lastSeq: lastSeq)
        for socketID in socketIDs {
            guard var v = viewers[a.id]?[socketID], !v.sentComplete else { continue }
            v.sentComplete = true
            viewers[a.id]?[socketID] = v
            v.socket.push(topic: Self.topic(a.id), event: "attempt:complete", payload: payload)
        }
    }

    private func catchUp(_ attemptID: String, _ socketID: Int) async {
        guard var v = viewers[attemptID]?[socketID], !v.catchingUp else { return }
        v.catchingUp = true
        viewers[attemptID]?[socketID] = v
        let topic = Self.topic(attemptID)
        while true {
            guard var current = viewers[attemptID]?[socketID] else { return }
            current.missed = false
            viewers[attemptID]?[socketID] = current
            let lines: [LogLineRecord]
            do { lines = try await store.logs(attemptID: attemptID, since: current.cursor, limit: chunk) } catch {
                logger.error("could not read log lines for a viewer", metadata: ["attempt.id": "\(attemptID)", "error": "\(error)"])
                current.socket.close(code: 1011, reason: "could not read the log")
                detach(attemptID: attemptID, socketID: socketID)
                return
            }
            let delivered: Bool
            if lines.isEmpty {
                delivered = true
            } else if current.batched {
                delivered = await current.socket.pushAndWait(topic: topic, event: "logs",
                                                             rawPayloads: Render.logBatches(Render.encodedLogs(lines)[...]))
            } else {
                delivered = await current.socket.pushAndWait(topic: topic, event: "log", payloads: lines.map(Render.log))
            }
            guard delivered, var after = viewers[attemptID]?[socketID] else {
                detach(attemptID: attemptID, socketID: socketID)
                return
            }
            if let last = lines.last { after.cursor = max(after.cursor, last.seq) }
            let done = lines.count < chunk && !after.missed
            if done { after.catchingUp = false }
            viewers[attemptID]?[socketID] = after
            if done { break }
        }
        // Joined after the attempt ended (or it ended while we caught up): say so once the log is complete.
        if viewers[attemptID]?[socketID]?.sentComplete == false, let a = try? await store.attempt(attemptID), a.state.isFinal {
            await sendComplete(a, to: [socketID])
        }
    }
}

/// What the viewer drain carries (`Lightning.viewerFeed`), in order.
enum ViewerWork: Sendable {
    case lines(String, [LogLineRecord])
    case event(String, String, JSON)
    case changed(String)
    /// Lines another replica stored (only their attempt is known: they are read from the database).
    case storedElsewhere(String)
}

/// `attempt:<id>` on the operator socket.
struct OperatorChannel: ChannelHandler {
    let lightning: Lightning

    func join(topic: String, payload: JSON, socket: ChannelSocket) async -> JoinResult {
        guard let who = socket.context as? OperatorIdentity, who.isLive(at: Timestamp.nowMicros()) else {
            return .error(["reason": "unauthorized"])
        }
        let id = String(topic.dropFirst("attempt:".count))
        var since: Int64 = 0
        if let s = payload["since"], s != .null {
            guard let n = s.intValue, n >= 0 else { return .error(["reason": "since must be a log seq (an integer of 0 or more)"]) }
            since = n
        }
        let store = lightning.store
        await lightning.viewers.expect(attemptID: id, socket: socket, batched: payload["batch"] == .bool(true))
        do {
            let attempt = try await store.attempt(id)
            let steps = try await store.steps(attemptID: id)
            var backlog = try await store.logs(attemptID: id, since: since, limit: lightning.configuration.joinBacklogLines)
            // The reply must fit well within the viewer's send-queue limit; the rest follows as pushes.
            var bytes = 0
            let budget = lightning.configuration.viewerMaxQueuedBytes / 2
            if let cut = backlog.firstIndex(where: { bytes += $0.message.utf8.count + 120; return bytes > budget }) {
                backlog = Array(backlog.prefix(max(cut, 1)))
            }
            let lastSeq = try await store.lastLogSeq(attemptID: id)
            let cursor = backlog.last?.seq ?? since
            await lightning.viewers.prepare(attemptID: id, socket: socket, cursor: cursor)
            await lightning.configuration.testViewerJoinRead?(id)
            return .ok([
                "attempt": Render.attempt(attempt, steps: steps, lastSeq: lastSeq, jobNames: await store.jobNames(attemptID: id)),
                "logs": .array(backlog.map(Render.log)),
                // More lines than the reply holds follow as `log` pushes, in order.
                "more": .bool(cursor < lastSeq),
            ])
        } catch StoreError.notFound {
            await lightning.viewers.abandon(attemptID: id, socketID: socket.id)
            return .error(["reason": "not_found"])
        } catch {
            await lightning.viewers.abandon(attemptID: id, socketID: socket.id)
            return .error(["reason": .string("could not load the attempt: \(error)")])
        }
    }

    func joined(topic: String, socket: ChannelSocket) async {
        await lightning.viewers.attach(attemptID: String(topic.dropFirst("attempt:".count)), socket: socket)
    }

    func leave(topic: String, socket: ChannelSocket) async {
        await lightning.viewers.detach(attemptID: String(topic.dropFirst("attempt:".count)), socketID: socket.id)
    }

    func handle(event: String, topic: String, payload: JSON, socket: ChannelSocket) async -> ChannelReply? {
        .error(["reason": .string("viewers only listen: unknown event \(event)")])
    }
}
