// Fuzz target: log text cleaning (Sources/LightningProtocol/LogText.swift). Whatever a job prints, what is
// stored has no control character but tab, newline and the ESC of a colour sequence, and cleaning it again
// changes nothing.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let text = String(decoding: UnsafeBufferPointer(start: data, count: size), as: UTF8.self)
    let clean = LogText.clean(text)
    if LogText.clean(clean) != clean { fatalError("cleaning is not idempotent") }
    let scalars = Array(clean.unicodeScalars)
    for (i, s) in scalars.enumerated() where s.properties.generalCategory == .control && s != "\t" && s != "\n" {
        // Only ESC '[' digits/semicolons 'm' may remain.
        guard s.value == 0x1B, i + 1 < scalars.count, scalars[i + 1] == "[" else { fatalError("a control character survived: \(s.value)") }
        var j = i + 2
        while j < scalars.count, scalars[j] == ";" || ("0"..."9").contains(scalars[j]) { j += 1 }
        guard j < scalars.count, scalars[j] == "m" else { fatalError("an escape that is not a colour survived") }
    }
    _ = LogText.withoutColour(clean)
    return 0
}
