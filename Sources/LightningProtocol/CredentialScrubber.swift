import Foundation

/// Replaces credential values in log text with `***` (PROTOCOL.md 5.5), on both sides.
///
/// Secrets are every string or number in a credential body, plus the base64 of every `user:password` pair
/// (what an HTTP Basic header would carry). Very short values (under 3 characters) are not treated as
/// secrets: replacing every "1" or "a" would destroy logs without protecting anything.
public struct CredentialScrubber: Sendable {
    public static let mask = "***"
    public static let minimumSecretLength = 3

    /// Longest first, so a secret that contains another is masked whole.
    public private(set) var secrets: [String] {
        didSet { secretBytes = secrets.map { Array($0.utf8) } }
    }
    /// The secrets' UTF-8, matched byte for byte: a String comparison works on whole characters, so a secret followed
    /// by a combining mark (U+0301) or a variation selector (U+FE0F) did not match and was logged.
    private var secretBytes: [[UInt8]] = []

    public init(secrets: some Sequence<String> = []) {
        self.secrets = []
        add(secrets)
    }

    /// Collects the secrets of a credential body decoded from JSON (`JSONSerialization` objects).
    public init(credentialBodies: [Any]) {
        self.init()
        for body in credentialBodies { add(Self.secrets(in: body)) }
    }

    public var isEmpty: Bool { secrets.isEmpty }

    public mutating func add(_ more: some Sequence<String>) {
        var set = Set(secrets)
        for s in more where s.utf8.count >= Self.minimumSecretLength { set.insert(s) }
        secrets = set.sorted { $0.utf8.count != $1.utf8.count ? $0.utf8.count > $1.utf8.count : $0 < $1 }
    }

    public func scrub(_ text: String) -> String {
        guard !secretBytes.isEmpty else { return text }
        var bytes = Array(text.utf8)
        var changed = false
        for secret in secretBytes where Self.replace(secret, in: &bytes) { changed = true }
        // UTF-8 is self-synchronising: a secret's bytes (valid UTF-8 themselves) match only on character boundaries,
        // so what is left is valid UTF-8.
        return changed ? String(decoding: bytes, as: UTF8.self) : text
    }

    private static let maskBytes = Array(mask.utf8)

    /// Replaces every occurrence of `needle` in `bytes` with the mask; true when there was one.
    static func replace(_ needle: [UInt8], in bytes: inout [UInt8]) -> Bool {
        guard let first = needle.first, bytes.count >= needle.count else { return false }
        var out: [UInt8] = []
        var copied = 0, i = 0, found = false
        let last = bytes.count - needle.count
        bytes.withUnsafeBufferPointer { b in
            needle.withUnsafeBufferPointer { n in
                while i <= last {
                    if b[i] == first && memcmp(b.baseAddress! + i, n.baseAddress!, n.count) == 0 {
                        if !found { out.reserveCapacity(b.count); found = true }
                        out.append(contentsOf: b[copied..<i])
                        out.append(contentsOf: maskBytes)
                        i += n.count
                        copied = i
                    } else {
                        i += 1
                    }
                }
                if found { out.append(contentsOf: b[copied...]) }
            }
        }
        if found { bytes = out }
        return found
    }

    /// Every string and number in a JSON value, plus base64 of `user:password` pairs found in objects.
    public static func secrets(in json: Any) -> [String] {
        var found: [String] = []
        func walk(_ value: Any) {
            switch value {
            case let s as String: found.append(s)
            case let n as NSNumber:
                // Booleans are not secrets; JSONSerialization gives them objCType "c".
                if String(cString: n.objCType) != "c" { found.append(n.stringValue) }
            case let a as [Any]: a.forEach(walk)
            case let o as [String: Any]:
                let user = (o["username"] ?? o["user"]) as? String
                let password = (o["password"] ?? o["pass"]) as? String
                if let user, let password {
                    found.append(Data("\(user):\(password)".utf8).base64EncodedString())
                }
                o.values.forEach(walk)
            default: break
            }
        }
        walk(json)
        return found
    }
}
