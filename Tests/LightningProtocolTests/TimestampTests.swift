import LightningProtocol
import Testing

@Suite("Wire timestamps")
struct TimestampTests {
    @Test("milliseconds and microseconds are read; anything else, and numbers past Int64, give nil (never a trap)")
    func parse() {
        #expect(Timestamp.parse("1764633600000") == 1_764_633_600_000_000)
        #expect(Timestamp.parse("1764633600000001") == 1_764_633_600_000_001)
        #expect(Timestamp.parse("9223372036854775807") == Int64.max)
        for bad in ["", "-1", "1.5", "12a", " 1", "9223372036854775808", "9999999999999999999", "10000000000000000000"] {
            #expect(Timestamp.parse(bad) == nil, "\(bad)")
        }
    }
}
