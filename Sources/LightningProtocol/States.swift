/// Attempt states (PROTOCOL.md 5.4): `available -> claimed -> started -> one final state`.
/// Final states never change.
public enum AttemptState: String, Codable, Sendable, CaseIterable {
    case available, claimed, started
    case success, failed, crashed, killed, exception, cancelled, lost

    public var isFinal: Bool {
        switch self {
        case .available, .claimed, .started: false
        default: true
        }
    }
}

/// Why a step or an attempt ended (PROTOCOL.md 5.4).
public enum ExitReason: String, Codable, Sendable, CaseIterable {
    case success, fail, crash, kill, exception, cancel, lost

    /// The attempt state an attempt ending with this reason is put in.
    public var attemptState: AttemptState {
        switch self {
        case .success: .success
        case .fail: .failed
        case .crash: .crashed
        case .kill: .killed
        case .exception: .exception
        case .cancel: .cancelled
        case .lost: .lost
        }
    }

    /// Reasons ordered by severity: an attempt's reason is the most severe of its executed leaf steps'.
    public var severity: Int {
        switch self {
        case .success: 0
        case .fail: 1
        case .crash: 2
        case .kill: 3
        case .exception: 4
        case .cancel: 5
        case .lost: 6
        }
    }
}

/// Well-known `error_type` values.
public enum ErrorType {
    public static let job = "JobError"
    public static let timeout = "TimeoutError"
    public static let oom = "OOMError"
    public static let stateTooLarge = "StateTooLargeError"
    public static let edgeCondition = "EdgeConditionError"
    public static let importError = "ImportError"
    public static let crash = "RuntimeCrash"
    public static let credential = "CredentialLoadError"
    public static let dataclip = "DataclipLoadError"
    public static let sandbox = "SandboxError"
    public static let cancelled = "Cancelled"
    public static let lostAfterClaim = "LostAfterClaim"
    public static let lostAfterStart = "LostAfterStart"
    /// The worker refused the attempt token Lightning gave it (bad signature, wrong id, expired).
    public static let tokenRefused = "AttemptTokenRefused"
    /// The plan could not be read or run by the worker.
    public static let plan = "PlanError"
    public static let shutdown = "ShutdownError"
}

public enum LogLevel: String, Codable, Sendable, CaseIterable {
    case debug, info, warn, error, success, always
}

/// Log sources are at most 8 characters (PROTOCOL.md 5.5).
public enum LogSource {
    public static let job = "JOB"
    public static let runtime = "R/T"
    public static let engine = "RTE"
    public static let versions = "VER"
    /// Lightning's own notes in an attempt's log (a retry, the log limit).
    public static let lightning = "LGT"
    public static let maxLength = 8
}
