import Foundation

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// `metadata.jsonl` only grows: an evicted or deleted message leaves its line and a deletion
/// record behind. When such dead lines outnumber the live ones (and there are at least
/// `minimumDeadLines`), the journal is rewritten with the live lines only, byte for byte, in
/// their order: a new file is written and synced, renamed over the old one, and the directory
/// synced, so a crash at any point leaves one complete journal.
enum JournalCompaction {
    static let minimumDeadLines = 10_000

    struct Scan {
        /// Byte ranges of the live message lines, in journal order.
        var live: [Range<Int>]
        var lines: Int
        var dead: Int { lines - live.count }
    }

    /// Which lines still describe a stored message. Message lines are recognised by the
    /// `{"id":"...` that both JSON writers put first; anything else is decoded.
    static func scan(_ journal: Data) -> Scan {
        let (latest, ranges) = latestLines(journal)
        return Scan(live: latest.values.sorted().map { ranges[$0] }, lines: ranges.count)
    }

    /// The ids of the messages the journal describes and no later line deleted.
    static func liveIDs(_ journal: Data) -> Set<String> {
        Set(latestLines(journal).latest.keys)
    }

    /// Each live message's latest line (an index into `ranges`), and every line's byte range.
    private static func latestLines(_ journal: Data) -> (latest: [String: Int], ranges: [Range<Int>]) {
        var latest: [String: Int] = [:]
        var ranges: [Range<Int>] = []
        let decoder = JSONDecoder()
        journal.withUnsafeBytes { (buffer: UnsafeRawBufferPointer) in
            let bytes = buffer.bindMemory(to: UInt8.self)
            var start = 0
            while start < bytes.count {
                var end = start
                while end < bytes.count, bytes[end] != UInt8(ascii: "\n") { end += 1 }
                defer { start = end + 1 }
                guard end > start else { continue }
                let index = ranges.count
                ranges.append(start..<end)
                let line = UnsafeBufferPointer(rebasing: bytes[start..<end])
                if let id = messageID(line) {
                    latest[id] = index
                } else if let deletion = try? decoder.decode(Deletion.self, from: Data(line)) {
                    for id in deletion.deleted { latest[id] = nil }
                } else if let id = (try? decoder.decode(IDOnly.self, from: Data(line)))?.id {
                    latest[id] = index
                }
            }
        }
        return (latest, ranges)
    }

    private struct Deletion: Decodable { var deleted: [String] }
    private struct IDOnly: Decodable { var id: String }

    private static let prefix = Array(#"{"id":""#.utf8)

    private static func messageID(_ line: UnsafeBufferPointer<UInt8>) -> String? {
        guard line.count > prefix.count, line.starts(with: prefix) else { return nil }
        var end = prefix.count
        while end < line.count, line[end] != UInt8(ascii: "\"") {
            guard line[end] != UInt8(ascii: "\\") else { return nil }
            end += 1
        }
        guard end < line.count else { return nil }
        return String(decoding: UnsafeBufferPointer(rebasing: line[prefix.count..<end]), as: UTF8.self)
    }

    /// Rewrites the journal at `path` when worthwhile; `descriptor` (open on it for appending)
    /// then points at the new file. Returns the lines and dead lines of the result.
    @discardableResult
    static func compactIfWorthwhile(path: String, descriptor: Int32, directoryDescriptor: Int32) throws -> (lines: Int, dead: Int) {
        guard let journal = FileManager.default.contents(atPath: path) else { return (0, 0) }
        let scan = scan(journal)
        guard scan.dead >= minimumDeadLines, scan.dead > scan.live.count else { return (scan.lines, scan.dead) }
        let temporary = path + ".compacting"
        let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw DiskError(path: temporary, operation: "open", code: errno) }
        var output = Data()
        output.reserveCapacity(scan.live.reduce(0) { $0 + $1.count + 1 })
        for range in scan.live {
            output.append(journal[range])
            output.append(UInt8(ascii: "\n"))
        }
        do {
            try output.withUnsafeBytes { bytes in
                var offset = 0
                while offset < bytes.count {
                    let written = write(fd, bytes.baseAddress! + offset, bytes.count - offset)
                    if written < 0 {
                        if errno == EINTR { continue }
                        throw DiskError(path: temporary, operation: "write", code: errno)
                    }
                    offset += written
                }
            }
            guard fsync(fd) == 0 else { throw DiskError(path: temporary, operation: "fsync", code: errno) }
            guard rename(temporary, path) == 0 else { throw DiskError(path: path, operation: "rename", code: errno) }
            fsync(directoryDescriptor)
            // Appends now go to the new file, under the same descriptor number.
            guard dup2(fd, descriptor) >= 0 else { throw DiskError(path: path, operation: "dup2", code: errno) }
        } catch {
            close(fd)
            unlink(temporary)
            throw error
        }
        close(fd)
        return (scan.live.count, 0)
    }
}
