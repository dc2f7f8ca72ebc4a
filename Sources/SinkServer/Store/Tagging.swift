import Foundation
import MailMessage
import NIOCore
import SMTPProtocol

/// Tags on messages, in Mailpit's model: a received message's `X-Tags: a, b` header sets its
/// tags, `--tag NAME=SEARCH` tags every new message that matches a search query, and with
/// `--tags-from-plus` each recipient's plus tag (`app+signup@x` → `signup`) is a tag too. The
/// API sets, renames and removes them afterwards.
///
/// Names are compared without regard to case (the first spelling seen is kept), trimmed, at
/// most 100 characters, without control characters or commas (the header's separator).
public struct Tagging: Sendable {
    public struct Rule: Sendable {
        public var tag: String
        public var query: SearchQuery
    }

    public var rules: [Rule] = []
    public var fromPlus = false

    public init(rules: [Rule] = [], fromPlus: Bool = false) {
        self.rules = rules
        self.fromPlus = fromPlus
    }

    public struct Invalid: Error, CustomStringConvertible {
        public var description: String
    }

    /// A tag name as given, trimmed; nil when it is empty, too long, or holds a control
    /// character or a comma.
    public static func validName(_ name: String) -> String? {
        let trimmed = name.trimmingCharacters(in: .whitespaces)
        guard !trimmed.isEmpty, trimmed.count <= 100,
            !trimmed.unicodeScalars.contains(where: { $0.properties.generalCategory == .control || $0 == "," })
        else { return nil }
        return trimmed
    }

    /// `--tag NAME=SEARCH`.
    public static func parseRule(_ text: String) throws(Invalid) -> Rule {
        guard let equals = text.firstIndex(of: "=") else {
            throw Invalid(description: "--tag: expected NAME=SEARCH, got \(text)")
        }
        guard let tag = validName(String(text[..<equals])) else {
            throw Invalid(description: "--tag: bad tag name in \(text) (1 to 100 characters, no control characters or commas)")
        }
        let search = String(text[text.index(after: equals)...])
        guard !search.trimmingCharacters(in: .whitespaces).isEmpty else {
            throw Invalid(description: "--tag: no search query in \(text)")
        }
        do {
            return Rule(tag: tag, query: try SearchQuery(search))
        } catch {
            throw Invalid(description: "--tag \(text): \(error)")
        }
    }

    /// Distinct (case-insensitively, first spelling kept), sorted as Mailpit lists them.
    public static func normalized(_ tags: [String]) -> [String] {
        var seen = Set<String>()
        return tags.filter { seen.insert($0.lowercased()).inserted }
            .sorted { $0.lowercased() < $1.lowercased() }
    }

    /// The tags a newly received message gets.
    func tags(for message: CapturedMessage, raw: ByteBuffer?) -> [String] {
        // Once per stored message: nothing is allocated unless something tags it.
        var tags: [String] = []
        if let raw { tags += Self.headerTags(raw) }
        if fromPlus {
            for recipient in message.envelope.recipients {
                guard let detail = Mailbox.detail(ofAddress: recipient.address), let tag = Self.validName(String(detail)) else { continue }
                tags.append(tag)
            }
        }
        if !rules.isEmpty {
            let parsed = raw.map { ParsedMessage(bytes: Array($0.readableBytesView)) }
            let summary = MessageSummary(captured: message, parsed: parsed)
            for rule in rules where rule.query.matches(summary, read: false, tags: tags) {
                tags.append(rule.tag)
            }
        }
        return tags.isEmpty ? tags : Self.normalized(tags)
    }

    /// The values of `X-Tags` fields in the header section, split at commas. Reads the header
    /// lines only (found with `HeaderLookup`'s `memchr`: a byte-at-a-time scan here was ~2% of
    /// the sink's user time at 1 KiB messages), and parses nothing unless one is `X-Tags:`.
    private static let headerName = Array("x-tags".utf8)

    static func headerTags(_ raw: ByteBuffer) -> [String] {
        let values = raw.withUnsafeReadableBytes { HeaderLookup.allValues(named: Self.headerName, in: $0) }
        guard !values.isEmpty else { return [] }
        return values.flatMap { $0.split(separator: ",") }.compactMap { validName(EncodedWords.decode(String($0))) }
    }
}
