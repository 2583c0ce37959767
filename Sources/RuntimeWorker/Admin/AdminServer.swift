import Channels
import Foundation
import Logging

/// `runtime-worker --admin-port N`: `GET /livez` (as ws-worker serves it), `GET /metrics` (Prometheus text) and
/// `POST /register` (a registration token for a worker waiting for one), on 127.0.0.1 unless told otherwise. Plain HTTP on the same libwebsockets server code as Lightning's.
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
            // Vela's option B: a worker started with no credentials waits for an admin to post it a registration
            // token, `{"token": "..."}` (or the bare token). Only that worker's own name's token is taken.
            HTTPRoute("POST", "/register") { request in
                let body = String(decoding: request.body, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
                let token = (try? JSON.parse(request.body))?["token"]?.stringValue ?? body
                guard !token.isEmpty, !token.hasPrefix("{") else {
                    return .json(400, ["error": "post the registration token: {\"token\": \"...\"}"])
                }
                switch await worker.register(token) {
                case .registered(let expiresAt):
                    return .json(200, ["status": "registered", "name": .string(worker.configuration.name),
                                       "credential_expires_at": .double(expiresAt)])
                case .refused(let status, let reason):
                    return .json(status, ["error": .string(reason)])
                }
            },
        ], logger: Logger(label: "runtime-worker.admin"))
    }

    public func start() throws { try server.start() }
    /// The port listened on (the kernel's pick for port 0).
    public var port: Int { server.port }
    public func shutdown() async { await server.shutdown() }
}
