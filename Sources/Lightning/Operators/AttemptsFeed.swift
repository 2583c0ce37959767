import Channels
import Foundation
import LightningProtocol

/// `attempts` on the operator socket: every attempt created or changing state, as `attempt:changed` with the
/// attempt (no steps), for pages that list attempts live. With nobody joined it costs one lock per change.
final class AttemptsFeed: @unchecked Sendable {
    static let topic = "attempts"
    static let event = "attempt:changed"

    private let lock = NSLock()
    private var watchers: [Int: ChannelSocket] = [:]
    /// Changed attempts waiting to be read and pushed, oldest first; one drain runs at a time, so pushes go out
    /// in the order the changes happened, each with the attempt as it is when read (never older than before).
    private var pending: [String] = []
    private var draining = false

    func add(_ socket: ChannelSocket) { lock.withLock { watchers[socket.id] = socket } }
    func remove(socketID: Int) { lock.withLock { _ = watchers.removeValue(forKey: socketID) } }
    var sockets: [ChannelSocket] { lock.withLock { Array(watchers.values) } }
    var isWatched: Bool { lock.withLock { !watchers.isEmpty } }

    /// Queues ids; true when the caller must start the drain.
    func enqueue(_ ids: [String]) -> Bool {
        lock.withLock {
            pending += ids
            if draining { return false }
            draining = true
            return true
        }
    }

    /// The next batch to push, or nil (and the drain ends) when there is none.
    func next() -> [String]? {
        lock.withLock {
            if pending.isEmpty { draining = false; return nil }
            defer { pending.removeAll(keepingCapacity: true) }
            // An attempt changed twice while waiting is read once.
            var seen = Set<String>()
            return pending.filter { seen.insert($0).inserted }
        }
    }
}

extension Lightning {
    /// Attempts were created or changed state: the `attempts` watchers hear of each.
    func attemptsChanged(_ ids: [String]) {
        guard !ids.isEmpty, attemptsFeed.isWatched, attemptsFeed.enqueue(ids) else { return }
        let store = self.store, feed = attemptsFeed
        Task {
            while let batch = feed.next() {
                for id in batch {
                    guard let a = try? await store.attempt(id) else { continue }
                    let payload = Render.attempt(a)
                    for s in feed.sockets { _ = s.push(topic: AttemptsFeed.topic, event: AttemptsFeed.event, payload: payload) }
                }
            }
        }
    }
}

struct AttemptsFeedChannel: ChannelHandler {
    let lightning: Lightning

    func join(topic: String, payload: JSON, socket: ChannelSocket) async -> JoinResult {
        guard let who = socket.context as? OperatorIdentity, who.isLive(at: Timestamp.nowMicros()) else {
            return .error(["reason": "unauthorized"])
        }
        return .ok([:])
    }

    func joined(topic: String, socket: ChannelSocket) async { lightning.attemptsFeed.add(socket) }

    func leave(topic: String, socket: ChannelSocket) async { lightning.attemptsFeed.remove(socketID: socket.id) }

    func handle(event: String, topic: String, payload: JSON, socket: ChannelSocket) async -> ChannelReply? {
        .error(["reason": .string("the attempts feed only sends: unknown event \(event)")])
    }
}
