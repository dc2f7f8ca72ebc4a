import Foundation
import SinkServer
import SwallowTestSupport
import Testing

/// `POST /api/v1/send` over real HTTP (curl), as Mailpit documents it.
@Suite("Send API", .timeLimit(.minutes(4)), .enabled(if: Peers.available("curl"), Comment(rawValue: Peers.reason("curl"))))
struct SendAPITests {
    /// POSTs `body`; returns the status and the answer.
    static func send(_ base: String, _ body: String) async throws -> (status: Int, answer: [String: Any]) {
        let result = try await run(
            ["curl", "-s", "-w", "\n%{http_code}", "-H", "Content-Type: application/json", "--data-binary", "@-", "\(base)/api/v1/send"], stdin: body)
        let lines = result.stdout.split(separator: "\n", omittingEmptySubsequences: false)
        let status = Int(lines.last ?? "") ?? 0
        let text = lines.dropLast().joined(separator: "\n")
        return (status, (try? JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any]) ?? ["raw": text])
    }

    /// Mailpit's documented example, with an inline image and a non-ASCII name and file name.
    static let example = #"""
        {
          "Attachments": [
            {"Content": "VGhpcyBpcyBhIHBsYWluIHRleHQgYXR0YWNobWVudA==", "Filename": "AttachedFile.txt"},
            {"Content": "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==", "Filename": "logo.png", "ContentID": "mailpit-logo"},
            {"Content": "SGVq", "Filename": "Fäktura №1.pdf", "ContentType": "application/pdf"}
          ],
          "Bcc": ["jack@example.com"],
          "Cc": [{"Email": "manager@example.com", "Name": "Manager"}],
          "From": {"Email": "john@example.com", "Name": "John Doe"},
          "HTML": "<div><p>Mailpit is <b>awesome</b>!</p><p><img src=\"cid:mailpit-logo\" /></p></div>",
          "Headers": {"X-IP": "1.2.3.4"},
          "ReplyTo": [{"Email": "secretary@example.com", "Name": "Secretary"}],
          "Subject": "Grüße via the HTTP API",
          "Tags": ["Tag 1", "Tag 2"],
          "Text": "Mailpit is awesome!",
          "To": [{"Email": "jane@example.com", "Name": "Jäne Doe"}]
        }
        """#

    @Test("Mailpit's example becomes real MIME, captured like SMTP mail: envelope, Bcc hidden, tags, parts")
    func example() async throws {
        try await withSinkApplication { sink, base in
            let (status, answer) = try await Self.send(base, Self.example)
            #expect(status == 200, "\(answer)")
            let id = try #require(answer["ID"] as? String)
            let message = try jsonObject(try await curl(["\(base)/api/v1/message/\(id)"]))
            #expect(message["Subject"] as? String == "Grüße via the HTTP API")
            #expect((message["From"] as? [String: Any])?["Name"] as? String == "John Doe")
            #expect((message["To"] as? [[String: Any]])?.first?["Name"] as? String == "Jäne Doe")
            #expect((message["Cc"] as? [[String: Any]])?.first?["Address"] as? String == "manager@example.com")
            #expect((message["ReplyTo"] as? [[String: Any]])?.first?["Address"] as? String == "secretary@example.com")
            #expect(message["Text"] as? String == "Mailpit is awesome!")
            #expect((message["HTML"] as? String)?.contains("cid:mailpit-logo") == true)
            #expect(message["Tags"] as? [String] == ["Tag 1", "Tag 2"])
            let attachments = (message["Attachments"] as? [[String: Any]] ?? []).compactMap { $0["FileName"] as? String }
            #expect(attachments == ["AttachedFile.txt", "Fäktura №1.pdf"])
            let inline = try #require((message["Inline"] as? [[String: Any]])?.first)
            #expect(inline["ContentID"] as? String == "mailpit-logo")
            #expect(inline["ContentType"] as? String == "image/png")

            let capture = try jsonObject(try await curl(["\(base)/api/v1/message/\(id)/capture"]))
            let envelope = try #require(capture["envelope"] as? [String: Any])
            #expect(envelope["mailFrom"] as? String == "john@example.com")
            let recipients = (envelope["recipients"] as? [[String: Any]] ?? []).compactMap { $0["address"] as? String }
            #expect(recipients == ["jane@example.com", "manager@example.com", "jack@example.com"])
            let raw = try await curl(["\(base)/api/v1/message/\(id)/raw"])
            #expect(raw.hasPrefix("Received: from http-api (the HTTP send API)"))
            #expect(raw.contains("with HTTP id \(id)"))
            #expect(!raw.contains("Bcc:") && !raw.contains("jack@example.com"))
            #expect(raw.contains("X-IP: 1.2.3.4\r\n"))
            #expect(raw.contains("Content-Type: multipart/related"))
            // Counted as received mail.
            let stats = try jsonObject(try await curl(["\(base)/api/v1/stats"]))
            #expect((stats["smtp"] as? [String: Any])?["accepted"] as? Int == 1)
            #expect(sink.store.count == 1)
        }
    }

    @Test("magic addresses and fault rules apply: 550 is a 422, 451 a 503, a delay delays the answer")
    func faults() async throws {
        let rules = try FaultRuleSet.parse(
            """
            rules:
              - name: slow
                match: {phase: data-end, header: {Subject: "~slow"}}
                action: {delay: 700ms}
            """, file: "test")
        try await withSinkApplication({ $0.faultRules = rules }) { sink, base in
            let bounce = try await Self.send(
                base, #"{"From": {"Email": "a@x.example"}, "To": [{"Email": "bounce@x.example"}], "Subject": "s", "Text": "t"}"#)
            #expect(bounce.status == 422)
            #expect(bounce.answer["Code"] as? Int == 550)
            #expect(bounce.answer["Phase"] as? String == "rcpt")
            #expect((bounce.answer["Error"] as? String)?.isEmpty == false)
            let temp = try await Self.send(base, #"{"From": {"Email": "a@x.example"}, "To": [{"Email": "tempfail@x.example"}], "Text": "t"}"#)
            #expect(temp.status == 503)
            #expect(temp.answer["Code"] as? Int == 451)
            let rejected = try await Self.send(base, #"{"From": {"Email": "a@x.example"}, "To": [{"Email": "reject@x.example"}], "Text": "t"}"#)
            #expect(rejected.status == 422)
            #expect(rejected.answer["Phase"] as? String == "data-end")
            #expect(sink.store.count == 0)

            let started = ContinuousClock.now
            let slow = try await Self.send(
                base, #"{"From": {"Email": "a@x.example"}, "To": [{"Email": "b@x.example"}], "Subject": "slow one", "Text": "t"}"#)
            #expect(slow.status == 200)
            #expect(ContinuousClock.now - started >= .milliseconds(700))
            // One refused recipient of two: stored for the other, the refusal listed.
            let partial = try await Self.send(
                base, #"{"From": {"Email": "a@x.example"}, "To": [{"Email": "ok@x.example"}, {"Email": "bounce@x.example"}], "Text": "t"}"#)
            #expect(partial.status == 200)
            #expect((partial.answer["Refused"] as? [[String: Any]])?.first?["Recipient"] as? String == "bounce@x.example")
            #expect(sink.store.count == 2)
        }
    }

    @Test("a bad body is a 400 naming the field")
    func badBodies() async throws {
        try await withSinkApplication { sink, base in
            let cases: [(String, String)] = [
                (#"{"To": [{"Email": "a@x.example"}], "Text": "t"}"#, "From"),
                (#"{"From": {"Email": "a@x.example"}, "Text": "t"}"#, "To"),
                (#"{"From": {"Email": "not an address"}, "To": [{"Email": "a@x.example"}]}"#, "From"),
                (
                    #"{"From": {"Email": "a@x.example"}, "To": [{"Email": "b@x.example"}], "Attachments": [{"Content": "!!!", "Filename": "a.txt"}]}"#,
                    "Attachments[0].Content"
                ),
                (
                    #"{"From": {"Email": "a@x.example"}, "To": [{"Email": "b@x.example"}], "Headers": {"X-A": "b\r\nBcc: c@x.example"}}"#,
                    "Headers.X-A"
                ),
                (#"{"From": {"Email": "a@x.example"}, "To": [{"Email": "b@x.example"}], "Tags": ["a\u0001"]}"#, "Tags[0]"),
                (#"[1, 2]"#, "body"),
            ]
            for (body, field) in cases {
                let (status, answer) = try await Self.send(base, body)
                #expect(status == 400, "\(body)")
                #expect((answer["Error"] as? String)?.hasPrefix(field + ":") == true, "\(body): \(answer)")
            }
            #expect(sink.store.count == 0)
        }
    }
}
