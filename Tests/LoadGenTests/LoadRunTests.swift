import Foundation
import Histogram
import MailMessage
import NIOCore
import NIOPosix
import SinkServer
import SwallowConfig
import SwallowTestSupport
import Testing

@testable import LoadGen

@Suite("Load runs over real sockets")
struct LoadRunTests {
    static func scenario(count: Int, expect: String = "") -> Scenario {
        try! Scenario.parse(
            """
            name: loopback
            count: \(count)
            arrival: {kind: constant, rate: 2000/s}
            connection: {pool: 4, per_connection: 7}
            templates:
              otp: {from: a@x.example, to: "u{seq}@x.example", subject: "Code {otp:6}", text: "Code {otp}", html: "<b>{otp}</b>"}
            \(expect)
            """)
    }

    @Test("every scheduled message reaches an in-process sink once, with its trace id")
    func againstSink() async throws {
        var configuration = SinkConfiguration()
        configuration.smtp = ListenAddress(host: "127.0.0.1", port: 0)
        let sink = try await Sink.bind(configuration)
        let serving = Task { try await sink.run() }
        defer { sink.shutdown() }
        let runner = LoadRunner(
            scenario: Self.scenario(count: 60, expect: "expect: {delivered: \">= 100%\", errors: \"== 0\"}"),
            host: "127.0.0.1", port: sink.smtpAddress.port, seed: 5, runID: "looprun")
        let report = try await runner.run()
        #expect(report.sent == 60)
        #expect(report.accepted == 60)
        #expect(report.replies["250"] == 60)
        #expect(report.passed)
        // What arrived carries its code in the subject, the text and the HTML alike.
        for message in sink.store.messages().prefix(10) {
            let raw = try #require(try await sink.store.receivedBytes(id: message.id))
            let parsed = ParsedMessage(bytes: Array(raw.readableBytesView))
            let code = String(parsed.subject.dropFirst("Code ".count))
            #expect(code.count == 6 && code.allSatisfy(\.isNumber))
            #expect(parsed.text.contains("Code \(code)") && parsed.html.contains("<b>\(code)</b>"))
        }
        let traces = sink.store.messages().compactMap(\.traceID)
        #expect(Set(traces) == Set((0..<60).map { "looprun/\($0)" }))
        // per_connection 7 over 60 messages: at least 9 connections were opened.
        #expect(Set(sink.store.messages().map(\.session.id)).count >= 9)
        #expect(report.phases["connect"] != nil && report.phases["final"] != nil)
        // The HTML report stands alone: plots inline, nothing fetched.
        let html = report.html()
        #expect(html.components(separatedBy: "<svg").count - 1 == 3)
        #expect(html.contains("<polyline"))
        #expect(!html.contains("<script") && !html.contains("http://") && !html.contains("https://"))
        #expect(html.contains("delivered &gt;= 100%"))
        sink.shutdown()
        _ = await serving.result
    }

    static func withSink<T: Sendable>(_ body: (Sink) async throws -> T) async throws -> T {
        var configuration = SinkConfiguration()
        configuration.smtp = ListenAddress(host: "127.0.0.1", port: 0)
        let sink = try await Sink.bind(configuration)
        let serving = Task { try await sink.run() }
        do {
            let result = try await body(sink)
            sink.shutdown()
            _ = await serving.result
            return result
        } catch {
            sink.shutdown()
            _ = await serving.result
            throw error
        }
    }

    @Test("the mix's weights hold in what the sink captured")
    func mixProportions() async throws {
        let scenario = try Scenario.parse(
            """
            count: 400
            arrival: {kind: constant, rate: 5000/s}
            connection: {pool: 8}
            mix: [{template: otp, weight: 3}, {template: invoice, weight: 1}]
            templates:
              otp: {from: a@x.example, to: "u{seq}@x.example", subject: "otp {seq}", text: "Code {otp:6}"}
              invoice: {from: b@x.example, to: "u{seq}@x.example", subject: "invoice {seq}", html: "<p>{amount}</p>"}
            """)
        let subjects = try await Self.withSink { sink in
            let report = try await LoadRunner(scenario: scenario, host: "127.0.0.1", port: sink.smtpAddress.port, seed: 11).run()
            #expect(report.accepted == 400)
            var subjects: [String] = []
            for message in sink.store.messages() {
                let raw = try #require(try await sink.store.receivedBytes(id: message.id))
                subjects.append(ParsedMessage(bytes: Array(raw.readableBytesView)).subject)
            }
            return subjects
        }
        #expect(subjects.count == 400)
        let otp = subjects.filter { $0.hasPrefix("otp ") }.count
        #expect((270...330).contains(otp), "\(otp) of 400 OTP mails for a 3:1 mix")
        #expect(subjects.filter { $0.hasPrefix("invoice ") }.count == 400 - otp)
    }

    @Test("4xx replies (the sink's tempfail@) are retried as configured, then given up")
    func retries() async throws {
        let scenario = try Scenario.parse(
            """
            count: 5
            arrival: {kind: constant, rate: 1000/s}
            retry: {on_4xx: 2, backoff: 10ms}
            templates:
              t: {from: a@x.example, to: tempfail@x.example, subject: "s", text: "t"}
            """)
        let (report, stored) = try await Self.withSink { sink in
            let report = try await LoadRunner(scenario: scenario, host: "127.0.0.1", port: sink.smtpAddress.port, seed: 1).run()
            return (report, sink.store.count)
        }
        #expect(report.replies["451"] == 15)
        #expect(report.retries == 10)
        #expect(report.sent == 5 && report.failed == 5 && report.accepted == 0)
        #expect(report.errors["rcpt 451"] == 5)
        #expect(stored == 0)
        // Latency counts from the first schedule: two backoffs (10 ms, 20 ms) at least.
        #expect(report.submitLatencyMs.p50 >= 30)
    }

    @Test("STARTTLS and implicit TLS with AUTH PLAIN and LOGIN, as the sink records them")
    func tlsAndAuth() async throws {
        var configuration = SinkConfiguration()
        configuration.smtp = ListenAddress(host: "127.0.0.1", port: 0)
        configuration.smtps = ListenAddress(host: "127.0.0.1", port: 0)
        configuration.auth = .credentials(["app": "secret"])
        configuration.requireAuth = true
        let sink = try await Sink.bind(configuration)
        let serving = Task { try await sink.run() }
        defer { sink.shutdown() }
        for (tls, mechanism, port) in [("starttls", "plain", sink.smtpAddress.port), ("implicit", "login", sink.smtpsAddress!.port)] {
            let scenario = try Scenario.parse(
                """
                count: 3
                arrival: {kind: constant, rate: 1000/s}
                connection: {pool: 1, tls: \(tls), auth: {mechanism: \(mechanism), user: app, password: secret}}
                templates:
                  t: {from: a@x.example, to: b@x.example, subject: "s", text: "t"}
                """)
            let report = try await LoadRunner(scenario: scenario, host: "127.0.0.1", port: port, seed: 1).run()
            #expect(report.accepted == 3, "\(tls): \(report.errors)")
            #expect(report.phases["auth"] != nil)
        }
        let messages = sink.store.messages()
        #expect(messages.count == 6)
        #expect(messages.allSatisfy { $0.session.authUser == "app" && $0.session.tls != nil })
        #expect(messages.filter { $0.session.tls?.implicit == true }.count == 3)
        // A wrong password is an error of the connection, counted, not a hang.
        let wrong = try Scenario.parse(
            """
            count: 2
            arrival: {kind: constant, rate: 1000/s}
            connection: {pool: 1, tls: starttls, auth: {user: app, password: nope}}
            templates:
              t: {from: a@x.example, to: b@x.example, subject: "s", text: "t"}
            """)
        let refused = try await LoadRunner(scenario: wrong, host: "127.0.0.1", port: sink.smtpAddress.port, seed: 1).run()
        #expect(refused.failed == 2 && refused.accepted == 0)
        sink.shutdown()
        _ = await serving.result
    }

    @Test("a trace replays its offsets and template names; an .eml template is sent as is, with the trace header")
    func traceAndEml() async throws {
        let directory = NSTemporaryDirectory() + "swallow-trace-\(UUID().uuidString)"
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        try "offset,template\n0,a\n0.05,raw\n100ms,a\n".write(toFile: directory + "/t.csv", atomically: true, encoding: .utf8)
        try "From: x@y.example\nTo: z@y.example\nSubject: raw {seq}\nMessage-ID: <old@y.example>\n\nhello\n".write(
            toFile: directory + "/m.eml", atomically: true, encoding: .utf8)
        try """
        arrival: {kind: trace, file: t.csv, speed: 2}
        mix: [{template: a}]
        templates:
          a: {from: a@x.example, to: b@x.example, subject: "a {seq}", text: "t"}
          raw: {eml: m.eml, from: x@y.example, to: z@y.example}
        """.write(toFile: directory + "/s.yaml", atomically: true, encoding: .utf8)
        let scenario = try Scenario.load(path: directory + "/s.yaml")
        let subjects = try await Self.withSink { sink in
            let report = try await LoadRunner(scenario: scenario, host: "127.0.0.1", port: sink.smtpAddress.port, seed: 1, runID: "tr").run()
            #expect(report.accepted == 3)
            var subjects: [String] = []
            for message in sink.store.messages().sorted(by: { ($0.traceID ?? "") < ($1.traceID ?? "") }) {
                let parsed = ParsedMessage(bytes: Array(try #require(try await sink.store.receivedBytes(id: message.id)).readableBytesView))
                subjects.append(parsed.subject)
                if parsed.subject.hasPrefix("raw") {
                    #expect(parsed.messageID == "tr.1@swallow.load")
                    #expect(message.traceID == "tr/1")
                }
            }
            return subjects
        }
        #expect(subjects == ["a 0", "raw 1", "a 2"])
    }

    @Test("content expectations check every delivered message against the values rendered for it")
    func contentExpectations() async throws {
        let scenario = try Scenario.parse(
            """
            count: 12
            arrival: {kind: constant, rate: 1000/s}
            templates:
              otp: {from: a@x.example, to: "u{seq}@x.example", subject: "Code {otp:6}", text: "Your code: {otp}", html: "<b>{otp}</b> #{seq}"}
            expect:
              content:
                - {template: otp, part: text, contains: "Your code: {otp}"}
                - {template: otp, part: html, contains: "<b>{otp}</b> #{seq}"}
                - {template: otp, contains: "code: 000000x"}
                - {template: otp, not_contains: "undefined"}
            """)
        let report = try await Self.withSink { sink in
            var runner = LoadRunner(scenario: scenario, host: "127.0.0.1", port: sink.smtpAddress.port, seed: 3)
            runner.deliveries = StoreDeliveries(store: sink.store, lossy: false, bodies: true)
            return try await runner.run()
        }
        #expect(report.expectations.map(\.passed) == [true, true, false, true])
        #expect(report.expectations[0].actual == "12 of 12 delivered messages")
        #expect(report.expectations[2].actual == "0 of 12 delivered messages")
        // Without a delivery sink a content check cannot be measured: skipped, not passed.
        let unmeasured = try await Self.withSink { sink in
            try await LoadRunner(scenario: scenario, host: "127.0.0.1", port: sink.smtpAddress.port, seed: 3).run()
        }
        #expect(unmeasured.expectations.allSatisfy { $0.passed == nil })
        #expect(unmeasured.passed)
        var strict = unmeasured
        strict.evaluate(strict: true)
        #expect(!strict.passed)
        #expect(throws: InputError.self) {
            try Scenario.parse(
                """
                count: 1
                arrival: {kind: constant, rate: 1/s}
                templates: {t: {from: a@x.example, to: b@x.example, subject: s, text: t}}
                expect: {content: [{template: t, contains: a, not_contains: b}]}
                """)
        }
    }

    @Test("an unreachable target is counted as connect failures, not a hang")
    func unreachable() async throws {
        let port = try freePort()
        let report = try await LoadRunner(scenario: Self.scenario(count: 5), host: "127.0.0.1", port: port, seed: 1).run()
        #expect(report.accepted == 0)
        #expect(report.failed == 5)
        #expect(report.errors.keys.allSatisfy { $0.hasPrefix("connect") })
    }
}
