import Foundation
import Hummingbird
import MailMessage
import NIOCore

/// MailHog API v1's per-message routes, which MailHog client libraries call. They do not clash
/// with Mailpit's (`/api/v1/message/{ID}`, singular); the list itself (`/api/v1/messages`) is
/// Mailpit's, as Mailpit-compatible tools expect.
///
/// - `GET /api/v1/messages/{ID}`: the message in MailHog's `Message` shape.
/// - `DELETE /api/v1/messages/{ID}`: deletes it (404 when unknown).
/// - `GET /api/v1/messages/{ID}/download`: the message as `message/rfc822`, a download. MailHog
///   rebuilds it from its parsed headers; Swallow sends the stored bytes, which is what a
///   caller of "download" wants.
/// - `GET /api/v1/messages/{ID}/mime/part/{INDEX}/download`: one top-level MIME part, decoded.
enum MailHogV1Routes {
    static func add(to router: Router<BasicRequestContext>, store: MessageStore) {
        router.get("/api/v1/messages/:id") { _, context -> Response in
            let (listing, parsed) = try await message(context.parameters.require("id"), store: store)
            let created = Date(timeIntervalSince1970: Double(listing.message.timestamps.dataEndNanos) / 1e9)
            return try SinkAPI.json(MailHogJSON.Message(captured: listing.message, parsed: parsed, created: created), contentType: "text/json")
        }

        router.delete("/api/v1/messages/:id") { _, context -> Response in
            let id = try context.parameters.require("id")
            guard store.delete(ids: [id]) > 0 else { throw HTTPError(.notFound, message: "Message not found") }
            return SinkAPI.plain("")
        }

        router.get("/api/v1/messages/:id/download") { _, context -> Response in
            let id = try context.parameters.require("id")
            guard store.listing(id: id) != nil else { throw HTTPError(.notFound, message: "Message not found") }
            guard let raw = try await store.raw(id: id) else { throw HTTPError(.notFound, message: "Message body not stored (--discard)") }
            return CapturedContent.response(raw, contentType: "message/rfc822", download: "\(id).eml")
        }

        router.get("/api/v1/messages/:id/mime/part/:index/download") { _, context -> Response in
            let (_, parsed) = try await message(context.parameters.require("id"), store: store)
            guard let index = Int(try context.parameters.require("index")), parsed.root.children.indices.contains(index) else {
                throw HTTPError(.notFound, message: "Part not found")
            }
            let part = parsed.root.children[index]
            return CapturedContent.response(
                ByteBuffer(bytes: parsed.decodedBody(part)), contentType: part.contentType.value,
                download: part.fileName ?? "part-\(index)"
            )
        }
    }

    private static func message(_ id: String, store: MessageStore) async throws -> (MessageStore.Listing, ParsedMessage) {
        guard let listing = store.listing(id: id), let parsed = try await store.parsed(id: id) else {
            throw HTTPError(.notFound, message: "Message not found")
        }
        return (listing, parsed)
    }
}
