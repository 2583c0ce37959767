import Foundation
internal import COpenSSL

/// The signing algorithms this module implements. A key has exactly one; a token's header must name it.
public enum JWTAlgorithm: String, Sendable {
    /// HMAC with SHA-256.
    case hs256 = "HS256"
    /// RSASSA-PKCS1-v1_5 with SHA-256.
    case rs256 = "RS256"
}

/// A key for one algorithm. The algorithm a token is checked with always comes from here, never from the
/// token's header, so a token cannot choose how it is verified.
public struct JWTKey: Sendable {
    enum Material: Sendable {
        case hmac([UInt8])
        case rsa(PKey, isPrivate: Bool)
    }

    let material: Material

    /// Base64url header segments accepted without parsing: exactly what we and common libraries emit.
    let knownGoodHeaders: [[UInt8]]

    init(material: Material) {
        self.material = material
        let alg: String
        switch material {
        case .hmac: alg = "HS256"
        case .rsa: alg = "RS256"
        }
        knownGoodHeaders = [
            #"{"alg":"\#(alg)","typ":"JWT"}"#, #"{"typ":"JWT","alg":"\#(alg)"}"#, #"{"alg":"\#(alg)"}"#,
        ].map { Array(Base64URL.encode(Array($0.utf8)).utf8) }
    }

    public var algorithm: JWTAlgorithm {
        switch material {
        case .hmac: .hs256
        case .rsa: .rs256
        }
    }

    /// Whether this key can sign (an HMAC secret or an RSA private key).
    public var canSign: Bool {
        switch material {
        case .hmac: true
        case .rsa(_, let isPrivate): isPrivate
        }
    }

    /// Minimum HMAC secret length: RFC 7518 section 3.2 requires a key as long as the hash.
    public static let minimumHMACBytes = 32
    /// Minimum RSA modulus, in bits.
    public static let minimumRSABits = 2048

    /// An HS256 key. Refuses secrets shorter than 32 bytes, and PEM text: an RSA public key used as an HMAC
    /// secret is the classic algorithm-confusion attack, and nothing legitimate looks like that.
    public static func hmac(secret: [UInt8]) throws -> JWTKey {
        guard secret.count >= minimumHMACBytes else {
            throw JWTError.invalidKey(
                "HMAC secret has \(secret.count) bytes; at least \(minimumHMACBytes) are required")
        }
        let prefix = String(decoding: secret.prefix(64), as: UTF8.self)
        if prefix.contains("-----BEGIN") || prefix.hasPrefix("ssh-rsa") {
            throw JWTError.invalidKey("PEM or SSH key text cannot be used as an HMAC secret (algorithm confusion)")
        }
        return JWTKey(material: .hmac(secret))
    }

    /// An HS256 key whose secret is the UTF-8 bytes of `secret` (how `WORKER_SECRET` is used).
    public static func hmac(secret: String) throws -> JWTKey { try hmac(secret: Array(secret.utf8)) }

    /// An RS256 key from PEM text: a private key (PKCS#8 or PKCS#1) or a public key (SubjectPublicKeyInfo).
    public static func rsa(pem: String) throws -> JWTKey {
        let (key, isPrivate) = try PKey.load(pem: pem)
        guard EVP_PKEY_get_base_id(key.pointer) == EVP_PKEY_RSA else {
            throw JWTError.invalidKey("PEM holds a key that is not RSA")
        }
        let bits = Int(EVP_PKEY_get_bits(key.pointer))
        guard bits >= minimumRSABits else {
            throw JWTError.invalidKey("RSA key has \(bits) bits; at least \(minimumRSABits) are required")
        }
        return JWTKey(material: .rsa(key, isPrivate: isPrivate))
    }

    /// An RS256 key from base64 of PEM text, the form `ATTEMPTS_PRIVATE_KEY` and `LIGHTNING_PUBLIC_KEY` take.
    /// Plain PEM text is accepted too.
    public static func rsa(base64PEM: String) throws -> JWTKey {
        let trimmed = base64PEM.trimmingCharacters(in: [" ", "\n", "\r", "\t", "\""])
        if trimmed.hasPrefix("-----BEGIN") { return try rsa(pem: trimmed) }
        guard let bytes = Base64URL.decodeStandard(trimmed) else {
            throw JWTError.invalidKey("value is neither PEM text nor base64 of PEM text")
        }
        return try rsa(pem: String(decoding: bytes, as: UTF8.self))
    }

    /// The public half of an RSA key as PEM, e.g. to hand to workers.
    public func publicKeyPEM() throws -> String {
        guard case .rsa(let key, _) = material else { throw JWTError.invalidKey("an HMAC key has no public half") }
        return try key.publicPEM()
    }

    /// A verify-only copy of this key (the public half of an RSA key; HMAC keys are returned as they are).
    public func publicKey() throws -> JWTKey {
        guard case .rsa = material else { return self }
        return try JWTKey.rsa(pem: publicKeyPEM())
    }

    // MARK: - Signing and verifying

    func sign(_ input: [UInt8]) throws -> [UInt8] { try input.withUnsafeBufferPointer { try sign(bytes: $0) } }

    func sign(bytes input: UnsafeBufferPointer<UInt8>) throws -> [UInt8] {
        switch material {
        case .hmac(let secret):
            var out = [UInt8](repeating: 0, count: Int(EVP_MAX_MD_SIZE))
            var length: UInt32 = 0
            guard HMAC(EVP_sha256(), secret, Int32(secret.count), input.baseAddress, input.count, &out, &length) != nil
            else {
                throw JWTError.openSSL(lastOpenSSLError())
            }
            return Array(out.prefix(Int(length)))
        case .rsa(let key, let isPrivate):
            guard isPrivate else { throw JWTError.keyCannotSign }
            return try key.signSHA256(input)
        }
    }

    func verify(signature: [UInt8], of input: UnsafeBufferPointer<UInt8>) throws -> Bool {
        switch material {
        case .hmac:
            let expected = try sign(bytes: input)
            return expected.count == signature.count && CRYPTO_memcmp(expected, signature, expected.count) == 0
        case .rsa(let key, _):
            return key.verifySHA256(signature: signature, of: input)
        }
    }
}

/// Owns one `EVP_PKEY`. OpenSSL 3 keys are safe to share between threads for signing and verifying as long as
/// each operation has its own context, which is how this type uses them.
///
/// Setting up a context (`EVP_DigestSignInit`/`EVP_DigestVerifyInit`) fetches the digest and the signature's
/// implementation from OpenSSL's provider store every time: about a third of an RS256 verification with a few claims.
/// So one context of each kind is set up here, never used itself, and each operation works on a copy of it
/// (`EVP_MD_CTX_copy_ex` only reads its source, so copies may be taken on several threads at once).
final class PKey: @unchecked Sendable {
    let pointer: OpaquePointer
    /// `EVP_MD_CTX`s ready to sign (a private key only) and to verify, with SHA-256.
    private let signTemplate: OpaquePointer?
    private let verifyTemplate: OpaquePointer?

    init(owning pointer: OpaquePointer) {
        self.pointer = pointer
        signTemplate = Self.template(pointer) { EVP_DigestSignInit($0, nil, EVP_sha256(), nil, $1) }
        verifyTemplate = Self.template(pointer) { EVP_DigestVerifyInit($0, nil, EVP_sha256(), nil, $1) }
    }

    deinit {
        EVP_MD_CTX_free(signTemplate)
        EVP_MD_CTX_free(verifyTemplate)
        EVP_PKEY_free(pointer)
    }

    /// A context set up by `initialise`, or nil when OpenSSL refuses. (A public key may still get a signing context
    /// here: signing checks `isPrivate` first, and signing with one fails in OpenSSL anyway.)
    private static func template(
        _ key: OpaquePointer, _ initialise: (OpaquePointer, OpaquePointer) -> Int32
    ) -> OpaquePointer? {
        guard let ctx = EVP_MD_CTX_new() else { return nil }
        guard initialise(ctx, key) == 1 else {
            ERR_clear_error()
            EVP_MD_CTX_free(ctx)
            return nil
        }
        return ctx
    }

    /// A copy of `template` for one operation, told that it will be finalised once (so OpenSSL does not copy it
    /// again to keep it reusable).
    private func operationContext(from template: OpaquePointer?) -> OpaquePointer? {
        guard let template, let ctx = EVP_MD_CTX_new() else { return nil }
        guard EVP_MD_CTX_copy_ex(ctx, template) == 1 else {
            EVP_MD_CTX_free(ctx)
            return nil
        }
        EVP_MD_CTX_set_flags(ctx, EVP_MD_CTX_FLAG_FINALISE)
        return ctx
    }

    static func load(pem: String) throws -> (PKey, isPrivate: Bool) {
        let isPrivate: Bool
        if pem.contains("PRIVATE KEY-----") {
            isPrivate = true
        } else if pem.contains("PUBLIC KEY-----") {
            isPrivate = false
        } else {
            throw JWTError.invalidKey("text is not a PEM key (no BEGIN ... KEY line)")
        }
        // BIO_new_mem_buf does not copy: the bytes must outlive every read from the BIO.
        let bytes = Array(pem.utf8)
        let key: OpaquePointer? = bytes.withUnsafeBufferPointer { buffer in
            guard let bio = BIO_new_mem_buf(buffer.baseAddress, Int32(buffer.count)) else { return nil }
            defer { BIO_free(bio) }
            return isPrivate ? PEM_read_bio_PrivateKey(bio, nil, nil, nil) : PEM_read_bio_PUBKEY(bio, nil, nil, nil)
        }
        guard let key else {
            throw JWTError.invalidKey("PEM \(isPrivate ? "private" : "public") key could not be read (\(lastOpenSSLError()))")
        }
        return (PKey(owning: key), isPrivate)
    }

    func signSHA256(_ input: UnsafeBufferPointer<UInt8>) throws -> [UInt8] {
        guard signTemplate != nil else { throw JWTError.keyCannotSign }
        guard let ctx = operationContext(from: signTemplate) else { throw JWTError.openSSL(lastOpenSSLError()) }
        defer { EVP_MD_CTX_free(ctx) }
        var length = Int(EVP_PKEY_get_size(pointer))
        var out = [UInt8](repeating: 0, count: length)
        guard EVP_DigestSign(ctx, &out, &length, input.baseAddress, input.count) == 1 else {
            throw JWTError.openSSL(lastOpenSSLError())
        }
        return Array(out.prefix(length))
    }

    func verifySHA256(signature: [UInt8], of input: UnsafeBufferPointer<UInt8>) -> Bool {
        guard let ctx = operationContext(from: verifyTemplate) else {
            ERR_clear_error()
            return false
        }
        defer { EVP_MD_CTX_free(ctx) }
        let ok = EVP_DigestVerify(ctx, signature, signature.count, input.baseAddress, input.count) == 1
        if !ok { ERR_clear_error() }
        return ok
    }

    func publicPEM() throws -> String {
        try withMemoryBIO { PEM_write_bio_PUBKEY($0, pointer) }
    }

    func privatePEM() throws -> String {
        try withMemoryBIO { PEM_write_bio_PrivateKey($0, pointer, nil, nil, 0, nil, nil) }
    }

    private func withMemoryBIO(_ write: (OpaquePointer) -> Int32) throws -> String {
        guard let bio = BIO_new(BIO_s_mem()) else { throw JWTError.openSSL("BIO_new failed") }
        defer { BIO_free(bio) }
        guard write(bio) == 1 else { throw JWTError.openSSL(lastOpenSSLError()) }
        var data: UnsafeMutablePointer<CChar>?
        let length = copenssl_bio_get_mem_data(bio, &data)
        guard let data, length > 0 else { throw JWTError.openSSL("empty PEM output") }
        return String(decoding: UnsafeRawBufferPointer(start: data, count: length), as: UTF8.self)
    }
}

/// The most recent OpenSSL error of this thread, as text, and clears the queue.
func lastOpenSSLError() -> String {
    let code = ERR_get_error()
    ERR_clear_error()
    guard code != 0 else { return "unknown error" }
    var buffer = [CChar](repeating: 0, count: 256)
    ERR_error_string_n(code, &buffer, buffer.count)
    return String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
}
