internal import COpenSSL

/// Operator tokens (PROTOCOL.md 6): random 256-bit secrets shown once, stored only as SHA-256 hashes.
///
/// The text form is `lro_` followed by the base64url of 32 random bytes, so a leaked token is easy to
/// recognise in a log or a scanner. Only the hash of a token ever reaches the database.
public struct OperatorToken: Sendable, Equatable {
    public enum Role: String, Codable, Sendable, CaseIterable {
        /// Read and watch.
        case viewer
        /// Also create, start and cancel.
        case admin

        public func allows(_ needed: Role) -> Bool { self == .admin || needed == .viewer }
    }

    public static let prefix = "lro_"
    /// The console's session cookies have the same shape with their own prefix, so neither passes for the other.
    public static let sessionPrefix = "lrs_"

    /// The secret, to show the operator once.
    public let plaintext: String
    /// Hex SHA-256 of the plaintext: what the store keeps.
    public let hash: String

    /// A fresh token from OpenSSL's CSPRNG.
    public static func generate(prefix: String = prefix) throws -> OperatorToken {
        var bytes = [UInt8](repeating: 0, count: 32)
        guard RAND_bytes(&bytes, 32) == 1 else { throw OperatorTokenError.randomFailed }
        let text = prefix + base64url(bytes)
        return OperatorToken(plaintext: text, hash: hash(text))
    }

    /// The hash a presented token is looked up by. Tokens of the wrong shape hash too (and find nothing).
    public static func hash(_ text: String) -> String {
        var digest = [UInt8](repeating: 0, count: Int(EVP_MAX_MD_SIZE))
        var length: UInt32 = 0
        let bytes = Array(text.utf8)
        _ = EVP_Digest(bytes, bytes.count, &digest, &length, EVP_sha256(), nil)
        return digest.prefix(Int(length)).map { String(format: "%02x", $0) }.joined()
    }

    /// Cheap shape check before any lookup: prefix and 43 base64url characters.
    public static func isWellFormed(_ text: String, prefix: String = prefix) -> Bool {
        guard text.hasPrefix(prefix) else { return false }
        let body = text.utf8.dropFirst(prefix.utf8.count)
        return body.count == 43 && body.allSatisfy { c in
            (c >= 0x30 && c <= 0x39) || (c >= 0x41 && c <= 0x5A) || (c >= 0x61 && c <= 0x7A) || c == 0x2D || c == 0x5F
        }
    }

    private static func base64url(_ bytes: [UInt8]) -> String {
        let table = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_".utf8)
        var out = [UInt8]()
        var i = 0
        while i + 2 < bytes.count {
            let n = UInt32(bytes[i]) << 16 | UInt32(bytes[i + 1]) << 8 | UInt32(bytes[i + 2])
            out += [table[Int(n >> 18 & 63)], table[Int(n >> 12 & 63)], table[Int(n >> 6 & 63)], table[Int(n & 63)]]
            i += 3
        }
        let rest = bytes.count - i
        if rest == 1 {
            let n = UInt32(bytes[i]) << 16
            out += [table[Int(n >> 18 & 63)], table[Int(n >> 12 & 63)]]
        } else if rest == 2 {
            let n = UInt32(bytes[i]) << 16 | UInt32(bytes[i + 1]) << 8
            out += [table[Int(n >> 18 & 63)], table[Int(n >> 12 & 63)], table[Int(n >> 6 & 63)]]
        }
        return String(decoding: out, as: UTF8.self)
    }
}

public enum OperatorTokenError: Error, CustomStringConvertible {
    case randomFailed
    public var description: String { "the system's random number generator failed" }
}
