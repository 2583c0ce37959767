// Fuzz target: Phoenix Channels V2 frames, text and binary (Sources/Channels/PhoenixMessage.swift). The first
// byte picks the kind. Never crashes; a decoded text frame encodes to a frame that decodes to the same message.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    guard size > 0 else { return 0 }
    let bytes = Array(UnsafeBufferPointer(start: data + 1, count: size - 1))
    if data[0] & 1 == 0 {
        guard let m = try? PhoenixMessage.decode(text: bytes) else { return 0 }
        guard let again = try? PhoenixMessage.decode(text: m.encodeText()) else { fatalError("our own text frame does not decode") }
        if again.topic != m.topic || again.event != m.event || again.ref != m.ref || again.joinRef != m.joinRef {
            fatalError("text frame round trip changed the envelope")
        }
    } else {
        _ = try? PhoenixMessage.decode(binary: bytes)
    }
    return 0
}
