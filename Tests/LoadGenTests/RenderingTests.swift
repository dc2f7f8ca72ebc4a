import Foundation
import MailMessage
import NIOCore
import SMTPProtocol
import Testing

@testable import LoadGen

@Suite("Templates render real MIME")
struct RenderingTests {
    static let scenario = """
        count: 1
        arrival: {kind: constant, rate: 1/s}
        mix: [{template: otp}, {template: invoice}]
        templates:
          otp:
            from: "Bank <no-reply@bank.example>"
            to: "user{seq}@example.com"
            subject: "Your code is {otp:6} ✓"
            text: "Your code is {otp}."
            html: "<p>Your code is <b>{otp}</b></p>"
          invoice:
            from: billing@shop.example
            to: "{user}"
            users: [alice@example.com, bob@example.com]
            subject: "Invoice {seq}"
            html: "<p>Amount due: {amount}</p>"
            attachments: [{kind: pdf, name: "invoice-{seq}.pdf", size: 120KiB}]
            size: 200KiB
        """

    @Test("an OTP mail carries the same code in subject, text and HTML, with the trace header")
    func otp() throws {
        let scenario = try Scenario.parse(Self.scenario)
        let rendered = Renderer(runID: "run1", seed: 9).render(scenario.templates["otp"]!, seq: 7)
        let parsed = ParsedMessage(bytes: rendered.data)
        let code = try #require(rendered.otp)
        #expect(code.count == 6 && code.allSatisfy(\.isNumber))
        #expect(parsed.subject == "Your code is \(code) ✓")
        #expect(parsed.text.contains("Your code is \(code)."))
        #expect(parsed.html.contains("<b>\(code)</b>"))
        #expect(parsed.headers["X-Swallow-Trace"] == "run1/7")
        #expect(rendered.messageID == "<run1.7@swallow.load>")
        #expect(rendered.recipients == ["user7@example.com"])
        #expect(rendered.sender == "no-reply@bank.example")
        // Same seed, same message; another seq, another code.
        #expect(Renderer(runID: "run1", seed: 9).render(scenario.templates["otp"]!, seq: 7).data == rendered.data)
        #expect(Renderer(runID: "run1", seed: 9).render(scenario.templates["otp"]!, seq: 8).otp != code)
    }

    @Test("an invoice carries a valid PDF of the chosen size, and the message is padded")
    func invoice() throws {
        let scenario = try Scenario.parse(Self.scenario)
        let rendered = Renderer(runID: "run1", seed: 9).render(scenario.templates["invoice"]!, seq: 3)
        #expect(rendered.recipients == ["bob@example.com"])
        #expect(abs(rendered.data.count - 200 * 1024) < 2048)
        let parsed = ParsedMessage(bytes: rendered.data)
        let attachment = try #require(parsed.attachments.first)
        #expect(attachment.fileName == "invoice-3.pdf")
        #expect(attachment.contentType.lowercased() == "application/pdf")
        let pdf = parsed.decodedBody(try #require(parsed.part(id: attachment.partID)))
        #expect(abs(pdf.count - 120 * 1024) < 1024)
        try Self.checkPDF(pdf)
        // The message's own lines, in the cached layout's slots.
        #expect(String(decoding: pdf, as: UTF8.self).contains("(Reference: run1/3 "))
        let next = ParsedMessage(bytes: Renderer(runID: "run1", seed: 9).render(scenario.templates["invoice"]!, seq: 4).data)
        let other = next.decodedBody(try #require(next.part(id: attachment.partID)))
        #expect(String(decoding: other, as: UTF8.self).contains("(Reference: run1/4 "))
        #expect(other.count == pdf.count)
        try Self.checkPDF(other)
    }

    @Test("a calibrated renderer renders a sized message once, within a few bytes of a measured one, and the same bytes for the same seed")
    func calibrated() throws {
        let scenario = try Scenario.parse(Self.scenario)
        let invoice = scenario.templates["invoice"]!
        let now = Date(timeIntervalSince1970: 1_800_000_000)
        var renderer = Renderer(runID: "run1", seed: 9)
        renderer.calibrate(scenario.templates.values, seq: 0, now: now)
        for seq in [0, 7, 123_456] {
            let message = renderer.render(invoice, seq: seq, now: now)
            // As near the size as measuring each message would come (line ends make both overshoot a little).
            let measured = Renderer(runID: "run1", seed: 9).render(invoice, seq: seq, now: now)
            #expect(abs(message.data.count - measured.data.count) < 64, "\(message.data.count) against \(measured.data.count) bytes for seq \(seq)")
            #expect(abs(message.data.count - 200 * 1024) < 2048)
            #expect(ParsedMessage(bytes: message.data).attachments.count == 1)
        }
        #expect(renderer.render(invoice, seq: 0, now: now).data == Renderer(runID: "run1", seed: 9).render(invoice, seq: 0, now: now).data)
    }

    static let varied = """
        count: 1
        arrival: {kind: constant, rate: 1/s}
        mix: [{template: plain}, {template: everything}, {template: sized}, {template: marked}]
        templates:
          plain:
            from: a@b.example
            to: c@d.example
            subject: "Fixed"
            text: "No placeholders at all."
          everything:
            from: "{pick:Ann|Bob} <from{seq}@shop.example>"
            to: ["{user}", "x{seq}@e.example"]
            cc: "copy{seq}@e.example"
            users: [alice@example.com, "bob@example.com"]
            subject: "{pick:Reçu|Receipt} {seq} for {amount}"
            text: "Code {otp:8}, id {uuid}, on {date}. A . at the start\n.of a line, and = signs."
            html: "<p>{otp} {seq}</p>"
            headers: {X-Order: "{seq}-{run}", X-Fixed: "same"}
            attachments:
              - {kind: pdf, name: "{pick:facture-é|invoice}-{seq}.pdf", size: 3KiB}
              - {kind: bytes, name: "blob.bin", size: 100}
          sized:
            from: a@b.example
            to: "u{seq}@d.example"
            subject: "Sized {seq}"
            size: 2KiB
          marked:
            from: a@b.example
            to: c@d.example
            subject: "SWALLOWHOLEh3Q and 7036874417766193 {seq}"
            text: "SWALLOWHOLEn0Q {seq}"
        """

    @Test("a laid-out template gives the MIME writer's bytes for every message (holes for addresses, subject, bodies, names, ids)")
    func layout() throws {
        let scenario = try Scenario.parse(Self.varied)
        let now = Date(timeIntervalSince1970: 1_800_000_123)
        var renderer = Renderer(runID: "run9", seed: 4)
        renderer.calibrate(scenario.templates.values, seq: 0, now: now)
        for name in ["plain", "everything"] {
            let template = scenario.templates[name]!
            #expect(renderer.laidOut(name), "\(name) has a layout")
            for seq in [0, 1, 9, 10, 99_999, 1_000_001] {
                let fast = renderer.render(template, seq: seq, now: now.addingTimeInterval(Double(seq) / 7))
                let plain = Renderer(runID: "run9", seed: 4).render(template, seq: seq, now: now.addingTimeInterval(Double(seq) / 7))
                #expect(fast.data == plain.data, "\(name) seq \(seq)")
                #expect(fast.otp == plain.otp && fast.recipients == plain.recipients && fast.sender == plain.sender)
            }
        }
        // A sized template's layout gives what the calibrated writer gives (padding measured once).
        #expect(renderer.laidOut("sized"))
        let sized = renderer.render(scenario.templates["sized"]!, seq: 12, now: now)
        #expect(abs(sized.data.count - 2048) < 64)
        #expect(ParsedMessage(bytes: sized.data).subject == "Sized 12")
        // A template whose own text looks like a marker is written by the writer each time, correctly.
        let marked = renderer.render(scenario.templates["marked"]!, seq: 5, now: now)
        #expect(marked.data == Renderer(runID: "run9", seed: 4).render(scenario.templates["marked"]!, seq: 5, now: now).data)
        #expect(ParsedMessage(bytes: marked.data).subject == "SWALLOWHOLEh3Q and 7036874417766193 5")
        // What is sent: each template's message dot-stuffed straight into the wire buffer is the
        // rendered message stuffed afterwards, laid out or not.
        for name in ["plain", "everything", "sized", "marked"] {
            let template = scenario.templates[name]!
            for seq in [0, 7, 123_456] {
                var wire = ByteBuffer()
                let envelope = renderer.renderStuffed(template, seq: seq, now: now, into: &wire)
                let rendered = renderer.render(template, seq: seq, now: now)
                var expected = ByteBuffer()
                _ = rendered.data.withUnsafeBytes { expected.writeDotStuffedMessage(bytes: $0) }
                #expect(wire == expected, "\(name) seq \(seq)")
                #expect(envelope.sender == rendered.sender && envelope.recipients == rendered.recipients && envelope.otp == rendered.otp)
            }
        }
    }

    @Test("placeholders: an unclosed brace and an unknown name are kept as written")
    func unclosedPlaceholder() {
        var context = Renderer.Context(seq: 3, runID: "r", users: [], now: Date(), random: SeededRandom(seed: 1))
        #expect(context.fill("ab{c") == "ab{c")
        #expect(context.fill("x{seq}y{nope}z{") == "x3y{nope}z{")
    }

    /// The header, the trailer, and every cross-reference offset pointing at its object.
    static func checkPDF(_ pdf: [UInt8]) throws {
        let text = String(decoding: pdf, as: UTF8.self)
        #expect(text.hasPrefix("%PDF-1.4\n"))
        #expect(text.hasSuffix("%%EOF\n"))
        let startxref = try #require(text.range(of: "startxref\n", options: .backwards))
        let xrefOffset = try #require(Int(text[startxref.upperBound...].prefix { $0.isNumber }))
        #expect(Array(pdf[xrefOffset..<xrefOffset + 4]) == Array("xref".utf8))
        let table = String(decoding: pdf[xrefOffset...], as: UTF8.self).split(separator: "\n")
        let entries = table.dropFirst(3).prefix { $0.hasSuffix(" n ") }
        #expect(entries.count == 5)
        for (index, entry) in entries.enumerated() {
            let offset = try #require(Int(entry.prefix(10)))
            let expected = Array("\(index + 1) 0 obj".utf8)
            #expect(Array(pdf[offset..<offset + expected.count]) == expected)
        }
        // The content stream's declared length matches its bytes.
        let lengthRange = try #require(text.range(of: "/Length "))
        let length = try #require(Int(text[lengthRange.upperBound...].prefix { $0.isNumber }))
        let streamStart = try #require(text.range(of: "stream\n"))
        let streamEnd = try #require(text.range(of: "endstream"))
        #expect(text.utf8.distance(from: streamStart.upperBound, to: streamEnd.lowerBound) == length)
    }
}

@Suite("MIME writing")
struct MIMEWriterTests {
    @Test("dates match DateFormatter's RFC 5322 form, across years and leap days")
    func dates() {
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "UTC")
        formatter.dateFormat = "EEE, dd MMM yyyy HH:mm:ss '+0000'"
        let day = DateFormatter()
        day.locale = Locale(identifier: "en_US_POSIX")
        day.timeZone = TimeZone(identifier: "UTC")
        day.dateFormat = "yyyy-MM-dd"
        var random = SeededRandom(seed: 3)
        let samples = [0, 951_782_400, 1_709_164_800, 4_107_542_399] + (0..<200).map { _ in Int(random.next() % 4_000_000_000) }
        for seconds in samples {
            let date = Date(timeIntervalSince1970: TimeInterval(seconds))
            #expect(MIMEWriter.date(date) == formatter.string(from: date))
            #expect(MIMEWriter.isoDay(date) == day.string(from: date))
        }
    }

    @Test("quoted-printable: escapes, soft breaks under 76, CRLF line ends, trailing spaces encoded")
    func quotedPrintable() {
        let encoded = MIMEWriter.quotedPrintable("a=b ü\n" + String(repeating: "x", count: 100) + " \nend")
        #expect(encoded.hasPrefix("a=3Db =C3=BC\r\n"))
        #expect(encoded.components(separatedBy: "\r\n").allSatisfy { $0.utf8.count <= 76 })
        #expect(encoded.contains("=20\r\nend"))
    }

    @Test("a PDF's base64 patched from the cached layout is the base64 of the document built whole")
    func pdfBase64() {
        for size in [0, 1000, 150 * 1024] {
            for lines in [
                ["Invoice 1", "Reference: r/1", "Date: 2026-12-03"], ["(parens) and \\ and ü", String(repeating: "long ", count: 40), ""],
            ] {
                #expect(
                    PDFDocument.base64(lines: lines, size: size) == MIMEWriter.base64Lines(PDFDocument.make(lines: lines, size: size)), "size \(size)"
                )
            }
        }
    }

    @Test("base64 in 76-character CRLF lines: the same text as Foundation's encoder, at every length around a line")
    func base64Lines() {
        var random = SeededRandom(seed: 5)
        for count in [0, 1, 2, 3, 4, 56, 57, 58, 113, 114, 115, 1000, 150 * 1024] {
            let bytes = (0..<count).map { _ in UInt8(truncatingIfNeeded: random.next()) }
            let expected =
                Data(bytes).base64EncodedString(options: [.lineLength76Characters, .endLineWithCarriageReturn, .endLineWithLineFeed]) + "\r\n"
            #expect(MIMEWriter.base64Lines(bytes) == expected, "\(count) bytes")
        }
    }
}
