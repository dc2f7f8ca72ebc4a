import Foundation
import Logging
import MailMessage
import NIOCore
import SinkServer

public let testLogger: Logger = {
    var logger = Logger(label: "test.sink")
    logger.logLevel = .warning
    return logger
}()

/// A sink bound on 127.0.0.1 with a free SMTP port, configured by `configure`.
public func bindTestSink(_ configure: (inout SinkConfiguration) -> Void) async throws -> Sink {
    var configuration = SinkConfiguration()
    configuration.smtp = ListenAddress(host: "127.0.0.1", port: 0)
    configure(&configuration)
    return try await Sink.bind(configuration, logger: testLogger)
}

/// Starts a sink on 127.0.0.1 with a free port, runs `body`, shuts the sink down.
public func withSink<T: Sendable>(
    _ configure: (inout SinkConfiguration) -> Void = { _ in },
    _ body: @Sendable (Sink) async throws -> T
) async throws -> T {
    let sink = try await bindTestSink(configure)
    return try await withThrowingTaskGroup(of: Void.self) { group in
        group.addTask { try await sink.run() }
        do {
            let result = try await body(sink)
            sink.shutdown()
            try await group.waitForAll()
            return result
        } catch {
            sink.shutdown()
            try? await group.waitForAll()
            throw error
        }
    }
}

/// Runs blocking work (sockets, processes) on its own thread, off Swift's cooperative pool,
/// so a blocked client can never starve the sink it talks to.
public func onThread<T: Sendable>(_ work: @escaping @Sendable () throws -> T) async throws -> T {
    try await withCheckedThrowingContinuation { continuation in
        let thread = Thread {
            continuation.resume(with: Result { try work() })
        }
        thread.start()
    }
}

public struct ProcessResult: Sendable {
    public var status: Int32
    public var stdout: String
    public var stderr: String
}

/// Runs a program to completion (killed after `timeout` seconds) and captures its output.
public func run(_ arguments: [String], stdin: String? = nil, timeout: Double = 30) async throws -> ProcessResult {
    try await onThread {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = arguments
        let out = Pipe()
        let err = Pipe()
        let input = Pipe()
        process.standardOutput = out
        process.standardError = err
        process.standardInput = input
        try process.run()
        if let stdin { input.fileHandleForWriting.write(Data(stdin.utf8)) }
        try? input.fileHandleForWriting.close()
        let deadline = DispatchTime.now() + timeout
        let watchdog = DispatchWorkItem { if process.isRunning { process.terminate() } }
        DispatchQueue.global().asyncAfter(deadline: deadline, execute: watchdog)
        let stdoutData = out.fileHandleForReading.readDataToEndOfFile()
        let stderrData = err.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        watchdog.cancel()
        return ProcessResult(
            status: process.terminationStatus,
            stdout: String(decoding: stdoutData, as: UTF8.self),
            stderr: String(decoding: stderrData, as: UTF8.self)
        )
    }
}

/// Runs a Python script with the sink's SMTP port as `PORT` and the given extra variables.
public func python(_ script: String, port: Int, env: [String: String] = [:]) async throws -> ProcessResult {
    var prelude = "PORT = \(port)\n"
    for (key, value) in env.sorted(by: { $0.key < $1.key }) {
        prelude += "\(key) = \(pythonLiteral(value))\n"
    }
    return try await run(["python3", "-c", prelude + script])
}

private func pythonLiteral(_ text: String) -> String {
    let escaped = text.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "'", with: "\\'")
        .replacingOccurrences(of: "\n", with: "\\n").replacingOccurrences(of: "\r", with: "\\r")
    return "'\(escaped)'"
}

/// The directory holding the built products (the `swallow` executable is beside the tests).
public func productsDirectory() -> URL {
    URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()
}

public func temporaryDirectory() throws -> String {
    let path = NSTemporaryDirectory() + "swallow-test-" + UUID().uuidString
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    return path
}

/// The bodies of every message in a data directory, opened in-process as a restarted sink
/// would open it.
public func storedBodies(reopening directory: String) async throws -> [String: String] {
    var configuration = SinkConfiguration()
    configuration.smtp = ListenAddress(host: "127.0.0.1", port: 0)
    configuration.dataDirectory = directory
    configuration.maxMessages = 0
    return try await withSink({ $0 = configuration }) { sink in
        var bodies: [String: String] = [:]
        for message in sink.store.messages() {
            bodies[message.id] = try await sink.store.receivedBytes(id: message.id).map { String(buffer: $0) }
        }
        return bodies
    }
}
