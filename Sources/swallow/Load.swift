import ArgumentParser
import CSwallowSystem
import Foundation
import LoadGen
import Logging
import MailMessage
import NIOCore
import SinkServer
import SwallowConfig

/// `swallow load SCENARIO`: replays a scenario against an SMTP server and reports.
struct Load: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Replay a traffic scenario against an SMTP server and measure it.",
        discussion: """
            Open loop: each message has a scheduled time and its latency counts from it. With no \
            --target, a Swallow sink is started in-process on a free port and the run goes to it. \
            Exit status: 0 every expectation holds, 1 one fails, 2 bad input or an unreachable target.
            """
    )

    @Argument(help: "The scenario file (YAML).")
    var scenario: String

    @Option(
        help:
            "HOST:PORT of the SMTP server, or several (HOST:PORT,HOST:PORT): connections are spread evenly over them (default: the scenario's connection.targets, else an in-process sink)."
    )
    var target: String?

    @Option(
        help:
            "Local addresses to connect from (ADDR,ADDR,...), spread evenly over the connections (default: the scenario's connection.bind, else any)."
    )
    var bind: String?

    @Option(
        help:
            "Time zero of the schedule: an RFC 3339 instant (2026-12-03T10:00:00Z) or +DURATION from now (+10s); shards given the same instant start together."
    )
    var startAt: String?

    @Option(help: "Override the rate of a constant or poisson arrival (200/s, 12000/m).")
    var rate: String?

    @Option(help: "Override the run's duration (60s, 5m).")
    var duration: String?

    @Option(help: "Override the run's message count.")
    var count: Int?

    @Option(help: "Seed for every random choice (same seed, same traffic).")
    var seed: UInt64?

    @Option(
        help:
            "Measure delivery through a relay: 'embedded' or 'embedded:HOST:PORT' starts a sink in this process for the relay to forward to; a URL (http://HOST:8025) reads a running sink's event stream."
    )
    var sink: String?

    @Option(help: "How long after the last send a message may still arrive before it counts as lost.")
    var grace = "30s"

    @Option(help: "Write the JSON report here.")
    var report: String?

    @Option(help: "Write a self-contained HTML report with plots here.")
    var html: String?

    @Option(help: "Write JUnit XML (one test case per expectation) here.")
    var junit: String?

    @Flag(help: "No progress lines; the summary only.")
    var quiet = false

    @Flag(
        help:
            "Fail the run when an expectation cannot be measured (content checks, delivery latency, lost or duplicates without --sink); by default they are skipped."
    )
    var strict = false

    @Option(
        help:
            "Send only part K of N of the run (every Nth message of the schedule, e.g. 3/8); give every shard the same --seed, then merge the JSON reports with `swallow report merge`."
    )
    var shard: String?

    @Option(help: "The run id in trace headers (run/seq); default random. Shards may share one.")
    var runId: String?

    @Option(
        help:
            "Threads that run plain-TCP connections (default: half the cores, at least 1, leaving the rest to a server on the same machine). TLS connections use SwiftNIO's event loops."
    )
    var threads: Int?

    func run() async throws {
        // Rendered messages of 100 KiB and more are allocated and freed thousands of times a
        // second: glibc's defaults give each its own mapping and fresh pages (measured on a
        // 200 KiB invoice run: 140 page faults and 2.3x the CPU per message).
        swallow_keep_large_allocations(4 << 20, 32 << 20)
        do {
            try await execute()
        } catch let error as InputError {
            FileHandle.standardError.write(Data("error: \(error)\n".utf8))
            throw ExitCode(2)
        }
    }

    private func execute() async throws {
        var scenario = try Scenario.load(path: self.scenario)
        if let rate {
            guard let value = Quantity.rate(rate), value > 0 else {
                throw InputError(file: "--rate", line: nil, field: "", message: "expected a rate such as 200/s")
            }
            switch scenario.arrival {
            case .constant: scenario.arrival = .constant(rate: value)
            case .poisson: scenario.arrival = .poisson(rate: value)
            default: throw InputError(file: "--rate", line: nil, field: "", message: "applies to constant and poisson arrivals only")
            }
        }
        if let duration {
            guard let value = Quantity.duration(duration) else {
                throw InputError(file: "--duration", line: nil, field: "", message: "expected a duration such as 60s")
            }
            scenario.duration = value
        }
        if let count { scenario.count = count }
        let seed = self.seed ?? UInt64.random(in: 0...UInt64(UInt32.max))
        var parsedShard: Shard?
        if let shard {
            guard let parsed = Shard(parsing: shard) else {
                throw InputError(file: "--shard", line: nil, field: "", message: "expected K/N with 1 <= K <= N, such as 3/8, got \(shard)")
            }
            guard self.seed != nil else {
                throw InputError(file: "--shard", line: nil, field: "", message: "give every shard the same --seed, so they split one schedule")
            }
            parsedShard = parsed
        }
        if let runId, runId.isEmpty || runId.contains(where: { $0 == "/" || $0.isWhitespace }) {
            throw InputError(file: "--run-id", line: nil, field: "", message: "a run id has no slashes or spaces")
        }

        guard let graceSeconds = Quantity.duration(grace) else {
            throw InputError(file: "--grace", line: nil, field: "", message: "expected a duration such as 30s")
        }
        var embedded: Sink?
        var remote: HTTPDeliveries?
        var sinkTask: Task<Void, any Error>?
        func startSink(_ address: ListenAddress) async throws -> Sink {
            var configuration = SinkConfiguration()
            configuration.smtp = address
            configuration.smtps = nil
            configuration.maxMessages = 10_000
            var logger = Logger(label: "swallow.sink")
            logger.logLevel = .error
            let started = try await Sink.bind(configuration, logger: logger)
            sinkTask = Task { try await started.run() }
            return started
        }
        let host: String
        let port: Int
        var targets: [LoadTarget] = scenario.connection.targets.compactMap(LoadTarget.init(parsing:))
        if let target {
            guard let list = LoadTarget.list(target) else {
                throw InputError(file: "--target", line: nil, field: "", message: "expected HOST:PORT or HOST:PORT,HOST:PORT,..., got \(target)")
            }
            targets = list
        }
        var startInstant: Date?
        if let startAt {
            if startAt.hasPrefix("+"), let seconds = Quantity.duration(String(startAt.dropFirst())) {
                startInstant = Date().addingTimeInterval(seconds)
            } else {
                let formatter = ISO8601DateFormatter()
                formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
                startInstant = formatter.date(from: startAt) ?? ISO8601DateFormatter().date(from: startAt)
            }
            guard startInstant != nil else {
                throw InputError(
                    file: "--start-at", line: nil, field: "",
                    message: "expected an RFC 3339 instant (2026-12-03T10:00:00Z) or +DURATION (+10s), got \(startAt)")
            }
        }
        if let first = targets.first {
            (host, port) = (first.host, first.port)
            if let sink, sink.hasPrefix("http://") || sink.hasPrefix("https://") {
                guard let url = URL(string: sink), url.host != nil else {
                    throw InputError(file: "--sink", line: nil, field: "", message: "not a URL: \(sink)")
                }
                remote = HTTPDeliveries(baseURL: url, bodies: !scenario.content.isEmpty)
            } else if let sink {
                guard sink == "embedded" || sink.hasPrefix("embedded:"),
                    let address = try? ListenAddress(parsing: sink == "embedded" ? "127.0.0.1:0" : String(sink.dropFirst("embedded:".count)))
                else {
                    throw InputError(file: "--sink", line: nil, field: "", message: "expected embedded or embedded:HOST:PORT, got \(sink)")
                }
                let started = try await startSink(address)
                embedded = started
                if !quiet { print("delivery sink listening at \(started.smtpAddress): point the relay there") }
            }
        } else {
            let started = try await startSink(ListenAddress(host: "127.0.0.1", port: 0))
            embedded = started
            (host, port) = (started.smtpAddress.host, started.smtpAddress.port)
            if !quiet { print("no --target: sending to an in-process sink at \(host):\(port)") }
        }

        var runner = LoadRunner(scenario: scenario, host: host, port: port, seed: seed, runID: runId)
        if !targets.isEmpty { runner.targets = targets }
        if let bind {
            let addresses = bind.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces) }
            guard !addresses.isEmpty, addresses.allSatisfy({ (try? SocketAddress(ipAddress: $0, port: 0)) != nil }) else {
                throw InputError(file: "--bind", line: nil, field: "", message: "expected IP addresses (ADDR,ADDR,...), got \(bind)")
            }
            runner.bind = addresses
        }
        runner.startAt = startInstant
        runner.shard = parsedShard
        if let threads {
            guard threads >= 1 && threads <= 1024 else {
                throw InputError(file: "--threads", line: nil, field: "", message: "expected 1 to 1024 threads, got \(threads)")
            }
            runner.threads = threads
        }
        runner.grace = graceSeconds
        if let embedded { runner.deliveries = StoreDeliveries(store: embedded.store, bodies: !scenario.content.isEmpty) }
        if let remote { runner.deliveries = remote }
        let quiet = self.quiet
        let terminal = isatty(STDOUT_FILENO) != 0
        runner.onProgress = { recorder, elapsed, delivered in
            guard !quiet else { return }
            let progress = recorder.progress
            var line = String(
                format: "%6.1fs  sent %d  in flight %d  errors %d  rate %.0f/s  p50 %.1fms  p99 %.1fms",
                elapsed, progress.sent, progress.inFlight, progress.errors,
                elapsed > 0 ? Double(progress.sent) / elapsed : 0, progress.p50, progress.p99)
            if let delivered { line += "  delivered \(delivered)" }
            if terminal {
                FileHandle.standardOutput.write(Data("\r\u{1B}[K\(line)".utf8))
            } else {
                print(line)
            }
        }
        var result = try await runner.run()
        if strict { result.evaluate(strict: true) }
        if terminal && !quiet { print("") }
        embedded?.shutdown()
        _ = await sinkTask?.result

        print(result.summary())
        if let report { try result.json().write(to: URL(fileURLWithPath: report)) }
        if let html { try Data(result.html().utf8).write(to: URL(fileURLWithPath: html)) }
        if let junit { try Data(result.junit().utf8).write(to: URL(fileURLWithPath: junit)) }
        if result.sent > 0 && result.accepted == 0 && result.errors.keys.allSatisfy({ $0.hasPrefix("connect") }) {
            FileHandle.standardError.write(
                Data("error: the target \(runner.targets.map(\.description).joined(separator: ", ")) could not be reached\n".utf8))
            throw ExitCode(2)
        }
        if !result.passed { throw ExitCode(1) }
    }
}

/// The in-process sink's captures as deliveries. The subscription's buffer is large: a
/// delivery dropped by a slow reader would count as lost.
struct StoreDeliveries: DeliverySource {
    let store: MessageStore
    /// Read each message's bytes too (for `expect.content`).
    var bodies = false

    func deliveries() async -> AsyncStream<Delivery> {
        let events = store.events.subscribe(bufferSize: 1_000_000)
        return AsyncStream { continuation in
            let task = Task {
                for await message in events {
                    guard let trace = message.traceID else { continue }
                    let raw = bodies ? (try? await store.receivedBytes(id: message.id)).flatMap { $0.map { Array($0.readableBytesView) } } : nil
                    continuation.yield(
                        Delivery(
                            traceID: trace, capturedAt: Date(timeIntervalSince1970: Double(message.timestamps.dataEndNanos) / 1e9), raw: raw,
                            relayLatencyMs: message.relay?.first { $0.kind == "proxy" }?.latencyMs))
                }
                continuation.finish()
            }
            continuation.onTermination = { _ in task.cancel() }
        }
    }
}
