import Foundation

// Fuzz target: the edge-condition language (Sources/LightningProtocol/EdgeCondition.swift), parsed and
// evaluated against a fixed state. Never crashes and never hangs.
let state: Any = try! JSONSerialization.jsonObject(with: Data(#"{"data":{"n":3,"list":[1,"a",null,true],"s":"x"},"errors":null,"x":0}"#.utf8))

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let text = String(decoding: UnsafeBufferPointer(start: data, count: min(size, 500)), as: UTF8.self)
    guard let condition = try? EdgeCondition.parse(text) else { return 0 }
    _ = try? condition.holds(upstreamFailed: size % 2 == 0, state: state)
    return 0
}
