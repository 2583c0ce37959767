import Foundation
import Lightning
import TestSupport

extension LightningStore {
    /// Polls until the attempt is in a final state.
    func waitUntilFinal(_ id: String, timeout: Duration = .seconds(60)) async throws -> AttemptRecord {
        let deadline = ContinuousClock.now + timeout
        while ContinuousClock.now < deadline {
            let a = try await attempt(id)
            if a.state.isFinal { return a }
            try await Task.sleep(for: .milliseconds(50))
        }
        throw TestSupport.Failure("attempt \(id) did not finish")
    }

    /// Polls until the attempt has logged its first line (its step is running).
    func waitForFirstLog(_ id: String, timeout: Duration = .seconds(20)) async throws {
        let deadline = ContinuousClock.now + timeout
        while try await logs(attemptID: id, since: 0, limit: 1).isEmpty {
            if ContinuousClock.now > deadline { throw TestSupport.Failure("attempt \(id) logged nothing") }
            try await Task.sleep(for: .milliseconds(20))
        }
    }
}
