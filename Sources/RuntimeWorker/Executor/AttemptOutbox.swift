import Channels
import Foundation
import LightningProtocol

/// One attempt's outgoing events, in order. The executor *posts* the events whose replies it does not read
/// (`run:start`, `step:start`, `step:complete`) and goes on at once, so a step's process starts while those are
/// still on their way; it *sends* the ones it must see answered (fetches, `run:complete`), which waits for
/// everything posted before. One event is on the wire at a time, head first: after a dropped socket the sink
/// below resends the head, and Lightning sees every event once (or a repeat it recognises by its ids) and in
/// order. The first failure (Lightning refused to rejoin the attempt) fails every later post and send. An event over
/// Lightning's message limit fails alone: it is dropped (a waiter gets the error; for a posted one, the next post or
/// send throws it, and a `run:complete` already queued is not sent but fails with it), and the events after it go on,
/// so the attempt can still end with a `run:complete` that says why. Events may be queued before the attempt's channel
/// is joined: a `gate` holds them until it is.
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
    /// A posted event that was too large to send, said once by the next post or send.
    private var dropped: OutboxError?

    /// Awaited before the first event goes out (the `run:<id>` join); nil once passed.
    private var gate: (@Sendable () async throws -> Void)?

    /// `gate`, when given, holds every event until it returns: events can be queued while the attempt's channel is
    /// still being joined, and go out in order once it is. If it throws, every event queued or to come fails with
    /// its error.
    init(_ wire: any AttemptEventSink, gate: (@Sendable () async throws -> Void)? = nil) {
        self.wire = wire
        self.gate = gate
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
            if let d = dropped {
                dropped = nil
                throw d
            }
            queue.append(entry)
            defer { draining = true }
            return !draining
        }
        if start { Task { await drain() } }
    }

    private func drain() async {
        if let gate = lock.withLock({ gate }) {
            do {
                try await gate()
                lock.withLock { self.gate = nil }
            } catch {
                fail(error)
                return
            }
        }
        while true {
            guard let head = lock.withLock({ () -> Entry? in
                if queue.isEmpty { draining = false }
                return queue.first
            }) else { return }
            // A run:complete queued before an earlier event was dropped would end the attempt without saying so.
            if head.event == Wire.Event.attemptComplete, head.waiter != nil,
                let d = lock.withLock({ () -> OutboxError? in
                    guard let d = dropped else { return nil }
                    dropped = nil
                    queue.removeFirst()
                    return d
                })
            {
                head.waiter?.resume(throwing: d)
                continue
            }
            do {
                let reply: ChannelClientReply
                switch head.payload {
                case .value(let json): reply = try await wire.send(head.event, json)
                case .encoded(let bytes): reply = try await wire.send(head.event, encoded: bytes)
                }
                lock.withLock { _ = queue.removeFirst() }
                head.waiter?.resume(returning: reply)
            } catch ChannelError.messageTooLarge(let bytes, let limit) {
                let error = OutboxError.eventTooLarge(event: head.event, bytes: bytes, limit: limit)
                lock.withLock {
                    _ = queue.removeFirst()
                    if head.waiter == nil { dropped = error }
                }
                head.waiter?.resume(throwing: error)
            } catch {
                fail(error)
                return
            }
        }
    }

    /// Fails every queued event and every later one with `error`.
    private func fail(_ error: any Error) {
        let failed: [Entry] = lock.withLock {
            failure = error
            defer { queue = []; draining = false }
            return queue
        }
        for entry in failed { entry.waiter?.resume(throwing: error) }
    }
}

enum OutboxError: Error, CustomStringConvertible, Equatable {
    case eventTooLarge(event: String, bytes: Int, limit: Int)

    var description: String {
        switch self {
        case .eventTooLarge(let event, let bytes, let limit):
            "a \(event) event of \(bytes) bytes was not sent: Lightning takes messages of up to \(limit) bytes"
        }
    }
}
