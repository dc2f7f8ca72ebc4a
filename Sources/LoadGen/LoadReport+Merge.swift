import Foundation
import Histogram
import SwallowConfig

extension LoadReport {
    /// One report from the JSON reports of a run's shards (`swallow report merge`): counts and
    /// replies added, histograms added (so percentiles are exact, not averaged), the timeline
    /// added second by second (each second's p50/p99 the worst shard's), and every expectation
    /// evaluated again on the merged figures. Shards must be of the same scenario and seed.
    public static func merge(_ reports: [(file: String, report: LoadReport)]) throws(InputError) -> LoadReport {
        guard let (firstFile, first) = reports.first else {
            throw InputError(file: "swallow report merge", line: nil, field: "", message: "give the shards' JSON reports")
        }
        for (file, report) in reports.dropFirst() {
            guard report.scenario == first.scenario else {
                throw InputError(file: file, line: nil, field: "scenario", message: "is \(report.scenario), \(firstFile) is \(first.scenario)")
            }
            guard report.seed == first.seed else {
                throw InputError(
                    file: file, line: nil, field: "seed", message: "is \(report.seed), \(firstFile) has \(first.seed): shards must share --seed")
            }
        }
        let shards = reports.compactMap(\.report.shard)
        if Set(shards).count != shards.count, let duplicate = shards.first(where: { shard in shards.filter { $0 == shard }.count > 1 }) {
            throw InputError(
                file: reports.first { $0.report.shard == duplicate }!.file, line: nil, field: "shard", message: "\(duplicate) is given twice")
        }
        // Shards of one run share time zero (`--start-at`), or none has one.
        for (file, report) in reports.dropFirst() where report.startedAt != first.startedAt {
            throw InputError(
                file: file, line: nil, field: "started_at",
                message: "is \(report.startedAt ?? "none"), \(firstFile) has \(first.startedAt ?? "none"): start shards with the same --start-at")
        }
        var merged = first
        let all = reports.map(\.report)
        merged.startLateMs = all.compactMap(\.startLateMs).max()
        merged.runId = Array(Set(all.map(\.runId))).sorted().joined(separator: ",")
        merged.shard = shards.isEmpty ? nil : shards.joined(separator: ",")
        merged.elapsedSeconds = all.map(\.elapsedSeconds).max() ?? 0
        merged.scheduled = all.reduce(0) { $0 + $1.scheduled }
        merged.sent = all.reduce(0) { $0 + $1.sent }
        merged.accepted = all.reduce(0) { $0 + $1.accepted }
        merged.rejected = all.reduce(0) { $0 + $1.rejected }
        merged.failed = all.reduce(0) { $0 + $1.failed }
        merged.delivered = all.reduce(0) { $0 + $1.delivered }
        merged.lost = all.reduce(0) { $0 + $1.lost }
        merged.duplicates = all.reduce(0) { $0 + $1.duplicates }
        merged.retries = all.reduce(0) { $0 + $1.retries }
        merged.replies = all.reduce(into: [:]) { sum, report in sum.merge(report.replies, uniquingKeysWith: +) }
        merged.errors = all.reduce(into: [:]) { sum, report in sum.merge(report.errors, uniquingKeysWith: +) }
        let targets = all.compactMap(\.rate.target)
        merged.rate = Rate(
            target: targets.count == all.count ? targets.reduce(0, +) : nil,
            achieved: merged.elapsedSeconds > 0 ? (Double(merged.sent) / merged.elapsedSeconds * 10).rounded() / 10 : 0
        )

        // Histograms: a key every shard has is added; a key only some have is left out.
        var histograms: [String: Histogram<UInt64>] = [:]
        for key in first.histograms.keys where all.allSatisfy({ $0.histograms[key] != nil }) {
            var sum = all[0].histograms[key]!
            for report in all.dropFirst() { sum.add(report.histograms[key]!) }
            histograms[key] = sum
        }
        merged.histograms = histograms
        if let submit = histograms["submit_latency_us"] { merged.submitLatencyMs = Latency(submit) }
        if let delivery = histograms["delivery_latency_us"] { merged.deliveryLatencyMs = Latency(delivery) }
        if let relay = histograms["relay_latency_us"] { merged.relayLatencyMs = Latency(relay) }
        if let lag = histograms["schedule_lag_us"] { merged.scheduleLagMs = Latency(lag) }
        for (key, histogram) in histograms where key.hasPrefix("phase_us.") {
            merged.phases[String(key.dropFirst("phase_us.".count))] = Latency(histogram)
        }
        var templates: [String: TemplateFigures] = [:]
        for report in all {
            for (name, figures) in report.perTemplate {
                var entry = templates[name] ?? TemplateFigures(sent: 0, accepted: 0, submitLatencyMs: figures.submitLatencyMs, deliveryLatencyMs: nil)
                entry.sent += figures.sent
                entry.accepted += figures.accepted
                templates[name] = entry
            }
        }
        for name in templates.keys {
            if let submit = histograms["submit_latency_us.\(name)"] { templates[name]!.submitLatencyMs = Latency(submit) }
            if let delivery = histograms["delivery_latency_us.\(name)"] { templates[name]!.deliveryLatencyMs = Latency(delivery) }
        }
        merged.perTemplate = templates
        var perTarget: [String: TargetFigures] = [:]
        for report in all {
            for (name, figures) in report.perTarget ?? [:] {
                var entry = perTarget[name] ?? TargetFigures(sent: 0, accepted: 0, rejected: 0, failed: 0, submitLatencyMs: figures.submitLatencyMs)
                entry.sent += figures.sent
                entry.accepted += figures.accepted
                entry.rejected += figures.rejected
                entry.failed += figures.failed
                perTarget[name] = entry
            }
        }
        for name in perTarget.keys {
            if let submit = histograms["target_submit_latency_us.\(name)"] { perTarget[name]!.submitLatencyMs = Latency(submit) }
        }
        merged.perTarget = perTarget

        var seconds: [Int: Second] = [:]
        for report in all {
            for second in report.timeline {
                guard var entry = seconds[second.t] else {
                    seconds[second.t] = second
                    continue
                }
                entry.sent += second.sent
                entry.accepted += second.accepted
                entry.errors += second.errors
                if let delivered = second.delivered { entry.delivered = (entry.delivered ?? 0) + delivered }
                entry.p50Ms = max(entry.p50Ms, second.p50Ms)
                entry.p99Ms = max(entry.p99Ms, second.p99Ms)
                seconds[second.t] = entry
            }
        }
        merged.timeline = seconds.keys.sorted().map { seconds[$0]! }

        // Thresholds are evaluated again; content checks add their counts.
        merged.expectations = first.expectations.map { verdict in
            if let expectation = Expectation.parse(expression: verdict.expr, metric: verdict.name) {
                return merged.verdict(expectation)
            }
            var checked = 0, good = 0, measured = true
            for report in all {
                guard let match = report.expectations.first(where: { $0.name == verdict.name && $0.expr == verdict.expr }),
                    let counts = Self.contentCounts(match.actual)
                else {
                    measured = false
                    continue
                }
                good += counts.good
                checked += counts.checked
            }
            guard measured else { return Verdict(name: verdict.name, expr: verdict.expr, actual: Verdict.notMeasured, passed: nil) }
            return Verdict(
                name: verdict.name, expr: verdict.expr, actual: "\(good) of \(checked) delivered messages",
                passed: checked > 0 && good == checked)
        }
        merged.evaluate(strict: false)
        return merged
    }

    /// `12 of 15 delivered messages`.
    private static func contentCounts(_ actual: String) -> (good: Int, checked: Int)? {
        let words = actual.split(separator: " ")
        guard words.count >= 3, words[1] == "of", let good = Int(words[0]), let checked = Int(words[2]) else { return nil }
        return (good, checked)
    }

    /// Reads a JSON report written by `swallow load --report`.
    public static func read(path: String) throws(InputError) -> LoadReport {
        do {
            return try JSONDecoder().decode(LoadReport.self, from: Data(contentsOf: URL(fileURLWithPath: path)))
        } catch {
            throw InputError(file: path, line: nil, field: "", message: "not a swallow load JSON report: \(error)")
        }
    }
}
