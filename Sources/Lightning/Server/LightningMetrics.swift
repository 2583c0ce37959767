import Foundation
import Synchronization
import Metrics
import Prometheus

/// Lightning's figures, kept through swift-metrics on a Prometheus registry of this server's own (so several
/// servers in one process, as in tests, never mix), and rendered by `GET /metrics`.
final class LightningMetrics: Sendable {
    let registry = PrometheusCollectorRegistry()
    private let factory: PrometheusMetricsFactory
    let claims: Metrics.Counter
    let claimedAttempts: Metrics.Counter
    let logLines: Metrics.Counter
    let logLinesDropped: Metrics.Counter
    /// `run:log` batches by how they were read: in one pass from the frame, or through JSON values (any other shape).
    let logBatchesOnePass: Metrics.Counter
    let logBatchesParsed: Metrics.Counter
    let retries: Metrics.Counter
    let tokensRefused: Metrics.Counter
    let webhooks: Metrics.Counter
    let cronFired: Metrics.Counter
    /// Requests answered 429: their address had too many failed token checks.
    let authThrottled: Metrics.Counter
    let workersConnected: Metrics.Gauge
    let viewersConnected: Metrics.Gauge
    /// Connections closed as soon as accepted: file descriptors were nearly exhausted (the server's own count).
    let connectionsRefused: Metrics.Gauge
    /// Connections closed before finishing a request because too many such were open (the server's own count).
    let unfinishedEvicted: Metrics.Gauge
    /// Attempt tokens signed ahead of their claim (`TokensAhead`): used at the claim, or not (stale, or cancelled).
    let tokensAheadUsed: Metrics.Gauge
    let tokensAheadUnused: Metrics.Gauge

    init() {
        var f = PrometheusMetricsFactory(registry: registry)
        f.defaultDurationHistogramBuckets = [
            .microseconds(100), .microseconds(250), .microseconds(500), .milliseconds(1), .milliseconds(2),
            .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100),
            .milliseconds(250), .milliseconds(500), .seconds(1), .seconds(5),
        ]
        factory = f
        claims = Metrics.Counter(label: "lightning_claims_total", factory: f)
        claimedAttempts = Metrics.Counter(label: "lightning_claimed_attempts_total", factory: f)
        logLines = Metrics.Counter(label: "lightning_log_lines_total", factory: f)
        logLinesDropped = Metrics.Counter(label: "lightning_log_lines_dropped_total", factory: f)
        logBatchesOnePass = Metrics.Counter(label: "lightning_log_batches_total", dimensions: [("reader", "one_pass")], factory: f)
        logBatchesParsed = Metrics.Counter(label: "lightning_log_batches_total", dimensions: [("reader", "json")], factory: f)
        retries = Metrics.Counter(label: "lightning_attempt_retries_total", factory: f)
        tokensRefused = Metrics.Counter(label: "lightning_attempt_tokens_refused_total", factory: f)
        webhooks = Metrics.Counter(label: "lightning_webhook_requests_total", factory: f)
        cronFired = Metrics.Counter(label: "lightning_cron_work_orders_total", factory: f)
        authThrottled = Metrics.Counter(label: "lightning_auth_throttled_total", factory: f)
        workersConnected = Metrics.Gauge(label: "lightning_workers_connected", factory: f)
        viewersConnected = Metrics.Gauge(label: "lightning_viewers_connected", factory: f)
        connectionsRefused = Metrics.Gauge(label: "lightning_connections_refused_no_descriptors", factory: f)
        unfinishedEvicted = Metrics.Gauge(label: "lightning_connections_closed_unfinished", factory: f)
        tokensAheadUsed = Metrics.Gauge(label: "lightning_attempt_tokens_signed_ahead", dimensions: [("outcome", "used")], factory: f)
        tokensAheadUnused = Metrics.Gauge(label: "lightning_attempt_tokens_signed_ahead", dimensions: [("outcome", "unused")], factory: f)
    }

    private let timers = Mutex<[String: Metrics.Timer]>([:])

    /// Time to handle one worker event, by event name. One timer per event name, made once: this runs for
    /// every event a worker sends.
    func eventHandled(_ event: String, _ duration: Duration) {
        let timer = timers.withLock { timers in
            if let t = timers[event] { return t }
            let t = Metrics.Timer(label: "lightning_event_duration_seconds", dimensions: [("event", event)], factory: factory)
            timers[event] = t
            return t
        }
        let (seconds, attoseconds) = duration.components
        timer.recordNanoseconds(seconds * 1_000_000_000 + attoseconds / 1_000_000_000)
    }

    func attempts(_ counts: [AttemptState: Int]) {
        for state in AttemptState.allCases {
            Metrics.Gauge(label: "lightning_attempts", dimensions: [("state", state.rawValue)], factory: factory)
                .record(counts[state] ?? 0)
        }
    }

    func render() -> String { registry.emitToString() }
}
