// swift-tools-version:6.1
import PackageDescription

// One package, three executables (`lightning`, `runtime-worker`, `gen-worker-keys`).
// Executables are thin; the libraries hold the logic and the tests test the libraries.
let package = Package(
    name: "lightning-runtime",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "lightning", targets: ["LightningCommand"]),
        .executable(name: "runtime-worker", targets: ["RuntimeWorkerCommand"]),
        .executable(name: "gen-worker-keys", targets: ["GenWorkerKeys"]),
        .library(name: "JWT", targets: ["JWT"]),
        .library(name: "Channels", targets: ["Channels"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/groue/GRDB.swift", from: "7.10.0"),
        .package(url: "https://github.com/jpsim/Yams", from: "6.2.2"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
    ],
    targets: [
        // C libraries from Debian's -dev packages, found through pkg-config.
        .systemLibrary(
            name: "CLibWebSockets", pkgConfig: "libwebsockets",
            providers: [.apt(["libwebsockets-dev"])]),
        .systemLibrary(
            name: "COpenSSL", pkgConfig: "openssl",
            providers: [.apt(["libssl-dev"])]),
        // libpq, for the PostgreSQL store (issue 12): Debian's client library, no Swift package to build.
        .systemLibrary(
            name: "CLibPQ", pkgConfig: "libpq",
            providers: [.apt(["libpq-dev"])]),
        // clone()/namespaces/cgroup/rlimits/exec: only async-signal-safe code between clone and exec.
        .target(name: "CSandbox"),

        .target(name: "JWT", dependencies: ["COpenSSL"]),
        .target(
            name: "Channels",
            dependencies: [
                "CLibWebSockets", "COpenSSL",
                .product(name: "Logging", package: "swift-log"),
            ]),
        // A PostgreSQL connection over libpq: parameters, typed rows, transactions, LISTEN/NOTIFY.
        .target(name: "Postgres", dependencies: ["CLibPQ"]),
        // The wire contract shared by both sides: plan, events, reasons, states, the run/attempt mapping.
        .target(name: "LightningProtocol", dependencies: ["Channels"]),
        .target(
            name: "Lightning",
            dependencies: [
                "JWT", "Channels", "LightningProtocol", "COpenSSL", "Postgres",
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "GRDBSQLite", package: "GRDB.swift"),
                .product(name: "Yams", package: "Yams"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            // The operator console's HTML, CSS and JavaScript, compiled into the binary by the plugin.
            exclude: ["Console"],
            plugins: ["EmbedConsole"]),
        .executableTarget(name: "embed-assets", path: "mix-like-tools/embed-assets"),
        .plugin(name: "EmbedConsole", capability: .buildTool(), dependencies: ["embed-assets"]),
        .target(
            name: "RuntimeWorker",
            dependencies: [
                "JWT", "Channels", "LightningProtocol", "CSandbox",
                .product(name: "Yams", package: "Yams"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]),

        .executableTarget(
            name: "LightningCommand",
            dependencies: [
                "Lightning", "Channels", "LightningProtocol",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]),
        .executableTarget(
            name: "RuntimeWorkerCommand",
            dependencies: [
                "RuntimeWorker", "JWT", "Channels",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Yams", package: "Yams"),
            ]),
        .executableTarget(
            name: "GenWorkerKeys",
            dependencies: [
                "JWT",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            path: "mix-like-tools/gen-worker-keys"),

        .target(name: "TestSupport", path: "Tests/TestSupport", exclude: ["Python"]),
        .executableTarget(name: "bench-jwt", dependencies: ["JWT", "COpenSSL"], path: "bench/jwt"),
        .executableTarget(name: "bench-json", dependencies: ["Channels"], path: "bench/json"),
        .executableTarget(name: "bench-sandbox", dependencies: ["RuntimeWorker", "JWT"], path: "bench/sandbox"),
        .executableTarget(
            name: "bench-channels", dependencies: ["Channels"], path: "bench/channels",
            exclude: ["raw_lws_echo.c", "idle_clients.py"]),
        .testTarget(name: "JWTTests", dependencies: ["JWT", "TestSupport"], exclude: ["Interop"]),
        .testTarget(name: "LightningProtocolTests", dependencies: ["LightningProtocol", "Channels"]),
        .testTarget(name: "ChannelsTests", dependencies: ["Channels", "TestSupport"], exclude: ["Interop"]),
        .testTarget(name: "LightningTests", dependencies: ["Lightning", "LightningProtocol", "TestSupport", "JWT", "Channels"],
                    exclude: ["Interop"]),
        .testTarget(name: "PostgresTests", dependencies: ["Postgres", "TestSupport"]),
        .testTarget(name: "RuntimeWorkerTests", dependencies: ["RuntimeWorker", "LightningProtocol", "TestSupport", "JWT", "Channels"]),
        .testTarget(
            name: "EndToEndTests", dependencies: ["JWT", "Channels", "LightningProtocol", "Lightning", "RuntimeWorker", "TestSupport"],
            exclude: ["Browser", "Interop"]),
    ],
    swiftLanguageModes: [.v6]
)
