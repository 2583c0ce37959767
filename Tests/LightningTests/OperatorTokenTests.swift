import Testing
@testable import Lightning

@Suite("Operator tokens")
struct OperatorTokenTests {
    @Test("tokens are 256-bit, well formed, unique, and stored only as their SHA-256")
    func generate() async throws {
        let a = try OperatorToken.generate(), b = try OperatorToken.generate()
        #expect(a.plaintext != b.plaintext)
        #expect(OperatorToken.isWellFormed(a.plaintext))
        #expect(a.hash == OperatorToken.hash(a.plaintext))
        #expect(a.hash.count == 64)
        #expect(!a.hash.contains(a.plaintext.dropFirst(4)))
    }

    @Test("SHA-256 matches a known vector")
    func knownVector() {
        #expect(OperatorToken.hash("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")
    }

    @Test("malformed tokens are recognised before any lookup", arguments: [
        "", "lro_", "lro_short", "xyz_" + String(repeating: "a", count: 43), "lro_" + String(repeating: "a", count: 42) + "=",
    ])
    func malformed(text: String) {
        #expect(!OperatorToken.isWellFormed(text))
    }

    @Test("roles: admin may do what a viewer may, not the reverse")
    func roles() {
        #expect(OperatorToken.Role.admin.allows(.viewer))
        #expect(OperatorToken.Role.admin.allows(.admin))
        #expect(OperatorToken.Role.viewer.allows(.viewer))
        #expect(!OperatorToken.Role.viewer.allows(.admin))
    }
}
