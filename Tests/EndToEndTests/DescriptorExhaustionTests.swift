import Foundation
import Lightning
import Testing
import TestSupport

/// File descriptors exhausted (docs/security.md): `lightning serve` under a low open-files limit, flooded with
/// sockets that stay open, refuses the ones it has no room for at once, keeps serving the ones it has, and takes new
/// ones again once the flood is gone. Before, libwebsockets retried the failing `accept` in a loop that took a core
/// and logged "accept: errno 24" a few hundred thousand times a second.
@Suite("File descriptors exhausted", .serialized)
struct DescriptorExhaustionTests {
    /// Opens operator sockets (they stay open: no header or keepalive timeout cuts them) until the server has refused
    /// ten, checks that a new HTTP request is refused too, says FLOODED, and holds them until `release` exists; then
    /// closes them and waits for `/healthz` to answer on a new connection.
    static let flood = """
        import base64, http.client, os, socket, sys, time
        port, token, release = int(sys.argv[1]), sys.argv[2], sys.argv[3]
        def upgrade():
            s = socket.create_connection(("127.0.0.1", port), timeout=30)
            key = base64.b64encode(os.urandom(16)).decode()
            s.sendall(("GET /socket/websocket?token=%s&vsn=2.0.0 HTTP/1.1\\r\\nHost: 127.0.0.1\\r\\nUpgrade: websocket\\r\\n"
                       "Connection: Upgrade\\r\\nSec-WebSocket-Key: %s\\r\\nSec-WebSocket-Version: 13\\r\\n\\r\\n" % (token, key)).encode())
            head = b""
            try:
                while b"\\r\\n\\r\\n" not in head:
                    chunk = s.recv(1)
                    if not chunk:
                        break
                    head += chunk
            except ConnectionResetError:
                head = b""
            if b" 101 " in head.split(b"\\r\\n")[0]:
                return s
            if head:
                sys.exit("unexpected answer: %r" % head[:200])
            s.close()
            return None
        held, refused = [], 0
        while refused < 10 and len(held) < 2000:
            s = upgrade()
            if s is None:
                refused += 1
            else:
                held.append(s)
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
            c.request("GET", "/healthz")
            during = "answered %d" % c.getresponse().status
        except (ConnectionError, http.client.RemoteDisconnected) as e:
            during = "refused"
        print("FLOODED held=%d refused=%d new-request=%s" % (len(held), refused, during), flush=True)
        while not os.path.exists(release):
            time.sleep(0.05)
        for s in held:
            s.close()
        deadline = time.time() + 60
        while True:
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                c.request("GET", "/healthz")
                print("RECOVERED %d" % c.getresponse().status, flush=True)
                break
            except (ConnectionError, http.client.RemoteDisconnected):
                if time.time() > deadline:
                    print("NOT RECOVERED", flush=True)
                    break
                time.sleep(0.1)
        """

    @Test("under a low open-files limit a flood of sockets is refused at once; the worker's socket and the rest go on; new ones are taken again afterwards")
    func flooded() async throws {
        let b = try await Binaries(launcher: ["/usr/bin/prlimit", "--nofile=160:160", "--"])
        defer { b.remove() }
        let store = try b.store()
        _ = try await store.applyWorkflow(try WorkflowDefinition.parse("""
            name: during
            jobs: [{name: a, adaptor: sh, body: "echo still served"}]
            """))
        let worker = try b.worker("fd-worker")
        defer { worker.stop() }
        try await worker.waitForLog("connected to Lightning")
        try await b.lightning.waitForLog("worker joined the queue")

        let token = try b.operatorToken()
        let script = b.dir.appendingPathComponent("flood.py")
        try Self.flood.write(to: script, atomically: true, encoding: .utf8)
        let release = b.dir.appendingPathComponent("release").path
        let flood = try ChildProcess("/usr/bin/python3", [script.path, "\(b.port)", token, release], directory: b.dir, logName: "flood.log")
        defer { flood.stop() }
        let line = try await flood.waitForLog(#"FLOODED held=\d+ refused=\d+ new-request=\w+"#, timeout: 120)
        #expect(line.hasSuffix("new-request=refused"), "\(line)")
        let held = Int(line.split(separator: " ")[1].dropFirst("held=".count)) ?? 0
        #expect(held > 20, "the server took sockets until its reserve: \(line)")

        // While it refuses new sockets, the worker's socket (open before) is served: an attempt runs start to end.
        let created = try await store.createWorkOrder(workflow: "during", input: Array("{}".utf8))
        let done = try await store.waitUntilFinal(created.attemptID)
        #expect(done.state == .success, "\(done)")

        FileManager.default.createFile(atPath: release, contents: nil)
        try await flood.waitForLog("RECOVERED 200|NOT RECOVERED", timeout: 120)
        #expect(flood.log.contains("RECOVERED 200"), "\(flood.log)")
        #expect(b.lightning.log.contains("refusing new connections: file descriptors nearly exhausted"), "\(b.lightning.log)")
        let metrics = try await TestSupport.run("/usr/bin/curl", ["-s", "http://127.0.0.1:\(b.port)/metrics"]).stdout
        let refused = metrics.split(separator: "\n").first { $0.hasPrefix("lightning_connections_refused_no_descriptors ") }
        #expect((refused?.split(separator: " ").last.flatMap { Double($0) } ?? 0) >= 10, "\(String(describing: refused))")
        #expect(!b.lightning.log.contains("errno 24"), "accept never failed for want of a descriptor")
        // The warning is logged at most every 10 s, not once per refused socket.
        #expect(b.lightning.log.components(separatedBy: "refusing new connections").count - 1 <= 3)
    }
}
