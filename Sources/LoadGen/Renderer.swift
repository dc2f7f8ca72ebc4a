import Foundation
import MailMessage
import NIOCore
import SMTPProtocol

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
///
/// After `calibrate`, a template's message is laid out once (`MessageLayout`): the bytes every
/// message shares, with holes for what varies (addresses, subject, date, ids, bodies with
/// placeholders, attachments). A message is then its holes' values between copies of the
/// shared bytes, the same bytes the MIME writer gives (checked when the layout is made).
public struct Renderer: Sendable {
    public var runID: String
    public var seed: UInt64
    /// Per template, what `calibrate` measured and made once: the padding that brings a sized
    /// template's messages to about its size (so a message is rendered once and not twice),
    /// that padding encoded, and the message's layout.
    private var prepared: [String: Prepared] = [:]

    struct Prepared: Sendable {
        var padding: Int?
        var tail: String?
        var layout: MessageLayout?
    }

    public init(runID: String, seed: UInt64) {
        self.runID = runID
        self.seed = seed
    }

    /// Measures each sized template's padding on one message, and lays out each template's
    /// message. Messages then differ from the size by the length of their varying values (a
    /// sequence number's digits), a few bytes.
    public mutating func calibrate(_ templates: some Sequence<Template>, seq: Int, now: Date) {
        for template in templates where template.eml == nil {
            var ready = Prepared()
            if let size = template.size {
                let unpadded = render(template, seq: seq, now: now, prepared: Prepared(padding: 0))
                ready.padding = max(0, size - unpadded.data.count)
                ready.tail = ready.padding.map(MIMEWriter.encodedPadding)
            }
            if let layout = MessageLayout(parts(template, seq: seq, now: now, prepared: ready, marking: true)) {
                // The layout must give what the writer gives; otherwise this template is written each time.
                if [seq, seq + 1, seq + 1_234_567].allSatisfy({
                    let parts = self.parts(template, seq: $0, now: now, prepared: ready)
                    return layout.message(parts) == parts.message()
                }) {
                    ready.layout = layout
                }
            }
            prepared[template.name] = ready
        }
    }

    public func render(_ template: Template, seq: Int, now: Date = Date()) -> RenderedMessage {
        render(template, seq: seq, now: now, prepared: prepared[template.name] ?? Prepared())
    }

    /// A sized template whose `prepared.padding` is nil is measured on this message.
    private func render(_ template: Template, seq: Int, now: Date, prepared: Prepared) -> RenderedMessage {
        if template.eml != nil { return renderFile(template, seq: seq, now: now) }
        var parts = parts(template, seq: seq, now: now, prepared: prepared)
        var message = prepared.layout?.message(parts) ?? parts.message()
        if prepared.padding == nil, let size = template.size, message.count < size {
            parts.text = (parts.text ?? "") + MIMEWriter.padding(size - message.count)
            parts.tail = ""
            message = parts.message()
        }
        return RenderedMessage(
            seq: seq, template: template.name, sender: Self.address(parts.from), recipients: parts.recipients.map(Self.address),
            data: message, messageID: parts.messageID, traceID: parts.traceID, otp: parts.otp
        )
    }

    /// What a sender needs besides the bytes.
    struct Envelope {
        var sender: String
        var recipients: [String]
        var otp: String?
    }

    /// `render(_:seq:now:)` for sending: the message dot-stuffed, with its final `.` line,
    /// straight into `buffer` when its template is laid out (copied once), else rendered and
    /// then stuffed.
    func renderStuffed(_ template: Template, seq: Int, now: Date, into buffer: inout ByteBuffer) -> Envelope {
        let prepared = prepared[template.name] ?? Prepared()
        guard template.eml == nil, prepared.padding != nil || template.size == nil, let layout = prepared.layout else {
            let message = render(template, seq: seq, now: now, prepared: prepared)
            buffer.reserveCapacity(minimumWritableBytes: message.data.count + message.data.count / 64 + 320)
            _ = message.data.withUnsafeBytes { buffer.writeDotStuffedMessage(bytes: $0) }
            return Envelope(sender: message.sender, recipients: message.recipients, otp: message.otp)
        }
        let parts = parts(template, seq: seq, now: now, prepared: prepared)
        let encoded = parts.encoded.reduce(0) { $0 + ($1?.shared.count ?? 0) }
        let size = layout.sharedCount + encoded + (parts.text?.utf8.count ?? 0) + (parts.html?.utf8.count ?? 0)
        // Room for what the holes add, stuffed dots, and the next message's commands after it.
        buffer.reserveCapacity(minimumWritableBytes: size + size / 32 + 1024)
        layout.writeStuffed(parts, to: &buffer)
        return Envelope(sender: Self.address(parts.from), recipients: parts.recipients.map(Self.address), otp: parts.otp)
    }

    /// A template given as a message file: placeholders filled, the trace and a Message-ID first.
    private func renderFile(_ template: Template, seq: Int, now: Date) -> RenderedMessage {
        var context = context(template, seq: seq, now: now)
        let traceID = "\(runID)/\(seq)"
        let messageID = "<\(runID).\(seq)@swallow.load>"
        var text = context.fill(template.eml ?? "")
        // The trace and Message-ID go first, so correlation works with any file.
        let lines = text.components(separatedBy: "\n").filter { !$0.lowercased().hasPrefix("message-id:") }
        text = "X-Swallow-Trace: \(traceID)\r\nMessage-ID: \(messageID)\r\n" + Self.crlf(lines.joined(separator: "\n"))
        let sender = template.from.isEmpty ? "load@swallow.load" : Self.address(context.fill(template.from))
        let recipients = template.to.isEmpty ? ["sink@swallow.load"] : template.to.map { Self.address(context.fill($0)) }
        return RenderedMessage(
            seq: seq, template: template.name, sender: sender, recipients: recipients,
            data: Array(text.utf8), messageID: messageID, traceID: traceID, otp: context.otp)
    }

    private func context(_ template: Template, seq: Int, now: Date) -> Context {
        Context(
            seq: seq, runID: runID, users: template.users, now: now,
            random: SeededRandom(seed: seed ^ (UInt64(seq) &* 0x2545_F491_4F6C_DD1D)))
    }

    /// A template's fields filled for one message: what the MIME writer is given. Placeholders
    /// are filled in one order (the random draws follow it), the same for every message.
    /// `marking`: also say which fields vary from message to message (for the layout).
    private func parts(_ template: Template, seq: Int, now: Date, prepared: Prepared, marking: Bool = false) -> MessageParts {
        var context = context(template, seq: seq, now: now)
        var parts = MessageParts(seq: seq, traceID: "\(runID)/\(seq)", messageID: "<\(runID).\(seq)@swallow.load>")
        parts.marking = marking
        parts.from = context.fill(template.from)
        let to = template.to.map { context.fill($0) }
        let cc = template.cc.map { context.fill($0) }
        parts.recipients = to + cc
        let subject = context.fill(template.subject)
        parts.text = template.text.map { context.fill($0) }
        parts.html = template.html.map { context.fill($0) }
        let placeholders = { (text: String) in marking && text.utf8.contains(UInt8(ascii: "{")) }
        parts.headers.reserveCapacity(8 + template.headers.count)
        parts.header("From", parts.from, varies: placeholders(template.from))
        parts.header("To", to.count == 1 ? to[0] : to.joined(separator: ", "), varies: marking && template.to.contains(where: placeholders))
        if !cc.isEmpty { parts.header("Cc", cc.joined(separator: ", "), varies: marking && template.cc.contains(where: placeholders)) }
        parts.header("Subject", MIMEWriter.encodedWord(subject), varies: placeholders(template.subject))
        parts.header("Date", MIMEWriter.date(now), varies: true)
        parts.header("Message-ID", parts.messageID, varies: true)
        parts.header("X-Swallow-Trace", parts.traceID, varies: true)
        parts.header("MIME-Version", "1.0", varies: false)
        for (name, value) in template.headers { parts.header(name, context.fill(value), varies: placeholders(value)) }
        for attachment in template.attachments {
            let name = context.fill(attachment.name)
            if marking { parts.nameVaries.append(placeholders(attachment.name)) }
            switch attachment.kind {
            case .pdf:
                let lines = [subject, "Reference: \(parts.traceID)", "Date: \(context.fill("{date}"))"]
                parts.attachments.append((name, "application/pdf", []))
                parts.encoded.append(PDFDocument.encodedBody(lines: lines, size: attachment.size))
            case .bytes:
                var bytes = [UInt8](repeating: 0, count: attachment.size)
                for index in bytes.indices { bytes[index] = UInt8(truncatingIfNeeded: context.random.next()) }
                parts.attachments.append((name, "application/octet-stream", bytes))
                parts.encoded.append(nil)
            }
        }
        parts.textVaries = template.text.map(placeholders) ?? false
        parts.htmlVaries = template.html.map(placeholders) ?? false
        if parts.text == nil && parts.html == nil { parts.text = "" }
        if let padding = prepared.padding, padding > 0 {
            parts.text = parts.text ?? ""
            parts.tail = prepared.tail ?? MIMEWriter.encodedPadding(padding)
        }
        parts.otp = context.otp
        return parts
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

        /// The text with its placeholders replaced; an unknown name or an unclosed `{` stays as
        /// written. Searched as UTF-8 bytes (by characters it was 5% of the generator's CPU).
        mutating func fill(_ text: String) -> String {
            let utf8 = text.utf8
            guard var open = utf8.firstIndex(of: UInt8(ascii: "{")) else { return text }
            var result = ""
            result.reserveCapacity(utf8.count + 16)
            var start = utf8.startIndex
            while let close = utf8[open...].firstIndex(of: UInt8(ascii: "}")) {
                result += text[start..<open]
                if let value = value(for: text[utf8.index(after: open)..<close]) {
                    result += value
                } else {
                    result += text[open...close]
                }
                start = utf8.index(after: close)
                guard let next = utf8[start...].firstIndex(of: UInt8(ascii: "{")) else { break }
                open = next
            }
            result += text[start...]
            return result
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

extension Renderer {
    /// Whether `calibrate` laid out this template's message (for tests).
    func laidOut(_ template: String) -> Bool { prepared[template]?.layout != nil }
}
