import Foundation
import SwallowTestSupport
import Testing

@testable import LoadGen

@Suite("swallow load against Postfix's smtp-sink", .timeLimit(.minutes(3)))
struct SmtpSinkLoadTests {
    /// 40 OTP mails over 4 pooled connections, with `expect`.
    func scenario(expect: String) throws -> Scenario {
        try Scenario.parse(
            """
            name: smtp-sink
            count: 40
            arrival: {kind: constant, rate: 2000/s}
            connection: {pool: 4, per_connection: 7}
            templates:
              otp: {from: a@x.example, to: "u{seq}@x.example", subject: "Code {otp:6}", text: "Code {otp}", html: "<b>{otp}</b>"}
            \(expect)
            """)
    }

    @Test(
        "Postfix's smtp-sink as the server; a failing expectation fails the run and its JUnit case",
        .enabled(if: Peers.available("smtp-sink"), Comment(rawValue: Peers.reason("smtp-sink")))
    )
    func againstPostfixSmtpSink() async throws {
        let port = try freePort()
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/sbin/smtp-sink")
        process.arguments = (getuid() == 0 ? ["-u", "nobody"] : []) + ["127.0.0.1:\(port)", "64"]
        process.standardOutput = FileHandle.nullDevice
        process.standardError = FileHandle.nullDevice
        try process.run()
        // SIGKILL: smtp-sink started from the test process ignores SIGTERM (an inherited signal mask).
        defer {
            kill(process.processIdentifier, SIGKILL)
            process.waitUntilExit()
        }
        try await waitUntilListening(port: port)
        let runner = LoadRunner(
            scenario: try scenario(expect: "expect: {errors: \"== 0\", submit_latency: {p50: \"< 1us\"}}"),
            host: "127.0.0.1", port: port, seed: 1)
        let report = try await runner.run()
        #expect(report.accepted == 40)
        #expect(!report.passed)
        #expect(report.expectations.map(\.passed) == [true, false])
        let junit = report.junit()
        #expect(junit.contains("tests=\"2\" failures=\"1\""))
        #expect(junit.contains("<failure message=\"submit_latency.p50 &lt; 1us"))
        let json = try JSONSerialization.jsonObject(with: report.json()) as? [String: Any]
        for key in [
            "scenario", "run_id", "scheduled", "sent", "accepted", "rejected", "failed", "delivered", "lost", "duplicates",
            "replies", "rate", "submit_latency_ms", "phases", "per_template", "timeline", "expectations", "passed",
        ] {
            #expect(json?[key] != nil, "missing \(key)")
        }
    }
}
