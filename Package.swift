// swift-tools-version:6.1
import PackageDescription

let swiftSettings: [SwiftSetting] = [
    .enableUpcomingFeature("ExistentialAny"),
    .enableUpcomingFeature("MemberImportVisibility"),
]

let package = Package(
    name: "swallow",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "swallow", targets: ["swallow"]),
        .library(name: "SMTPProtocol", targets: ["SMTPProtocol"]),
        .library(name: "SMTPClient", targets: ["SMTPClient"]),
        .library(name: "MailMessage", targets: ["MailMessage"]),
        .library(name: "SinkServer", targets: ["SinkServer"]),
        .library(name: "LoadGen", targets: ["LoadGen"]),
        .library(name: "SwallowConfig", targets: ["SwallowConfig"]),
        .library(name: "Assertions", targets: ["Assertions"]),
        .library(name: "SwallowTesting", targets: ["SwallowTesting"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-certificates.git", from: "1.21.1"),
        .package(url: "https://github.com/apple/swift-crypto.git", "3.12.3"..<"5.0.0"),
        .package(url: "https://github.com/apple/swift-asn1.git", from: "1.7.4"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        .package(url: "https://github.com/apple/swift-http-types.git", from: "1.8.0"),
        .package(url: "https://github.com/groue/GRDB.swift.git", from: "7.10.0"),
        .package(url: "https://github.com/jpsim/Yams.git", from: "6.2.2"),
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift.git", from: "0.2.0"),
        .package(url: "https://github.com/swift-server/async-http-client.git", from: "1.37.0"),
    ],
    targets: [
        .target(
            name: "SMTPProtocol",
            dependencies: [.product(name: "NIOCore", package: "swift-nio")],
            swiftSettings: swiftSettings
        ),
        // The SMTP client the load generator's sendmail and the sink's relay share.
        .target(
            name: "SMTPClient",
            dependencies: [
                "SMTPProtocol",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "MailMessage",
            dependencies: [.product(name: "NIOCore", package: "swift-nio")],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "SwallowConfig",
            dependencies: [.product(name: "Yams", package: "Yams")],
            swiftSettings: swiftSettings
        ),
        // System calls Glibc's module leaves out (syncfs, SCHED_IDLE, mallopt, epoll), with fallbacks elsewhere.
        .target(name: "CSwallowSystem"),
        .target(
            name: "SinkServer",
            dependencies: [
                "SocketIO",
                "CSwallowSystem",
                "SMTPProtocol",
                "SMTPClient",
                "SwallowConfig",
                "MailMessage",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOTLS", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
                .product(name: "Crypto", package: "swift-crypto"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdTLS", package: "hummingbird"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Histogram", package: "hdrhistogram-swift"),
            ],
            resources: [.copy("Web")],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "SocketIO",
            dependencies: ["CSwallowSystem", .product(name: "NIOCore", package: "swift-nio")],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "LoadGen",
            dependencies: [
                "CSwallowSystem",
                "SocketIO",
                "SMTPProtocol",
                "SMTPClient",
                "SwallowConfig",
                "MailMessage",
                "Assertions",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Histogram", package: "hdrhistogram-swift"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "Assertions",
            dependencies: [
                "MailMessage",
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "SwallowTesting",
            dependencies: [
                "SinkServer", "Assertions", "MailMessage", .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),
        .executableTarget(
            name: "swallow",
            dependencies: [
                "CSwallowSystem",
                "SinkServer",
                "SMTPProtocol",
                "MailMessage",
                "LoadGen",
                "SMTPClient",
                "SwallowConfig",
                "Assertions",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "SocketIOTests",
            dependencies: ["SocketIO", "SwallowTestSupport", .product(name: "NIOCore", package: "swift-nio")],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "SMTPProtocolTests",
            dependencies: [
                "SMTPProtocol",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOTestUtils", package: "swift-nio"),
            ],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "LoadGenTests",
            dependencies: [
                "LoadGen",
                "SocketIO",
                "SwallowConfig",
                "SinkServer",
                "SMTPProtocol",
                "MailMessage",
                "SwallowTestSupport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Histogram", package: "hdrhistogram-swift"),
            ],
            swiftSettings: swiftSettings
        ),
        .target(
            name: "SwallowTestSupport",
            dependencies: [
                "SinkServer",
                "LoadGen",
                "MailMessage",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
            ],
            path: "Tests/Support",
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "AssertionsTests",
            dependencies: ["Assertions", "SwallowTesting", "SinkServer", "MailMessage", "SwallowTestSupport"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "MailMessageTests",
            dependencies: ["MailMessage"],
            swiftSettings: swiftSettings
        ),
        .testTarget(
            name: "SinkServerTests",
            dependencies: [
                "SocketIO",
                "SinkServer",
                "SwallowConfig",
                "SMTPProtocol",
                "SMTPClient",
                "MailMessage",
                "SwallowTestSupport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdTesting", package: "hummingbird"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
            ],
            swiftSettings: swiftSettings
        ),
        // The peer tier: suites that drive real peers (swaks, curl, smtplib and the PyPI clients,
        // Postfix's smtp-sink and a Postfix relay, Chromium) or the built `swallow` with them.
        // Run by hand without a peer, a suite skips with the reason; scripts/test installs them all.
        .testTarget(
            name: "PeerTests",
            dependencies: [
                "SinkServer",
                "SwallowConfig",
                "SMTPProtocol",
                "MailMessage",
                "LoadGen",
                "Assertions",
                "SwallowTesting",
                "SwallowTestSupport",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: swiftSettings
        ),
    ]
)
