import Foundation
import MailMessage

/// Which messages a check is about: every criterion must hold. Text criteria are
/// case-insensitive substrings, as Mailpit's search; `matching` takes a regular expression.
///
///     MailQuery.to("alice@example.com").subject(containing: "code")
public struct MailQuery: Sendable, CustomStringConvertible {
    public enum Criterion: Sendable {
        case to(String)
        case from(String)
        case subject(String)
        case text(String)
        case html(String)
        case textMatching(String)
        case header(String, String)
        case attachment(String)
        case attachmentType(String)
        case traceID(String)
        case receivedAfter(Date)
        case receivedBefore(Date)
    }

    public var criteria: [Criterion] = []

    public init() {}

    public static var any: MailQuery { MailQuery() }
    public static func to(_ address: String) -> MailQuery { MailQuery().to(address) }
    public static func from(_ address: String) -> MailQuery { MailQuery().from(address) }
    public static func subject(containing text: String) -> MailQuery { MailQuery().subject(containing: text) }
    public static func trace(_ id: String) -> MailQuery { MailQuery().trace(id) }

    private func adding(_ criterion: Criterion) -> MailQuery {
        var copy = self
        copy.criteria.append(criterion)
        return copy
    }

    /// A recipient: To, Cc, or the envelope (the envelope in-process only: the HTTP API has none).
    public func to(_ address: String) -> MailQuery { adding(.to(address)) }
    public func from(_ address: String) -> MailQuery { adding(.from(address)) }
    public func subject(containing text: String) -> MailQuery { adding(.subject(text)) }
    public func text(containing text: String) -> MailQuery { adding(.text(text)) }
    public func html(containing text: String) -> MailQuery { adding(.html(text)) }
    /// The text part (or the HTML's, when there is no text part) matches the regular expression.
    public func text(matching pattern: String) -> MailQuery { adding(.textMatching(pattern)) }
    public func header(_ name: String, containing value: String) -> MailQuery { adding(.header(name, value)) }
    public func attachment(named name: String) -> MailQuery { adding(.attachment(name)) }
    /// An attachment whose content type contains this (`application/pdf`, `pdf`).
    public func attachment(type: String) -> MailQuery { adding(.attachmentType(type)) }
    /// The `X-Swallow-Trace` id the load generator stamps (`run/seq`).
    public func trace(_ id: String) -> MailQuery { adding(.traceID(id)) }
    public func received(after date: Date) -> MailQuery { adding(.receivedAfter(date)) }
    public func received(before date: Date) -> MailQuery { adding(.receivedBefore(date)) }

    /// Whether a delivered message satisfies every criterion.
    public func matches(_ message: DeliveredMessage) -> Bool {
        func has(_ haystack: String, _ needle: String) -> Bool { haystack.range(of: needle, options: .caseInsensitive) != nil }
        return criteria.allSatisfy { criterion in
            switch criterion {
            case .to(let address): (message.to + message.cc + message.envelopeRecipients).contains { has($0, address) }
            case .from(let address): has(message.from, address) || has(message.envelopeSender, address)
            case .subject(let text): has(message.subject, text)
            case .text(let text): has(message.text, text)
            case .html(let text): has(message.html, text)
            case .textMatching(let pattern):
                (try? Regex(pattern)).map { message.text.contains($0) || (message.text.isEmpty && message.html.contains($0)) } ?? false
            case .header(let name, let value):
                message.headers.contains { $0.name.caseInsensitiveCompare(name) == .orderedSame && has($0.value, value) }
            case .attachment(let name): message.attachmentNames.contains { has($0, name) }
            case .attachmentType(let type): message.attachmentTypes.contains { has($0, type) }
            case .traceID(let id): message.traceID == id
            case .receivedAfter(let date): message.received > date
            case .receivedBefore(let date): message.received < date
            }
        }
    }

    /// The query in Mailpit's search syntax, for criteria it can express (the rest are checked
    /// on the messages it returns).
    public var mailpitSearch: String {
        func quoted(_ text: String) -> String {
            let clean = text.replacingOccurrences(of: "\"", with: "")
            return clean.contains(" ") ? "\"\(clean)\"" : clean
        }
        return criteria.compactMap { criterion -> String? in
            switch criterion {
            case .to(let address): "to:\(quoted(address))"
            case .from(let address): "from:\(quoted(address))"
            case .subject(let text): "subject:\(quoted(text))"
            case .text(let text): quoted(text)
            default: nil
            }
        }.joined(separator: " ")
    }

    public var description: String {
        criteria.isEmpty ? "any message" : criteria.map { "\($0)" }.joined(separator: ", ")
    }
}

/// A delivered message as checks see it.
public struct DeliveredMessage: Sendable {
    public var id: String
    public var envelopeSender: String
    public var envelopeRecipients: [String]
    public var from: String
    public var to: [String]
    public var cc: [String]
    public var subject: String
    public var text: String
    public var html: String
    public var headers: [HeaderField]
    public var attachmentNames: [String]
    public var attachmentTypes: [String]
    /// The message's own `Date:` header, when it has one.
    public var date: Date?
    public var links: [String]
    public var traceID: String?
    public var received: Date

    public init(captured: CapturedMessage, parsed: ParsedMessage, received: Date) {
        id = captured.id
        envelopeSender = captured.envelope.mailFrom
        envelopeRecipients = captured.envelope.recipients.map(\.address)
        from = parsed.from.map { "\($0.name) <\($0.address)>" } ?? ""
        to = parsed.to.map(\.address)
        cc = parsed.cc.map(\.address)
        subject = parsed.subject
        text = parsed.text
        html = parsed.html
        headers = parsed.headers.fields
        attachmentNames = parsed.attachments.map(\.fileName)
        attachmentTypes = parsed.attachments.map(\.contentType)
        date = parsed.date
        links = parsed.links
        traceID = captured.traceID
        self.received = received
    }

    /// What `pattern` finds in the subject, then the text (then the HTML): its first capture
    /// group when it has one, else the whole match. Made for OTP codes and links:
    /// `message.extract(#"(\d{6})"#)`.
    public func extract(_ pattern: String) throws -> String? {
        let regex = try Regex(pattern)
        for source in [subject, text, html] {
            if let match = source.firstMatch(of: regex) {
                if match.output.count > 1, let group = match.output[1].substring { return String(group) }
                return String(source[match.range])
            }
        }
        return nil
    }
}

extension DeliveredMessage {
    /// From the message's `Date:` header (when the application wrote it) to its capture.
    public var delay: Duration? {
        date.map { .milliseconds(Int64((received.timeIntervalSince($0) * 1000).rounded())) }
    }
}

/// Percentiles of durations, such as the delays of the messages a query found:
/// `Timing(found.compactMap(\.delay)).p99 < .seconds(2)`.
public struct Timing: Sendable, CustomStringConvertible {
    public let sorted: [Duration]

    public init(_ durations: [Duration]) {
        sorted = durations.sorted()
    }

    /// The smallest duration with at least `percent`% of the values at or below it (nil when empty).
    public func percentile(_ percent: Double) -> Duration? {
        guard !sorted.isEmpty else { return nil }
        let rank = Int((percent / 100 * Double(sorted.count)).rounded(.up))
        return sorted[Swift.min(sorted.count - 1, Swift.max(0, rank - 1))]
    }

    public var p50: Duration? { percentile(50) }
    public var p90: Duration? { percentile(90) }
    public var p99: Duration? { percentile(99) }
    public var max: Duration? { sorted.last }

    public var description: String {
        guard !sorted.isEmpty else { return "no values" }
        return "n=\(sorted.count) p50 \(p50!) p90 \(p90!) p99 \(p99!) max \(max!)"
    }
}
