import Foundation

// Fuzz target: cron expressions (Sources/Lightning/Cron/CronExpression.swift). Never crashes; an accepted
// expression's next slot is later than the time asked about, and a whole number of minutes.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let text = String(decoding: UnsafeBufferPointer(start: data, count: min(size, 200)), as: UTF8.self)
    guard let cron = try? CronExpression(text) else { return 0 }
    let from = Date(timeIntervalSince1970: 1_796_205_600)
    if let next = cron.next(after: from) {
        if next <= from { fatalError("next slot is not after the start") }
        if next.timeIntervalSince1970.truncatingRemainder(dividingBy: 60) != 0 { fatalError("next slot is not on a minute") }
    }
    return 0
}
