import Foundation
import LightningProtocol
import Testing
@testable import Lightning

/// The attempt lifecycle's rules without a database: every state with every event.
@Suite("Attempt lifecycle")
struct AttemptLifecycleTests {
    typealias L = AttemptLifecycle
    let life = AttemptLifecycle(attemptID: "a1")
    let live: [AttemptState] = [.available, .claimed, .started]
    let final = AttemptState.allCases.filter(\.isFinal)

    /// The reason a final state is reached with.
    func reason(_ state: AttemptState) -> ExitReason { ExitReason.allCases.first { $0.attemptState == state }! }

    func facts(_ state: AttemptState, worker: String? = "w1") -> L.Facts {
        L.Facts(state: state, workerName: state == .available ? nil : worker, reason: state.isFinal ? reason(state) : nil)
    }

    func workerEvents() -> [L.Event] {
        [.start(worker: "w1"), .stepStart(stepID: "s1", stepOwner: nil), .stepComplete(stepID: "s1", stepFinished: false),
         .complete(reason: .success, errorType: nil), .refuseClaim(worker: "w1"), .cancel]
    }

    @Test("an unknown attempt: every event is refused as not found")
    func unknown() {
        for event in workerEvents() + [.lose, .unclaim(worker: "w1")] {
            #expect(life.decide(nil, event) == .refuse(.notFound("no attempt a1")), "\(event)")
        }
    }

    @Test("a final attempt refuses every event, except the same completion again (a resend); background rules leave it alone")
    func finalStates() {
        for state in final {
            for event in workerEvents() where event != .complete(reason: reason(state), errorType: nil) {
                #expect(life.decide(facts(state), event) == .refuse(.conflict("attempt a1 is already \(state.rawValue); its events are refused")),
                        "\(state) \(event)")
            }
            #expect(life.decide(facts(state), .complete(reason: reason(state), errorType: nil)) == .resend, "\(state)")
            #expect(life.decide(facts(state), .lose) == .unchanged(state))
            #expect(life.decide(facts(state), .unclaim(worker: "w1")) == .unchanged(state))
        }
    }

    @Test("run:start: claimed starts, started is a resend, available is refused, another worker's claim is refused")
    func start() {
        #expect(life.decide(facts(.claimed), .start(worker: "w1")) == .apply(L.Transition(to: .started)))
        #expect(life.decide(facts(.started), .start(worker: "w1")) == .resend)
        #expect(life.decide(facts(.available), .start(worker: "w1")) == .refuse(.conflict("attempt a1 is available, not claimed")))
        for state in [AttemptState.claimed, .started] {
            #expect(life.decide(facts(state), .start(worker: "w2")) == .refuse(.conflict("attempt a1 is claimed by another worker")))
        }
    }

    @Test("step events need a started attempt; a step seen before is a resend, another attempt's step is refused")
    func steps() {
        for state in [AttemptState.available, .claimed] {
            #expect(life.decide(facts(state), .stepStart(stepID: "s1", stepOwner: nil)) == .refuse(.conflict("attempt a1 has not started")))
        }
        #expect(life.decide(facts(.started), .stepStart(stepID: "s1", stepOwner: nil)) == .apply(L.Transition(to: nil)))
        #expect(life.decide(facts(.started), .stepStart(stepID: "s1", stepOwner: "a1")) == .resend)
        #expect(life.decide(facts(.started), .stepStart(stepID: "s1", stepOwner: "a2"))
                == .refuse(.conflict("step s1 belongs to another attempt")))
        #expect(life.decide(facts(.started), .stepComplete(stepID: "s1", stepFinished: false)) == .apply(L.Transition(to: nil)))
        #expect(life.decide(facts(.started), .stepComplete(stepID: "s1", stepFinished: true)) == .resend)
        #expect(life.decide(facts(.started), .stepComplete(stepID: "s9", stepFinished: nil)) == .refuse(.notFound("no step s9 in attempt a1")))
    }

    @Test("run:complete ends a live attempt in its reason's state with the log-limit notice; exceptions may retry, a drain's kill requeues")
    func complete() {
        for state in live {
            for reason in ExitReason.allCases {
                let followUp: L.FollowUp? = reason == .exception ? .retryIfAllowed(.exception) : nil
                #expect(life.decide(facts(state), .complete(reason: reason, errorType: "X"))
                        == .apply(L.Transition(to: reason.attemptState, followUp: followUp, addsLimitNotice: true)), "\(state) \(reason)")
            }
            #expect(life.decide(facts(state), .complete(reason: .kill, errorType: Wire.requeuedErrorType))
                    == .apply(L.Transition(to: .killed, followUp: .requeue, addsLimitNotice: true)))
            // A job that failed is the job's outcome, not a platform fault: never retried.
            #expect(life.decide(facts(state), .complete(reason: .fail, errorType: nil))
                    == .apply(L.Transition(to: .failed, followUp: nil, addsLimitNotice: true)))
        }
        // A different completion of a final attempt is refused, not taken for a resend.
        #expect(life.decide(facts(.success), .complete(reason: .fail, errorType: nil))
                == .refuse(.conflict("attempt a1 is already success; its events are refused")))
    }

    @Test("run:refused ends only a claim the refusing worker holds, as an exception that may retry")
    func refuseClaim() {
        #expect(life.decide(facts(.claimed), .refuseClaim(worker: "w1"))
                == .apply(L.Transition(to: .exception, errorType: ErrorType.tokenRefused, followUp: .retryIfAllowed(.exception))))
        #expect(life.decide(facts(.claimed), .refuseClaim(worker: "w2")) == .refuse(.conflict("attempt a1 is claimed by another worker")))
        #expect(life.decide(facts(.started), .refuseClaim(worker: "w1")) == .refuse(.conflict("attempt a1 is started, not claimed")))
        #expect(life.decide(facts(.available), .refuseClaim(worker: "w1")) == .refuse(.conflict("attempt a1 is available, not claimed")))
    }

    @Test("a cancel ends only an attempt no worker holds; a held one is reported as it is (its worker is told to stop)")
    func cancel() {
        #expect(life.decide(facts(.available), .cancel) == .apply(L.Transition(to: .cancelled)))
        #expect(life.decide(facts(.claimed), .cancel) == .unchanged(.claimed))
        #expect(life.decide(facts(.started), .cancel) == .unchanged(.started))
    }

    @Test("a lost worker's live attempts end lost (after claim or after start), may retry; a claim goes back only from its holder")
    func background() {
        #expect(life.decide(facts(.claimed), .lose) == .apply(L.Transition(to: .lost, errorType: ErrorType.lostAfterClaim,
                                                                          followUp: .retryIfAllowed(.lost), addsLimitNotice: true)))
        #expect(life.decide(facts(.started), .lose) == .apply(L.Transition(to: .lost, errorType: ErrorType.lostAfterStart,
                                                                          followUp: .retryIfAllowed(.lost), addsLimitNotice: true)))
        #expect(life.decide(facts(.available), .lose) == .unchanged(.available))
        #expect(life.decide(facts(.claimed), .unclaim(worker: "w1")) == .apply(L.Transition(to: .available, notifies: false)))
        #expect(life.decide(facts(.claimed), .unclaim(worker: "w2")) == .unchanged(.claimed))
        #expect(life.decide(facts(.started), .unclaim(worker: "w1")) == .unchanged(.started))
        #expect(life.decide(facts(.available), .unclaim(worker: "w1")) == .unchanged(.available))
    }

    @Test("retries: allowed while the automatic ones so far are fewer than the workflow's setting")
    func retries() {
        #expect(L.retryAllowed(automatic: 0, retries: 0) == false)
        #expect(L.retryAllowed(automatic: 0, retries: 2) == true)
        #expect(L.retryAllowed(automatic: 1, retries: 2) == true)
        #expect(L.retryAllowed(automatic: 2, retries: 2) == false)
    }

    @Test("no live state is left by an ending, and no event brings a final attempt back to life")
    func finalIsFinal() {
        let all = workerEvents() + [.lose, .unclaim(worker: "w1"), .complete(reason: .crash, errorType: nil)]
        for state in AttemptState.allCases {
            for event in all {
                guard case .apply(let t) = life.decide(facts(state), event) else { continue }
                #expect(!state.isFinal, "\(state) changed by \(event)")
                if case .complete = event { #expect(t.to?.isFinal == true) }
            }
        }
    }
}
