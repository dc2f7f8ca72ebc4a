import Foundation
import SwallowTestSupport
import Testing

/// `swallow sendmail` against a `swallow serve` child, as PHP's mail() or cron would call it.
@Suite("swallow sendmail", .serialized, .timeLimit(.minutes(4)), .enabled(if: Peers.available("curl"), Comment(rawValue: Peers.reason("curl"))))
struct SendmailTests {
    static var binary: String { productsDirectory().appendingPathComponent("swallow").path }

    static func sendmail(_ arguments: [String], port: Int, stdin: String) async throws -> ProcessResult {
        try await run([binary, "sendmail", "--smtp-addr", "127.0.0.1:\(port)"] + arguments, stdin: stdin)
    }

    /// The newest message's capture metadata and raw bytes, over the API.
    static func latest(_ sink: SinkProcess) async throws -> (envelope: [String], mailFrom: String, raw: String) {
        let capture = try await run(["curl", "-sf", "http://127.0.0.1:\(sink.httpPort)/api/v1/message/latest/capture"])
        let object = try #require(try JSONSerialization.jsonObject(with: Data(capture.stdout.utf8)) as? [String: Any])
        let envelope = try #require(object["envelope"] as? [String: Any])
        let recipients = (envelope["recipients"] as? [[String: Any]] ?? []).compactMap { $0["address"] as? String }
        let raw = try await run(["curl", "-sf", "http://127.0.0.1:\(sink.httpPort)/api/v1/message/latest/raw"])
        return (recipients, envelope["mailFrom"] as? String ?? "", raw.stdout)
    }

    static let message = """
        From: App <app@shop.example>
        To: Ann <ann@example.com>
        Cc: bob@example.com
        Bcc: Secret <carol@example.com>,
         dave@example.com
        Subject: Your invoice

        Line one
        .
        Line after a lone dot

        """

    @Test("-t -i: recipients from To, Cc and Bcc, Bcc removed, CRLF line ends, a lone dot kept")
    func headersAndDots() async throws {
        let sink = try SinkProcess(arguments: [])
        defer {
            sink.signal(SIGTERM)
            _ = sink.wait()
        }
        let result = try await Self.sendmail(["-t", "-i"], port: sink.smtpPort, stdin: Self.message)
        #expect(result.status == 0, "\(result.stderr)")
        let (envelope, mailFrom, raw) = try await Self.latest(sink)
        #expect(Set(envelope) == ["ann@example.com", "bob@example.com", "carol@example.com", "dave@example.com"])
        #expect(mailFrom == "app@shop.example")
        #expect(!raw.contains("Bcc:"))
        #expect(!raw.contains("dave@example.com"))
        #expect(raw.hasSuffix("Subject: Your invoice\r\n\r\nLine one\r\n.\r\nLine after a lone dot\r\n"), "\(raw)")
    }

    @Test("recipients as arguments, -f as the sender; without -i a lone dot ends the message")
    func argumentsAndSender() async throws {
        let sink = try SinkProcess(arguments: [])
        defer {
            sink.signal(SIGTERM)
            _ = sink.wait()
        }
        let result = try await Self.sendmail(
            ["-oi", "-fbounces@shop.example", "-F", "Shop", "x@example.com,y@example.com", "z@example.com"],
            port: sink.smtpPort, stdin: "Subject: a\n\nbody\n")
        #expect(result.status == 0, "\(result.stderr)")
        var (envelope, mailFrom, _) = try await Self.latest(sink)
        #expect(envelope == ["x@example.com", "y@example.com", "z@example.com"])
        #expect(mailFrom == "bounces@shop.example")

        let cut = try await Self.sendmail(["-f", "a@shop.example", "w@example.com"], port: sink.smtpPort, stdin: "Subject: b\n\nkept\n.\nnot sent\n")
        #expect(cut.status == 0, "\(cut.stderr)")
        let raw: String
        (envelope, mailFrom, raw) = try await Self.latest(sink)
        #expect(envelope == ["w@example.com"])
        #expect(raw.hasSuffix("Subject: b\r\n\r\nkept\r\n"), "\(raw)")
    }

    @Test("a 451 exits 75 and a 550 exits 69, at RCPT and after the data, with the reply on stderr")
    func refusals() async throws {
        let directory = try temporaryDirectory()
        let rules = directory + "/rules.yaml"
        try """
        rules:
          - name: defer
            match: {phase: data-end, header: {Subject: "~defer"}}
            action: {reply: "451 4.7.1 Try again later"}
          - name: refuse
            match: {phase: data-end, header: {Subject: "~refuse"}}
            action: {reply: "550 5.7.1 Not wanted"}
        """.write(toFile: rules, atomically: true, encoding: .utf8)
        let sink = try SinkProcess(arguments: ["--faults", rules])
        defer {
            sink.signal(SIGTERM)
            _ = sink.wait()
        }

        let temp = try await Self.sendmail(["tempfail@example.com"], port: sink.smtpPort, stdin: "Subject: x\n\nx\n")
        #expect(temp.status == 75)
        #expect(temp.stderr.contains("451"), "\(temp.stderr)")
        let bounce = try await Self.sendmail(["bounce@example.com"], port: sink.smtpPort, stdin: "Subject: x\n\nx\n")
        #expect(bounce.status == 69)
        #expect(bounce.stderr.contains("550"), "\(bounce.stderr)")
        let deferred = try await Self.sendmail(["ok@example.com"], port: sink.smtpPort, stdin: "Subject: please defer\n\nx\n")
        #expect(deferred.status == 75)
        #expect(deferred.stderr.contains("451 4.7.1 Try again later"), "\(deferred.stderr)")
        let refused = try await Self.sendmail(["ok@example.com"], port: sink.smtpPort, stdin: "Subject: please refuse\n\nx\n")
        #expect(refused.status == 69)
        #expect(refused.stderr.contains("550 5.7.1 Not wanted"), "\(refused.stderr)")
        // One recipient of two refused: the other gets the message, the status tells.
        let partial = try await Self.sendmail(["ok@example.com", "bounce@example.com"], port: sink.smtpPort, stdin: "Subject: x\n\nx\n")
        #expect(partial.status == 69)
        #expect(partial.stderr.contains("<bounce@example.com>"), "\(partial.stderr)")
        #expect(try await Self.latest(sink).envelope == ["ok@example.com"])
    }

    @Test("no sink exits 69; bad usage exits 2 naming the problem; SWALLOW_SMTP and a `sendmail` symlink work")
    func usage() async throws {
        let nobody = try await run([Self.binary, "sendmail", "--smtp-addr", "127.0.0.1:1", "a@example.com"], stdin: "x\n")
        #expect(nobody.status == 69)
        let flag = try await run([Self.binary, "sendmail", "-X", "a@example.com"], stdin: "x\n")
        #expect(flag.status == 2)
        #expect(flag.stderr.contains("unknown option -X"))
        let none = try await run([Self.binary, "sendmail", "-t"], stdin: "Subject: x\n\nx\n")
        #expect(none.status == 2)
        #expect(none.stderr.contains("no recipients"))
        let address = try await run([Self.binary, "sendmail", "--smtp-addr", "nowhere", "a@example.com"], stdin: "x\n")
        #expect(address.status == 2)
        #expect(address.stderr.contains("--smtp-addr"))

        let sink = try SinkProcess(arguments: [])
        defer {
            sink.signal(SIGTERM)
            _ = sink.wait()
        }
        let directory = try temporaryDirectory()
        try FileManager.default.createSymbolicLink(atPath: directory + "/sendmail", withDestinationPath: Self.binary)
        let linked = try await run(["env", "SWALLOW_SMTP=127.0.0.1:\(sink.smtpPort)", directory + "/sendmail", "-t", "-i"], stdin: Self.message)
        #expect(linked.status == 0, "\(linked.stderr)")
        #expect(try await Self.latest(sink).envelope.count == 4)
    }
}
