import Foundation
import MailMessage

/// MailHog API v2's shapes as its server really emits them (not as its swagger says):
/// `{total, count, start, items}` with PascalCase `Message` items.
enum MailHogJSON {
    struct Messages: Encodable {
        var total: Int
        var count: Int
        var start: Int
        var items: [Message]
    }

    struct Path: Encodable {
        var relays: Nullable<[String]>
        var mailbox: String
        var domain: String
        var params: String

        enum CodingKeys: String, CodingKey {
            case relays = "Relays", mailbox = "Mailbox", domain = "Domain", params = "Params"
        }

        init(_ address: String) {
            let at = address.lastIndex(of: "@")
            mailbox = at.map { String(address[..<$0]) } ?? address
            domain = at.map { String(address[address.index(after: $0)...]) } ?? ""
            params = ""
            relays = Nullable(nil)
        }
    }

    struct Content: Encodable {
        var headers: [String: [String]]
        var body: String
        var size: Int
        var mime: Nullable<MIME>

        enum CodingKeys: String, CodingKey {
            case headers = "Headers", body = "Body", size = "Size", mime = "MIME"
        }
    }

    final class MIME: Encodable {
        var parts: [Content]
        init(parts: [Content]) { self.parts = parts }
        enum CodingKeys: String, CodingKey { case parts = "Parts" }
    }

    struct Raw: Encodable {
        var from: String
        var to: [String]
        var data: String
        var helo: String

        enum CodingKeys: String, CodingKey {
            case from = "From", to = "To", data = "Data", helo = "Helo"
        }
    }

    struct Message: Encodable {
        var id: String
        var from: Path
        var to: [Path]
        var content: Content
        var created: Date
        var mime: Nullable<MIME>
        var raw: Raw

        enum CodingKeys: String, CodingKey {
            case id = "ID", from = "From", to = "To", content = "Content", created = "Created", mime = "MIME", raw = "Raw"
        }

        /// MailHog keeps header names as sent, and the last value of a repeated header wins;
        /// Swallow keeps every value (clients read `[0]`).
        init(captured: CapturedMessage, parsed: ParsedMessage, created: Date) {
            id = captured.id
            from = Path(captured.envelope.mailFrom)
            to = captured.envelope.recipients.map { Path($0.address) }
            let bytes = parsed.bytes
            content = Self.content(parsed.root, bytes: bytes)
            self.created = created
            mime = content.mime
            raw = Raw(
                from: captured.envelope.mailFrom,
                to: captured.envelope.recipients.map(\.address),
                data: String(decoding: bytes, as: UTF8.self),
                helo: captured.session.helo
            )
        }

        static func content(_ part: MIMEPart, bytes: [UInt8]) -> Content {
            var headers: [String: [String]] = [:]
            for field in part.headers.fields { headers[field.name, default: []].append(field.value) }
            let mime = Nullable(part.children.isEmpty ? nil : MIME(parts: part.children.map { content($0, bytes: bytes) }))
            return Content(
                headers: headers,
                body: String(decoding: bytes[part.body], as: UTF8.self),
                size: part.body.count,
                mime: mime
            )
        }
    }
}
