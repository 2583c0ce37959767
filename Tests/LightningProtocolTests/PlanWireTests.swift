import Channels
import Foundation
import LightningProtocol
import Testing

/// `Plan.wire` and `Plan(wire:)` replace `JSONEncoder`/`JSONDecoder` on the claim path: they must give exactly
/// what the `Codable` forms give, and never read a plan the `Decodable` form would refuse.
@Suite("Plan: the direct JSON form is the Codable form")
struct PlanWireTests {
    static let plans: [Plan] = [
        Plan(id: "a1", dataclipID: "d1", startingNodeID: "j1", triggers: [Plan.Trigger(id: "t1")],
             jobs: [Plan.Job(id: "j1", name: "first", body: "echo \"hi\" / \\ é", adaptor: "sh"),
                    Plan.Job(id: "j2", name: "second", body: "", adaptor: "python3", credentialID: "c1")],
             edges: [Plan.Edge(id: "e1", sourceTriggerID: "t1", targetJobID: "j1"),
                     Plan.Edge(id: "e2", sourceJobID: "j1", targetJobID: "j2", condition: "on_job_failure", enabled: false)],
             options: Plan.Options(runTimeoutMS: 1234, runMemoryLimitMB: 64, outputDataclips: false, payloadLimitMB: 3,
                                   logPayloadLimitMB: 2, logLimitMB: 7)),
        Plan(id: "a2", dataclipID: "d2", startingNodeID: "j", triggers: [], jobs: [Plan.Job(id: "j", name: "j", body: "true", adaptor: "sh")],
             edges: [], options: Plan.Options()),
    ]

    @Test("wire equals the encoded form", arguments: plans)
    func encodes(plan: Plan) throws {
        let viaEncoder = try JSON.parse(Array(try JSONEncoder().encode(plan)))
        #expect(plan.wire == viaEncoder)
        #expect(try Plan(wire: plan.wire) == plan)
        #expect(try plan.wire.decode(Plan.self) == plan)
    }

    @Test("read as the Decodable form reads it", arguments: [
        // Absent optional parts take their defaults; a job without name or body.
        #"{"id":"a","dataclip_id":"d","starting_node_id":"j","jobs":[{"id":"j","adaptor":"sh"}]}"#,
        #"{"id":"a","dataclip_id":"d","starting_node_id":"j","jobs":[{"id":"j","adaptor":"sh","name":null}],"edges":null,"options":{}}"#,
        #"{"id":"a","dataclip_id":"d","starting_node_id":"j","jobs":[],"edges":[{"id":"e","target_job_id":"j"}],"extra":[1,2]}"#,
        #"{"id":"a","dataclip_id":"d","starting_node_id":"j","jobs":[],"options":{"run_timeout_ms":5,"output_dataclips":true,"other":"x"}}"#,
        // Types the direct reading does not take: left to the Decodable reading, same answer.
        #"{"id":"a","dataclip_id":"d","starting_node_id":"j","jobs":[],"options":{"run_timeout_ms":5.0}}"#,
    ])
    func decodes(text: String) throws {
        let json = try JSON.parse(Array(text.utf8))
        let expected = try JSONDecoder().decode(Plan.self, from: Data(text.utf8))
        #expect(try Plan(wire: json) == expected)
    }

    @Test("refused where the Decodable form refuses, with its error", arguments: [
        #"{"id":"a","dataclip_id":"d","jobs":[]}"#,
        #"{"id":1,"dataclip_id":"d","starting_node_id":"j","jobs":[]}"#,
        #"{"id":"a","dataclip_id":"d","starting_node_id":"j","jobs":[{"id":"j"}]}"#,
        #"{"id":"a","dataclip_id":"d","starting_node_id":"j","jobs":[{"id":"j","adaptor":"sh","body":7}]}"#,
        #"{"id":"a","dataclip_id":"d","starting_node_id":"j","jobs":[],"edges":[{"id":"e","target_job_id":"j","enabled":"yes"}]}"#,
        #"{"id":"a","dataclip_id":"d","starting_node_id":"j","jobs":[],"options":{"output_dataclips":1}}"#,
        #"[1]"#,
    ])
    func refuses(text: String) throws {
        let json = try JSON.parse(Array(text.utf8))
        var expected: String?
        do { _ = try JSONDecoder().decode(Plan.self, from: Data(text.utf8)) } catch let e as DecodingError { expected = e.fieldDescription }
        #expect(expected != nil)
        var got: String?
        do { _ = try Plan(wire: json) } catch let e as DecodingError { got = e.fieldDescription }
        #expect(got == expected)
    }
}
