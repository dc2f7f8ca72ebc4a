import Foundation
import Hummingbird
import MailMessage
import SwallowConfig

/// `GET /api/v1/wait?query=Q&timeout=5s[&count=EXPR][&mailbox=NAME][&extract=REGEX]`: waits
/// on the event stream, server side, until the messages matching the Mailpit-syntax query
/// satisfy `count` (default `>=1`), so a client makes one request and never polls.
///
/// `>=N` and `>N` answer as soon as they hold. `==N`, `<=N` and `<N` (say `==0`: "no such
/// mail") are judged when the timeout ends, so everything that arrived in the window counts.
/// The answer: `Holds`, `Count`, `Messages` (the newest 50 matches, Mailpit's list shape), and
/// for the newest match `Message`, its `Links`, and `Extracted` — what `extract` finds in its
/// subject and text (its first capture group when it has one; by default 4 to 8 digit codes).
/// Status 200 when the count holds, 408 when it does not.
enum WaitRoute {
    struct Answer: Encodable {
        var holds: Bool
        var count: Int
        var expected: String
        var messages: [MailpitJSON.MessageSummary]
        var message: MailpitJSON.MessageSummary?
        var links: [String]?
        var extracted: [String]?
        var error: String?

        enum CodingKeys: String, CodingKey {
            case holds = "Holds", count = "Count", expected = "Expected", messages = "Messages", message = "Message"
            case links = "Links", extracted = "Extracted", error = "Error"
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
        guard let expectation = CountExpectation(SinkAPI.formValue("count", request) ?? ">=1") else {
            throw HTTPError(.badRequest, message: "count: expected N, >=N, >N, ==N, <=N or <N")
        }
        let pattern = SinkAPI.formValue("extract", request) ?? defaultExtract
        let extract: Regex<AnyRegexOutput>
        do {
            extract = try Regex(pattern)
        } catch {
            throw HTTPError(.badRequest, message: "extract: not a regular expression: \(error)")
        }
        // Subscribe before counting, so a message captured in between is not missed.
        let events = store.events.subscribe()
        let initial = try await store.page(mailbox: mailbox, search: search, start: 0, limit: 1).matches
        if !(expectation.isLowerBound && expectation.holds(initial)) {
            let target = expectation
            await withTaskGroup(of: Void.self) { group in
                if target.isLowerBound {
                    group.addTask {
                        var count = initial
                        for await message in events {
                            if let mailbox, !MailboxFiling.names(for: message).contains(mailbox) { continue }
                            guard let listing = store.listing(id: message.id) else { continue }
                            if let search {
                                guard let summary = await store.summary(id: message.id),
                                    search.matches(summary, read: listing.read, tags: listing.tags)
                                else { continue }
                            }
                            count += 1
                            if target.holds(count) { return }
                        }
                    }
                }
                group.addTask { try? await Task.sleep(for: .seconds(timeout)) }
                await group.next()
                group.cancelAll()
            }
        }
        let page = try await store.page(mailbox: mailbox, search: search, start: 0, limit: 50)
        var answer = Answer(
            holds: expectation.holds(page.matches), count: page.matches, expected: expectation.description,
            messages: page.items.map { MailpitJSON.MessageSummary($0.summary, listing: $0.listing) }
        )
        if let newest = page.items.first {
            let parsed = try await store.parsed(id: newest.listing.message.id)
            var extracted: [String] = []
            for source in [newest.summary.subject, parsed?.text ?? ""] {
                for match in source.matches(of: extract) {
                    let value = match.output.count > 1 ? match.output[1].substring.map(String.init) : String(source[match.range])
                    if let value, !extracted.contains(value) { extracted.append(value) }
                }
            }
            answer.message = MailpitJSON.MessageSummary(newest.summary, listing: newest.listing)
            answer.links = parsed?.links ?? []
            answer.extracted = extracted
        }
        if !answer.holds {
            let what = text.isEmpty ? "messages" : "messages matching \(text)"
            let window = timeout >= 1 ? String(format: "%gs", timeout) : String(format: "%gms", timeout * 1000)
            answer.error = "expected \(expectation.description) \(what) within \(window), found \(page.matches)"
        }
        return try SinkAPI.json(answer, status: answer.holds ? .ok : .requestTimeout)
    }

    /// `5s`, `500ms`, `1m`, or seconds.
    static func duration(_ text: String) throws -> Double {
        let value = Double(text) ?? Quantity.duration(text)
        guard let value, value >= 0, value <= maxTimeout else {
            throw HTTPError(.badRequest, message: "timeout: expected a duration such as 5s or 500ms, at most 300s")
        }
        return value
    }
}
