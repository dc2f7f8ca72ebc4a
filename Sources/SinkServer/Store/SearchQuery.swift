import Foundation
import MailMessage

/// Mailpit's search syntax: space-separated terms, ANDed; `"quoted phrases"` stay one term;
/// `-` or `!` negates; `to:`, `from:`, `cc:`, `bcc:`, `reply-to:`, `addressed:`, `subject:`,
/// `message-id:`, `tag:`, `is:read|unread|tagged`, `has:attachment(s)|inline(s)`,
/// `larger:`/`smaller:` (K, KB, M, MB), `after:`/`before:` (a date); a bare term searches the
/// text Mailpit searches (addresses, subject, body text, attachment names). Case-insensitive
/// substring matching, as Mailpit's SQL `LIKE`.
public struct SearchQuery: Sendable {
    enum Term: Sendable {
        case text(String)
        case field(String, String)
        case isRead(Bool)
        case isTagged
        case hasAttachment
        case hasInline
        case larger(Int)
        case smaller(Int)
        case after(Date)
        case before(Date)
    }

    var terms: [(term: Term, negated: Bool)] = []

    public struct Invalid: Error, CustomStringConvertible {
        public var description: String
    }

    public init(_ query: String) throws {
        for token in Self.tokenize(query) {
            var token = token
            var negated = false
            if token.count > 1, token.hasPrefix("-") || token.hasPrefix("!") {
                negated = true
                token.removeFirst()
            }
            terms.append((try Self.term(token), negated))
        }
    }

    func matches(_ summary: MessageSummary, read: Bool, tags: [String]) -> Bool {
        terms.allSatisfy { term, negated in Self.matches(term, summary, read: read, tags: tags) != negated }
    }

    private static func matches(_ term: Term, _ summary: MessageSummary, read: Bool, tags: [String]) -> Bool {
        func addresses(_ list: [MailAddress]) -> String {
            list.map { "\($0.name) <\($0.address)>" }.joined(separator: ", ").lowercased()
        }
        switch term {
        case .text(let text):
            return summary.searchText.contains(text)
        case .field(let name, let value):
            switch name {
            case "to": return addresses(summary.to).contains(value)
            case "from": return addresses(summary.from.map { [$0] } ?? []).contains(value)
            case "cc": return addresses(summary.cc).contains(value)
            case "bcc": return addresses(summary.bcc).contains(value)
            case "reply-to": return addresses(summary.replyTo).contains(value)
            case "addressed":
                return addresses((summary.from.map { [$0] } ?? []) + summary.to + summary.cc + summary.bcc + summary.replyTo)
                    .contains(value)
            case "subject": return summary.subject.lowercased().contains(value)
            case "message-id": return summary.messageID.lowercased().contains(value.trimmingCharacters(in: CharacterSet(charactersIn: "<>")))
            case "tag": return tags.contains { $0.lowercased() == value }
            default: return false
            }
        case .isRead(let wanted): return read == wanted
        case .isTagged: return !tags.isEmpty
        case .hasAttachment: return summary.attachmentCount > 0
        case .hasInline: return summary.inlineCount > 0
        case .larger(let size): return summary.size >= size
        case .smaller(let size): return summary.size <= size
        case .after(let date): return summary.created > date
        case .before(let date): return summary.created < date
        }
    }

    private static func term(_ token: String) throws -> Term {
        let lowered = token.lowercased()
        guard let colon = lowered.firstIndex(of: ":") else { return .text(lowered) }
        let name = String(lowered[..<colon])
        let value = String(lowered[lowered.index(after: colon)...])
        switch name {
        case "to", "from", "cc", "bcc", "reply-to", "addressed", "subject", "message-id", "tag":
            return .field(name, value)
        case "is":
            switch value {
            case "read": return .isRead(true)
            case "unread": return .isRead(false)
            case "tagged": return .isTagged
            default: throw Invalid(description: "unknown is: value \(value) (read, unread, tagged)")
            }
        case "has":
            switch value {
            case "attachment", "attachments": return .hasAttachment
            case "inline", "inlines": return .hasInline
            default: throw Invalid(description: "unknown has: value \(value) (attachment, inline)")
            }
        case "larger", "smaller":
            guard let size = parseSize(value) else { throw Invalid(description: "\(name): expects a size such as 2M or 500K") }
            return name == "larger" ? .larger(size) : .smaller(size)
        case "after", "before":
            guard let date = parseDate(value) else { throw Invalid(description: "\(name): expects a date such as 2026-11-24") }
            return name == "after" ? .after(date) : .before(date)
        default:
            // Not a filter (a URL, a time): plain text, as Mailpit does.
            return .text(lowered)
        }
    }

    /// `2M`, `500K`, `1.5MB`, `200`: bytes; nil for anything negative, not finite, or past
    /// 2^53 bytes (a size no message has: converting a larger Double to Int would trap; found
    /// by Fuzz/FuzzSearch with `smaller:` and sixty 1s).
    static func parseSize(_ text: String) -> Int? {
        let text = text.lowercased()
        let units: [(String, Double)] = [("kb", 1024), ("k", 1024), ("mb", 1024 * 1024), ("m", 1024 * 1024), ("b", 1), ("", 1)]
        for (suffix, scale) in units where text.hasSuffix(suffix) {
            guard let value = Double(text.dropLast(suffix.count)) else { continue }
            let bytes = value * scale
            guard bytes.isFinite, bytes >= 0, bytes <= 9_007_199_254_740_992 else { return nil }
            return Int(bytes)
        }
        return nil
    }

    /// `after:`/`before:` dates, in UTC unless a zone is given: `2026-11-24`,
    /// `2026-11-24T10:00:00`, `2026-11-24T10:00:00+01:00` (or `Z`), `2026-11-24 10:00:00`,
    /// `11/24/2026` (US order, as Mailpit reads it), `24-Nov-2026`, or an RFC 5322 date.
    ///
    /// Read by hand, not with `DateFormatter`: swift-corelibs-foundation's traps on some
    /// non-ASCII input (a combining mark: "Incorrect range CFRange"), which made one search
    /// request a crash of the sink (found by Fuzz/FuzzSearch; SearchQueryTests has the input).
    static func parseDate(_ text: String) -> Date? {
        let bytes = Array(text.utf8)
        guard !bytes.isEmpty, bytes.count <= 64, bytes.allSatisfy({ $0 >= 0x20 && $0 < 0x7F }) else { return nil }
        var index = 0
        func number(_ digits: Int) -> Int? {
            guard index + digits <= bytes.count else { return nil }
            var value = 0
            for byte in bytes[index..<index + digits] {
                guard byte >= UInt8(ascii: "0"), byte <= UInt8(ascii: "9") else { return nil }
                value = value * 10 + Int(byte - UInt8(ascii: "0"))
            }
            index += digits
            return value
        }
        func expect(_ character: UInt8) -> Bool {
            guard index < bytes.count, bytes[index] == character else { return false }
            index += 1
            return true
        }
        // yyyy-MM-dd[(T| )HH:mm:ss[Z|±hh:mm]]
        if let year = number(4), expect(UInt8(ascii: "-")), let month = number(2), expect(UInt8(ascii: "-")), let day = number(2) {
            guard index < bytes.count else { return utc(year, month, day) }
            guard expect(UInt8(ascii: "T")) || expect(UInt8(ascii: " ")),
                let hour = number(2), expect(UInt8(ascii: ":")), let minute = number(2), expect(UInt8(ascii: ":")), let second = number(2)
            else { return nil }
            var offset = 0
            if index < bytes.count {
                if expect(UInt8(ascii: "Z")) {
                    offset = 0
                } else if let sign = bytes[index] == UInt8(ascii: "+") ? 1 : bytes[index] == UInt8(ascii: "-") ? -1 : nil {
                    index += 1
                    guard let hours = number(2), expect(UInt8(ascii: ":")), let minutes = number(2), hours < 24, minutes < 60 else { return nil }
                    offset = sign * (hours * 3600 + minutes * 60)
                } else {
                    return nil
                }
                guard index == bytes.count else { return nil }
            }
            return utc(year, month, day, hour, minute, second).map { $0.addingTimeInterval(TimeInterval(-offset)) }
        }
        // MM/dd/yyyy
        index = 0
        if let month = number(2), expect(UInt8(ascii: "/")), let day = number(2), expect(UInt8(ascii: "/")), let year = number(4),
            index == bytes.count
        {
            return utc(year, month, day)
        }
        // dd-MMM-yyyy
        index = 0
        if let day = number(2), expect(UInt8(ascii: "-")), index + 4 < bytes.count {
            let name = String(decoding: bytes[index..<index + 3], as: UTF8.self).lowercased()
            index += 3
            let months = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
            if let month = months.firstIndex(of: name), expect(UInt8(ascii: "-")), let year = number(4), index == bytes.count {
                return utc(year, month + 1, day)
            }
        }
        return MailDate.parse(text)
    }

    /// A UTC instant from calendar fields, nil when a field is out of range.
    private static func utc(_ year: Int, _ month: Int, _ day: Int, _ hour: Int = 0, _ minute: Int = 0, _ second: Int = 0) -> Date? {
        guard (1...9999).contains(year), (1...12).contains(month), (1...31).contains(day), (0...23).contains(hour),
            (0...59).contains(minute), (0...60).contains(second)
        else { return nil }
        var components = DateComponents()
        (components.year, components.month, components.day) = (year, month, day)
        (components.hour, components.minute, components.second) = (hour, minute, second)
        var calendar = Calendar(identifier: .gregorian)
        calendar.timeZone = TimeZone(secondsFromGMT: 0)!
        guard let date = calendar.date(from: components), calendar.component(.day, from: date) == day else { return nil }
        return date
    }

    /// Splits on spaces, keeping `"quoted phrases"` (and `field:"quoted value"`) whole.
    static func tokenize(_ query: String) -> [String] {
        var tokens: [String] = []
        var current = ""
        var quoted = false
        for character in query {
            if character == "\"" {
                quoted.toggle()
            } else if character.isWhitespace && !quoted {
                if !current.isEmpty { tokens.append(current) }
                current = ""
            } else {
                current.append(character)
            }
        }
        if !current.isEmpty { tokens.append(current) }
        return tokens
    }
}
