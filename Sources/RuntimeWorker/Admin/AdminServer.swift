import Channels
import Foundation
import Logging

/// `runtime-worker --admin-port N`: `GET /livez` (as ws-worker serves it) and `GET /metrics` (Prometheus text),
/// on 127.0.0.1 unless told otherwise. Plain HTTP on the same libwebsockets server code as Lightning's.
public final class AdminServer: Sendable {
    private let server: ChannelServer

    public init(worker: Worker, host: String = "127.0.0.1", port: Int) {
        var config = ChannelServerConfiguration()
        config.host = host
        config.port = port
        config.maxHTTPBodyBytes = 64 * 1024
        server = ChannelServer(configuration: config, endpoints: [], routes: [
            HTTPRoute("GET", "/livez") { _ in
                let h = worker.health
                return .json(h.live ? 200 : 503, ["status": .string(h.live ? "ok" : "unavailable"), "detail": .string(h.detail),
                                                  "attempts_running": .int(Int64(worker.runningAttempts))])
            },
            HTTPRoute("GET", "/metrics") { _ in
                .text(200, worker.metrics.render(), contentType: "text/plain; version=0.0.4; charset=utf-8")
            },
        ], logger: Logger(label: "runtime-worker.admin"))
    }

    public func start() throws { try server.start() }
    /// The port listened on (the kernel's pick for port 0).
    public var port: Int { server.port }
    public func shutdown() async { await server.shutdown() }
}
