import Foundation
import MailMessage
import Testing

@Suite("Message summaries: snippet and JSON")
struct MessageSummaryTests {
    static let corpus = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("shared/corpus")

    @Test("the snippet collapses every kind of whitespace and stops at 250 scalars")
    func snippet() {
        let text = "  Hello,\r\n\tworld\u{00A0}\u{2003}again  \n"
        let message = ParsedMessage(bytes: Array("Content-Type: text/plain; charset=utf-8\r\n\r\n\(text)".utf8))
        #expect(message.snippet == "Hello, world again")
        let long = ParsedMessage(bytes: Array(("Content-Type: text/plain; charset=utf-8\r\n\r\n" + String(repeating: "é ", count: 200)).utf8))
        #expect(long.snippet.hasSuffix("...") && long.snippet.unicodeScalars.count == 253)
        #expect(ParsedMessage(bytes: Array("Subject: x\r\n\r\n \r\n".utf8)).snippet == "")
    }

    @Test(
        "the direct JSON writer decodes to the same summary as JSONEncoder's",
        arguments: ["03-invoice-pdf.eml", "04-utf8-subject-and-name.eml", "10-headers-cc-replyto-trace.eml"])
    func json(file: String) throws {
        let bytes = try Array(Data(contentsOf: Self.corpus.appendingPathComponent(file)))
        let captured = CapturedMessage(
            id: "01J0000000000000000000001", envelope: Envelope(mailFrom: "a@x.example", recipients: [.init(address: "hidden@x.example")]),
            session: SessionInfo(id: "s1", remoteAddress: "r", localAddress: "l", helo: "h", esmtp: true, tls: nil, authUser: nil),
            timestamps: CaptureTimestamps(connectedNanos: 1, mailNanos: 2, dataStartNanos: 3, dataEndNanos: 1_764_000_000_123_456_789),
            size: bytes.count, receivedHeaderLength: 0
        )
        let summary = MessageSummary(captured: captured, parsed: ParsedMessage(bytes: bytes))
        let direct = try JSONDecoder().decode(MessageSummary.self, from: summary.jsonData())
        #expect(direct == summary)
        #expect(try JSONDecoder().decode(MessageSummary.self, from: JSONEncoder().encode(summary)) == direct)
    }
}
