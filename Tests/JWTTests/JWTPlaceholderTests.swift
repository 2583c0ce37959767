import Testing

// Replaced by real tests as the JWT work lands.
@Suite struct JWTPlaceholderTests {}
