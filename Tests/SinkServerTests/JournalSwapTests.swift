import Foundation
import Synchronization
import Testing

@testable import SinkServer

#if canImport(Glibc)
    import Glibc
#endif

/// The journal's compaction while the sink appends: only the file swap holds the append lock.
@Suite("Journal compaction beside appends")
struct JournalSwapTests {
    @Test("lines appended while the compacted file is written are kept after it, in order, deletions included; appends then go to the new file")
    func appendsDuringCompaction() throws {
        let directory = NSTemporaryDirectory() + "swallow-swap-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let path = directory + "/metadata.jsonl"
        // 10 001 messages, all but the last deleted: dead lines far outnumber the live one.
        var journal = (0...10_000).map { #"{"id":"M\#($0)"}"# }.joined(separator: "\n") + "\n"
        journal += String(decoding: DiskStore.deletionLine((0..<10_000).map { "M\($0)" }), as: UTF8.self)
        try Data(journal.utf8).write(to: URL(fileURLWithPath: path))
        let descriptor = open(path, O_WRONLY | O_APPEND | O_CLOEXEC)
        let directoryDescriptor = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        defer {
            close(descriptor)
            close(directoryDescriptor)
        }
        func append(_ text: String) {
            _ = text.utf8CString.withUnsafeBufferPointer { Glibc.write(descriptor, $0.baseAddress, $0.count - 1) }
        }
        let lock = Mutex(())
        let result = try JournalCompaction.compactIfWorthwhile(
            path: path, descriptor: descriptor, directoryDescriptor: directoryDescriptor, lock: lock
        ) {
            // What the sink appends while the compacted file is being written.
            append(#"{"id":"N1"}"# + "\n" + #"{"deleted":["M10000"]}"# + "\n")
        }
        #expect(result.lines == 3)
        append(#"{"id":"N2"}"# + "\n")
        let after = try String(contentsOfFile: path, encoding: .utf8)
        #expect(after == [#"{"id":"M10000"}"#, #"{"id":"N1"}"#, #"{"deleted":["M10000"]}"#, #"{"id":"N2"}"#].joined(separator: "\n") + "\n")
        #expect(JournalCompaction.liveIDs(Data(after.utf8)) == ["N1", "N2"])
        #expect(!FileManager.default.fileExists(atPath: path + ".compacting"))
    }
}
