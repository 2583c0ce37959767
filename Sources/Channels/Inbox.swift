/// A connection's received messages, handled one at a time in arrival order, shared by the service thread (which
/// adds) and the task that handles them.
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
