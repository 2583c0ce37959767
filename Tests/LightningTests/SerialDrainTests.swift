import Foundation
import Testing
@testable import Lightning

/// Records what the drain hands over, and can hold the drain inside `process` until released.
final class DrainProbe: @unchecked Sendable {
    private let lock = NSLock()
    private var _seen: [Int] = []
    private var gate: CheckedContinuation<Void, Never>?
    private var holding = true
    private var entered = false
    var seen: [Int] { lock.withLock { _seen } }
    var isInside: Bool { lock.withLock { entered } }

    func process(_ items: [Int]) async {
        let hold: Bool = lock.withLock { entered = true; return holding }
        if hold { await withCheckedContinuation { c in lock.withLock { gate = c } } }
        lock.withLock { _seen += items }
    }

    func release() {
        let c: CheckedContinuation<Void, Never>? = lock.withLock { holding = false; defer { gate = nil }; return gate }
        c?.resume()
    }
    var gateSet: Bool { lock.withLock { gate != nil } }
}

@Suite("SerialDrain: in order, one at a time, callers wait only past the limit")
struct SerialDrainTests {
    @Test("items posted while the drain is busy are handed over later, in order; add waits past the limit")
    func orderAndBackpressure() async throws {
        let probe = DrainProbe()
        let drain = SerialDrain<Int>(limit: 10) { await probe.process($0) }
        drain.post(1)
        try await waitUntil("the drain holds the first item") { probe.gateSet }
        for i in 2...10 { drain.post(i) }            // 10 queued: at the limit, nobody waits
        let waiter = Task { await drain.add(11) }     // 11 > 10: this caller waits
        try await Task.sleep(for: .milliseconds(100))
        #expect(probe.seen.isEmpty)
        probe.release()
        await waiter.value
        try await waitUntil("everything handed over") { probe.seen.count == 11 }
        #expect(probe.seen == Array(1...11))
        drain.post(12)
        try await waitUntil("a later item too") { probe.seen.last == 12 }
    }
}
