import Channels
import Foundation
import LightningProtocol
import Testing
import TestSupport
@testable import RuntimeWorker

/// The outbox when one event is too large for Lightning's messages.
@Suite("The attempt outbox")
struct AttemptOutboxTests {
    /// Sends everything but events named `big`, which the client refuses as over the peer's limit.
    final class Refusing: AttemptEventSink, @unchecked Sendable {
        let recorder = Recorder()
        func send(_ event: String, _ payload: JSON) async throws -> ChannelClientReply {
            if event == "big" { throw ChannelError.messageTooLarge(bytes: 2_000, limit: 1_000) }
            return try await recorder.send(event, payload)
        }
    }

    @Test("a posted event over the limit is dropped alone: the next post says so once, and the events after it still go")
    func postedTooLarge() async throws {
        let sink = Refusing()
        let out = AttemptOutbox(sink)
        try out.post("first", [:])
        try out.post("big", [:])
        try out.post("queued-after", [:])
        // A send waits for everything before it: by then the big one failed.
        _ = try await out.send("waited", [:])
        #expect(throws: OutboxError.eventTooLarge(event: "big", bytes: 2_000, limit: 1_000)) { try out.post("next", [:]) }
        // Said once: the attempt can still end.
        let reply = try await out.send("run:complete", [:])
        #expect(reply.isOK)
        #expect(sink.recorder.names == ["first", "queued-after", "waited", "run:complete"])
    }

    @Test("a sent event over the limit throws to its sender only")
    func sentTooLarge() async throws {
        let sink = Refusing()
        let out = AttemptOutbox(sink)
        await #expect(throws: OutboxError.eventTooLarge(event: "big", bytes: 2_000, limit: 1_000)) { _ = try await out.send("big", [:]) }
        try out.post("after", [:])
        _ = try await out.send("run:complete", [:])
        #expect(sink.recorder.names == ["after", "run:complete"])
    }

    @Test("a run:complete queued before an earlier event was dropped is not sent: it fails with that event's error")
    func completeAfterDrop() async throws {
        let sink = Refusing()
        let out = AttemptOutbox(sink)
        try out.post("run:start", [:])
        try out.post("big", [:])
        await #expect(throws: OutboxError.eventTooLarge(event: "big", bytes: 2_000, limit: 1_000)) {
            _ = try await out.send("run:complete", ["reason": "success"])
        }
        // The attempt then ends saying why.
        _ = try await out.send("run:complete", ["reason": "exception"])
        #expect(sink.recorder.names == ["run:start", "run:complete"])
        #expect(sink.recorder.payloads("run:complete").first?["reason"] == "exception")
    }

    @Test("the executor: a step:complete over the limit ends the run with that error, and no run:complete claims success")
    func executorStops() async throws {
        final class RefusingStepComplete: AttemptEventSink, @unchecked Sendable {
            let recorder = Recorder()
            func send(_ event: String, _ payload: JSON) async throws -> ChannelClientReply {
                if event == "step:complete" { throw ChannelError.messageTooLarge(bytes: 12_000_000, limit: 11_000_000) }
                return try await recorder.send(event, payload)
            }
        }
        let dir = try TestSupport.temporaryDirectory("outbox")
        defer { try? FileManager.default.removeItem(at: dir) }
        let sink = RefusingStepComplete()
        let executor = AttemptExecutor(attemptID: "a1", plan: makePlan([("a", "print hi")], edges: []), input: Array("{}".utf8),
                                       credentials: [:], runner: FakeRunner(), events: sink, workRoot: dir.path)
        await #expect(throws: OutboxError.eventTooLarge(event: "step:complete", bytes: 12_000_000, limit: 11_000_000)) {
            try await executor.run()
        }
        #expect(!sink.recorder.names.contains("run:complete"), "\(sink.recorder.names)")
    }

    @Test("any other failure still fails every later event (Lightning refused the rejoin)")
    func otherFailureSticks() async throws {
        struct Gone: Error {}
        final class Failing: AttemptEventSink, @unchecked Sendable {
            func send(_ event: String, _ payload: JSON) async throws -> ChannelClientReply { throw Gone() }
        }
        let out = AttemptOutbox(Failing())
        await #expect(throws: Gone.self) { _ = try await out.send("a", [:]) }
        #expect(throws: Gone.self) { try out.post("b", [:]) }
        await #expect(throws: Gone.self) { _ = try await out.send("c", [:]) }
    }
}
