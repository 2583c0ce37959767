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
    public private(set) var secrets: [String]

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
        guard !secrets.isEmpty else { return text }
        var out = text
        for secret in secrets where out.contains(secret) {
            out = out.replacingOccurrences(of: secret, with: Self.mask)
        }
        return out
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
