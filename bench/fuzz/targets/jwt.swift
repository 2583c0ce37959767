import Foundation

// Fuzz target: JWT parsing and verification (Sources/JWT), HS256 and RS256 with keys, as Lightning checks worker
// tokens and as both sides check attempt tokens. Never crashes; nothing the fuzzer makes verifies (it cannot sign,
// so a pass would be a forgery); and a token we sign around the input's text verifies and reads back the same.
let hmacKey = try! JWTKey.hmac(secret: "fuzzing-secret-of-32-bytes-or-so!")
let rsaPair = try! RSAKeyPair.generate(bits: 2048)
let rsaPrivate = try! JWTKey.rsa(pem: rsaPair.privateKeyPEM)
let rsaPublic = try! JWTKey.rsa(pem: rsaPair.publicKeyPEM)

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    let text = String(decoding: bytes, as: UTF8.self)
    // The claims reader: what it accepts, Foundation reads the same (it is only stricter), and the registered claims
    // are read from any object without trapping.
    if let value = ClaimJSON.parse(bytes) {
        guard let theirs = try? JSONSerialization.jsonObject(with: Data(bytes), options: .fragmentsAllowed) else {
            fatalError("accepted JSON that Foundation refuses: \(text.debugDescription)")
        }
        if !same(value, theirs) { fatalError("read differently from Foundation: \(value) against \(theirs)") }
        if case .object(let members) = value { _ = try? RegisteredClaims(members: members) }
        _ = try? ClaimsDecoder.decode(WorkerCredentialClaims.self, from: value)
    }
    if (try? WorkerTokenClaims.verify(text, key: hmacKey)) != nil { fatalError("an unsigned input verified as a worker token") }
    if (try? AttemptTokenClaims.verify(text, key: rsaPublic, attemptID: "a1")) != nil {
        fatalError("an unsigned input verified as an attempt token")
    }
    // Ours, around the input: always verifies, and says what was put in.
    let name = String(text.prefix(200))
    guard !name.isEmpty else { return 0 }
    do {
        let token = try JWT.sign(WorkerTokenClaims(workerID: name), key: hmacKey)
        let back = try WorkerTokenClaims.verify(token, key: hmacKey)
        if back.workerID != name { fatalError("the worker id changed on the way: \(back.workerID)") }
        // An RSA signature costs about 0.7 ms: one input in 16 takes the RS256 round trip.
        if data[0] & 15 == 0 {
            let attempt = try JWT.sign(AttemptTokenClaims(attemptID: name, lifetime: 60), key: rsaPrivate)
            if (try AttemptTokenClaims.verify(attempt, key: rsaPublic, attemptID: name)).id != name { fatalError("attempt id changed") }
        }
        // One flipped byte anywhere in a signed token: refused.
        var bytes = Array(token.utf8)
        let i = Int(data[0]) % bytes.count
        // (Not the last character of a part: its low bits may be base64 padding that decodes the same.)
        guard i + 1 < bytes.count, bytes[i + 1] != UInt8(ascii: ".") else { return 0 }
        bytes[i] = bytes[i] == UInt8(ascii: "A") ? UInt8(ascii: "B") : UInt8(ascii: "A")
        if let t = String(bytes: bytes, encoding: .utf8), t != token, (try? WorkerTokenClaims.verify(t, key: hmacKey)) != nil {
            fatalError("a changed token still verified: \(t)")
        }
    } catch {
        fatalError("our own token did not verify: \(error)")
    }
    return 0
}

func same(_ ours: ClaimJSON, _ theirs: Any) -> Bool {
    switch ours {
    case .null: return theirs is NSNull
    case .bool(let b): return (theirs as? Bool) == b
    case .number(let d, _):
        guard let n = (theirs as? NSNumber)?.doubleValue else { return false }
        return n == d || abs(n - d) <= abs(d) * 1e-12
    case .string(let s): return (theirs as? String) == s
    case .array(let a):
        guard let t = theirs as? [Any], t.count == a.count else { return false }
        return zip(a, t).allSatisfy { same($0, $1) }
    case .object(let o):
        guard let t = theirs as? [String: Any], t.count == o.count else { return false }
        return o.pairs.allSatisfy { pair in t[pair.name].map { same(pair.value, $0) } ?? false }
    }
}
