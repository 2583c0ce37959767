import Foundation
import Testing
import TestSupport
@testable import Channels

/// Certificates made with the openssl CLI for one test: a CA, a server cert for 127.0.0.1, a client cert
/// signed by the CA, and a self-signed rogue client cert.
struct TestPKI {
    let dir: URL
    func path(_ name: String) -> String { dir.appendingPathComponent(name).path }

    /// Made by `openssl` on a thread of its own (about a second of RSA key generation): not on one of the few
    /// cooperative threads every test's tasks share.
    static func make() async throws -> TestPKI {
        let pki = TestPKI(dir: try TestSupport.temporaryDirectory("pki"))
        let dir = pki.dir
        let script = """
            set -e
            cd '\(dir.path)'
            openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=test-ca 2>/dev/null
            openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj /CN=127.0.0.1 2>/dev/null
            printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\\n' > san.ext
            openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 2 -extfile san.ext 2>/dev/null
            openssl req -newkey rsa:2048 -nodes -keyout client.key -out client.csr -subj /CN=worker-7 2>/dev/null
            openssl x509 -req -in client.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out client.pem -days 2 2>/dev/null
            openssl req -x509 -newkey rsa:2048 -nodes -keyout rogue.key -out rogue.pem -days 2 -subj /CN=worker-7 2>/dev/null
            """
        let r: TestSupport.ProcessResult = try await TestSupport.run("/bin/sh", ["-c", script])
        guard r.status == 0 else { throw TestSupport.Failure("openssl failed: \(r.stderr)") }
        return pki
    }

    func remove() { try? FileManager.default.removeItem(at: dir) }

    /// `openssl s_client` against the server; true when the handshake completed.
    func handshake(port: Int, extra: [String]) async throws -> Bool {
        let r: TestSupport.ProcessResult = try await TestSupport.run("/usr/bin/openssl",
                                    ["s_client", "-connect", "127.0.0.1:\(port)", "-CAfile", path("ca.pem"),
                                     "-verify_return_error", "-brief"] + extra, input: "")
        return r.status == 0 && r.stderr.contains("CONNECTION ESTABLISHED")
    }
}

final class SubjectBox: @unchecked Sendable {
    private let lock = NSLock()
    private var value: String?
    func set(_ v: String?) { lock.withLock { value = v } }
    var subject: String? { lock.withLock { value } }
}

func tlsServer(_ pki: TestPKI, mutual: Bool, seen: SubjectBox = SubjectBox()) throws -> ChannelServer {
    var config = ChannelServerConfiguration()
    config.port = 0
    config.tls = TLSConfiguration(certificatePath: pki.path("server.pem"), privateKeyPath: pki.path("server.key"),
                                  caPath: mutual ? pki.path("ca.pem") : nil, requireClientCertificate: mutual)
    let endpoint = SocketEndpoint(
        path: "/socket/websocket",
        authenticate: { req in
            seen.set(req.peerCertificateSubject)
            return .accept(context: req.peerCertificateSubject ?? "anonymous")
        },
        channels: [ChannelRoute("room:*", EchoHandler())])
    let server = ChannelServer(configuration: config, endpoints: [endpoint])
    try server.start()
    return server
}

@Suite("TLS", .serialized)
struct TLSTests {
    @Test("wss: a client that trusts the CA joins and gets replies")
    func wss() async throws {
        let pki = try await TestPKI.make()
        defer { pki.remove() }
        let server = try tlsServer(pki, mutual: false)
        defer { server.stop() }
        var config = ChannelClient.Configuration(url: "wss://127.0.0.1:\(server.port)/socket/websocket")
        config.caPath = pki.path("ca.pem")
        let client = try ChannelClient(configuration: config)
        try client.connect()
        defer { client.close() }
        try await waitFor("TLS connection") { client.connected }
        try await client.join(topic: "room:tls")
        let r = try await client.push(topic: "room:tls", event: "echo", payload: ["secure": true])
        #expect(r.response["secure"] == true)
    }

    @Test("only TLS 1.2+ with ECDHE and AEAD ciphers is offered")
    func cipherPolicy() async throws {
        let pki = try await TestPKI.make()
        defer { pki.remove() }
        let server = try tlsServer(pki, mutual: false)
        defer { server.stop() }
        #expect(try await pki.handshake(port: server.port, extra: ["-tls1_2", "-cipher", "ECDHE-RSA-AES128-GCM-SHA256"]))
        #expect(try await pki.handshake(port: server.port, extra: ["-tls1_3"]))
        #expect(try await !pki.handshake(port: server.port, extra: ["-tls1_2", "-cipher", "AES128-GCM-SHA256"]),
                "RSA key exchange must be refused")
        #expect(try await !pki.handshake(port: server.port, extra: ["-tls1_2", "-cipher", "ECDHE-RSA-AES128-SHA"]),
                "CBC suites must be refused")
    }

    @Test("mutual TLS: the CA-signed client certificate is accepted and its subject reaches the auth hook")
    func mutualTLS() async throws {
        let pki = try await TestPKI.make()
        defer { pki.remove() }
        let seen = SubjectBox()
        let server = try tlsServer(pki, mutual: true, seen: seen)
        defer { server.stop() }
        var config = ChannelClient.Configuration(url: "wss://127.0.0.1:\(server.port)/socket/websocket")
        config.caPath = pki.path("ca.pem")
        config.certificatePath = pki.path("client.pem")
        config.privateKeyPath = pki.path("client.key")
        let client = try ChannelClient(configuration: config)
        try client.connect()
        defer { client.close() }
        try await waitFor("mutual TLS connection") { client.connected }
        #expect(seen.subject == "worker-7")
    }

    @Test("mutual TLS: a self-signed rogue client certificate, and no certificate, are refused")
    func rogueCertificate() async throws {
        let pki = try await TestPKI.make()
        defer { pki.remove() }
        let seen = SubjectBox()
        let server = try tlsServer(pki, mutual: true, seen: seen)
        defer { server.stop() }
        // TLS 1.2, where a refused client certificate fails the handshake itself.
        func attempt(_ extra: [String]) async throws -> Bool { try await pki.handshake(port: server.port, extra: ["-tls1_2"] + extra) }
        #expect(try await attempt(["-cert", pki.path("client.pem"), "-key", pki.path("client.key")]))
        #expect(try await !attempt(["-cert", pki.path("rogue.pem"), "-key", pki.path("rogue.key")]), "rogue certificate accepted")
        #expect(try await !attempt([]), "a client without a certificate was accepted")
        #expect(seen.subject == nil, "the auth hook never saw a refused client")
    }
}
