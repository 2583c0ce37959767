import Channels
import Foundation
import LightningProtocol
import Logging

/// `attempts tail`: the backlog, then live lines, until the attempt is final and every line is printed.
/// Survives disconnects: it rejoins with `since` = the last seq printed, so nothing is missed or repeated.
final class LogTail: @unchecked Sendable {
    let client: APIClient
    let attemptID: String
    let json: Bool
    let color: Bool
    private let lock = NSLock()
    private var lastSeq: Int64
    /// Lines that arrived ahead of a missing one. The join reply (its backlog) and live pushes reach us on
    /// different threads, so after a reconnect they can interleave: lines are printed strictly by seq.
    private var ahead: [Int64: JSON] = [:]
    private var final: JSON?
    private var finalLastSeq: Int64 = .max
    private var done: CheckedContinuation<Int32, Never>?
    private var result: Int32?

    init(client: APIClient, attemptID: String, since: Int64, json: Bool, color: Bool) {
        self.client = client
        self.attemptID = attemptID
        self.lastSeq = since
        self.json = json
        self.color = color
    }

    static func wantsColor(noColor: Bool) -> Bool {
        !noColor && isatty(STDOUT_FILENO) == 1 && ProcessInfo.processInfo.environment["NO_COLOR"] == nil
    }

    /// Returns the exit status: 0 when the attempt succeeded.
    func run() async throws -> Int32 {
        var configuration = ChannelClient.Configuration(url: client.socketURL) { [client] in
            ["token": client.token, "vsn": "2.0.0"]
        }
        configuration.reconnectCap = .seconds(5)
        var quiet = Logger(label: "lightning.tail")
        quiet.logLevel = .critical
        let socket = try ChannelClient(configuration: configuration, logger: quiet)
        try socket.connect()
        defer { socket.close() }
        let topic = "attempt:" + attemptID
        let events = Task { [self] in
            var joined = false
            for await event in socket.events {
                switch event {
                case .connected:
                    if !joined {
                        joined = true
                        Task { await self.join(socket, topic) }
                    }
                case .disconnected(let reason):
                    if result == nil { note("connection lost (\(reason)); reconnecting") }
                case .authenticationFailed(let status):
                    note("Lightning refused the operator token (HTTP \(status))")
                    finish(1)
                case .rejoined(_, let response):
                    joinReply(response)
                case .rejoinFailed(_, let response):
                    note("could not rejoin: \(response.text)")
                    finish(1)
                }
            }
        }
        defer { events.cancel() }
        // Live into a pipe too: buffered output is flushed every 50 ms (a flush per line would cost more than
        // the printing).
        let flusher = Task {
            while !Task.isCancelled {
                try? await Task.sleep(for: .milliseconds(50))
                fflush(nil)
            }
        }
        defer { flusher.cancel() }
        return await withCheckedContinuation { c in
            let early: Int32? = lock.withLock {
                if let result { return result }
                done = c
                return nil
            }
            if let early { c.resume(returning: early) }
        }
    }

    private func join(_ socket: ChannelClient, _ topic: String) async {
        do {
            // batch: lines come as `logs` pushes of many lines (one frame each), not a `log` push per line.
            let reply = try await socket.join(topic: topic, payload: { [self] in ["since": .int(lock.withLock { lastSeq }), "batch": true] }) {
                [self] message in self.message(message)
            }
            joinReply(reply)
        } catch ChannelError.joinRefused(let response) {
            let reason = response["reason"]?.stringValue ?? response.text
            note(reason == "not_found" ? "no attempt \(attemptID)" : "could not watch the attempt: \(reason)")
            finish(1)
        } catch {
            note("could not join: \(error)")
            finish(1)
        }
    }

    private func joinReply(_ reply: JSON) {
        for line in reply["logs"]?.arrayValue ?? [] { log(line) }
        if let attempt = reply["attempt"], attempt["final"] == .bool(true) {
            complete(attempt)
        }
    }

    private func message(_ m: PhoenixMessage) {
        guard case .json(let payload) = m.payload else { return }
        switch m.event {
        case "log": log(payload)
        case "logs": for line in payload["lines"]?.arrayValue ?? [] { log(line) }
        case "attempt:complete": complete(payload)
        case "step:start":
            if json { emit(["event": "step:start", "step": payload]) } else {
                info("step \(payload["job_name"]?.stringValue ?? payload["job_id"]?.stringValue ?? "") started")
            }
        case "step:complete":
            if json { emit(["event": "step:complete", "step": payload]) } else {
                let reason = payload["reason"]?.stringValue ?? "?"
                let error = payload["error_type"]?.stringValue.map { " (\($0))" } ?? ""
                info("step \(payload["job_name"]?.stringValue ?? payload["job_id"]?.stringValue ?? "") finished: \(reason)\(error)")
            }
        case "phx_error", "phx_close": note("the server closed the channel; rejoining")
        default: break
        }
    }

    private func log(_ line: JSON) {
        guard let seq = line["seq"]?.intValue else { return }
        lock.withLock {
            guard seq > lastSeq else { return }  // already printed (a resend after a reconnect)
            ahead[seq] = line
            // Printed under the lock, in seq order, each once.
            while let next = ahead.removeValue(forKey: lastSeq + 1) {
                lastSeq += 1
                if json { emit(next) } else { print(format(next)) }
            }
        }
        checkDone()
    }

    private func complete(_ attempt: JSON) {
        lock.withLock {
            final = attempt
            finalLastSeq = attempt["last_seq"]?.intValue ?? 0
        }
        checkDone()
    }

    private func checkDone() {
        let attempt: JSON? = lock.withLock {
            guard let final, lastSeq >= finalLastSeq, result == nil else { return nil }
            return final
        }
        guard let attempt else { return }
        let state = attempt["state"]?.stringValue ?? "?"
        if json {
            emit(["event": "attempt:complete", "attempt": attempt])
        } else {
            let detail = [attempt["error_type"]?.stringValue, attempt["error_message"]?.stringValue].compactMap { $0 }.joined(separator: ": ")
            let text = "attempt \(attemptID) \(state)" + (detail.isEmpty ? "" : " — \(detail)")
            FileHandle.standardError.write(Data((paint(text, state == "success" ? "32;1" : "31;1") + "\n").utf8))
        }
        finish(state == "success" ? 0 : 1)
    }

    private func finish(_ code: Int32) {
        fflush(nil)
        let waiter: CheckedContinuation<Int32, Never>? = lock.withLock {
            guard result == nil else { return nil }
            result = code
            defer { done = nil }
            return done
        }
        waiter?.resume(returning: code)
    }

    func format(_ line: JSON) -> String {
        let micros = Int64(line["timestamp"]?.stringValue ?? "") ?? 0
        let date = Date(timeIntervalSince1970: Double(micros) / 1e6)
        var t = time_t(date.timeIntervalSince1970)
        var parts = tm()
        gmtime_r(&t, &parts)
        let millis = (micros / 1000) % 1000
        let time = String(format: "%02d:%02d:%02d.%03d", parts.tm_hour, parts.tm_min, parts.tm_sec, Int(millis))
        let level = line["level"]?.stringValue ?? "info"
        let source = line["source"]?.stringValue ?? ""
        // Stored messages carry only colour sequences (LogText.clean); drawn on a colour terminal, then reset.
        let raw = line["message"]?.stringValue ?? ""
        let message = color ? (raw.utf8.contains(0x1B) ? raw + "\u{1B}[0m" : raw) : LogText.withoutColour(raw)
        let levelCode: String = switch level {
            case "error": "31"
            case "warn": "33"
            case "success": "32"
            case "debug": "2"
            default: "36"
        }
        let levelText = level.uppercased().padding(toLength: 7, withPad: " ", startingAt: 0)
        let sourceText = source.padding(toLength: 4, withPad: " ", startingAt: 0)
        return "\(paint(time, "2")) \(paint(levelText, levelCode)) \(paint(sourceText, "35")) \(message)"
    }

    private func paint(_ text: String, _ code: String) -> String { color ? "\u{1B}[\(code)m\(text)\u{1B}[0m" : text }
    private func info(_ text: String) { FileHandle.standardError.write(Data((paint("── " + text, "2") + "\n").utf8)) }
    private func note(_ text: String) { FileHandle.standardError.write(Data("lightning: \(text)\n".utf8)) }
    private func emit(_ value: JSON) { print(String(decoding: value.encoded(), as: UTF8.self)) }
}
