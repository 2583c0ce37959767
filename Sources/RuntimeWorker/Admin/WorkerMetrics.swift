import Foundation
import Metrics
import Prometheus
import Synchronization

/// The worker's figures, through swift-metrics on a Prometheus registry of its own (several workers in one
/// process, as in tests, never mix), served by the admin port's `GET /metrics`.
public final class WorkerMetrics: Sendable {
    let registry = PrometheusCollectorRegistry()
    private let factory: PrometheusMetricsFactory
    let running: Metrics.Gauge
    let connected: Metrics.Gauge
    let claimToStart: Metrics.Timer
    let stepSpawn: Metrics.Timer
    let logLinesSent: Metrics.Counter
    let logLinesDropped: Metrics.Counter
    let reconnects: Metrics.Counter
    let tokensRefused: Metrics.Counter
    let credentialRenewals: Metrics.Counter
    let outboxLines: Metrics.Gauge
    private let finished = Mutex<[String: Metrics.Counter]>([:])
    private let pending = Mutex<Int>(0)

    public init() {
        var f = PrometheusMetricsFactory(registry: registry)
        f.defaultDurationHistogramBuckets = [
            .microseconds(250), .microseconds(500), .milliseconds(1), .milliseconds(2), .milliseconds(5), .milliseconds(10),
            .milliseconds(25), .milliseconds(50), .milliseconds(100), .milliseconds(250), .milliseconds(500), .seconds(1),
            .seconds(5),
        ]
        factory = f
        running = Metrics.Gauge(label: "worker_attempts_running", factory: f)
        connected = Metrics.Gauge(label: "worker_connected", factory: f)
        claimToStart = Metrics.Timer(label: "worker_claim_to_start_seconds", factory: f)
        stepSpawn = Metrics.Timer(label: "worker_step_spawn_seconds", factory: f)
        logLinesSent = Metrics.Counter(label: "worker_log_lines_sent_total", factory: f)
        logLinesDropped = Metrics.Counter(label: "worker_log_lines_dropped_total", factory: f)
        reconnects = Metrics.Counter(label: "worker_reconnects_total", factory: f)
        tokensRefused = Metrics.Counter(label: "worker_attempt_tokens_refused_total", factory: f)
        credentialRenewals = Metrics.Counter(label: "worker_credential_renewals_total", factory: f)
        outboxLines = Metrics.Gauge(label: "worker_outbox_lines", factory: f)
        running.record(0)
        connected.record(0)
        outboxLines.record(0)
    }

    /// An attempt ended with `reason` (one counter per reason, made once).
    func attemptFinished(_ reason: String) {
        finished.withLock { counters in
            if let c = counters[reason] { return c }
            let c = Metrics.Counter(label: "worker_attempts_finished_total", dimensions: [("reason", reason)], factory: factory)
            counters[reason] = c
            return c
        }.increment()
    }

    /// Log lines waiting to be sent, over all attempts (the outbox).
    func outbox(_ delta: Int) {
        let now = pending.withLock { p in
            p += delta
            return p
        }
        outboxLines.record(now)
    }

    func record(_ timer: Metrics.Timer, _ duration: Duration) {
        let (seconds, attoseconds) = duration.components
        timer.recordNanoseconds(seconds * 1_000_000_000 + attoseconds / 1_000_000_000)
    }

    public func render() -> String { registry.emitToString() }
}
