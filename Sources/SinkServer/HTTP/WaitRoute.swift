import Foundation
import Hummingbird
import MailMessage

/// `GET /api/v1/wait?query=Q&timeout=5s[&mailbox=NAME][&extract=REGEX]`: answers as soon as a
/// message matching the Mailpit-syntax query is captured (at once if one already is; the
/// newest then), with its summary (Mailpit's list shape), its links, and the values the
/// `extract` regular expression finds in its subject and text (its first capture group when it
/// has one; by default 4 to 8 digit codes). 408 when the time runs out. The client waits on one
/// request: no polling.
enum WaitRoute {
    struct Answer: Encodable {
        var message: MailpitJSON.MessageSummary
        var links: [String]
        var extracted: [String]

        enum CodingKeys: String, CodingKey {
            case message = "Message", links = "Links", extracted = "Extracted"
        }
    }

    static let maxTimeout = 300.0
    static let defaultExtract = #"\b(\d{4,8})\b"#

    static func handle(_ request: Request, store: MessageStore) async throws -> Response {
        let parameters = request.uri.queryParameters
        let text = SinkAPI.formValue("query", request) ?? ""
        let search = text.trimmingCharacters(in: .whitespaces).isEmpty ? nil : try SinkAPI.searchQuery(text)
        let mailbox = parameters.get("mailbox")
        let timeout = try parameters.get("timeout").map(duration) ?? 5
        let pattern = SinkAPI.formValue("extract", request) ?? defaultExtract
        let extract: Regex<AnyRegexOutput>
        do {
            extract = try Regex(pattern)
        } catch {
            throw HTTPError(.badRequest, message: "extract: not a regular expression: \(error)")
        }
        // Subscribe before looking, so a message captured in between is not missed.
        let events = store.events.subscribe()
        if let found = await store.page(mailbox: mailbox, search: search, start: 0, limit: 1).items.first {
            return try await answer(found.listing, found.summary, store: store, extract: extract)
        }
        let match: MessageStore.Listing? = await withTaskGroup(of: MessageStore.Listing?.self) { group in
            group.addTask {
                for await message in events {
                    if let mailbox, !Mailboxes.names(for: message).contains(mailbox) { continue }
                    guard let listing = store.listing(id: message.id) else { continue }
                    if let search {
                        guard let summary = await store.summary(id: message.id),
                              search.matches(summary, read: listing.read, tags: listing.tags) else { continue }
                    }
                    return listing
                }
                return nil
            }
            group.addTask {
                try? await Task.sleep(for: .seconds(timeout))
                return nil
            }
            let first = await group.next() ?? nil
            group.cancelAll()
            return first
        }
        guard let match, let summary = await store.summary(id: match.message.id) else {
            let what = text.isEmpty ? "no message" : "no message matching \(text)"
            return try SinkAPI.json(["Error": "\(what) was captured within \(timeout >= 1 ? String(format: "%gs", timeout) : String(format: "%gms", timeout * 1000))"], status: .requestTimeout)
        }
        return try await answer(match, summary, store: store, extract: extract)
    }

    private static func answer(_ listing: MessageStore.Listing, _ summary: MessageSummary, store: MessageStore,
                               extract: Regex<AnyRegexOutput>) async throws -> Response {
        let parsed = try await store.parsed(id: listing.message.id)
        var extracted: [String] = []
        for source in [summary.subject, parsed?.text ?? ""] {
            for match in source.matches(of: extract) {
                let value = match.output.count > 1 ? match.output[1].substring.map(String.init) : String(source[match.range])
                if let value, !extracted.contains(value) { extracted.append(value) }
            }
        }
        return try SinkAPI.json(Answer(
            message: MailpitJSON.MessageSummary(summary, listing: listing),
            links: parsed?.links ?? [],
            extracted: extracted
        ))
    }

    /// `5s`, `500ms`, `1m`, or seconds.
    static func duration(_ text: String) throws -> Double {
        let value: Double? = if let seconds = Double(text) {
            seconds
        } else if text.hasSuffix("ms") {
            Double(text.dropLast(2)).map { $0 / 1000 }
        } else if text.hasSuffix("s") {
            Double(text.dropLast())
        } else if text.hasSuffix("m") {
            Double(text.dropLast()).map { $0 * 60 }
        } else {
            nil
        }
        guard let value, value >= 0, value <= maxTimeout else {
            throw HTTPError(.badRequest, message: "timeout: expected a duration such as 5s or 500ms, at most 300s")
        }
        return value
    }
}

