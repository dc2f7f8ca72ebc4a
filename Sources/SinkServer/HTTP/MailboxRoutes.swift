import Foundation
import Hummingbird

/// Mailboxes as resources, for CI jobs sharing one sink:
///
/// - `POST /api/v1/mailboxes` with an optional `{"Name", "Quota", "TTL"}` → `201`
///   `{"Name", "Token", "Quota", "TTL", "Created"}`; `409` for a name in use, `400` naming a bad field.
/// - `GET /api/v1/mailboxes` → `{"mailboxes": [{"Name", "Quota", "TTL", "Messages", "Created"}]}`
///   (created mailboxes; mail filed under a name never created is listed by `?mailbox=` only).
/// - `GET` and `DELETE /api/v1/mailboxes/{Name}`: one mailbox; deleting it deletes its
///   messages and its fault rules, and its token stops working.
///
/// A mailbox token may read and delete its own mailbox only (another is `404` to it) and may
/// neither list nor create mailboxes (`403`).
enum MailboxRoutes {
    struct Created: Encodable {
        var name: String
        var token: String
        var quota: Int
        var ttl: String
        var created: Date

        enum CodingKeys: String, CodingKey {
            case name = "Name", token = "Token", quota = "Quota", ttl = "TTL", created = "Created"
        }
    }

    struct Listed: Encodable {
        var name: String
        var quota: Int
        var ttl: String
        var messages: Int
        var created: Date

        enum CodingKeys: String, CodingKey {
            case name = "Name", quota = "Quota", ttl = "TTL", messages = "Messages", created = "Created"
        }
    }

    static func add(to router: Router<BasicRequestContext>, sink: Sink) {
        let store = sink.store
        let registry = store.mailboxes

        @Sendable func listed(_ record: MailboxRegistry.Record) -> Listed {
            Listed(
                name: record.name, quota: record.quota ?? registry.defaultQuota, ttl: record.ttl ?? "",
                messages: store.messageCount(mailbox: record.name), created: record.created
            )
        }

        /// The named mailbox, if it exists and the caller may see it.
        @Sendable func visible(_ name: String) throws -> MailboxRegistry.Record {
            if let scope = APIScope.mailbox, scope != name { throw HTTPError(.notFound, message: "unknown mailbox \(name)") }
            guard let record = registry.record(name) else { throw HTTPError(.notFound, message: "unknown mailbox \(name)") }
            return record
        }

        router.post("/api/v1/mailboxes") { request, _ -> Response in
            guard APIScope.mailbox == nil else { throw HTTPError(.forbidden, message: "a mailbox token cannot create mailboxes") }
            var request = request
            let body = try await request.collectBody(upTo: SinkAPI.maxBodyBytes)
            let (name, quota, ttl) = try parseCreate(body)
            let record: MailboxRegistry.Record
            do {
                record = try registry.create(name: name, quota: quota, ttl: ttl)
            } catch MailboxRegistry.CreateError.invalid(let invalid) {
                throw HTTPError(.badRequest, message: invalid.description)
            } catch {
                throw HTTPError(.conflict, message: "mailbox \(name ?? "") exists")
            }
            let created = Created(
                name: record.name, token: record.token, quota: record.quota ?? registry.defaultQuota, ttl: record.ttl ?? "",
                created: record.created
            )
            return try SinkAPI.json(created, status: .created)
        }

        router.get("/api/v1/mailboxes") { _, _ -> Response in
            guard APIScope.mailbox == nil else { throw HTTPError(.forbidden, message: "a mailbox token cannot list mailboxes") }
            return try SinkAPI.json(["mailboxes": registry.records.map(listed)])
        }

        router.get("/api/v1/mailboxes/:name") { _, context -> Response in
            try SinkAPI.json(listed(try visible(try context.parameters.require("name"))))
        }

        router.delete("/api/v1/mailboxes/:name") { _, context -> Response in
            let record = try visible(try context.parameters.require("name"))
            registry.remove(record.name)
            sink.faults.removeMailbox(record.name)
            store.delete(ids: store.ids(inMailbox: record.name))
            return SinkAPI.plain("ok")
        }
    }

    /// `{"Name": "job-42", "Quota": 1000, "TTL": "1h"}`, every field optional (keys matched
    /// case-insensitively); an empty body is all defaults. `TTL` may also be seconds as a number.
    static func parseCreate(_ body: ByteBuffer) throws -> (name: String?, quota: Int?, ttl: String?) {
        guard !String(buffer: body).trimmingCharacters(in: .whitespacesAndNewlines).isEmpty else { return (nil, nil, nil) }
        do {
            let request = try JSONDecoder().decode(CreateRequest.self, from: Data(body.readableBytesView))
            return (request.name, request.quota, request.ttl)
        } catch let error as HTTPError {
            throw error
        } catch {
            throw HTTPError(.badRequest, message: "invalid JSON body: expected {\"Name\", \"Quota\", \"TTL\"}")
        }
    }

    struct CreateRequest: Decodable {
        var name: String?
        var quota: Int?
        var ttl: String?

        struct Key: CodingKey {
            var stringValue: String
            var intValue: Int? { nil }
            init(stringValue: String) { self.stringValue = stringValue }
            init?(intValue: Int) { nil }
        }

        init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: Key.self)
            for key in container.allKeys {
                if try container.decodeNil(forKey: key) { continue }
                switch key.stringValue.lowercased() {
                case "name":
                    guard let value = try? container.decode(String.self, forKey: key) else {
                        throw HTTPError(.badRequest, message: "Name: expected a string")
                    }
                    name = value
                case "quota":
                    guard let value = try? container.decode(Int.self, forKey: key) else {
                        throw HTTPError(.badRequest, message: "Quota: expected a whole number")
                    }
                    quota = value
                case "ttl":
                    if let value = try? container.decode(String.self, forKey: key) {
                        ttl = value
                    } else if let seconds = try? container.decode(Double.self, forKey: key) {
                        ttl = "\(seconds)s"
                    } else {
                        throw HTTPError(.badRequest, message: "TTL: expected a duration such as 30m or 1h")
                    }
                default:
                    throw HTTPError(.badRequest, message: "\(key.stringValue): unknown field (expected Name, Quota, TTL)")
                }
            }
        }
    }
}
