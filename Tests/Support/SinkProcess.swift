import Foundation
import SinkServer

#if canImport(Glibc)
    import Glibc
#endif

/// The `swallow serve` executable running as a child process, for tests of restarts and
/// crashes. Built by `swift build` (scripts/test runs it before `swift test`).
public final class SinkProcess: @unchecked Sendable {
    public struct Failure: Error, CustomStringConvertible {
        public var description: String
        public init(description: String) { self.description = description }
    }

    public let process = Process()
    /// `smtp`, `http` (and `smtps`) as `HOST:PORT`, from the `ready` line.
    public let addresses: [String: String]
    public let smtpPort: Int
    public let httpPort: Int

    /// Starts `swallow serve ARGS --smtp 127.0.0.1:0 --http 127.0.0.1:0` and waits for its
    /// `ready` line; `launcher` (a program that execs its arguments, e.g. `setpriv …`) first
    /// when given.
    public init(arguments: [String] = [], launcher: [String] = []) throws {
        let binary = productsDirectory().appendingPathComponent("swallow")
        guard FileManager.default.isExecutableFile(atPath: binary.path) else {
            throw Failure(description: "\(binary.path) is missing: run `swift build` before `swift test` (scripts/test does)")
        }
        let serve = ["serve", "--smtp", "127.0.0.1:0", "--http", "127.0.0.1:0", "--log-level", "warning"] + arguments
        if launcher.isEmpty {
            process.executableURL = binary
            process.arguments = serve
        } else {
            process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
            process.arguments = launcher + [binary.path] + serve
        }
        let text = try startReadingFirstLine(process, name: "swallow serve")
        var addresses: [String: String] = [:]
        for field in text.split(separator: " ").dropFirst() {
            let parts = field.split(separator: "=", maxSplits: 1).map(String.init)
            if parts.count == 2 { addresses[parts[0]] = parts[1] }
        }
        self.addresses = addresses
        func port(_ name: String) -> Int? { addresses[name]?.split(separator: ":").last.flatMap { Int($0) } }
        guard text.hasPrefix("ready "), let smtp = port("smtp"), let http = port("http") ?? port("https") else {
            throw Failure(description: "unexpected first line: \(text)")
        }
        smtpPort = smtp
        httpPort = http
    }

    public func signal(_ signal: Int32) {
        kill(process.processIdentifier, signal)
    }

    /// Waits for the process to end (at most `timeout` seconds) and returns its status.
    public func wait(timeout: Double = 20) -> Int32 {
        let deadline = Date().addingTimeInterval(timeout)
        while process.isRunning && Date() < deadline { usleep(10_000) }
        if process.isRunning {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
        return process.terminationStatus
    }

    deinit {
        if process.isRunning { kill(process.processIdentifier, SIGKILL) }
    }
}

/// Starts `process` with its stdout on a pipe and its stderr discarded, and returns the first
/// line it prints (its `ready` line). Not the test run's stderr: a child outliving a crashed
/// test process would hold the pipe `swift test` reads, and the run would never end.
public func startReadingFirstLine(_ process: Process, name: String) throws -> String {
    let out = Pipe()
    process.standardOutput = out
    process.standardError = FileHandle.nullDevice
    try process.run()
    var line = Data()
    while !line.contains(UInt8(ascii: "\n")) {
        let chunk = out.fileHandleForReading.availableData
        guard !chunk.isEmpty else { throw SinkProcess.Failure(description: "\(name) exited before its first line") }
        line += chunk
    }
    return String(decoding: line, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
}

/// Sends one message on an open, greeted client and returns the id from `250 ... queued as ID`.
public func sendMessage(_ client: RawSMTPClient, body: String) throws -> String {
    guard try client.command("MAIL FROM:<load@bench.example>").code == 250,
        try client.command("RCPT TO:<sink@bench.example>").code == 250,
        try client.command("DATA").code == 354
    else { throw RawSMTPClient.Failure(description: "transaction refused") }
    try client.send(body + ".\r\n")
    let reply = try client.readReply()
    guard reply.code == 250, let id = reply.text.split(separator: " ").last else {
        throw RawSMTPClient.Failure(description: "DATA refused: \(reply.text)")
    }
    return String(id)
}
