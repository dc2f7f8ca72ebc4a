// swift-tools-version:6.1
// libFuzzer harnesses for the parsers that read untrusted input. Built by scripts/fuzz with
// `-sanitize=fuzzer,address` into .build-fuzz; never part of the normal build.
import PackageDescription

let package = Package(
    name: "swallow-fuzz",
    dependencies: [.package(name: "swallow", path: "..")],
    targets: [
        .target(name: "CFuzzDriver"),
        .executableTarget(name: "FuzzSMTP", dependencies: ["CFuzzDriver", .product(name: "SMTPProtocol", package: "swallow")]),
        .executableTarget(name: "FuzzMIME", dependencies: ["CFuzzDriver", .product(name: "MailMessage", package: "swallow")]),
        .executableTarget(name: "FuzzSearch", dependencies: ["CFuzzDriver", .product(name: "SinkServer", package: "swallow")]),
        .executableTarget(name: "FuzzRules", dependencies: ["CFuzzDriver", .product(name: "SinkServer", package: "swallow")]),
        .executableTarget(name: "FuzzScenario", dependencies: ["CFuzzDriver", .product(name: "LoadGen", package: "swallow")]),
    ]
)
