import Foundation
import MailMessage
import Testing

/// The MIME parse against the shared corpus of well-formed transactional mail.
@Suite("ParsedMessage: RFC 5322 and MIME")
struct ParsedMessageTests {
    static func corpus(_ name: String) throws -> ParsedMessage {
        let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("shared/corpus")
        let data = try Data(contentsOf: root.appendingPathComponent(name))
        return ParsedMessage(bytes: Array(data))
    }

    @Test("a plain OTP: headers, text, no HTML, no attachments")
    func otpPlain() throws {
        let message = try Self.corpus("01-otp-plain.eml")
        #expect(message.subject.isEmpty == false)
        #expect(message.from?.address.contains("@") == true)
        #expect(message.text.range(of: "[0-9]{6}", options: .regularExpression) != nil)
        #expect(message.html.isEmpty)
        #expect(message.attachments.isEmpty)
        #expect(message.messageID?.hasPrefix("<") == false)
    }

    @Test("multipart/alternative: text and HTML both found")
    func alternative() throws {
        let message = try Self.corpus("02-otp-alternative.eml")
        #expect(!message.text.isEmpty)
        #expect(message.html.contains("<"))
        #expect(message.attachments.isEmpty)
    }

    @Test("an invoice with a PDF: the attachment decodes to a PDF")
    func invoicePDF() throws {
        let message = try Self.corpus("03-invoice-pdf.eml")
        let attachment = try #require(message.attachments.first)
        #expect(attachment.contentType == "application/pdf")
        #expect(attachment.fileName.hasSuffix(".pdf"))
        let part = try #require(message.part(id: attachment.partID))
        let bytes = message.decodedBody(part)
        #expect(bytes.starts(with: Array("%PDF-".utf8)))
        #expect(bytes.count == attachment.size)
    }

    @Test("RFC 2047 subject and display name are decoded; 8-bit UTF-8 body")
    func encodedWords() throws {
        let message = try Self.corpus("04-utf8-subject-and-name.eml")
        #expect(message.subject == "Pesanan Anda telah dikirim — été ☃")
        #expect(message.from == MailAddress(name: "Toko Élégant", address: "toko@shop.example"))
        #expect(message.text.contains("Ça marche ☃"))
    }

    @Test("multipart/related: the cid: image is inline, not an attachment; QP HTML decoded")
    func inlineImage() throws {
        let message = try Self.corpus("05-html-inline-image.eml")
        #expect(message.html.contains("<img src=\"cid:logo@shop.example\""))
        #expect(message.html.contains("</body></html>"))
        #expect(message.attachments.isEmpty)
        let image = try #require(message.inline.first)
        #expect(image.contentID == "logo@shop.example")
        #expect(image.contentType == "image/png")
        let bytes = message.decodedBody(try #require(message.part(id: image.partID)))
        #expect(bytes.starts(with: [0x89, 0x50, 0x4E, 0x47]))
    }

    @Test("quoted-printable soft line breaks join a 1500-character line")
    func quotedPrintable() throws {
        let message = try Self.corpus("06-quoted-printable-long-line.eml")
        let longest = message.plainText.split(whereSeparator: \.isNewline).map(\.count).max() ?? 0
        #expect(longest >= 1500)
        #expect(!message.plainText.contains("=\r\n"))
    }

    @Test("an RFC 2231 file name is decoded")
    func rfc2231() throws {
        let message = try Self.corpus("07-rfc2231-filename.eml")
        #expect(message.subject == "Résumé attached")
        #expect(message.attachments.map(\.fileName) == ["Résumé — Gina.txt"])
        #expect(message.text.contains("See attachment."))
    }

    @Test("a calendar invite is an attachment with its type")
    func calendar() throws {
        let message = try Self.corpus("08-calendar-invite.eml")
        #expect(message.attachments.contains { $0.contentType == "text/calendar" })
    }

    @Test("a forwarded message/rfc822 is one attachment, its insides not flattened")
    func forwarded() throws {
        let message = try Self.corpus("09-forwarded-rfc822.eml")
        #expect(message.attachments.contains { $0.contentType == "message/rfc822" })
    }

    @Test("Cc and Reply-To address lists")
    func addressLists() throws {
        let message = try Self.corpus("10-headers-cc-replyto-trace.eml")
        #expect(!message.cc.isEmpty)
        #expect(!message.replyTo.isEmpty)
        #expect(message.headers["X-Swallow-Trace"] != nil)
    }

    @Test(
        "address lists with quotes, comments and groups",
        arguments: [
            ("a@b.example", [MailAddress(name: "", address: "a@b.example")]),
            (
                "\"Last, First\" <f@l.example>, B <b@x.example>",
                [
                    MailAddress(name: "Last, First", address: "f@l.example"), MailAddress(name: "B", address: "b@x.example"),
                ]
            ),
            ("c@d.example (Carol)", [MailAddress(name: "Carol", address: "c@d.example")]),
            ("team: a@b.example, c@d.example;", [MailAddress(name: "", address: "a@b.example"), MailAddress(name: "", address: "c@d.example")]),
        ])
    func addresses(_ text: String, _ expected: [MailAddress]) {
        #expect(MailAddress.parseList(text) == expected)
    }

    @Test(
        "dates in RFC 5322 form and its obsolete variants",
        arguments: [
            ("Tue, 24 Nov 2026 09:05:00 +0000", 1_795_511_100.0),
            ("24 Nov 2026 10:05:00 +0100", 1_795_511_100.0),
            ("Tue, 24 Nov 2026 04:05:00 EST", 1_795_511_100.0),
            ("Tue, 24 Nov 2026 09:05 GMT", 1_795_511_100.0),
        ])
    func dates(_ text: String, _ epoch: Double) {
        #expect(MailDate.parse(text)?.timeIntervalSince1970 == epoch)
    }

    @Test("hostile MIME: deep nesting and a missing closing boundary end without a crash")
    func hostile() {
        var text = "Content-Type: multipart/mixed; boundary=b0\r\n\r\n"
        for depth in 1..<200 { text += "--b\(depth - 1)\r\nContent-Type: multipart/mixed; boundary=b\(depth)\r\n\r\n" }
        text += "--b199\r\nContent-Type: text/plain\r\n\r\ndeep\r\n"
        let message = ParsedMessage(bytes: Array(text.utf8))
        #expect(message.root.all.count <= 40)
        let unterminated = ParsedMessage(bytes: Array("Content-Type: multipart/mixed; boundary=x\r\n\r\n--x\r\n\r\nbody".utf8))
        #expect(unterminated.text == "body")
    }
}
