import Foundation
import Testing
import LightningProtocol

@Suite("Random ids")
struct RandomIDTests {
    @Test("version 4 UUIDs in lowercase, all different")
    func shape() {
        var seen = Set<String>()
        for _ in 0..<10_000 {
            let id = RandomID.uuidString()
            #expect(id == id.lowercased())
            #expect(UUID(uuidString: id) != nil)
            let chars = Array(id)
            #expect(chars.count == 36 && chars[14] == "4" && "89ab".contains(chars[19]), "\(id)")
            seen.insert(id)
        }
        #expect(seen.count == 10_000)
    }

    @Test("every bit outside version and variant varies")
    func bitsVary() {
        var ones = [Int](repeating: 0, count: 128)
        let n = 2_000
        for _ in 0..<n {
            let u = RandomID.uuid().uuid
            withUnsafeBytes(of: u) { bytes in
                for i in 0..<128 where bytes[i / 8] >> (7 - i % 8) & 1 == 1 { ones[i] += 1 }
            }
        }
        let fixed: Set<Int> = [48, 49, 50, 51, 64, 65]  // the version nibble and the two variant bits
        for i in 0..<128 where !fixed.contains(i) {
            // Binomial(2000, 0.5): 3 standard deviations either side is 933...1067; this allows 800...1200.
            #expect((800...1200).contains(ones[i]), "bit \(i) was set \(ones[i]) times in \(n)")
        }
    }
}
