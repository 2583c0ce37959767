import Channels
import Foundation
import Synchronization

/// Failed token checks, per client address: a bucket of `burst` failures that refills at `perSecond`. While an
/// address's bucket is empty every request from it that carries a credential is answered 429 with `Retry-After`
/// before its token is looked at: guessing costs the guesser time, and a flood of bad tokens costs Lightning
/// neither hashing nor log lines. Requests without credentials (webhooks, `/healthz`) are never limited; a good
/// token costs nothing from the bucket.
///
/// Behind a proxy every client has the proxy's address: `trustedProxies` names such proxies, and for them the
/// last address of `X-Forwarded-For` (the one the proxy itself added) is used instead.
final class AuthFailureLimiter: Sendable {
    struct Settings: Sendable {
        /// Failures allowed at once; 0 turns the limiter off.
        var burst = 20
        /// Failures forgiven per second after that.
        var perSecond = 1.0
        var trustedProxies: Set<String> = []
    }

    let settings: Settings
    private let now: @Sendable () -> ContinuousClock.Instant
    private typealias Bucket = (tokens: Double, at: ContinuousClock.Instant)
    private let buckets = Mutex<[String: Bucket]>([:])
    /// Addresses kept at most; past it, full (forgiven) buckets go first, then everything.
    static let maxAddresses = 10_000

    init(_ settings: Settings, now: @escaping @Sendable () -> ContinuousClock.Instant = { .now }) {
        self.settings = settings
        self.now = now
    }

    /// The address requests are counted under.
    func client(peer: String, headers: [String: String]) -> String {
        guard settings.trustedProxies.contains(peer), let forwarded = headers["x-forwarded-for"] else { return peer }
        let last = forwarded.split(separator: ",").last.map { $0.trimmingCharacters(in: .whitespaces) } ?? ""
        return last.isEmpty ? peer : last
    }

    /// Nil when `client` may try a credential now; otherwise the seconds until it may.
    func retryAfter(_ client: String) -> Int? {
        guard settings.burst > 0 else { return nil }
        return buckets.withLock { buckets in
            guard let b = refilled(buckets[client]) else { return nil }
            buckets[client] = b
            if b.tokens >= 1 { return nil }
            return max(1, Int(((1 - b.tokens) / settings.perSecond).rounded(.up)))
        }
    }

    /// A credential from `client` did not check out.
    func failed(_ client: String) {
        guard settings.burst > 0 else { return }
        buckets.withLock { buckets in
            var b = refilled(buckets[client]) ?? (Double(settings.burst), now())
            b.tokens = max(0, b.tokens - 1)
            if buckets[client] == nil && buckets.count >= Self.maxAddresses { evict(&buckets) }
            buckets[client] = b
        }
    }

    private func refilled(_ bucket: Bucket?) -> Bucket? {
        guard let b = bucket else { return nil }
        let t = now()
        return (level(b, at: t), t)
    }

    /// A bucket's tokens at `t`: what it had, plus what was forgiven since, up to the burst.
    private func level(_ b: Bucket, at t: ContinuousClock.Instant) -> Double {
        min(Double(settings.burst), b.tokens + (t - b.at).seconds * settings.perSecond)
    }

    private func evict(_ buckets: inout [String: Bucket]) {
        let t = now()
        buckets = buckets.filter { _, b in level(b, at: t) < Double(settings.burst) }
        if buckets.count >= Self.maxAddresses { buckets.removeAll() }
    }
}
