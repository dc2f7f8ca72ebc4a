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
    private let database: DatabasePool
    let path: String

    // Indexing happens behind the `250`, in batches, on one queue: parsing and SQLite cost
    // nothing on the SMTP path. `flush()` gives the API read-your-writes.
    private struct Pending {
        var messages: [(CapturedMessage, ByteBuffer?, Data?)] = []
        var bytes = 0
        var waiters = 0
        var scheduled = false
    }

    private let pending = Mutex(Pending())
    private let queue = DispatchQueue(label: "swallow.index")
    /// At most this many bytes of messages wait for the index; past it the disk writer waits
    /// (and so the `250`): a burst is absorbed, memory stays bounded when the index cannot keep up.
    static let maxPendingBytes = 64 * 1024 * 1024
    private let room = DispatchSemaphore(value: 0)

    /// One message as the index stores it.
    struct Record: Sendable {
        var captured: CapturedMessage
        var summary: MessageSummary
        var mailboxes: [String]
        /// The captured metadata as JSON, when the caller has it already (the `.json` file).
        var capturedJSON: Data?

        /// Parses the message to make its summary.
        init(_ captured: CapturedMessage, raw: ByteBuffer?, capturedJSON: Data? = nil) {
            self.captured = captured
            self.capturedJSON = capturedJSON
            self.summary = MessageSummary(captured: captured, parsed: raw.map { ParsedMessage(bytes: Array($0.readableBytesView)) })
            self.mailboxes = Mailboxes.names(for: captured)
        }
    }

    init(path: String) throws {
        self.path = path
        var configuration = Configuration()
        configuration.prepareDatabase { db in
            // Rebuildable from the message files: no fsync of its own.
            try db.execute(sql: "PRAGMA synchronous = OFF")
        }
        database = try DatabasePool(path: path, configuration: configuration)
        try database.write { db in
            try db.execute(sql: """
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
                CREATE TABLE IF NOT EXISTS message_mailbox (
                    mailbox TEXT NOT NULL,
                    message_rowid INTEGER NOT NULL,
                    PRIMARY KEY (mailbox, message_rowid)
                ) WITHOUT ROWID;
                CREATE VIRTUAL TABLE IF NOT EXISTS message_text USING fts5(
                    from_text, to_text, cc_text, bcc_text, reply_to_text, subject, message_id, search_text,
                    tokenize = 'trigram'
                );
                """)
        }
    }

    /// Queues a stored message for indexing.
    func enqueue(_ message: CapturedMessage, raw: ByteBuffer?, metadata: Data?) {
        let size = (raw?.readableBytes ?? 0) + (metadata?.count ?? 0)
        while true {
            let (admitted, schedule) = pending.withLock { pending -> (Bool, Bool) in
                guard pending.messages.isEmpty || pending.bytes + size <= Self.maxPendingBytes else {
                    pending.waiters += 1
                    return (false, false)
                }
                pending.messages.append((message, raw, metadata))
                pending.bytes += size
                defer { pending.scheduled = true }
                return (true, !pending.scheduled)
            }
            if schedule { queue.async { self.drain() } }
            if admitted { return }
            room.wait()
        }
    }

    private func drain() {
        // Accepting mail comes first: the indexer runs at a lower priority while it drains
        // (Linux applies nice per thread), so under load it falls behind rather than slowing the `250`s.
        let thread = systemGettid()
        let previous = getpriority(__priority_which_t(PRIO_PROCESS.rawValue), UInt32(thread))
        setpriority(__priority_which_t(PRIO_PROCESS.rawValue), UInt32(thread), 10)
        defer { setpriority(__priority_which_t(PRIO_PROCESS.rawValue), UInt32(thread), previous) }
        while true {
            let batch = pending.withLock { pending in
                let batch = pending.messages.prefix(256)
                if batch.isEmpty { pending.scheduled = false }
                return Array(batch)
            }
            guard !batch.isEmpty else { return }
            try? insert(batch.map { Record($0.0, raw: $0.1, capturedJSON: $0.2) })
            let freed = batch.reduce(0) { $0 + ($1.1?.readableBytes ?? 0) + ($1.2?.count ?? 0) }
            let waiters = pending.withLock { pending in
                pending.messages.removeFirst(batch.count)
                pending.bytes -= freed
                defer { pending.waiters = 0 }
                return pending.waiters
            }
            for _ in 0..<waiters { room.signal() }
        }
    }

    /// Waits until every message queued so far, and every queued change, is in the index.
    func flush() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            queue.async { continuation.resume() }
        }
    }

    /// Runs a change after the indexing queued before it.
    func later(_ change: @escaping @Sendable (MessageIndex) throws -> Void) {
        queue.async { try? change(self) }
    }

    var count: Int {
        (try? database.read { try Int.fetchOne($0, sql: "SELECT count(*) FROM message") ?? 0 }) ?? 0
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
                        INSERT OR REPLACE INTO message (id, created, size, attachments, inlines, summary, captured)
                        VALUES (?, ?, ?, ?, ?, ?, ?)
                        """,
                    arguments: [
                        summary.id, summary.created.timeIntervalSince1970, summary.size, summary.attachmentCount,
                        summary.inlineCount, try encoder.encode(summary), try row.capturedJSON ?? encoder.encode(row.captured),
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

    func setRead(_ read: Bool, ids: [String]) throws {
        try database.write { db in
            for id in ids {
                try db.execute(sql: "UPDATE message SET read = ? WHERE id = ?", arguments: [read ? 1 : 0, id])
            }
        }
    }

    // MARK: Queries

    /// SQL for a search: a WHERE clause over `m` (message) and `t` (message_text), and its arguments.
    private static func condition(mailbox: String?, search: SearchQuery?) -> (String, [any DatabaseValueConvertible]) {
        var clauses: [String] = []
        var arguments: [any DatabaseValueConvertible] = []
        if let mailbox {
            clauses.append("m.rowid IN (SELECT message_rowid FROM message_mailbox WHERE mailbox = ?)")
            arguments.append(mailbox)
        }
        func like(_ column: String, _ value: String) -> String {
            // A plain LIKE is answered by the trigram index; an ESCAPE clause would turn that
            // off, so a term holding a LIKE wildcard is matched with instr() instead (a scan).
            if value.contains("%") || value.contains("_") {
                arguments.append(value)
                return "instr(lower(\(column)), ?) > 0"
            }
            arguments.append("%\(value)%")
            return "\(column) LIKE ?"
        }
        for (term, negated) in search?.terms ?? [] {
            let clause: String
            switch term {
            case .text(let text): clause = like("t.search_text", text)
            case .field(let name, let value):
                switch name {
                case "to": clause = like("t.to_text", value)
                case "from": clause = like("t.from_text", value)
                case "cc": clause = like("t.cc_text", value)
                case "bcc": clause = like("t.bcc_text", value)
                case "reply-to": clause = like("t.reply_to_text", value)
                case "subject": clause = like("t.subject", value)
                case "message-id": clause = like("t.message_id", value.trimmingCharacters(in: CharacterSet(charactersIn: "<>")))
                case "tag": clause = like("lower(m.tags)", "\"\(value)\"")
                default:
                    let columns = ["t.from_text", "t.to_text", "t.cc_text", "t.bcc_text", "t.reply_to_text"]
                    clause = "(" + columns.map { like($0, value) }.joined(separator: " OR ") + ")"
                }
            case .isRead(let read): clause = read ? "m.read = 1" : "m.read = 0"
            case .isTagged: clause = "m.tags != '[]'"
            case .hasAttachment: clause = "m.attachments > 0"
            case .hasInline: clause = "m.inlines > 0"
            case .larger(let size):
                clause = "m.size >= ?"
                arguments.append(size)
            case .smaller(let size):
                clause = "m.size <= ?"
                arguments.append(size)
            case .after(let date):
                clause = "m.created > ?"
                arguments.append(date.timeIntervalSince1970)
            case .before(let date):
                clause = "m.created < ?"
                arguments.append(date.timeIntervalSince1970)
            }
            clauses.append(negated ? "NOT (\(clause))" : clause)
        }
        return (clauses.isEmpty ? "1" : clauses.joined(separator: " AND "), arguments)
    }

    func page(mailbox: String?, search: SearchQuery?, start: Int, limit: Int) throws -> MessageStore.Page {
        let (mailboxWhere, mailboxArguments) = Self.condition(mailbox: mailbox, search: nil)
        let (where_, arguments) = Self.condition(mailbox: mailbox, search: search)
        let join = search.map { !$0.terms.isEmpty } == true ? "JOIN message_text t ON t.rowid = m.rowid" : ""
        let decoder = JSONDecoder()
        return try database.read { db in
            let totals = try Row.fetchOne(
                db, sql: "SELECT count(*) AS total, coalesce(sum(m.read = 0), 0) AS unread FROM message m WHERE \(mailboxWhere)",
                arguments: StatementArguments(mailboxArguments)
            )
            let matches = search == nil ? totals : try Row.fetchOne(
                db, sql: "SELECT count(*) AS total, coalesce(sum(m.read = 0), 0) AS unread FROM message m \(join) WHERE \(where_)",
                arguments: StatementArguments(arguments)
            )
            let rows = try Row.fetchAll(
                db,
                sql: """
                    SELECT m.summary, m.captured, m.read, m.tags FROM message m \(join) WHERE \(where_)
                    ORDER BY m.created DESC, m.id DESC LIMIT ? OFFSET ?
                    """,
                arguments: StatementArguments(arguments + [limit == 0 ? -1 : limit, start])
            )
            var items: [MessageStore.Page.Item] = []
            for row in rows {
                let captured = try decoder.decode(CapturedMessage.self, from: row["captured"] as Data)
                let summary = try decoder.decode(MessageSummary.self, from: row["summary"] as Data)
                let tags = (try? decoder.decode([String].self, from: Data((row["tags"] as String).utf8))) ?? []
                let listing = MessageStore.Listing(
                    message: captured, read: (row["read"] as Int) != 0, tags: tags, mailboxes: Mailboxes.names(for: captured)
                )
                items.append(MessageStore.Page.Item(listing: listing, summary: summary))
            }
            return MessageStore.Page(
                items: items,
                total: totals?["total"] ?? 0,
                unread: totals?["unread"] ?? 0,
                matches: matches?["total"] ?? 0,
                matchesUnread: matches?["unread"] ?? 0,
                tags: []
            )
        }
    }
}

/// `gettid(2)`: the kernel thread id, which `setpriority` takes to nice one thread.
@_silgen_name("gettid")
private func systemGettid() -> Int32
