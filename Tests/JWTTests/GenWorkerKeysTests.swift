import Foundation
import Testing
import TestSupport

private let tool = TestSupport.packageRoot.appendingPathComponent("Tests/JWTTests/Interop/pyjwt_tool.py").path

@Suite("gen-worker-keys, the real binary")
struct GenWorkerKeysTests {
    @Test("--out writes keys Python's cryptography loads, a 32-byte secret, all mode 0600")
    func writesKeys() async throws {
        let dir = try TestSupport.temporaryDirectory("keys")
        defer { try? FileManager.default.removeItem(at: dir) }
        let out = dir.appendingPathComponent("keys").path
        let r = try await TestSupport.run(try TestSupport.builtBinary("gen-worker-keys"), ["--out", out])
        #expect(r.status == 0, "\(r.stderr)")
        for name in ["ATTEMPTS_PRIVATE_KEY=\"", "WORKER_SECRET=\"", "LIGHTNING_PUBLIC_KEY=\""] {
            #expect(r.stdout.contains(name))
        }
        // The printed values match the files.
        let secret = try String(contentsOfFile: out + "/worker_secret", encoding: .utf8)
            .trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(r.stdout.contains("WORKER_SECRET=\"\(secret)\""))
        let printedPublic = r.stdout.split(separator: "\n").first { $0.hasPrefix("LIGHTNING_PUBLIC_KEY=") }
            .map { String($0.dropFirst("LIGHTNING_PUBLIC_KEY=\"".count).dropLast()) }
        let pem = try String(contentsOfFile: out + "/attempts_public.pem", encoding: .utf8)
        #expect(printedPublic.flatMap { Data(base64Encoded: $0) }.map { String(decoding: $0, as: UTF8.self) } == pem)

        let check = try await TestSupport.python(tool, ["check-keys", out])
        #expect(check.status == 0, "\(check.stderr)")
        #expect(check.stdout.contains(#""bits": 2048"#))
        #expect(check.stdout.contains(#""secret_bytes": 32"#))
        #expect(check.stdout.contains(#"{"attempts_private.pem": "0o600", "attempts_public.pem": "0o600", "worker_secret": "0o600"}"#))
        var st = stat()
        #expect(stat(out, &st) == 0 && st.st_mode & 0o777 == 0o700)
    }

    @Test("existing files are not overwritten without --force, and are with it")
    func overwrite() async throws {
        let dir = try TestSupport.temporaryDirectory("keys")
        defer { try? FileManager.default.removeItem(at: dir) }
        let bin = try TestSupport.builtBinary("gen-worker-keys")
        #expect(try await TestSupport.run(bin, ["--out", dir.path]).status == 0)
        let before = try String(contentsOfFile: dir.path + "/worker_secret", encoding: .utf8)
        let refused = try await TestSupport.run(bin, ["--out", dir.path])
        #expect(refused.status != 0)
        #expect(refused.stderr.contains("refusing to overwrite"))
        #expect(try String(contentsOfFile: dir.path + "/worker_secret", encoding: .utf8) == before)
        let forced = try await TestSupport.run(bin, ["--out", dir.path, "--force"])
        #expect(forced.status == 0)
        #expect(try String(contentsOfFile: dir.path + "/worker_secret", encoding: .utf8) != before)
    }

    @Test("key sizes under 2048 bits and odd sizes are refused with a clear message; 3072 works")
    func bits() async throws {
        let bin = try TestSupport.builtBinary("gen-worker-keys")
        let weak = try await TestSupport.run(bin, ["--bits", "1024"])
        #expect(weak.status != 0)
        #expect(weak.stderr.contains("at least 2048 bits"))
        let odd = try await TestSupport.run(bin, ["--bits", "2500"])
        #expect(odd.status != 0)
        #expect(odd.stderr.contains("2048, 3072 or 4096"))
        let dir = try TestSupport.temporaryDirectory("keys")
        defer { try? FileManager.default.removeItem(at: dir) }
        #expect(try await TestSupport.run(bin, ["--bits", "3072", "--out", dir.path]).status == 0)
        let check = try await TestSupport.python(tool, ["check-keys", dir.path])
        #expect(check.stdout.contains(#""bits": 3072"#), "\(check.stderr)")
    }
}
