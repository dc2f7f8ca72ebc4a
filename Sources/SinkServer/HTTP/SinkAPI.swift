import Crypto
import Foundation
import HTTPTypes
import Hummingbird
import MailMessage
import NIOCore
import ServiceLifecycle
import SwallowConfig
import Synchronization

/// The sink's HTTP API: Mailpit API v1 routes and shapes, MailHog API v2 list and search,
/// and Swallow's own (events, stats, metrics, health). Every list, search, delete and the
/// event stream take `mailbox=NAME`.
public enum SinkAPI {
    /// Request bodies larger than this get 413.
    static let maxBodyBytes = 1024 * 1024

    public static func router(for sink: Sink) -> Router<BasicRequestContext> {
        let router = Router()
        let store = sink.store
        let started = Date()
        // Before every route: a route's responder is built with the middleware added before it.
        router.add(
            middleware: APIAccess(
                adminTokens: sink.configuration.apiTokens, credentials: sink.configuration.apiCredentials, registry: store.mailboxes
            ))

        // MARK: Mailpit v1: messages

        router.get("/api/v1/messages") { request, _ -> Response in
            try await summary(search: nil, request: request, store: store)
        }

        router.get("/api/v1/search") { request, _ -> Response in
            let query = request.uri.queryParameters
            guard let text = formValue("query", request), !text.trimmingCharacters(in: .whitespaces).isEmpty else {
                throw HTTPError(.badRequest, message: "Error: no search query")
            }
            _ = query
            return try await summary(search: try searchQuery(text), request: request, store: store)
        }

        router.delete("/api/v1/search") { request, _ -> Response in
            let query = request.uri.queryParameters
            guard let text = formValue("query", request), !text.trimmingCharacters(in: .whitespaces).isEmpty else {
                throw HTTPError(.badRequest, message: "Error: no search query")
            }
            store.delete(ids: try await store.matchingIDs(mailbox: query.get("mailbox"), search: try searchQuery(text)))
            return plain("ok")
        }

        router.put("/api/v1/messages") { request, context -> Response in
            var request = request
            let body = try await request.collectBody(upTo: maxBodyBytes)
            let fields = try bodyFields(body)
            let update = MailpitJSON.ReadRequest(
                read: fields["read"]?.first.map { $0 == "true" || $0 == "1" },
                ids: fields["ids"],
                search: fields["search"]?.first
            )
            if update.ids != nil && update.search != nil {
                throw HTTPError(.badRequest, message: "IDs and Search cannot be used together")
            }
            let mailbox = request.uri.queryParameters.get("mailbox")
            let ids: [String]
            if let given = update.ids, !given.isEmpty {
                ids = APIScope.filter(given, store: store)
            } else if let text = update.search {
                ids = try await store.matchingIDs(mailbox: mailbox, search: try searchQuery(text))
            } else {
                ids = try await store.matchingIDs(mailbox: mailbox, search: nil)
            }
            store.setRead(update.read ?? false, ids: ids)
            return plain("ok")
        }

        router.delete("/api/v1/messages") { request, _ -> Response in
            var request = request
            let body = try await request.collectBody(upTo: maxBodyBytes)
            let mailbox = request.uri.queryParameters.get("mailbox")
            // Mailpit deletes everything on a malformed body; Swallow answers 400 instead.
            if let ids = try bodyFields(body)["ids"], !ids.isEmpty {
                store.delete(ids: APIScope.filter(ids, store: store))
                return plain("ok")
            }
            if mailbox == nil {
                store.removeAll()
            } else {
                store.delete(ids: try await store.matchingIDs(mailbox: mailbox, search: nil))
            }
            return plain("ok")
        }

        // MARK: Mailpit v1: one message

        router.get("/api/v1/message/:id") { request, context -> Response in
            let listing = try await resolve(context.parameters.require("id"), request: request, store: store)
            guard let parsed = try await store.parsed(id: listing.message.id),
                let summary = await store.summary(id: listing.message.id)
            else { throw HTTPError(.notFound, message: "Message not found") }
            store.setRead(true, ids: [listing.message.id])
            let message = MailpitJSON.Message(
                id: listing.message.id,
                messageID: summary.messageID,
                read: true,
                from: Nullable(summary.from),
                to: summary.to,
                cc: summary.cc,
                bcc: summary.bcc,
                replyTo: summary.replyTo,
                returnPath: summary.returnPath,
                subject: summary.subject,
                listUnsubscribe: listUnsubscribe(parsed),
                date: summary.date ?? summary.created,
                tags: listing.tags,
                username: listing.message.session.authUser ?? "",
                text: parsed.text,
                html: parsed.html,
                size: listing.message.size,
                inline: parsed.inline.map { attachment($0, parsed) },
                attachments: parsed.attachments.map { attachment($0, parsed) }
            )
            return try json(message)
        }

        router.get("/api/v1/message/:id/raw") { request, context -> Response in
            let listing = try await resolve(context.parameters.require("id"), request: request, store: store)
            guard let raw = try await store.raw(id: listing.message.id) else {
                throw HTTPError(.notFound, message: "Message body not stored (--discard)")
            }
            let download = request.uri.queryParameters.get("dl") == "1" ? "\(listing.message.id).eml" : nil
            return CapturedContent.response(raw, contentType: "text/plain; charset=utf-8", download: download)
        }

        // Swallow's capture metadata: envelope, session, timestamps, anomalies, faults.
        // `relay` is always there: the hand-overs to an upstream, [] when none.
        router.get("/api/v1/message/:id/capture") { request, context -> Response in
            var message = try await resolve(context.parameters.require("id"), request: request, store: store).message
            if message.relay == nil { message.relay = [] }
            return try json(message)
        }

        router.get("/api/v1/message/:id/transcript") { request, context -> Response in
            let listing = try await resolve(context.parameters.require("id"), request: request, store: store)
            guard let transcript = listing.message.transcript else {
                throw HTTPError(.notFound, message: "No transcript (start the sink with --transcripts)")
            }
            return try json(transcript)
        }

        router.get("/api/v1/message/:id/headers") { request, context -> Response in
            let listing = try await resolve(context.parameters.require("id"), request: request, store: store)
            guard let parsed = try await store.parsed(id: listing.message.id) else { throw HTTPError(.notFound) }
            var headers: [String: [String]] = [:]
            for field in parsed.headers.fields {
                headers[MailpitJSON.canonicalHeaderName(field.name), default: []].append(field.value)
            }
            // Mailpit clients (the PyPI mailpit-api-client among them) expect a Delivered-To
            // entry; without one in the message, it holds the envelope recipients.
            if headers["Delivered-To"] == nil {
                headers["Delivered-To"] = listing.message.envelope.recipients.map(\.address)
            }
            return try json(headers, sortedKeys: true)
        }

        router.get("/api/v1/message/:id/part/:part") { request, context -> Response in
            let listing = try await resolve(context.parameters.require("id"), request: request, store: store)
            guard let parsed = try await store.parsed(id: listing.message.id),
                let part = parsed.part(id: try context.parameters.require("part"))
            else { throw HTTPError(.notFound, message: "Part not found") }
            // Images show inline (a message's cid: images); every other part is a download.
            let type = part.contentType.value
            let body = ByteBuffer(bytes: parsed.decodedBody(part))
            let inline = CapturedContent.isInertImage(type) && part.fileName == nil
            return CapturedContent.response(body, contentType: type, download: inline ? nil : (part.fileName ?? "part-\(part.partID)"))
        }

        router.get("/view/:file") { request, context -> Response in
            let file = try context.parameters.require("file")
            let isHTML = file.hasSuffix(".html")
            guard isHTML || file.hasSuffix(".txt") || file == "latest" else { throw HTTPError(.notFound) }
            let id = file == "latest" ? "latest" : String(file.dropLast(isHTML ? 5 : 4))
            let listing = try await resolve(id, request: request, store: store)
            guard let parsed = try await store.parsed(id: listing.message.id) else { throw HTTPError(.notFound) }
            if isHTML || file == "latest" {
                return CapturedContent.response(ByteBuffer(string: parsed.html), contentType: "text/html; charset=utf-8")
            }
            return CapturedContent.response(ByteBuffer(string: parsed.text), contentType: "text/plain; charset=utf-8")
        }

        router.get("/api/v1/info") { _, _ -> Response in
            let stored = store.counts()
            let counts = sink.metrics.counts.withLock { $0 }
            let info: [String: AnyEncodable] = [
                "Version": AnyEncodable("swallow"),
                "LatestVersion": AnyEncodable(""),
                "Database": AnyEncodable(sink.configuration.dataDirectory ?? "memory"),
                "DatabaseSize": AnyEncodable(0),
                "Messages": AnyEncodable(stored.total),
                "Unread": AnyEncodable(stored.unread),
                "Tags": AnyEncodable(Dictionary(store.tagCounts().map { ($0.tag, $0.count) }, uniquingKeysWith: +)),
                "RuntimeStats": AnyEncodable([
                    "Uptime": Int(Date().timeIntervalSince(started)),
                    "Memory": 0,
                    "MessagesDeleted": 0,
                    "SMTPAccepted": counts.accepted,
                    "SMTPAcceptedSize": counts.acceptedBytes,
                    "SMTPRejected": counts.rejected,
                    "SMTPIgnored": 0,
                ]),
            ]
            return try json(info, sortedKeys: true)
        }

        // MARK: MailHog v2

        router.get("/api/v2/messages") { request, _ -> Response in
            let query = request.uri.queryParameters
            let listings = store.listings(mailbox: query.get("mailbox"))
            return try await mailHog(listings, request: request, store: store, contentType: "text/json")
        }

        router.get("/api/v2/search") { request, _ -> Response in
            let query = request.uri.queryParameters
            guard let kind = query.get("kind"), ["from", "to", "containing"].contains(kind),
                let text = formValue("query", request)?.lowercased(), !text.isEmpty
            else { return Response(status: .badRequest) }
            var matches: [MessageStore.Listing] = []
            for listing in store.listings(mailbox: query.get("mailbox")) {
                guard let summary = await store.summary(id: listing.message.id) else { continue }
                let envelope = listing.message.envelope
                let hit: Bool
                switch kind {
                case "from":
                    hit =
                        envelope.mailFrom.lowercased().contains(text)
                        || (summary.from.map { "\($0.name) <\($0.address)>".lowercased().contains(text) } ?? false)
                case "to":
                    hit =
                        envelope.recipients.contains { $0.address.lowercased().contains(text) }
                        || summary.to.contains { "\($0.name) <\($0.address)>".lowercased().contains(text) }
                default:
                    hit = summary.searchText.contains(text) || summary.subject.lowercased().contains(text)
                }
                if hit { matches.append(listing) }
            }
            return try await mailHog(matches, request: request, store: store, contentType: "application/json")
        }

        MailHogV1Routes.add(to: router, store: store)
        TagRoutes.add(to: router, store: store)
        SendRoute.add(to: router, sink: sink)
        RelayRoutes.add(to: router, sink: sink)
        NativeRoutes.add(to: router, sink: sink, started: started)
        AuditRoutes.add(to: router, sink: sink)
        FaultRoutes.add(to: router, engine: sink.faults, mailboxes: store.mailboxes)
        MailboxRoutes.add(to: router, sink: sink)
        WebInbox.add(to: router)

        for path in ["/healthz", "/livez", "/readyz"] {
            router.get(RouterPath(path)) { _, _ -> Response in plain("ok") }
        }
        return router
    }
}
