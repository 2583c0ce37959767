import Foundation
import Testing
@testable import Channels

/// A connection's inbox (no sockets): messages in arrival order, one handling task at a time, started only when
/// there is something to handle, `.closed` once after the last message.
@Suite("Inbox")
struct InboxTests {
    private func bytes(_ n: Int) -> [UInt8] { Array(String(n).utf8) }

    @Test("the first task runs from the start; after it goes idle, the next message asks for a new one")
    func startOnlyWhenIdle() {
        let inbox = Inbox()
        #expect(inbox.add(bytes(1), binary: false, pauseAbove: 1 << 20) == (start: false, pause: false))
        #expect(inbox.next() == .message(bytes: bytes(1), binary: false))
        #expect(inbox.next() == .idle)
        #expect(inbox.add(bytes(2), binary: true, pauseAbove: 1 << 20) == (start: true, pause: false))
        #expect(inbox.add(bytes(3), binary: false, pauseAbove: 1 << 20) == (start: false, pause: false), "a task is starting already")
        #expect(inbox.next() == .message(bytes: bytes(2), binary: true))
        #expect(inbox.next() == .message(bytes: bytes(3), binary: false))
        #expect(inbox.next() == .idle)
    }

    @Test("arrival order is kept when messages arrive while others are being taken")
    func order() {
        let inbox = Inbox()
        var taken: [[UInt8]] = []
        var sent = 0
        for round in 0..<50 {
            for _ in 0..<(round % 7) {
                sent += 1
                _ = inbox.add(bytes(sent), binary: false, pauseAbove: .max)
            }
            for _ in 0..<(round % 5) {
                if case .message(let b, _) = inbox.next() { taken.append(b) }
            }
        }
        while case .message(let b, _) = inbox.next() { taken.append(b) }
        #expect(taken == (1...sent).map(bytes))
    }

    @Test("closed comes after the last message, once; a close while a task runs starts none, one while idle starts one")
    func closedOnce() {
        let running = Inbox()
        _ = running.add(bytes(1), binary: false, pauseAbove: .max)
        #expect(running.finish() == false, "its first task is running")
        #expect(running.finish() == false)
        #expect(running.next() == .message(bytes: bytes(1), binary: false))
        #expect(running.next() == .closed)
        #expect(running.next() == .idle)

        let idle = Inbox()
        #expect(idle.next() == .idle)
        #expect(idle.finish() == true)
        #expect(idle.next() == .closed)
        #expect(idle.finish() == false)
        #expect(idle.next() == .idle)
    }

    @Test("reading pauses once when the bytes waiting pass the limit, and resumes once when under the threshold")
    func pauseAndResume() {
        let inbox = Inbox()
        #expect(inbox.add([UInt8](repeating: 1, count: 60), binary: false, pauseAbove: 100).pause == false)
        #expect(inbox.add([UInt8](repeating: 2, count: 60), binary: false, pauseAbove: 100).pause == true)
        #expect(inbox.add([UInt8](repeating: 3, count: 60), binary: false, pauseAbove: 100).pause == false, "paused already")
        #expect(inbox.handled(60, resumeBelow: 50) == false, "120 bytes wait")
        #expect(inbox.handled(60, resumeBelow: 50) == false, "60 bytes wait")
        #expect(inbox.handled(60, resumeBelow: 50) == true)
        #expect(inbox.add([UInt8](repeating: 4, count: 60), binary: false, pauseAbove: 100).pause == false)
        #expect(inbox.handled(60, resumeBelow: 50) == false, "not paused")
    }

    @Test("a producer thread and the tasks it starts: every message handled once, in order, by one task at a time",
          .timeLimit(.minutes(2)))
    func concurrentTasks() async {
        let inbox = Inbox()
        let log = HandledLog()
        let count = 20_000
        let done = AsyncStream<Void>.makeStream()
        @Sendable func drain() {
            Task {
                while true {
                    switch inbox.next() {
                    case .message(let b, _):
                        // From taking a message to asking for the next, this task alone may be handling.
                        log.begin(b)
                        if b.last == UInt8(ascii: "0") { sched_yield() }
                        log.end()
                    case .closed:
                        done.continuation.finish()
                        return
                    case .idle: return
                    }
                }
            }
        }
        // As on a connection: the first task runs from the start.
        drain()
        let producer = Thread {
            for i in 1...count {
                if inbox.add(Array(String(i).utf8), binary: false, pauseAbove: .max).start { drain() }
                if i % 1000 == 0 { usleep(200) }
            }
            if inbox.finish() { drain() }
        }
        producer.start()
        for await _ in done.stream {}
        let (order, overlaps) = log.result
        #expect(order.count == count && order == (1...count).map { Array(String($0).utf8) }, "\(order.count) handled")
        #expect(overlaps == 0, "two tasks handled messages at once")
    }
}

/// What the concurrent test's tasks did: the messages in the order handled, and whether two ever overlapped.
private final class HandledLog: @unchecked Sendable {
    private let lock = NSLock()
    private var order: [[UInt8]] = []
    private var active = 0
    private var overlaps = 0
    func begin(_ b: [UInt8]) {
        lock.withLock {
            active += 1
            if active > 1 { overlaps += 1 }
            order.append(b)
        }
    }
    func end() { lock.withLock { active -= 1 } }
    var result: ([[UInt8]], Int) { lock.withLock { (order, overlaps) } }
}
