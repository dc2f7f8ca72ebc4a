import Foundation
import MailMessage

/// The JSON shapes of Mailpit's API v1, with its field names (PascalCase, except the
/// snake_case `MessagesSummary`), so tools written for Mailpit read Swallow unchanged.
enum MailpitJSON {
    struct MessagesSummary: Encodable {
        var total: Int
        var unread: Int
        var count: Int
        var messagesCount: Int
        var messagesUnread: Int
        var start: Int
        var tags: [String]
        var messages: [MessageSummary]

        enum CodingKeys: String, CodingKey {
            case total, unread, count, start, tags, messages
            case messagesCount = "messages_count"
            case messagesUnread = "messages_unread"
        }
    }

    struct MessageSummary: Encodable {
        var id: String
        var messageID: String
        var read: Bool
        /// `null` when absent, as Mailpit's pointer.
        var from: Nullable<MailAddress>
        var to: [MailAddress]
        var cc: [MailAddress]
        var bcc: [MailAddress]
        var replyTo: [MailAddress]
        var subject: String
        var created: Date
        var username: String
        var tags: [String]
        var size: Int
        var attachments: Int
        var snippet: String

        enum CodingKeys: String, CodingKey {
            case id = "ID", messageID = "MessageID", read = "Read", from = "From", to = "To", cc = "Cc", bcc = "Bcc"
            case replyTo = "ReplyTo", subject = "Subject", created = "Created", username = "Username", tags = "Tags"
            case size = "Size", attachments = "Attachments", snippet = "Snippet"
        }

        init(_ summary: MailMessage.MessageSummary, listing: MessageStore.Listing) {
            id = summary.id
            messageID = summary.messageID
            read = listing.read
            from = Nullable(summary.from)
            to = summary.to
            cc = summary.cc
            bcc = summary.bcc
            replyTo = summary.replyTo
            subject = summary.subject
            created = summary.created
            username = listing.message.session.authUser ?? ""
            tags = listing.tags
            size = summary.size
            attachments = summary.attachmentCount
            snippet = summary.snippet
        }
    }

    struct Attachment: Encodable {
        var partID: String
        var fileName: String
        var contentType: String
        var contentID: String
        var size: Int
        var checksums: [String: String]

        enum CodingKeys: String, CodingKey {
            case partID = "PartID", fileName = "FileName", contentType = "ContentType", contentID = "ContentID"
            case size = "Size", checksums = "Checksums"
        }
    }

    struct ListUnsubscribe: Encodable {
        var header: String
        var links: [String]
        var errors: String
        var headerPost: String

        enum CodingKeys: String, CodingKey {
            case header = "Header", links = "Links", errors = "Errors", headerPost = "HeaderPost"
        }
    }

    struct Message: Encodable {
        var id: String
        var messageID: String
        var read: Bool
        /// `null` when absent, as Mailpit's pointer.
        var from: Nullable<MailAddress>
        var to: [MailAddress]
        var cc: [MailAddress]
        var bcc: [MailAddress]
        var replyTo: [MailAddress]
        var returnPath: String
        var subject: String
        var listUnsubscribe: ListUnsubscribe
        var date: Date
        var tags: [String]
        var username: String
        var text: String
        var html: String
        var size: Int
        var inline: [Attachment]
        var attachments: [Attachment]

        enum CodingKeys: String, CodingKey {
            case id = "ID", messageID = "MessageID", read = "Read", from = "From", to = "To", cc = "Cc", bcc = "Bcc"
            case replyTo = "ReplyTo", returnPath = "ReturnPath", subject = "Subject", listUnsubscribe = "ListUnsubscribe"
            case date = "Date", tags = "Tags", username = "Username", text = "Text", html = "HTML", size = "Size"
            case inline = "Inline", attachments = "Attachments"
        }
    }

    /// `PUT /api/v1/messages`: `{"Read": bool, "IDs": [...], "Search": "..."}`.
    struct ReadRequest {
        var read: Bool?
        var ids: [String]?
        var search: String?
    }

    /// Go's `time.RFC3339Nano`-style output, in UTC with millisecond precision.
    static func encoder() -> JSONEncoder {
        let encoder = JSONEncoder()
        encoder.dateEncodingStrategy = .custom { date, encoder in
            var container = encoder.singleValueContainer()
            try container.encode(rfc3339(date))
        }
        encoder.outputFormatting = [.withoutEscapingSlashes]
        return encoder
    }

    static func rfc3339(_ date: Date) -> String {
        WallClock.rfc3339(nanos: Int64((date.timeIntervalSince1970 * 1e9).rounded(.down)))
    }

    /// Go's `textproto.CanonicalMIMEHeaderKey`: `message-id` → `Message-Id`.
    static func canonicalHeaderName(_ name: String) -> String {
        var result = ""
        var upper = true
        for character in name {
            result.append(upper ? Character(character.uppercased()) : Character(character.lowercased()))
            upper = character == "-"
        }
        return result
    }
}
