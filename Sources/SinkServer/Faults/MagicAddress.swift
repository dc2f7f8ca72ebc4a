import Foundation
import SMTPProtocol
import SwallowConfig

/// Magic recipient addresses, in the manner of mailbox simulators: no configuration, on unless
/// `--no-magic-addresses`. The local part decides, whatever the domain (case-insensitive):
///
/// | recipient | at | answer |
/// |---|---|---|
/// | `bounce@…` | RCPT | `550 5.1.1` |
/// | `tempfail@…` | RCPT | `451 4.3.0` |
/// | `full@…` | RCPT | `452 4.2.2` |
/// | `disconnect@…` | RCPT | the connection is closed, no reply |
/// | `hang@…` | RCPT | no reply, and nothing more is read, until the client gives up or the idle timeout (`421`) |
/// | `reject@…` | after the final dot | `554 5.6.0`, the message is not stored |
/// | `slow-<duration>@…` (`slow-2s@`) | after the final dot | the `250` comes that much later (at most 10 minutes) |
enum MagicAddress: Equatable, Sendable {
    case bounce, tempfail, full, disconnect, hang, reject
    case slow(seconds: Double)

    init?(_ path: ForwardPath) {
        guard case .mailbox(let mailbox) = path else { return nil }
        // Most addresses are none of these: told apart by length and first letter before the
        // local part is lowercased (a new string for every recipient of every message).
        let bytes = mailbox.localPart.utf8
        guard let first = bytes.first, bytes.count >= 4, bytes.count <= 10 || Self.startsSlow(bytes),
            "bBtTfFdDhHrRsS".utf8.contains(first)
        else { return nil }
        let local = mailbox.localPart.lowercased()
        switch local {
        case "bounce": self = .bounce
        case "tempfail": self = .tempfail
        case "full": self = .full
        case "disconnect": self = .disconnect
        case "hang": self = .hang
        case "reject": self = .reject
        default:
            guard local.hasPrefix("slow-"), let seconds = Quantity.duration(String(local.dropFirst(5))), seconds <= FaultDelay.limit else {
                return nil
            }
            self = .slow(seconds: seconds)
        }
    }

    /// Whether the local part begins `slow-` (any case).
    private static func startsSlow(_ bytes: String.UTF8View) -> Bool {
        bytes.count > 5 && zip(bytes, "slow-".utf8).allSatisfy { $0 | 0x20 == $1 | 0x20 }
    }

    /// What this address does at RCPT, if it acts there.
    var rcptEffect: FaultAction.Effect? {
        switch self {
        case .bounce: .reply(SMTPReply(550, "5.1.1", "Recipient address rejected (magic address bounce@)"))
        case .tempfail: .reply(SMTPReply(451, "4.3.0", "Temporary failure, try again later (magic address tempfail@)"))
        case .full: .reply(SMTPReply(452, "4.2.2", "Mailbox full (magic address full@)"))
        case .disconnect: .disconnect(reply: nil, partial: nil)
        case .hang: .hang
        case .reject, .slow: nil
        }
    }

    /// The name a decision of this address is recorded under.
    var name: String {
        switch self {
        case .bounce: "bounce@"
        case .tempfail: "tempfail@"
        case .full: "full@"
        case .disconnect: "disconnect@"
        case .hang: "hang@"
        case .reject: "reject@"
        case .slow: "slow@"
        }
    }

    static let rejectReply = SMTPReply(554, "5.6.0", "Message rejected (magic address reject@)")

}

/// A fault asked for by a plus tag, on any address (on unless `--no-magic-addresses`):
/// `alice+fail-451@example.com` makes the sink answer 451 to that MAIL or RCPT (any code
/// 400-599), `alice+delay-3s@example.com` delays the final `250` of the message (at most 10
/// minutes). The tag is the part after the last `+`.
enum PlusTagFault: Equatable, Sendable {
    case fail(code: Int)
    case delay(seconds: Double)

    init?(_ address: String) {
        // The last `+` segment of the subaddress: `app+job42+fail-451@…` fails with 451.
        guard address.utf8.contains(UInt8(ascii: "@")), let detail = Mailbox.detail(ofAddress: address),
            let last = detail.split(separator: "+", omittingEmptySubsequences: false).last
        else { return nil }
        let tag = last.lowercased()
        if tag.hasPrefix("fail-"), let code = Int(tag.dropFirst(5)), (400...599).contains(code) {
            self = .fail(code: code)
        } else if tag.hasPrefix("delay-"), let seconds = Quantity.duration(String(tag.dropFirst(6))), seconds <= FaultDelay.limit {
            self = .delay(seconds: seconds)
        } else {
            return nil
        }
    }

    // Every MAIL and RCPT asks, and again at the final dot: an address without a `+` is
    // answered without writing it out as a string.
    init?(_ path: ForwardPath) {
        guard case .mailbox(let mailbox) = path, mailbox.localPart.utf8.contains(UInt8(ascii: "+")) else { return nil }
        self.init(mailbox.description)
    }

    init?(_ path: ReversePath) {
        guard case .mailbox(let mailbox) = path, mailbox.localPart.utf8.contains(UInt8(ascii: "+")) else { return nil }
        self.init(mailbox.description)
    }

    /// The refusal for `fail-NNN`.
    var reply: SMTPReply? {
        guard case .fail(let code) = self else { return nil }
        let enhanced = code < 500 ? "4.3.0" : "5.7.1"
        return SMTPReply(code, enhanced, "Failure requested by the address's plus tag (fail-\(code))")
    }

    var delay: Duration {
        if case .delay(let seconds) = self { return .seconds(exactly: seconds) }
        return .zero
    }
}

/// A fault a message asks for in its own `X-Swallow-Fault` header, at the end of its DATA (on
/// unless `--no-magic-addresses`): `421 4.7.0 Try later`, `delay 2s`, or both separated by `;`,
/// optionally after `data-end:` (`data-end: 451 4.3.0; delay 500ms`). A reply refuses the
/// message (it is not stored; a `421` also closes the connection); a delay comes before the
/// final reply, whichever it is.
struct HeaderFault: Equatable, Sendable {
    var reply: SMTPReply?
    var delay: Duration = .zero

    init?(_ value: String) {
        var text = Substring(value.trimmingCharacters(in: .whitespaces))
        if let colon = text.firstIndex(of: ":"), !text[..<colon].contains(" ") {
            guard text[..<colon].lowercased() == "data-end" else { return nil }
            text = text[text.index(after: colon)...]
        }
        for part in text.split(separator: ";").map({ $0.trimmingCharacters(in: .whitespaces) }) where !part.isEmpty {
            let words = part.split(separator: " ", maxSplits: 2).map(String.init)
            if words[0].lowercased() == "delay", words.count > 1, let seconds = Quantity.duration(words[1]), seconds <= FaultDelay.limit {
                delay = .seconds(exactly: seconds)
            } else if let code = Int(words[0]), (400...599).contains(code) {
                var rest = Array(words.dropFirst())
                let enhanced = rest.first.flatMap { EnhancedStatusCode(Substring($0)) }
                if enhanced != nil { rest.removeFirst() }
                let message = rest.isEmpty ? "Failure requested by X-Swallow-Fault" : rest.joined(separator: " ")
                reply = SMTPReply(code: ReplyCode(rawValue: code), enhanced: enhanced, lines: [message])
            } else {
                return nil
            }
        }
        guard reply != nil || delay > .zero else { return nil }
    }
}
