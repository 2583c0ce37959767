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

    func add(_ socket: ChannelSocket) { lock.withLock { watchers[socket.id] = socket } }
    func remove(socketID: Int) { lock.withLock { _ = watchers.removeValue(forKey: socketID) } }
    var sockets: [ChannelSocket] { lock.withLock { Array(watchers.values) } }
    var isWatched: Bool { lock.withLock { !watchers.isEmpty } }
}

extension Lightning {
    /// Attempts were created or changed state: the `attempts` watchers hear of each.
    /// Changed attempts are read and pushed by one drain, in the order the changes happened, each as it is when
    /// read (so never older than what was pushed before it).
    func attemptsChanged(_ ids: [String]) {
        guard !ids.isEmpty, attemptsFeed.isWatched else { return }
        attemptsDrain.post(ids, weight: ids.count)
    }

    static func pushAttempts(_ batches: [[String]], store: any AttemptRepository, feed: AttemptsFeed) async {
        // An attempt changed twice while waiting is read once.
        var seen = Set<String>()
        for id in batches.joined() where seen.insert(id).inserted {
            guard let a = try? await store.attempt(id) else { continue }
            let payload = Render.attempt(a)
            for s in feed.sockets { _ = s.push(topic: AttemptsFeed.topic, event: AttemptsFeed.event, payload: payload) }
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
