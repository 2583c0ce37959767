import Foundation
internal import COpenSSL

/// Credentials at rest: AES-256-GCM with a 32-byte key from `LIGHTNING_ENCRYPTION_KEY` (base64). Make one with
/// `openssl rand -base64 32`. Each value gets a fresh 12-byte nonce; the credential's name is the associated
/// data, so a ciphertext moved to another name does not decrypt.
public struct CredentialCipher: Sendable {
    public static let environmentVariable = "LIGHTNING_ENCRYPTION_KEY"
    let key: [UInt8]

    public struct Error: Swift.Error, CustomStringConvertible, Equatable {
        public let message: String
        public var description: String { message }
    }

    public init(key: [UInt8]) throws {
        guard key.count == 32 else {
            throw Error(message: "\(Self.environmentVariable) must be base64 of 32 bytes (got \(key.count)); "
                + "make one with: openssl rand -base64 32")
        }
        self.key = key
    }

    public init(base64Key: String) throws {
        guard let data = Data(base64Encoded: base64Key.trimmingCharacters(in: .whitespacesAndNewlines)) else {
            throw Error(message: "\(Self.environmentVariable) is not valid base64; make one with: openssl rand -base64 32")
        }
        try self.init(key: Array(data))
    }

    /// nonce (12) + ciphertext + tag (16)
    public func seal(_ plaintext: [UInt8], associatedData: String) throws -> [UInt8] {
        var nonce = [UInt8](repeating: 0, count: 12)
        guard RAND_bytes(&nonce, 12) == 1 else { throw Error(message: "random generator failed") }
        guard let ctx = EVP_CIPHER_CTX_new() else { throw Error(message: "EVP_CIPHER_CTX_new failed") }
        defer { EVP_CIPHER_CTX_free(ctx) }
        let aad = Array(associatedData.utf8)
        var out = [UInt8](repeating: 0, count: plaintext.count + 16)
        var n: Int32 = 0, total: Int32 = 0
        guard EVP_EncryptInit_ex(ctx, EVP_aes_256_gcm(), nil, key, nonce) == 1,
            EVP_EncryptUpdate(ctx, nil, &n, aad, Int32(aad.count)) == 1,
            EVP_EncryptUpdate(ctx, &out, &n, plaintext, Int32(plaintext.count)) == 1
        else { throw Error(message: "encryption failed") }
        total = n
        let finalOK = out.withUnsafeMutableBufferPointer { EVP_EncryptFinal_ex(ctx, $0.baseAddress! + Int(total), &n) }
        guard finalOK == 1 else { throw Error(message: "encryption failed") }
        total += n
        var tag = [UInt8](repeating: 0, count: 16)
        guard EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, 16, &tag) == 1 else { throw Error(message: "encryption failed") }
        return nonce + out.prefix(Int(total)) + tag
    }

    public func open(_ sealed: [UInt8], associatedData: String) throws -> [UInt8] {
        guard sealed.count >= 28 else { throw Error(message: "stored credential is truncated") }
        let nonce = Array(sealed[0..<12]), tag = Array(sealed.suffix(16)), body = Array(sealed[12..<(sealed.count - 16)])
        guard let ctx = EVP_CIPHER_CTX_new() else { throw Error(message: "EVP_CIPHER_CTX_new failed") }
        defer { EVP_CIPHER_CTX_free(ctx) }
        let aad = Array(associatedData.utf8)
        var out = [UInt8](repeating: 0, count: body.count + 16)
        var n: Int32 = 0
        var mutableTag = tag
        guard EVP_DecryptInit_ex(ctx, EVP_aes_256_gcm(), nil, key, nonce) == 1,
            EVP_DecryptUpdate(ctx, nil, &n, aad, Int32(aad.count)) == 1,
            EVP_DecryptUpdate(ctx, &out, &n, body, Int32(body.count)) == 1,
            EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, 16, &mutableTag) == 1
        else { throw Error(message: "stored credential could not be decrypted") }
        let total = n
        let ok = out.withUnsafeMutableBufferPointer { EVP_DecryptFinal_ex(ctx, $0.baseAddress! + Int(total), &n) }
        guard ok == 1 else {
            throw Error(message: "stored credential failed authentication (wrong \(Self.environmentVariable)?)")
        }
        return Array(out.prefix(Int(total + n)))
    }
}
