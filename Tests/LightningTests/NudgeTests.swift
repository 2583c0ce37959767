import Testing
@testable import Lightning

@Suite("work-available pushes: at once for lone work, coalesced for bursts")
struct NudgeTests {
    @Test("a nudge after a quiet interval goes at once; within one, a single push at its end; after that, at once again")
    func spacing() {
        let state = LightningState()
        let t0 = ContinuousClock.now
        let interval = Duration.milliseconds(5)
        #expect(state.nudge(now: t0, interval: interval) == .now)
        #expect(state.nudge(now: t0 + .milliseconds(1), interval: interval) == .at(t0 + interval), "a burst waits for the interval")
        #expect(state.nudge(now: t0 + .milliseconds(2), interval: interval) == .alreadyScheduled, "and costs one push")
        state.scheduledNudgeFired(at: t0 + interval)
        #expect(state.nudge(now: t0 + .milliseconds(7), interval: interval) == .at(t0 + interval * 2))
        state.scheduledNudgeFired(at: t0 + interval * 2)
        // Work arriving alone, long after: no delay at all (a fixed window used to hold it up to 50 ms).
        #expect(state.nudge(now: t0 + .milliseconds(60), interval: interval) == .now)
        #expect(state.nudge(now: t0 + .milliseconds(120), interval: interval) == .now)
    }
}
