import Foundation

/// The HTTP server's decisions about a request, apart from libwebsockets and from Phoenix: what to do once its headers
/// are in, which route takes it, and when a body is too large. Values in, a decision out; no socket, no thread
/// (`HTTPRulesTests`). `ChannelServer+HTTP` reads requests from lws and carries the decisions out.
enum HTTPRules {
    /// What to do with a request whose headers are in.
    enum Admission: Equatable {
        /// Answer at once. `closeAfter`: the connection cannot carry another request (its body is left unread).
        case respond(status: Int, message: String, closeAfter: Bool)
        /// Hand it to its route now (no body to wait for).
        case dispatch(closeAfter: Bool)
        /// Wait for the body; it is dispatched when complete.
        case awaitBody
    }

    static let methodsWithBody: Set<String> = ["POST", "PUT", "PATCH"]

    /// `headers` by lowercased name, as `LWSRequest.headers` reads them.
    static func admit(method: String, headers: [String: String], shuttingDown: Bool, maxBodyBytes: Int) -> Admission {
        if shuttingDown { return .respond(status: 503, message: "server shutting down", closeAfter: false) }
        if let encoding = headers["transfer-encoding"], encoding.lowercased() != "identity" {
            // libwebsockets 4.1 does not read chunked request bodies: it never says such a body ended, and the client
            // would wait for ever. Refused at once (RFC 9112 allows 411 for this).
            return .respond(status: 411, message: "send the request body with a Content-Length: chunked request bodies (Transfer-Encoding: \(encoding)) are not supported",
                            closeAfter: true)
        }
        let length = headers["content-length"]
        // 1*DIGIT (RFC 9110 8.6): a sign, a second value or anything else is refused, never read some other way.
        func size(_ text: String) -> Int? {
            let digits = text.trimmingCharacters(in: .whitespaces)
            guard !digits.isEmpty, digits.utf8.allSatisfy({ $0 >= 0x30 && $0 <= 0x39 }) else { return nil }
            return Int(digits)
        }
        guard let declared = length.map(size) ?? 0 else {
            return .respond(status: 400, message: "Content-Length \(length ?? "") is not a number of bytes", closeAfter: true)
        }
        if declared > maxBodyBytes {
            return .respond(status: 413, message: "request body of \(declared) bytes is over the \(maxBodyBytes)-byte limit", closeAfter: true)
        }
        if declared > 0 { return .awaitBody }
        // A POST, PUT or PATCH without a Content-Length: lws cannot keep the connection alive (it does not know where
        // the body ends) and closes it after the response. Said, or a client reuses it and must retry a request it
        // already made.
        return .dispatch(closeAfter: methodsWithBody.contains(method) && headers["content-length"] == nil)
    }

    /// The client asked for the connection to close after this request (`Connection: close`; the header is a list of
    /// case-insensitive tokens, RFC 9110 7.6.1). libwebsockets closes it then, but its answer did not say so, and a
    /// client that keeps connections (curl, URLSession) could send its next request on it as it closed: "Empty reply
    /// from server". The answer now carries `Connection: close` (RFC 9112 9.6).
    static func asksToClose(_ headers: [String: String]) -> Bool {
        guard let value = headers["connection"] else { return false }
        return value.split(separator: ",").contains { $0.trimmingCharacters(in: .whitespaces).lowercased() == "close" }
    }

    /// A chunk of body arrived: nil, or the 413 that ends the request (the rest is not read).
    static func bodyChunk(received: Int, adding length: Int, maxBodyBytes: Int) -> HTTPResponse? {
        received + length > maxBodyBytes ? .error(413, "request body is over the \(maxBodyBytes)-byte limit") : nil
    }

    /// The first route whose method (nil: any) and path prefix match; else 405 when some route has the path, 404 when none.
    static func route(_ request: HTTPRequest, in routes: [HTTPRoute]) -> Result<HTTPRoute, HTTPResponseError> {
        if let route = routes.first(where: { ($0.method == nil || $0.method == request.method) && request.path.hasPrefix($0.pathPrefix) }) {
            return .success(route)
        }
        let knownPath = routes.contains { request.path.hasPrefix($0.pathPrefix) }
        return .failure(knownPath ? HTTPResponseError(status: 405, message: "method \(request.method) is not allowed on \(request.path)")
                                  : HTTPResponseError(status: 404, message: "nothing at \(request.path)"))
    }

    static func reasonPhrase(_ status: Int) -> String {
        switch status {
        case 200: "OK"
        case 201: "Created"
        case 202: "Accepted"
        case 204: "No Content"
        case 400: "Bad Request"
        case 401: "Unauthorized"
        case 403: "Forbidden"
        case 404: "Not Found"
        case 405: "Method Not Allowed"
        case 409: "Conflict"
        case 411: "Length Required"
        case 413: "Payload Too Large"
        case 415: "Unsupported Media Type"
        case 422: "Unprocessable Entity"
        case 429: "Too Many Requests"
        case 500: "Internal Server Error"
        case 502: "Bad Gateway"
        case 503: "Service Unavailable"
        case 504: "Gateway Timeout"
        default: "Status"
        }
    }
}

/// An answer the HTTP rules give instead of a route.
struct HTTPResponseError: Error, Equatable {
    var status: Int
    var message: String
    var response: HTTPResponse { .error(status, message) }
}
