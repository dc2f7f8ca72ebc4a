// swift-tools-version:6.1
// Micro-benchmarks of the hot paths (ordo-one/benchmark), in their own package so the
// project's builds never compile them:
//   cd Benchmarks && swift package benchmark
// Whole-system figures (sink against smtp-sink, the load generator against smtp-source, the
// API with 100 000 messages, faults, the web inbox) are the Python scripts beside this file.
import PackageDescription

let package = Package(
    name: "swallow-benchmarks",
    platforms: [.macOS(.v15)],
    dependencies: [
        .package(name: "swallow", path: "../"),
        .package(url: "https://github.com/ordo-one/benchmark.git", from: "1.38.1", traits: ["MallocInterposer"]),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.2"),
    ],
    targets: [
        .executableTarget(
            name: "Protocol",
            dependencies: [
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "SMTPProtocol", package: "swallow"),
                .product(name: "MailMessage", package: "swallow"),
                .product(name: "NIOCore", package: "swift-nio"),
            ],
            path: "Benchmarks/Protocol",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        )
    ]
)
