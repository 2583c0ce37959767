import Channels

/// A required field of a worker event that is missing or unusable. The error reply names the field
/// (`{"errors": {"<field>": ["<message>"]}}`, PROTOCOL.md 5).
public struct WireFieldError: Error, Equatable, Sendable, CustomStringConvertible {
    public var field: String
    public var message: String
    public init(_ field: String, _ message: String) {
        self.field = field
        self.message = message
    }
    public var description: String { "\(field): \(message)" }
}

/// Reads a worker event's payload the way Lightning must: strict about the fields an event cannot do without,
/// liberal about everything else (PROTOCOL.md 5.2/5.3). OpenFn's ws-worker sends `thread_id` as a number, may
/// leave out `mem`, `duration` and (older versions) `timestamp`, and adds fields of its own; none of that may
/// get an event refused. An optional field of an unusable type is read as absent.
public struct WireFields: Sendable {
    public let payload: [String: JSON]

    public init(_ payload: JSON) throws(WireFieldError) {
        guard case .object(let o) = payload else { throw WireFieldError("payload", "must be a JSON object") }
        self.payload = o
    }

    /// The value of `name`, or nil when it is absent or null.
    public func value(_ name: String) -> JSON? {
        guard let v = payload[name], v != .null else { return nil }
        return v
    }

    /// A required id: a non-empty string (a number is read as its digits).
    public func id(_ name: String) throws(WireFieldError) -> String {
        guard let v = value(name) else { throw WireFieldError(name, "can't be blank") }
        switch v {
        case .string(let s) where !s.isEmpty: return s
        case .int(let i): return String(i)
        case .string: throw WireFieldError(name, "can't be blank")
        default: throw WireFieldError(name, "must be a string")
        }
    }

    /// An optional text: a string as it is, a number or boolean as its JSON text; absent, null, a list or an
    /// object: nil.
    public func text(_ name: String) -> String? {
        switch value(name) {
        case .string(let s): s
        case .int(let i): String(i)
        case .double(let d): JSON.double(d).text
        case .bool(let b): b ? "true" : "false"
        default: nil
        }
    }

    /// An optional whole number: an integer, an integral double or a string of digits; anything else nil.
    public func int(_ name: String) -> Int64? {
        switch value(name) {
        case .int(let i): i
        case .double(let d) where d.isFinite && abs(d) < 9.2e18: Int64(d.rounded())
        case .string(let s): Int64(s)
        default: nil
        }
    }

    /// The event's `timestamp` in microseconds (a string or a number; 13 digits or fewer are milliseconds), or
    /// nil when absent or unusable: Lightning then uses its own clock.
    public func timestamp() -> Int64? {
        switch value("timestamp") {
        case .string(let s): Timestamp.parse(s)
        case .int(let i) where i > 0: Timestamp.parse(String(i))
        case .double(let d) where d.isFinite && d > 0 && d < 9.2e18: Timestamp.parse(String(Int64(d)))
        default: nil
        }
    }

    /// A required exit reason (PROTOCOL.md 5.4).
    public func reason() throws(WireFieldError) -> ExitReason {
        guard let text = value("reason")?.stringValue else { throw WireFieldError("reason", "can't be blank") }
        guard let r = ExitReason(rawValue: text) else {
            throw WireFieldError("reason", "unknown reason \"\(text)\" (one of \(ExitReason.allCases.map(\.rawValue).joined(separator: ", ")))")
        }
        return r
    }
}

extension JSON {
    /// Sets `key` to `value`, or to null when nil: for fields the lexicon declares `string | null`.
    mutating func set(_ key: String, nullable value: String?) {
        guard case .object(var o) = self else { return }
        o[key] = value.map(JSON.string) ?? .null
        self = .object(o)
    }

    /// Sets `key` when `value` is not nil (optional fields are left out, as ws-worker leaves them out).
    mutating func set(_ key: String, _ value: JSON?) {
        guard let value, case .object(var o) = self else { return }
        o[key] = value
        self = .object(o)
    }
}
