internal import CLibWebSockets
import Foundation

/// Plain HTTP on the server: a request read from lws, admitted or refused and routed by `HTTPRules`, its handler run
/// in a task, its response written back on the service thread.
extension ChannelServer {
    func httpRequest(_ wsi: OpaquePointer, path: String) -> Int32 {
        // A keep-alive connection carries several requests: drop the previous one's record first. One whose answer is
        // still pending means this request was pipelined behind it, which libwebsockets 4.1 hands over before the
        // answer is written: its answer would be lost, and a body of this one would keep the service thread calling
        // BODY_COMPLETION for ever. Pipelining is not supported: the connection is closed (the client sends again).
        if let previous = connection(wsi), previous.kind == .http {
            if previous.dispatched && !previous.answered { return -1 }
            forget(previous)
        }
        let conn = register(wsi, kind: .http)
        conn.method = LWSRequest.method(wsi)
        // HEAD is a GET whose answer, refusals included, goes without its body (load balancers' health checks use it).
        conn.headersOnly = conn.method == "HEAD"
        conn.path = path.isEmpty ? LWSRequest.path(wsi) : path
        conn.query = LWSRequest.query(wsi)
        conn.headers = LWSRequest.headers(wsi)
        conn.closeAfterResponse = HTTPRules.asksToClose(conn.headers)
        switch HTTPRules.admit(method: conn.method, headers: conn.headers, shuttingDown: shuttingDown,
                               maxBodyBytes: configuration.maxHTTPBodyBytes) {
        case .respond(let status, let message, let closeAfter):
            if closeAfter { conn.closeAfterResponse = true }
            respond(conn, .error(status, message))
        case .dispatch(let closeAfter):
            if closeAfter { conn.closeAfterResponse = true }
            dispatchHTTP(conn)
        case .awaitBody:
            break  // dispatched at HTTP_BODY_COMPLETION
        }
        return 0
    }

    /// A chunk of the request's body (HTTP_BODY).
    func httpBody(_ conn: Connection, _ input: UnsafeMutableRawPointer?, _ length: Int) {
        if conn.response != nil { return }  // already answered (413)
        if let tooLarge = HTTPRules.bodyChunk(received: conn.body.count, adding: length, maxBodyBytes: configuration.maxHTTPBodyBytes) {
            // The rest of the body is not read: the connection cannot carry another request.
            conn.closeAfterResponse = true
            respond(conn, tooLarge)
            return
        }
        if let input { conn.body.append(contentsOf: UnsafeRawBufferPointer(start: input, count: length)) }
    }

    func dispatchHTTP(_ conn: Connection) {
        guard !conn.dispatched else { return }
        conn.dispatched = true
        let request = HTTPRequest(method: conn.headersOnly ? "GET" : conn.method, path: conn.path, query: conn.query,
                                  headers: conn.headers, body: conn.body, peerAddress: LWSRequest.peerAddress(conn.wsi))
        conn.body = []
        // The request is read. Its headers' storage goes back to lws: held, lws closes the connection once it has
        // been held 370 s (timeout_secs_ah_idle + 360), and it is memory a waiting request does not need. And the
        // connection now waits as long as a handler may take, not the 10 s lws gives a network step.
        _ = lws_http_headers_detach(conn.wsi)
        lws_set_timeout(conn.wsi, PENDING_TIMEOUT_USER_OK, Int32(max(1, configuration.handlerTimeoutSeconds)))
        let route: HTTPRoute
        switch HTTPRules.route(request, in: routes) {
        case .success(let r): route = r
        case .failure(let refusal):
            respond(conn, refusal.response)
            return
        }
        let id = conn.id
        Task { [self] in
            let started = ContinuousClock.now
            let response = await route.handler(request)
            // Method, path (never the query or headers: tokens travel there), status, size and time.
            logger.debug("http request", metadata: ["method": "\(request.method)", "path": "\(request.path)",
                                                    "status": "\(response.status)", "bytes": "\(response.body.count)",
                                                    "ms": "\((ContinuousClock.now - started).milliseconds)"])
            answer(connection: id, response)
        }
    }

    func respond(_ conn: Connection, _ response: HTTPResponse) {
        conn.response = response
        lws_callback_on_writable(conn.wsi)
    }
}
