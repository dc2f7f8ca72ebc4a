import Foundation
import HTTPTypes
import Hummingbird
import MailMessage
import NIOCore
import ServiceLifecycle
import SwallowConfig
import Synchronization

/// Swallow's own routes: the live event stream (with replay and keep-alives), the server-side
/// wait, stats and Prometheus metrics.
enum NativeRoutes {
    /// Seconds between keep-alive comments on a quiet event stream.
    static let keepAliveSeconds = 15.0

    static func add(to router: Router<BasicRequestContext>, sink: Sink, started: Date) {
        let store = sink.store
        router.get("/api/v1/events") { request, _ -> Response in
            let mailbox = request.uri.queryParameters.get("mailbox")
            // EventSource sends the header when it reconnects; the query parameter is for
            // clients that cannot set headers.
            let lastEventID: String? = request.headers[HTTPField.Name("Last-Event-ID")!] ?? SinkAPI.formValue("lastEventId", request)
            let events = store.events.subscribeAll(lastEventID: lastEventID) { store.listing(id: $0)?.message }
            // A comment line when nothing else was sent for a while, so proxies and clients
            // see a live connection (default 15 s; `keepalive=D`, at least 100ms).
            let interval = SinkAPI.formValue("keepalive", request).flatMap(Quantity.duration).map { max($0, 0.1) } ?? keepAliveSeconds
            let (stream, continuation) = AsyncStream<SinkEvent?>.makeStream(bufferingPolicy: .bufferingNewest(10_000))
            let forward = Task {
                for await event in events { continuation.yield(event) }
                continuation.finish()
            }
            let ticker = Task {
                while !Task.isCancelled {
                    try? await Task.sleep(for: .seconds(interval))
                    continuation.yield(nil)
                }
            }
            let encoder = JSONEncoder()
            return Response(
                status: .ok,
                headers: [.contentType: "text/event-stream", .cacheControl: "no-cache"],
                body: .init { writer in
                    defer {
                        forward.cancel()
                        ticker.cancel()
                    }
                    try await writer.write(ByteBuffer(string: ": connected\n\n"))
                    // The stream is endless: a graceful shutdown ends it.
                    do {
                        for try await item in stream.cancelOnGracefulShutdown() {
                            guard let event = item else {
                                try await writer.write(ByteBuffer(string: ": keep-alive\n\n"))
                                continue
                            }
                            switch event {
                            case .message(let message), .dropped(let message):
                                if let mailbox, !MailboxFiling.names(for: message).contains(mailbox) { continue }
                            case .fault:
                                // Faults belong to sessions, not mailboxes.
                                if mailbox != nil { continue }
                            case .relay(let relay):
                                if let mailbox, !relay.mailboxes.contains(mailbox) { continue }
                            }
                            let (kind, data) = try event.encoded(encoder)
                            try await writer.write(sse(kind, id: event.id, data: data))
                        }
                    } catch is CancellationError {}
                    try await writer.finish(nil)
                }
            )
        }

        router.get("/api/v1/wait") { request, _ -> Response in
            try await WaitRoute.handle(request, store: store)
        }

        // The attempts to deliver a message's event to each --webhook, oldest first.
        router.get("/api/v1/message/:id/webhooks") { request, context -> Response in
            let listing = try await SinkAPI.resolve(context.parameters.require("id"), request: request, store: store)
            return try SinkAPI.json(["deliveries": sink.webhooks?.attempts(messageID: listing.message.id) ?? []])
        }

        router.get("/api/v1/stats") { request, _ -> Response in
            if let mailbox = request.uri.queryParameters.get("mailbox") {
                return try await mailboxStats(mailbox, sink: sink)
            }
            let stored = store.counts()
            let counts = sink.metrics.counts.withLock { $0 }
            let stats: [String: AnyEncodable] = [
                "messages": AnyEncodable(stored.total),
                // Since the start: with `messages`, every accepted message is accounted for.
                "evicted": AnyEncodable(store.removedCounts.evicted),
                "deleted": AnyEncodable(store.removedCounts.deleted),
                // Removed by a mailbox's TTL or --max-age.
                "expired": AnyEncodable(store.removedCounts.expired),
                // Per mailbox (at most --metrics-mailboxes names, the rest as "other").
                "mailboxes": AnyEncodable(
                    Dictionary(
                        uniqueKeysWithValues: store.mailboxCounts(limit: sink.configuration.metricsMailboxes).map {
                            ($0.name, ["messages": $0.messages, "evicted": $0.evicted])
                        })),
                "unread": AnyEncodable(stored.unread),
                "openConnections": AnyEncodable(sink.openConnections),
                "smtp": AnyEncodable(counts),
                "faults": AnyEncodable(sink.faults.firedCounts),
                // The delivery audit: attempts and deliveries kept, attempts dropped by
                // --max-attempts, and deliveries flagged by each audit flag.
                "deliveries": AnyEncodable(sink.audit.attempts.counts),
                "eventReplay": AnyEncodable([
                    "capacity": AnyEncodable(store.events.replayCapacity),
                    "held": AnyEncodable(store.events.replayHeld.count),
                    "oldest": AnyEncodable(store.events.replayHeld.oldest),
                ]),
                "uptimeSeconds": AnyEncodable(Date().timeIntervalSince(started)),
                // Per --webhook: {URL, Delivered, Retried, Failed, Dropped, Pending}.
                "webhooks": AnyEncodable(sink.webhooks?.counts ?? []),
                // Why storage is failing (null when healthy), and its failures so far.
                "degraded": AnyEncodable(Nullable<String>(store.health.degraded)),
                "storageErrors": AnyEncodable(store.health.errorCounts),
                "acceptedPerSecond": AnyEncodable([
                    "last1s": counts.rate(over: 1, now: WallClock.nanos() / 1_000_000_000),
                    "last10s": counts.rate(over: 10, now: WallClock.nanos() / 1_000_000_000),
                    "last60s": counts.rate(over: 60, now: WallClock.nanos() / 1_000_000_000),
                ]),
            ]
            return try SinkAPI.json(stats, sortedKeys: true)
        }

        router.get("/metrics") { _, _ -> Response in
            Response(
                status: .ok,
                headers: [.contentType: "text/plain; version=0.0.4; charset=utf-8"],
                body: .init(byteBuffer: ByteBuffer(bytes: sink.metricsText()))
            )
        }
    }

    /// `/api/v1/stats?mailbox=N` (and every stats request with N's token): N's counts only.
    static func mailboxStats(_ mailbox: String, sink: Sink) async throws -> Response {
        let page = try await sink.store.page(mailbox: mailbox, search: nil, start: 0, limit: 1)
        let record = sink.store.mailboxes.record(mailbox)
        let stats: [String: AnyEncodable] = [
            "mailbox": AnyEncodable(mailbox),
            "messages": AnyEncodable(page.total),
            "unread": AnyEncodable(page.unread),
            "evicted": AnyEncodable(sink.store.mailboxCounts()[mailbox]?.evicted ?? 0),
            "quota": AnyEncodable(record?.quota ?? sink.store.mailboxes.defaultQuota),
            "ttl": AnyEncodable(record?.ttl ?? ""),
            "faults": AnyEncodable(sink.faults.firedCounts(mailbox: mailbox)),
            // Its deliveries kept, and how many of them carry each audit flag.
            "deliveries": AnyEncodable(sink.audit.attempts.counts(mailbox: mailbox)),
        ]
        return try SinkAPI.json(stats, sortedKeys: true)
    }

    /// One server-sent event.
    static func sse(_ kind: String, id: String?, data: Data) -> ByteBuffer {
        var buffer = ByteBuffer(string: "event: \(kind)\n")
        if let id { buffer.writeString("id: \(id)\n") }
        buffer.writeString("data: ")
        buffer.writeBytes(data)
        buffer.writeString("\n\n")
        return buffer
    }
}
