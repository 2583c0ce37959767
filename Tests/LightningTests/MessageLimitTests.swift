import Channels
import Foundation
import Testing
@testable import Lightning

/// What a worker may send must fit in a message Lightning accepts.
@Suite("Plans within the message limit")
struct MessageLimitTests {
    @Test("payload_limit_mb and log_payload_limit_mb over what a message can carry are lowered in the plan workers get")
    func planClamped() async throws {
        let h = try Harness(configure: { $0.channel.maxMessageBytes = 11_000_000 })
        defer { Task { await h.stop() } }
        try await h.t.workflow(exampleYAML.replacingOccurrences(of: "  concurrency: 2", with: """
              concurrency: 2
              payload_limit_mb: 50
              log_payload_limit_mb: 30
            """))
        let created = try await h.lightning.startWork(workflow: "greet", input: Array("{}".utf8))
        let plan = try await h.lightning.plan(created.attemptID)
        #expect(plan.options.payloadLimitMB == 5 && plan.options.logPayloadLimitMB == 5, "\(plan.options)")
        // (11 - 1) / 2 MB: the default 10 MB is lowered too; a smaller one is left alone.
        try await h.t.workflow(exampleYAML)
        let small = try await h.lightning.startWork(workflow: "greet", input: Array("{}".utf8))
        let defaults = try await h.lightning.plan(small.attemptID)
        #expect(defaults.options.payloadLimitMB == 5 && defaults.options.logPayloadLimitMB == 1, "\(defaults.options)")
    }

    @Test("with the default 32 MB messages the default limits stand")
    func defaultsStand() async throws {
        let h = try Harness()
        defer { Task { await h.stop() } }
        try await h.t.workflow()
        let created = try await h.lightning.startWork(workflow: "greet", input: Array("{}".utf8))
        let plan = try await h.lightning.plan(created.attemptID)
        #expect(plan.options.payloadLimitMB == 10 && plan.options.logPayloadLimitMB == 1, "\(plan.options)")
    }
}
