import Foundation

/// An edge condition (PROTOCOL.md 5.1): `always`, `on_job_success`, `on_job_failure`, or an expression in a
/// small, safe subset of JavaScript over `state`.
///
/// The subset: `state` and property access on it (`state.a.b`, `state["a"]`, `state.items[0]`, optional
/// `?.`), string/number/`true`/`false`/`null`/`undefined` literals, `== === != !== < <= > >= && || !`, and
/// parentheses. Nothing else parses, and nothing is ever executed: the expression is parsed into a tree once
/// and evaluated against the state by this file alone.
public enum EdgeCondition: Sendable, Equatable {
    case always
    case onJobSuccess
    case onJobFailure
    case expression(Expression)

    public struct Error: Swift.Error, Equatable, Sendable, CustomStringConvertible {
        public var message: String
        public var description: String { message }
        init(_ message: String) { self.message = message }
    }

    /// Parses a condition; throws an `EdgeCondition.Error` naming the problem and its position.
    public static func parse(_ text: String) throws -> EdgeCondition {
        switch text.trimmingCharacters(in: .whitespacesAndNewlines) {
        case "always", "": return .always
        case "on_job_success": return .onJobSuccess
        case "on_job_failure": return .onJobFailure
        default:
            var parser = Parser(text)
            return .expression(try parser.parseWhole())
        }
    }

    /// Whether the edge is followed, given whether its upstream step failed and the upstream output state
    /// (a `JSONSerialization` value). Throws when an expression cannot be evaluated (e.g. `state.a.b` where
    /// `state.a` is null), which fails the attempt with `EdgeConditionError`.
    public func holds(upstreamFailed: Bool, state: Any) throws -> Bool {
        switch self {
        case .always: return true
        case .onJobSuccess: return !upstreamFailed
        case .onJobFailure: return upstreamFailed
        case .expression(let e): return try e.evaluate(Value(json: state)).truthy
        }
    }

    // MARK: - The expression tree

    public indirect enum Expression: Sendable, Equatable {
        case state
        case literal(Value)
        case member(Expression, Expression, optional: Bool)
        case not(Expression)
        case binary(String, Expression, Expression)

        func evaluate(_ state: Value) throws -> Value {
            switch self {
            case .state: return state
            case .literal(let v): return v
            case .not(let e): return .bool(!(try e.evaluate(state).truthy))
            case .member(let base, let key, let optional):
                let b = try base.evaluate(state)
                if b.isNullish {
                    if optional { return .undefined }
                    throw Error("cannot read property \(try key.evaluate(state).display) of \(b.display)")
                }
                return b.member(try key.evaluate(state))
            case .binary(let op, let l, let r):
                let lv = try l.evaluate(state)
                switch op {
                case "&&": return lv.truthy ? try r.evaluate(state) : lv
                case "||": return lv.truthy ? lv : try r.evaluate(state)
                default: break
                }
                let rv = try r.evaluate(state)
                switch op {
                case "===": return .bool(lv.strictEquals(rv))
                case "!==": return .bool(!lv.strictEquals(rv))
                case "==": return .bool(lv.looseEquals(rv))
                case "!=": return .bool(!lv.looseEquals(rv))
                default: return .bool(Value.compare(lv, rv, op))
                }
            }
        }
    }

    /// A JavaScript value, as far as conditions need one. Arrays and objects are kept as JSON values.
    public enum Value: Sendable, Equatable {
        case undefined, null
        case bool(Bool)
        case number(Double)
        case string(String)
        case array(JSONBox)
        case object(JSONBox)

        init(json: Any?) {
            switch json {
            case nil: self = .undefined
            case is NSNull: self = .null
            case let s as String: self = .string(s)
            case let n as NSNumber:
                self = String(cString: n.objCType) == "c" ? .bool(n.boolValue) : .number(n.doubleValue)
            case let b as Bool: self = .bool(b)
            case let a as [Any]: self = .array(JSONBox(a))
            case let o as [String: Any]: self = .object(JSONBox(o))
            default: self = .undefined
            }
        }

        var isNullish: Bool { self == .undefined || self == .null }

        var truthy: Bool {
            switch self {
            case .undefined, .null: false
            case .bool(let b): b
            case .number(let n): n != 0 && !n.isNaN
            case .string(let s): !s.isEmpty
            case .array, .object: true
            }
        }

        var display: String {
            switch self {
            case .undefined: "undefined"
            case .null: "null"
            case .bool(let b): String(b)
            case .number(let n): n.rounded() == n && abs(n) < 1e15 ? String(Int64(n)) : String(n)
            case .string(let s): s
            case .array: "[array]"
            case .object: "[object]"
            }
        }

        var toNumber: Double {
            switch self {
            case .undefined: .nan
            case .null: 0
            case .bool(let b): b ? 1 : 0
            case .number(let n): n
            case .string(let s):
                s.trimmingCharacters(in: .whitespaces).isEmpty ? 0 : Double(s.trimmingCharacters(in: .whitespaces)) ?? .nan
            case .array, .object: .nan
            }
        }

        func member(_ key: Value) -> Value {
            switch self {
            case .object(let box):
                return Value(json: (box.value as? [String: Any])?[key.display])
            case .array(let box):
                let items = box.value as? [Any] ?? []
                if case .string("length") = key { return .number(Double(items.count)) }
                let n = key.toNumber
                guard n.rounded() == n, n >= 0, n < Double(items.count) else { return .undefined }
                return Value(json: items[Int(n)])
            case .string(let s):
                if case .string("length") = key { return .number(Double(s.count)) }
                return .undefined
            default: return .undefined
            }
        }

        func strictEquals(_ other: Value) -> Bool {
            switch (self, other) {
            case (.number(let a), .number(let b)): a == b
            case (.array(let a), .array(let b)), (.object(let a), .object(let b)): a === b
            case (.array, _), (.object, _): false
            default: self == other
            }
        }

        func looseEquals(_ other: Value) -> Bool {
            if isNullish || other.isNullish { return isNullish && other.isNullish }
            switch (self, other) {
            case (.string, .string), (.number, .number), (.bool, .bool): return strictEquals(other)
            case (.array, .array), (.object, .object): return strictEquals(other)
            case (.array, _), (.object, _), (_, .array), (_, .object): return false
            default: return toNumber == other.toNumber
            }
        }

        static func compare(_ l: Value, _ r: Value, _ op: String) -> Bool {
            if case .string(let a) = l, case .string(let b) = r {
                switch op {
                case "<": return a < b
                case "<=": return a <= b
                case ">": return a > b
                default: return a >= b
                }
            }
            let a = l.toNumber, b = r.toNumber
            switch op {
            case "<": return a < b
            case "<=": return a <= b
            case ">": return a > b
            default: return a >= b
            }
        }
    }

    /// Holds a JSON array or object; compared by identity, as JavaScript compares objects.
    public final class JSONBox: @unchecked Sendable, Equatable {
        let value: Any
        init(_ value: Any) { self.value = value }
        public static func == (a: JSONBox, b: JSONBox) -> Bool { a === b }
    }
}

// MARK: - Parser

extension EdgeCondition {
    struct Parser {
        private let chars: [Character]
        private var i = 0
        /// Bounds that keep parsing, evaluating and freeing a condition off the end of the stack: a condition nested
        /// 20,000 deep crashed Lightning at `apply` (every step of the parse, the walk and the free is a call).
        static let maxNesting = 100
        static let maxOperations = 1_000
        private var nesting = 0
        private var operations = 0

        init(_ text: String) { chars = Array(text) }

        mutating func parseWhole() throws -> Expression {
            let e = try parseOr()
            skipSpace()
            if i < chars.count { throw fail("unexpected '\(chars[i])'") }
            return e
        }

        private func fail(_ what: String) -> Error { Error("invalid condition: \(what) at position \(i + 1)") }

        private mutating func skipSpace() {
            while i < chars.count, chars[i].isWhitespace { i += 1 }
        }

        private mutating func eat(_ token: String) -> Bool {
            skipSpace()
            let t = Array(token)
            guard i + t.count <= chars.count, Array(chars[i..<i + t.count]) == t else { return false }
            // `=` must not be followed by another `=` that belongs to a longer operator we did not ask for.
            if token == "==" || token == "!=", i + 2 < chars.count, chars[i + 2] == "=" { return false }
            if (token == "<" || token == ">"), i + 1 < chars.count, chars[i + 1] == "=" { return false }
            i += t.count
            return true
        }

        /// One level deeper: parentheses, brackets and `!` each nest.
        private mutating func nest() throws {
            nesting += 1
            if nesting > Self.maxNesting { throw fail("nested deeper than \(Self.maxNesting) levels") }
        }

        /// One operator, property or index more: a condition's tree is at most this deep.
        private mutating func operation() throws {
            operations += 1
            if operations > Self.maxOperations { throw fail("more than \(Self.maxOperations) operators, properties and indexes") }
        }

        private mutating func binary(_ op: String, _ l: Expression, _ r: Expression) throws -> Expression {
            try operation()
            return .binary(op, l, r)
        }

        private mutating func member(_ e: Expression, _ key: Expression, optional: Bool) throws -> Expression {
            try operation()
            return .member(e, key, optional: optional)
        }

        private mutating func parseOr() throws -> Expression {
            try nest()
            defer { nesting -= 1 }
            var e = try parseAnd()
            while eat("||") { e = try binary("||", e, try parseAnd()) }
            return e
        }

        private mutating func parseAnd() throws -> Expression {
            var e = try parseEquality()
            while eat("&&") { e = try binary("&&", e, try parseEquality()) }
            return e
        }

        private mutating func parseEquality() throws -> Expression {
            var e = try parseRelational()
            while true {
                if eat("===") { e = try binary("===", e, try parseRelational()) }
                else if eat("!==") { e = try binary("!==", e, try parseRelational()) }
                else if eat("==") { e = try binary("==", e, try parseRelational()) }
                else if eat("!=") { e = try binary("!=", e, try parseRelational()) }
                else { return e }
            }
        }

        private mutating func parseRelational() throws -> Expression {
            var e = try parseUnary()
            while true {
                if eat("<=") { e = try binary("<=", e, try parseUnary()) }
                else if eat(">=") { e = try binary(">=", e, try parseUnary()) }
                else if eat("<") { e = try binary("<", e, try parseUnary()) }
                else if eat(">") { e = try binary(">", e, try parseUnary()) }
                else { return e }
            }
        }

        private mutating func parseUnary() throws -> Expression {
            skipSpace()
            if i < chars.count, chars[i] == "!", !(i + 1 < chars.count && chars[i + 1] == "=") {
                i += 1
                try nest()
                defer { nesting -= 1 }
                try operation()
                return .not(try parseUnary())
            }
            return try parsePostfix()
        }

        private mutating func parsePostfix() throws -> Expression {
            var e = try parsePrimary()
            while true {
                skipSpace()
                let optional = eat("?.")
                if optional || eat(".") {
                    skipSpace()
                    if !optional || (i < chars.count && chars[i] != "[") {
                        let name = try identifier()
                        e = try member(e, .literal(.string(name)), optional: optional)
                        continue
                    }
                }
                if eat("[") {
                    let key = try parseOr()
                    guard eat("]") else { throw fail("expected ']'") }
                    e = try member(e, key, optional: optional)
                    continue
                }
                if optional { throw fail("expected a property after '?.'") }
                if eat("(") { throw fail("function calls are not allowed") }
                return e
            }
        }

        private mutating func identifier() throws -> String {
            let start = i
            while i < chars.count, chars[i].isLetter || chars[i].isNumber || chars[i] == "_" || chars[i] == "$" {
                i += 1
            }
            guard i > start, !chars[start].isNumber else { throw fail("expected a property name") }
            return String(chars[start..<i])
        }

        private mutating func parsePrimary() throws -> Expression {
            skipSpace()
            guard i < chars.count else { throw fail("unexpected end of expression") }
            let c = chars[i]
            if c == "(" {
                i += 1
                let e = try parseOr()
                guard eat(")") else { throw fail("expected ')'") }
                return e
            }
            if c == "\"" || c == "'" { return .literal(.string(try string(quote: c))) }
            if c.isNumber || (c == "-" && i + 1 < chars.count && chars[i + 1].isNumber) || c == "." {
                return .literal(.number(try number()))
            }
            if c.isLetter || c == "_" || c == "$" {
                let name = try identifier()
                switch name {
                case "state": return .state
                case "true": return .literal(.bool(true))
                case "false": return .literal(.bool(false))
                case "null": return .literal(.null)
                case "undefined": return .literal(.undefined)
                default: throw fail("unknown name '\(name)' (only 'state' may be used)")
                }
            }
            throw fail("unexpected '\(c)'")
        }

        private mutating func number() throws -> Double {
            let start = i
            if chars[i] == "-" { i += 1 }
            while i < chars.count, chars[i].isNumber || chars[i] == "." || chars[i] == "e" || chars[i] == "E" {
                i += 1
            }
            guard let n = Double(String(chars[start..<i])) else { throw fail("bad number") }
            return n
        }

        private mutating func string(quote: Character) throws -> String {
            i += 1
            var out = ""
            while i < chars.count {
                let c = chars[i]
                i += 1
                if c == quote { return out }
                if c == "\\" {
                    guard i < chars.count else { break }
                    let e = chars[i]
                    i += 1
                    switch e {
                    case "n": out.append("\n")
                    case "t": out.append("\t")
                    case "r": out.append("\r")
                    default: out.append(e)
                    }
                } else {
                    out.append(c)
                }
            }
            throw fail("unterminated string")
        }
    }
}
