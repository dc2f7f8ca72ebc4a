import Foundation
import Histogram
import SinkServer
import SwallowConfig
import SwallowTestSupport
import Testing

@testable import LoadGen

/// A run split over shards (`--shard K/N`) and put back together (`swallow report merge`).
@Suite("Shards and merged reports")
struct ShardTests {
    @Test("K/N parses for 1 <= K <= N only")
    func parsing() {
        #expect(Shard(parsing: "3/8") == Shard(index: 2, count: 8))
        #expect(Shard(parsing: "1/1") == Shard(index: 0, count: 1))
        for bad in ["0/8", "9/8", "3", "3/0", "a/b", "/8", "3/8/1"] { #expect(Shard(parsing: bad) == nil, "\(bad)") }
    }

    @Test("a report's mean is the histogram library's mean, for values across many buckets")
    func latencyMean() {
        var histogram = Recorder.histogram()
        #expect(LoadReport.Latency.mean(histogram) == 0)
        var random = SystemRandomNumberGenerator()
        for _ in 0..<5_000 { _ = histogram.record(UInt64.random(in: 1...2_000_000, using: &random)) }
        _ = histogram.record(3_000_000_000)
        let ours = LoadReport.Latency.mean(histogram)
        #expect(abs(ours - histogram.mean) <= histogram.mean * 1e-12)
        #expect(LoadReport.Latency(histogram).mean == (histogram.mean / 1000 * 1000).rounded() / 1000)
    }

    @Test("three shards send exactly the whole run, disjoint; their merged report is the run's")
    func threeShards() async throws {
        var configuration = SinkConfiguration()
        configuration.smtp = ListenAddress(host: "127.0.0.1", port: 0)
        let sink = try await Sink.bind(configuration)
        let serving = Task { try await sink.run() }
        let scenario = try Scenario.parse(
            """
            name: sharded
            count: 31
            arrival: {kind: poisson, rate: 3000/s}
            connection: {pool: 3}
            mix: [{template: otp, weight: 3}, {template: reset, weight: 1}]
            templates:
              otp: {from: a@x.example, to: "u{seq}@x.example", subject: "Code {otp:6}", text: "Code {otp}"}
              reset: {from: a@x.example, to: "r{seq}@x.example", subject: "Reset", text: "Reset"}
            expect:
              accepted: "== 31"
              submit_latency: {p99: "< 30s"}
            """)
        var reports: [(file: String, report: LoadReport)] = []
        for k in 1...3 {
            var runner = LoadRunner(scenario: scenario, host: "127.0.0.1", port: sink.smtpAddress.port, seed: 9, runID: "shardrun")
            runner.shard = Shard(index: k - 1, count: 3)
            let report = try await runner.run()
            #expect(report.shard == "\(k)/3")
            #expect(!report.passed, "a shard alone has only a third of the messages")
            // Written and read back as `swallow report merge` would.
            let data = try report.json()
            reports.append(("shard\(k).json", try JSONDecoder().decode(LoadReport.self, from: data)))
        }
        let traces = sink.store.messages().compactMap(\.traceID)
        #expect(traces.count == 31 && Set(traces) == Set((0..<31).map { "shardrun/\($0)" }))

        // The unsharded run's template choices, for comparison.
        var picker = TemplatePicker(mix: scenario.mix, seed: 9)
        var whole: [String: Int] = [:]
        for _ in 0..<31 { whole[picker.next(), default: 0] += 1 }

        let merged = try LoadReport.merge(reports)
        #expect(merged.sent == 31 && merged.accepted == 31 && merged.replies["250"] == 31)
        #expect(merged.histograms["submit_latency_us"]?.totalCount == 31)
        #expect(merged.perTemplate.mapValues(\.sent) == whole)
        #expect(merged.shard == "1/3,2/3,3/3" && merged.runId == "shardrun")
        #expect(merged.timeline.reduce(0) { $0 + $1.sent } == 31)
        #expect(merged.passed, "\(merged.expectations)")
        #expect(merged.expectations.first?.actual == "31")

        var other = reports[1]
        other.report.seed = 10
        #expect(throws: InputError.self) { try LoadReport.merge([reports[0], other]) }
        #expect(throws: InputError.self) { try LoadReport.merge([reports[0], reports[0]]) }
        sink.shutdown()
        _ = await serving.result
    }
}
