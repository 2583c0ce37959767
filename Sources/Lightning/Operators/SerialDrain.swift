import Foundation

/// Work handed over without waiting for it, done in the order given by at most one task at a time. A caller waits
/// only when more than `limit` units are queued (the consumer is that far behind): backpressure under overload,
/// never on the normal path.
final class SerialDrain<Item: Sendable>: @unchecked Sendable {
    private let lock = NSLock()
    private var items: [(Item, Int)] = []
    private var queued = 0
    private var running = false
    private var waiting: [CheckedContinuation<Void, Never>] = []
    private let limit: Int
    private let process: @Sendable ([Item]) async -> Void

    init(limit: Int, _ process: @escaping @Sendable ([Item]) async -> Void) {
        self.limit = limit
        self.process = process
    }

    /// Queues `item` (worth `weight` units against the limit), waiting while the queue is over the limit.
    func add(_ item: Item, weight: Int = 1) async {
        if post(item, weight: weight) { await withCheckedContinuation { c in admit(c) } }
    }

    /// Queues `item` and never waits; returns whether the queue is now over the limit.
    @discardableResult
    func post(_ item: Item, weight: Int = 1) -> Bool {
        let (start, over): (Bool, Bool) = lock.withLock {
            items.append((item, weight))
            queued += weight
            let start = !running
            running = true
            return (start, queued > limit)
        }
        if start { Task { await drain() } }
        return over
    }

    private func admit(_ c: CheckedContinuation<Void, Never>) {
        let now: Bool = lock.withLock {
            if queued <= limit { return true }
            waiting.append(c)
            return false
        }
        if now { c.resume() }
    }

    private func drain() async {
        while true {
            let batch: [(Item, Int)]? = lock.withLock {
                if items.isEmpty { running = false; return nil }
                let taken = items
                items = []
                return taken
            }
            guard let batch else { return }
            await process(batch.map(\.0))
            let resume: [CheckedContinuation<Void, Never>] = lock.withLock {
                queued -= batch.reduce(0) { $0 + $1.1 }
                guard queued <= limit else { return [] }
                defer { waiting.removeAll() }
                return waiting
            }
            for c in resume { c.resume() }
        }
    }
}
