import Foundation
import Histogram
import SwallowConfig
import Synchronization

/// A run's results: the JSON report of DESIGN.md ("Formats and conventions"), the summary
/// table, JUnit XML, and the expectations' verdicts. Histograms are kept (Codable, mergeable)
/// so shards of one run can be added together.
public struct LoadReport: Codable, Sendable {
    public struct Latency: Codable, Sendable {
        public var p50: Double, p90: Double, p99: Double, p999: Double, max: Double, mean: Double

        init(_ histogram: Histogram<UInt64>) {
            func ms(_ micros: UInt64) -> Double { (Double(micros) / 1000 * 1000).rounded() / 1000 }
            let empty = histogram.totalCount == 0
            p50 = empty ? 0 : ms(histogram.valueAtPercentile(50))
            p90 = empty ? 0 : ms(histogram.valueAtPercentile(90))
            p99 = empty ? 0 : ms(histogram.valueAtPercentile(99))
            p999 = empty ? 0 : ms(histogram.valueAtPercentile(99.9))
            max = empty ? 0 : ms(histogram.max)
            mean = empty ? 0 : (Self.mean(histogram) / 1000 * 1000).rounded() / 1000
        }

        /// `Histogram.mean`, the same sum (each recorded value's bucket median times its count),
        /// walked here: the library's own is compiled for any count type, and a profile of a
        /// 1.7 s run had the report's means at 10 ms of its wall time.
        static func mean(_ histogram: Histogram<UInt64>) -> Double {
            guard histogram.totalCount > 0 else { return 0 }
            var total = 0.0
            for recorded in histogram.recordedValues() {
                total += Double(histogram.medianEquivalentForValue(recorded.value)) * Double(recorded.count)
            }
            return total / Double(histogram.totalCount)
        }

        func value(_ percentile: String) -> Double? {
            switch percentile {
            case "p50": p50
            case "p90": p90
            case "p95": nil
            case "p99": p99
            case "p999": p999
            case "max": max
            case "mean": mean
            default: nil
            }
        }
    }

    public struct Rate: Codable, Sendable {
        public var target: Double?
        public var achieved: Double
    }

    public struct TemplateFigures: Codable, Sendable {
        public var sent: Int
        public var accepted: Int
        public var submitLatencyMs: Latency
        public var deliveryLatencyMs: Latency?

        enum CodingKeys: String, CodingKey {
            case sent, accepted
            case submitLatencyMs = "submit_latency_ms"
            case deliveryLatencyMs = "delivery_latency_ms"
        }

        /// `delivery_latency_ms` is `null` when nothing measured it, never absent.
        public func encode(to encoder: any Encoder) throws {
            var container = encoder.container(keyedBy: CodingKeys.self)
            try container.encode(sent, forKey: .sent)
            try container.encode(accepted, forKey: .accepted)
            try container.encode(submitLatencyMs, forKey: .submitLatencyMs)
            try container.encode(deliveryLatencyMs, forKey: .deliveryLatencyMs)
        }
    }

    public struct TargetFigures: Codable, Sendable {
        public var sent: Int
        public var accepted: Int
        public var rejected: Int
        public var failed: Int
        public var submitLatencyMs: Latency

        enum CodingKeys: String, CodingKey {
            case sent, accepted, rejected, failed
            case submitLatencyMs = "submit_latency_ms"
        }
    }

    public struct Second: Codable, Sendable {
        public var t: Int
        public var sent: Int
        public var accepted: Int
        public var errors: Int
        /// Messages the sink captured in this second (with a delivery source).
        public var delivered: Int?
        public var p50Ms: Double
        public var p99Ms: Double

        enum CodingKeys: String, CodingKey {
            case t, sent, accepted, errors, delivered
            case p50Ms = "p50_ms"
            case p99Ms = "p99_ms"
        }
    }

    public struct Verdict: Codable, Sendable {
        public var name: String
        public var expr: String
        public var actual: String
        /// nil when the expectation could not be measured (no delivery sink): reported as
        /// skipped, `null` in the JSON; it fails the run only under `--strict`.
        public var passed: Bool?

        /// What an unmeasurable expectation reports as its actual value.
        static let notMeasured = "not measured (no delivery sink; give --sink)"

        public func encode(to encoder: any Encoder) throws {
            var container = encoder.container(keyedBy: CodingKeys.self)
            try container.encode(name, forKey: .name)
            try container.encode(expr, forKey: .expr)
            try container.encode(actual, forKey: .actual)
            try container.encode(passed, forKey: .passed)
        }

        private enum CodingKeys: String, CodingKey { case name, expr, actual, passed }
    }

    public var scenario: String
    public var runId: String
    public var seed: UInt64
    public var elapsedSeconds: Double
    public var scheduled: Int
    public var sent: Int
    public var accepted: Int
    public var rejected: Int
    public var failed: Int
    /// Messages the sink captured (each once), matched by trace id; without a delivery source,
    /// messages that got a 2xx final reply.
    public var delivered: Int
    public var lost: Int
    public var duplicates: Int
    public var retries: Int
    public var replies: [String: Int]
    public var errors: [String: Int]
    public var rate: Rate
    public var submitLatencyMs: Latency
    public var deliveryLatencyMs: Latency?
    /// The upstream's share when the sink is a Swallow proxy (`--upstream`): each message's
    /// hop latency as the proxy recorded it; null when no hop was measured.
    public var relayLatencyMs: Latency?
    /// Scheduled time to the first byte sent: how far the generator fell behind its schedule.
    public var scheduleLagMs: Latency
    public var phases: [String: Latency]
    public var perTemplate: [String: TemplateFigures]
    /// By target `HOST:PORT` (`--target A,B`); optional only so older reports still read.
    public var perTarget: [String: TargetFigures]?
    /// `--start-at`: time zero of the schedule (RFC 3339), and how late this process started
    /// after it (0 when it waited for it); null without `--start-at`.
    public var startedAt: String?
    public var startLateMs: Double?
    public var timeline: [Second]
    public var expectations: [Verdict]
    public var passed: Bool
    /// Submission latency in microseconds, mergeable.
    public var histograms: [String: Histogram<UInt64>]
    /// `K/N` when this run was one shard of N (`--shard`); the shards named when merged.
    public var shard: String?

    // DESIGN.md's snake_case keys, spelled out: a key strategy would also rewrite the keys of
    // the dictionaries (template names, error texts) and could not read them back.
    enum CodingKeys: String, CodingKey {
        case scenario
        case runId = "run_id"
        case seed
        case elapsedSeconds = "elapsed_seconds"
        case scheduled, sent, accepted, rejected, failed
        case delivered, lost, duplicates, retries, replies, errors, rate
        case submitLatencyMs = "submit_latency_ms"
        case deliveryLatencyMs = "delivery_latency_ms"
        case relayLatencyMs = "relay_latency_ms"
        case scheduleLagMs = "schedule_lag_ms"
        case phases
        case perTemplate = "per_template"
        case timeline, expectations, passed, histograms, shard
        case perTarget = "per_target"
        case startedAt = "started_at"
        case startLateMs = "start_late_ms"
    }

    static func rfc3339(_ date: Date) -> String {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        return formatter.string(from: date)
    }

    /// Every documented key is present: `delivery_latency_ms`, `relay_latency_ms` (and `shard`) are `null` when
    /// they do not apply, never absent.
    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(scenario, forKey: .scenario)
        try container.encode(runId, forKey: .runId)
        try container.encode(seed, forKey: .seed)
        try container.encode(elapsedSeconds, forKey: .elapsedSeconds)
        try container.encode(scheduled, forKey: .scheduled)
        try container.encode(sent, forKey: .sent)
        try container.encode(accepted, forKey: .accepted)
        try container.encode(rejected, forKey: .rejected)
        try container.encode(failed, forKey: .failed)
        try container.encode(delivered, forKey: .delivered)
        try container.encode(lost, forKey: .lost)
        try container.encode(duplicates, forKey: .duplicates)
        try container.encode(retries, forKey: .retries)
        try container.encode(replies, forKey: .replies)
        try container.encode(errors, forKey: .errors)
        try container.encode(rate, forKey: .rate)
        try container.encode(submitLatencyMs, forKey: .submitLatencyMs)
        try container.encode(deliveryLatencyMs, forKey: .deliveryLatencyMs)
        try container.encode(relayLatencyMs, forKey: .relayLatencyMs)
        try container.encode(scheduleLagMs, forKey: .scheduleLagMs)
        try container.encode(phases, forKey: .phases)
        try container.encode(perTemplate, forKey: .perTemplate)
        try container.encode(perTarget ?? [:], forKey: .perTarget)
        try container.encode(startedAt, forKey: .startedAt)
        try container.encode(startLateMs, forKey: .startLateMs)
        try container.encode(timeline, forKey: .timeline)
        try container.encode(expectations, forKey: .expectations)
        try container.encode(passed, forKey: .passed)
        try container.encode(histograms, forKey: .histograms)
        try container.encode(shard, forKey: .shard)
    }

    /// Whether a delivery source measured this run (what `lost`, `duplicates`, delivery
    /// latency and content checks need).
    var deliveriesMeasured: Bool { deliveryLatencyMs != nil }

    /// The run passes when no expectation failed; an unmeasured one (skipped) fails it only
    /// when `strict`.
    public mutating func evaluate(strict: Bool) {
        passed = expectations.allSatisfy { strict ? $0.passed == true : $0.passed != false }
    }

    init(scenario: Scenario, runID: String, recorder: Recorder, elapsed: Double, seed: UInt64, deliveries: DeliveryTracker? = nil) {
        let state = recorder.state.withLock { $0 }
        self.scenario = scenario.name
        self.runId = runID
        self.seed = seed
        self.elapsedSeconds = (elapsed * 1000).rounded() / 1000
        scheduled = state.sent
        sent = state.sent
        accepted = state.accepted
        rejected = state.rejected
        failed = state.failed
        delivered = state.accepted
        lost = 0
        duplicates = 0
        retries = state.retries
        replies = Dictionary(uniqueKeysWithValues: state.replies.map { (String($0.key), $0.value) })
        errors = state.errors
        let target: Double? =
            switch scenario.arrival {
            case .constant(let rate), .poisson(let rate): rate
            default: nil
            }
        rate = Rate(target: target, achieved: elapsed > 0 ? (Double(state.sent) / elapsed * 10).rounded() / 10 : 0)
        submitLatencyMs = Latency(state.latency)
        deliveryLatencyMs = nil
        scheduleLagMs = Latency(state.lag)
        phases = state.phases.mapValues(Latency.init)
        perTemplate = state.perTemplate.mapValues { TemplateFigures(sent: $0.sent, accepted: $0.accepted, submitLatencyMs: Latency($0.latency)) }
        timeline = state.timeline.keys.sorted().map { second in
            let bucket = state.timeline[second]!
            return Second(
                t: second, sent: bucket.sent, accepted: bucket.accepted, errors: bucket.errors, delivered: nil,
                p50Ms: Double(bucket.latency.valueAtPercentile(50)) / 1000, p99Ms: Double(bucket.latency.valueAtPercentile(99)) / 1000)
        }
        histograms = ["submit_latency_us": state.latency, "schedule_lag_us": state.lag]
        perTarget = state.perTarget.mapValues {
            TargetFigures(sent: $0.sent, accepted: $0.accepted, rejected: $0.rejected, failed: $0.failed, submitLatencyMs: Latency($0.latency))
        }
        for (target, figures) in state.perTarget { histograms["target_submit_latency_us.\(target)"] = figures.latency }
        for (name, histogram) in state.phases { histograms["phase_us.\(name)"] = histogram }
        if let deliveries {
            let tracked = deliveries.state.withLock { $0 }
            delivered = tracked.delivered.count
            lost = tracked.accepted.subtracting(tracked.delivered).count
            duplicates = tracked.duplicates
            deliveryLatencyMs = Latency(tracked.latency)
            // Deliveries per second; seconds with deliveries only (the grace period) are added.
            var byTime = Dictionary(uniqueKeysWithValues: timeline.map { ($0.t, $0) })
            for second in tracked.perSecond.keys where byTime[second] == nil {
                byTime[second] = Second(t: second, sent: 0, accepted: 0, errors: 0, delivered: nil, p50Ms: 0, p99Ms: 0)
            }
            timeline = byTime.keys.sorted().map { second in
                var entry = byTime[second]!
                entry.delivered = tracked.perSecond[second] ?? 0
                return entry
            }
            histograms["delivery_latency_us"] = tracked.latency
            if let relay = tracked.relayLatency {
                histograms["relay_latency_us"] = relay
                relayLatencyMs = Latency(relay)
            }
            for (name, histogram) in tracked.perTemplate {
                histograms["delivery_latency_us.\(name)"] = histogram
                perTemplate[name]?.deliveryLatencyMs = Latency(histogram)
            }
        }
        for (name, figures) in state.perTemplate { histograms["submit_latency_us.\(name)"] = figures.latency }
        expectations = []
        passed = true
        expectations = scenario.expect.map(verdict)
        let tracked = deliveries?.state.withLock { (checked: $0.contentChecked, failed: $0.contentFailed) }
        for (index, check) in scenario.content.enumerated() {
            let checked = tracked?.checked[index] ?? 0
            let failed = tracked?.failed[index] ?? 0
            let actual = tracked == nil ? Verdict.notMeasured : "\(checked - failed) of \(checked) delivered messages"
            expectations.append(
                Verdict(
                    name: check.name, expr: "every delivered message", actual: actual,
                    passed: tracked == nil ? nil : checked > 0 && failed == 0))
        }
        evaluate(strict: false)
    }

    func verdict(_ expectation: Expectation) -> Verdict {
        let actual: Double?
        var shown: String
        let parts = expectation.metric.split(separator: ".", maxSplits: 1).map(String.init)
        switch parts[0] {
        case "submit_latency", "delivery_latency":
            let latency = parts[0] == "submit_latency" ? submitLatencyMs : deliveryLatencyMs
            actual = latency?.value(parts.count > 1 ? parts[1] : "p99").map { $0 / 1000 }
            shown = actual.map { Quantity.format(seconds: $0) } ?? Verdict.notMeasured
        default:
            let count: Int? =
                switch parts[0] {
                case "delivered": delivered
                case "accepted": accepted
                case "errors": rejected + failed
                case "rejected": rejected
                case "failed": failed
                case "lost": deliveriesMeasured ? lost : nil
                case "duplicates": deliveriesMeasured ? duplicates : nil
                case "sent": sent
                default: nil
                }
            if expectation.unit == .percent {
                actual = count.map { scheduled > 0 ? Double($0) / Double(scheduled) * 100 : 0 }
                shown = actual.map { String(format: "%.3f%%", $0) } ?? Verdict.notMeasured
            } else {
                actual = count.map(Double.init)
                shown = count.map(String.init) ?? Verdict.notMeasured
            }
        }
        let passed = actual.map { expectation.comparison.holds($0, expectation.value) }
        return Verdict(name: expectation.metric, expr: expectation.expression, actual: shown, passed: passed)
    }

    public func json() throws -> Data {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.prettyPrinted, .sortedKeys]
        return try encoder.encode(self)
    }
}
