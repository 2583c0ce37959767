import Testing

// Replaced by real tests as the RuntimeWorker work lands.
@Suite struct RuntimeWorkerPlaceholderTests {}
