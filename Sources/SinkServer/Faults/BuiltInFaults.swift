import MailMessage
import NIOCore
import SMTPProtocol

/// The faults that ship with the sink, decided like rules (on unless `--no-magic-addresses`):
/// magic recipient addresses (`MagicAddress`), plus tags (`PlusTagFault`) and a message's own
/// `X-Swallow-Fault` header (`HeaderFault`). They are consulted after the rule set: a rule
/// that answers wins; a rule that only delays (or throttles) lets them answer after its delay.
///
/// | phase | what decides |
/// |---|---|
/// | `mail` | the sender's `+fail-NNN` |
/// | `rcpt` | the recipient's `+fail-NNN`, then `bounce@`, `tempfail@`, `full@`, `disconnect@`, `hang@` |
/// | `data-end` | `reject@` among the recipients; the `X-Swallow-Fault` header's reply and delay; the longest of `slow-D@`, `+delay-D` and the header's delay |
///
/// The connection asks at MAIL and RCPT only when the session would accept the command (in
/// sequence, authenticated if required, under the recipient limit): a built-in fault never
/// hides a protocol error. Parameter errors of a command that also carries a fault tag are
/// answered by the fault (its address is the test's intent).
struct BuiltInFaults: FaultSource {
    /// The phases at which built-in faults can act.
    static func acts(at phase: FaultPhase) -> Bool {
        switch phase {
        case .mail, .rcpt, .dataEnd: true
        default: false
        }
    }

    private static let faultHeader = Array("x-swallow-fault".utf8)

    func decide(_ event: FaultEvent) -> FaultDecision? {
        switch event.phase {
        case .mail, .rcpt:
            return Self.decide(at: event.phase, sender: event.senderPath, recipient: event.recipientPaths.first)
        case .dataEnd:
            return Self.decideAtDataEnd(sender: event.senderPath, recipients: event.recipientPaths, message: event.message)
        default:
            return nil
        }
    }

    /// At MAIL or RCPT, from the two paths alone: the connection asks this way when no rule
    /// is set, without making a `FaultEvent` (~1.5% of the sink's CPU per 1 KiB message).
    static func decide(at phase: FaultPhase, sender: ReversePath?, recipient: ForwardPath?) -> FaultDecision? {
        switch phase {
        case .mail:
            guard let sender, let tag = PlusTagFault(sender), let reply = tag.reply else { return nil }
            return FaultDecision(rule: tag.name, phase: .mail, delay: .zero, effect: .reply(reply), builtIn: true)
        case .rcpt:
            guard let recipient else { return nil }
            if let tag = PlusTagFault(recipient), let reply = tag.reply {
                return FaultDecision(rule: tag.name, phase: .rcpt, delay: .zero, effect: .reply(reply), builtIn: true)
            }
            guard let magic = MagicAddress(recipient), let effect = magic.rcptEffect else { return nil }
            return FaultDecision(rule: magic.name, phase: .rcpt, delay: .zero, effect: effect, builtIn: true)
        default:
            return nil
        }
    }

    // One pass over the recipients, no arrays made: it runs for every message (the lists of
    // magic addresses and plus tags it made were most of the built-in faults' cost, ~2% of
    // the sink's CPU per 1 KiB message in `perf record`). The connection asks this way when
    // no rule is set, without making a `FaultEvent` (its list of recipients was a `malloc` per
    // message).
    static func decideAtDataEnd(sender: ReversePath?, recipients: some Sequence<ForwardPath>, message: ByteBuffer?) -> FaultDecision? {
        var slowest: Double?
        for path in recipients {
            switch MagicAddress(path) {
            case .reject:
                return FaultDecision(rule: "reject@", phase: .dataEnd, delay: .zero, effect: .reply(MagicAddress.rejectReply), builtIn: true)
            case .slow(let seconds):
                slowest = max(slowest ?? seconds, seconds)
            default:
                continue
            }
        }
        let header = message.flatMap { body in
            body.withUnsafeReadableBytes { HeaderLookup.firstValue(named: Self.faultHeader, in: $0) }
        }.flatMap(HeaderFault.init)
        if let header, let reply = header.reply {
            return FaultDecision(rule: "X-Swallow-Fault", phase: .dataEnd, delay: header.delay, effect: .reply(reply), builtIn: true)
        }
        var delay = header?.delay ?? .zero
        var name = "X-Swallow-Fault"
        if let slowest, .seconds(exactly: slowest) > delay {
            delay = .seconds(exactly: slowest)
            name = "slow@"
        }
        if let tag = sender.flatMap(PlusTagFault.init), tag.delay > delay {
            delay = tag.delay
            name = tag.name
        }
        for path in recipients {
            if let tag = PlusTagFault(path), tag.delay > delay {
                delay = tag.delay
                name = tag.name
            }
        }
        guard delay > .zero else { return nil }
        return FaultDecision(rule: name, phase: .dataEnd, delay: delay, effect: nil, builtIn: true)
    }
}

extension PlusTagFault {
    /// The name a decision of this tag is recorded under.
    var name: String {
        switch self {
        case .fail(let code): "+fail-\(code)"
        case .delay: "+delay"
        }
    }
}
