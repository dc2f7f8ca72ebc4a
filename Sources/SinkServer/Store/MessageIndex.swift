import CSwallowSystem
import Dispatch
import Foundation
import GRDB
import MailMessage
import NIOCore
import Synchronization

/// The on-disk index of `--data DIR`: an SQLite database (GRDB) beside the `.eml` files, with
/// each message's metadata and summary, and an FTS5 trigram table over its searchable text,
/// so lists and Mailpit-syntax searches (substring matches, as Mailpit's `LIKE`) answer from
/// the index instead of parsing every message.
///
/// The `.eml` and `.json` files stay the source of truth: the index is written without fsync
/// and rebuilt from them when it is missing, damaged, or does not hold every message.
final class MessageIndex: Sendable {
    /// A pool: WAL mode, so API reads never wait for SMTP-side writes.
    let database: DatabasePool
    let path: String

    // Indexing happens behind the `250`, in batches, on one queue: parsing and SQLite cost
    // nothing on the SMTP path. `flush()` gives the API read-your-writes.
    private struct Pending {
        /// The messages as they were handed over, a batch each: queueing a batch is one array
        /// kept, where queueing each message was a copy of it on the event loop (2.5% of its
        /// samples with `--fsync batch`, `perf record`).
        var batches = CircularBuffer<[WrittenMessage]>()
        /// Messages in `batches`.
        var count = 0
        var metadataBytes = 0
        var bodyBytes = 0
        var waiters = 0
        var scheduled = false
        /// When messages last arrived, and when the oldest waiting one did (monotonic nanoseconds).
        var lastArrival: UInt64 = 0
        var oldestArrival: UInt64 = 0
        /// Messages ever queued, and ever indexed (or given up on): the watermarks `flush()` waits by.
        var queued = 0
        var indexed = 0
        /// API reads waiting for the index to reach a watermark.
        var flushes: [(target: Int, continuation: CheckedContinuation<Void, Never>)] = []
    }

    private let pending = Mutex(Pending())
    private let queue = DispatchQueue(label: "swallow.index")
    /// Bodies up to this many bytes wait in memory for the indexer; the others are read from
    /// their files. Held, a body keeps its capture buffer: with 64 MiB every message of a
    /// 20 000-message burst (`--fsync batch`) held one until the indexer ran after it, their
    /// memory was not reused as the store evicted them, and each new message touched fresh
    /// pages (`perf stat -e page-faults`: 16 500 on the event loop against 5 800 in memory;
    /// 14 800 with 8 MiB).
    static let maxPendingBodyBytes = 8 * 1024 * 1024
    /// At most this many bytes of metadata wait for the index (some 60 000 messages); past it
    /// the disk writer waits (and so the `250`s): a burst is absorbed, memory stays bounded
    /// when the index cannot keep up.
    static let maxPendingMetadataBytes = 64 * 1024 * 1024
    private let room = DispatchSemaphore(value: 0)
    /// Bumped when the tables change: an index of another version is rebuilt.
    /// 2: the FTS table keeps no positions (`detail = none`): substring `LIKE`s need only
    /// which rows hold each trigram, and indexing costs half as much.
    static let schemaVersion = 2
    /// Set while an API read waits in `flush()`: the indexer then stops gathering a batch.
    private let urgent = Atomic<Int>(0)
    private let wake = DispatchSemaphore(value: 0)
    /// The indexer gathers up to this many messages (or waits `gatherTime` for them): one
    /// transaction per few messages costs several times as much per message as one per hundreds.
    static let batchSize = 256
    static let gatherTime = DispatchTimeInterval.milliseconds(100)
    /// While mail keeps arriving (a gap shorter than `quietGap`), indexing waits, at most
    /// `maxDeferral` and while the backlog is under a quarter of its bound: on a machine whose
    /// cores the senders share, the index then costs the `250`s nothing. API reads do not
    /// see the lag: they `flush()` first.
    /// As long as the spool's bodies wait for their files (`BodySpool`): indexing during a
    /// 2 s burst of 20 000 1 KiB messages took 0.70x of in-memory throughput to 0.78x when
    /// it waited (`Benchmarks/data-ratio.py`, one run each).
    static let quietGap: UInt64 = BodySpool.quietGap
    static let maxDeferral: UInt64 = BodySpool.maxDeferral

    /// One message as the index stores it.
    struct Record: Sendable {
        var captured: CapturedMessage
        var summary: MessageSummary
        var mailboxes: [String]
        var tags: [String]
        /// The captured metadata as JSON, when the caller has it already (the journal line).
        var capturedJSON: Data?

        /// Parses the message to make its summary.
        init(_ captured: CapturedMessage, raw: [UInt8]?, tags: [String] = [], capturedJSON: Data? = nil) {
            self.captured = captured
            self.tags = tags
            self.capturedJSON = capturedJSON
            self.summary = MessageSummary(captured: captured, parsed: raw.map { ParsedMessage(bytes: $0) })
            self.mailboxes = MailboxFiling.names(for: captured)
        }

        init(_ queued: WrittenMessage) {
            // Encoded here, on the indexer's thread, rather than kept from the journal's line:
            // held until indexed, the lines of a burst were memory the event loop faulted in.
            self.init(queued.message, raw: queued.body(), tags: queued.tags, capturedJSON: try? queued.message.jsonData())
        }
    }

    /// Where indexing failures are reported (they happen behind the `250`, on the indexer).
    let health: StorageHealth

    init(path: String, health: StorageHealth) throws {
        self.path = path
        self.health = health
        var configuration = Configuration()
        configuration.prepareDatabase { db in
            // Rebuildable from the message files: no fsync of its own.
            try db.execute(sql: "PRAGMA synchronous = OFF")
        }
        database = try DatabasePool(path: path, configuration: configuration)
        try database.write { db in
            let version = try Int.fetchOne(db, sql: "PRAGMA user_version") ?? 0
            let tables = try Int.fetchOne(db, sql: "SELECT count(*) FROM sqlite_master WHERE name = 'message'") ?? 0
            if tables > 0 && version != Self.schemaVersion {
                // An index made by another version: drop it; the store rebuilds it from the files.
                try db.execute(sql: "DROP TABLE IF EXISTS message; DROP TABLE IF EXISTS message_mailbox; DROP TABLE IF EXISTS message_text;")
            }
            try db.execute(sql: "PRAGMA user_version = \(Self.schemaVersion)")
            try db.execute(
                sql: """
                    CREATE TABLE IF NOT EXISTS message (
                        id TEXT PRIMARY KEY NOT NULL,
                        created REAL NOT NULL,
                        size INTEGER NOT NULL,
                        read INTEGER NOT NULL DEFAULT 0,
                        tags TEXT NOT NULL DEFAULT '[]',
                        attachments INTEGER NOT NULL,
                        inlines INTEGER NOT NULL,
                        summary BLOB NOT NULL,
                        captured BLOB NOT NULL
                    );
                    CREATE INDEX IF NOT EXISTS message_created ON message(created);
                    CREATE INDEX IF NOT EXISTS message_read ON message(read);
                    -- The tags in use (every list answer has them): without it, each list read
                    -- the whole table (55 ms a page with 100 000 messages, api-latency.py).
                    CREATE INDEX IF NOT EXISTS message_tagged ON message(tags) WHERE tags != '[]';
                    CREATE TABLE IF NOT EXISTS message_mailbox (
                        mailbox TEXT NOT NULL,
                        message_rowid INTEGER NOT NULL,
                        PRIMARY KEY (mailbox, message_rowid)
                    ) WITHOUT ROWID;
                    CREATE VIRTUAL TABLE IF NOT EXISTS message_text USING fts5(
                        from_text, to_text, cc_text, bcc_text, reply_to_text, subject, message_id, search_text,
                        tokenize = 'trigram', detail = none, columnsize = 0
                    );
                    """)
        }
    }

    /// Queues stored messages for indexing; waits while the backlog is full.
    /// Without `mayWait`, returns false instead of waiting (the messages are not queued).
    @discardableResult
    func enqueue(_ messages: [WrittenMessage], mayWait: Bool = true) -> Bool {
        guard !messages.isEmpty else { return true }
        let metadataBytes = messages.reduce(0) { $0 + $1.metadataBytes }
        while true {
            let (admitted, schedule) = pending.withLock { pending -> (Bool, Bool) in
                guard pending.count == 0 || pending.metadataBytes + metadataBytes <= Self.maxPendingMetadataBytes else {
                    if mayWait { pending.waiters += 1 }
                    return (false, false)
                }
                // Bodies past the bound are dropped (the indexer reads their files); only then
                // is the batch copied.
                var queued = messages
                for index in queued.indices {
                    let size = queued[index].raw?.readableBytes ?? 0
                    if pending.bodyBytes + size > Self.maxPendingBodyBytes {
                        queued[index].raw = nil
                    } else {
                        pending.bodyBytes += size
                    }
                }
                pending.batches.append(queued)
                pending.count += queued.count
                pending.queued += messages.count
                pending.metadataBytes += metadataBytes
                let now = DispatchTime.now().uptimeNanoseconds
                if pending.count == messages.count { pending.oldestArrival = now }
                pending.lastArrival = now
                defer { pending.scheduled = true }
                return (true, !pending.scheduled)
            }
            if schedule { queue.async { self.drain() } }
            if admitted { return true }
            guard mayWait else { return false }
            room.wait()
        }
    }

    private func drain() {
        // Accepting mail comes first: the indexer runs under SCHED_IDLE while it drains (Linux
        // schedules per thread), so it uses only CPU time nothing else wants and falls behind
        // under load rather than slowing the `250`s; the bounded backlog stops it falling far.
        // While an API read waits for it, it runs at the normal priority: a busy sink would
        // otherwise starve it and the read with it (the soak saw 10 s waits).
        let normalScheduling = swallow_enter_idle_scheduling()
        var idle = true
        defer { if idle { swallow_restore_scheduling(normalScheduling) } }
        var gathered = false
        while true {
            let hurried = urgent.load(ordering: .relaxed) > 0
            if hurried == idle {
                if hurried { swallow_restore_scheduling(normalScheduling) } else { _ = swallow_enter_idle_scheduling() }
                idle = !hurried
            }
            if !gathered, !hurried, pending.withLock({ $0.count }) < Self.batchSize {
                _ = wake.wait(timeout: .now() + Self.gatherTime)
                gathered = true
                continue
            }
            gathered = false
            if !hurried, let wait = deferral() {
                _ = wake.wait(timeout: .now() + .nanoseconds(Int(wait)))
                continue
            }
            let (batch, handOvers) = pending.withLock { pending in
                var batch: [WrittenMessage] = []
                var handOvers = 0
                for queued in pending.batches where batch.count < Self.batchSize {
                    batch += queued
                    handOvers += 1
                }
                if batch.isEmpty { pending.scheduled = false }
                return (batch, handOvers)
            }
            guard !batch.isEmpty else { return }
            do {
                try insert(batch.map(Record.init))
                health.succeeded(.index)
            } catch {
                // The messages are on disk; a restart rebuilds the index from them.
                health.failed(.index, "index \(batch.count) messages", error)
            }
            let (waiters, reached) = pending.withLock { pending in
                pending.batches.removeFirst(handOvers)
                pending.count -= batch.count
                pending.metadataBytes -= batch.reduce(0) { $0 + $1.metadataBytes }
                pending.bodyBytes -= batch.reduce(0) { $0 + ($1.raw?.readableBytes ?? 0) }
                pending.indexed += batch.count
                let indexed = pending.indexed
                let reached = pending.flushes.filter { $0.target <= indexed }.map(\.continuation)
                pending.flushes.removeAll { $0.target <= indexed }
                defer { pending.waiters = 0 }
                return (pending.waiters, reached)
            }
            for _ in 0..<waiters { room.signal() }
            // A read that waited has its messages. It goes on through the queue, behind the
            // changes (tags, read flags) queued meanwhile, and ahead of indexing what arrived
            // since: this drain hands over and queues itself again.
            if !reached.isEmpty {
                for continuation in reached { queue.async { continuation.resume() } }
                queue.async { self.drain() }
                return
            }
        }
    }

    /// How long to hold off while arrivals continue; nil to index now.
    private func deferral() -> UInt64? {
        pending.withLock { pending -> UInt64? in
            guard pending.count > 0, pending.metadataBytes < Self.maxPendingMetadataBytes / 4 else { return nil }
            let now = DispatchTime.now().uptimeNanoseconds
            guard now &- pending.lastArrival < Self.quietGap, now &- pending.oldestArrival < Self.maxDeferral else { return nil }
            return Self.quietGap
        }
    }

    /// Waits until every message queued so far, and every change queued so far, is in the
    /// index: not for messages that arrive meanwhile, so a read under steady load waits for
    /// the backlog it found, never for the load to stop.
    func flush() async {
        urgent.add(1, ordering: .relaxed)
        defer { urgent.subtract(1, ordering: .relaxed) }
        wake.signal()
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            let waiting = pending.withLock { pending -> Bool in
                guard pending.indexed < pending.queued else { return false }
                pending.flushes.append((pending.queued, continuation))
                return true
            }
            // Nothing waiting to be indexed: a hop through the queue passes the queued changes.
            // Otherwise the indexer resumes this through the queue once the watermark is
            // reached, behind the changes queued before this read.
            if !waiting { queue.async { continuation.resume() } }
        }
    }

    /// Runs a change after the indexing queued before it.
    func later(_ change: @escaping @Sendable (MessageIndex) throws -> Void) {
        queue.async {
            do {
                try change(self)
            } catch {
                self.health.failed(.index, "update the index", error)
            }
        }
    }

    var count: Int {
        do {
            return try database.read { try Int.fetchOne($0, sql: "SELECT count(*) FROM message") ?? 0 }
        } catch {
            // Counted as empty: the store then rebuilds the index from the message files.
            health.failed(.index, "count indexed messages", error)
            return 0
        }
    }

    /// Every message's capture metadata, oldest first, with its read flag and tags.
    func loadAll() throws -> [(CapturedMessage, read: Bool, tags: [String])] {
        let decoder = JSONDecoder()
        return try database.read { db in
            try Row.fetchAll(db, sql: "SELECT captured, read, tags FROM message ORDER BY id").map { row in
                let captured = try decoder.decode(CapturedMessage.self, from: row["captured"] as Data)
                let tags = (try? JSONDecoder().decode([String].self, from: Data((row["tags"] as String).utf8))) ?? []
                return (captured, read: (row["read"] as Int) != 0, tags: tags)
            }
        }
    }

    func insert(_ rows: [Record]) throws {
        let encoder = JSONEncoder()
        try database.write { db in
            for row in rows {
                var summary = row.summary
                // The search text lives in the FTS table only: the row stays small, counts stay fast.
                summary.searchText = ""
                try db.execute(
                    sql: """
                        INSERT OR REPLACE INTO message (id, created, size, attachments, inlines, summary, captured, tags)
                        VALUES (?, ?, ?, ?, ?, ?, ?, ?)
                        """,
                    arguments: [
                        summary.id, summary.created.timeIntervalSince1970, summary.size, summary.attachmentCount,
                        summary.inlineCount, summary.jsonData(), try row.capturedJSON ?? encoder.encode(row.captured),
                        Self.tagsJSON(row.tags),
                    ]
                )
                let rowid = db.lastInsertedRowID
                func text(_ list: [MailAddress]) -> String {
                    list.map { "\($0.name) <\($0.address)>" }.joined(separator: ", ").lowercased()
                }
                try db.execute(
                    sql: """
                        INSERT OR REPLACE INTO message_text
                            (rowid, from_text, to_text, cc_text, bcc_text, reply_to_text, subject, message_id, search_text)
                        VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
                        """,
                    arguments: [
                        rowid, text(summary.from.map { [$0] } ?? []), text(summary.to), text(summary.cc), text(summary.bcc),
                        text(summary.replyTo), summary.subject.lowercased(), summary.messageID.lowercased(), row.summary.searchText,
                    ]
                )
                for mailbox in row.mailboxes {
                    try db.execute(
                        sql: "INSERT OR IGNORE INTO message_mailbox (mailbox, message_rowid) VALUES (?, ?)",
                        arguments: [mailbox, rowid]
                    )
                }
            }
        }
    }

    func delete(ids: [String]) throws {
        guard !ids.isEmpty else { return }
        try database.write { db in
            for id in ids {
                guard let rowid = try Int64.fetchOne(db, sql: "SELECT rowid FROM message WHERE id = ?", arguments: [id]) else { continue }
                try db.execute(sql: "DELETE FROM message_text WHERE rowid = ?", arguments: [rowid])
                try db.execute(sql: "DELETE FROM message_mailbox WHERE message_rowid = ?", arguments: [rowid])
                try db.execute(sql: "DELETE FROM message WHERE rowid = ?", arguments: [rowid])
            }
        }
    }

    func deleteAll() throws {
        try database.write { db in
            try db.execute(sql: "DELETE FROM message_text; DELETE FROM message_mailbox; DELETE FROM message;")
        }
    }

    /// Tags as the `tags` column holds them: a JSON array, slashes unescaped so `tag:` finds them.
    static func tagsJSON(_ tags: [String]) -> String {
        let encoder = JSONEncoder()
        encoder.outputFormatting = .withoutEscapingSlashes
        return (try? encoder.encode(tags)).map { String(decoding: $0, as: UTF8.self) } ?? "[]"
    }

    func setTags(_ changes: [(id: String, tags: [String])]) throws {
        guard !changes.isEmpty else { return }
        try database.write { db in
            for (id, tags) in changes {
                try db.execute(sql: "UPDATE message SET tags = ? WHERE id = ?", arguments: [Self.tagsJSON(tags), id])
            }
        }
    }

    /// Replaces a message's capture metadata (relay hops recorded after capture).
    func setCaptured(_ captured: CapturedMessage) throws {
        let json = try JSONEncoder().encode(captured)
        try database.write { db in
            try db.execute(sql: "UPDATE message SET captured = ? WHERE id = ?", arguments: [json, captured.id])
        }
    }

    func setRead(_ read: Bool, ids: [String]) throws {
        try database.write { db in
            for id in ids {
                try db.execute(sql: "UPDATE message SET read = ? WHERE id = ?", arguments: [read ? 1 : 0, id])
            }
        }
    }
}
