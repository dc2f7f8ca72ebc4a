import Foundation
import HTTPTypes
import Hummingbird
import HummingbirdTesting
import NIOCore
import SwallowTestSupport
import Testing

@testable import SinkServer

/// The HTTP API's shapes through HummingbirdTesting's router client: no HTTP socket, no curl.
/// Mail arrives through the sink's own SMTP session (`submitLocally`, a socket pair), so these
/// need no peer; `HTTPAPITests` checks the same routes over real HTTP with curl and smtplib.
@Suite("HTTP API shapes, through the router")
struct APIRouterTests {
    static let corpus = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("shared/corpus").path

    /// A sink holding `files` from the corpus (sent in order), and its API as a router-tested app.
    static func withAPI(
        _ files: [String], _ body: @Sendable (Sink, any TestClientProtocol) async throws -> Void
    ) async throws {
        let sink = try await bindTestSink { _ in }
        defer { sink.shutdown() }
        for file in files {
            let bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: corpus + "/" + file)))
            let outcome = try await sink.submitLocally(sender: "app@bank.example", recipients: ["app+ci@example.com"], message: bytes)
            #expect(outcome.storedID != nil, "\(file): \(outcome.replies)")
        }
        let app = Application(router: SinkAPI.router(for: sink))
        try await app.test(.router) { client in try await body(sink, client) }
    }

    static func object(_ response: TestResponse) throws -> [String: Any] {
        try #require(try JSONSerialization.jsonObject(with: Data(response.body.readableBytesView)) as? [String: Any])
    }

    @Test("Mailpit's list, search, message, headers and raw: keys, counts and content types")
    func mailpit() async throws {
        try await Self.withAPI(["02-otp-alternative.eml", "03-invoice-pdf.eml", "04-utf8-subject-and-name.eml"]) { _, client in
            let list = try await client.execute(uri: "/api/v1/messages?limit=2", method: .get)
            #expect(list.status == .ok)
            let summary = try Self.object(list)
            for key in ["total", "unread", "count", "messages_count", "messages_unread", "start", "tags", "messages"] {
                #expect(summary[key] != nil, "MessagesSummary key \(key)")
            }
            #expect(summary["total"] as? Int == 3 && summary["count"] as? Int == 2)
            let first = try #require((summary["messages"] as? [[String: Any]])?.first)
            for key in [
                "ID", "MessageID", "Read", "From", "To", "Cc", "Bcc", "ReplyTo", "Subject", "Created", "Tags", "Size", "Attachments", "Snippet",
            ] {
                #expect(first[key] != nil, "message summary key \(key)")
            }
            #expect(first["Subject"] as? String == "Pesanan Anda telah dikirim — été ☃", "newest first, RFC 2047 decoded")

            let search = try Self.object(try await client.execute(uri: "/api/v1/search?query=has:attachment", method: .get))
            #expect(search["messages_count"] as? Int == 1 && search["total"] as? Int == 3)
            let id = try #require((search["messages"] as? [[String: Any]])?.first?["ID"] as? String)

            let message = try Self.object(try await client.execute(uri: "/api/v1/message/\(id)", method: .get))
            #expect(message["Subject"] as? String == "Invoice INV-2026-0042")
            #expect(message["Read"] as? Bool == true)
            #expect((message["Attachments"] as? [[String: Any]])?.first?["ContentType"] as? String == "application/pdf")

            let headers = try Self.object(try await client.execute(uri: "/api/v1/message/\(id)/headers", method: .get))
            #expect(headers["Subject"] as? [String] == ["Invoice INV-2026-0042"])

            let raw = try await client.execute(uri: "/api/v1/message/\(id)/raw", method: .get)
            #expect(raw.headers[.contentType]?.hasPrefix("text/plain") == true)
            #expect(raw.headers[HTTPField.Name("X-Content-Type-Options")!] == "nosniff")
            #expect(String(buffer: raw.body).contains("Subject: Invoice INV-2026-0042"))
        }
    }

    @Test("Mailpit's errors: an empty search is 400, an unknown ID 404, a malformed delete body 400")
    func mailpitErrors() async throws {
        try await Self.withAPI(["01-otp-plain.eml"]) { sink, client in
            #expect(try await client.execute(uri: "/api/v1/search?query=", method: .get).status == .badRequest)
            #expect(try await client.execute(uri: "/api/v1/message/nope", method: .get).status == .notFound)
            let bad = try await client.execute(uri: "/api/v1/messages", method: .delete, body: ByteBuffer(string: "{not json"))
            #expect(bad.status == .badRequest)
            #expect(sink.store.messages().count == 1)
            #expect(try await client.execute(uri: "/api/v1/messages", method: .delete).status == .ok)
            #expect(sink.store.messages().isEmpty)
        }
    }

    @Test("MailHog v2: list and search in its shapes, text/json")
    func mailHog() async throws {
        try await Self.withAPI(["01-otp-plain.eml", "03-invoice-pdf.eml"]) { _, client in
            let response = try await client.execute(uri: "/api/v2/messages?limit=1", method: .get)
            #expect(response.headers[.contentType]?.hasPrefix("text/json") == true)
            let list = try Self.object(response)
            #expect(list["total"] as? Int == 2 && list["count"] as? Int == 1 && list["start"] as? Int == 0)
            let item = try #require((list["items"] as? [[String: Any]])?.first)
            for key in ["ID", "From", "To", "Content", "Created", "MIME", "Raw"] {
                #expect(item[key] != nil, "MailHog message key \(key)")
            }
            #expect((item["From"] as? [String: Any])?["Domain"] as? String == "bank.example")
            let search = try Self.object(try await client.execute(uri: "/api/v2/search?kind=containing&query=482913", method: .get))
            #expect(search["total"] as? Int == 1)
            #expect(try await client.execute(uri: "/api/v2/search?kind=nope&query=x", method: .get).status == .badRequest)
        }
    }
}
