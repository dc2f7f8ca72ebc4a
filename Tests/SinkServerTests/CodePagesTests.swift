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

    /// Resident KiB of read-only file mappings that hold no page of their own (read to the end
    /// with `FileHandle`: `String(contentsOfFile:)` read only the first page of `/proc` files).
    static func readOnlyFileKiB() throws -> Int {
        let smaps = String(decoding: try #require(FileHandle(forReadingAtPath: "/proc/self/smaps")).readDataToEndOfFile(), as: UTF8.self).split(
            separator: "\n")
        var total = 0
        var current: (readOnlyFile: Bool, rss: Int)?
        for line in smaps {
            let fields = line.split(separator: " ", omittingEmptySubsequences: true)
            if let first = fields.first, first.contains("-"), fields.count >= 6 {
                current = (fields[1] == "r--p" && fields[5].hasPrefix("/"), 0)
            } else if fields.first == "Rss:", let value = Int(fields[1]) {
                current?.rss = value
            } else if fields.first == "Anonymous:", fields.count > 1, fields[1] == "0", let mapping = current, mapping.readOnlyFile {
                total += mapping.rss
            }
        }
        return total
    }

    @Test(
        "read-only data without a relocated page goes too (a mapping with one is kept whole)",
        .enabled(if: FileManager.default.fileExists(atPath: "/proc/self/smaps")))
    func readOnlyData() throws {
        let before = try Self.readOnlyFileKiB()
        _ = swallow_release_code_pages()
        let after = try Self.readOnlyFileKiB()
        #expect(before > 0, "the test process maps read-only data")
        #expect(after < before, "resident read-only file pages \(before) KiB -> \(after) KiB")
    }

    @Test("the process's resident set and CPU time read back, and grow with use")
    func residentAndCPU() {
        let resident = swallow_resident_bytes()
        let cpu = swallow_process_cpu_nanos()
        #expect(resident > 1 << 20)
        #expect(cpu > 0)
        var sum = 0
        for index in 0..<2_000_000 { sum &+= index &* index }
        #expect(sum != 1)
        #expect(swallow_process_cpu_nanos() > cpu)
    }
}
