/// Every way a token or a key can be refused. Each case is distinct so callers and tests can tell them apart;
/// `description` is a message fit for a log line (it never contains key material).
public enum JWTError: Error, Equatable, Sendable, CustomStringConvertible {
    case tokenTooLarge(bytes: Int, limit: Int)
    case wrongSegmentCount(Int)
    case invalidBase64URL(segment: Segment)
    case invalidJSON(segment: Segment)
    case algorithmNone
    case algorithmMismatch(expected: String, found: String)
    case unsupportedCriticalHeader([String])
    case invalidSignature
    case expired(exp: Double, now: Double)
    case notYetValid(nbf: Double, now: Double)
    case invalidIssuer(expected: String, found: String?)
    case invalidAudience(expected: String, found: [String])
    case missingClaim(String)
    case invalidClaim(name: String, reason: String)
    case invalidKey(String)
    case keyCannotSign
    case openSSL(String)

    public enum Segment: String, Sendable { case header, payload, signature }

    public var description: String {
        switch self {
        case .tokenTooLarge(let bytes, let limit): "token of \(bytes) bytes is over the \(limit)-byte limit"
        case .wrongSegmentCount(let n): "token has \(n) segments; a JWS compact token has 3"
        case .invalidBase64URL(let s): "token \(s.rawValue) is not valid base64url"
        case .invalidJSON(let s): "token \(s.rawValue) is not a valid JSON object"
        case .algorithmNone: "token uses alg \"none\", which is never accepted"
        case .algorithmMismatch(let e, let f): "token alg \(f) does not match the key's algorithm \(e)"
        case .unsupportedCriticalHeader(let c): "token has critical header parameters we do not understand: \(c)"
        case .invalidSignature: "token signature does not verify"
        case .expired(let exp, let now): "token expired at \(Int64(exp)) (now \(Int64(now)))"
        case .notYetValid(let nbf, let now): "token not valid before \(Int64(nbf)) (now \(Int64(now)))"
        case .invalidIssuer(let e, let f): "token issuer \(f.map { "\"\($0)\"" } ?? "missing"), expected \"\(e)\""
        case .invalidAudience(let e, let f): "token audience \(f) does not include \"\(e)\""
        case .missingClaim(let c): "token lacks the required claim \"\(c)\""
        case .invalidClaim(let n, let r): "token claim \"\(n)\" is invalid: \(r)"
        case .invalidKey(let r): "key refused: \(r)"
        case .keyCannotSign: "this key can only verify (a public key); signing needs the private key"
        case .openSSL(let m): "OpenSSL: \(m)"
        }
    }
}
