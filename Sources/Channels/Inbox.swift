/// A connection's received messages, taken in arrival order (and handled in order per topic: `TopicLanes`), shared by
/// the service thread (which adds) and the task that takes them.
///
/// No task waits on an idle connection: the service thread starts one when a message arrives and none is running,
/// and it ends as soon as the inbox is empty. (A task that lives as long as its connection keeps the largest stack its
/// handlers ever needed: about 15 KB for each joined worker socket.) A connection's first task runs from the start,
/// for the endpoint's `onConnect`; after the connection closes and its last message is handled, one task sees
/// `.closed`, once.
final class Inbox: @unchecked Sendable {
    enum Next: Equatable {
        case message(bytes: [UInt8], binary: Bool)
        /// The connection closed and every message it sent is handled.
        case closed
        /// Nothing to handle: the asking task ends, and the next message starts another.
        case idle
    }

    /// Per-topic order among the messages taken from here.
    let lanes = TopicLanes()

    private let lock = Lock()
    // A queue as two stacks: added to `incoming`, taken from `outgoing` (reversed when it runs out).
    private var incoming: [(bytes: [UInt8], binary: Bool)] = []
    private var outgoing: [(bytes: [UInt8], binary: Bool)] = []
    private var bytes = 0
    private var paused = false
    private var running = true
    private var finished = false
    private var closeTaken = false

    /// Adds a received message. `start`: no task is handling the inbox, the caller starts one; `pause`: the bytes
    /// waiting are over `limit` for the first time since reading resumed, the caller stops reading.
    func add(_ message: [UInt8], binary: Bool, pauseAbove limit: Int) -> (start: Bool, pause: Bool) {
        lock.withLock {
            incoming.append((message, binary))
            bytes += message.count
            var pause = false
            if !paused && bytes > limit {
                paused = true
                pause = true
            }
            let start = !running
            running = true
            return (start, pause)
        }
    }

    /// The connection closed. True when no task is handling the inbox: the caller starts one, to see `.closed`.
    func finish() -> Bool {
        lock.withLock {
            guard !finished else { return false }
            finished = true
            let start = !running
            running = true
            return start
        }
    }

    /// For the handling task: what to do next. After `.idle` or `.closed` the task must end.
    func next() -> Next {
        lock.withLock {
            if outgoing.isEmpty && !incoming.isEmpty {
                outgoing = incoming.reversed()
                incoming.removeAll(keepingCapacity: false)
            }
            if let m = outgoing.popLast() { return .message(bytes: m.bytes, binary: m.binary) }
            running = false
            outgoing = []  // its capacity: an idle connection keeps no buffer
            if finished && !closeTaken {
                closeTaken = true
                return .closed
            }
            return .idle
        }
    }

    /// Whether reading is paused (as the last `add` or `handled` left it).
    var isPaused: Bool { lock.withLock { paused } }

    /// A handled message's size. True when reading was paused and the bytes waiting are now under `threshold`:
    /// the caller resumes reading.
    func handled(_ size: Int, resumeBelow threshold: Int) -> Bool {
        lock.withLock {
            bytes -= size
            if paused && bytes < threshold {
                paused = false
                return true
            }
            return false
        }
    }
}

/// A connection's messages in per-topic order: each topic's are handled one at a time in arrival order, different
/// topics' at the same time, as Phoenix runs each channel of a socket in a process of its own. A worker's socket
/// carries all of its attempts (`run:<id>`): one attempt's event waiting for its commit no longer holds up the
/// others', whose writes then share that commit (issue 11's group commit for every event).
///
/// Shared by every task a connection has had: one that ended (`Inbox.next()` said `.idle`) may still wait for its
/// last handlers, and the next one's messages for the same topics wait for them.
final class TopicLanes: @unchecked Sendable {
    /// Opened once, when a message's handling ends.
    final class Latch: @unchecked Sendable {
        private let lock = Lock()
        private var opened = false
        private var waiters: [CheckedContinuation<Void, Never>] = []

        func wait() async {
            await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
                let now = lock.withLock { () -> Bool in
                    if opened { return true }
                    waiters.append(c)
                    return false
                }
                if now { c.resume() }
            }
        }

        func open() {
            let woken = lock.withLock { () -> [CheckedContinuation<Void, Never>] in
                opened = true
                defer { waiters = [] }
                return waiters
            }
            woken.forEach { $0.resume() }
        }
    }

    /// Messages of one connection handled at once, at most (a socket's attempts, joins and heartbeats; a worker with
    /// more than this many attempts running has the rest of its events wait their turn).
    static let maxInFlight = 64

    private let lock = Lock()
    /// The last message queued for each topic with one in flight.
    private var tails: [String: Latch] = [:]
    private var inFlight = 0
    /// The task waiting in `room(below:)` or `drained()`, and the count it waits to fall under.
    private var roomWaiter: (limit: Int, continuation: CheckedContinuation<Void, Never>)?

    /// A message for `topic` arrived: it is handled after `after` opens (the topic's message before it, if still in
    /// flight) and opens `done` through `leave`.
    func enter(_ topic: String) -> (after: Latch?, done: Latch) {
        let done = Latch()
        return lock.withLock {
            let after = tails[topic]
            tails[topic] = done
            inFlight += 1
            return (after, done)
        }
    }

    /// The message's handling ended.
    func leave(_ topic: String, _ done: Latch) {
        done.open()
        let woken = lock.withLock { () -> CheckedContinuation<Void, Never>? in
            if tails[topic] === done { tails[topic] = nil }
            inFlight -= 1
            guard let waiter = roomWaiter, inFlight < waiter.limit else { return nil }
            roomWaiter = nil
            return waiter.continuation
        }
        woken?.resume()
    }

    /// Returns once fewer than `limit` messages are in flight. One caller at a time (the task taking the inbox).
    func room(below limit: Int) async {
        await withCheckedContinuation { (c: CheckedContinuation<Void, Never>) in
            let now = lock.withLock { () -> Bool in
                if inFlight < limit { return true }
                roomWaiter = (limit, c)
                return false
            }
            if now { c.resume() }
        }
    }

    /// Returns once no message is in flight. The same one caller as `room(below:)` (`.closed` goes to the task taking
    /// the inbox).
    func drained() async { await room(below: 1) }

    /// Messages in flight (tests).
    var count: Int { lock.withLock { inFlight } }
}
