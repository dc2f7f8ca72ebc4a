import Foundation
import GRDB
import MailMessage

// A search compiled to SQL over the index: the same `SearchQuery` the memory store evaluates in
// Swift (`SearchQuery.matches`), so both answer alike.
extension MessageIndex {
    /// SQL for a search: a WHERE clause over `m` (message) and `t` (message_text), and its arguments.
    static func condition(mailbox: String?, search: SearchQuery?) -> (String, [any DatabaseValueConvertible]) {
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
            let matches =
                search == nil
                ? totals
                : try Row.fetchOne(
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
                    message: captured, read: (row["read"] as Int) != 0, tags: tags, mailboxes: MailboxFiling.names(for: captured)
                )
                items.append(MessageStore.Page.Item(listing: listing, summary: summary))
            }
            // Every tag in use in the mailbox, as Mailpit lists them beside a page.
            let tagLists = try String.fetchAll(
                db, sql: "SELECT DISTINCT m.tags FROM message m WHERE m.tags != '[]' AND \(mailboxWhere)",
                arguments: StatementArguments(mailboxArguments)
            )
            let tags = Tagging.normalized(tagLists.flatMap { (try? decoder.decode([String].self, from: Data($0.utf8))) ?? [] })
            return MessageStore.Page(
                items: items,
                total: totals?["total"] ?? 0,
                unread: totals?["unread"] ?? 0,
                matches: matches?["total"] ?? 0,
                matchesUnread: matches?["unread"] ?? 0,
                tags: tags
            )
        }
    }
}
