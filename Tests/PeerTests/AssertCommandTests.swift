import Foundation
import SwallowTestSupport
import Testing

/// `swallow assert` against a running `swallow serve`, as a CI step uses them.
@Suite("swallow assert", .enabled(if: Peers.available("python3"), Comment(rawValue: Peers.reason("python3"))))
struct AssertCommandTests {
    static func assert(_ arguments: [String], api: Int) async throws -> ProcessResult {
        try await run([productsDirectory().appendingPathComponent("swallow").path, "assert", "--api", "http://127.0.0.1:\(api)"] + arguments)
    }

    @Test("waits for the OTP mail and prints its code; 1 with an account of what was found; 2 for bad input")
    func assertsAndExtracts() async throws {
        let sink = try SinkProcess(arguments: [])
        defer {
            sink.signal(SIGTERM)
            _ = sink.wait()
        }
        // Started alongside the mail: it waits on the sink's event stream (or finds it there),
        // and returns when the mail arrives, long before --within ends.
        let started = ContinuousClock.now
        async let waiting = Self.assert(["--subject", "login code", "--within", "60s", "--extract", "([0-9]{6})"], api: sink.httpPort)
        try await HTTPAPITests.send(["02-otp-alternative.eml"], port: sink.smtpPort)
        let code = try await waiting
        #expect(code.status == 0, "\(code.stderr)")
        #expect(code.stdout == "731264\n")
        // Well before --within ends (a loaded CI machine took 12.6 s to start both and send).
        #expect(ContinuousClock.now - started < .seconds(40))

        let listed = try await Self.assert(["--to", "bob@example.com", "--from", "bank.example", "--mailbox", "ci"], api: sink.httpPort)
        #expect(listed.status == 0)
        #expect(listed.stdout.contains("Your login code is 731264"))

        let none = try await Self.assert(["--subject", "invoice", "--count", "==0", "--within", "100ms"], api: sink.httpPort)
        #expect(none.status == 0)
        let tooFew = try await Self.assert(["--subject", "code", "--count", ">=2", "--within", "200ms"], api: sink.httpPort)
        #expect(tooFew.status == 1)
        #expect(tooFew.stderr.contains("expected >=2 messages matching subject:code within 200ms, found 1"))
        #expect(tooFew.stderr.contains("Your login code is 731264"))

        let links = try await Self.assert(["--subject", "code", "--links-valid"], api: sink.httpPort)
        #expect(links.status == 0, "\(links.stderr)")
        // A message whose HTML links to a relative path fails the check, naming it.
        let smtpPort = sink.smtpPort
        _ = try await onThread {
            let client = try RawSMTPClient(port: smtpPort)
            _ = try client.readReply()
            _ = try client.command("EHLO c")
            _ = try sendMessage(
                client,
                body: "Subject: reset\r\nContent-Type: text/html\r\n\r\n<a href=\"/reset?t=1\">reset</a> <a href=\"https://ok.example/x\">ok</a>\r\n")
        }
        let broken = try await Self.assert(["--subject", "reset", "--links-valid"], api: sink.httpPort)
        #expect(broken.status == 1)
        #expect(broken.stderr.contains("/reset?t=1") && !broken.stderr.contains("ok.example"))

        let bad = try await Self.assert(["--count", "some"], api: sink.httpPort)
        #expect(bad.status == 2)
        let unreachable = try await Self.assert(["--within", "1s"], api: 1)
        #expect(unreachable.status == 2)
    }
}
