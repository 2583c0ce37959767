import Foundation
import LightningProtocol
import Testing
@testable import RuntimeWorker

/// The plan walk alone: no processes, files or sockets. Each "step" is given the outcome the test names.
@Suite("The plan walker")
struct PlanWalkerTests {
    typealias Outcome = AttemptExecutor.Outcome

    /// Walks `plan`, answering each job with `outcomes[jobID]` (success with the input state otherwise); returns the
    /// jobs in the order run and the walker at the end.
    func walk(_ plan: Plan, _ outcomes: [String: (ExitReason, [String: Any])] = [:], stopBefore: String? = nil)
        -> ([String], PlanWalker)
    {
        var w = PlanWalker(plan: plan, initial: ["x": 1])
        var ran: [String] = []
        while let step = w.next() {
            if step.job.id == stopBefore {
                w.stopped(Outcome(reason: .cancel, errorType: "Cancelled", state: step.input))
                break
            }
            ran.append(step.job.id)
            #expect(step.number == ran.count)
            let (reason, state) = outcomes[step.job.id] ?? (.success, step.input)
            w.finished(step, Outcome(reason: reason, state: state, stepID: "s-" + step.job.id, outputID: "out-" + step.job.id),
                       outputID: "out-" + step.job.id)
        }
        return (ran, w)
    }

    @Test("followers run after the steps already queued, in edge order; disabled and dangling edges lead nowhere")
    func order() {
        var plan = makePlan([("a", ""), ("b", ""), ("c", ""), ("d", ""), ("e", "")],
                            edges: [("a", "b", "always"), ("a", "c", "always"), ("b", "d", "always"), ("a", "e", "always"),
                                    ("c", "nowhere", "always")])
        plan.edges[3].enabled = false
        let (ran, w) = walk(plan)
        #expect(ran == ["a", "b", "c", "d"])
        // Leaves: c (its only edge leads to no job) and d.
        #expect(w.leaves.map(\.stepID) == ["s-c", "s-d"])
    }

    @Test("a step's input is its upstream's output state, and its input dataclip the upstream's output")
    func inputs() {
        let plan = makePlan([("a", ""), ("b", "")], edges: [("a", "b", "always")])
        var w = PlanWalker(plan: plan, initial: ["x": 1])
        let first = w.next()!
        #expect(first.inputDataclipID == "d1" && first.input["x"] as? Int == 1)
        w.finished(first, Outcome(reason: .success, state: ["y": 2], stepID: "s1"), outputID: "o1")
        let second = w.next()!
        #expect(second.job.id == "b" && second.inputDataclipID == "o1" && second.input["y"] as? Int == 2)
        w.finished(second, Outcome(reason: .success, state: ["z": 3], stepID: "s2", outputID: "o2"), outputID: "o2")
        #expect(w.next() == nil)
        let r = w.result
        #expect(r.outcome.reason == .success && r.finalState["z"] as? Int == 3 && r.finalDataclipID == "o2")
    }

    @Test("a trigger as the starting node starts at the jobs its enabled edges lead to")
    func trigger() {
        var plan = Plan(id: "p", dataclipID: "d", startingNodeID: "t", triggers: [Plan.Trigger(id: "t")],
                        jobs: [Plan.Job(id: "a", name: "a", body: "", adaptor: "sh"), Plan.Job(id: "b", name: "b", body: "", adaptor: "sh")],
                        edges: [Plan.Edge(id: "e1", sourceTriggerID: "t", targetJobID: "b"),
                                Plan.Edge(id: "e2", sourceTriggerID: "t", targetJobID: "a")],
                        options: Plan.Options())
        #expect(walk(plan).0 == ["b", "a"])
        plan.edges[0].enabled = false
        #expect(walk(plan).0 == ["a"])
    }

    @Test("on_job_success / on_job_failure follow the upstream's reason; the most severe leaf is the attempt's")
    func conditions() {
        let plan = makePlan([("a", ""), ("ok", ""), ("recover", "")],
                            edges: [("a", "ok", "on_job_success"), ("a", "recover", "on_job_failure")])
        let (failed, w1) = walk(plan, ["a": (.fail, [:])])
        #expect(failed == ["a", "recover"] && w1.result.outcome.reason == .success)
        let (both, w2) = walk(plan, ["a": (.fail, [:]), "recover": (.fail, ["r": 1])])
        #expect(both == ["a", "recover"] && w2.result.outcome.reason == .fail && w2.result.finalState["r"] as? Int == 1)
        #expect(walk(plan).0 == ["a", "ok"])
    }

    @Test("several leaves: the final state is keyed by their step ids, with no final dataclip")
    func severalLeaves() {
        let plan = makePlan([("a", ""), ("b", ""), ("c", "")], edges: [("a", "b", "always"), ("a", "c", "always")])
        let (_, w) = walk(plan, ["b": (.success, ["b": 1]), "c": (.fail, ["c": 1])])
        let r = w.result
        #expect(r.outcome.reason == .fail && r.finalDataclipID == nil)
        #expect(Set(r.finalState.keys) == ["s-b", "s-c"])
    }

    @Test("crash, kill, exception and cancel end the walk at once", arguments: [ExitReason.crash, .kill, .exception, .cancel])
    func stops(reason: ExitReason) {
        let plan = makePlan([("a", ""), ("b", ""), ("c", "")], edges: [("a", "b", "always"), ("a", "c", "always")])
        let (ran, w) = walk(plan, ["b": (reason, [:])])
        #expect(ran == ["a", "b"])
        #expect(w.result.outcome.reason == reason && w.leaves.count == 1)
    }

    @Test("stopped from outside: the walk ends before the next step, with the stop as its outcome")
    func stoppedOutside() {
        let plan = makePlan([("a", ""), ("b", "")], edges: [("a", "b", "always")])
        let (ran, w) = walk(plan, stopBefore: "b")
        #expect(ran == ["a"] && w.result.outcome.reason == .cancel)
    }

    @Test("an unreadable condition crashes the attempt with EdgeConditionError, keeping the upstream's state")
    func badCondition() {
        let plan = makePlan([("a", ""), ("b", ""), ("c", "")], edges: [("a", "b", "always"), ("a", "c", "state.n.deeper == 1")])
        let (ran, w) = walk(plan, ["a": (.success, ["n": NSNull()])])
        #expect(ran == ["a"], "nothing after the crash, not even the edge that was followed before it")
        let r = w.result
        #expect(r.outcome.reason == .crash && r.outcome.errorType == ErrorType.edgeCondition)
        #expect(r.outcome.errorMessage?.hasPrefix("edge e1:") == true)
        #expect(r.finalState["n"] != nil)
    }

    @Test("nothing to run: success with the input as the final state")
    func empty() {
        let plan = Plan(id: "p", dataclipID: "d", startingNodeID: "t", triggers: [], jobs: [], edges: [], options: Plan.Options())
        let (ran, w) = walk(plan)
        #expect(ran.isEmpty && w.result.outcome.reason == .success && w.result.finalState["x"] as? Int == 1)
    }
}
