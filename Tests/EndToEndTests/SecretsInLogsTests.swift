import Foundation
import JWT
import Testing
import TestSupport

/// Issue 15: no secret in any log line at any level. The real binaries at `--log-level debug` (and trace) run an
/// attempt that uses a credential and prints it, the CLI watches, a worker with a wrong secret is refused, and
/// then every log and every CLI output is searched for each secret.
@Suite("No secret in any log", .serialized)
struct SecretsInLogsTests {
    @Test("worker secret, attempt key, operator token, credential values, encryption key, tokens: in no log at debug or trace")
    func noSecretLogged() async throws {
        let encryptionKey = Data(try secureRandomBytes(32)).base64EncodedString()
        let b = try await Binaries(extra: ["--log-level", "trace"],
                                   environment: ["LIGHTNING_ENCRYPTION_KEY": encryptionKey])
        defer { b.remove() }
        let worker = try b.worker("sly", extra: ["--log-level", "debug"])
        defer { worker.stop() }
        _ = try await b.lightning.waitForLog(#"worker\.name=sly.*worker joined the queue"#)

        let password = "pw-\(UUID().uuidString)"
        let apiKey = "key-\(UUID().uuidString.prefix(12))"
        let set = try await b.cli(["credentials", "set", "vault", "--body", #"{"user":"ada","password":"\#(password)","api":{"key":"\#(apiKey)"}}"#])
        #expect(set.status == 0, "\(set)")
        try await b.apply("""
            name: leaky
            triggers: [{name: hook, type: webhook, path: leaky}]
            jobs:
              - name: spill
                adaptor: sh
                credential: vault
                body: |
                  cat "$STATE_PATH"; echo
                  echo "the password is $(sed 's/.*"password":"\\([^"]*\\)".*/\\1/' "$STATE_PATH")" >&2
                  echo '{"out":"done"}' > "$OUTPUT_PATH"
            """)
        let run = try await b.cli(["attempts", "start", "leaky", "--follow"])
        #expect(run.status == 0, "\(run)")
        #expect(run.stdout.contains("the password is") || run.stderr.contains("the password is"), "the step ran and printed: \(run)")
        let listing = try await b.cli(["attempts", "list", "--json"])
        let logs = try await b.cli(["attempts", "list", "--grep", "password"])

        // A worker with a wrong secret: refused, and neither secret is logged on either side.
        let wrongSecret = Data(try secureRandomBytes(32)).base64EncodedString()
        let intruder = try ChildProcess(try TestSupport.builtBinary("runtime-worker"),
                                        ["--lightning", "ws://127.0.0.1:\(b.port)/worker", "--name", "intruder", "--work-dir",
                                         b.dir.appendingPathComponent("work-intruder").path, "--log-level", "trace"],
                                        environment: ["WORKER_SECRET": wrongSecret], directory: b.dir, logName: "intruder.log")
        _ = await intruder.waitForExit()

        let operatorToken = try String(contentsOfFile: b.dir.appendingPathComponent("keys/operator_token").path, encoding: .utf8)
            .trimmingCharacters(in: .whitespacesAndNewlines)
        // A run of the private key's base64 body, not its header (which is the same for every key).
        let pemBody = b.keys.keyPair.privateKeyPEM.split(separator: "\n").filter { !$0.hasPrefix("-----") }.joined()
        let secrets: [(String, String)] = [
            ("worker secret", b.keys.workerSecret), ("wrong worker secret", wrongSecret),
            ("attempt key", String(pemBody.dropFirst(40).prefix(48))), ("operator token", operatorToken),
            ("operator token secret part", String(operatorToken.suffix(20))),
            ("credential password", password), ("credential nested key", apiKey), ("encryption key", encryptionKey),
        ]
        var texts: [(String, String)] = []
        for name in (try FileManager.default.contentsOfDirectory(atPath: b.dir.path)) where name.hasSuffix(".log") {
            texts.append((name, try String(contentsOfFile: b.dir.appendingPathComponent(name).path, encoding: .utf8)))
        }
        for (label, r) in [("cli run", run), ("cli list", listing), ("cli grep", logs)] {
            texts.append((label + " stdout", r.stdout))
            texts.append((label + " stderr", r.stderr))
        }
        #expect(texts.count >= 6)
        #expect(texts.first { $0.0 == "lightning.log" }?.1.contains("worker event") == true, "Lightning logged at debug level")
        #expect(texts.first { $0.0 == "sly.log" }?.1.contains("starting step") == true, "the worker logged at debug level")
        for (source, text) in texts {
            for (what, secret) in secrets where !secret.isEmpty {
                #expect(!text.contains(secret), "the \(what) is in \(source)")
            }
            // No JWT (worker or attempt token) either: their three base64url parts start with eyJ.
            #expect(text.range(of: #"eyJ[A-Za-z0-9_-]{10,}\.eyJ"#, options: .regularExpression) == nil, "a token is in \(source)")
        }
    }
}
