import Testing

// Replaced by real tests as the Lightning work lands.
@Suite struct LightningPlaceholderTests {}
