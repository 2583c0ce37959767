import Foundation
import Testing
import TestSupport
@testable import Channels

/// The HTTP server's decisions, without a socket.
@Suite("HTTP rules")
struct HTTPRulesTests {
    func admit(_ method: String, _ headers: [String: String], shuttingDown: Bool = false) -> HTTPRules.Admission {
        HTTPRules.admit(method: method, headers: headers, shuttingDown: shuttingDown, maxBodyBytes: 1_000)
    }

    @Test("what happens once a request's headers are in")
    func admission() {
        #expect(admit("GET", [:]) == .dispatch(closeAfter: false))
        #expect(admit("DELETE", ["content-length": "0"]) == .dispatch(closeAfter: false))
        #expect(admit("POST", ["content-length": "0"]) == .dispatch(closeAfter: false))
        // No Content-Length on a method with a body: lws closes the connection after the response, and says so.
        #expect(admit("POST", [:]) == .dispatch(closeAfter: true))
        #expect(admit("PATCH", [:]) == .dispatch(closeAfter: true))
        #expect(admit("POST", ["content-length": "10"]) == .awaitBody)
        #expect(admit("GET", ["content-length": "1000"]) == .awaitBody)
        #expect(admit("POST", ["content-length": " 12 "]) == .awaitBody)
        #expect(admit("POST", ["content-length": "10", "transfer-encoding": "identity"]) == .awaitBody)
    }

    @Test("Connection: close is found among the header's tokens, in any case")
    func asksToClose() {
        #expect(HTTPRules.asksToClose(["connection": "close"]))
        #expect(HTTPRules.asksToClose(["connection": "Keep-Alive, CLOSE"]))
        #expect(HTTPRules.asksToClose(["connection": " close "]))
        #expect(!HTTPRules.asksToClose(["connection": "keep-alive"]))
        #expect(!HTTPRules.asksToClose(["connection": "closed"]))
        #expect(!HTTPRules.asksToClose(["connection": "upgrade"]))
        #expect(!HTTPRules.asksToClose([:]))
    }

    @Test("refused at once: shutting down, chunked bodies, bodies over the limit, a Content-Length that is not a size")
    func refusals() {
        #expect(admit("GET", [:], shuttingDown: true) == .respond(status: 503, message: "server shutting down", closeAfter: false))
        guard case .respond(411, let chunked, true) = admit("POST", ["transfer-encoding": "chunked"]) else {
            Issue.record("chunked was not refused with 411")
            return
        }
        #expect(chunked.contains("Transfer-Encoding: chunked"))
        #expect(admit("POST", ["content-length": "1001"])
                == .respond(status: 413, message: "request body of 1001 bytes is over the 1000-byte limit", closeAfter: true))
        for bad in ["-5", "+5", "ten", "1e3", "", "5, 5", "99999999999999999999999"] {
            guard case .respond(400, _, true) = admit("POST", ["content-length": bad]) else {
                Issue.record("Content-Length \(bad.debugDescription) was not refused with 400")
                continue
            }
        }
    }

    @Test("a body is cut off with 413 at the chunk that takes it over the limit")
    func bodyLimit() {
        #expect(HTTPRules.bodyChunk(received: 0, adding: 1_000, maxBodyBytes: 1_000) == nil)
        #expect(HTTPRules.bodyChunk(received: 600, adding: 401, maxBodyBytes: 1_000)?.status == 413)
    }

    @Test("routes: the first whose method and path prefix match; 405 when only the path does, 404 when nothing does")
    func routing() {
        let ok: @Sendable (HTTPRequest) async -> HTTPResponse = { _ in .text(200, "") }
        let routes = [HTTPRoute("GET", "/healthz", ok), HTTPRoute("POST", "/i/", ok), HTTPRoute(nil, "/api/", ok)]
        func route(_ method: String, _ path: String) -> Result<String, HTTPResponseError> {
            HTTPRules.route(HTTPRequest(method: method, path: path, query: [:], headers: [:], body: []), in: routes)
                .map { "\($0.method ?? "*") \($0.pathPrefix)" }
        }
        #expect(route("GET", "/healthz") == .success("GET /healthz"))
        #expect(route("POST", "/i/hook") == .success("POST /i/"))
        #expect(route("DELETE", "/api/workflows/x") == .success("* /api/"))
        #expect(route("GET", "/i/hook") == .failure(HTTPResponseError(status: 405, message: "method GET is not allowed on /i/hook")))
        #expect(route("GET", "/nowhere") == .failure(HTTPResponseError(status: 404, message: "nothing at /nowhere")))
    }
}

@Suite("HTTP refusals on a real socket", .serialized)
struct HTTPRefusalTests {
    @Test("a chunked body, a Content-Length that is not a size, and one over the limit are answered at once, and the connection closed")
    func refusedOnTheWire() async throws {
        let server = try makeServer { $0.maxHTTPBodyBytes = 1_000 }
        defer { server.stop() }
        let port = server.port
        for (headers, status) in [("Transfer-Encoding: chunked\r\n", "411"), ("Content-Length: -5\r\n", "400"),
                                  ("Content-Length: abc\r\n", "400"), ("Content-Length: 5000\r\n", "413")] {
            let answer = try await TestSupport.onThread {
                let c = try RawConnection(port: port, timeout: 30)
                try c.send("POST /echo HTTP/1.1\r\nHost: x\r\n\(headers)\r\n")
                return c.readToEnd()
            }
            #expect(answer.hasPrefix("HTTP/1.1 \(status)"), "\(headers.debugDescription): \(answer.prefix(200).debugDescription)")
        }
        // And a good one still goes.
        let ok = try await TestSupport.onThread {
            try RawConnection(port: port, timeout: 30).exchange("POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}")
        }
        #expect(ok.hasPrefix("HTTP/1.1 200"), "\(ok.prefix(200))")
    }
}

@Suite("Connection: close")
struct ConnectionCloseTests {
    @Test("a request that asks to close gets an answer that says so, whole, and then the end of the stream; others are kept")
    func answeredAndClosed() async throws {
        let server = try makeServer()
        defer { server.stop() }
        let port = server.port
        for request in ["GET /hello?name=a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
                        "POST /echo HTTP/1.1\r\nHost: x\r\nConnection: keep-alive, Close\r\nContent-Length: 2\r\n\r\n{}",
                        "GET /missing HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"] {
            let answer = try await TestSupport.onThread {
                let c = try RawConnection(port: port, timeout: 30)
                let answer = try c.exchange(request)
                return (answer, try c.readsEndOfStream())
            }
            let head = answer.0.components(separatedBy: "\r\n\r\n")[0].lowercased()
            #expect(head.hasPrefix("http/1.1 ") && head.contains("\r\nconnection: close"), "\(answer.0.debugDescription)")
            #expect(answer.1, "the server closes after answering \(request.debugDescription)")
        }
        // Without it the connection carries the next request, and the answer says nothing of closing.
        let kept = try await TestSupport.onThread {
            let c = try RawConnection(port: port, timeout: 30)
            let first = try c.exchange("GET /hello?name=a HTTP/1.1\r\nHost: x\r\n\r\n")
            let second = try c.exchange("GET /hello?name=b HTTP/1.1\r\nHost: x\r\n\r\n")
            return (first, second)
        }
        #expect(kept.0.hasPrefix("HTTP/1.1 200") && !kept.0.lowercased().contains("connection: close"), "\(kept.0.debugDescription)")
        #expect(kept.1.hasPrefix("HTTP/1.1 200") && kept.1.contains(#""q":"b""#), "\(kept.1.debugDescription)")
    }
}

@Suite("Slow handlers")
struct SlowHandlerTests {
    @Test("a handler slower than libwebsockets' network timeout is waited for, and the connection then carries the next request")
    func waitedFor() async throws {
        // lws closed the connection of a handler slower than its timeout_secs (10 s by default, 1 s here) with no
        // answer: a synchronous webhook whose attempt took over 10 s got an empty reply.
        let server = try makeServer { $0.headerTimeoutSeconds = 1 }
        defer { server.stop() }
        let port = server.port
        let answer = try await TestSupport.onThread {
            let c = try RawConnection(port: port, timeout: 60)
            let first = try c.exchange("GET /slow?ms=3000 HTTP/1.1\r\nHost: x\r\n\r\n")
            try c.send("GET /hello?name=after HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            return first + c.readToEnd()
        }
        #expect(answer.hasPrefix("HTTP/1.1 200") && answer.contains(#""slept":"3000""#), "\(answer.debugDescription)")
        #expect(answer.contains(#""q":"after""#), "\(answer.debugDescription)")
        // A POST, as a synchronous webhook is: dispatched when its body is complete.
        let posted = try await TestSupport.onThread {
            try RawConnection(port: port, timeout: 60).exchange("POST /slow?ms=3000 HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")
        }
        #expect(posted.hasPrefix("HTTP/1.1 200") && posted.contains(#""slept":"3000""#), "\(posted.debugDescription)")
    }
}

@Suite("HEAD requests")
struct HEADTests {
    @Test("HEAD is answered as its GET is, headers and Content-Length without the body, and the connection carries the next request")
    func headersOnly() async throws {
        let server = try makeServer()
        defer { server.stop() }
        let port = server.port
        let get = try await TestSupport.onThread {
            try RawConnection(port: port, timeout: 30).exchange("GET /hello?name=a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        }
        let length = try #require(get.split(separator: "\r\n").first { $0.lowercased().hasPrefix("content-length:") })
        // HEAD, then a GET on the same connection: had the HEAD's answer carried a body, it would be read as the
        // start of the GET's.
        let answer = try await TestSupport.onThread {
            let c = try RawConnection(port: port, timeout: 30)
            try c.send("HEAD /hello?name=a HTTP/1.1\r\nHost: x\r\n\r\nGET /hello?name=b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            return c.readToEnd()
        }
        let parts = answer.components(separatedBy: "HTTP/1.1 200")
        #expect(parts.count == 3, "\(answer.debugDescription)")
        guard parts.count == 3 else { return }
        #expect(parts[1].contains(String(length)) && parts[1].hasSuffix("\r\n\r\n"), "\(parts[1].debugDescription)")
        #expect(parts[2].contains("\"b\"") && !answer.contains("\"a\""), "\(answer.debugDescription)")
        // A HEAD refused goes without a body too.
        let refused = try await TestSupport.onThread {
            try RawConnection(port: port, timeout: 30).exchange("HEAD /nowhere HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        }
        #expect(refused.hasPrefix("HTTP/1.1 404") && refused.hasSuffix("\r\n\r\n"), "\(refused.debugDescription)")
    }
}

@Suite("Pipelined HTTP requests", .serialized)
struct PipelinedHTTPTests {
    /// Sends `text` in one write and reads until the server closes (the last request asks it to).
    func send(_ port: Int, _ text: String) async throws -> String {
        try await TestSupport.onThread {
            let c = try RawConnection(port: port, timeout: 30)
            try c.send(text)
            return c.readToEnd()
        }
    }

    func count(_ answer: String, _ status: String) -> Int { answer.components(separatedBy: "HTTP/1.1 \(status)").count - 1 }

    @Test("requests pipelined in one write never freeze the server: each is answered in order, or the connection closes, and the next client is served at once")
    func neverFreezes() async throws {
        // Two POSTs in one write froze the whole server before (libwebsockets 4.1 called BODY_COMPLETION for ever on
        // its service thread): found by fuzzing, 2026-12-07.
        let server = try makeServer()
        defer { server.stop() }
        let port = server.port
        let post = "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{}"
        let lastPost = "POST /echo HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 2\r\n\r\n{}"
        let get = "GET /hello?name=a HTTP/1.1\r\nHost: x\r\n\r\n"
        let lastGet = "GET /hello?name=b HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        let health = "GET /hello HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"

        // Requests without bodies are answered, in order.
        let gets = try await send(port, get + get + lastGet)
        #expect(count(gets, "200") == 3, "\(gets.debugDescription)")
        if let a = gets.range(of: "\"a\""), let b = gets.range(of: "\"b\"") { #expect(a.lowerBound < b.lowerBound) }
        // A body behind a request still being answered: the connection closes (pipelining is not supported), and the
        // server goes on.
        for pipeline in [post + lastPost, get + lastPost, get + "GET /hello HTTP/1.1\r\nHost: x\r\nContent-Length: 4\u{15}9\r\n\r\n",
                         post + post + post] {
            let answer = try await send(port, pipeline)
            #expect(answer.isEmpty || answer.hasPrefix("HTTP/1.1 "), "\(answer.debugDescription)")
            let next = try await TestSupport.onThread { try RawConnection(port: port, timeout: 10).exchange(health) }
            #expect(next.hasPrefix("HTTP/1.1 200"), "after \(pipeline.debugDescription): \(next.debugDescription)")
        }
    }
}
