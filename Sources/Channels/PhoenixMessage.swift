/// One Phoenix Channels V2 message: `[join_ref, ref, topic, event, payload]` in a text frame, or a binary frame.
public struct PhoenixMessage: Sendable, Equatable {
    public var joinRef: String?
    public var ref: String?
    public var topic: String
    public var event: String
    public var payload: Payload

    public enum Payload: Sendable, Equatable {
        case json(JSON)
        /// Raw bytes carried by a binary frame.
        case binary([UInt8])

        public var json: JSON? { if case .json(let j) = self { j } else { nil } }
    }

    public init(joinRef: String?, ref: String?, topic: String, event: String, payload: JSON) {
        self.init(joinRef: joinRef, ref: ref, topic: topic, event: event, payload: .json(payload))
    }

    public init(joinRef: String?, ref: String?, topic: String, event: String, payload: Payload) {
        self.joinRef = joinRef
        self.ref = ref
        self.topic = topic
        self.event = event
        self.payload = payload
    }

    /// A `phx_reply` to a request.
    public static func reply(
        joinRef: String?, ref: String?, topic: String, status: String, response: JSON
    ) -> PhoenixMessage {
        PhoenixMessage(joinRef: joinRef, ref: ref, topic: topic, event: "phx_reply",
                       payload: .object(["status": .string(status), "response": response]))
    }

    /// For replies: `status` and `response` of the payload (binary replies have status in `binaryStatus`).
    public var replyStatus: String? {
        if case .json(let j) = payload { return j["status"]?.stringValue }
        return binaryStatus
    }
    public var replyResponse: JSON? { payload.json?["response"] }

    /// Status of a binary reply frame (kind 1).
    public var binaryStatus: String?

    public var isBinary: Bool { if case .binary = payload { true } else { false } }

    // MARK: Codec

    public enum DecodeError: Error, Equatable, CustomStringConvertible {
        case notAnArray
        case wrongFieldTypes
        case json(JSONParseError)
        case binaryTooShort
        case unknownBinaryKind(UInt8)
        /// join_ref, ref and topic must fit the one-byte lengths of binary frames.
        case fieldTooLong(String)

        public var description: String {
            switch self {
            case .notAnArray: "message is not a 5-element JSON array"
            case .wrongFieldTypes: "message fields have the wrong types (join_ref, ref: string|null; topic, event: string)"
            case .json(let e): "\(e)"
            case .binaryTooShort: "binary frame is shorter than its header says"
            case .unknownBinaryKind(let k): "binary frame of unknown kind \(k)"
            case .fieldTooLong(let f): "\(f) is longer than 255 bytes"
            }
        }
    }

    /// How deep a frame may nest (its payload one level less). Twice what Lightning takes in a webhook or API body
    /// (512, `JSON.parse`'s default): a state at that depth still fits inside any event or reply that carries it
    /// (a claim reply puts an input 4 levels down, `run:complete` a final state 1). At 512 for frames, such a message
    /// was refused by the side that read it, and sent again for ever.
    public static let maxDepth = 1024

    /// Decodes a text frame.
    public static func decode(text bytes: some Collection<UInt8>) throws -> PhoenixMessage {
        let value: JSON
        do { value = try JSON.parse(bytes, maxDepth: maxDepth) } catch let e as JSONParseError { throw DecodeError.json(e) }
        guard case .array(let a) = value, a.count == 5 else { throw DecodeError.notAnArray }
        let (joinRef, ref, topic, event) = try fields(a[0], a[1], a[2], a[3])
        return PhoenixMessage(joinRef: joinRef, ref: ref, topic: topic, event: event, payload: .json(a[4]))
    }

    /// The four fields before the payload, checked: refs are strings, integers or null; topic and event strings.
    private static func fields(_ a0: JSON, _ a1: JSON, _ a2: JSON, _ a3: JSON) throws
        -> (joinRef: String?, ref: String?, topic: String, event: String)
    {
        func optString(_ v: JSON) throws -> String? {
            switch v {
            case .null: return nil
            case .string(let s): return s
            case .int(let i): return String(i)
            default: throw DecodeError.wrongFieldTypes
            }
        }
        guard case .string(let topic) = a2, case .string(let event) = a3 else { throw DecodeError.wrongFieldTypes }
        let joinRef = try optString(a0), ref = try optString(a1)
        // A reply to this message may go out as a binary frame, whose lengths are one byte each.
        for (name, value) in [("join_ref", joinRef), ("ref", ref), ("topic", topic), ("event", event)]
        where (value?.utf8.count ?? 0) > 255 {
            throw DecodeError.fieldTooLong(name)
        }
        return (joinRef, ref, topic, event)
    }

    /// A text frame's envelope with its payload left unparsed: for handlers that read a payload in one pass
    /// (`RawPayloadHandler.rawPayloadEvents`). The same checks as `decode(text:)` on the four fields; the payload is
    /// the bytes between the fourth comma and the closing bracket (whitespace trimmed), still to be parsed.
    public struct Envelope: Sendable, Equatable {
        public var joinRef: String?
        public var ref: String?
        public var topic: String
        public var event: String
        /// Where the payload's JSON text lies in the frame.
        public var payload: Range<Int>
    }

    public static func envelope(text bytes: [UInt8]) throws -> Envelope {
        try bytes.withUnsafeBufferPointer { buffer in
            var p = JSON.Parser(bytes: buffer, maxDepth: 2)
            func expect(_ c: UInt8) throws {
                p.skipSpace()
                guard p.i < buffer.count, buffer[p.i] == c else { throw DecodeError.notAnArray }
                p.i += 1
            }
            func field() throws -> JSON {
                p.skipSpace()
                guard p.i < buffer.count else { throw DecodeError.notAnArray }
                do { return try p.value(depth: 1) } catch let e as JSONParseError { throw DecodeError.json(e) }
            }
            try expect(UInt8(ascii: "["))
            let a0 = try field()
            try expect(UInt8(ascii: ","))
            let a1 = try field()
            try expect(UInt8(ascii: ","))
            let a2 = try field()
            try expect(UInt8(ascii: ","))
            let a3 = try field()
            try expect(UInt8(ascii: ","))
            let (joinRef, ref, topic, event) = try fields(a0, a1, a2, a3)
            p.skipSpace()
            let start = p.i
            func isSpace(_ b: UInt8) -> Bool { b == 0x20 || b == 0x0A || b == 0x0D || b == 0x09 }
            var end = buffer.count
            while end > start, isSpace(buffer[end - 1]) { end -= 1 }
            guard end > start, buffer[end - 1] == UInt8(ascii: "]") else { throw DecodeError.notAnArray }
            end -= 1
            while end > start, isSpace(buffer[end - 1]) { end -= 1 }
            guard end > start else { throw DecodeError.notAnArray }
            return Envelope(joinRef: joinRef, ref: ref, topic: topic, event: event, payload: start..<end)
        }
    }

    /// The message whose envelope was read: its payload parsed (it sits one level down in the frame, so the frame's
    /// nesting limit leaves it one less). A payload that is not JSON gets the error decoding the whole frame gives.
    public static func message(_ e: Envelope, frame: [UInt8]) throws -> PhoenixMessage {
        do {
            let payload = try JSON.parse(frame[e.payload], maxDepth: maxDepth - 1)
            return PhoenixMessage(joinRef: e.joinRef, ref: e.ref, topic: e.topic, event: e.event, payload: .json(payload))
        } catch let error as JSONParseError {
            throw frameError(frame, else: error)
        }
    }

    /// What decoding the whole frame says is wrong with it (offsets into the frame, as every malformed message is
    /// told); `payloadError` if the frame somehow decodes.
    public static func frameError(_ frame: [UInt8], else payloadError: JSONParseError) -> any Error {
        do { _ = try decode(text: frame) } catch { return error }
        return DecodeError.json(payloadError)
    }

    /// Encodes as a text frame (JSON payloads only).
    public func encodeText() -> [UInt8] {
        var out = [UInt8]()
        out.reserveCapacity(96)
        out.append(UInt8(ascii: "["))
        if let joinRef { JSON.writeString(joinRef, to: &out) } else { out.append(contentsOf: Array("null".utf8)) }
        out.append(UInt8(ascii: ","))
        if let ref { JSON.writeString(ref, to: &out) } else { out.append(contentsOf: Array("null".utf8)) }
        out.append(UInt8(ascii: ","))
        JSON.writeString(topic, to: &out)
        out.append(UInt8(ascii: ","))
        JSON.writeString(event, to: &out)
        out.append(UInt8(ascii: ","))
        switch payload {
        case .json(let j): j.write(to: &out)
        case .binary: out.append(contentsOf: Array("null".utf8))
        }
        out.append(UInt8(ascii: "]"))
        return out
    }

    /// A text frame around a payload that is already encoded JSON (`rawPayload`): for code that writes a large
    /// payload directly instead of building a `JSON` value for it (a server's push: no ref; a client's: its ref).
    /// `LWS_PRE` bytes of room may be asked for in front (`headroom`), so the frame is not copied again to be sent.
    public static func encodeText(joinRef: String?, ref: String? = nil, topic: String, event: String, rawPayload: [UInt8],
                                  headroom: Int = 0) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: headroom)
        out.reserveCapacity(headroom + rawPayload.count + topic.utf8.count + event.utf8.count + 48)
        out.append(UInt8(ascii: "["))
        if let joinRef { JSON.writeString(joinRef, to: &out) } else { out.append(contentsOf: Array("null".utf8)) }
        out.append(UInt8(ascii: ","))
        if let ref { JSON.writeString(ref, to: &out) } else { out.append(contentsOf: Array("null".utf8)) }
        out.append(UInt8(ascii: ","))
        JSON.writeString(topic, to: &out)
        out.append(UInt8(ascii: ","))
        JSON.writeString(event, to: &out)
        out.append(UInt8(ascii: ","))
        out.append(contentsOf: rawPayload)
        out.append(UInt8(ascii: "]"))
        return out
    }

    /// Binary frame kinds of the V2 serializer.
    public enum BinaryKind: UInt8, Sendable { case push = 0, reply = 1, broadcast = 2 }

    /// Encodes a binary frame: a reply (kind 1, with `status`), a push (kind 0) or a broadcast (kind 2).
    public static func encodeBinary(
        kind: BinaryKind, joinRef: String?, ref: String?, topic: String, event: String? = nil, status: String? = nil,
        payload: [UInt8]
    ) -> [UInt8] {
        // Lengths are one byte: longer fields are cut (decode refuses them, so only our own code could pass one).
        func field(_ s: String?) -> [UInt8] { Array(Array((s ?? "").utf8).prefix(255)) }
        let j = field(joinRef), r = field(ref), t = field(topic)
        var out = [kind.rawValue]
        switch kind {
        case .reply:
            let s = field(status ?? "ok")
            out += [UInt8(j.count), UInt8(r.count), UInt8(t.count), UInt8(s.count)] + j + r + t + s
        case .push:
            let e = field(event)
            out += [UInt8(j.count), UInt8(t.count), UInt8(e.count)] + j + t + e
        case .broadcast:
            let e = field(event)
            out += [UInt8(t.count), UInt8(e.count)] + t + e
        }
        return out + payload
    }

    /// Decodes a binary frame.
    public static func decode(binary bytes: [UInt8]) throws -> PhoenixMessage {
        guard let kindByte = bytes.first else { throw DecodeError.binaryTooShort }
        guard let kind = BinaryKind(rawValue: kindByte) else { throw DecodeError.unknownBinaryKind(kindByte) }
        let headerCount = kind == .reply ? 4 : (kind == .push ? 3 : 2)
        guard bytes.count >= 1 + headerCount else { throw DecodeError.binaryTooShort }
        let lengths = bytes[1..<(1 + headerCount)].map(Int.init)
        var offset = 1 + headerCount
        var fields: [String] = []
        for n in lengths {
            guard offset + n <= bytes.count else { throw DecodeError.binaryTooShort }
            fields.append(String(decoding: bytes[offset..<(offset + n)], as: UTF8.self))
            offset += n
        }
        let rest = Array(bytes[offset...])
        func nonEmpty(_ s: String) -> String? { s.isEmpty ? nil : s }
        switch kind {
        case .reply:
            var m = PhoenixMessage(joinRef: nonEmpty(fields[0]), ref: nonEmpty(fields[1]), topic: fields[2],
                                   event: "phx_reply", payload: .binary(rest))
            m.binaryStatus = fields[3]
            return m
        case .push:
            return PhoenixMessage(joinRef: nonEmpty(fields[0]), ref: nil, topic: fields[1], event: fields[2],
                                  payload: .binary(rest))
        case .broadcast:
            return PhoenixMessage(joinRef: nil, ref: nil, topic: fields[0], event: fields[1], payload: .binary(rest))
        }
    }
}
