import Testing

// Replaced by real tests as the EndToEnd work lands.
@Suite struct EndToEndPlaceholderTests {}
