import Crypto
import Foundation
import HTTPTypes
import Hummingbird
import MailMessage
import NIOCore
import ServiceLifecycle
import SwallowConfig
import Synchronization

// The response shapes the routes share: message summaries, attachments, MailHog's lists.
extension SinkAPI {
    static func summary(search: SearchQuery?, request: Request, store: MessageStore) async throws -> Response {
        let query = request.uri.queryParameters
        let start = max(0, query.get("start", as: Int.self) ?? 0)
        let limit = max(0, query.get("limit", as: Int.self) ?? 50)
        let page = try await store.page(mailbox: query.get("mailbox"), search: search, start: start, limit: limit)
        let result = MailpitJSON.MessagesSummary(
            total: page.total,
            unread: page.unread,
            count: page.items.count,
            messagesCount: page.matches,
            messagesUnread: page.matchesUnread,
            start: start,
            tags: page.tags,
            messages: page.items.map { MailpitJSON.MessageSummary($0.summary, listing: $0.listing) }
        )
        return try json(result)
    }

    static func searchQuery(_ text: String) throws -> SearchQuery {
        do {
            return try SearchQuery(text)
        } catch {
            throw HTTPError(.badRequest, message: "\(error)")
        }
    }

    /// An id, or `latest` (the newest message, or the newest matching `?query=`).
    static func resolve(_ id: String, request: Request, store: MessageStore) async throws -> MessageStore.Listing {
        if id == "latest" {
            let query = request.uri.queryParameters
            let text = formValue("query", request).flatMap { $0.isEmpty ? nil : $0 }
            let page = try await store.page(mailbox: query.get("mailbox"), search: try text.map(searchQuery), start: 0, limit: 1)
            guard let newest = page.items.first?.listing else { throw HTTPError(.notFound, message: "Message not found") }
            return newest
        }
        guard let listing = store.listing(id: id) else { throw HTTPError(.notFound, message: "Message not found") }
        try APIScope.check(listing)
        return listing
    }

    static func attachment(_ attachment: ParsedMessage.Attachment, _ parsed: ParsedMessage) -> MailpitJSON.Attachment {
        let bytes = parsed.part(id: attachment.partID).map { parsed.decodedBody($0) } ?? []
        func hex<D: Sequence>(_ digest: D) -> String where D.Element == UInt8 { digest.map { String(format: "%02x", $0) }.joined() }
        return MailpitJSON.Attachment(
            partID: attachment.partID,
            fileName: attachment.fileName,
            contentType: attachment.contentType,
            contentID: attachment.contentID,
            size: attachment.size,
            checksums: [
                "MD5": hex(Insecure.MD5.hash(data: bytes)),
                "SHA1": hex(Insecure.SHA1.hash(data: bytes)),
                "SHA256": hex(SHA256.hash(data: bytes)),
            ]
        )
    }

    static func listUnsubscribe(_ parsed: ParsedMessage) -> MailpitJSON.ListUnsubscribe {
        let header = parsed.headers["List-Unsubscribe"] ?? ""
        var links: [String] = []
        var rest = Substring(header)
        while let open = rest.firstIndex(of: "<"), let close = rest[open...].firstIndex(of: ">") {
            links.append(String(rest[rest.index(after: open)..<close]))
            rest = rest[rest.index(after: close)...]
        }
        return MailpitJSON.ListUnsubscribe(header: header, links: links, errors: "", headerPost: parsed.headers["List-Unsubscribe-Post"] ?? "")
    }

    static func mailHog(_ listings: [MessageStore.Listing], request: Request, store: MessageStore, contentType: String) async throws -> Response {
        let (pageItems, start) = page(listings, request: request, maxLimit: 250)
        var items: [MailHogJSON.Message] = []
        for listing in pageItems {
            guard let parsed = try await store.parsed(id: listing.message.id) else { continue }
            let created = Date(timeIntervalSince1970: Double(listing.message.timestamps.dataEndNanos) / 1e9)
            items.append(MailHogJSON.Message(captured: listing.message, parsed: parsed, created: created))
        }
        return try json(MailHogJSON.Messages(total: listings.count, count: items.count, start: start, items: items), contentType: contentType)
    }
}

/// A type-erased Encodable, for the few hand-built JSON objects.
struct AnyEncodable: Encodable {
    private let encodeValue: (any Encoder) throws -> Void
    init(_ value: some Encodable) { encodeValue = value.encode }
    func encode(to encoder: any Encoder) throws { try encodeValue(encoder) }
}
