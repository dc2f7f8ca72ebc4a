import Foundation
import Hummingbird
import MailMessage
import SMTPProtocol

/// Mailpit's release: `POST /api/v1/message/{ID}/release` with `{"To": ["a@example.com"]}`
/// sends the stored bytes through `--relay` to those recipients, from the original MAIL FROM.
///
/// `200 ok` when the upstream accepted the message (2xx after the data); `502` with the
/// upstream's reply (or why there was none) when it did not; `400` for no recipient or one that
/// is not an address; `403` for one `--relay-allow`/`--relay-deny` refuses; `404` for an unknown
/// message or one whose body was not stored; `503` without `--relay`.
enum RelayRoutes {
    static func add(to router: Router<BasicRequestContext>, sink: Sink) {
        router.post("/api/v1/message/:id/release") { request, context -> Response in
            var request = request
            let body = try await request.collectBody(upTo: SinkAPI.maxBodyBytes)
            guard let relay = sink.relay else {
                throw HTTPError(.serviceUnavailable, message: "no relay configured: start the sink with --relay smtp://HOST:PORT")
            }
            let listing = try await SinkAPI.resolve(try context.parameters.require("id"), request: request, store: sink.store)
            let fields = try SinkAPI.bodyFields(body)
            let recipients = (fields["to"] ?? []).map { $0.trimmingCharacters(in: .whitespaces) }.filter { !$0.isEmpty }
            guard !recipients.isEmpty else { throw HTTPError(.badRequest, message: "To: at least one recipient address is needed") }
            for recipient in recipients {
                guard (try? Mailbox.parse(Substring(recipient))) != nil else {
                    throw HTTPError(.badRequest, message: "To: not an email address: \(recipient)")
                }
            }
            if let refused = recipients.first(where: { !relay.settings.permits($0) }) {
                throw HTTPError(.forbidden, message: "To: relaying to \(refused) is not allowed (--relay-allow / --relay-deny)")
            }
            guard listing.message.bodyStored else { throw HTTPError(.notFound, message: "Message body not stored (--discard)") }
            let outcome = await relay.handOver(listing.message, to: recipients, kind: "release")
            guard outcome.outcome == "delivered" else {
                throw HTTPError(.badGateway, message: "upstream \(relay.upstream): \(outcome.replyText)")
            }
            return SinkAPI.plain("ok")
        }

        // Mailpit's web UI configuration; its `MessageRelay` tells a UI whether release works.
        router.get("/api/v1/webui") { _, _ -> Response in
            let relay = sink.relay
            let messageRelay: [String: AnyEncodable] = [
                "Enabled": AnyEncodable(relay != nil),
                "SMTPServer": AnyEncodable(relay.map { "\($0.upstream.host):\($0.upstream.port)" } ?? ""),
                "ReturnPath": AnyEncodable(""),
                "AllowedRecipients": AnyEncodable(relay?.settings.allow.map(\.description).joined(separator: ", ") ?? ""),
                "BlockedRecipients": AnyEncodable(relay?.settings.deny.map(\.description).joined(separator: ", ") ?? ""),
                "OverrideFrom": AnyEncodable(""),
                "PreserveMessageIDs": AnyEncodable(true),
                "AutoRelay": AnyEncodable(relay?.settings.automatic ?? false),
            ]
            let webui: [String: AnyEncodable] = [
                "Label": AnyEncodable(""),
                "MessageRelay": AnyEncodable(messageRelay),
                "SpamAssassin": AnyEncodable(false),
                "ChaosEnabled": AnyEncodable(true),
                "DuplicatesIgnored": AnyEncodable(false),
                "HideDeleteAllButton": AnyEncodable(false),
            ]
            return try SinkAPI.json(webui, sortedKeys: true)
        }
    }
}
