import CSwallowSystem
import Foundation
import Testing

@Suite("Releasing code pages after start-up")
struct CodePagesTests {
    static func residentFileKiB() throws -> Int {
        let status = try String(contentsOfFile: "/proc/self/status", encoding: .utf8)
        let line = try #require(status.split(separator: "\n").first { $0.hasPrefix("RssFile:") })
        return try #require(Int(line.split(separator: " ", omittingEmptySubsequences: true)[1]))
    }

    @Test(
        "swallow_release_code_pages drops resident code mappings, and the code still runs",
        .enabled(if: FileManager.default.fileExists(atPath: "/proc/self/smaps")))
    func releases() throws {
        let before = try Self.residentFileKiB()
        let advised = swallow_release_code_pages()
        let after = try Self.residentFileKiB()
        #expect(advised > 0, "the test binary has code mappings")
        #expect(after < before, "resident file pages \(before) KiB -> \(after) KiB")
        // Code dropped from the page tables comes back on use.
        let encoded = try JSONEncoder().encode(["still": "running"])
        #expect(String(decoding: encoded, as: UTF8.self) == #"{"still":"running"}"#)
    }
}
