/// The version of lightning-runtime, reported by every executable and sent by workers as `worker_version`.
public enum RuntimeVersion {
    public static let current = "0.1.0"
    /// The Lightning worker protocol version both sides speak (PROTOCOL.md).
    public static let workerAPI = "1.2"
}
