import Channels
import Foundation
#if canImport(FoundationNetworking)
import FoundationNetworking
#endif

/// A failure the CLI explains in one line and exits on.
struct CLIError: Error, CustomStringConvertible {
    var message: String
    var exitCode: Int32 = 1
    var description: String { message }
}

/// The operator HTTP API over URLSession.
struct APIClient: Sendable {
    let base: URL
    let token: String

    init(server: String, token: String) throws {
        guard let url = URL(string: server), let scheme = url.scheme, ["http", "https"].contains(scheme), url.host != nil else {
            throw CLIError(message: "--server must be an http:// or https:// URL, not \"\(server)\"")
        }
        base = url
        self.token = token
    }

    /// The operator socket URL for this server (`ws[s]://host:port/socket/websocket`).
    var socketURL: String {
        var c = URLComponents(url: base, resolvingAgainstBaseURL: false)!
        c.scheme = base.scheme == "https" ? "wss" : "ws"
        c.path = "/socket/websocket"
        c.query = nil
        return c.string!
    }

    func call(_ method: String, _ path: String, query: [String: String] = [:], body: [UInt8]? = nil,
              contentType: String = "application/json") async throws -> JSON {
        var c = URLComponents(url: base, resolvingAgainstBaseURL: false)!
        c.path = path
        if !query.isEmpty { c.queryItems = query.sorted { $0.key < $1.key }.map { URLQueryItem(name: $0.key, value: $0.value) } }
        var request = URLRequest(url: c.url!)
        request.httpMethod = method
        request.setValue("Bearer \(token)", forHTTPHeaderField: "Authorization")
        request.setValue("application/json", forHTTPHeaderField: "Accept")
        if let body {
            request.httpBody = Data(body)
            request.setValue(contentType, forHTTPHeaderField: "Content-Type")
        }
        request.timeoutInterval = 30
        let data: Data, response: URLResponse
        do { (data, response) = try await URLSession.shared.data(for: request) } catch {
            throw CLIError(message: "could not reach Lightning at \(base.absoluteString) (\(error.localizedDescription)); is `lightning serve` running there?")
        }
        let status = (response as? HTTPURLResponse)?.statusCode ?? 0
        let json = (try? JSON.parse(Array(data))) ?? .null
        guard (200..<300).contains(status) else {
            let message = json["error"]?.stringValue ?? String(decoding: data, as: UTF8.self)
            var hint = ""
            if status == 401 { hint = " (pass --token, set LIGHTNING_TOKEN, or run where \(ClientOptions.defaultTokenFile) is)" }
            throw CLIError(message: "Lightning answered \(status): \(message)\(hint)")
        }
        return json
    }
}
