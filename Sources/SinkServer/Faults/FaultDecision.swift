import MailMessage
import NIOCore
import SMTPProtocol

/// What the sink knows at a phase, for deciding faults.
///
/// The addresses are held as the session parsed them (`senderPath`, `recipientPaths`); their
/// text forms, which rules match on, are filled in only when some rule is in force at the
/// phase (`withText()`), so the built-in faults cost no string per command.
struct FaultEvent {
    var phase: FaultPhase
    var client: String
    var helo: String?
    var authUser: String?
    var senderPath: ReversePath?
    /// At `rcpt` the command's recipient; at `data` and `data-end` every accepted one.
    var recipientPaths: [ForwardPath] = []
    var sender: String?
    var recipients: [String] = []
    /// At `data-end`: the message as received, for `header` matches.
    var message: ByteBuffer?
    /// The mailboxes known at this phase (the AUTH user from `mail`, plus tags from `rcpt`,
    /// the `X-Swallow-Mailbox` header at `data-end`): a mailbox's own rules match only these.
    var mailboxes: [String] = []

    init(
        phase: FaultPhase, client: String, helo: String? = nil, authUser: String? = nil,
        sender: String? = nil, recipients: [String] = [], message: ByteBuffer? = nil
    ) {
        self.phase = phase
        self.client = client
        self.helo = helo
        self.authUser = authUser
        self.sender = sender
        self.recipients = recipients
        self.message = message
    }

    init(
        phase: FaultPhase, client: String, helo: String?, authUser: String?,
        senderPath: ReversePath?, recipientPaths: [ForwardPath], message: ByteBuffer?
    ) {
        self.phase = phase
        self.client = client
        self.helo = helo
        self.authUser = authUser
        self.senderPath = senderPath
        self.recipientPaths = recipientPaths
        self.message = message
    }

    /// The same event with the addresses as text and the mailboxes it belongs to, for rules.
    func withText() -> FaultEvent {
        var event = self
        event.sender = senderPath?.address
        event.recipients = recipientPaths.map(\.address)
        event.mailboxes = event.knownMailboxes()
        return event
    }

    /// The first value of the message's header `name`.
    func header(_ name: String) -> String? {
        Self.header(name, in: message)
    }

    static func header(_ name: String, in message: ByteBuffer?) -> String? {
        message.flatMap { body in body.withUnsafeReadableBytes { HeaderLookup.firstValue(named: name, in: $0) } }
    }

    /// The mailboxes this event is known to belong to: the AUTH user from `mail` on, the
    /// recipients' plus tags from `rcpt`, the `X-Swallow-Mailbox` header at `data-end`.
    func knownMailboxes() -> [String] {
        var names: [String] = []
        switch phase {
        case .mail, .rcpt, .data, .dataEnd, .quit, .upstream: break
        default: return names
        }
        if let user = authUser, !user.isEmpty { names.append(user) }
        for recipient in recipients where recipient.utf8.contains(UInt8(ascii: "@")) {
            if let detail = Mailbox.detail(ofAddress: recipient), !names.contains(String(detail)) { names.append(String(detail)) }
        }
        if let header = header("X-Swallow-Mailbox"), !header.isEmpty, !names.contains(header) { names.append(header) }
        return names
    }
}

/// What decided a fault, and what it decided: how long to wait, and what to do then.
public struct FaultDecision: Sendable {
    /// The rule's name; for a built-in fault, the feature (`bounce@`, `+fail-451`, ...).
    public var rule: String
    public var phase: FaultPhase
    /// How long to wait before the effect (or before going on as normal).
    public var delay: Duration
    /// nil: only the delay.
    public var effect: FaultAction.Effect?
    /// A built-in fault (magic address, plus tag, header) rather than a rule.
    public var builtIn = false
    /// A greylisting rule's `retry_after` (seconds), for the audit's `retry-too-soon`.
    public var retryAfter: Double?

    /// Whether the effect answers in place of the session (otherwise the command goes on).
    var answers: Bool {
        switch effect {
        case .reply, .disconnect, .hang: true
        case .throttle, .drop, .greylist, nil: false
        }
    }

    /// This decision, then `later`'s: when this one lets the command go on, `later` may still
    /// answer it; the delays add up.
    func then(_ later: FaultDecision?) -> FaultDecision {
        guard let later, !answers else { return self }
        var merged = self
        merged.delay += later.delay
        if later.effect != nil { merged.effect = later.effect }
        return merged
    }
}

/// Where fault decisions come from: the rule engine, and the faults built into the sink.
/// Each decides from the event alone (a pure function of it and the source's own state).
protocol FaultSource {
    func decide(_ event: FaultEvent) -> FaultDecision?
}
