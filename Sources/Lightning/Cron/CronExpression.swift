import Foundation

/// A standard 5-field cron expression (`minute hour day-of-month month day-of-week`), evaluated in UTC.
///
/// Fields take `*`, numbers, ranges `a-b`, steps `*/n` and `a-b/n`, lists `a,b`, month names `JAN`–`DEC` and
/// day names `SUN`–`SAT` (0 and 7 are both Sunday). The macros `@yearly` (`@annually`), `@monthly`, `@weekly`,
/// `@daily` (`@midnight`) and `@hourly` are accepted. As in Vixie cron, when both day-of-month and day-of-week
/// are restricted, a day matches when either does.
public struct CronExpression: Sendable, Equatable, CustomStringConvertible {
    public let source: String
    let minutes: Set<Int>
    let hours: Set<Int>
    let daysOfMonth: Set<Int>
    let months: Set<Int>
    let daysOfWeek: Set<Int>
    let domRestricted: Bool
    let dowRestricted: Bool

    public var description: String { source }

    public struct Error: Swift.Error, Equatable, Sendable, CustomStringConvertible {
        public let message: String
        public var description: String { message }
    }

    private static let macros = [
        "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *",
        "@weekly": "0 0 * * 0", "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *",
    ]
    private static let monthNames = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]
    private static let dayNames = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"]

    public init(_ text: String) throws {
        let trimmed = text.trimmingCharacters(in: .whitespaces)
        source = trimmed
        let expanded = Self.macros[trimmed.lowercased()] ?? trimmed
        let fields = expanded.split(whereSeparator: { $0 == " " || $0 == "\t" }).map(String.init)
        guard fields.count == 5 else {
            throw Error(message: "cron expression '\(trimmed)' has \(fields.count) fields; expected 5 "
                + "(minute hour day-of-month month day-of-week)")
        }
        minutes = try Self.field(fields[0], "minute", 0...59, names: [])
        hours = try Self.field(fields[1], "hour", 0...23, names: [])
        daysOfMonth = try Self.field(fields[2], "day-of-month", 1...31, names: [])
        months = try Self.field(fields[3], "month", 1...12, names: Self.monthNames, nameBase: 1)
        var dow = try Self.field(fields[4], "day-of-week", 0...7, names: Self.dayNames)
        if dow.remove(7) != nil { dow.insert(0) }
        daysOfWeek = dow
        domRestricted = !fields[2].hasPrefix("*")
        dowRestricted = !fields[4].hasPrefix("*")
    }

    private static func field(
        _ text: String, _ name: String, _ range: ClosedRange<Int>, names: [String], nameBase: Int = 0
    ) throws -> Set<Int> {
        func value(_ s: Substring) throws -> Int {
            if let n = Int(s) {
                guard range.contains(n) else {
                    throw Error(message: "\(name) value \(n) is out of range \(range.lowerBound)-\(range.upperBound)")
                }
                return n
            }
            if let i = names.firstIndex(of: s.uppercased()) { return i + nameBase }
            throw Error(message: "\(name) field has an invalid value '\(s)'")
        }
        var result = Set<Int>()
        for part in text.split(separator: ",", omittingEmptySubsequences: false) {
            guard !part.isEmpty else { throw Error(message: "\(name) field '\(text)' has an empty list item") }
            let pieces = part.split(separator: "/", omittingEmptySubsequences: false)
            guard pieces.count <= 2 else { throw Error(message: "\(name) field '\(part)' has more than one '/'") }
            var step = 1
            if pieces.count == 2 {
                guard let s = Int(pieces[1]), s > 0 else {
                    throw Error(message: "\(name) field '\(part)' has an invalid step '\(pieces[1])'")
                }
                step = s
            }
            let lower: Int, upper: Int
            if pieces[0] == "*" {
                (lower, upper) = (range.lowerBound, range.upperBound)
            } else if let dash = pieces[0].firstIndex(of: "-") {
                lower = try value(pieces[0][..<dash])
                upper = try value(pieces[0][pieces[0].index(after: dash)...])
                guard lower <= upper else { throw Error(message: "\(name) range '\(pieces[0])' runs backwards") }
            } else {
                lower = try value(pieces[0])
                upper = pieces.count == 2 ? range.upperBound : lower
            }
            result.formUnion(stride(from: lower, through: upper, by: step))
        }
        return result
    }

    private static let utc: Calendar = {
        var c = Calendar(identifier: .gregorian)
        c.timeZone = TimeZone(identifier: "UTC")!
        return c
    }()

    /// The first minute strictly after `date` that the expression matches, or nil if none within 5 years
    /// (e.g. `0 0 30 2 *`).
    public func next(after date: Date) -> Date? {
        let cal = Self.utc
        var c = cal.dateComponents([.year, .month, .day, .hour, .minute], from: date)
        c.second = 0
        guard var t = cal.date(from: c)?.addingTimeInterval(60) else { return nil }
        let limit = date.addingTimeInterval(5 * 366 * 86_400)
        while t < limit {
            let p = cal.dateComponents([.year, .month, .day, .hour, .minute, .weekday], from: t)
            let (month, day, hour, minute) = (p.month!, p.day!, p.hour!, p.minute!)
            if !months.contains(month) {
                t = cal.date(from: DateComponents(year: p.year, month: month + 1, day: 1))!
                continue
            }
            if !dayMatches(day: day, weekday: p.weekday! - 1) {
                t = cal.date(from: DateComponents(year: p.year, month: month, day: day + 1))!
                continue
            }
            if !hours.contains(hour) {
                t = cal.date(from: DateComponents(year: p.year, month: month, day: day, hour: hour + 1))!
                continue
            }
            if !minutes.contains(minute) {
                t = t.addingTimeInterval(60)
                continue
            }
            return t
        }
        return nil
    }

    private func dayMatches(day: Int, weekday: Int) -> Bool {
        switch (domRestricted, dowRestricted) {
        case (true, true): daysOfMonth.contains(day) || daysOfWeek.contains(weekday)
        case (true, false): daysOfMonth.contains(day)
        case (false, true): daysOfWeek.contains(weekday)
        case (false, false): true
        }
    }
}
