import Channels
import Foundation
import LightningProtocol

/// The operator console (docs/console.md): a single page served at `/` from files compiled into the binary
/// (`Console/`, embedded by the EmbedConsole plugin), and the session endpoints that exchange an operator token
/// for an HttpOnly, SameSite=Strict cookie. The page then uses the same `/api` and operator socket as the CLI;
/// the server checks every role, whatever the page shows.
extension Lightning {
    static let sessionCookie = "lightning_session"
    /// The paths the page's router draws: each answers the same HTML shell.
    static let consolePages: [String] = ["/", "/login", "/attempts", "/workflows", "/workers"]
    static let consolePagePrefixes: [String] = ["/attempts/", "/workflows/"]

    /// No inline script or style, nothing from elsewhere, never framed. `connect-src 'self'` covers the page's own
    /// WebSocket (CSP 3 matches ws/wss of the same host).
    static let contentSecurityPolicy = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
        + "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'"

    static func securityHeaders(cache: String) -> [(String, String)] {
        [("content-security-policy", contentSecurityPolicy), ("x-content-type-options", "nosniff"),
         ("x-frame-options", "DENY"), ("referrer-policy", "no-referrer"), ("cache-control", cache)]
    }

    func consoleRoutes() -> [HTTPRoute] {
        [
            HTTPRoute(nil, "/console/session") { [self] request in await consoleSessionEndpoint(request) },
            HTTPRoute("GET", "/console/") { request in Self.consoleAsset(request.path) },
            // Last: "/" is a prefix of every path, so only the page paths are answered here.
            HTTPRoute(nil, "/") { request in
                guard request.method == "GET" || request.method == "HEAD" else {
                    return Self.isConsolePage(request.path) ? .error(405, "method \(request.method) is not allowed on \(request.path)")
                                                             : .error(404, "nothing at \(request.path)")
                }
                return Self.consolePage(request.path)
            },
        ]
    }

    static func isConsolePage(_ path: String) -> Bool {
        consolePages.contains(path)
            || consolePagePrefixes.contains { path.hasPrefix($0) && path.count > $0.count && !path.dropFirst($0.count).contains("/") }
    }

    static func consolePage(_ path: String) -> HTTPResponse {
        guard isConsolePage(path), let html = ConsoleAssets.files["index.html"] else {
            return .error(404, "nothing at \(path)")
        }
        var response = HTTPResponse(status: 200, contentType: "text/html; charset=utf-8", body: bytes(html))
        response.headers = securityHeaders(cache: "no-store")
        return response
    }

    static func consoleAsset(_ path: String) -> HTTPResponse {
        let name = String(path.dropFirst("/console/".count))
        guard !name.contains(".."), let file = ConsoleAssets.files[name] else {
            return .error(404, "no console file \(name)")
        }
        var response = HTTPResponse(status: 200, contentType: contentType(of: name), body: bytes(file))
        // Each release carries its own files; a browser checks back (cheap) rather than run stale code.
        response.headers = securityHeaders(cache: "no-cache")
        return response
    }

    static func bytes(_ s: StaticString) -> [UInt8] {
        s.withUTF8Buffer { Array($0) }
    }

    static func contentType(of name: String) -> String {
        switch name.split(separator: ".").last {
        case "html": "text/html; charset=utf-8"
        case "js": "text/javascript; charset=utf-8"
        case "css": "text/css; charset=utf-8"
        case "svg": "image/svg+xml"
        case "json": "application/json"
        default: "text/plain; charset=utf-8"
        }
    }

    // MARK: Sessions

    func consoleSessionEndpoint(_ request: HTTPRequest) async -> HTTPResponse {
        var response: HTTPResponse
        switch request.method {
        case "GET":
            switch authorize(request, needed: .viewer) {
            case .success(let who): response = .json(200, ["name": .string(who.name), "role": .string(who.role.rawValue)])
            case .failure(let refusal): response = refusal.response
            }
        case "POST":
            response = await signIn(request)
        case "DELETE":
            if let secret = Self.cookie(Self.sessionCookie, in: request.headers["cookie"]) {
                try? await store.endConsoleSession(secret: secret, at: Timestamp.nowMicros())
                // Its sockets go with it: an open log or feed must not outlive the sign-out.
                let hash = OperatorToken.hash(secret)
                closeOperatorSockets(reason: "signed out") { $0.sessionHash == hash }
            }
            response = .json(200, ["signed_out": true])
            response.headers.append(("set-cookie", sessionCookie(value: "", maxAge: 0)))
        default:
            response = .error(405, "method \(request.method) is not allowed on /console/session (GET, POST, DELETE)")
        }
        response.headers += Self.securityHeaders(cache: "no-store")
        return response
    }

    private func signIn(_ request: HTTPRequest) async -> HTTPResponse {
        if let refusal = crossOriginRefusal(request) { return refusal }
        guard let body = try? JSON.parse(request.body), case .object(let fields) = body,
              let token = fields["token"]?.stringValue, !token.isEmpty else {
            return .error(400, "send {\"token\": \"<operator token>\"} as JSON")
        }
        // The same check (and the same limit on failures per address) as a bearer token on the API.
        let client = authLimiter.client(peer: request.peerAddress, headers: request.headers)
        let record: OperatorIdentity
        switch authorize(presented: token, headers: request.headers, method: request.method, needed: .viewer, client: client) {
        case .success(let identity): record = identity
        case .failure(let refusal):
            if refusal.response.status == 401 {
                logger.notice("console sign-in refused: invalid or revoked operator token", metadata: ["peer": "\(client)"])
            }
            return refusal.response
        }
        let secret: String
        do {
            secret = try await store.createConsoleSession(tokenID: record.tokenID, lifetimeMicros: configuration.consoleSessionSeconds * 1_000_000,
                                                          at: Timestamp.nowMicros())
        } catch {
            return .error(503, "could not start a session: \(error)")
        }
        logger.info("console sign-in", metadata: ["token.id": "\(record.tokenID)", "token.name": "\(record.name)"])
        var response = HTTPResponse.json(200, ["name": .string(record.name), "role": .string(record.role.rawValue)])
        response.headers.append(("set-cookie", sessionCookie(value: secret, maxAge: Int(configuration.consoleSessionSeconds))))
        return response
    }

    private func sessionCookie(value: String, maxAge: Int) -> String {
        var c = "\(Self.sessionCookie)=\(value); Path=/; HttpOnly; SameSite=Strict; Max-Age=\(maxAge)"
        if configuration.channel.tls != nil || configuration.publicURL?.hasPrefix("https://") == true { c += "; Secure" }
        return c
    }

    /// The origin browsers reach the console at: `--public-url` when set (behind a proxy that terminates TLS or
    /// renames the host), else this server's own scheme and the request's Host.
    func expectedOrigin(host: String?) -> String? {
        if let publicURL = configuration.publicURL { return Self.origin(of: publicURL) }
        guard let host else { return nil }
        return (configuration.channel.tls != nil ? "https://" : "http://") + host
    }

    /// `scheme://host[:port]` of a URL, lowercased, without path or trailing slash.
    static func origin(of url: String) -> String {
        var u = url.lowercased()
        if let schemeEnd = u.range(of: "://") {
            let rest = u[schemeEnd.upperBound...]
            if let slash = rest.firstIndex(of: "/") { u = String(u[..<slash]) }
        }
        return u
    }

    /// Closes console sockets whose session is over (the janitor calls this): a session's sockets end with it.
    func closeExpiredConsoleSockets(now: Int64) {
        closeOperatorSockets(reason: "session expired") { !$0.isLive(at: now) }
    }

    /// A cookie's value from a `Cookie` header (`a=1; b=2`).
    static func cookie(_ name: String, in header: String?) -> String? {
        guard let header else { return nil }
        for part in header.split(separator: ";") {
            let pair = part.trimmingCharacters(in: .whitespaces)
            if pair.hasPrefix(name + "=") { return String(pair.dropFirst(name.count + 1)) }
        }
        return nil
    }

    /// Requests authenticated by the cookie must come from the console's own origin. Browsers send `Origin` on
    /// every POST, PUT, DELETE and WebSocket request; SameSite=Strict already keeps the cookie off cross-site
    /// requests, and this refuses the rest (older browsers, a page on a sibling host of the same site).
    func crossOriginRefusal(_ headers: [String: String], method: String) -> Refusal? {
        if method == "GET" || method == "HEAD" { return nil }
        guard let origin = headers["origin"], let expected = expectedOrigin(host: headers["host"]) else {
            return Refusal(response: .error(403, "a console request without an Origin header is refused"))
        }
        guard origin.lowercased() == expected.lowercased() else {
            logger.notice("refused a cross-origin console request", metadata: ["origin": "\(origin)"])
            return Refusal(response: .error(403, "cross-origin request refused (Origin \(origin))"))
        }
        return nil
    }

    private func crossOriginRefusal(_ request: HTTPRequest) -> HTTPResponse? {
        crossOriginRefusal(request.headers, method: request.method)?.response
    }
}
