import Foundation
import Synchronization

/// Attempt tokens signed before their attempt is claimed. When new work arrives while some worker has free slots, it
/// is about to be claimed: its RS256 signature (0.7 ms of CPU) then runs during the nudge and the claim's round trip
/// instead of after the claim's commit, on the path from webhook to step. Never when workers are all busy (under a
/// backlog a token signed at arrival would only age), at most `maxInFlight` at once, and a token older than
/// `maxAgeSeconds` at its claim is not used (its lifetime counts from its signing): the claim signs a fresh one.
final class TokensAhead: Sendable {
    struct Signed: Sendable {
        var token: String
        /// Seconds since 1970 (the token's `iat` and `exp`).
        var issuedAt: Double
        var expiresAt: Double = 0
    }

    let maxInFlight: Int
    let maxKept: Int
    let maxAgeSeconds: Double

    private struct State {
        /// By attempt: when its signing started (seconds since 1970), and the signing.
        var tokens: [String: (started: Double, signing: Task<Signed?, Never>)] = [:]
        var inFlight = 0
        var used = 0
        var unused = 0
    }

    private let state = Mutex(State())

    init(maxInFlight: Int = 2, maxKept: Int = 64, maxAgeSeconds: Double = 5) {
        self.maxInFlight = maxInFlight
        self.maxKept = maxKept
        self.maxAgeSeconds = maxAgeSeconds
    }

    /// Starts signing attempt `id`'s token with `sign`, unless `maxInFlight` are being signed or `maxKept` wait
    /// for their claims. False when it did not start.
    /// Tokens never claimed here (the attempt was claimed through another replica, or not yet) are dropped once too
    /// old to be used.
    @discardableResult
    func start(_ id: String, now: Double = Date().timeIntervalSince1970, sign: @escaping @Sendable () -> Signed?) -> Bool {
        state.withLock { s in
            if s.tokens.count >= maxKept {
                let stale = s.tokens.filter { now - $0.value.started > maxAgeSeconds }.map(\.key)
                for k in stale { s.tokens[k] = nil }
                s.unused += stale.count
            }
            guard s.inFlight < maxInFlight, s.tokens.count < maxKept, s.tokens[id] == nil else { return false }
            s.inFlight += 1
            s.tokens[id] = (now, Task.detached { [self] in
                let signed = sign()
                state.withLock { $0.inFlight -= 1 }
                return signed
            })
            return true
        }
    }

    /// The token signed ahead for attempt `id` (waiting for its signing to finish), if one was and it is still fresh
    /// at `now`; it is handed out once.
    func take(_ id: String, now: @Sendable () -> Double = { Date().timeIntervalSince1970 }) async -> Signed? {
        guard let task = state.withLock({ $0.tokens.removeValue(forKey: id)?.signing }) else { return nil }
        guard let signed = await task.value, now() - signed.issuedAt <= maxAgeSeconds else {
            state.withLock { $0.unused += 1 }
            return nil
        }
        state.withLock { $0.used += 1 }
        return signed
    }

    /// Forgets the token of an attempt that will not be claimed (cancelled).
    func forget(_ id: String) {
        state.withLock { s in
            if s.tokens.removeValue(forKey: id) != nil { s.unused += 1 }
        }
    }

    /// Tokens used at their claim, and signed ahead but not used (too old, or forgotten).
    var counts: (used: Int, unused: Int) { state.withLock { ($0.used, $0.unused) } }
}
