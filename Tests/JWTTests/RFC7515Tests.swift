import Testing
@testable import JWT

/// RFC 7515 appendix A.1 (HS256) and A.2 (RS256), verbatim.
enum RFC7515 {
    static let hs256Token = "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
    static let hs256KeyBase64URL = "AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow"
    static let rs256Token = "eyJhbGciOiJSUzI1NiJ9.eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ.cC4hiUPoj9Eetdgtv3hF80EGrhuB__dzERat0XF9g2VtQgr9PJbu3XOiZj5RZmh7AAuHIm4Bh-0Qc_lF5YKt_O8W2Fp5jujGbds9uJdbF9CUAr7t1dnZcAcQjbKBYNX4BAynRFdiuB--f_nZLgrnbyTyWzO75vRK5h6xBArLIARNPvkSjtQBMHlb1L07Qe7K0GarZRmB_eSN9383LcOLn6_dO--xi12jzDwusC-eOkHWEsqtFZESc6BfI7noOPqvhJ1phCnvWh6IeYI2w9QOYEUipUTI8np6LbgGY9Fs98rqVt5AXLIhWkWywlVmtVrBp0igcN_IoypGlUPQGe77Rw"
    /// The JWK of A.2 (n, e = AQAB) as a SubjectPublicKeyInfo PEM.
    static let rs256PublicPEM = """
        -----BEGIN PUBLIC KEY-----
        MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAofgWCuLjybRlzo0tZWJj
        NiuSfb4p4fAkd/wWJcyQoTbji9k0l8W26mPddxHmfHQp+Vaw+4qPCJrcS2mJPMEz
        P1Pt0Bm4d4QlL+yRT+SFd2lZS+pCgNMsD1W/YpRPEwOWvG6b32690r2jZ47soMZo
        9wGzjb/7OMg0LOL+bSf63kpaSHSXndS5z5rexMdbBYUsLA9e+KXBdQOS+UTo7WTB
        EMa2R2CapHg665xsmtdVMTBQY4uDZlxvb3qCo5ZwKh9kG4LT6/I5IhlJH7aGhyxX
        FvUK+DWNmoudF8NAco9/h9iaGNj8q2ethFkMLs91kzk2PAcDTW9gb54h4FRWyuXp
        oQIDAQAB
        -----END PUBLIC KEY-----
        """
    /// Before `exp` (1300819380).
    static let validNow: @Sendable () -> Double = { 1_300_819_000 }

    struct Claims: Decodable, Equatable {
        var iss: String
        var exp: Double
        var isRoot: Bool
        enum CodingKeys: String, CodingKey {
            case iss, exp
            case isRoot = "http://example.com/is_root"
        }
    }
}

@Suite("RFC 7515 examples")
struct RFC7515Tests {
    @Test("A.1: the HS256 example verifies and decodes")
    func hs256() async throws {
        let key = try JWTKey.hmac(secret: #require(Base64URL.decode(Array(RFC7515.hs256KeyBase64URL.utf8))))
        let claims = try JWT.verify(
            RFC7515.hs256Token, key: key, as: RFC7515.Claims.self,
            options: VerificationOptions(now: RFC7515.validNow, issuer: "joe"))
        #expect(claims == RFC7515.Claims(iss: "joe", exp: 1_300_819_380, isRoot: true))
    }

    @Test("A.2: the RS256 example verifies with the RFC's public key")
    func rs256() async throws {
        let key = try JWTKey.rsa(pem: RFC7515.rs256PublicPEM)
        #expect(!key.canSign)
        let claims = try JWT.verify(
            RFC7515.rs256Token, key: key, as: RFC7515.Claims.self,
            options: VerificationOptions(now: RFC7515.validNow, issuer: "joe"))
        #expect(claims.isRoot)
    }

    @Test("the RFC tokens are expired by today's clock")
    func expiredToday() async throws {
        let key = try JWTKey.rsa(pem: RFC7515.rs256PublicPEM)
        #expect(throws: JWTError.self) { try JWT.verify(RFC7515.rs256Token, key: key, as: RFC7515.Claims.self) }
        do {
            _ = try JWT.verify(RFC7515.rs256Token, key: key, as: RFC7515.Claims.self)
        } catch let error as JWTError {
            guard case .expired = error else { Issue.record("expected expired, got \(error)"); return }
        }
    }

    @Test("one flipped bit in the A.2 signature is refused")
    func tampered() async throws {
        let key = try JWTKey.rsa(pem: RFC7515.rs256PublicPEM)
        var token = Array(RFC7515.rs256Token.utf8)
        token[token.count - 2] = token[token.count - 2] == UInt8(ascii: "R") ? UInt8(ascii: "S") : UInt8(ascii: "R")
        #expect(throws: JWTError.invalidSignature) {
            try JWT.verify(String(decoding: token, as: UTF8.self), key: key, as: RFC7515.Claims.self,
                           options: VerificationOptions(now: RFC7515.validNow))
        }
    }
}
