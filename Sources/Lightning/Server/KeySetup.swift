import Foundation
import JWT
import Logging

/// Where Lightning's two keys come from: the environment first (also Lightning's newer names), else files in
/// `keys/`, else a development key set generated there once, with a loud warning.
public enum KeySetup {
    public struct Keys: Sendable {
        public var attemptSigningKey: JWTKey
        public var workerSecretKey: JWTKey
        public var source: String
    }

    public static func load(environment: [String: String], keysDirectory: String, logger: Logger) throws -> Keys {
        let privateKey = environment["ATTEMPTS_PRIVATE_KEY"] ?? environment["WORKER_RUNS_PRIVATE_KEY"]
        let secret = environment["WORKER_SECRET"]
        if let privateKey, let secret {
            return Keys(attemptSigningKey: try JWTKey.rsa(base64PEM: privateKey), workerSecretKey: try JWTKey.hmac(secret: secret),
                        source: "environment")
        }
        if (privateKey == nil) != (secret == nil) {
            throw KeyFileError(message: "set both ATTEMPTS_PRIVATE_KEY and WORKER_SECRET, or neither (to use \(keysDirectory)/)")
        }
        let names = WorkerKeySet.fileNames
        let privatePath = keysDirectory + "/" + names.privateKey, secretPath = keysDirectory + "/" + names.secret
        let fm = FileManager.default
        if !fm.fileExists(atPath: privatePath) || !fm.fileExists(atPath: secretPath) {
            logger.warning("""
                ATTEMPTS_PRIVATE_KEY and WORKER_SECRET are not set: generating a DEVELOPMENT key set into \
                \(keysDirectory)/ (mode 0600). Workers on this machine can use it; for production run \
                `gen-worker-keys` and set the variables instead.
                """)
            try WorkerKeySet.generate().write(to: keysDirectory, force: false)
        }
        let pem = try String(contentsOfFile: privatePath, encoding: .utf8)
        let secretText = try String(contentsOfFile: secretPath, encoding: .utf8).trimmingCharacters(in: .whitespacesAndNewlines)
        return Keys(attemptSigningKey: try JWTKey.rsa(pem: pem), workerSecretKey: try JWTKey.hmac(secret: secretText),
                    source: keysDirectory + "/")
    }
}

/// The first operator token: made when a database has none, written where the CLI looks by default.
public enum OperatorBootstrap {
    public static let fileName = "operator_token"

    public static func firstAdminToken(store: any OperatorRepository, keysDirectory: String, logger: Logger) async throws {
        guard try await store.operatorTokens().isEmpty else { return }
        let (record, secret) = try await store.createOperatorToken(name: "admin", role: .admin)
        let fm = FileManager.default
        try fm.createDirectory(atPath: keysDirectory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        let path = keysDirectory + "/" + fileName
        // Written 0600 from the start: never readable by others, not even for a moment.
        if fm.fileExists(atPath: path) { try fm.removeItem(atPath: path) }
        guard fm.createFile(atPath: path, contents: Data((secret + "\n").utf8), attributes: [.posixPermissions: 0o600]) else {
            throw KeyFileError(message: "could not write \(path)")
        }
        logger.notice("""
            this database had no operator token: created admin token \(record.id) into \(path) (mode 0600). \
            The lightning CLI reads it from there; make others with `lightning tokens create`.
            """)
    }
}
