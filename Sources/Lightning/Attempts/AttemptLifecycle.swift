import LightningProtocol

/// The rules of an attempt's life, apart from where it is kept (PROTOCOL.md 5.4): which event is allowed in which
/// state and from whom, which is a resend (acknowledged, nothing changes), and what an ending leads to (the final
/// state, a retry or a requeue, the log-limit notice, viewers told).
///
/// A value with no I/O: the store reads an attempt's facts inside its write transaction (the row locked), asks
/// `decide`, and carries the decision out in the same transaction; `AttemptLifecycleTests` covers every state with
/// every event without a database.
struct AttemptLifecycle {
    /// What the store knows of an attempt when an event arrives.
    struct Facts: Equatable, Sendable {
        var state: AttemptState
        /// The worker holding the claim (nil while available).
        var workerName: String?
        /// How it ended (nil while live).
        var reason: ExitReason?

        init(state: AttemptState, workerName: String? = nil, reason: ExitReason? = nil) {
            self.state = state
            self.workerName = workerName
            self.reason = reason
        }
    }

    enum Event: Equatable, Sendable {
        /// `run:start` from the worker named.
        case start(worker: String)
        /// `step:start`; `stepOwner` is the attempt that already has a step with this id, if one has.
        case stepStart(stepID: String, stepOwner: String?)
        /// `step:complete`; `stepFinished` is nil when the attempt has no such step.
        case stepComplete(stepID: String, stepFinished: Bool?)
        /// `run:complete`.
        case complete(reason: ExitReason, errorType: String?)
        /// `run:refused`: the worker holding the claim would not run it (its token did not verify).
        case refuseClaim(worker: String)
        /// An operator's cancel.
        case cancel
        /// Its worker went away and did not come back in time (or its run time ran out).
        case lose
        /// The claim goes back to the queue (its reply never reached the worker, or the worker did not hold it).
        case unclaim(worker: String)
    }

    /// What follows an ending, in the same transaction.
    enum FollowUp: Equatable, Sendable {
        /// The next attempt of the work order, when the workflow's `retries` allows one more.
        case retryIfAllowed(ExitReason)
        /// The next attempt of the work order from the same start, not counted as a retry (its worker's drain
        /// stopped it to put it back).
        case requeue
    }

    struct Transition: Equatable, Sendable {
        /// The attempt's new state (nil: the attempt's row keeps its state; a step changes).
        var to: AttemptState?
        /// The `error_type` the ending is recorded with, when the rules set it (a lost attempt, a refused claim).
        var errorType: String? = nil
        var followUp: FollowUp? = nil
        /// An ending: the notice of lines dropped past the log limit is added now.
        var addsLimitNotice = false
        /// Viewers and other replicas are told the attempt changed.
        var notifies = true
    }

    enum Decision: Equatable, Sendable {
        /// Carry out the transition.
        case apply(Transition)
        /// The event was applied before (its reply was lost): acknowledge it, change nothing.
        case resend
        /// Nothing to do, and nothing wrong: the attempt is reported as it is (a cancel of a claimed attempt, which
        /// its worker is told to stop instead; an unclaim of an attempt its worker already started).
        case unchanged(AttemptState)
        case refuse(StoreError)
    }

    let attemptID: String

    /// The decision for `event` on an attempt with these facts (nil: no such attempt).
    func decide(_ facts: Facts?, _ event: Event) -> Decision {
        guard let facts else { return .refuse(.notFound("no attempt \(attemptID)")) }
        // A completion sent again after its reply was lost: the same reason as the one stored.
        if case .complete(let reason, _) = event, facts.state.isFinal, facts.reason == reason { return .resend }
        // Background rules never refuse: they act only on what they find live and held.
        switch event {
        case .lose:
            guard facts.state == .claimed || facts.state == .started else { return .unchanged(facts.state) }
            return .apply(Transition(to: .lost, errorType: facts.state == .claimed ? ErrorType.lostAfterClaim : ErrorType.lostAfterStart,
                                     followUp: .retryIfAllowed(.lost), addsLimitNotice: true))
        case .unclaim(let worker):
            guard facts.state == .claimed, facts.workerName == worker else { return .unchanged(facts.state) }
            return .apply(Transition(to: .available, notifies: false))
        default:
            break
        }
        if facts.state.isFinal {
            return .refuse(.conflict("attempt \(attemptID) is already \(facts.state.rawValue); its events are refused"))
        }
        switch event {
        case .start(let worker):
            if let refusal = notHeld(facts, by: worker) { return refusal }
            if facts.state == .started { return .resend }
            guard facts.state == .claimed else { return .refuse(.conflict("attempt \(attemptID) is \(facts.state.rawValue), not claimed")) }
            return .apply(Transition(to: .started))
        case .stepStart(let stepID, let owner):
            guard facts.state == .started else { return .refuse(.conflict("attempt \(attemptID) has not started")) }
            if let owner {
                return owner == attemptID ? .resend : .refuse(.conflict("step \(stepID) belongs to another attempt"))
            }
            return .apply(Transition(to: nil))
        case .stepComplete(let stepID, let finished):
            guard let finished else { return .refuse(.notFound("no step \(stepID) in attempt \(attemptID)")) }
            return finished ? .resend : .apply(Transition(to: nil))
        case .complete(let reason, let errorType):
            let followUp: FollowUp? =
                if reason == .kill && errorType == Wire.requeuedErrorType { .requeue }
                else if reason == .exception { .retryIfAllowed(.exception) }
                else { nil }
            return .apply(Transition(to: reason.attemptState, followUp: followUp, addsLimitNotice: true))
        case .refuseClaim(let worker):
            if let refusal = notHeld(facts, by: worker) { return refusal }
            guard facts.state == .claimed else { return .refuse(.conflict("attempt \(attemptID) is \(facts.state.rawValue), not claimed")) }
            return .apply(Transition(to: .exception, errorType: ErrorType.tokenRefused, followUp: .retryIfAllowed(.exception)))
        case .cancel:
            // Only an attempt no worker holds ends here; a held one is stopped by its worker, which then completes it.
            guard facts.state == .available else { return .unchanged(facts.state) }
            return .apply(Transition(to: .cancelled))
        case .lose, .unclaim:
            preconditionFailure("decided above")
        }
    }

    /// Refused when another worker holds the claim.
    private func notHeld(_ facts: Facts, by worker: String) -> Decision? {
        if let owner = facts.workerName, owner != worker { return .refuse(.conflict("attempt \(attemptID) is claimed by another worker")) }
        return nil
    }

    /// Whether one more automatic retry is allowed: `automatic` retries so far in this chain (back along `retry_of`
    /// to the first attempt or an operator's rerun, which starts a fresh count), `retries` the workflow's setting.
    static func retryAllowed(automatic: Int, retries: Int) -> Bool { automatic < retries }
}
