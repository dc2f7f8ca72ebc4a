import ArgumentParser
import Assertions
import Foundation
import SwallowConfig

/// `swallow assert retries`: what the application did with one recipient's delivery — its
/// attempts, their intervals and the audit flags (`GET /api/v1/deliveries/{Recipient}`),
/// waiting server side (`wait=`, `after=`) until the expectation holds or `--within` ends.
///
/// The newest delivery to `--to` (from `--from`, in `--mailbox`) is judged. The answer comes as
/// soon as everything holds when the expectation cannot be undone by more attempts
/// (`--delivered`, or `--attempts` with `>=`/`>`); otherwise when `--within` ends. A delivered
/// delivery that fails a check fails at once (it will not change).
struct AssertRetries: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "retries",
        abstract: "Check what the application did when mail failed: its attempts, backoff and audit flags.",
        discussion: """
            Exit status: 0 the expectation holds (the delivery is printed); 1 it does not (the \
            delivery's attempts are printed as a table); 2 bad input or an unreachable API; 64 \
            options that make no sense together.

              swallow serve --faults greylist.yaml &
              swallow assert retries --to alice@example.com --delivered --attempts '>=3' --backoff --no-flags --within 60s
            """
    )

    @Option(help: "The sink's HTTP address.")
    var api = "http://127.0.0.1:8025"

    @Option(help: "The recipient's address (exactly, case aside).")
    var to: String

    @Option(help: "The sender's address (exactly, case aside).")
    var from: String?

    @Option(help: "Only attempts of this mailbox (an AUTH user, a recipient's plus tag or an X-Swallow-Mailbox header).")
    var mailbox: String?

    @Option(help: "An API token, sent as Authorization: Bearer.")
    var token: String?

    @Flag(help: "The delivery must end accepted.")
    var delivered = false

    @Option(help: "How many attempts: N, >=N, >N, ==N, <=N, <N.")
    var attempts: String?

    @Option(help: "Every interval between attempts must be at least this (e.g. 1s, 500ms).")
    var minInterval: String?

    @Flag(help: "Intervals must not shrink (each at least the one before, give or take 10% and 50 ms of jitter).")
    var backoff = false

    @Flag(help: "None of the audit flags (retry-after-permanent, sent-after-bounce, retry-too-soon, no-backoff, gave-up).")
    var noFlags = false

    @Option(help: "How long to wait for the expectation to hold (at most 300s).")
    var within = "10s"

    @Flag(help: "Print the sink's JSON answer.")
    var json = false

    func validate() throws {
        if let attempts, let count = CountExpectation(attempts), let most = count.upperBound {
            if delivered && most < 1 { throw ValidationError("--delivered needs an attempt, but --attempts \(attempts) allows none") }
            if minInterval != nil && most < 2 {
                throw ValidationError("--min-interval judges intervals between attempts, but --attempts \(attempts) allows at most one attempt")
            }
            if backoff && most < 3 {
                throw ValidationError(
                    "--backoff compares intervals, which takes three attempts or more, but --attempts \(attempts) allows at most \(max(most, 0))")
            }
        }
    }

    func run() async throws {
        guard let components = URLComponents(string: api), components.host != nil, ["http", "https"].contains(components.scheme ?? "") else {
            throw fail(2, "--api: not a URL: \(api)")
        }
        let count = try attempts.map { text -> CountExpectation in
            guard let count = CountExpectation(text) else { throw fail(2, "--attempts: expected N, >=N, >N, ==N, <=N or <N, got \(text)") }
            return count
        }
        let minimum = try minInterval.map { text -> Double in
            guard let value = Quantity.duration(text) else { throw fail(2, "--min-interval: expected a duration such as 1s or 500ms, got \(text)") }
            return value
        }
        guard let window = Quantity.duration(within), window <= 300 else {
            throw fail(2, "--within: expected a duration such as 10s, at most 300s, got \(within)")
        }
        let deadline = Date().addingTimeInterval(window)
        var version: String?
        var last: (delivery: [String: Any]?, data: Data) = (nil, Data())
        var verdict: [String] = ["no delivery to \(to)"]
        while true {
            let remaining = deadline.timeIntervalSinceNow
            var items: [(String, String)] = [("limit", "1")]
            if let from { items.append(("sender", from)) }
            if let mailbox { items.append(("mailbox", mailbox)) }
            if let version, remaining > 0 {
                items.append(("wait", String(format: "%.3f", remaining)))
                items.append(("after", version))
            }
            let answer: (status: Int, body: [UInt8])
            do {
                answer = try await SinkHTTP.get(SinkHTTP.url(api, "/api/v1/deliveries/" + SinkHTTP.queryValue(to), items), token: token)
            } catch {
                throw fail(2, "cannot reach the sink's API at \(api): \(error)")
            }
            let data = Data(answer.body)
            guard answer.status == 200, let object = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
                throw fail(
                    2, "the sink answered \(answer.status): \(String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines))")
            }
            version = (object["version"] as? NSNumber).map { "\($0.uint64Value)" }
            let delivery = (object["deliveries"] as? [[String: Any]])?.first
            last = (delivery, data)
            verdict = delivery.map { judge($0, count: count, minimum: minimum) } ?? ["no delivery to \(to)"]
            let outcome = delivery?["Outcome"] as? String
            let early = delivered || (count?.isLowerBound ?? false) || (count == nil && minimum == nil && !backoff && !noFlags)
            if verdict.isEmpty && early { break }
            if !verdict.isEmpty && outcome == "delivered" && delivered { break }
            if deadline.timeIntervalSinceNow <= 0 { break }
        }
        if json { print(String(decoding: last.data, as: UTF8.self)) }
        if verdict.isEmpty {
            if !json, let delivery = last.delivery { print(Self.summary(delivery)) }
            return
        }
        if !json, let delivery = last.delivery { print(Self.table(delivery)) }
        throw fail(1, verdict.joined(separator: "; "))
    }

    /// What does not hold of `delivery` (empty: everything holds).
    private func judge(_ delivery: [String: Any], count: CountExpectation?, minimum: Double?) -> [String] {
        var failures: [String] = []
        let attempts = (delivery["Attempts"] as? [Any])?.count ?? 0
        let intervals = (delivery["Intervals"] as? [NSNumber] ?? []).map(\.doubleValue)
        let flags = delivery["Flags"] as? [String] ?? []
        let outcome = delivery["Outcome"] as? String ?? ""
        if delivered && outcome != "delivered" { failures.append("the delivery is \(outcome), not delivered") }
        if let count, !count.holds(attempts) { failures.append("expected \(count.description) attempts, found \(attempts)") }
        if let minimum, let short = intervals.first(where: { $0 < minimum - 0.0005 }) {
            failures.append(String(format: "an interval of %.3fs is shorter than --min-interval ", short) + (minInterval ?? ""))
        }
        if backoff, let index = intervals.indices.dropLast().first(where: { intervals[$0 + 1] * 1.1 + 0.05 < intervals[$0] }) {
            failures.append(String(format: "the intervals shrink: %.3fs after %.3fs", intervals[index + 1], intervals[index]))
        }
        if noFlags && !flags.isEmpty { failures.append("flagged \(flags.joined(separator: ", "))") }
        return failures
    }

    static func summary(_ delivery: [String: Any]) -> String {
        let attempts = (delivery["Attempts"] as? [Any])?.count ?? 0
        let intervals = (delivery["Intervals"] as? [NSNumber] ?? []).map { String(format: "%.3fs", $0.doubleValue) }
        let flags = delivery["Flags"] as? [String] ?? []
        return "\(delivery["Sender"] as? String ?? "") -> \(delivery["Recipient"] as? String ?? "")  "
            + "\(delivery["Outcome"] as? String ?? "")  attempts=\(attempts)  intervals=[\(intervals.joined(separator: " "))]  "
            + "flags=[\(flags.joined(separator: ","))]"
    }

    /// The delivery's attempts, a row each: when, the interval before it, the phase, the reply
    /// and the rule that decided.
    static func table(_ delivery: [String: Any]) -> String {
        var rows: [[String]] = [["#", "AT", "AFTER", "PHASE", "REPLY", "RULE"]]
        let intervals = (delivery["Intervals"] as? [NSNumber] ?? []).map(\.doubleValue)
        for (index, attempt) in (delivery["Attempts"] as? [[String: Any]] ?? []).enumerated() {
            var reply = "(no reply)"
            if let answer = attempt["Reply"] as? [String: Any] {
                let code = (answer["Code"] as? NSNumber)?.intValue ?? 0
                reply = ["\(code)", answer["EnhancedCode"] as? String ?? "", answer["Text"] as? String ?? ""]
                    .filter { !$0.isEmpty }.joined(separator: " ")
                if reply.count > 60 { reply = String(reply.prefix(57)) + "..." }
            }
            if attempt["Dropped"] as? Bool == true { reply += " (dropped)" }
            rows.append([
                "\(index + 1)", attempt["At"] as? String ?? "", index == 0 ? "-" : String(format: "%.3fs", intervals[index - 1]),
                attempt["Phase"] as? String ?? "", reply, attempt["Rule"] as? String ?? "-",
            ])
        }
        let widths = (0..<6).map { column in rows.map { $0[column].count }.max() ?? 0 }
        var lines = [summary(delivery)]
        for row in rows {
            lines.append(
                "  "
                    + row.enumerated().map { column, text in text.padding(toLength: widths[column], withPad: " ", startingAt: 0) }
                    .joined(separator: "  ").trimmingCharacters(in: .whitespaces))
        }
        return lines.joined(separator: "\n")
    }

    private func fail(_ code: Int32, _ message: String) -> ExitCode {
        FileHandle.standardError.write(Data("swallow assert retries: \(message)\n".utf8))
        return ExitCode(code)
    }
}
