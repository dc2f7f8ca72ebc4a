import Assertions
import Foundation
import SwallowTestSupport
import SwallowTesting
import Testing

/// Sends corpus files with Python's smtplib (a real client).
func sendCorpus(_ files: [String], port: Int) throws {
    let corpus = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("shared/corpus").path
    let script = """
        import smtplib, sys
        with smtplib.SMTP('127.0.0.1', \(port), timeout=10) as s:
            for name in sys.argv[1:]:
                s.sendmail('app@bank.example', ['bob@example.com'], open('\(corpus)/' + name, 'rb').read())
        """
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    process.arguments = ["python3", "-c", script] + files
    try process.run()
    process.waitUntilExit()
    #expect(process.terminationStatus == 0)
}

@Suite("Inboxes: the in-process TestSink and a sink's HTTP API", .enabled(if: Peers.available("python3"), Comment(rawValue: Peers.reason("python3"))))
struct InboxTests {
    @Test("TestSink: wait for the OTP mail, extract the code; a query that never matches times out with an account")
    func testSink() async throws {
        let sink = try await TestSink.start()
        defer { sink.stop() }
        let port = sink.smtpPort
        async let mail = sink.waitFor(.to("bob@example.com").subject(containing: "code"), within: .seconds(20))
        try await Task.detached { try sendCorpus(["03-invoice-pdf.eml", "02-otp-alternative.eml"], port: port) }.value
        let otp = try await mail
        #expect(try otp.extract(#"(\d{6})"#) == "731264")
        #expect(otp.links.contains { $0.hasPrefix("https://bank.example/verify") })
        #expect(otp.envelopeRecipients == ["bob@example.com"])

        let invoices = try await sink.messages(matching: MailQuery().attachment(named: ".pdf"))
        #expect(invoices.count == 1)
        #expect(try await sink.messages(matching: .any).count == 2)
        do {
            try await sink.waitFor(.subject(containing: "never sent"), within: .milliseconds(200))
            Issue.record("a query that matches nothing did not time out")
        } catch let error as InboxError {
            #expect(error.description.hasPrefix("expected 1 message(s) matching"))
        }
        try await sink.expectNone(.to("mallory@example.com"), within: .milliseconds(50))
        await #expect(throws: InboxError.self) { try await sink.expectNone(.to("bob@example.com"), within: .milliseconds(10)) }
    }

    @Test("HTTPInbox against `swallow serve`: the same checks over the API, criteria Mailpit cannot express included")
    func overHTTP() async throws {
        let serve = try SinkProcess()
        let smtp = serve.smtpPort, http = serve.httpPort
        let mailbox = HTTPInbox(baseURL: URL(string: "http://127.0.0.1:\(http)")!)
        async let mail = mailbox.waitFor(.to("bob@example.com").text(matching: #"code is \d{6}"#), within: .seconds(20))
        try await Task.detached { try sendCorpus(["03-invoice-pdf.eml", "02-otp-alternative.eml"], port: smtp) }.value
        let otp = try await mail
        #expect(try otp.extract(#"(\d{6})"#) == "731264")
        #expect(otp.traceID == nil)
        let pdf = try await mailbox.messages(matching: MailQuery().attachment(named: ".pdf"))
        #expect(pdf.count == 1)
        await #expect(throws: InboxError.self) {
            try await mailbox.waitFor(.subject(containing: "never sent"), within: .seconds(1))
        }
    }

    @Test("attachment types and the Date header delay, in process")
    func typesAndDelay() async throws {
        let sink = try await TestSink.start()
        defer { sink.stop() }
        let port = sink.smtpPort
        try await Task.detached { try sendCorpus(["03-invoice-pdf.eml"], port: port) }.value
        let invoice = try await sink.waitFor(MailQuery().attachment(type: "application/pdf"), within: .seconds(10))
        #expect(invoice.attachmentTypes.contains { $0.lowercased() == "application/pdf" })
        // The corpus message was written long ago: its delay is positive and large.
        let delay = try #require(invoice.delay)
        #expect(delay > .seconds(60))
        #expect(Timing([delay]).p99 == delay)
        #expect(try await sink.messages(matching: MailQuery().attachment(type: "image/png")).isEmpty)
    }
}
