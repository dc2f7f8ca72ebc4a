import Foundation
import MailMessage
import SwallowTestSupport
import Testing

@testable import SinkServer

/// One search model, two engines: `SearchQuery` evaluated in Swift over the memory store, and
/// compiled to SQL over the index of `--data`. The same mail, tags and read flags go into a
/// sink of each kind; every query must find the same messages, in the same order, with the
/// same counts.
@Suite("Search parity: memory and the on-disk index", .timeLimit(.minutes(3)))
struct SearchParityTests {
    static let corpus = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("shared/corpus").path

    static let files = [
        "01-otp-plain.eml", "02-otp-alternative.eml", "03-invoice-pdf.eml", "04-utf8-subject-and-name.eml",
        "05-html-inline-image.eml", "06-quoted-printable-long-line.eml", "07-rfc2231-filename.eml",
        "08-calendar-invite.eml", "09-forwarded-rfc822.eml", "10-headers-cc-replyto-trace.eml",
    ]

    static let queries = [
        "", "code", "\"your code\"", "invoice", "-invoice", "été", "subject:invoice", "subject:code -subject:fwd",
        "from:example", "to:example", "cc:example", "bcc:example", "reply-to:example", "addressed:example",
        "message-id:@", "has:attachment", "has:attachments", "-has:attachment", "has:inline", "is:read", "is:unread",
        "is:tagged", "-is:tagged", "tag:ci", "tag:finance", "tag:Finance", "-tag:finance", "tag:urgent is:unread",
        "tag:fin", "larger:2K", "smaller:2K", "larger:1K smaller:3K", "after:2000-01-01", "before:2000-01-01",
        "before:2100-01-01 has:attachment", "100%", "a_b", "pdf", "!code",
    ]

    /// Sends the corpus in order (the recipient's plus tag makes every message tagged `ci`),
    /// then tags the invoices `finance` and every third message `urgent`, and reads every other.
    static func filled(data: String?) async throws -> Sink {
        let sink = try await bindTestSink {
            $0.dataDirectory = data
            $0.tagging.fromPlus = true
        }
        for file in files {
            let bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: corpus + "/" + file)))
            let recipient = file.hasPrefix("0") && Int(file.prefix(2))! % 2 == 0 ? "app+ci@example.com" : "app@example.com"
            let outcome = try await sink.submitLocally(sender: "app@bank.example", recipients: [recipient], message: bytes)
            _ = try #require(outcome.storedID, "\(file): \(outcome.replies)")
        }
        let listings = sink.store.listings().reversed()  // oldest first: the corpus order
        #expect(listings.count == files.count)
        for (number, listing) in listings.enumerated() {
            let summary = try #require(await sink.store.summary(id: listing.message.id))
            if summary.subject.lowercased().contains("invoice") || summary.attachmentCount > 0 {
                _ = sink.store.setTags(listing.tags + ["Finance"], ids: [listing.message.id])
            }
            if number % 3 == 0 {
                let tags = sink.store.listing(id: listing.message.id)?.tags ?? []
                _ = sink.store.setTags(tags + ["urgent"], ids: [listing.message.id])
            }
            if number % 2 == 1 { sink.store.setRead(true, ids: [listing.message.id]) }
        }
        return sink
    }

    struct Answer: Equatable, CustomStringConvertible {
        var subjects: [String]
        var tags: [[String]]
        var total, unread, matches, matchesUnread: Int
        var allTags: [String]
        var description: String {
            "\(matches) of \(total) (\(matchesUnread)/\(unread) unread) \(zip(subjects, tags).map { "\($0) \($1)" }) tags \(allTags)"
        }
    }

    static func answer(_ sink: Sink, _ query: String) async throws -> Answer {
        let search = query.isEmpty ? nil : try SearchQuery(query)
        let page = try await sink.store.page(mailbox: nil, search: search, start: 0, limit: 0)
        return Answer(
            subjects: page.items.map(\.summary.subject), tags: page.items.map(\.listing.tags),
            total: page.total, unread: page.unread, matches: page.matches, matchesUnread: page.matchesUnread,
            allTags: page.tags
        )
    }

    @Test("every Mailpit query, tags and read flags included, finds the same messages in memory and in the index")
    func parity() async throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let memory = try await Self.filled(data: nil)
        defer { memory.shutdown() }
        let disk = try await Self.filled(data: directory)
        defer { disk.shutdown() }
        #expect(disk.store.index != nil && memory.store.index == nil)
        var nonEmpty = 0
        for query in Self.queries {
            let fromMemory = try await Self.answer(memory, query)
            let fromIndex = try await Self.answer(disk, query)
            #expect(fromMemory == fromIndex, "\(query):\n memory \(fromMemory)\n index  \(fromIndex)")
            if fromMemory.matches > 0 && fromMemory.matches < fromMemory.total { nonEmpty += 1 }
        }
        // The queries discriminate: most select some messages and not others.
        #expect(nonEmpty >= Self.queries.count / 2)
        let tagged = try await Self.answer(disk, "tag:finance")
        #expect(tagged.matches >= 1 && tagged.tags.allSatisfy { $0.contains("Finance") })
    }

    @Test("the index answers with a tag or read flag set just before the search (read-your-writes)")
    func readYourWrites() async throws {
        let directory = try temporaryDirectory()
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let sink = try await bindTestSink { $0.dataDirectory = directory }
        defer { sink.shutdown() }
        let bytes = try [UInt8](Data(contentsOf: URL(fileURLWithPath: Self.corpus + "/01-otp-plain.eml")))
        let outcome = try await sink.submitLocally(sender: "app@bank.example", recipients: ["app@example.com"], message: bytes)
        let id = try #require(outcome.storedID)
        // Each change goes through two queues (the disk writer's, then the index's); a search
        // that waited only for the second missed it now and then.
        for round in 0..<200 {
            sink.store.setTags(["round-\(round)"], ids: [id])
            sink.store.setRead(round % 2 == 0, ids: [id])
            let tagged = try await Self.answer(sink, "tag:round-\(round)")
            #expect(tagged.matches == 1, "round \(round): \(tagged)")
            #expect(tagged.unread == (round % 2 == 0 ? 0 : 1), "round \(round): \(tagged)")
            if tagged.matches != 1 { break }
        }
    }
}
