import Foundation
import Testing
@testable import Lightning

private func next(_ expr: String, _ after: String) throws -> String? {
    let iso = ISO8601DateFormatter()
    return try CronExpression(expr).next(after: iso.date(from: after)!).map { iso.string(from: $0) }
}

@Suite("Cron expressions")
struct CronExpressionTests {
    @Test("next fire times", arguments: [
        ("* * * * *", "2026-01-01T00:00:30Z", "2026-01-01T00:01:00Z"),
        ("*/15 * * * *", "2026-01-01T00:14:59Z", "2026-01-01T00:15:00Z"),
        ("*/15 * * * *", "2026-01-01T00:15:00Z", "2026-01-01T00:30:00Z"),
        ("0 9 * * MON-FRI", "2026-11-21T10:00:00Z", "2026-11-23T09:00:00Z"),  // Saturday -> Monday
        ("30 2 1 * *", "2026-01-31T23:59:00Z", "2026-02-01T02:30:00Z"),
        ("0 0 29 2 *", "2026-03-01T00:00:00Z", "2028-02-29T00:00:00Z"),
        ("0 0 1 JAN *", "2026-06-01T00:00:00Z", "2027-01-01T00:00:00Z"),
        ("0 12 13 * 5", "2026-11-01T00:00:00Z", "2026-11-06T12:00:00Z"),      // dom OR dow: Friday the 6th
        ("0 0 * * 7", "2026-11-22T00:00:00Z", "2026-11-29T00:00:00Z"),        // 7 is Sunday
        ("@hourly", "2026-12-31T23:30:00Z", "2027-01-01T00:00:00Z"),
        ("5-10/5 1,3 * * *", "2026-01-01T01:06:00Z", "2026-01-01T01:10:00Z"),
    ])
    func nextTimes(expr: String, after: String, expected: String) throws {
        #expect(try next(expr, after) == expected)
    }

    @Test("a date that never comes gives nil")
    func never() async throws {
        #expect(try next("0 0 30 2 *", "2026-01-01T00:00:00Z") == nil)
    }

    @Test("bad expressions name the problem", arguments: [
        ("* * * *", "4 fields"),
        ("60 * * * *", "minute value 60 is out of range"),
        ("* 24 * * *", "hour value 24"),
        ("* * 0 * *", "day-of-month value 0"),
        ("* * * FOO *", "month field has an invalid value 'FOO'"),
        ("*/0 * * * *", "invalid step"),
        ("5-1 * * * *", "runs backwards"),
        ("1,,2 * * * *", "empty list item"),
    ])
    func errors(expr: String, fragment: String) {
        let error = #expect(throws: CronExpression.Error.self) { try CronExpression(expr) }
        #expect(error?.message.contains(fragment) == true, "\(error?.message ?? "")")
    }
}
