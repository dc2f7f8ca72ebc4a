import Foundation
import SwallowConfig

/// One threshold of a scenario's `expect`: a metric, a comparison and a value, such as
/// `submit_latency.p99 < 500ms`, `delivered >= 99.9%` or `errors == 0`.
public struct Expectation: Sendable, Equatable {
    public enum Comparison: String, Sendable, CaseIterable {
        case atLeast = ">="
        case atMost = "<="
        case equal = "=="
        case notEqual = "!="
        case above = ">"
        case below = "<"

        func holds(_ actual: Double, _ expected: Double) -> Bool {
            switch self {
            case .atLeast: actual >= expected
            case .atMost: actual <= expected
            case .equal: actual == expected
            case .notEqual: actual != expected
            case .above: actual > expected
            case .below: actual < expected
            }
        }
    }

    public enum Unit: String, Sendable { case count, percent, seconds }

    /// `delivered`, `accepted`, `errors`, `rejected`, `failed`, `submit_latency.p99`, ...
    public var metric: String
    public var comparison: Comparison
    public var value: Double
    public var unit: Unit
    /// As written: `>= 99.9%`.
    public var expression: String

    public var name: String { "\(metric) \(expression)" }

    static let countMetrics: Set<String> = ["delivered", "accepted", "errors", "rejected", "failed", "lost", "duplicates", "sent"]
    static let latencyMetrics: Set<String> = ["submit_latency", "delivery_latency"]
    static let percentiles: Set<String> = ["p50", "p90", "p95", "p99", "p999", "max", "mean"]

    /// Reads `comparison value`, the value a count, a percentage or a duration.
    public static func parse(expression: String, metric: String) -> Expectation? {
        let text = expression.trimmingCharacters(in: .whitespaces)
        guard
            let comparison = Comparison.allCases.sorted(by: { $0.rawValue.count > $1.rawValue.count })
                .first(where: { text.hasPrefix($0.rawValue) })
        else { return nil }
        let operand = text.dropFirst(comparison.rawValue.count).trimmingCharacters(in: .whitespaces)
        if operand.hasSuffix("%"), let percent = Double(operand.dropLast()), (0...100).contains(percent) {
            return Expectation(metric: metric, comparison: comparison, value: percent, unit: .percent, expression: text)
        }
        if let number = Double(operand), number.isFinite {
            return Expectation(metric: metric, comparison: comparison, value: number, unit: .count, expression: text)
        }
        if let seconds = Quantity.duration(operand) {
            return Expectation(metric: metric, comparison: comparison, value: seconds, unit: .seconds, expression: text)
        }
        return nil
    }

    static func parse(_ reader: YAMLReader) throws(InputError) -> [Expectation] {
        var result: [Expectation] = []
        for (metric, value) in try reader.entries() where metric != "content" {
            if latencyMetrics.contains(metric) {
                for (percentile, threshold) in try value.entries() {
                    guard percentiles.contains(percentile) else {
                        throw threshold.error("unknown percentile (expected one of: \(percentiles.sorted().joined(separator: ", ")))")
                    }
                    guard let expectation = parse(expression: try threshold.string(), metric: "\(metric).\(percentile)"),
                        expectation.unit == .seconds
                    else {
                        throw threshold.error("expected a comparison with a duration, such as \"< 500ms\"")
                    }
                    result.append(expectation)
                }
            } else if countMetrics.contains(metric) {
                guard let expectation = parse(expression: try value.string(), metric: metric), expectation.unit != .seconds else {
                    throw value.error("expected a comparison with a count or a percentage, such as \">= 99.9%\" or \"== 0\"")
                }
                result.append(expectation)
            } else {
                let known = (countMetrics.union(latencyMetrics).union(["content"])).sorted().joined(separator: ", ")
                throw value.error("unknown expectation (expected one of: \(known))")
            }
        }
        return result
    }
}
