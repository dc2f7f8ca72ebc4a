import MailMessage
import SMTPProtocol

/// One delivery attempt: one recipient of one SMTP transaction, as the transaction ended for
/// it — accepted after the final dot, refused at RCPT, DATA or the message's end, or ended by a
/// fault rule (a disconnect, a hang, a drop).
///
/// A transaction refused at MAIL names no recipient and is no attempt (the timeline counts it);
/// a transaction the client abandons (RSET, QUIT or a closed connection before the message's
/// end, with no rule involved) is none either: nothing was answered for its recipients.
struct Attempt: Sendable, Codable, Equatable {
    /// When the transaction ended for this recipient (wall clock, nanoseconds).
    var atNanos: Int64
    var recipient: String
    /// The fault phase that decided: `rcpt`, `data`, `data-end` (the final dot), or the phase
    /// of a rule's disconnect or hang.
    var phase: String { decidedAt.rawValue }
    /// The message's `Message-ID` header, when DATA got that far.
    var messageID: String?
    /// The session, client address and sender, shared by a connection's attempts.
    var origin: Origin
    var session: String { origin.session }
    var client: String { origin.client }
    /// The envelope sender (empty for the null path `<>`).
    var sender: String { origin.sender }
    /// The message's `Subject` as written (encoded words undecoded), when DATA got that far.
    var subject: String?
    /// When the transaction's MAIL was received: the attempts of one transaction share it.
    var transactionNanos: Int64 = 0
    /// The message's size, when it reached its end.
    var size: Int {
        get { Int(storedSize) }
        set { storedSize = UInt32(clamping: newValue) }
    }
    /// What most attempts do not have, boxed: an attempt held costs a reference for it, not
    /// the 40 bytes of room (100 000 held attempts are what the audit keeps by default).
    private var unusual: Unusual?
    /// What the client was answered; nil when it got no answer (a hang, a disconnect without
    /// a reply).
    var reply: Reply?
    /// The phase, held as its case (a byte, last with the reply: no padding; not a string's 16).
    var decidedAt: FaultPhase
    /// The size in 32 bits, beside the reply and phase at the end (no padding of its own).
    private var storedSize: UInt32

    /// The fault (a rule's name, or a built-in fault such as `+fail-451`) that decided.
    var rule: String? { unusual?.rule }
    /// A greylisting rule's `retry_after`, in seconds.
    var retryAfter: Double? { unusual?.retryAfter }
    /// Answered 250 by a `drop` rule and not kept.
    var dropped: Bool { unusual?.dropped ?? false }
    /// The mailboxes the attempt belongs to (AUTH user, plus tag, `X-Swallow-Mailbox`).
    var mailboxes: [String] { unusual?.mailboxes ?? [] }

    /// Where an attempt came from: its session, the client's address and the envelope sender.
    /// One per connection and sender, referenced by its attempts (the three strings held by
    /// each attempt were 40 bytes more of each).
    final class Origin: Sendable, Equatable {
        let session: String
        let client: String
        let sender: String

        init(session: String, client: String, sender: String) {
            self.session = session
            self.client = client
            self.sender = sender
        }

        static func == (lhs: Origin, rhs: Origin) -> Bool {
            lhs === rhs || (lhs.session == rhs.session && lhs.client == rhs.client && lhs.sender == rhs.sender)
        }
    }

    private final class Unusual: Sendable, Equatable {
        let rule: String?
        let retryAfter: Double?
        let dropped: Bool
        let mailboxes: [String]

        /// Nil when there is nothing unusual.
        static func make(rule: String?, retryAfter: Double?, dropped: Bool, mailboxes: [String]) -> Unusual? {
            rule == nil && retryAfter == nil && !dropped && mailboxes.isEmpty
                ? nil : Unusual(rule: rule, retryAfter: retryAfter, dropped: dropped, mailboxes: mailboxes)
        }

        private init(rule: String?, retryAfter: Double?, dropped: Bool, mailboxes: [String]) {
            self.rule = rule
            self.retryAfter = retryAfter
            self.dropped = dropped
            self.mailboxes = mailboxes
        }

        static func == (lhs: Unusual, rhs: Unusual) -> Bool {
            lhs === rhs
                || (lhs.rule == rhs.rule && lhs.retryAfter == rhs.retryAfter && lhs.dropped == rhs.dropped && lhs.mailboxes == rhs.mailboxes)
        }
    }

    /// The reply as written: kept whole (its lines are shared, not copied) and spelled out as
    /// `Code`, `EnhancedCode` and `Text` only when encoded. The usual acceptance, `250 2.0.0 Ok:
    /// queued as ID`, is kept as the stored message's id alone (shared with the message): its
    /// text and lines were two allocations per attempt held (measured with 100 000 held messages).
    struct Reply: Sendable, Codable, Equatable {
        /// Any other reply, boxed: held inline it made every attempt 32 bytes larger.
        private final class Other: Sendable {
            let reply: SMTPReply
            init(_ reply: SMTPReply) { self.reply = reply }
        }

        private enum Storage: Sendable {
            case reply(Other)
            case queued(id: String)
        }

        private var storage: Storage

        /// `queuedAs`: the id of the message this reply accepted, if it did.
        init(_ reply: SMTPReply, queuedAs id: String? = nil) {
            if let id, Self.isQueued(reply, id: id) {
                storage = .queued(id: id)
            } else {
                storage = .reply(Other(reply))
            }
        }

        init(code: Int, enhanced: String?, text: String) {
            storage = .reply(Other(SMTPReply(code, enhanced, text)))
        }

        var smtp: SMTPReply {
            switch storage {
            case .reply(let other): other.reply
            case .queued(let id): .queued(id: id)
            }
        }

        var code: Int {
            switch storage {
            case .reply(let other): Int(other.reply.code.rawValue)
            case .queued: 250
            }
        }

        /// Held as the stored message's id alone.
        var keptAsQueuedID: Bool {
            if case .queued = storage { return true }
            return false
        }

        var enhanced: String? { smtp.enhanced?.description }
        var text: String { smtp.lines.joined(separator: " ") }

        static func == (lhs: Reply, rhs: Reply) -> Bool { lhs.smtp == rhs.smtp }

        private static func isQueued(_ reply: SMTPReply, id: String) -> Bool {
            let prefix = "Ok: queued as "
            guard reply.code == .ok, reply.enhanced == EnhancedStatusCode(2, 0, 0), reply.lines.count == 1 else { return false }
            let line = reply.lines[0]
            return line.utf8.count == prefix.utf8.count + id.utf8.count && line.hasPrefix(prefix) && line.hasSuffix(id)
        }

        init(from decoder: any Decoder) throws {
            let container = try decoder.container(keyedBy: CodingKeys.self)
            self.init(
                code: try container.decode(Int.self, forKey: .code), enhanced: try container.decodeIfPresent(String.self, forKey: .enhanced),
                text: try container.decode(String.self, forKey: .text))
        }

        func encode(to encoder: any Encoder) throws {
            var container = encoder.container(keyedBy: CodingKeys.self)
            try container.encode(code, forKey: .code)
            try container.encode(enhanced, forKey: .enhanced)
            try container.encode(text, forKey: .text)
        }

        enum CodingKeys: String, CodingKey {
            case code = "Code", enhanced = "EnhancedCode", text = "Text"
        }
    }

    /// `2xx`, `4xx`, `5xx`, or `none` (no answer).
    /// `2xx`, `4xx`, `5xx`...: a literal for the usual classes (an interpolation per attempt
    /// showed in `perf record`, where every accepted message records one).
    var replyClass: String {
        guard let reply else { return "none" }
        switch reply.code / 100 {
        case 2: return "2xx"
        case 4: return "4xx"
        case 5: return "5xx"
        case let other: return "\(other)xx"
        }
    }

    /// The client was told the message was taken (a drop rule's 250 included).
    var accepted: Bool { reply.map { $0.code / 100 == 2 } ?? false }
    var temporary: Bool { reply.map { $0.code / 100 == 4 } ?? false }
    var permanent: Bool { reply.map { $0.code / 100 == 5 } ?? false }

    /// The form kept with `--data` (one JSON object a line): the time as nanoseconds.
    enum CodingKeys: String, CodingKey {
        case atNanos = "AtNanos", sender = "Sender", recipient = "Recipient", phase = "Phase", reply = "Reply"
        case messageID = "MessageID", rule = "Rule", session = "Session", client = "Client", retryAfter = "RetryAfter"
        case dropped = "Dropped", mailboxes = "Mailboxes", subject = "Subject", transactionNanos = "TransactionAtNanos", size = "Size"
    }

    init(
        atNanos: Int64, recipient: String, phase: FaultPhase, reply: Reply?, messageID: String? = nil,
        rule: String? = nil, origin: Origin, retryAfter: Double? = nil, dropped: Bool = false,
        mailboxes: [String] = [], subject: String? = nil, transactionNanos: Int64 = 0, size: Int = 0
    ) {
        self.atNanos = atNanos
        self.recipient = recipient
        self.decidedAt = phase
        self.reply = reply
        self.messageID = messageID
        self.origin = origin
        self.unusual = Unusual.make(rule: rule, retryAfter: retryAfter, dropped: dropped, mailboxes: mailboxes)
        self.subject = subject
        self.transactionNanos = transactionNanos
        self.storedSize = UInt32(clamping: size)
    }

    init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        atNanos = try container.decode(Int64.self, forKey: .atNanos)
        recipient = try container.decode(String.self, forKey: .recipient)
        let phase = try container.decode(String.self, forKey: .phase)
        guard let decidedAt = FaultPhase(rawValue: phase) else {
            throw DecodingError.dataCorruptedError(forKey: .phase, in: container, debugDescription: "no such phase: \(phase)")
        }
        self.decidedAt = decidedAt
        reply = try container.decodeIfPresent(Reply.self, forKey: .reply)
        messageID = try container.decodeIfPresent(String.self, forKey: .messageID)
        origin = Origin(
            session: try container.decodeIfPresent(String.self, forKey: .session) ?? "",
            client: try container.decodeIfPresent(String.self, forKey: .client) ?? "",
            sender: try container.decode(String.self, forKey: .sender))
        unusual = Unusual.make(
            rule: try container.decodeIfPresent(String.self, forKey: .rule),
            retryAfter: try container.decodeIfPresent(Double.self, forKey: .retryAfter),
            dropped: try container.decodeIfPresent(Bool.self, forKey: .dropped) ?? false,
            mailboxes: try container.decodeIfPresent([String].self, forKey: .mailboxes) ?? [])
        subject = try container.decodeIfPresent(String.self, forKey: .subject)
        transactionNanos = try container.decodeIfPresent(Int64.self, forKey: .transactionNanos) ?? atNanos
        storedSize = UInt32(clamping: try container.decodeIfPresent(Int.self, forKey: .size) ?? 0)
    }

    func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(atNanos, forKey: .atNanos)
        try container.encode(sender, forKey: .sender)
        try container.encode(recipient, forKey: .recipient)
        try container.encode(phase, forKey: .phase)
        try container.encodeIfPresent(reply, forKey: .reply)
        try container.encodeIfPresent(messageID, forKey: .messageID)
        try container.encodeIfPresent(rule, forKey: .rule)
        try container.encode(session, forKey: .session)
        try container.encode(client, forKey: .client)
        try container.encodeIfPresent(retryAfter, forKey: .retryAfter)
        try container.encode(dropped, forKey: .dropped)
        try container.encode(mailboxes, forKey: .mailboxes)
        try container.encodeIfPresent(subject, forKey: .subject)
        try container.encode(transactionNanos, forKey: .transactionNanos)
        try container.encode(size, forKey: .size)
    }
}

extension Attempt: JSONLine {
    /// As `encode(to:)` with `JSONEncoder`'s `.sortedKeys`, which `attempts.jsonl` was first
    /// written with.
    func writeJSON(_ out: inout JSONWriter) {
        out.object {
            $0.field("AtNanos") { $0.number(atNanos) }
            $0.field("Client") { $0.string(client) }
            $0.field("Dropped") { $0.bool(dropped) }
            $0.field("Mailboxes") { $0.strings(mailboxes) }
            if let messageID { $0.field("MessageID") { $0.string(messageID) } }
            $0.field("Phase") { $0.string(phase) }
            $0.field("Recipient") { $0.string(recipient) }
            if let reply {
                $0.field("Reply") { writer in
                    writer.object {
                        $0.field("Code") { $0.number(Int64(reply.code)) }
                        $0.field("EnhancedCode") { writer in
                            if let enhanced = reply.enhanced { writer.string(enhanced) } else { writer.null() }
                        }
                        $0.field("Text") { $0.string(reply.text) }
                    }
                }
            }
            if let retryAfter { $0.field("RetryAfter") { $0.double(retryAfter) } }
            if let rule { $0.field("Rule") { $0.string(rule) } }
            $0.field("Sender") { $0.string(sender) }
            $0.field("Session") { $0.string(session) }
            $0.field("Size") { $0.number(Int64(size)) }
            if let subject { $0.field("Subject") { $0.string(subject) } }
            $0.field("TransactionAtNanos") { $0.number(transactionNanos) }
        }
    }
}

/// The audit flags: what an application did wrong about a failure (`Flags` of a delivery).
enum DeliveryFlag: String, CaseIterable, Sendable, Codable, Comparable {
    /// Another attempt after a 5xx to the same recipient for the same message.
    case retryAfterPermanent = "retry-after-permanent"
    /// A new message to an address that bounced within `--bounce-memory`.
    case sentAfterBounce = "sent-after-bounce"
    /// A retry after a 4xx sooner than `--min-retry-interval` or a greylisting rule's `retry_after`.
    case retryTooSoon = "retry-too-soon"
    /// Three or more retries whose intervals never grow.
    case noBackoff = "no-backoff"
    /// Deferred with a 4xx, then no attempt for `--give-up-after`.
    case gaveUp = "gave-up"

    static func < (lhs: DeliveryFlag, rhs: DeliveryFlag) -> Bool {
        allCases.firstIndex(of: lhs)! < allCases.firstIndex(of: rhs)!
    }
}
