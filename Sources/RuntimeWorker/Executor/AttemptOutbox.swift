import Channels
import Foundation

/// One attempt's outgoing events, in order. The executor *posts* the events whose replies it does not read
/// (`run:start`, `step:start`, `step:complete`) and goes on at once, so a step's process starts while those are
/// still on their way; it *sends* the ones it must see answered (fetches, `run:complete`), which waits for
/// everything posted before. One event is on the wire at a time, head first: after a dropped socket the sink
/// below resends the head, and Lightning sees every event once (or a repeat it recognises by its ids) and in
/// order. The first failure (Lightning refused to rejoin the attempt) fails every later post and send.
final class AttemptOutbox: AttemptEventSink, @unchecked Sendable {
    private struct Entry {
        var event: String
        var payload: AttemptEventPayload
        var waiter: CheckedContinuation<ChannelClientReply, any Error>?
    }

    private let wire: any AttemptEventSink
    private let lock = NSLock()
    private var queue: [Entry] = []
    private var draining = false
    private var failure: (any Error)?

    init(_ wire: any AttemptEventSink) {
        self.wire = wire
    }

    /// Queues an event without waiting for its reply. Throws only when an earlier event failed for good.
    func post(_ event: String, _ payload: JSON) throws {
        try enqueue(Entry(event: event, payload: .value(payload), waiter: nil))
    }

    /// Queues an event and waits for its reply (after every event queued before it).
    func send(_ event: String, _ payload: JSON) async throws -> ChannelClientReply {
        try await withCheckedThrowingContinuation { c in
            do { try enqueue(Entry(event: event, payload: .value(payload), waiter: c)) } catch { c.resume(throwing: error) }
        }
    }

    /// `send` for a payload already encoded as JSON text.
    func send(_ event: String, encoded payload: [UInt8]) async throws -> ChannelClientReply {
        try await withCheckedThrowingContinuation { c in
            do { try enqueue(Entry(event: event, payload: .encoded(payload), waiter: c)) } catch { c.resume(throwing: error) }
        }
    }

    /// How many events are queued or on the wire.
    var pending: Int { lock.withLock { queue.count } }

    private func enqueue(_ entry: Entry) throws {
        let start: Bool = try lock.withLock {
            if let failure { throw failure }
            queue.append(entry)
            defer { draining = true }
            return !draining
        }
        if start { Task { await drain() } }
    }

    private func drain() async {
        while true {
            guard let head = lock.withLock({ () -> Entry? in
                if queue.isEmpty { draining = false }
                return queue.first
            }) else { return }
            do {
                let reply: ChannelClientReply
                switch head.payload {
                case .value(let json): reply = try await wire.send(head.event, json)
                case .encoded(let bytes): reply = try await wire.send(head.event, encoded: bytes)
                }
                lock.withLock { _ = queue.removeFirst() }
                head.waiter?.resume(returning: reply)
            } catch {
                let failed: [Entry] = lock.withLock {
                    failure = error
                    defer { queue = []; draining = false }
                    return queue
                }
                for entry in failed { entry.waiter?.resume(throwing: error) }
                return
            }
        }
    }
}
