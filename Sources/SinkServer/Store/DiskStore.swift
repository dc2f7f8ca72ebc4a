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
/// earlier versions are still read. In a burst, small messages' bodies wait in `spool`
/// (`BodySpool`) and get their `.eml` just behind the `250`.
///
/// It knows nothing of the search index: its owner (`MessageStore`) is told of every batch of
/// messages written (`onWritten`, on the writer thread) and indexes them.
final class DiskStore: Sendable {
    let directory: String
    let policy: FsyncPolicy
    /// Where failures the caller cannot be told of (a deletion's journal line) are reported.
    private let health: StorageHealth?
    /// Called with each batch of messages now in the files: on the writer, where it may wait
    /// (`true`) while the index is behind; on an event loop (`storeInline`), where it may not,
    /// and returns false instead of taking them.
    private let onWritten: @Sendable ([WrittenMessage], _ mayWait: Bool) -> Bool
    /// Reads.
    private let queue = DispatchQueue(label: "swallow.disk", qos: .utility, attributes: .concurrent)
    /// Writes, deletions and syncs, in order, on one thread.
    private let writer = DispatchQueue(label: "swallow.disk.writer")

    /// What the writer takes from its queue, in the order it was queued: a message to write,
    /// or a deletion to record (behind the writes queued before it).
    private enum WriterWork {
        case write(PendingWrite)
        case deletion([String])
    }

    private struct PendingWrite {
        var message: CapturedMessage
        var raw: ByteBuffer?
        /// The metadata line, encoded by the writer when it takes the write.
        var metadata: Result<Data, any Error> = .success(Data())
        var tags: [String]
        var completion: (@Sendable (Result<Void, any Error>) -> Void)?
    }

    private let writes = WriterQueue<WriterWork>()
    /// `always`: messages stored inline, waiting for the next sync (`afterSync`), and how
    /// many messages they are.
    private let syncWaiters = WriterQueue<SyncWaiter>()
    private let syncWaitingMessages = Atomic<Int>(0)
    /// `always`'s group commit, on the writer: see `linger(holding:)`.
    private let groupCommit = Mutex(GroupCommit())
    /// The last sync of the group commit (tests).
    var lastGroupCommit: GroupCommit { groupCommit.withLock { $0 } }
    /// Set while the writer lingers before a sync; arrivals then signal `arrivals`.
    private let lingering = Atomic<Bool>(false)
    private let arrivals = DispatchSemaphore(value: 0)
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
    /// Dead lines before the journal is scanned again after a scan that did not compact (writer only).
    private let scanAgainAt = Atomic<Int>(0)
    /// Bodies of a burst waiting for their `.eml` (`always` and `batch`).
    let spool: BodySpool
    /// The journal lines' buffer of the last burst, for the next (taken by one loop at a time;
    /// another that finds it taken makes its own).
    private let lineScratch = Mutex<[UInt8]?>(nil)
    /// `loadAll` found per-message `.json` files of earlier versions: deleting a message then
    /// removes its `.json` too (otherwise there is none to remove).
    private let legacyFiles = Atomic<Bool>(false)
    private let journalLock = Mutex(())
    /// `afterQueuedWrites` bodies not yet run.
    private let queuedBodies = Atomic<Int>(0)
    /// When the last message came to be stored (uptime ns): messages less than
    /// `burstGap` apart are a burst.
    private let lastArrival = Atomic<UInt64>(0)
    static let burstGap: UInt64 = 1_000_000
    /// A timer is set to write spooled bodies' files.
    private let filingScheduled = Atomic<Bool>(false)

    init(
        root: String, policy: FsyncPolicy, health: StorageHealth? = nil,
        onWritten: @escaping @Sendable ([WrittenMessage], _ mayWait: Bool) -> Bool = { _, _ in true }
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
            path: "\(directory)/metadata.jsonl", descriptor: journal, directoryDescriptor: fd, lock: Mutex(()))
        journalLines.store(lines, ordering: .relaxed)
        deadLines.store(dead, ordering: .relaxed)
        spool = try BodySpool(directory: directory)
        // The directories, the spool and the journal may be new: their names are made durable
        // now, so that `always` may sync only the two files' contents (`syncAppends`).
        if policy != .never, systemSyncfs(fd) != 0 {
            throw ConfigurationError(message: "cannot sync data directory \(directory): errno \(errno)")
        }
        try recoverSpool()
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
            legacyFiles.store(true, ordering: .relaxed)
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
    /// The metadata is encoded by the writer, not on the caller's event loop: with bursts
    /// spooled the writer has time to spare, and the loop was the busiest thread (4 µs of its
    /// time per 1 KiB message, `perf record`).
    func write(
        _ message: CapturedMessage, raw: ByteBuffer?, tags: [String] = [],
        completion: @escaping @Sendable (Result<Void, any Error>) -> Void
    ) {
        submit(PendingWrite(message: message, raw: raw, tags: tags, completion: completion))
    }

    /// Whether a message of `size` bytes is stored by its event loop (`storeInline`): with
    /// `batch` or `always`, a small message in a burst (less than `burstGap` after the one before, or
    /// while bodies wait in the spool). Others go through the writer, and a lone message gets
    /// its `.eml` before its `250`. Called once per message: it times the arrivals.
    func takesInline(size: Int) -> Bool {
        let now = DispatchTime.now().uptimeNanoseconds
        let previous = lastArrival.exchange(now, ordering: .relaxed)
        return policy != .never && (now &- previous < Self.burstGap || !spool.isEmpty) && spool.admits(size: size, alreadyTaken: 0)
    }

    /// `batch`: stores the small messages of a burst that an event loop took in one pass, on
    /// that loop: their bodies appended to the spool in one `write`, their metadata lines to
    /// the journal in another (page cache writes of a few microseconds), so their `250`s wait
    /// for no other thread.
    ///
    /// Measured with `Benchmarks/data-ratio.py` (1 KiB, 20 sessions): a file per message gave
    /// 0.53x of in-memory throughput; the spool written by the writer thread, 0.72x, the loop
    /// ~70% busy waiting on the hand-offs; the spool written by the loop a message at a time,
    /// 0.62x, the loop saturated by two file appends per message; once per pass, 0.70x, and
    /// 0.91x once the index held off as long as the spool (7 rounds, commit d1df7f5).
    ///
    /// `always`: the same appends, then the messages wait for a group commit (`afterSync`):
    /// `synced` runs on the writer once a sync that began after the appends has returned, and
    /// only then are they indexed. Measured with `Benchmarks/data-ratio.py --fsync always`
    /// (1 KiB, 20 sessions): the writer writing each batch and then syncing it took ~6 messages
    /// a `syncfs`, 0.42x of in-memory throughput; appended here, 0.45x; synced with two
    /// `fdatasync`s instead of a `syncfs`, and lingering for the sessions on their way, 0.55x.
    func storeInline(
        _ items: [(message: CapturedMessage, raw: ByteBuffer, tags: [String])],
        synced: (@Sendable (Result<Void, any Error>) -> Void)? = nil
    ) -> Result<Void, any Error> {
        let now = DispatchTime.now().uptimeNanoseconds
        // Every line into one buffer, written in one append; the buffer's memory is kept for
        // the next burst (a new one each burst landed on fresh pages: page faults).
        var lines = JSONWriter(reusing: lineScratch.withLock { $0.take() } ?? [], capacity: items.count * 640)
        defer { if lines.bytes.capacity <= 1 << 20 { lineScratch.withLock { $0 = lines.bytes } } }
        var written: [WrittenMessage] = []
        written.reserveCapacity(items.count)
        do {
            for item in items {
                let start = lines.bytes.count
                if !item.message.writeJSON(into: &lines) { lines.verbatim(try item.message.jsonData()) }
                // The index reads the body back from the spool: holding the capture buffer, it
                // kept the loop from reusing its memory (see `BodySpool`).
                written.append(self.written(item.message, raw: nil, lineBytes: lines.bytes.count - start, tags: item.tags))
                lines.newline()
            }
            try spool.store(items.map { ($0.message.id, $0.raw) }, now: now) {
                try lines.bytes.withUnsafeBytes { try append($0) }
            }
        } catch {
            health?.failed(.disk, "store \(items.count) messages in \(spool.path) and the journal", error)
            return .failure(error)
        }
        journalLines.add(items.count, ordering: .relaxed)
        scheduleFiling()
        let stored = written
        if policy == .always {
            afterSync(messages: items.count) { result in
                if case .success = result { _ = self.onWritten(stored, true) }
                synced?(result)
            }
            return .success(())
        }
        scheduleFlush()
        // The index is behind: the writer waits for it instead (counted, so that an API read
        // waits for this hand-over too).
        if !onWritten(stored, false) { afterQueuedWrites { _ = self.onWritten(stored, true) } }
        return .success(())
    }

    /// `always`: runs `completion` on the writer once a sync (`syncAppends`) that began after
    /// this call has returned (its result). Waiters that gather while one sync runs share the
    /// next (`linger(holding:)`).
    private func afterSync(messages: Int, _ completion: @escaping @Sendable (Result<Void, any Error>) -> Void) {
        syncWaitingMessages.add(messages, ordering: .relaxed)
        if syncWaiters.add(SyncWaiter(messages: messages, completion: completion)) { writer.async { self.syncWaiting() } }
        if lingering.load(ordering: .acquiring) { arrivals.signal() }
    }

    private func syncWaiting() {
        while true {
            var waiting = syncWaiters.takeAll()
            guard !waiting.isEmpty else { return }
            waiting += linger(holding: waiting.reduce(0) { $0 + $1.messages })
            let messages = waiting.reduce(0) { $0 + $1.messages }
            syncWaitingMessages.subtract(messages, ordering: .relaxed)
            let start = DispatchTime.now().uptimeNanoseconds
            let result = Result { try syncAppends() }
            if case .failure(let error) = result { health?.failed(.disk, "sync \(spool.path) and \(journalPath)", error) }
            let took = DispatchTime.now().uptimeNanoseconds &- start
            // Read before the completions run: who waits now was not answered by this sync.
            let next = syncWaitingMessages.load(ordering: .relaxed)
            groupCommit.withLock { $0 = GroupCommit(answered: messages, waitingAfter: next, syncNanos: took) }
            for waiter in waiting { waiter.completion(result) }
        }
    }

    /// `always`'s group commit: before a sync, waits a little for the messages on their way.
    /// A sync costs about as much for twenty messages as for one (the device's cache flush),
    /// so the more messages share it the better; but taken at once it covers only who happened
    /// to be waiting. With 20 sessions, syncing back to back split them into two groups that
    /// alternated (~8 messages a sync, one group's round trips under the other's sync). The
    /// sessions the last sync answered are expected back: until as many messages wait as that
    /// sync answered plus those that waited after it (`GroupCommit.expected`), and no longer
    /// than that sync took (at most `maxLinger`), the writer waits for arrivals. A lone
    /// session never waits (it is the one the last sync answered); sessions that left cost
    /// one wait, the next sync expecting fewer. `Benchmarks/data-ratio.py --fsync always`:
    /// 20 000 messages in 1.00 s without it, 0.87–0.92 s with it (`syncAppends`), ~20 a sync.
    /// Returns the waiters that arrived meanwhile.
    private func linger(holding messages: Int) -> [SyncWaiter] {
        let last = groupCommit.withLock { $0 }
        let linger = last.linger(holding: messages)
        guard linger > 0 else { return [] }
        let deadline = DispatchTime.now().uptimeNanoseconds + linger
        lingering.store(true, ordering: .releasing)
        defer { lingering.store(false, ordering: .relaxed) }
        var arrived: [SyncWaiter] = []
        var count = messages
        while true {
            // Taken after `lingering` is set: whoever adds later signals.
            let more = syncWaiters.takeAll()
            count += more.reduce(0) { $0 + $1.messages }
            arrived += more
            guard count < last.expected, DispatchTime.now().uptimeNanoseconds < deadline,
                arrivals.wait(timeout: DispatchTime(uptimeNanoseconds: deadline)) == .success
            else { break }
        }
        return arrived
    }

    /// The longest a sync waits for arrivals (`linger(holding:)`).
    static let maxLinger: UInt64 = 2_000_000

    /// A timer on the writer to file spooled bodies, unless one is set.
    private func scheduleFiling(after nanoseconds: UInt64 = BodySpool.quietGap) {
        guard !filingScheduled.exchange(true, ordering: .acquiringAndReleasing) else { return }
        writer.asyncAfter(deadline: .now() + .nanoseconds(Int(nanoseconds))) {
            self.filingScheduled.store(false, ordering: .releasing)
            self.fileSpooled()
        }
    }

    /// `never`: queues the write and returns at once.
    func enqueue(_ message: CapturedMessage, raw: ByteBuffer?, tags: [String] = []) {
        submit(PendingWrite(message: message, raw: raw, tags: tags, completion: nil))
    }

    /// Runs `body` on the writer once every write submitted so far has been written (and
    /// handed to `onWritten`).
    func afterQueuedWrites(_ body: @escaping @Sendable () -> Void) {
        queuedBodies.add(1, ordering: .relaxed)
        writer.async {
            body()
            self.queuedBodies.subtract(1, ordering: .releasing)
        }
    }

    private func submit(_ write: PendingWrite) {
        if writes.add(.write(write)) { writer.async { self.writeQueued() } }
    }

    /// Reads a message's raw bytes.
    func readRaw(id: String) async throws -> ByteBuffer? {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<ByteBuffer?, any Error>) in
            do {
                // A waiting body is read here: from the page cache, a `pread` of a few pages.
                if let body = try spool.body(id) { return continuation.resume(returning: body) }
            } catch {
                return continuation.resume(throwing: error)
            }
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

    /// `{"deleted":["ID",...]}` and a newline: the journal's deletion record, written by hand
    /// (a `JSONEncoder` per deletion showed in the writer's profile), read back by `Deletion`'s
    /// decoder and `JournalCompaction.deletedIDs`.
    static func deletionLine(_ ids: [String]) -> Data {
        var writer = JSONWriter(capacity: 16 + ids.count * 32)
        writer.beginObject()
        writer.member("deleted", ids)
        writer.endObject()
        writer.verbatim(CollectionOfOne(UInt8(ascii: "\n")))
        return Data(writer.bytes)
    }

    /// Queues a deletion record behind the writes queued before it: in `never` mode (and for
    /// messages the writer stores) a message is in memory, and may be evicted, before its line
    /// is written; the record must follow that line. Deletions that wait together share one
    /// record.
    func delete(ids: [String]) {
        guard !ids.isEmpty else { return }
        if writes.add(.deletion(ids)) { writer.async { self.writeQueued() } }
    }

    /// On the writer: one deletion record for `ids`, then their files.
    private func recordDeletions(_ ids: [String]) {
        do {
            try append(Self.deletionLine(ids))
            journalLines.add(1, ordering: .relaxed)
            // The deletion record and each deleted message's line are dead.
            deadLines.add(1 + ids.count, ordering: .relaxed)
        } catch {
            health?.failed(.disk, "record the deletion of \(ids.count) messages in the journal", error)
        }
        compactWhenWorthwhile()
        // A body still in the spool never got its file (nor will it): nothing to unlink.
        // (Two failed `unlink`s per message the store evicted were a third of the writer's
        // system calls at 1 KiB messages with `--data`.) After the writes queued before: a
        // body the writer spools is held by then.
        for id in spool.discard(ids) { unlink(emlPath(id)) }
        if legacyFiles.load(ordering: .relaxed) {
            for id in ids { unlink(jsonPath(id)) }
        }
    }

    /// On the writer: rewrites the journal once dead lines outnumber live ones (see
    /// `JournalCompaction`). The writes queued meanwhile wait; it happens about once per
    /// `max(10 000, live)` deletions.
    private func compactWhenWorthwhile() {
        let dead = deadLines.load(ordering: .relaxed), lines = journalLines.load(ordering: .relaxed)
        guard dead >= JournalCompaction.minimumDeadLines, dead > lines - dead,
            dead >= scanAgainAt.load(ordering: .relaxed)
        else { return }
        if policy == .batch { flush() }
        do {
            let (lines, dead) = try JournalCompaction.compactIfWorthwhile(
                path: journalPath, descriptor: journalDescriptor, directoryDescriptor: directoryDescriptor, lock: journalLock)
            journalLines.store(lines, ordering: .relaxed)
            deadLines.store(dead, ordering: .relaxed)
            // A scan that found too few dead lines is not repeated at the next deletion: event
            // loops append message lines while deletion records wait in the writer's queue, so
            // the counts hover around the threshold (39 scans for 3 compactions in 20 000
            // messages, `perf probe`). Again once the deletions may have made up the difference.
            let live = lines - dead
            scanAgainAt.store(dead == 0 ? 0 : dead + max(live - dead, 0) + max(live / 16, 64), ordering: .relaxed)
        } catch {
            // The old journal is intact; try again after the next deletions.
            deadLines.store(JournalCompaction.minimumDeadLines / 2, ordering: .relaxed)
        }
    }

    /// Returns once every write, and every `afterQueuedWrites` body, queued so far has run.
    /// At once when nothing is queued: an API read then does not wait behind the spool's
    /// files being written (a chunk takes milliseconds, far more while ext4 is slow to create
    /// files after a large deletion).
    func passQueuedWrites() async {
        let idle = writes.isIdle
        if idle, queuedBodies.load(ordering: .acquiring) == 0 { return }
        await onWriter {}
    }

    /// Waits until every queued write has reached the files (spooled bodies their `.eml`
    /// included), then fsyncs (unless `never`).
    func drain() async {
        await onWriter {
            self.fileSpooled(force: true)
            if self.policy == .batch { self.flush() }
        }
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

    func emlPath(_ id: String) -> String { Self.emlPath(id, in: directory) }
    static func emlPath(_ id: String, in directory: String) -> String { "\(directory)/\(id).eml" }
    private func jsonPath(_ id: String) -> String { "\(directory)/\(id).json" }

    /// The writer: takes every write queued so far and, for each, creates its `.eml` file (or,
    /// for the small messages of a burst, appends their bodies to the spool in one write) and
    /// appends its metadata line. With `batch` and `never` each message completes as soon as
    /// its own files are written, so a `250` never waits for the rest of the batch; with
    /// `always` the batch is made durable with one `syncfs` (a group commit) and then
    /// completed. One thread creating files in the directory beats many contending for its lock.
    private func writeQueued() {
        while true {
            let work = writes.takeAll()
            guard !work.isEmpty else { return fileSpooled() }
            var batch: [PendingWrite] = []
            var deleted: [String] = []
            for item in work {
                switch item {
                case .write(let write): batch.append(write)
                case .deletion(let ids): deleted += ids
                }
            }
            // Each deletion was queued after its message's write: the lines go first.
            if !batch.isEmpty { write(batch) }
            if !deleted.isEmpty { recordDeletions(deleted) }
        }
    }

    /// Writes a batch's messages: files or spool, then their metadata lines.
    private func write(_ writes: [PendingWrite]) {
        var batch = writes
        for index in batch.indices { batch[index].metadata = Result { try batch[index].message.jsonData() } }
        var results: [Result<Void, any Error>?] = Array(repeating: nil, count: batch.count)
        var written: [WrittenMessage] = []
        written.reserveCapacity(batch.count)
        spoolBodies(of: batch, results: &results, written: &written)
        for (index, write) in batch.enumerated() where results[index] == nil {
            let result = Result {
                var line = try write.metadata.get()
                if let raw = write.raw {
                    try raw.withUnsafeReadableBytes { try writeFile(emlPath(write.message.id), $0) }
                }
                line.append(UInt8(ascii: "\n"))
                try append(line)
                journalLines.add(1, ordering: .relaxed)
                written.append(self.written(write, line: line.dropLast()))
            }
            results[index] = result
            if policy != .always {
                if case .success = result, policy == .batch { scheduleFlush() }
                write.completion?(result)
            }
        }
        if policy == .always {
            var outcomes = results.map { $0 ?? .success(()) }
            if case .failure(let error) = Result(catching: { try sync() }) {
                outcomes = outcomes.map { $0.flatMap { .failure(error) } }
                written = []
            }
            for (write, result) in zip(batch, outcomes) { write.completion?(result) }
        }
        if policy == .batch, flushDue() { flush() }
        // Indexed behind the 250; the index is rebuildable from the files.
        if !written.isEmpty { _ = onWritten(written, true) }
    }

    private func written(_ write: PendingWrite, line: Data) -> WrittenMessage {
        written(write.message, raw: write.raw, lineBytes: line.count, tags: write.tags)
    }

    /// A message now in the files (or the spool), as `onWritten` is told of it.
    private func written(_ message: CapturedMessage, raw: ByteBuffer?, lineBytes: Int, tags: [String]) -> WrittenMessage {
        WrittenMessage(message: message, raw: raw, metadataBytes: lineBytes, directory: directory, tags: tags, spool: spool)
    }

    /// A burst (more than one message waiting, or bodies already spooled): the small bodies
    /// go to the spool in one write, then their metadata lines in another, and (unless
    /// `always`, which completes after its sync) they complete. Sets their `results`; the
    /// rest of the batch is left to the caller. If the spool cannot be written, nothing is
    /// set and every message gets its file.
    private func spoolBodies(of batch: [PendingWrite], results: inout [Result<Void, any Error>?], written: inout [WrittenMessage]) {
        guard policy != .never, batch.count > 1 || !spool.isEmpty else { return }
        var indices: [Int] = []
        var bodies: [(id: String, raw: ByteBuffer)] = []
        var lines = Data()
        var taken = 0
        for (index, write) in batch.enumerated() {
            guard let raw = write.raw, case .success(let line) = write.metadata, spool.admits(size: raw.readableBytes, alreadyTaken: taken)
            else { continue }
            taken += raw.readableBytes
            indices.append(index)
            bodies.append((write.message.id, raw))
            lines.append(line)
            lines.append(UInt8(ascii: "\n"))
        }
        guard !bodies.isEmpty else { return }
        var described = false
        let result: Result<Void, any Error>
        do {
            try spool.store(bodies, now: DispatchTime.now().uptimeNanoseconds) {
                try append(lines)
                described = true
            }
            journalLines.add(bodies.count, ordering: .relaxed)
            result = .success(())
            for index in indices {
                let write = batch[index]
                // The line as encoded (the journal has it with its newline).
                if case .success(let line) = write.metadata { written.append(self.written(write, line: line)) }
            }
        } catch {
            // The spool could not be written: the files then. Bodies without metadata lines
            // are not stored; the spool's records of them are dead.
            guard described else { return health?.failed(.disk, "append \(bodies.count) bodies to \(spool.path)", error) ?? () }
            result = .failure(error)
        }
        for index in indices {
            results[index] = result
            guard policy != .always else { continue }
            if case .success = result, policy == .batch { scheduleFlush() }
            batch[index].completion?(result)
        }
    }

    /// On the writer: writes the `.eml` files of spooled bodies once they are due (arrivals
    /// paused, too many waiting, or waiting too long; all of them when `force`), a chunk at a
    /// time so that what is queued meanwhile goes first; then syncs and empties the spool.
    /// When not yet due, a timer comes back.
    private func fileSpooled(force: Bool = false) {
        while true {
            switch spool.due(now: DispatchTime.now().uptimeNanoseconds, force: force, limit: force ? 256 : 32) {
            case .wait(let nanoseconds):
                return scheduleFiling(after: nanoseconds)
            case .file(let chunk) where chunk.isEmpty:
                guard spool.holdsOnlyFiled else { return }
                // The files must be as durable as the records they replace before those go.
                do {
                    try sync()
                    try spool.truncateIfFiled()
                } catch {
                    // The spool keeps its records; emptied after the next burst's files.
                    health?.failed(.disk, "empty \(spool.path)", error)
                }
                return
            case .file(let chunk):
                var failed: [String] = []
                var body = ByteBuffer()
                for (id, location) in chunk {
                    do {
                        try spool.read(location, into: &body)
                        try body.withUnsafeReadableBytes { try writeFile(emlPath(id), $0) }
                    } catch {
                        health?.failed(.disk, "write \(id).eml from the spool", error)
                        failed.append(id)
                    }
                }
                // Filed first, then forgotten: a reader finds the body in one or the other.
                spool.discard(chunk.map(\.id).filter { !failed.contains($0) })
                if !failed.isEmpty {
                    // Kept in the spool; tried again in a second.
                    spool.requeue(failed)
                    return scheduleFiling(after: 1_000_000_000)
                }
                if !force {
                    // What was queued on the writer meanwhile (writes, deletions, an API read
                    // waiting for the writes before it) goes first: a chunk of 32 files takes
                    // a few milliseconds, which is all such a read waits.
                    return writer.async { self.fileSpooled() }
                }
            }
        }
    }

    /// At start: bodies a crash left in the spool get their `.eml` if the journal describes
    /// their message and no later line deleted it (a body appended just before a crash, whose
    /// metadata line never was, got no `250` and is not stored); then the spool is emptied.
    private func recoverSpool() throws {
        guard let bytes = FileManager.default.contents(atPath: spool.path), !bytes.isEmpty else { return }
        let live = FileManager.default.contents(atPath: journalPath).map(JournalCompaction.liveIDs) ?? []
        for (id, body) in BodySpool.records(in: Array(bytes)) where live.contains(id) && !FileManager.default.fileExists(atPath: emlPath(id)) {
            try body.withUnsafeBytes { try writeFile(emlPath(id), $0) }
        }
        try sync()
        try spool.truncateIfFiled()
    }

    /// Appends whole lines to the metadata journal in one `write`. Event loops append too
    /// (`storeInline`): the lock keeps a line from going to a journal being compacted.
    private func append(_ lines: Data) throws {
        try lines.withUnsafeBytes { try append($0) }
    }

    private func append(_ lines: UnsafeRawBufferPointer) throws {
        try journalLock.withLock { _ in try writeFully(journalDescriptor, lines, path: journalPath) }
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
        try writeFully(fd, bytes, path: path)
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

    /// `always`, inline: `fdatasync` of the only two files a burst appends to, the spool and the
    /// journal (their directory entries were made durable when they were opened). A `syncfs`
    /// writes back every dirty file of the file system, this process's and others', and took
    /// several times as long under load: `Benchmarks/data-ratio.py --fsync always`, 20 000
    /// messages in 1.41–1.45 s with `syncfs`, 1.00 s with these two (the group commit's
    /// lingering not yet added).
    private func syncAppends() throws {
        guard systemDataSync(spool.descriptor) == 0 else { throw DiskError(path: spool.path, operation: "fdatasync", code: errno) }
        guard systemDataSync(journalDescriptor) == 0 else { throw DiskError(path: journalPath, operation: "fdatasync", code: errno) }
    }

    /// `syncfs` of the data directory's file system, or the error it gave.
    private func sync() throws {
        guard systemSyncfs(directoryDescriptor) == 0 else { throw DiskError(path: directory, operation: "syncfs", code: errno) }
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

/// `always`: messages appended and waiting for a sync, and what to run once it returned.
private struct SyncWaiter: Sendable {
    var messages: Int
    var completion: @Sendable (Result<Void, any Error>) -> Void
}

/// The last sync of `always`'s group commit: how many messages it answered, how many were
/// waiting when it returned, and how long it took. What the next sync waits for
/// (`DiskStore.linger(holding:)`).
struct GroupCommit: Equatable {
    var answered = 0
    var waitingAfter = 0
    var syncNanos: UInt64 = 0

    /// The messages expected at the next sync: those the last one answered come back, those
    /// that waited after it are there.
    var expected: Int { answered + waitingAfter }

    /// How long a sync holding `messages` waits for more (ns): 0 once as many as expected wait.
    func linger(holding messages: Int) -> UInt64 {
        messages < expected ? min(syncNanos, DiskStore.maxLinger) : 0
    }
}

/// Work handed to the disk writer: `add` says whether the writer must be asked to run (nothing
/// was waiting and no run is under way); a run takes everything queued until it finds nothing,
/// and only then counts as over.
private final class WriterQueue<Element: Sendable>: Sendable {
    private let state = Mutex<(queue: [Element], scheduled: Bool)>(([], false))

    func add(_ element: Element) -> Bool {
        state.withLock { state in
            state.queue.append(element)
            defer { state.scheduled = true }
            return !state.scheduled
        }
    }

    func takeAll() -> [Element] {
        state.withLock { state in
            let taken = state.queue
            state.queue.removeAll(keepingCapacity: true)
            if taken.isEmpty { state.scheduled = false }
            return taken
        }
    }

    var isIdle: Bool { state.withLock { !$0.scheduled && $0.queue.isEmpty } }
}

/// `fdatasync(2)`, or `fsync` where there is none.
private func systemDataSync(_ fd: Int32) -> Int32 {
    #if canImport(Glibc)
        fdatasync(fd)
    #else
        fsync(fd)
    #endif
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
    /// The length of the message's metadata line in the journal: what the index's backlog is
    /// bounded by (the index encodes the line again rather than hold it).
    var metadataBytes: Int
    /// The data directory's `messages`: the `.eml` path is made only when it is read.
    var directory: String
    var path: String { DiskStore.emlPath(message.id, in: directory) }
    var tags: [String] = []
    /// Where the body waits while its `.eml` is not written yet.
    var spool: BodySpool? = nil

    /// The raw bytes: kept, waiting in the spool, or read back from the `.eml`.
    func body() -> [UInt8]? {
        if let raw { return Array(raw.readableBytesView) }
        guard message.bodyStored else { return nil }
        if let waiting = try? spool?.body(message.id) { return Array(waiting.readableBytesView) }
        return FileManager.default.contents(atPath: path).map(Array.init)
    }
}

struct DiskError: Error, CustomStringConvertible {
    var path: String
    var operation: String
    var code: Int32
    var description: String { "\(operation) \(path): \(String(cString: strerror(code)))" }
}
