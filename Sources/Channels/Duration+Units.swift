extension Duration {
    /// The duration in (fractional) seconds.
    public var seconds: Double {
        let c = components
        return Double(c.seconds) + Double(c.attoseconds) / 1e18
    }

    /// The duration in (fractional) milliseconds, for log lines.
    public var milliseconds: Double { seconds * 1000 }
}
