import Prometheus
import Testing

@testable import SinkServer

@Suite("Sink metrics")
struct SinkMetricsTests {
    /// The text of one metric family: its lines, in a set (the registry writes a family's
    /// members in no set order).
    private static func family(_ name: String, in text: [UInt8]) -> Set<String> {
        Set(String(decoding: text, as: UTF8.self).split(separator: "\n").map(String.init).filter { $0.contains(name) })
    }

    @Test("the phase histograms are written as swift-prometheus writes four duration histograms of the same values")
    func phasesAsPrometheus() {
        let metrics = SinkMetrics()
        let registry = PrometheusCollectorRegistry()
        let reference = SinkMetrics.phaseNames.map { phase in
            registry.makeDurationHistogram(
                descriptor: MetricNameDescriptor(
                    namespace: "swallow", subsystem: "smtp", metricName: "phase", unitName: "seconds", helpText: SinkMetrics.phaseHelp),
                labels: [("phase", phase)], buckets: SinkMetrics.phaseBuckets)
        }
        // On, just under and just over bucket bounds; zero; far past the last; a phase not had.
        let values: [[Int64]] = [
            [50_000, 49_999, 50_001, 0], [1_000_000_000, 30_000_000_000, 30_000_000_001, 7_500], [-1, 2_500_000, 999_999_999, 123_456_789],
            [0, -5, 100_000_000_000, 250_000],
        ]
        for row in values {
            for (phase, value) in row.enumerated() where value >= 0 { reference[phase].record(.nanoseconds(value)) }
            metrics.phases.record(row[0], row[1], row[2], row[3])
        }
        var expected: [UInt8] = []
        registry.emit(into: &expected)
        let rendered = metrics.render(storedMessages: 0, openConnections: 0)
        let name = "swallow_smtp_phase_seconds"
        #expect(Self.family(name, in: rendered) == Self.family(name, in: expected))
        #expect(Self.family(name, in: rendered).count == 2 + 4 * (SinkMetrics.phaseBuckets.count + 3))
    }
}
