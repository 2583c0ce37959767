import Foundation

extension DecodingError {
    /// Where and what, for a person: `missing field "dataclip_id" at top level`, `wrong type at .jobs[0].adaptor: …`.
    public var fieldDescription: String {
        func path(_ c: DecodingError.Context) -> String {
            c.codingPath.map { $0.intValue.map { "[\($0)]" } ?? ".\($0.stringValue)" }.joined()
        }
        switch self {
        case .keyNotFound(let key, let c): return "missing field \"\(key.stringValue)\" at \(path(c).isEmpty ? "top level" : path(c))"
        case .typeMismatch(let t, let c): return "wrong type at \(path(c)): expected \(t)"
        case .valueNotFound(let t, let c): return "missing value at \(path(c)): expected \(t)"
        case .dataCorrupted(let c): return "invalid value at \(path(c)): \(c.debugDescription)"
        @unknown default: return "\(self)"
        }
    }
}
