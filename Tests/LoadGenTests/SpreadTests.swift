import Foundation
import MailMessage
import SinkServer
import SwallowConfig
import Testing

@testable import LoadGen

/// Several targets, source addresses, and shards that start together.
@Suite("Targets, source addresses and a shared start", .timeLimit(.minutes(3)))
struct SpreadTests {
    static func startSink() async throws -> (Sink, Task<Void, any Error>) {
        var configuration = SinkConfiguration()
        configuration.smtp = ListenAddress(host: "127.0.0.1", port: 0)
        let sink = try await Sink.bind(configuration)
        return (sink, Task { try await sink.run() })
    }

    @Test("--target A,B at a rate one connection could carry: open-loop jobs go round the pool, so both targets take their share")
    func twoTargetsOpenLoopLowRate() async throws {
        let (first, firstTask) = try await Self.startSink()
        let (second, secondTask) = try await Self.startSink()
        defer {
            first.shutdown()
            second.shutdown()
        }
        let scenario = try Scenario.parse(
            """
            name: slow
            count: 20
            arrival: {kind: constant, rate: 200/s}
            connection: {pool: 4, per_connection: 0}
            templates:
              otp: {from: a@x.example, to: "u{seq}@x.example", subject: "Code {otp:6}", text: "Code {otp}"}
            """)
        var runner = LoadRunner(scenario: scenario, host: "127.0.0.1", port: first.smtpAddress.port, seed: 1)
        runner.targets = [LoadTarget(host: "127.0.0.1", port: first.smtpAddress.port), LoadTarget(host: "127.0.0.1", port: second.smtpAddress.port)]
        let report = try await runner.run()
        #expect(report.accepted == 20)
        // Round the pool of four, two connections on each target: about ten each (exactly ten
        // unless a sender was still busy at its turn). A stack of idle senders sent all 20 to one.
        #expect((5...15).contains(first.store.count) && (5...15).contains(second.store.count), "\(first.store.count) / \(second.store.count)")
        #expect(first.store.count + second.store.count == 20)
        first.shutdown()
        second.shutdown()
        _ = await firstTask.result
        _ = await secondTask.result
    }

    @Test("--target A,B: connections are spread evenly over two sinks and per_target counts each")
    func twoTargets() async throws {
        let (first, firstTask) = try await Self.startSink()
        let (second, secondTask) = try await Self.startSink()
        defer {
            first.shutdown()
            second.shutdown()
        }
        var runner = LoadRunner(scenario: LoadRunTests.scenario(count: 40), host: "127.0.0.1", port: first.smtpAddress.port, seed: 1)
        runner.targets = [LoadTarget(host: "127.0.0.1", port: first.smtpAddress.port), LoadTarget(host: "127.0.0.1", port: second.smtpAddress.port)]
        let report = try await runner.run()
        #expect(report.accepted == 40)
        // Four connections, two on each target; each took messages.
        #expect(first.store.count > 0 && second.store.count > 0 && first.store.count + second.store.count == 40)
        let perTarget = try #require(report.perTarget)
        #expect(perTarget["127.0.0.1:\(first.smtpAddress.port)"]?.accepted == first.store.count)
        #expect(perTarget["127.0.0.1:\(second.smtpAddress.port)"]?.accepted == second.store.count)
        let json = try #require(try JSONSerialization.jsonObject(with: report.json()) as? [String: Any])
        let keys = try #require(json["per_target"] as? [String: [String: Any]])
        #expect(Set(keys.keys) == ["127.0.0.1:\(first.smtpAddress.port)", "127.0.0.1:\(second.smtpAddress.port)"])
        for figures in keys.values {
            for key in ["sent", "accepted", "rejected", "failed", "submit_latency_ms"] { #expect(figures[key] != nil, "per_target.\(key)") }
        }
        first.shutdown()
        second.shutdown()
        _ = await firstTask.result
        _ = await secondTask.result
    }

    @Test("--bind 127.0.0.2,127.0.0.3: the sink sees connections from both source addresses")
    func sourceAddresses() async throws {
        let (sink, task) = try await Self.startSink()
        defer { sink.shutdown() }
        var runner = LoadRunner(scenario: LoadRunTests.scenario(count: 20), host: "127.0.0.1", port: sink.smtpAddress.port, seed: 2)
        runner.bind = ["127.0.0.2", "127.0.0.3"]
        let report = try await runner.run()
        #expect(report.accepted == 20, "\(report.errors)")
        let clients = Set(sink.store.messages().map { $0.session.remoteAddress.split(separator: ":").first.map(String.init) ?? "" })
        #expect(clients == ["127.0.0.2", "127.0.0.3"])
        sink.shutdown()
        _ = await task.result
    }

    @Test("--start-at: two shards given one instant send nothing before it; a shard started after it sends everything and says how late")
    func sharedStart() async throws {
        let (sink, task) = try await Self.startSink()
        defer { sink.shutdown() }
        let scenario = LoadRunTests.scenario(count: 20)
        // Far enough ahead that both shards are waiting for it even on a loaded machine (3 s was
        // not: a full peer run on 2 cores once took longer to start them).
        let instant = Date().addingTimeInterval(8)
        let reports = try await withThrowingTaskGroup(of: LoadReport.self) { group in
            for index in 0..<2 {
                group.addTask {
                    var runner = LoadRunner(scenario: scenario, host: "127.0.0.1", port: sink.smtpAddress.port, seed: 3, runID: "start")
                    runner.shard = Shard(index: index, count: 2)
                    runner.startAt = instant
                    return try await runner.run()
                }
            }
            return try await group.reduce(into: []) { $0.append($1) }
        }
        #expect(reports.map(\.accepted) == [10, 10])
        let firstCapture = try #require(sink.store.messages().map(\.timestamps.dataEndNanos).min())
        #expect(Double(firstCapture) / 1e9 >= instant.timeIntervalSince1970, "a message was sent before the shared start")
        #expect(Set(reports.compactMap(\.startedAt)).count == 1 && reports.allSatisfy { $0.startLateMs == 0 })
        let merged = try LoadReport.merge(reports.enumerated().map { ("shard\($0.offset)", $0.element) })
        #expect(merged.accepted == 20)

        // Started 1 s after time zero: nothing skipped, the lateness reported, latency counted from the schedule.
        var late = LoadRunner(scenario: scenario, host: "127.0.0.1", port: sink.smtpAddress.port, seed: 3)
        late.startAt = Date().addingTimeInterval(-1)
        let report = try await late.run()
        #expect(report.accepted == 20)
        #expect((report.startLateMs ?? 0) >= 1000)
        #expect(report.submitLatencyMs.p50 >= 900, "latency counts from each message's due time")
        // Shards with different starts are refused by the merge.
        #expect(throws: InputError.self) { try LoadReport.merge([("a", reports[0]), ("b", report)]) }
        sink.shutdown()
        _ = await task.result
    }
}
