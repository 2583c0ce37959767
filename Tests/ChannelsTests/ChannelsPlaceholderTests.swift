import Testing

// Replaced by real tests as the Channels work lands.
@Suite struct ChannelsPlaceholderTests {}
