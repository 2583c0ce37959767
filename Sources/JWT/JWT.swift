// JWS compact serialization, HS256 and RS256 over OpenSSL (issue 2).
