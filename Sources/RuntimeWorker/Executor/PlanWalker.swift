import LightningProtocol

/// Which step runs next, and how the attempt ends, from the plan's edges and each step's outcome — as ws-worker
/// walks a plan: steps one after another, a step's followers in edge order after the steps already queued,
/// disabled edges never followed, an edge's condition judged on its upstream's outcome and state, the first
/// crash, kill, exception or cancel ends the attempt, and an unreadable condition crashes it. A value with no
/// processes, files or sockets: the executor asks `next()`, runs that step, and reports with `finished`.
struct PlanWalker {
    typealias Outcome = AttemptExecutor.Outcome

    struct Step {
        let job: Plan.Job
        let input: [String: Any]
        let inputDataclipID: String?
        /// 1 for the attempt's first step.
        let number: Int
    }

    let plan: Plan
    let initial: [String: Any]
    private var queue: [(jobID: String, state: [String: Any], dataclipID: String?)] = []
    /// Outcomes of the steps the walk ended at: leaves of the plan, or the step that stopped it.
    private(set) var leaves: [Outcome] = []
    private(set) var stepsStarted = 0

    init(plan: Plan, initial: [String: Any]) {
        self.plan = plan
        self.initial = initial
        if plan.job(plan.startingNodeID) != nil {
            queue.append((plan.startingNodeID, initial, plan.dataclipID))
        } else {
            // A trigger: its enabled edges lead to the first jobs.
            for edge in plan.edges(from: plan.startingNodeID) { queue.append((edge.targetJobID, initial, plan.dataclipID)) }
        }
    }

    /// The next step to run, nil when the walk is over. An edge to a job the plan does not have leads nowhere.
    mutating func next() -> Step? {
        while !queue.isEmpty {
            let (jobID, state, dataclipID) = queue.removeFirst()
            guard let job = plan.job(jobID) else { continue }  // a trigger's edge to no job
            stepsStarted += 1
            return Step(job: job, input: state, inputDataclipID: dataclipID, number: stepsStarted)
        }
        return nil
    }

    /// The attempt was stopped from outside before `step` ran: it ends there, with `outcome`.
    mutating func stopped(_ outcome: Outcome) {
        leaves.append(outcome)
        queue = []
    }

    /// `step` ended with `outcome` (its output dataclip `outputID` when one was sent): queues its followers.
    mutating func finished(_ step: Step, _ outcome: Outcome, outputID: String?) {
        if [.crash, .kill, .exception, .cancel].contains(outcome.reason) {
            stopped(outcome)
            return
        }
        var followed = 0
        for edge in plan.edges(from: step.job.id) {
            do {
                let condition = try EdgeCondition.parse(edge.condition)
                guard try condition.holds(upstreamFailed: outcome.reason != .success, state: outcome.state) else { continue }
            } catch {
                stopped(Outcome(reason: .crash, errorType: ErrorType.edgeCondition, errorMessage: "edge \(edge.id): \(error)",
                                state: outcome.state))
                return
            }
            guard plan.job(edge.targetJobID) != nil else { continue }  // leads to no job: the step stays a leaf
            queue.append((edge.targetJobID, outcome.state, outputID))
            followed += 1
        }
        if followed == 0 { leaves.append(outcome) }
    }

    /// How the attempt ends: the most severe leaf's reason (success when nothing ran), and the final state: one
    /// leaf's state (and its output dataclip), or several leaves' states keyed by their step ids.
    var result: (outcome: Outcome, finalState: [String: Any], finalDataclipID: String?) {
        let worst = leaves.max { $0.reason.severity < $1.reason.severity } ?? Outcome(reason: .success, state: initial)
        if leaves.count > 1 {
            var byStep: [String: Any] = [:]
            for leaf in leaves { byStep[leaf.stepID ?? "step-\(byStep.count + 1)"] = leaf.state }
            return (worst, byStep, nil)
        }
        return (worst, leaves.first?.state ?? initial, leaves.first?.outputID)
    }
}
