import Channels
import Foundation
import Lightning
import Testing
import TestSupport

/// docs/deploying.md's nginx configuration (deploy/nginx/lightning.conf, this very file with its ports replaced) in
/// front of two replicas on one PostgreSQL database, with Debian's nginx.
@Suite("nginx in front of two replicas", .serialized)
struct LoadBalancerTests {
    /// nginx with the repository's configuration, listening on a port of its own, in front of `upstreams`.
    final class Nginx: @unchecked Sendable {
        let dir: URL
        private(set) var port = 0
        private(set) var process: ChildProcess!

        init(upstreams: [Int]) async throws {
            guard let nginx = TestSupport.which("nginx") ?? (FileManager.default.isExecutableFile(atPath: "/usr/sbin/nginx") ? "/usr/sbin/nginx" : nil)
            else { throw TestSupport.Failure("nginx is not installed (Debian: apt-get install nginx-light)") }
            dir = try TestSupport.temporaryDirectory("nginx")
            for sub in ["tmp", "logs"] {
                try FileManager.default.createDirectory(at: dir.appendingPathComponent(sub), withIntermediateDirectories: true)
            }
            let template = try String(contentsOf: TestSupport.packageRoot.appendingPathComponent("deploy/nginx/lightning.conf"), encoding: .utf8)
                .replacingOccurrences(of: "server 127.0.0.1:4001", with: "server 127.0.0.1:\(upstreams[0])")
                .replacingOccurrences(of: "server 127.0.0.1:4002", with: "server 127.0.0.1:\(upstreams[1])")
            let tmp = dir.appendingPathComponent("tmp").path
            try """
                daemon off;
                master_process off;
                pid \(dir.path)/nginx.pid;
                error_log \(dir.path)/logs/error.log info;
                events { worker_connections 1024; }
                http {
                    access_log off;
                    client_body_temp_path \(tmp)/body;
                    proxy_temp_path \(tmp)/proxy;
                    fastcgi_temp_path \(tmp)/fastcgi;
                    uwsgi_temp_path \(tmp)/uwsgi;
                    scgi_temp_path \(tmp)/scgi;
                    include \(dir.path)/lightning.conf;
                }
                """.write(to: dir.appendingPathComponent("nginx.conf"), atomically: true, encoding: .utf8)
            // A port the kernel picks, given to nginx (nginx cannot report one it was given as 0). Another process
            // may take it before nginx binds it: then nginx exits, and the next port is tried.
            for attempt in 1...5 {
                let port = Self.freePort()
                try template.replacingOccurrences(of: "listen 4000;", with: "listen 127.0.0.1:\(port);")
                    .write(to: dir.appendingPathComponent("lightning.conf"), atomically: true, encoding: .utf8)
                let check = try await TestSupport.run(nginx, ["-t", "-c", dir.appendingPathComponent("nginx.conf").path, "-p", dir.path])
                guard check.status == 0 else { throw TestSupport.Failure("nginx -t refused the configuration: \(check.stderr)") }
                let process = try ChildProcess(nginx, ["-c", dir.appendingPathComponent("nginx.conf").path, "-p", dir.path + "/"],
                                               directory: dir, logName: "nginx-\(attempt).out")
                // Up once it answers (a 502 is an answer: it is nginx speaking).
                let deadline = ContinuousClock.now + .seconds(30)
                var exited = false
                while try await TestSupport.run("curl", ["-s", "-o", "/dev/null", "http://127.0.0.1:\(port)/"]).status != 0 {
                    if await process.waitForExit(timeout: 0) != nil { exited = true; break }
                    if ContinuousClock.now > deadline { throw TestSupport.Failure("nginx did not start: \(process.log)") }
                    try await Task.sleep(for: .milliseconds(50))
                }
                if exited { continue }
                self.port = port
                self.process = process
                return
            }
            throw TestSupport.Failure("nginx could not bind a port in five tries")
        }

        static func freePort() -> Int {
            let s = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            defer { close(s) }
            var addr = sockaddr_in(sin_family: sa_family_t(AF_INET), sin_port: 0, sin_addr: in_addr(s_addr: inet_addr("127.0.0.1")), sin_zero: (0, 0, 0, 0, 0, 0, 0, 0))
            var len = socklen_t(MemoryLayout<sockaddr_in>.size)
            _ = withUnsafePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(s, $0, len) } }
            _ = withUnsafeMutablePointer(to: &addr) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(s, $0, &len) } }
            return Int(UInt16(bigEndian: addr.sin_port))
        }

        func stop() {
            process.stop()
            try? FileManager.default.removeItem(at: dir)
        }
    }

    /// POSTs to a webhook through nginx; returns the attempt id.
    static func post(_ port: Int, _ path: String) async throws -> String {
        let r = try await TestSupport.run("curl", ["-s", "-f", "-X", "POST", "-d", "{}", "http://127.0.0.1:\(port)/i/\(path)"])
        guard r.status == 0, let id = try? JSON.parse(r.stdout)["attempt_id"]?.stringValue else {
            throw TestSupport.Failure("the webhook through nginx failed: \(r)")
        }
        return id
    }

    @Test("a worker and an operator's tail through nginx; kill -9 of the replica behind the worker: it reconnects through nginx and the work goes on")
    func throughNginx() async throws {
        let url = try await PostgresServer.shared().newDatabase()
        let a = try await Binaries(database: url)
        let b = try await Binaries(database: url)
        defer { a.remove(); b.remove() }
        let lb = try await Nginx(upstreams: [a.port, b.port])
        defer { lb.stop() }
        try await a.apply("""
            name: hooked
            triggers: [{name: hook, type: webhook, path: hooked}]
            jobs:
              - {name: mark, adaptor: sh, body: "for i in 1 2 3; do echo ran $ATTEMPT_ID $i; done"}
            """)
        let worker = try a.worker("behind-nginx", url: "ws://127.0.0.1:\(lb.port)/worker")
        defer { worker.stop() }
        try await worker.waitForLog("connected to Lightning")
        let store = try a.store()
        var ids: [String] = []
        for _ in 0..<10 { ids.append(try await Self.post(lb.port, "hooked")) }
        // An operator's tail through nginx (the operator socket), of an attempt made through nginx.
        let tail = try ChildProcess(try TestSupport.builtBinary("lightning"),
                                    ["attempts", "tail", ids[0], "--json", "--server", "http://127.0.0.1:\(lb.port)"],
                                    environment: ["LIGHTNING_TOKEN_FILE": a.dir.appendingPathComponent("keys/operator_token").path],
                                    directory: a.dir, logName: "tail.log")
        defer { tail.stop() }
        #expect(await tail.waitForExit(timeout: 60) == 0, "\(tail.log.suffix(2000))")
        let printed = tail.log.split(separator: "\n").compactMap { try? JSON.parse(String($0)) }.compactMap { $0["message"]?.stringValue }
        #expect(printed == (1...3).map { "ran \(ids[0]) \($0)" })
        for id in ids { #expect(try await store.waitUntilFinal(id, timeout: .seconds(60)).state == .success, "\(worker.log)") }

        // Which replica nginx gave the worker to: that one goes.
        let onA = a.lightning.log.contains("worker.name=behind-nginx [Lightning] worker joined the queue")
        let behind = onA ? a : b
        behind.lightning.signal(SIGKILL)
        _ = await behind.lightning.waitForExit()
        // nginx passes over the dead replica (the connection is refused before anything is sent), and the worker
        // comes back through it to the other.
        var more: [String] = []
        for _ in 0..<10 { more.append(try await Self.post(lb.port, "hooked")) }
        for id in more {
            let done = try await store.waitUntilFinal(id, timeout: .seconds(60))
            #expect(done.state == .success, "\(done)\n\(worker.log)")
            #expect(try await store.logs(attemptID: id, since: 0, limit: 10).count == 3, "every line once")
        }
        #expect(worker.log.components(separatedBy: "connected to Lightning").count >= 3, "reconnected through nginx: \(worker.log)")
    }
}
