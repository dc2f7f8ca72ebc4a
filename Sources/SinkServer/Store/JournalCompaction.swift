import Foundation
import Synchronization

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
            // The lines first (`memchr`: a loop over the bytes was a quarter of a compaction's
            // time, `perf record` of 7 MB journals), so that the table is made once at its size
            // (growing it was another tenth).
            var start = 0
            while start < bytes.count {
                let end =
                    memchr(bytes.baseAddress! + start, Int32(UInt8(ascii: "\n")), bytes.count - start)
                    .map { bytes.baseAddress!.distance(to: $0.assumingMemoryBound(to: UInt8.self)) } ?? bytes.count
                if end > start { ranges.append(start..<end) }
                start = end + 1
            }
            latest.reserveCapacity(ranges.count)
            for (index, range) in ranges.enumerated() {
                let line = UnsafeBufferPointer(rebasing: bytes[range])
                if let id = messageID(line) {
                    latest[id] = index
                } else if let deleted = deletedIDs(line) ?? (try? decoder.decode(Deletion.self, from: Data(line)))?.deleted {
                    for id in deleted { latest[id] = nil }
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
    private static let deletionPrefix = Array(#"{"deleted":["#.utf8)
    private static let deletionSuffix = Array("]}".utf8)

    /// The ids of a deletion record as `DiskStore.deletionLine` writes it (strings without
    /// escapes); nil for any other line, which the JSON decoder then reads. Decoding each
    /// deletion record with `JSONDecoder` was most of a compaction's time when the store evicts
    /// a message for each it takes.
    static func deletedIDs(_ line: UnsafeBufferPointer<UInt8>) -> [String]? {
        guard line.count >= deletionPrefix.count + deletionSuffix.count, line.starts(with: deletionPrefix),
            line.suffix(deletionSuffix.count).elementsEqual(deletionSuffix)
        else { return nil }
        let end = line.count - deletionSuffix.count
        var index = deletionPrefix.count
        var ids: [String] = []
        while index < end {
            if !ids.isEmpty {
                guard line[index] == UInt8(ascii: ",") else { return nil }
                index += 1
            }
            guard index < end, line[index] == UInt8(ascii: "\"") else { return nil }
            let start = index + 1
            var close = start
            while close < end, line[close] != UInt8(ascii: "\"") {
                guard line[close] != UInt8(ascii: "\\") else { return nil }
                close += 1
            }
            guard close < end else { return nil }
            ids.append(String(decoding: UnsafeBufferPointer(rebasing: line[start..<close]), as: UTF8.self))
            index = close + 1
        }
        return ids
    }

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
    ///
    /// Appenders hold `lock` for each append. It is held here only to take the journal's size
    /// and, at the end, to copy what was appended meanwhile and swap the files: the scan and
    /// the new file's bulk and its sync happen while the sink goes on appending (holding it
    /// throughout stalled every event loop that stored a message for the whole compaction).
    /// Lines appended meanwhile are copied verbatim, deletion records included, so they keep
    /// their effect on the lines before them.
    @discardableResult
    static func compactIfWorthwhile(
        path: String, descriptor: Int32, directoryDescriptor: Int32, lock: borrowing Mutex<Void>,
        beforeSwap: () -> Void = {}
    ) throws -> (lines: Int, dead: Int) {
        let snapshotSize = try lock.withLock { _ in try size(of: descriptor, path: path) }
        guard snapshotSize > 0 else { return (0, 0) }
        let journal = try mapped(path, count: snapshotSize)
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
            try writeAll(output, to: fd, path: temporary)
            guard fsync(fd) == 0 else { throw DiskError(path: temporary, operation: "fsync", code: errno) }
            beforeSwap()
            let tailLines = try lock.withLock { _ in
                let tail = try read(path, from: snapshotSize, count: try size(of: descriptor, path: path) - snapshotSize)
                if !tail.isEmpty {
                    try writeAll(tail, to: fd, path: temporary)
                    guard fsync(fd) == 0 else { throw DiskError(path: temporary, operation: "fsync", code: errno) }
                }
                guard rename(temporary, path) == 0 else { throw DiskError(path: path, operation: "rename", code: errno) }
                fsync(directoryDescriptor)
                // Appends now go to the new file, under the same descriptor number.
                guard dup2(fd, descriptor) >= 0 else { throw DiskError(path: path, operation: "dup2", code: errno) }
                return tail.reduce(0) { $1 == UInt8(ascii: "\n") ? $0 + 1 : $0 }
            }
            close(fd)
            return (scan.live.count + tailLines, 0)
        } catch {
            close(fd)
            unlink(temporary)
            throw error
        }
    }

    private static func size(of descriptor: Int32, path: String) throws -> Int {
        // The end of a descriptor opened for appending (its offset moves nothing: each append
        // goes to the end anyway).
        let end = lseek(descriptor, 0, SEEK_END)
        guard end >= 0 else { throw DiskError(path: path, operation: "lseek", code: errno) }
        return Int(end)
    }

    /// The first `count` bytes of the file at `path`, mapped (read-only; appends after them do
    /// not touch them). Read into memory instead, the copy and the faults of fresh pages were
    /// a third of a compaction's time (`perf record`, 7 MB journals).
    private static func mapped(_ path: String, count: Int) throws -> Data {
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw DiskError(path: path, operation: "open", code: errno) }
        defer { close(fd) }
        guard let address = mmap(nil, count, PROT_READ, MAP_PRIVATE, fd, 0), address != MAP_FAILED else {
            throw DiskError(path: path, operation: "mmap", code: errno)
        }
        return Data(bytesNoCopy: address, count: count, deallocator: .custom { address, count in munmap(address, count) })
    }

    /// `count` bytes of the file at `path` from `offset`.
    private static func read(_ path: String, from offset: Int, count: Int) throws -> Data {
        guard count > 0 else { return Data() }
        let fd = open(path, O_RDONLY | O_CLOEXEC)
        guard fd >= 0 else { throw DiskError(path: path, operation: "open", code: errno) }
        defer { close(fd) }
        var data = Data(count: count)
        try data.withUnsafeMutableBytes { bytes in
            var done = 0
            while done < count {
                let got = pread(fd, bytes.baseAddress! + done, count - done, off_t(offset + done))
                if got < 0, errno == EINTR { continue }
                guard got > 0 else { throw DiskError(path: path, operation: "read", code: got < 0 ? errno : EIO) }
                done += got
            }
        }
        return data
    }

    private static func writeAll(_ data: Data, to fd: Int32, path: String) throws {
        try data.withUnsafeBytes { bytes in
            var offset = 0
            while offset < bytes.count {
                let written = write(fd, bytes.baseAddress! + offset, bytes.count - offset)
                if written < 0 {
                    if errno == EINTR { continue }
                    throw DiskError(path: path, operation: "write", code: errno)
                }
                offset += written
            }
        }
    }
}
