import Foundation
import SwallowTestSupport
import Testing

@testable import SinkServer

@Suite("Mailpit search queries")
struct SearchQueryTests {
    static func utc(_ text: String) -> Date {
        ISO8601DateFormatter().date(from: text)!
    }

    @Test(
        "after:/before: dates in every accepted form",
        arguments: [
            ("2026-11-24", "2026-11-24T00:00:00Z"),
            ("2026-11-24T10:30:05", "2026-11-24T10:30:05Z"),
            ("2026-11-24 10:30:05", "2026-11-24T10:30:05Z"),
            ("2026-11-24T10:30:05Z", "2026-11-24T10:30:05Z"),
            ("2026-11-24T10:30:05+01:00", "2026-11-24T09:30:05Z"),
            ("2026-11-24T10:30:05-02:30", "2026-11-24T13:00:05Z"),
            ("11/24/2026", "2026-11-24T00:00:00Z"),
            ("24-Nov-2026", "2026-11-24T00:00:00Z"),
            ("Tue, 24 Nov 2026 10:30:05 +0000", "2026-11-24T10:30:05Z"),
        ])
    func dates(_ input: String, _ expected: String) throws {
        #expect(SearchQuery.parseDate(input) == Self.utc(expected))
    }

    @Test(
        "sizes too large, negative or not numbers are refused, never a crash",
        arguments: [
            // Found by Fuzz/FuzzSearch: Int(Double) trapped past Int.max (a crash of the sink).
            "smaller:" + String(repeating: "1", count: 60), "larger:1e400", "larger:1e300K", "larger:nan", "larger:inf", "smaller:-5K",
        ])
    func hostileSizes(_ query: String) {
        #expect(throws: (any Error).self) { try SearchQuery(query) }
    }

    @Test("sizes in their units", arguments: [("2M", 2 * 1024 * 1024), ("500K", 500 * 1024), ("1.5kb", 1536), ("200", 200), ("0b", 0)])
    func sizes(_ text: String, _ bytes: Int) {
        #expect(SearchQuery.parseSize(text) == bytes)
    }

    @Test(
        "impossible or hostile dates are refused, never a crash",
        arguments: [
            "2026-13-01", "2026-02-30", "2026-11-24T25:00:00", "2026-11-24T10:00:00+1", "2026-11-24X", "13/45/2026", "24-Foo-2026",
            // Found by Fuzz/FuzzSearch: DateFormatter trapped on the combining mark (a crash of the sink).
            "1\u{307} -\u{1f}1 0", "2026\u{307}-11-24", "",
        ])
    func refused(_ input: String) {
        #expect(SearchQuery.parseDate(input) == nil)
    }

    @Test("the fuzzer's crashing query is a 400-style error, not a trap")
    func fuzzerInput() {
        #expect(throws: SearchQuery.Invalid.self) { try SearchQuery("t before:\"1\u{307} -\u{1f}1 0\"") }
    }
}
