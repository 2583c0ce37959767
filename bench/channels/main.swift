// Channel layer figures, printed, never asserted:
//  1. echo round trip p50/p99 through the Swift channel layer, next to raw libwebsockets in the same run (handlers
//     on the socket service thread, as Lightning's worker endpoint has them, and on the cooperative pool);
//  2. server pushes per second to one connection;
//  3. N joined idle connections held by one server, with server RSS per connection;
//  4. a broadcast to all of them, against a push per socket;
//  5. the echo round trip again while they are open.
// Run: swift run -c release bench-channels [round-trips] [pushes] [idle-connections]
import Channels
import Foundation

let args = CommandLine.arguments.dropFirst().compactMap { Int($0) }
let roundTrips = args.count > 0 ? args[0] : 5000
let pushCount = args.count > 1 ? args[1] : 200_000
let idleCount = args.count > 2 ? args[2] : 10_000
let here = URL(fileURLWithPath: #filePath).deletingLastPathComponent()

func rssKB() -> Int {
    let status = (try? String(contentsOfFile: "/proc/self/status", encoding: .utf8)) ?? ""
    let line = status.split(separator: "\n").first { $0.hasPrefix("VmRSS:") } ?? ""
    return Int(line.split(separator: " ").dropFirst().first ?? "0") ?? 0
}

func shell(_ path: String, _ arguments: [String]) -> (Int32, String) {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: path)
    p.arguments = arguments
    let out = Pipe()
    p.standardOutput = out
    do { try p.run() } catch { return (-1, "\(error)") }
    let text = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    p.waitUntilExit()
    return (p.terminationStatus, text)
}

struct Echo: ChannelHandler {
    func join(topic: String, payload: JSON, socket: ChannelSocket) async -> JoinResult { .ok([:]) }
    func handle(event: String, topic: String, payload: JSON, socket: ChannelSocket) async -> ChannelReply? {
        if event == "flood", let n = payload["count"]?.intValue {
            // Pushes batched several records per message, as the log protocol does (run:batch_logs).
            let batch = JSON.array(Array(repeating: ["level": "info", "message": ["line of output"]], count: 50))
            for _ in 0..<(Int(n) / 50) { socket.push(topic: topic, event: "batch", payload: ["logs": batch]) }
            return .ok()
        }
        return .ok(payload)
    }
}

// Raise the open-files limit for the idle-connection figure.
var limit = rlimit()
getrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit)
limit.rlim_cur = limit.rlim_max
setrlimit(__rlimit_resource_t(RLIMIT_NOFILE.rawValue), &limit)

var config = ChannelServerConfiguration()
config.port = 0
config.idleTimeoutSeconds = 600
config.maxQueuedBytesPerConnection = 512 * 1024 * 1024
let server = ChannelServer(
    configuration: config,
    // Handlers on the service thread, as Lightning's worker endpoint has them; and on the cooperative pool.
    endpoints: [SocketEndpoint(path: "/socket/websocket", authenticate: { _ in .accept(context: "bench") },
                               channels: [ChannelRoute("room:*", Echo())], handlesOnServiceThread: true),
                SocketEndpoint(path: "/pooled/websocket", authenticate: { _ in .accept(context: "bench") },
                               channels: [ChannelRoute("room:*", Echo())])])
try server.start()
let port = server.port

var clientConfig = ChannelClient.Configuration(url: "ws://127.0.0.1:\(port)/socket/websocket")
clientConfig.maxMessageBytes = 64 * 1024 * 1024
let client = try ChannelClient(configuration: clientConfig)
try client.connect()
while !client.connected { try await Task.sleep(for: .milliseconds(5)) }
let received = LockedCount()
try await client.join(topic: "room:bench", onMessage: { m in
    received.add((m.payload.json?["logs"]?.arrayValue?.count) ?? 0)
})

var pooledConfig = ChannelClient.Configuration(url: "ws://127.0.0.1:\(port)/pooled/websocket")
pooledConfig.maxMessageBytes = 64 * 1024 * 1024
let pooled = try ChannelClient(configuration: pooledConfig)
try pooled.connect()
while !pooled.connected { try await Task.sleep(for: .milliseconds(5)) }
try await pooled.join(topic: "room:pooled")

print("Channel benchmarks (loopback, release build)\n")
func micros(_ d: Duration) -> Double { Double(d.components.seconds) * 1e6 + Double(d.components.attoseconds) / 1e12 }
let payload: JSON = ["d": .string(String(repeating: "x", count: 32))]

/// `count` echo round trips on `topic`, each one's time in µs, sorted.
func echoes(_ client: ChannelClient, _ topic: String, _ count: Int) async throws -> [Double] {
    var samples: [Double] = []
    samples.reserveCapacity(count)
    for _ in 0..<count {
        let t = ContinuousClock.now
        _ = try await client.push(topic: topic, event: "echo", payload: payload)
        samples.append(micros(ContinuousClock.now - t))
    }
    return samples.sorted()
}

// 1. Round trips.
_ = try await echoes(client, "room:bench", 200)
let samples = try await echoes(client, "room:bench", roundTrips)
let p50 = samples[samples.count / 2], p99 = samples[samples.count * 99 / 100]
print(String(format: "echo round trip, Swift channels:   p50 %7.1f µs   p99 %7.1f µs   (%d round trips)", p50, p99, roundTrips))
let rawBinary = "/tmp/bench-raw-lws-echo"
let compiled = shell("/usr/bin/cc", ["-O2", "-o", rawBinary, here.appendingPathComponent("raw_lws_echo.c").path,
                                     "-lwebsockets", "-lpthread"])
if compiled.0 == 0 {
    let raw = shell(rawBinary, ["\(roundTrips)", "32"]).1.split(separator: " ").compactMap { Double($0) }
    if raw.count >= 2 {
        print(String(format: "echo round trip, raw libwebsockets: p50 %7.1f µs   p99 %7.1f µs   Swift/raw p50 = %.2f×",
                     raw[0], raw[1], p50 / raw[0]))
    }
    // The two runs above are seconds apart, and this machine's speed drifts by a third in that time. So: rounds of
    // 300 round trips each way, back to back, and the median of the rounds' ratios.
    // Handlers on the service thread and on the pool, each against raw lws in the same round.
    var ratios: [Double] = [], pooledRatios: [Double] = []
    for _ in 0..<15 {
        let ours = try await echoes(client, "room:bench", 300)
        let onPool = try await echoes(pooled, "room:pooled", 300)
        let theirs = shell(rawBinary, ["300", "32"]).1.split(separator: " ").compactMap { Double($0) }
        if let rawP50 = theirs.first, rawP50 > 0 {
            ratios.append(ours[ours.count / 2] / rawP50)
            pooledRatios.append(onPool[onPool.count / 2] / rawP50)
        }
    }
    if ratios.count >= 3 {
        ratios.sort()
        pooledRatios.sort()
        print(String(format: "  interleaved, %d rounds of 300 each way: Swift/raw p50 = %.2f× (quartiles %.2f-%.2f; aim ≤ 2×)",
                     ratios.count, ratios[ratios.count / 2], ratios[ratios.count / 4], ratios[ratios.count * 3 / 4]))
        print(String(format: "  the same with handlers on the cooperative pool:  Swift/raw p50 = %.2f× (quartiles %.2f-%.2f)",
                     pooledRatios[pooledRatios.count / 2], pooledRatios[pooledRatios.count / 4],
                     pooledRatios[pooledRatios.count * 3 / 4]))
    }
} else {
    print("raw libwebsockets baseline: could not compile \(here.appendingPathComponent("raw_lws_echo.c").path)")
}

// 2. Pushes per second to one connection.
let start = ContinuousClock.now
_ = try await client.push(topic: "room:bench", event: "flood", payload: ["count": .int(Int64(pushCount))], timeout: .seconds(120))
while received.value < pushCount / 50 * 50 { try await Task.sleep(for: .milliseconds(2)) }
let elapsed = ContinuousClock.now - start
let seconds = Double(elapsed.components.seconds) + Double(elapsed.components.attoseconds) / 1e18
print(String(format: "pushes to one connection: %.0f records/s (%d records in %.2f s, 50 per message)",
             Double(pushCount) / seconds, pushCount, seconds))
client.close()

// 3. Idle connections.
let before = rssKB()
let p = Process()
p.executableURL = URL(fileURLWithPath: "/usr/bin/env")
p.arguments = ["python3", here.appendingPathComponent("idle_clients.py").path, "\(port)", "\(idleCount)"]
let out = Pipe(), input = Pipe()
p.standardOutput = out
p.standardInput = input
try p.run()
var line = ""
while !line.contains("\n") {
    let d = out.fileHandleForReading.availableData
    if d.isEmpty { break }
    line += String(decoding: d, as: UTF8.self)
}
let joined = server.sockets(joinedTo: "room:idle").count
try await Task.sleep(for: .seconds(1))
let after = rssKB()

// 4. A broadcast to every idle connection (Lightning's work-available to its workers), against a push per socket
// (how broadcast was made before): the time on the caller's thread, and until the service thread has taken them.
var callerBroadcast: [Double] = [], callerPushes: [Double] = [], takenBroadcast: [Double] = [], takenPushes: [Double] = []
let idleSockets = server.sockets(joinedTo: "room:idle")
if joined > 0 {
    // 7 of each: the clients hold at most 16 unread messages before they stop reading (websockets' max_queue).
    for _ in 0..<7 {
        var t = ContinuousClock.now
        _ = server.broadcast(topic: "room:idle", event: "work-available", payload: [:])
        callerBroadcast.append(micros(ContinuousClock.now - t))
        await server.handedOver()
        takenBroadcast.append(micros(ContinuousClock.now - t))
        try await Task.sleep(for: .milliseconds(50))
        t = ContinuousClock.now
        for s in idleSockets { _ = s.push(topic: "room:idle", event: "work-available", payload: [:]) }
        callerPushes.append(micros(ContinuousClock.now - t))
        await server.handedOver()
        takenPushes.append(micros(ContinuousClock.now - t))
        try await Task.sleep(for: .milliseconds(50))
    }
}
func median(_ xs: [Double]) -> Double { xs.sorted()[xs.count / 2] }

// 5. Echo round trips again, with the idle connections still open: what each message costs the server per connection
// it holds.
var loadedSamples: [Double] = []
if joined > 0 {
    let second = try ChannelClient(configuration: clientConfig)
    try second.connect()
    while !second.connected { try await Task.sleep(for: .milliseconds(5)) }
    try await second.join(topic: "room:bench2")
    _ = try await echoes(second, "room:bench2", 200)
    loadedSamples = try await echoes(second, "room:bench2", roundTrips)
    second.close()
}
try input.fileHandleForWriting.close()
p.waitUntilExit()
if joined > 0 {
    print(String(format: "idle joined connections: %d held; server RSS %d KB -> %d KB: %.1f KB per connection",
                 joined, before, after, Double(after - before) / Double(joined)))
    print(String(format: "broadcast to them, median of %d: %.0f µs on the caller's thread, %.0f µs until the service thread took it; a push per socket (baseline, same run): %.0f µs, %.0f µs",
                 callerBroadcast.count, median(callerBroadcast), median(takenBroadcast), median(callerPushes), median(takenPushes)))
    print(String(format: "echo round trip with them open: p50 %.1f µs   p99 %.1f µs   (against %.1f µs with none: %.2f×)",
                 loadedSamples[loadedSamples.count / 2], loadedSamples[loadedSamples.count * 99 / 100], p50,
                 loadedSamples[loadedSamples.count / 2] / p50))
} else if idleCount == 0 {
    print("idle connections: skipped (none asked for)")
} else {
    print("idle connections: the client script failed (\(line.trimmingCharacters(in: .whitespacesAndNewlines)))")
}
server.stop()

final class LockedCount: @unchecked Sendable {
    private let lock = NSLock()
    private var n = 0
    func add(_ k: Int) { lock.withLock { n += k } }
    var value: Int { lock.withLock { n } }
}
