import Foundation
import Histogram

/// The report as one self-contained HTML file: inline CSS and SVG plots, no script, no
/// network, so it opens offline. Plots: submission latency percentiles over time, the latency
/// distribution (percentile spectrum from the HdrHistogram), throughput over time, and errors.
extension LoadReport {
    public func html() -> String {
        var body = "<h1>swallow load: \(escape(scenario))</h1>\n"
        body += "<p>run <code>\(escape(runId))</code>, seed \(seed), \(String(format: "%.1f", elapsedSeconds)) s. "
        body += "Sent \(sent), accepted \(accepted), rejected \(rejected), failed \(failed), retries \(retries); "
        if deliveryLatencyMs != nil { body += "delivered \(delivered), lost \(lost), duplicates \(duplicates); " }
        body += "achieved \(rate.achieved)/s\(rate.target.map { " (target \($0)/s)" } ?? "").</p>\n"
        body += "<p class=\"verdict \(passed ? "pass" : "fail")\">\(passed ? "All expectations hold" : "An expectation failed")</p>\n"
        if !expectations.isEmpty {
            body += "<table><tr><th>expectation</th><th>actual</th><th></th></tr>\n"
            for verdict in expectations {
                body += "<tr><td>\(escape("\(verdict.name) \(verdict.expr)"))</td><td>\(escape(verdict.actual))</td>"
                let (style, word) =
                    switch verdict.passed {
                    case true?: ("pass", "pass")
                    case false?: ("fail", "FAIL")
                    case nil: ("skip", "skipped")
                    }
                body += "<td class=\"\(style)\">\(word)</td></tr>\n"
            }
            body += "</table>\n"
        }
        body += "<h2>Submission latency (ms, scheduled time to final reply)</h2>\n<table><tr><th></th>"
        body += ["p50", "p90", "p99", "p99.9", "max", "mean"].map { "<th>\($0)</th>" }.joined() + "</tr>\n"
        func row(_ name: String, _ latency: Latency) -> String {
            "<tr><td>\(escape(name))</td>"
                + [latency.p50, latency.p90, latency.p99, latency.p999, latency.max, latency.mean]
                .map { String(format: "<td>%.2f</td>", $0) }.joined() + "</tr>\n"
        }
        body += row("all", submitLatencyMs)
        if let deliveryLatencyMs { body += row("delivery (scheduled to captured)", deliveryLatencyMs) }
        if let relayLatencyMs { body += row("relay hop (the proxy's upstream)", relayLatencyMs) }
        for name in perTemplate.keys.sorted() { body += row(name, perTemplate[name]!.submitLatencyMs) }
        body += row("schedule lag", scheduleLagMs)
        for name in phases.keys.sorted() { body += row("phase \(name)", phases[name]!) }
        body += "</table>\n"

        let seconds = timeline.map { Double($0.t) }
        body += "<h2>Latency over time</h2>\n"
        body += Plot.lines(
            x: seconds, series: [("p50", timeline.map(\.p50Ms)), ("p99", timeline.map(\.p99Ms))],
            xLabel: "seconds into the run", yLabel: "ms")
        body += "<h2>Latency distribution</h2>\n"
        if let histogram = histograms["submit_latency_us"], histogram.totalCount > 0 {
            var points: [(Double, Double)] = []
            for value in histogram.percentiles(ticksPerHalfDistance: 5) {
                let percentile = min(value.percentile, 99.9999)
                points.append((log10(100 / (100 - percentile)), Double(value.value) / 1000))
            }
            body += Plot.lines(
                x: points.map(\.0), series: [("latency", points.map(\.1))],
                xLabel: "percentile (0, 90, 99, 99.9, 99.99: 0 to 4 on a log scale)", yLabel: "ms")
        }
        body += "<h2>Throughput over time</h2>\n"
        var throughput = [("sent/s", timeline.map { Double($0.sent) }), ("accepted/s", timeline.map { Double($0.accepted) })]
        if deliveryLatencyMs != nil { throughput.append(("delivered/s", timeline.map { Double($0.delivered ?? 0) })) }
        body += Plot.lines(
            x: seconds, series: throughput,
            xLabel: "seconds into the run", yLabel: "messages per second")
        body += "<h2>Errors</h2>\n"
        if errors.isEmpty {
            body += "<p>None.</p>\n"
        } else {
            body += Plot.lines(
                x: seconds, series: [("errors/s", timeline.map { Double($0.errors) })], xLabel: "seconds into the run", yLabel: "errors")
            body += "<table><tr><th>phase and reply</th><th>count</th></tr>\n"
            for (error, count) in errors.sorted(by: { $0.value > $1.value }) {
                body += "<tr><td>\(escape(error))</td><td>\(count)</td></tr>\n"
            }
            body += "</table>\n"
        }
        body += "<h2>Replies</h2>\n<p>" + replies.keys.sorted().map { "\($0): \(replies[$0]!)" }.joined(separator: ", ") + "</p>\n"
        return """
            <!doctype html>
            <html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
            <title>swallow load: \(escape(scenario))</title>
            <style>
            body{font:15px/1.45 system-ui,sans-serif;margin:2rem auto;max-width:60rem;padding:0 1rem;color:#222}
            table{border-collapse:collapse;margin:.5rem 0}td,th{border-bottom:1px solid #ddd;padding:.2rem .6rem;text-align:right}
            td:first-child,th:first-child{text-align:left}.pass{color:#16794a}.fail{color:#b3261e;font-weight:600}
            .verdict{font-size:1.1rem}svg{max-width:100%;height:auto;background:#fafafa;border:1px solid #eee}
            </style></head><body>
            \(body)</body></html>
            """
    }

    private func escape(_ text: String) -> String {
        text.replacingOccurrences(of: "&", with: "&amp;").replacingOccurrences(of: "<", with: "&lt;")
            .replacingOccurrences(of: ">", with: "&gt;").replacingOccurrences(of: "\"", with: "&quot;")
    }
}

/// Line plots as inline SVG.
enum Plot {
    static let colours = ["#1f6feb", "#d1242f", "#1a7f37", "#9a6700"]

    static func lines(x: [Double], series: [(String, [Double])], xLabel: String, yLabel: String) -> String {
        let width = 720.0, height = 260.0, left = 60.0, right = 20.0, top = 20.0, bottom = 40.0
        guard !x.isEmpty else { return "<p>No data.</p>\n" }
        let minX = x.min()!, maxX = max(x.max()!, minX + 1)
        let maxY = max(series.flatMap(\.1).max() ?? 1, 1e-9) * 1.05
        func px(_ value: Double) -> Double { left + (value - minX) / (maxX - minX) * (width - left - right) }
        func py(_ value: Double) -> Double { height - bottom - value / maxY * (height - top - bottom) }
        var svg = "<svg viewBox=\"0 0 \(Int(width)) \(Int(height))\" role=\"img\" aria-label=\"\(yLabel) against \(xLabel)\">"
        for tick in 0...4 {
            let value = maxY * Double(tick) / 4
            svg += String(
                format: "<line x1=\"%.0f\" x2=\"%.0f\" y1=\"%.1f\" y2=\"%.1f\" stroke=\"#e4e4e4\"/>", left, width - right, py(value), py(value))
            svg +=
                String(format: "<text x=\"%.0f\" y=\"%.1f\" font-size=\"11\" text-anchor=\"end\">", left - 6, py(value) + 4) + format(value)
                + "</text>"
        }
        for tick in 0...4 {
            let value = minX + (maxX - minX) * Double(tick) / 4
            svg +=
                String(format: "<text x=\"%.1f\" y=\"%.0f\" font-size=\"11\" text-anchor=\"middle\">", px(value), height - bottom + 16)
                + format(value) + "</text>"
        }
        svg += "<text x=\"\(Int((width + left) / 2))\" y=\"\(Int(height - 6))\" font-size=\"12\" text-anchor=\"middle\">\(xLabel)</text>"
        svg +=
            "<text x=\"14\" y=\"\(Int(height / 2))\" font-size=\"12\" text-anchor=\"middle\" transform=\"rotate(-90 14 \(Int(height / 2)))\">\(yLabel)</text>"
        for (index, (name, values)) in series.enumerated() {
            let colour = colours[index % colours.count]
            let points = zip(x, values).map { String(format: "%.1f,%.1f", px($0), py($1)) }.joined(separator: " ")
            svg += "<polyline fill=\"none\" stroke=\"\(colour)\" stroke-width=\"1.8\" points=\"\(points)\"/>"
            svg += "<text x=\"\(Int(left + 10 + Double(index) * 110))\" y=\"14\" font-size=\"12\" fill=\"\(colour)\">\(name)</text>"
        }
        return svg + "</svg>\n"
    }

    static func format(_ value: Double) -> String {
        if value >= 100 || value == value.rounded() { return String(format: "%.0f", value) }
        return String(format: value >= 10 ? "%.1f" : "%.2f", value)
    }
}
