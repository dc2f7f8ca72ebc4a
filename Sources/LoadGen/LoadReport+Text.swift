import Foundation

// The report as people read it: the summary table `swallow load` prints, and JUnit XML for CI.
extension LoadReport {
    /// The final summary table.
    public func summary() -> String {
        var lines: [String] = []
        lines.append("scenario \(scenario)  run \(runId)  seed \(seed)  \(String(format: "%.1f", elapsedSeconds))s")
        lines.append(
            "sent \(sent)  accepted \(accepted)  rejected \(rejected)  failed \(failed)  retries \(retries)  rate \(rate.achieved)/s"
                + (rate.target.map { " (target \($0)/s)" } ?? ""))
        func row(_ name: String, _ latency: Latency) -> String {
            name.padding(toLength: 18, withPad: " ", startingAt: 0)
                + [latency.p50, latency.p90, latency.p99, latency.p999, latency.max]
                .map { String(format: "%10.2f", $0) }.joined()
        }
        lines.append(
            "latency ms".padding(toLength: 18, withPad: " ", startingAt: 0)
                + ["p50", "p90", "p99", "p99.9", "max"].map { $0.leftPadded(10) }.joined())
        lines.append(row("submit", submitLatencyMs))
        for name in perTemplate.keys.sorted() { lines.append(row("  \(name)", perTemplate[name]!.submitLatencyMs)) }
        if let delivery = deliveryLatencyMs {
            lines.append(row("delivery", delivery))
            for name in perTemplate.keys.sorted() {
                if let latency = perTemplate[name]!.deliveryLatencyMs { lines.append(row("  \(name)", latency)) }
            }
            if let relay = relayLatencyMs { lines.append(row("  relay hop", relay)) }
            lines.append("delivered \(delivered)  lost \(lost)  duplicates \(duplicates)")
        }
        lines.append(row("schedule lag", scheduleLagMs))
        if scheduleLagMs.p99 > 100 {
            lines.append("note: the generator fell behind its schedule (lag p99 \(scheduleLagMs.p99) ms): more connections (`pool`) or a lower rate")
        }
        if !replies.isEmpty {
            lines.append("replies " + replies.keys.sorted().map { "\($0): \(replies[$0]!)" }.joined(separator: "  "))
        }
        for (error, count) in errors.sorted(by: { $0.value > $1.value }).prefix(10) { lines.append("error \(count)x \(error)") }
        for verdict in expectations {
            let word =
                switch verdict.passed {
                case true?: "PASS"
                case false?: "FAIL"
                case nil: "SKIP"
                }
            let actual = verdict.passed == nil ? verdict.actual : "actual \(verdict.actual)"
            lines.append("\(word) \(verdict.name) \(verdict.expr) (\(actual))")
        }
        lines.append(passed ? "passed" : "FAILED")
        return lines.joined(separator: "\n")
    }

    /// JUnit XML: one test case per expectation (a failure each that does not hold).
    public func junit() -> String {
        func escape(_ text: String) -> String {
            text.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
                .replacingOccurrences(of: ">", with: "&gt;").replacingOccurrences(of: "\"", with: "&quot;")
        }
        let failures = expectations.filter { $0.passed == false }.count
        let skipped = expectations.filter { $0.passed == nil }.count
        var xml = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n"
        xml += "<testsuites tests=\"\(expectations.count)\" failures=\"\(failures)\" skipped=\"\(skipped)\">\n"
        xml +=
            "  <testsuite name=\"swallow load \(escape(scenario))\" tests=\"\(expectations.count)\" failures=\"\(failures)\" skipped=\"\(skipped)\" time=\"\(elapsedSeconds)\">\n"
        for verdict in expectations {
            xml += "    <testcase classname=\"\(escape(scenario))\" name=\"\(escape("\(verdict.name) \(verdict.expr)"))\">"
            if verdict.passed == false {
                xml += "\n      <failure message=\"\(escape("\(verdict.name) \(verdict.expr), actual \(verdict.actual)"))\"/>\n    "
            } else if verdict.passed == nil {
                xml += "\n      <skipped message=\"\(escape(verdict.actual))\"/>\n    "
            }
            xml += "</testcase>\n"
        }
        xml += "  </testsuite>\n</testsuites>\n"
        return xml
    }
}
extension String {
    func leftPadded(_ width: Int) -> String {
        count >= width ? self : String(repeating: " ", count: width - count) + self
    }
}
