import Foundation
internal import COpenSSL

/// Random bytes from OpenSSL's CSPRNG.
public func secureRandomBytes(_ count: Int) throws -> [UInt8] {
    var bytes = [UInt8](repeating: 0, count: count)
    guard RAND_bytes(&bytes, Int32(count)) == 1 else { throw JWTError.openSSL(lastOpenSSLError()) }
    return bytes
}

/// An RSA key pair made with OpenSSL's `EVP_PKEY_CTX` key generation.
public struct RSAKeyPair: Sendable {
    public let privateKeyPEM: String
    public let publicKeyPEM: String
    public let bits: Int

    public static let allowedBits = [2048, 3072, 4096]

    public static func generate(bits: Int = 2048) throws -> RSAKeyPair {
        guard allowedBits.contains(bits) else {
            if bits < 2048 {
                throw JWTError.invalidKey("RSA keys under 2048 bits are too weak to sign attempt tokens; use 2048, 3072 or 4096")
            }
            throw JWTError.invalidKey("RSA key size \(bits) is not supported; use 2048, 3072 or 4096")
        }
        guard let ctx = EVP_PKEY_CTX_new_id(EVP_PKEY_RSA, nil) else { throw JWTError.openSSL(lastOpenSSLError()) }
        defer { EVP_PKEY_CTX_free(ctx) }
        guard EVP_PKEY_keygen_init(ctx) == 1, EVP_PKEY_CTX_set_rsa_keygen_bits(ctx, Int32(bits)) == 1 else {
            throw JWTError.openSSL(lastOpenSSLError())
        }
        var raw: OpaquePointer?
        guard EVP_PKEY_generate(ctx, &raw) == 1, let raw else { throw JWTError.openSSL(lastOpenSSLError()) }
        let key = PKey(owning: raw)
        return RSAKeyPair(privateKeyPEM: try key.privatePEM(), publicKeyPEM: try key.publicPEM(), bits: bits)
    }
}

/// The key set of PROTOCOL.md section 8, as `gen-worker-keys` makes it.
///
/// `WORKER_SECRET` is the base64 text of 32 random bytes, and the HMAC key of worker tokens is the UTF-8 bytes
/// of that text (as OpenFn's worker uses it), not the decoded bytes.
public struct WorkerKeySet: Sendable {
    public let keyPair: RSAKeyPair
    /// Base64 of 32 random bytes.
    public let workerSecret: String

    public static let fileNames = (privateKey: "attempts_private.pem", publicKey: "attempts_public.pem",
                                   secret: "worker_secret")

    public static func generate(bits: Int = 2048) throws -> WorkerKeySet {
        WorkerKeySet(keyPair: try RSAKeyPair.generate(bits: bits),
                     workerSecret: Base64URL.encodeStandard(try secureRandomBytes(32)))
    }

    public var attemptsPrivateKeyBase64: String { Base64URL.encodeStandard(Array(keyPair.privateKeyPEM.utf8)) }
    public var lightningPublicKeyBase64: String { Base64URL.encodeStandard(Array(keyPair.publicKeyPEM.utf8)) }

    /// The three variable lines and which side needs which.
    public var environmentText: String {
        """
        ATTEMPTS_PRIVATE_KEY="\(attemptsPrivateKeyBase64)"
        WORKER_SECRET="\(workerSecret)"
        LIGHTNING_PUBLIC_KEY="\(lightningPublicKeyBase64)"

        # Lightning needs ATTEMPTS_PRIVATE_KEY and WORKER_SECRET.
        # Each worker needs WORKER_SECRET and LIGHTNING_PUBLIC_KEY.
        # Keep ATTEMPTS_PRIVATE_KEY and WORKER_SECRET secret; never commit them.
        """
    }

    /// Writes `attempts_private.pem`, `attempts_public.pem` and `worker_secret` (the base64 secret and a
    /// newline) into `directory`, each created with mode 0600; the directory is created with mode 0700 when
    /// missing. Without `force`, refuses when any of the three exists, before writing any.
    /// Returns the paths written.
    @discardableResult
    public func write(to directory: String, force: Bool = false) throws -> [String] {
        let names = Self.fileNames
        let files = [
            (names.privateKey, keyPair.privateKeyPEM), (names.publicKey, keyPair.publicKeyPEM),
            (names.secret, workerSecret + "\n"),
        ].map { (directory + "/" + $0.0, $0.1) }
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: directory, isDirectory: &isDirectory) {
            guard isDirectory.boolValue else { throw KeyFileError(message: "\(directory) exists and is not a directory") }
        } else {
            guard mkdir(directory, 0o700) == 0 || errno == EEXIST else {
                throw KeyFileError(message: "cannot create \(directory): \(String(cString: strerror(errno)))")
            }
        }
        if !force {
            let existing = files.map(\.0).filter { FileManager.default.fileExists(atPath: $0) }
            if !existing.isEmpty {
                throw KeyFileError(message: "refusing to overwrite \(existing.joined(separator: ", ")); "
                    + "pass --force to replace them (workers and Lightning then need the new values)")
            }
        }
        for (path, text) in files {
            let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0o600)
            guard fd >= 0 else { throw KeyFileError(message: "cannot write \(path): \(String(cString: strerror(errno)))") }
            defer { close(fd) }
            // O_CREAT's mode is not applied to a file that already existed (with --force): set it.
            guard fchmod(fd, 0o600) == 0 else {
                throw KeyFileError(message: "cannot set mode 0600 on \(path): \(String(cString: strerror(errno)))")
            }
            let bytes = Array(text.utf8)
            var offset = 0
            while offset < bytes.count {
                let n = bytes[offset...].withUnsafeBytes { Glibc.write(fd, $0.baseAddress, $0.count) }
                if n < 0 {
                    if errno == EINTR { continue }
                    throw KeyFileError(message: "cannot write \(path): \(String(cString: strerror(errno)))")
                }
                offset += n
            }
            guard fsync(fd) == 0 else { throw KeyFileError(message: "cannot sync \(path)") }
        }
        return files.map(\.0)
    }
}

public struct KeyFileError: Error, CustomStringConvertible, Equatable {
    public let message: String
    public init(message: String) { self.message = message }
    public var description: String { message }
}
