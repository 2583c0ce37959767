// Prints JWT throughput next to OpenSSL's own figures measured in the same run. Asserts nothing.
// Run: swift run -c release bench-jwt [seconds-per-figure]
import COpenSSL
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

// `openssl speed` runs after our figures, and this machine's speed moves by a third from one second to the next, so
// the ratios above are rough. These pairs are not: short blocks of ours and of the same operation done straight
// with OpenSSL (what `openssl speed` times: a context set up once, the SHA-256 digest signed or verified) take
// turns, and each pair gives a ratio; the median of those is printed.
print("\nInterleaved with OpenSSL called directly, \(seconds) s each (median of pairs of 32-operation blocks):")

func paired(_ label: String, ours: () throws -> Void, theirs: () -> Void) rethrows {
    var ratios: [Double] = []
    let start = Date()
    while Date().timeIntervalSince(start) < seconds {
        let t0 = DispatchTime.now().uptimeNanoseconds
        for _ in 0..<32 { try ours() }
        let t1 = DispatchTime.now().uptimeNanoseconds
        for _ in 0..<32 { theirs() }
        let t2 = DispatchTime.now().uptimeNanoseconds
        ratios.append(Double(t2 - t1) / Double(t1 - t0))
    }
    ratios.sort()
    let q = { (p: Double) in ratios[min(ratios.count - 1, Int(p * Double(ratios.count)))] }
    print(label.padding(toLength: 32, withPad: " ", startingAt: 0)
        + String(format: "ours/openssl = %.2f (quartiles %.2f-%.2f, %d pairs)", q(0.5), q(0.25), q(0.75), ratios.count))
}

/// OpenSSL's RSA on a SHA-256 digest with a context set up once, as `openssl speed rsa2048` does.
func rawRSA(pem: String, sign: Bool) -> OpaquePointer {
    let bytes = Array(pem.utf8)
    let key = bytes.withUnsafeBufferPointer { buffer -> OpaquePointer in
        let bio = BIO_new_mem_buf(buffer.baseAddress, Int32(buffer.count))!
        defer { BIO_free(bio) }
        return (sign ? PEM_read_bio_PrivateKey(bio, nil, nil, nil) : PEM_read_bio_PUBKEY(bio, nil, nil, nil))!
    }
    let ctx = EVP_PKEY_CTX_new(key, nil)!
    precondition((sign ? EVP_PKEY_sign_init(ctx) : EVP_PKEY_verify_init(ctx)) == 1)
    precondition(EVP_PKEY_CTX_set_signature_md(ctx, EVP_sha256()) == 1)
    return ctx
}

let digest = [UInt8](repeating: 7, count: 32)
let signCtx = rawRSA(pem: keys.keyPair.privateKeyPEM, sign: true)
let verifyCtx = rawRSA(pem: keys.keyPair.publicKeyPEM, sign: false)
var rawSignature = [UInt8](repeating: 0, count: 256)
var rawLength = rawSignature.count
precondition(EVP_PKEY_sign(signCtx, &rawSignature, &rawLength, digest, digest.count) == 1)

try paired("RS256 sign", ours: { _ = try JWT.sign(claims, key: rsaPrivate) }) {
    var length = rawSignature.count
    var out = [UInt8](repeating: 0, count: length)
    precondition(EVP_PKEY_sign(signCtx, &out, &length, digest, digest.count) == 1)
}
try paired("RS256 verify (+claims decode)", ours: { _ = try JWT.verify(rsToken, key: rsaPublic, as: Claims.self) }) {
    precondition(EVP_PKEY_verify(verifyCtx, rawSignature, rawLength, digest, digest.count) == 1)
}
