/// A token's header or payload, parsed strictly (RFC 8259) in one pass over its bytes.
///
/// Verification used Foundation's `JSONDecoder`, which was two thirds of an HS256 verification and a quarter of an
/// RS256 one (`perf` of `bench-jwt`). This reader is smaller and stricter than that decoder: it refuses duplicate
/// member names (RFC 7519 section 4 lets a parser refuse them, and `{"alg":"RS256","alg":"none"}` must not be read
/// either way), invalid UTF-8 and lone surrogates, control characters in strings, leading zeros, and nesting deeper
/// than `maxDepth`. `ClaimsDecoder` then decodes any `Decodable` from the parsed value.
enum ClaimJSON: Equatable, Sendable {
    case null
    case bool(Bool)
    /// The value as a `Double`, and exactly as an `Int64` when the text is an integer that fits one.
    case number(Double, exactInteger: Int64?)
    case string(String)
    case array([ClaimJSON])
    case object(Members)

    /// An object's members in their order. A claims object has a handful, so a lookup is a scan: building a
    /// `Dictionary` (hashing every name with a seeded SipHash) was a third of the parse.
    struct Members: Equatable, Sendable {
        private(set) var pairs: [(name: String, value: ClaimJSON)] = []
        /// Only for objects past `scanLimit` members, to keep the duplicate check linear on hostile input.
        private var names: Set<String>?
        static let scanLimit = 16

        init() {}

        subscript(name: String) -> ClaimJSON? {
            for pair in pairs where pair.name == name { return pair.value }
            return nil
        }

        var count: Int { pairs.count }

        /// Adds a member; false when the name is already there.
        mutating func insert(_ name: String, _ value: ClaimJSON) -> Bool {
            if var seen = names {
                names = nil  // keep the set uniquely referenced while it grows
                defer { names = seen }
                guard seen.insert(name).inserted else { return false }
            } else if pairs.contains(where: { $0.name == name }) {
                return false
            } else if pairs.count == Self.scanLimit {
                names = Set(pairs.map(\.name) + [name])
            }
            pairs.append((name, value))
            return true
        }

        static func == (a: Members, b: Members) -> Bool {
            a.pairs.count == b.pairs.count && zip(a.pairs, b.pairs).allSatisfy { $0.name == $1.name && $0.value == $1.value }
        }
    }

    /// Deeper nesting is refused: no claim we read is more than two levels down.
    static let maxDepth = 32

    /// Parses `bytes` as one JSON value with nothing but whitespace around it; nil when it is not valid JSON.
    static func parse(_ bytes: [UInt8]) -> ClaimJSON? {
        bytes.withUnsafeBufferPointer { buffer in
            var reader = Reader(bytes: buffer)
            guard let value = reader.value(depth: 0) else { return nil }
            reader.skipWhitespace()
            return reader.index == buffer.count ? value : nil
        }
    }

    var kind: String {
        switch self {
        case .null: "null"
        case .bool: "a boolean"
        case .number: "a number"
        case .string: "a string"
        case .array: "an array"
        case .object: "an object"
        }
    }

    private struct Reader {
        let bytes: UnsafeBufferPointer<UInt8>
        var index = 0

        init(bytes: UnsafeBufferPointer<UInt8>) { self.bytes = bytes }

        mutating func skipWhitespace() {
            while index < bytes.count {
                switch bytes[index] {
                case 0x20, 0x09, 0x0A, 0x0D: index += 1
                default: return
                }
            }
        }

        mutating func value(depth: Int) -> ClaimJSON? {
            skipWhitespace()
            guard index < bytes.count, depth <= ClaimJSON.maxDepth else { return nil }
            switch bytes[index] {
            case UInt8(ascii: "{"): return object(depth: depth)
            case UInt8(ascii: "["): return array(depth: depth)
            case UInt8(ascii: "\""): return string().map(ClaimJSON.string)
            case UInt8(ascii: "t"): return literal("true") ? .bool(true) : nil
            case UInt8(ascii: "f"): return literal("false") ? .bool(false) : nil
            case UInt8(ascii: "n"): return literal("null") ? .null : nil
            default: return number()
            }
        }

        mutating func literal(_ word: StaticString) -> Bool {
            let count = word.utf8CodeUnitCount
            guard bytes.count - index >= count else { return false }
            for i in 0..<count where bytes[index + i] != word.utf8Start[i] { return false }
            index += count
            return true
        }

        mutating func object(depth: Int) -> ClaimJSON? {
            index += 1  // {
            var members = Members()
            skipWhitespace()
            if index < bytes.count, bytes[index] == UInt8(ascii: "}") {
                index += 1
                return .object(members)
            }
            while true {
                skipWhitespace()
                guard index < bytes.count, bytes[index] == UInt8(ascii: "\""), let name = string() else { return nil }
                skipWhitespace()
                guard index < bytes.count, bytes[index] == UInt8(ascii: ":") else { return nil }
                index += 1
                guard let member = value(depth: depth + 1) else { return nil }
                guard members.insert(name, member) else { return nil }  // a duplicate name
                skipWhitespace()
                guard index < bytes.count else { return nil }
                switch bytes[index] {
                case UInt8(ascii: ","): index += 1
                case UInt8(ascii: "}"):
                    index += 1
                    return .object(members)
                default: return nil
                }
            }
        }

        mutating func array(depth: Int) -> ClaimJSON? {
            index += 1  // [
            var elements: [ClaimJSON] = []
            skipWhitespace()
            if index < bytes.count, bytes[index] == UInt8(ascii: "]") {
                index += 1
                return .array(elements)
            }
            while true {
                guard let element = value(depth: depth + 1) else { return nil }
                elements.append(element)
                skipWhitespace()
                guard index < bytes.count else { return nil }
                switch bytes[index] {
                case UInt8(ascii: ","): index += 1
                case UInt8(ascii: "]"):
                    index += 1
                    return .array(elements)
                default: return nil
                }
            }
        }

        /// A string starting at the opening quote. Plain runs are validated as UTF-8 as they are copied.
        mutating func string() -> String? {
            index += 1  // "
            var start = index
            var decoded: [UInt8] = []
            var escaped = false
            while index < bytes.count {
                let byte = bytes[index]
                if byte == UInt8(ascii: "\"") {
                    let run = UnsafeBufferPointer(rebasing: bytes[start..<index])
                    index += 1
                    if !escaped { return String(validating: run, as: UTF8.self) }
                    decoded.append(contentsOf: run)
                    return String(validating: decoded, as: UTF8.self)
                }
                if byte < 0x20 { return nil }
                if byte == UInt8(ascii: "\\") {
                    escaped = true
                    decoded.append(contentsOf: UnsafeBufferPointer(rebasing: bytes[start..<index]))
                    index += 1
                    guard index < bytes.count else { return nil }
                    let e = bytes[index]
                    index += 1
                    switch e {
                    case UInt8(ascii: "\""), UInt8(ascii: "\\"), UInt8(ascii: "/"): decoded.append(e)
                    case UInt8(ascii: "b"): decoded.append(0x08)
                    case UInt8(ascii: "f"): decoded.append(0x0C)
                    case UInt8(ascii: "n"): decoded.append(0x0A)
                    case UInt8(ascii: "r"): decoded.append(0x0D)
                    case UInt8(ascii: "t"): decoded.append(0x09)
                    case UInt8(ascii: "u"):
                        guard let scalar = unicodeEscape() else { return nil }
                        decoded.append(contentsOf: String(Character(scalar)).utf8)
                    default: return nil
                    }
                    start = index
                    continue
                }
                index += 1
            }
            return nil  // no closing quote
        }

        /// After `\u`: four hex digits, or a surrogate pair written as two escapes. Lone surrogates are refused.
        mutating func unicodeEscape() -> Unicode.Scalar? {
            guard let first = hex4() else { return nil }
            switch first {
            case 0xD800...0xDBFF:
                guard bytes.count - index >= 6, bytes[index] == UInt8(ascii: "\\"), bytes[index + 1] == UInt8(ascii: "u")
                else { return nil }
                index += 2
                guard let second = hex4(), (0xDC00...0xDFFF).contains(second) else { return nil }
                return Unicode.Scalar(0x10000 + ((first - 0xD800) << 10) + (second - 0xDC00))
            case 0xDC00...0xDFFF: return nil
            default: return Unicode.Scalar(first)
            }
        }

        mutating func hex4() -> UInt32? {
            guard bytes.count - index >= 4 else { return nil }
            var value: UInt32 = 0
            for _ in 0..<4 {
                let b = bytes[index]
                let digit: UInt8
                switch b {
                case UInt8(ascii: "0")...UInt8(ascii: "9"): digit = b - UInt8(ascii: "0")
                case UInt8(ascii: "a")...UInt8(ascii: "f"): digit = b - UInt8(ascii: "a") + 10
                case UInt8(ascii: "A")...UInt8(ascii: "F"): digit = b - UInt8(ascii: "A") + 10
                default: return nil
                }
                value = value << 4 | UInt32(digit)
                index += 1
            }
            return value
        }

        /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`
        mutating func number() -> ClaimJSON? {
            let start = index
            var integral = true
            if index < bytes.count, bytes[index] == UInt8(ascii: "-") { index += 1 }
            guard index < bytes.count, isDigit(bytes[index]) else { return nil }
            if bytes[index] == UInt8(ascii: "0") {
                index += 1
                if index < bytes.count, isDigit(bytes[index]) { return nil }  // a leading zero
            } else {
                skipDigits()
            }
            let integerEnd = index
            var zeroFraction = true
            if index < bytes.count, bytes[index] == UInt8(ascii: ".") {
                index += 1
                guard index < bytes.count, isDigit(bytes[index]) else { return nil }
                let fractionStart = index
                skipDigits()
                zeroFraction = bytes[fractionStart..<index].allSatisfy { $0 == UInt8(ascii: "0") }
            }
            if index < bytes.count, bytes[index] == UInt8(ascii: "e") || bytes[index] == UInt8(ascii: "E") {
                integral = false
                index += 1
                if index < bytes.count, bytes[index] == UInt8(ascii: "+") || bytes[index] == UInt8(ascii: "-") { index += 1 }
                guard index < bytes.count, isDigit(bytes[index]) else { return nil }
                skipDigits()
            }
            let text = String(decoding: UnsafeBufferPointer(rebasing: bytes[start..<index]), as: UTF8.self)
            guard let double = Double(text), double.isFinite else { return nil }
            // `12` and `12.000` are read exactly as integers (as JSONDecoder does, past 2^53 too); `1e2` through the
            // double, only when it holds an integer.
            let exact: Int64?
            if integral && zeroFraction {
                exact = Int64(String(decoding: UnsafeBufferPointer(rebasing: bytes[start..<integerEnd]), as: UTF8.self))
            } else if integral {
                exact = nil
            } else {
                exact = Int64(exactly: double)
            }
            return .number(double, exactInteger: exact)
        }

        func isDigit(_ b: UInt8) -> Bool { b >= UInt8(ascii: "0") && b <= UInt8(ascii: "9") }

        mutating func skipDigits() {
            while index < bytes.count, isDigit(bytes[index]) { index += 1 }
        }
    }
}

/// Decodes any `Decodable` from a `ClaimJSON`, with the errors `JSONDecoder` gives (`keyNotFound`, `typeMismatch`,
/// `valueNotFound`, each with its coding path), so callers tell refusals apart as before.
struct ClaimsDecoder: Decoder, SingleValueDecodingContainer {
    let value: ClaimJSON
    /// The path is put together only when asked for (an error, a nested container): appending to it for every
    /// member read was an allocation per claim.
    private let parentPath: [any CodingKey]
    private let key: (any CodingKey)?
    var codingPath: [any CodingKey] { key.map { parentPath + [$0] } ?? parentPath }
    var userInfo: [CodingUserInfoKey: Any] { [:] }

    init(_ value: ClaimJSON, codingPath: [any CodingKey] = [], key: (any CodingKey)? = nil) {
        self.value = value
        self.parentPath = codingPath
        self.key = key
    }

    static func decode<T: Decodable>(_ type: T.Type, from value: ClaimJSON) throws -> T {
        try ClaimsDecoder(value).decode(type)
    }

    func mismatch(_ type: Any.Type) -> DecodingError {
        if value == .null {
            return .valueNotFound(type, .init(codingPath: codingPath, debugDescription: "expected \(type), found null"))
        }
        return .typeMismatch(type, .init(codingPath: codingPath, debugDescription: "expected \(type), found \(value.kind)"))
    }

    // MARK: Decoder

    func container<Key: CodingKey>(keyedBy type: Key.Type) throws -> KeyedDecodingContainer<Key> {
        guard case .object(let members) = value else { throw mismatch([String: Any].self) }
        return KeyedDecodingContainer(Keyed<Key>(members: members, codingPath: codingPath))
    }

    func unkeyedContainer() throws -> any UnkeyedDecodingContainer {
        guard case .array(let elements) = value else { throw mismatch([Any].self) }
        return Unkeyed(elements: elements, codingPath: codingPath)
    }

    func singleValueContainer() throws -> any SingleValueDecodingContainer { self }

    // MARK: SingleValueDecodingContainer

    func decodeNil() -> Bool { value == .null }

    func decode(_ type: Bool.Type) throws -> Bool {
        guard case .bool(let b) = value else { throw mismatch(type) }
        return b
    }

    func decode(_ type: String.Type) throws -> String {
        guard case .string(let s) = value else { throw mismatch(type) }
        return s
    }

    func decode(_ type: Double.Type) throws -> Double {
        guard case .number(let d, _) = value else { throw mismatch(type) }
        return d
    }

    func decode(_ type: Float.Type) throws -> Float {
        guard case .number(let d, _) = value else { throw mismatch(type) }
        let f = Float(d)
        guard f.isFinite else { throw notRepresentable(type) }
        return f
    }

    func integer<T: FixedWidthInteger>(_ type: T.Type) throws -> T {
        guard case .number(_, let exact) = value else { throw mismatch(type) }
        // Integers are read exactly, never through the double, and only within Int64 (no claim needs more).
        guard let exact, let n = T(exactly: exact) else { throw notRepresentable(type) }
        return n
    }

    func notRepresentable(_ type: Any.Type) -> DecodingError {
        .dataCorrupted(.init(codingPath: codingPath, debugDescription: "number does not fit in \(type)"))
    }

    func decode(_ type: Int.Type) throws -> Int { try integer(type) }
    func decode(_ type: Int8.Type) throws -> Int8 { try integer(type) }
    func decode(_ type: Int16.Type) throws -> Int16 { try integer(type) }
    func decode(_ type: Int32.Type) throws -> Int32 { try integer(type) }
    func decode(_ type: Int64.Type) throws -> Int64 { try integer(type) }
    func decode(_ type: UInt.Type) throws -> UInt { try integer(type) }
    func decode(_ type: UInt8.Type) throws -> UInt8 { try integer(type) }
    func decode(_ type: UInt16.Type) throws -> UInt16 { try integer(type) }
    func decode(_ type: UInt32.Type) throws -> UInt32 { try integer(type) }
    func decode(_ type: UInt64.Type) throws -> UInt64 { try integer(type) }
    func decode<T: Decodable>(_ type: T.Type) throws -> T { try T(from: self) }

    // MARK: Containers

    struct Keyed<Key: CodingKey>: KeyedDecodingContainerProtocol {
        let members: ClaimJSON.Members
        let codingPath: [any CodingKey]

        var allKeys: [Key] { members.pairs.compactMap { Key(stringValue: $0.name) } }
        func contains(_ key: Key) -> Bool { members[key.stringValue] != nil }

        func decoder(for key: Key) throws -> ClaimsDecoder {
            guard let member = members[key.stringValue] else {
                throw DecodingError.keyNotFound(
                    key, .init(codingPath: codingPath, debugDescription: "no value for \"\(key.stringValue)\""))
            }
            return ClaimsDecoder(member, codingPath: codingPath, key: key)
        }

        /// One lookup, where the protocol's default asks `contains`, then `decodeNil`, then `decode`.
        func presentDecoder(for key: Key) -> ClaimsDecoder? {
            guard let member = members[key.stringValue], member != .null else { return nil }
            return ClaimsDecoder(member, codingPath: codingPath, key: key)
        }
        func decodeIfPresent<T: Decodable>(_ type: T.Type, forKey key: Key) throws -> T? {
            try presentDecoder(for: key)?.decode(type)
        }
        func decodeIfPresent(_ type: String.Type, forKey key: Key) throws -> String? { try presentDecoder(for: key)?.decode(type) }
        func decodeIfPresent(_ type: Double.Type, forKey key: Key) throws -> Double? { try presentDecoder(for: key)?.decode(type) }
        func decodeIfPresent(_ type: Int64.Type, forKey key: Key) throws -> Int64? { try presentDecoder(for: key)?.decode(type) }

        func decodeNil(forKey key: Key) throws -> Bool { try decoder(for: key).decodeNil() }
        func decode(_ type: Bool.Type, forKey key: Key) throws -> Bool { try decoder(for: key).decode(type) }
        func decode(_ type: String.Type, forKey key: Key) throws -> String { try decoder(for: key).decode(type) }
        func decode(_ type: Double.Type, forKey key: Key) throws -> Double { try decoder(for: key).decode(type) }
        func decode(_ type: Float.Type, forKey key: Key) throws -> Float { try decoder(for: key).decode(type) }
        func decode(_ type: Int.Type, forKey key: Key) throws -> Int { try decoder(for: key).decode(type) }
        func decode(_ type: Int8.Type, forKey key: Key) throws -> Int8 { try decoder(for: key).decode(type) }
        func decode(_ type: Int16.Type, forKey key: Key) throws -> Int16 { try decoder(for: key).decode(type) }
        func decode(_ type: Int32.Type, forKey key: Key) throws -> Int32 { try decoder(for: key).decode(type) }
        func decode(_ type: Int64.Type, forKey key: Key) throws -> Int64 { try decoder(for: key).decode(type) }
        func decode(_ type: UInt.Type, forKey key: Key) throws -> UInt { try decoder(for: key).decode(type) }
        func decode(_ type: UInt8.Type, forKey key: Key) throws -> UInt8 { try decoder(for: key).decode(type) }
        func decode(_ type: UInt16.Type, forKey key: Key) throws -> UInt16 { try decoder(for: key).decode(type) }
        func decode(_ type: UInt32.Type, forKey key: Key) throws -> UInt32 { try decoder(for: key).decode(type) }
        func decode(_ type: UInt64.Type, forKey key: Key) throws -> UInt64 { try decoder(for: key).decode(type) }
        func decode<T: Decodable>(_ type: T.Type, forKey key: Key) throws -> T { try decoder(for: key).decode(type) }

        func nestedContainer<NestedKey: CodingKey>(keyedBy type: NestedKey.Type, forKey key: Key) throws
            -> KeyedDecodingContainer<NestedKey>
        { try decoder(for: key).container(keyedBy: type) }
        func nestedUnkeyedContainer(forKey key: Key) throws -> any UnkeyedDecodingContainer {
            try decoder(for: key).unkeyedContainer()
        }
        func superDecoder() throws -> any Decoder { ClaimsDecoder(.object(members), codingPath: codingPath) }
        func superDecoder(forKey key: Key) throws -> any Decoder { try decoder(for: key) }
    }

    struct Unkeyed: UnkeyedDecodingContainer {
        let elements: [ClaimJSON]
        let codingPath: [any CodingKey]
        var currentIndex = 0

        init(elements: [ClaimJSON], codingPath: [any CodingKey]) {
            self.elements = elements
            self.codingPath = codingPath
        }

        var count: Int? { elements.count }
        var isAtEnd: Bool { currentIndex >= elements.count }

        struct Index: CodingKey {
            var intValue: Int?
            var stringValue: String { "\(intValue ?? 0)" }
            init(_ i: Int) { intValue = i }
            init?(stringValue: String) { nil }
            init?(intValue: Int) { self.intValue = intValue }
        }

        /// The next element's decoder; the index moves on only when `body` succeeds, as `JSONDecoder`'s does.
        mutating func next<T>(_ type: Any.Type, _ body: (ClaimsDecoder) throws -> T) throws -> T {
            guard !isAtEnd else {
                throw DecodingError.valueNotFound(
                    type, .init(codingPath: codingPath + [Index(currentIndex)], debugDescription: "the array has ended"))
            }
            let result = try body(ClaimsDecoder(elements[currentIndex], codingPath: codingPath, key: Index(currentIndex)))
            currentIndex += 1
            return result
        }

        mutating func decodeNil() throws -> Bool {
            guard !isAtEnd, elements[currentIndex] == .null else { return false }
            currentIndex += 1
            return true
        }

        mutating func decode(_ type: Bool.Type) throws -> Bool { try next(type) { try $0.decode(type) } }
        mutating func decode(_ type: String.Type) throws -> String { try next(type) { try $0.decode(type) } }
        mutating func decode(_ type: Double.Type) throws -> Double { try next(type) { try $0.decode(type) } }
        mutating func decode(_ type: Float.Type) throws -> Float { try next(type) { try $0.decode(type) } }
        mutating func decode(_ type: Int.Type) throws -> Int { try next(type) { try $0.decode(type) } }
        mutating func decode(_ type: Int8.Type) throws -> Int8 { try next(type) { try $0.decode(type) } }
        mutating func decode(_ type: Int16.Type) throws -> Int16 { try next(type) { try $0.decode(type) } }
        mutating func decode(_ type: Int32.Type) throws -> Int32 { try next(type) { try $0.decode(type) } }
        mutating func decode(_ type: Int64.Type) throws -> Int64 { try next(type) { try $0.decode(type) } }
        mutating func decode(_ type: UInt.Type) throws -> UInt { try next(type) { try $0.decode(type) } }
        mutating func decode(_ type: UInt8.Type) throws -> UInt8 { try next(type) { try $0.decode(type) } }
        mutating func decode(_ type: UInt16.Type) throws -> UInt16 { try next(type) { try $0.decode(type) } }
        mutating func decode(_ type: UInt32.Type) throws -> UInt32 { try next(type) { try $0.decode(type) } }
        mutating func decode(_ type: UInt64.Type) throws -> UInt64 { try next(type) { try $0.decode(type) } }
        mutating func decode<T: Decodable>(_ type: T.Type) throws -> T { try next(type) { try $0.decode(type) } }

        mutating func nestedContainer<NestedKey: CodingKey>(keyedBy type: NestedKey.Type) throws
            -> KeyedDecodingContainer<NestedKey>
        { try next(KeyedDecodingContainer<NestedKey>.self) { try $0.container(keyedBy: type) } }
        mutating func nestedUnkeyedContainer() throws -> any UnkeyedDecodingContainer {
            try next((any UnkeyedDecodingContainer).self) { try $0.unkeyedContainer() }
        }
        mutating func superDecoder() throws -> any Decoder { try next((any Decoder).self) { $0 } }
    }
}
