// Prints JWT throughput next to OpenSSL's own figures measured in the same run. Asserts nothing.
// Run: swift run -c release bench-jwt [seconds-per-figure]
import Foundation
import JWT

let seconds = Double(CommandLine.arguments.dropFirst().first ?? "") ?? 2

func rate(_ label: String, _ body: () throws -> Void) rethrows -> Double {
    var n = 0
    let start = Date()
    while Date().timeIntervalSince(start) < seconds {
        for _ in 0..<64 { try body() }
        n += 64
    }
    let r = Double(n) / Date().timeIntervalSince(start)
    print(label.padding(toLength: 32, withPad: " ", startingAt: 0) + String(format: "%12.0f /s", r))
    return r
}

/// Runs `openssl speed` with `args` and returns its standard output.
func opensslSpeed(_ args: [String]) -> String {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: "/usr/bin/openssl")
    p.arguments = ["speed", "-seconds", String(Int(max(1, seconds)))] + args
    let pipe = Pipe()
    p.standardOutput = pipe
    p.standardError = FileHandle.nullDevice
    guard (try? p.run()) != nil else { return "" }
    let out = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    p.waitUntilExit()
    return out
}

/// The numbers of the first output line starting with `prefix`.
func numbers(in out: String, line prefix: String) -> [Double] {
    guard let line = out.split(separator: "\n").first(where: { $0.hasPrefix(prefix) }) else { return [] }
    return line.split(whereSeparator: { $0 == " " || $0 == "\t" })
        .compactMap { Double($0.hasSuffix("k") ? $0.dropLast() : $0) }
}

struct Claims: Codable { var worker_id: String; var iss: String; var iat: Double; var exp: Double }

let keys = try WorkerKeySet.generate()
let hmacKey = try JWTKey.hmac(secret: keys.workerSecret)
let rsaPrivate = try JWTKey.rsa(pem: keys.keyPair.privateKeyPEM)
let rsaPublic = try JWTKey.rsa(pem: keys.keyPair.publicKeyPEM)
let claims = Claims(worker_id: "bench-worker", iss: "urn:openfn:worker", iat: 1.8e9, exp: 4e9)
let hsToken = try JWT.sign(claims, key: hmacKey)
let rsToken = try JWT.sign(claims, key: rsaPrivate)

print("JWT benchmark, one thread, \(seconds) s per figure")
let hsSign = try rate("HS256 sign") { _ = try JWT.sign(claims, key: hmacKey) }
let hsVerify = try rate("HS256 verify (+claims decode)") { _ = try JWT.verify(hsToken, key: hmacKey, as: Claims.self) }
let rsSign = try rate("RS256 sign") { _ = try JWT.sign(claims, key: rsaPrivate) }
let rsVerify = try rate("RS256 verify (+claims decode)") { _ = try JWT.verify(rsToken, key: rsaPublic, as: Claims.self) }

print("\nOpenSSL's own figures, same run (openssl speed):")
// "rsa 2048 bits 0.000281s 0.000019s   3561.0  53718.0": the last two numbers are sign/s and verify/s.
let rsa = numbers(in: opensslSpeed(["rsa2048"]), line: "rsa 2048 bits")
let opensslSign = rsa.count >= 3 ? rsa[rsa.count - 2] : nil
let opensslVerify = rsa.count >= 3 ? rsa[rsa.count - 1] : nil
// "hmac(sha256)  55907.75k 222737.47k 795716.86k ...": thousands of bytes/s for 16, 64, 256, ... byte inputs.
let hmac = numbers(in: opensslSpeed(["-hmac", "sha256"]), line: "hmac(sha256)")
let opensslHMAC = hmac.count >= 3 ? hmac[2] * 1000 / 256 : nil

func show(_ label: String, _ ours: Double, _ theirs: Double?) {
    guard let theirs else { print("\(label): openssl figure unavailable"); return }
    print(label.padding(toLength: 32, withPad: " ", startingAt: 0)
        + String(format: "%12.0f /s   ours/openssl = %.2f", theirs, ours / theirs))
}
show("openssl rsa2048 sign", rsSign, opensslSign)
show("openssl rsa2048 verify", rsVerify, opensslVerify)
show("openssl HMAC-SHA256 (256 B)", hsVerify, opensslHMAC)
