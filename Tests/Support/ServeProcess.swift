import Foundation

#if canImport(Glibc)
    import Glibc
#endif

/// `swallow serve` as a child process on free loopback ports, for tests that drive the built
/// executable (scripts/test runs `swift build` first). Killed when released.
public final class ServeProcess: @unchecked Sendable {
    public struct Failure: Error, CustomStringConvertible {
        public var description: String
    }

    public let process = Process()
    /// `smtp`, `http` (and `smtps`) as `HOST:PORT`, from the `ready` line.
    public private(set) var addresses: [String: String] = [:]

    public var smtpPort: Int { Int(addresses["smtp"]?.split(separator: ":").last ?? "") ?? 0 }
    public var httpPort: Int { Int(addresses["http"]?.split(separator: ":").last ?? "") ?? 0 }

    /// The built `swallow` executable beside the test bundle.
    public static var binary: URL {
        URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("swallow")
    }

    public init(arguments: [String] = []) throws {
        guard FileManager.default.isExecutableFile(atPath: Self.binary.path) else {
            throw Failure(description: "\(Self.binary.path) is missing: run `swift build` before `swift test` (scripts/test does)")
        }
        process.executableURL = Self.binary
        process.arguments = ["serve", "--smtp", "127.0.0.1:0", "--http", "127.0.0.1:0", "--log-level", "warning"] + arguments
        let out = Pipe()
        process.standardOutput = out
        // Not the test run's stderr: a child outliving a crashed test process would hold the
        // pipe `swift test` reads, and the run would never end.
        process.standardError = FileHandle.nullDevice
        try process.run()
        var line = Data()
        while !line.contains(UInt8(ascii: "\n")) {
            let chunk = out.fileHandleForReading.availableData
            guard !chunk.isEmpty else { throw Failure(description: "swallow serve exited before its ready line") }
            line += chunk
        }
        for field in String(decoding: line, as: UTF8.self).split(whereSeparator: \.isWhitespace).dropFirst() {
            let parts = field.split(separator: "=", maxSplits: 1).map(String.init)
            if parts.count == 2 { addresses[parts[0]] = parts[1] }
        }
    }

    deinit {
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
    }
}
