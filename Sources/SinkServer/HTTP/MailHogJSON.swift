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
        var relays: [String]?
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
            relays = nil
        }

        func encode(to encoder: any Encoder) throws {
            var container = encoder.container(keyedBy: CodingKeys.self)
            try container.encode(relays, forKey: .relays)
            try container.encode(mailbox, forKey: .mailbox)
            try container.encode(domain, forKey: .domain)
            try container.encode(params, forKey: .params)
        }
    }

    struct Content: Encodable {
        var headers: [String: [String]]
        var body: String
        var size: Int
        var mime: MIME?

        enum CodingKeys: String, CodingKey {
            case headers = "Headers", body = "Body", size = "Size", mime = "MIME"
        }

        func encode(to encoder: any Encoder) throws {
            var container = encoder.container(keyedBy: CodingKeys.self)
            try container.encode(headers, forKey: .headers)
            try container.encode(body, forKey: .body)
            try container.encode(size, forKey: .size)
            try container.encode(mime, forKey: .mime)
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
        var mime: MIME?
        var raw: Raw

        enum CodingKeys: String, CodingKey {
            case id = "ID", from = "From", to = "To", content = "Content", created = "Created", mime = "MIME", raw = "Raw"
        }

        func encode(to encoder: any Encoder) throws {
            var container = encoder.container(keyedBy: CodingKeys.self)
            try container.encode(id, forKey: .id)
            try container.encode(from, forKey: .from)
            try container.encode(to, forKey: .to)
            try container.encode(content, forKey: .content)
            try container.encode(created, forKey: .created)
            try container.encode(mime, forKey: .mime)
            try container.encode(raw, forKey: .raw)
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
            let mime = part.children.isEmpty ? nil : MIME(parts: part.children.map { content($0, bytes: bytes) })
            return Content(
                headers: headers,
                body: String(decoding: bytes[part.body], as: UTF8.self),
                size: part.body.count,
                mime: mime
            )
        }
    }
}
