import Foundation
import MailMessage

/// A small, fast, seedable generator (SplitMix64): the same seed gives the same run.
public struct SeededRandom: RandomNumberGenerator, Sendable {
    private var state: UInt64

    public init(seed: UInt64) { state = seed }

    public mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

/// Renders templates into MIME messages, each stamped `X-Swallow-Trace: <run>/<seq>` and with a
/// unique Message-ID.
public struct Renderer: Sendable {
    public var runID: String
    public var seed: UInt64
    /// Per template with a `size`: the padding that brings its messages to about that size,
    /// measured once (`calibrate`), so a message is rendered once and not twice.
    private var padding: [String: Int] = [:]

    public init(runID: String, seed: UInt64) {
        self.runID = runID
        self.seed = seed
    }

    /// Measures each sized template's padding on one message. Messages then differ from the
    /// size by the length of their varying values (a sequence number's digits), a few bytes.
    public mutating func calibrate(_ templates: some Sequence<Template>, seq: Int, now: Date) {
        for template in templates where template.size != nil && template.eml == nil {
            let unpadded = render(template, seq: seq, now: now, padding: 0)
            padding[template.name] = max(0, template.size! - unpadded.data.count)
        }
    }

    public func render(_ template: Template, seq: Int, now: Date = Date()) -> RenderedMessage {
        render(template, seq: seq, now: now, padding: padding[template.name])
    }

    /// `padding`: bytes of filler for a sized template; nil measures it on this message.
    private func render(_ template: Template, seq: Int, now: Date, padding: Int?) -> RenderedMessage {
        var context = Context(
            seq: seq, runID: runID, users: template.users, now: now,
            random: SeededRandom(seed: seed ^ (UInt64(seq) &* 0x2545_F491_4F6C_DD1D)))
        let traceID = "\(runID)/\(seq)"
        let messageID = "<\(runID).\(seq)@swallow.load>"
        if let eml = template.eml {
            var text = context.fill(eml)
            // The trace and Message-ID go first, so correlation works with any file.
            let lines = text.components(separatedBy: "\n").filter { !$0.lowercased().hasPrefix("message-id:") }
            text = "X-Swallow-Trace: \(traceID)\r\nMessage-ID: \(messageID)\r\n" + Self.crlf(lines.joined(separator: "\n"))
            let sender = template.from.isEmpty ? "load@swallow.load" : Self.address(context.fill(template.from))
            let recipients = template.to.isEmpty ? ["sink@swallow.load"] : template.to.map { Self.address(context.fill($0)) }
            return RenderedMessage(
                seq: seq, template: template.name, sender: sender, recipients: recipients,
                data: Array(text.utf8), messageID: messageID, traceID: traceID, otp: context.otp)
        }
        let from = context.fill(template.from)
        let to = template.to.map { context.fill($0) }
        let cc = template.cc.map { context.fill($0) }
        let subject = context.fill(template.subject)
        var text = template.text.map { context.fill($0) }
        let html = template.html.map { context.fill($0) }
        var headers = [
            ("From", from), ("To", to.joined(separator: ", ")),
        ]
        if !cc.isEmpty { headers.append(("Cc", cc.joined(separator: ", "))) }
        headers += [
            ("Subject", MIMEWriter.encodedWord(subject)),
            ("Date", MIMEWriter.date(now)),
            ("Message-ID", messageID),
            ("X-Swallow-Trace", traceID),
            ("MIME-Version", "1.0"),
        ]
        headers += template.headers.map { ($0.0, context.fill($0.1)) }
        var attachments: [(name: String, type: String, bytes: [UInt8])] = []
        var encoded: [String?] = []
        for attachment in template.attachments {
            let name = context.fill(attachment.name)
            switch attachment.kind {
            case .pdf:
                let lines = [subject, "Reference: \(traceID)", "Date: \(context.fill("{date}"))"]
                attachments.append((name, "application/pdf", []))
                encoded.append(PDFDocument.base64(lines: lines, size: attachment.size))
            case .bytes:
                var bytes = [UInt8](repeating: 0, count: attachment.size)
                for index in bytes.indices { bytes[index] = UInt8(truncatingIfNeeded: context.random.next()) }
                attachments.append((name, "application/octet-stream", bytes))
                encoded.append(nil)
            }
        }
        if text == nil && html == nil { text = "" }
        var tail = ""
        if let padding, padding > 0 {
            text = text ?? ""
            tail = MIMEWriter.encodedPadding(padding)
        }
        var message = MIMEWriter.message(
            headers: headers, text: text, html: html, attachments: attachments, seq: seq, encodedTextTail: tail, encodedAttachments: encoded)
        if padding == nil, let size = template.size, message.count < size {
            text = (text ?? "") + MIMEWriter.padding(size - message.count)
            message = MIMEWriter.message(headers: headers, text: text, html: html, attachments: attachments, seq: seq, encodedAttachments: encoded)
        }
        return RenderedMessage(
            seq: seq, template: template.name, sender: Self.address(from), recipients: (to + cc).map(Self.address),
            data: message, messageID: messageID, traceID: traceID, otp: context.otp
        )
    }

    /// The address inside `Name <addr>`, or the text itself.
    static func address(_ text: String) -> String {
        let utf8 = text.utf8
        if let open = utf8.lastIndex(of: UInt8(ascii: "<")), let close = utf8.lastIndex(of: UInt8(ascii: ">")), open < close {
            return String(text[utf8.index(after: open)..<close])
        }
        let blank: (UInt8?) -> Bool = { $0 == UInt8(ascii: " ") || $0 == UInt8(ascii: "\t") }
        guard blank(utf8.first) || blank(utf8.last) else { return text }
        return String(text.drop { $0 == " " || $0 == "\t" }.reversed().drop { $0 == " " || $0 == "\t" }.reversed())
    }

    static func crlf(_ text: String) -> String {
        text.replacingOccurrences(of: "\r\n", with: "\n").replacingOccurrences(of: "\n", with: "\r\n")
    }

    struct Context {
        var seq: Int
        var runID: String
        var users: [String]
        var now: Date
        var random: SeededRandom
        var otp: String?

        mutating func fill(_ text: String) -> String {
            guard text.utf8.contains(UInt8(ascii: "{")) else { return text }
            var result = ""
            var rest = Substring(text)
            while let open = rest.firstIndex(of: "{") {
                result += rest[..<open]
                guard let close = rest[open...].firstIndex(of: "}") else { break }
                let name = rest[rest.index(after: open)..<close]
                if let value = value(for: name) {
                    result += value
                } else {
                    result += rest[open...close]
                }
                rest = rest[rest.index(after: close)...]
            }
            return result + rest
        }

        private mutating func value(for placeholder: Substring) -> String? {
            let parts = placeholder.split(separator: ":", maxSplits: 1)
            let argument = parts.count > 1 ? String(parts[1]) : nil
            switch parts.first ?? "" {
            case "seq": return String(seq)
            case "run": return runID
            case "uuid":
                var bytes = (0..<16).map { _ in UInt8(truncatingIfNeeded: random.next()) }
                bytes[6] = (bytes[6] & 0x0F) | 0x40
                bytes[8] = (bytes[8] & 0x3F) | 0x80
                let hex = bytes.map { String(format: "%02x", $0) }.joined()
                let h = Array(hex)
                return "\(String(h[0..<8]))-\(String(h[8..<12]))-\(String(h[12..<16]))-\(String(h[16..<20]))-\(String(h[20..<32]))"
            case "otp":
                if let argument, let digits = Int(argument), (1...18).contains(digits) {
                    var code = ""
                    for _ in 0..<digits { code += String(random.next() % 10) }
                    otp = code
                    return code
                }
                if otp == nil { return value(for: "otp:6") }
                return otp
            case "user":
                return users.isEmpty ? "user\(seq)@example.com" : users[seq % users.count]
            case "amount":
                let cents = 1000 + Int(random.next() % 99_000)
                return String(format: "%d.%02d", cents / 100, cents % 100)
            case "date":
                return MIMEWriter.isoDay(now)
            case "pick":
                let choices = (argument ?? "").split(separator: "|", omittingEmptySubsequences: false)
                guard !choices.isEmpty else { return "" }
                return String(choices[Int(random.next() % UInt64(choices.count))])
            default: return nil
            }
        }
    }
}
