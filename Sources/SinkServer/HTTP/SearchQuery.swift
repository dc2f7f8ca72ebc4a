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

    struct Invalid: Error, CustomStringConvertible {
        var description: String
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

    static func parseSize(_ text: String) -> Int? {
        let units: [(String, Double)] = [("kb", 1024), ("k", 1024), ("mb", 1024 * 1024), ("m", 1024 * 1024), ("b", 1), ("", 1)]
        for (suffix, scale) in units where text.hasSuffix(suffix) {
            if let value = Double(text.dropLast(suffix.count)) { return Int(value * scale) }
        }
        return nil
    }

    static func parseDate(_ text: String) -> Date? {
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(secondsFromGMT: 0)
        for format in ["yyyy-MM-dd'T'HH:mm:ssXXXXX", "yyyy-MM-dd'T'HH:mm:ss", "yyyy-MM-dd HH:mm:ss", "yyyy-MM-dd", "MM/dd/yyyy", "dd-MMM-yyyy"] {
            formatter.dateFormat = format
            if let date = formatter.date(from: text) { return date }
        }
        return MailDate.parse(text)
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
