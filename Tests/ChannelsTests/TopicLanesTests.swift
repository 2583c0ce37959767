import Foundation
import Testing
@testable import Channels

/// Per-topic order and the cap on a connection's messages in flight, without sockets.
@Suite("Topic lanes")
struct TopicLanesTests {
    @Test("a topic's next message waits for the one before it; another topic's does not; drained waits for all")
    func order() async {
        let lanes = TopicLanes()
        let (first, firstDone) = lanes.enter("run:a")
        let (second, secondDone) = lanes.enter("run:a")
        let (other, otherDone) = lanes.enter("run:b")
        #expect(first == nil && other == nil)
        #expect(second === firstDone, "run:a's second message waits for its first")
        #expect(lanes.count == 3)
        let drained = Counter()
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                await lanes.drained()
                drained.increment()
            }
            lanes.leave("run:b", otherDone)
            lanes.leave("run:a", firstDone)
            await second?.wait()  // opened by the first's leave
            #expect(drained.value == 0, "one message is still in flight")
            lanes.leave("run:a", secondDone)
        }
        #expect(drained.value == 1 && lanes.count == 0)
        // The topic's tail is gone with its last message: the next one waits for nothing.
        #expect(lanes.enter("run:a").after == nil)
    }

    @Test("room(below:) returns at once under the cap and waits at it until a message ends")
    func cap() async {
        let lanes = TopicLanes()
        let held = (0..<3).map { i in lanes.enter("t\(i)").done }
        await lanes.room(below: 4)  // 3 in flight: room at once
        let got = Counter()
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                await lanes.room(below: 3)
                got.increment()
            }
            // Nothing else can open room: the waiter is still waiting until a message leaves.
            try? await Task.sleep(for: .milliseconds(20))
            #expect(got.value == 0)
            lanes.leave("t0", held[0])
        }
        #expect(got.value == 1)
    }
}
