import Foundation
import Hummingbird

/// Mailpit's tag routes: list the tags in use, set a message's tags, rename and remove a tag.
/// Tag names are checked as `Tagging.validName` does (a control character or comma is a 400).
enum TagRoutes {
    static func add(to router: Router<BasicRequestContext>, store: MessageStore) {
        // The tags in use, sorted; Mailpit's shape is a bare JSON array.
        router.get("/api/v1/tags") { _, _ -> Response in
            try SinkAPI.json(store.tagCounts().map(\.tag))
        }

        // `{"Tags": [...], "IDs": [...]}`: the messages get exactly these tags ([] removes all).
        router.put("/api/v1/tags") { request, _ -> Response in
            var request = request
            let fields = try SinkAPI.bodyFields(try await request.collectBody(upTo: SinkAPI.maxBodyBytes))
            guard let ids = fields["ids"], !ids.isEmpty else {
                throw HTTPError(.badRequest, message: "IDs: at least one message ID is needed")
            }
            let tags = try (fields["tags"] ?? []).map { try validTag($0, field: "Tags") }
            store.setTags(tags, ids: ids)
            return SinkAPI.plain("ok")
        }

        // `{"Name": "new"}`: renames the tag on every message (merging with one of that name).
        router.put("/api/v1/tags/:tag") { request, context -> Response in
            var request = request
            let old = try context.parameters.require("tag")
            let fields = try SinkAPI.bodyFields(try await request.collectBody(upTo: SinkAPI.maxBodyBytes))
            guard let name = fields["name"]?.first else { throw HTTPError(.badRequest, message: "Name: the new tag name is needed") }
            let new = try validTag(name, field: "Name")
            guard store.renameTag(old, to: new) > 0 else { throw HTTPError(.notFound, message: "tag not found: \(old)") }
            return SinkAPI.plain("ok")
        }

        // Removes the tag from every message (none carrying it is not an error).
        router.delete("/api/v1/tags/:tag") { _, context -> Response in
            store.removeTag(try context.parameters.require("tag"))
            return SinkAPI.plain("ok")
        }
    }

    static func validTag(_ name: String, field: String) throws -> String {
        guard let valid = Tagging.validName(name) else {
            throw HTTPError(
                .badRequest, message: "\(field): invalid tag name \(name.debugDescription) (1 to 100 characters, no control characters or commas)")
        }
        return valid
    }
}
