import Logging

/// `--log-level` / `LOG_LEVEL` for both binaries: trace, debug, info (the default), notice, warning, error, critical.
public enum LogLevelSetting {
    public static let names = Logger.Level.allCases.map(\.rawValue)

    /// The level named by `text` (any case); nil for nil or empty. Throws a message naming the levels otherwise.
    public static func parse(_ text: String?) throws -> Logger.Level? {
        guard let text, !text.isEmpty else { return nil }
        guard let level = Logger.Level(rawValue: text.lowercased()) else {
            throw LogLevelError(text: text)
        }
        return level
    }

    /// The level a binary runs at: its `--log-level` flag, else `LOG_LEVEL`, else info. The error names the
    /// source that holds an unknown level.
    public static func resolve(flag: String?, environment: [String: String]) throws -> Logger.Level {
        do { if let level = try parse(flag) { return level } } catch { throw LogLevelSourceError(source: "--log-level", error: error) }
        do { return try parse(environment["LOG_LEVEL"]) ?? .info } catch {
            throw LogLevelSourceError(source: "LOG_LEVEL", error: error)
        }
    }

    /// Sends every logger's output to standard error at `level`.
    public static func bootstrap(_ level: Logger.Level) {
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
    }
}

public struct LogLevelSourceError: Error, CustomStringConvertible {
    public let source: String
    public let error: any Error
    public var description: String { "\(source): \(error)" }
}

public struct LogLevelError: Error, CustomStringConvertible {
    public let text: String
    public var description: String {
        "unknown log level \"\(text)\" (one of \(LogLevelSetting.names.joined(separator: ", ")))"
    }
}
