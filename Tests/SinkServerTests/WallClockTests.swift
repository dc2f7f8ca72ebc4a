import Foundation
import Testing

@testable import SinkServer

@Suite("Wall-clock formats")
struct WallClockTests {
    @Test("RFC 3339 with milliseconds, UTC: as Foundation's ISO8601DateFormatter writes it")
    func rfc3339() {
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        formatter.timeZone = TimeZone(secondsFromGMT: 0)
        var generator = SystemRandomNumberGenerator()
        let instants: [Int64] =
            [0, 1_000_000, 999_999_999, 1_796_392_444_158_000_000, 4_102_444_799_999_000_000, 951_782_400_000_000_000]
            + (0..<200).map { _ in Int64.random(in: 0...4_102_444_799, using: &generator) * 1_000_000_000 + Int64.random(in: 0...999) * 1_000_000 }
        for nanos in instants {
            let date = Date(timeIntervalSince1970: Double(nanos / 1_000_000) / 1000)
            #expect(WallClock.rfc3339(nanos: nanos) == formatter.string(from: date), "\(nanos)")
        }
        #expect(WallClock.rfc3339(nanos: 1_796_399_644_158_765_432) == "2026-12-04T15:54:04.158Z")
    }
}
