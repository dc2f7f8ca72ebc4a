import MailMessage
import NIOCore
import SMTPProtocol

// The connection's side of the delivery audit: how each transaction ended for each recipient
// (an attempt) and the timeline's counts. The handler calls these where it answers: a command's
// reply (`execute`, `refuse`), a rule's disconnect or hang, and the message's end.
extension SMTPServerHandler {
    /// What the message's header says, read once at its end for the attempts.
    struct MessageHeaders {
        var messageID: String?
        var subject: String?
        var mailbox: String?

        init() {}

        /// From the fields the capture read for the message (one pass over the header
        /// section for both).
        init(_ fields: MessageCapture.HeaderFields) {
            (messageID, subject, mailbox) = (fields.messageID, fields.subject, fields.mailbox)
        }
    }

    var audit: DeliveryAudit { shared.audit }

    /// The connection's attempts from one sender share one origin (made again when the sender
    /// or the peer changes).
    func attemptOrigin(sender: String) -> Attempt.Origin {
        if let origin = lastOrigin, origin.sender == sender, origin.session == peer.sessionID, origin.client == peer.remoteIP {
            return origin
        }
        let origin = Attempt.Origin(session: peer.sessionID, client: peer.remoteIP, sender: sender)
        lastOrigin = origin
        return origin
    }

    /// A transaction command was answered with `reply`: a refusal of MAIL counts in the
    /// timeline; of RCPT, an attempt for its recipient; of DATA or BDAT, an attempt for every
    /// recipient accepted.
    func audited(_ command: SMTPCommand, transaction: SMTPSession.Transaction?, reply: SMTPReply, fault: FaultDecision?) {
        let code = Int(reply.code.rawValue)
        guard code >= 400 else { return }
        let now = wallNanos
        switch command {
        case .mail:
            audit.timeline.refused(atNanos: now, code: code)
        case .rcpt(let path, _):
            guard let transaction else { return }
            audit.timeline.refused(atNanos: now, code: code)
            record(transaction, recipients: [path.address], phase: .rcpt, reply: reply, fault: fault, at: now)
        case .data, .bdat:
            guard let transaction, !transaction.recipients.isEmpty else { return }
            audit.timeline.refused(atNanos: now, code: code)
            record(transaction, recipients: transaction.recipients.map(\.path.address), phase: .data, reply: reply, fault: fault, at: now)
        default:
            return
        }
    }

    /// A rule's disconnect or hang ended the transaction under way (at `phase`, answering
    /// `command` when there was one): an attempt for each recipient it had, with the reply
    /// written before the close if any.
    func auditedEnd(by fault: FaultDecision, reply: SMTPReply?, command: SMTPCommand?) {
        guard let transaction = session.transaction else { return }
        var recipients = transaction.recipients.map(\.path.address)
        if case .rcpt(let path, _)? = command { recipients.append(path.address) }
        guard !recipients.isEmpty else { return }
        let now = wallNanos
        if let reply, reply.code.rawValue >= 400 {
            audit.timeline.refused(atNanos: now, code: Int(reply.code.rawValue))
        } else {
            audit.timeline.dropped(atNanos: now)
        }
        record(transaction, recipients: recipients, phase: fault.phase, reply: reply, fault: fault, at: now)
    }

    /// The message's end was answered without it being stored: refused, dropped or ended by
    /// a rule, for the transaction's recipients.
    func auditedMessageEnd(
        _ transaction: SMTPSession.Transaction, reply: SMTPReply?, fault: FaultDecision?, headers: MessageHeaders, size: Int,
        dropped: Bool = false
    ) {
        let now = wallNanos
        countMessageEnd(reply: reply, dropped: dropped, size: size, mailNanos: transaction.mailNanos, at: now)
        record(
            transaction, recipients: transaction.recipients.lazy.map(\.path.address), phase: .dataEnd, reply: reply, fault: fault, at: now,
            headers: headers, dropped: dropped, size: size)
    }

    /// The end of `message` (captured) was answered with `reply`: accepted, or refused after
    /// all (a proxy's upstream, a store failure). Its envelope's strings are reused (no copies
    /// made), and nothing is read from the session's transaction (a copy of it to read its
    /// start was a retain and a release of each of its references). `storedID`: the id it was
    /// stored under, which an acceptance's reply names.
    func auditedMessageEnd(of message: CapturedMessage, reply: SMTPReply, headers: MessageHeaders, storedID: String? = nil) {
        let now = wallNanos
        let mailNanos = message.timestamps.mailNanos
        countMessageEnd(reply: reply, dropped: false, size: message.size, mailNanos: mailNanos, at: now)
        record(
            mailNanos: mailNanos, sender: message.envelope.mailFrom, recipients: message.envelope.recipients.lazy.map(\.address),
            phase: .dataEnd, reply: reply, fault: nil, at: now, headers: headers, size: message.size, storedID: storedID)
    }

    private func countMessageEnd(reply: SMTPReply?, dropped: Bool, size: Int, mailNanos: Int64, at now: Int64) {
        if dropped || reply == nil {
            audit.timeline.dropped(atNanos: now)
        } else if let reply, reply.code.rawValue >= 400 {
            audit.timeline.refused(atNanos: now, code: Int(reply.code.rawValue))
        } else {
            audit.timeline.accepted(atNanos: now, bytes: size, transactionNanos: now - mailNanos)
        }
    }

    private func record(
        _ transaction: SMTPSession.Transaction, recipients: some Sequence<String>, phase: FaultPhase, reply: SMTPReply?, fault: FaultDecision?,
        at now: Int64, headers: MessageHeaders? = nil, dropped: Bool = false, size: Int = 0
    ) {
        record(
            mailNanos: transaction.mailNanos, sender: transaction.reversePath.address, recipients: recipients, phase: phase, reply: reply,
            fault: fault, at: now, headers: headers, dropped: dropped, size: size)
    }

    private func record(
        mailNanos: Int64, sender: String, recipients: some Sequence<String>, phase: FaultPhase, reply: SMTPReply?, fault: FaultDecision?,
        at now: Int64, headers: MessageHeaders? = nil, dropped: Bool = false, size: Int = 0, storedID: String? = nil
    ) {
        let log = audit.attempts
        guard log.enabled else { return }
        var mailboxes: [String] = []
        if let user = session.authUser, !user.isEmpty { mailboxes.append(user) }
        if let header = headers?.mailbox, !header.isEmpty, !mailboxes.contains(header) { mailboxes.append(header) }
        let answered = reply.map { Attempt.Reply($0, queuedAs: storedID) }
        let origin = attemptOrigin(sender: sender)
        for recipient in recipients {
            var boxes = mailboxes
            if recipient.utf8.contains(UInt8(ascii: "@")), let detail = Mailbox.detail(ofAddress: recipient), !boxes.contains(String(detail)) {
                boxes.append(String(detail))
            }
            log.record(
                Attempt(
                    atNanos: now, recipient: recipient, phase: phase, reply: answered, messageID: headers?.messageID,
                    rule: fault?.rule, origin: origin, retryAfter: fault?.retryAfter,
                    dropped: dropped, mailboxes: boxes, subject: headers?.subject, transactionNanos: mailNanos,
                    size: size))
        }
    }
}
