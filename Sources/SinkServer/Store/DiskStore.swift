import CSwallowSystem
import Dispatch
import Foundation
import MailMessage
import NIOCore
import Synchronization

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// Messages on disk: `DIR/messages/<id>.eml` (the raw bytes as stored), and beside them
/// `DIR/messages/metadata.jsonl`, one line of `CapturedMessage` JSON per message (and a
/// `{"deleted": [...]}` line per deletion). A message counts as stored when its line decodes:
/// the `.eml` is written first, so a metadata line never points at a missing body. One
/// appended line instead of a `.json` file per message halves the files created per message,
/// which on ext4 is most of the cost of storing it. Per-message `<id>.json` files written by
/// earlier versions are still read.
///
/// It knows nothing of the search index: its owner (`MessageStore`) is told of every batch of
/// messages written (`onWritten`, on the writer thread) and indexes them.
final class DiskStore: Sendable {
    let directory: String
    let policy: FsyncPolicy
    /// Where failures the caller cannot be told of (a deletion's journal line) are reported.
    private let health: StorageHealth?
    /// Called on the writer with each batch of messages now in the files.
    private let onWritten: @Sendable ([WrittenMessage]) -> Void
    /// Reads.
    private let queue = DispatchQueue(label: "swallow.disk", qos: .utility, attributes: .concurrent)
    /// Writes, deletions and syncs, in order, on one thread.
    private let writer = DispatchQueue(label: "swallow.disk.writer")

    private struct PendingWrite {
        var message: CapturedMessage
        var raw: ByteBuffer?
        var metadata: Result<Data, any Error>
        var tags: [String]
        var completion: (@Sendable (Result<Void, any Error>) -> Void)?
    }

    private let writes = Mutex<(queue: [PendingWrite], scheduled: Bool)>(([], false))
    private let directoryDescriptor: Int32
    /// `metadata.jsonl`, opened for appending: concurrent writers each append whole lines.
    private let journalDescriptor: Int32
    var journalPath: String { "\(directory)/metadata.jsonl" }
    /// Batch mode: a timer is set to sync.
    private let flushScheduled = Atomic<Bool>(false)
    /// Batch mode: when the oldest unsynced write must be synced (uptime ns), 0 when none is.
    private let flushDeadline = Atomic<UInt64>(0)
    /// Lines in the journal, and how many no longer describe a stored message (writer only).
    private let journalLines = Atomic<Int>(0)
    private let deadLines = Atomic<Int>(0)

    init(
        root: String, policy: FsyncPolicy, health: StorageHealth? = nil,
        onWritten: @escaping @Sendable ([WrittenMessage]) -> Void = { _ in }
    ) throws {
        self.directory = (root as NSString).appendingPathComponent("messages")
        self.policy = policy
        self.health = health
        self.onWritten = onWritten
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        } catch {
            throw ConfigurationError(message: "cannot create data directory \(directory): \(error.localizedDescription)")
        }
        let fd = open(directory, O_RDONLY | O_DIRECTORY)
        guard fd >= 0 else { throw ConfigurationError(message: "cannot open data directory \(directory): errno \(errno)") }
        self.directoryDescriptor = fd
        let journal = open("\(directory)/metadata.jsonl", O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o644)
        guard journal >= 0 else {
            close(fd)
            throw ConfigurationError(message: "cannot open \(directory)/metadata.jsonl: errno \(errno)")
        }
        self.journalDescriptor = journal
        // A journal left mostly dead by evictions is rewritten before anything is appended.
        let (lines, dead) = try JournalCompaction.compactIfWorthwhile(
            path: "\(directory)/metadata.jsonl", descriptor: journal, directoryDescriptor: fd)
        journalLines.store(lines, ordering: .relaxed)
        deadLines.store(dead, ordering: .relaxed)
    }

    deinit {
        close(journalDescriptor)
        close(directoryDescriptor)
    }

    /// One encoder for every message: making one per message showed up in profiles.
    private static let encoder = JSONEncoder()

    private struct Deletion: Codable {
        var deleted: [String]
    }

    /// Every stored message's metadata, oldest first. Unreadable metadata (a line cut short by
    /// a crash, before its `250`) is skipped and reported.
    func loadAll(onSkipped: (String, any Error) -> Void) throws -> [CapturedMessage] {
        let decoder = JSONDecoder()
        var byID: [String: CapturedMessage] = [:]
        // Per-message files of earlier versions.
        for name in try FileManager.default.contentsOfDirectory(atPath: directory) where name.hasSuffix(".json") {
            let path = (directory as NSString).appendingPathComponent(name)
            do {
                let message = try decoder.decode(CapturedMessage.self, from: Data(contentsOf: URL(fileURLWithPath: path)))
                byID[message.id] = message
            } catch {
                onSkipped(path, error)
            }
        }
        if let journal = FileManager.default.contents(atPath: journalPath) {
            for (number, line) in journal.split(separator: UInt8(ascii: "\n")).enumerated() {
                if let message = try? decoder.decode(CapturedMessage.self, from: Data(line)) {
                    byID[message.id] = message
                } else if let deletion = try? decoder.decode(Deletion.self, from: Data(line)) {
                    for id in deletion.deleted { byID[id] = nil }
                } else {
                    onSkipped("\(journalPath):\(number + 1)", ConfigurationError(message: "unreadable metadata line"))
                }
            }
        }
        var messages: [CapturedMessage] = []
        messages.reserveCapacity(byID.count)
        for message in byID.values {
            guard FileManager.default.fileExists(atPath: emlPath(message.id)) || !message.bodyStored else {
                onSkipped(emlPath(message.id), ConfigurationError(message: "missing \(message.id).eml"))
                continue
            }
            messages.append(message)
        }
        return messages.sorted { $0.id < $1.id }
    }

    /// Writes one message (`always`, `batch`): `completion` runs on the writer thread once the
    /// message is in the files (`batch`) or on the disk (`always`).
    /// The metadata is encoded here, on the caller's thread, so the writer's loop (which the
    /// `250`s wait on) only touches the files.
    func write(
        _ message: CapturedMessage, raw: ByteBuffer?, tags: [String] = [],
        completion: @escaping @Sendable (Result<Void, any Error>) -> Void
    ) {
        submit(PendingWrite(message: message, raw: raw, metadata: Result { try message.jsonData() }, tags: tags, completion: completion))
    }

    /// `never`: queues the write and returns at once.
    func enqueue(_ message: CapturedMessage, raw: ByteBuffer?, tags: [String] = []) {
        submit(PendingWrite(message: message, raw: raw, metadata: Result { try message.jsonData() }, tags: tags, completion: nil))
    }

    /// Runs `body` on the writer once every write submitted so far has been written (and
    /// handed to `onWritten`).
    func afterQueuedWrites(_ body: @escaping @Sendable () -> Void) {
        writer.async(execute: body)
    }

    private func submit(_ write: PendingWrite) {
        let schedule = writes.withLock { writes in
            writes.queue.append(write)
            defer { writes.scheduled = true }
            return !writes.scheduled
        }
        if schedule { writer.async { self.writeQueued() } }
    }

    /// Reads a message's raw bytes.
    func readRaw(id: String) async throws -> ByteBuffer? {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<ByteBuffer?, any Error>) in
            queue.async {
                let path = self.emlPath(id)
                guard FileManager.default.fileExists(atPath: path) else { return continuation.resume(returning: nil) }
                do {
                    let data = try Data(contentsOf: URL(fileURLWithPath: path))
                    continuation.resume(returning: ByteBuffer(bytes: data))
                } catch {
                    continuation.resume(throwing: error)
                }
            }
        }
    }

    func delete(ids: [String]) {
        guard !ids.isEmpty else { return }
        // On the writer: after every write queued before it.
        writer.async {
            do {
                var line = try JSONEncoder().encode(Deletion(deleted: ids))
                line.append(UInt8(ascii: "\n"))
                try self.append(line)
                self.journalLines.add(1, ordering: .relaxed)
                // The deletion record and each deleted message's line are dead.
                self.deadLines.add(1 + ids.count, ordering: .relaxed)
            } catch {
                self.health?.failed(.disk, "record the deletion of \(ids.count) messages in the journal", error)
            }
            self.compactWhenWorthwhile()
            for id in ids {
                unlink(self.emlPath(id))
                unlink(self.jsonPath(id))
            }
        }
    }

    /// On the writer: rewrites the journal once dead lines outnumber live ones (see
    /// `JournalCompaction`). The writes queued meanwhile wait; it happens about once per
    /// `max(10 000, live)` deletions.
    private func compactWhenWorthwhile() {
        let dead = deadLines.load(ordering: .relaxed), lines = journalLines.load(ordering: .relaxed)
        guard dead >= JournalCompaction.minimumDeadLines, dead > lines - dead else { return }
        if policy == .batch { flush() }
        do {
            let (lines, dead) = try JournalCompaction.compactIfWorthwhile(
                path: journalPath, descriptor: journalDescriptor, directoryDescriptor: directoryDescriptor)
            journalLines.store(lines, ordering: .relaxed)
            deadLines.store(dead, ordering: .relaxed)
        } catch {
            // The old journal is intact; try again after the next deletions.
            deadLines.store(JournalCompaction.minimumDeadLines / 2, ordering: .relaxed)
        }
    }

    /// Returns once every write, and every `afterQueuedWrites` body, queued so far has run.
    func passQueuedWrites() async {
        await onWriter {}
    }

    /// Waits until every queued write has reached the files, then fsyncs (unless `never`).
    func drain() async {
        await onWriter { if self.policy == .batch { self.flush() } }
    }

    /// Runs `body` on the writer's queue, after everything queued before it, and waits for it.
    private func onWriter(_ body: @escaping @Sendable () -> Void) async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            writer.async {
                body()
                continuation.resume()
            }
        }
    }

    // MARK: Files

    func emlPath(_ id: String) -> String { "\(directory)/\(id).eml" }
    private func jsonPath(_ id: String) -> String { "\(directory)/\(id).json" }

    /// The writer: takes every write queued so far and, for each, creates its `.eml` file and
    /// appends its metadata line. With `batch` and `never` each message completes as soon as its
    /// own files are written, so a `250` never waits for the rest of the batch; with `always`
    /// the batch is made durable with one `syncfs` (a group commit) and then completed. One
    /// thread creating files in the directory beats many contending for its lock.
    private func writeQueued() {
        while true {
            let batch = writes.withLock { writes in
                let batch = writes.queue
                writes.queue.removeAll(keepingCapacity: true)
                if batch.isEmpty { writes.scheduled = false }
                return batch
            }
            guard !batch.isEmpty else { return }
            var results: [Result<Void, any Error>] = []
            results.reserveCapacity(batch.count)
            var written: [WrittenMessage] = []
            for write in batch {
                let result = Result {
                    var line = try write.metadata.get()
                    if let raw = write.raw {
                        try raw.withUnsafeReadableBytes { try writeFile(emlPath(write.message.id), $0) }
                    }
                    line.append(UInt8(ascii: "\n"))
                    try append(line)
                    journalLines.add(1, ordering: .relaxed)
                    written.append(
                        WrittenMessage(
                            message: write.message, raw: write.raw, metadata: line.dropLast(), path: emlPath(write.message.id), tags: write.tags))
                }
                if policy == .always {
                    results.append(result)
                } else {
                    if case .success = result, policy == .batch { scheduleFlush() }
                    write.completion?(result)
                }
            }
            if policy == .always {
                if systemSyncfs(directoryDescriptor) != 0 {
                    let error = DiskError(path: directory, operation: "syncfs", code: errno)
                    results = results.map { $0.flatMap { .failure(error) } }
                    written = []
                }
                for (write, result) in zip(batch, results) { write.completion?(result) }
            }
            if policy == .batch, flushDue() { flush() }
            // Indexed behind the 250; the index is rebuildable from the files.
            if !written.isEmpty { onWritten(written) }
        }
    }

    /// Appends whole lines to the metadata journal in one `write`.
    private func append(_ lines: Data) throws {
        try lines.withUnsafeBytes { try writeAll(journalDescriptor, $0, path: journalPath) }
    }

    /// How many message bodies are stored (cheap: names only). The index is trusted when it
    /// holds as many messages.
    func storedCount() -> Int {
        ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []).filter { $0.hasSuffix(".eml") }.count
    }

    private func writeFile(_ path: String, _ bytes: UnsafeRawBufferPointer) throws {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw DiskError(path: path, operation: "open", code: errno) }
        defer { close(fd) }
        try writeAll(fd, bytes, path: path)
    }

    /// `write(2)` until every byte is out, retrying on EINTR.
    private func writeAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, path: String) throws {
        var offset = 0
        while offset < bytes.count {
            #if canImport(Glibc)
                let written = Glibc.write(fd, bytes.baseAddress! + offset, bytes.count - offset)
            #else
                let written = Darwin.write(fd, bytes.baseAddress! + offset, bytes.count - offset)
            #endif
            if written < 0 {
                if errno == EINTR { continue }
                throw DiskError(path: path, operation: "write", code: errno)
            }
            offset += written
        }
    }

    /// Batch mode: the file system is synced about 100 ms after a write, covering every
    /// message written meanwhile: by a timer when the writer goes idle, by the writer itself
    /// under continuous load.
    private func scheduleFlush() {
        let now = DispatchTime.now().uptimeNanoseconds
        _ = flushDeadline.compareExchange(expected: 0, desired: now + 100_000_000, ordering: .relaxed)
        guard !flushScheduled.exchange(true, ordering: .acquiringAndReleasing) else { return }
        writer.asyncAfter(deadline: .now() + .milliseconds(100)) { self.flush() }
    }

    private func flushDue() -> Bool {
        let deadline = flushDeadline.load(ordering: .relaxed)
        return deadline != 0 && DispatchTime.now().uptimeNanoseconds >= deadline
    }

    /// On the writer only.
    private func flush() {
        flushScheduled.store(false, ordering: .releasing)
        guard flushDeadline.exchange(0, ordering: .relaxed) != 0 else { return }
        // One syncfs for the whole batch: opening and fsyncing each file costs far more, and
        // on ext4 it stalls the creation of the next files.
        systemSyncfs(directoryDescriptor)
    }
}

/// `syncfs(2)` on Linux (through the C shim: Glibc's module leaves it out), a full fsync elsewhere.
private func systemSyncfs(_ fd: Int32) -> Int32 {
    swallow_syncfs(fd)
}

/// A message as the disk writer left it in the files: what the search index is fed.
struct WrittenMessage: Sendable {
    var message: CapturedMessage
    /// Kept while the index's backlog of bodies fits its bound; past that the indexer reads the
    /// `.eml` back (from the page cache, usually).
    var raw: ByteBuffer?
    /// The message's metadata line, as written to the journal.
    var metadata: Data
    var path: String
    var tags: [String] = []
}

struct DiskError: Error, CustomStringConvertible {
    var path: String
    var operation: String
    var code: Int32
    var description: String { "\(operation) \(path): \(String(cString: strerror(code)))" }
}
