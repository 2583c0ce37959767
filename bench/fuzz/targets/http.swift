import Foundation
import Glibc
import Logging

// Fuzz target: HTTP requests as Lightning reads them. A real ChannelServer (libwebsockets, Sources/Channels) listens
// on loopback with routes and a socket endpoint shaped like Lightning's; each input is written as it is to a new
// TCP connection, which is then half-closed (after
// a moment for an answer to start), and the answer read to its end. Checked: the server never crashes
// (AddressSanitizer watches our side of every lws callback), every connection is answered or closed within the
// per-input timeout, an answer starts with an HTTP/1.1 status line, what the handlers receive is well formed (a path
// that starts with "/" and carries no query, no CR/LF/NUL in a header value, a body within the limit), and the
// server still answers a good request after every 64 inputs (after each one when replaying). An input may hold
// several requests: sent in one write, they are pipelined (two POSTs in one write froze the server once).

let bodyLimit = 64 * 1024
let verbose = ProcessInfo.processInfo.environment["FUZZ_VERBOSE"] != nil

func check(_ request: HTTPRequest) {
    if !request.path.hasPrefix("/") || request.path.contains("?") { fatalError("path \(request.path.debugDescription)") }
    for (name, value) in request.headers where value.contains(where: { $0 == "\r" || $0 == "\n" || $0 == "\0" }) {
        fatalError("header \(name) carries a line break or NUL: \(value.debugDescription)")
    }
    if request.body.count > bodyLimit { fatalError("a body of \(request.body.count) bytes passed the \(bodyLimit)-byte limit") }
    if !["GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "HEAD"].contains(request.method) {
        fatalError("method \(request.method.debugDescription)")
    }
}

struct Room: ChannelHandler {
    func join(topic: String, payload: JSON, socket: ChannelSocket) async -> JoinResult {
        payload["refuse"] == .bool(true) ? .error(["reason": "refused"]) : .ok(["topic": .string(topic)])
    }
    func handle(event: String, topic: String, payload: JSON, socket: ChannelSocket) async -> ChannelReply? {
        switch event {
        case "echo": return .ok(payload)
        case "push": socket.push(topic: topic, event: "pushed", payload: payload); return .ok()
        case "binary": return .binary(payload.encoded())
        default: return .error(reason: "unknown event")
        }
    }
    func leave(topic: String, socket: ChannelSocket) async {}
}

let server: ChannelServer = {
    LoggingSystem.bootstrap { _ in SwiftLogNoOpLogHandler() }
    var config = ChannelServerConfiguration()
    config.port = 0
    config.maxHTTPBodyBytes = bodyLimit
    config.maxMessageBytes = 64 * 1024
    let endpoint = SocketEndpoint(
        path: "/socket/websocket",
        authenticate: { request in
            if !request.path.hasPrefix("/") { fatalError("upgrade path \(request.path.debugDescription)") }
            return request.query["token"] == "good" ? .accept(context: "fuzz") : .reject(status: 401, message: "bad token")
        },
        channels: [ChannelRoute("room:*", Room())])
    let routes = [
        HTTPRoute("GET", "/healthz") { request in check(request); return .text(200, "ok") },
        HTTPRoute("POST", "/i/") { request in
            check(request)
            if (try? JSON.parse(request.body)) == nil { return .error(415, "not JSON") }
            return .json(201, ["bytes": .int(Int64(request.body.count))])
        },
        HTTPRoute(nil, "/api/") { request in
            check(request)
            return .json(200, ["path": .string(request.path), "query": .object(request.query.mapValues { .string($0) }),
                               "auth": .bool(request.headers["authorization"] != nil)])
        },
    ]
    let server = ChannelServer(configuration: config, endpoints: [endpoint], routes: routes)
    do { try server.start() } catch { fatalError("the server did not start: \(error)") }
    return server
}()

/// Writes `bytes` to a new connection, half-closes it and reads the answer to its end.
func exchange(_ bytes: UnsafeRawBufferPointer) -> [UInt8] {
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
    guard fd >= 0 else { fatalError("socket: errno \(errno)") }
    defer { close(fd) }
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = in_port_t(UInt16(server.port).bigEndian)
    address.sin_addr.s_addr = inet_addr("127.0.0.1")
    let connected = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
    }
    if connected != 0 {
        // Interrupted by a signal (libFuzzer's timer): the connection goes on by itself; wait until it is made.
        guard errno == EINTR || errno == EINPROGRESS else { fatalError("connect: errno \(errno)") }
        var out = pollfd(fd: fd, events: Int16(POLLOUT), revents: 0)
        while poll(&out, 1, 3000) < 0 && errno == EINTR {}
        var failure: Int32 = 0
        var size = socklen_t(MemoryLayout<Int32>.size)
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &failure, &size)
        guard failure == 0, out.revents & Int16(POLLOUT) != 0 else { fatalError("connect: errno \(failure)") }
    }
    // An input the server neither answers nor closes on within 3 s counts as unanswered (libwebsockets' own timeout
    // is 10 s, libFuzzer's per input too: waiting for the former would look like a hang to the latter).
    var timeout = timeval(tv_sec: 3, tv_usec: 0)
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
    var sent = 0
    while sent < bytes.count {
        let n = send(fd, bytes.baseAddress! + sent, bytes.count - sent, Int32(MSG_NOSIGNAL))
        if n <= 0 { break }  // the server may close before it has read everything: fine
        sent += n
    }
    // lws closes a connection when it reads the end of it, even with an answer on the way (a POST's handler runs
    // on a task): give the answer a moment to start before half-closing, so the fuzzer reaches the response paths.
    var ready = pollfd(fd: fd, events: Int16(POLLIN), revents: 0)
    _ = poll(&ready, 1, 20)
    shutdown(fd, Int32(SHUT_WR))
    var answer: [UInt8] = []
    var buffer = [UInt8](repeating: 0, count: 16 * 1024)
    while true {
        let n = recv(fd, &buffer, buffer.count, 0)
        if n <= 0 { break }  // end, or reset: both are a close
        if answer.count < 4096 { answer.append(contentsOf: buffer[0..<n]) }
    }
    return answer
}

/// The status of an HTTP/1.x answer. libwebsockets answers a request whose version it cannot read (say
/// "GET /healthz\xfe\xff\xffP/1.1") as HTTP/1.0, so both minor versions are answers.
func statusLine(_ answer: [UInt8]) -> Int? {
    guard answer.count >= 12, Array(answer[0..<7]) == Array("HTTP/1.".utf8), answer[7] == UInt8(ascii: "0") || answer[7] == UInt8(ascii: "1"),
          answer[8] == UInt8(ascii: " ") else { return nil }
    return Int(String(decoding: answer[9..<12], as: UTF8.self))
}

var inputs = 0
/// The health probe runs after every `probeEvery` inputs: every one when replaying the corpus and past failures
/// (`FUZZ_PROBE_EVERY=1`, set by `bench/fuzz/run --replay`), so an input that freezes the server fails where it is.
let probeEvery = Int(ProcessInfo.processInfo.environment["FUZZ_PROBE_EVERY"] ?? "") ?? 64
let probe = Array("GET /healthz HTTP/1.1\r\nHost: fuzz\r\nConnection: close\r\n\r\n".utf8)

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let answer = exchange(UnsafeRawBufferPointer(start: data, count: min(size, 256 * 1024)))
    if !answer.isEmpty, statusLine(answer) == nil {
        // After an upgrade the server speaks WebSocket; before it, only HTTP.
        fatalError("an answer that is not an HTTP/1.x status line: \(String(decoding: answer.prefix(80), as: UTF8.self).debugDescription)")
    }
    if verbose { print("answer: \(String(decoding: answer.prefix(200), as: UTF8.self).debugDescription)") }
    inputs += 1
    if probeEvery <= 1 || inputs % probeEvery == 1 {
        // Three tries of 3 s (within libFuzzer's 10 s per input): a fuzzer niced beside a build can go seconds without
        // a core (a false "stopped answering" once, 2026-12-07; its input answered 300 times in a row alone).
        var health: [UInt8] = []
        for _ in 0..<3 where statusLine(health) != 200 { health = probe.withUnsafeBytes { exchange($0) } }
        if statusLine(health) != 200 { fatalError("the server stopped answering: \(String(decoding: health.prefix(80), as: UTF8.self).debugDescription)") }
    }
    return 0
}
