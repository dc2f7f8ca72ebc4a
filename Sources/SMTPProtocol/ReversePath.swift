/// The argument of MAIL FROM: a mailbox, or the null path `<>` used by bounces (RFC 5321 §4.1.2, §4.5.5).
public enum ReversePath: Hashable, Sendable, CustomStringConvertible {
    case null
    case mailbox(Mailbox)

    /// The address as written between the angle brackets (empty for the null path).
    public var address: String {
        switch self {
        case .null: ""
        case .mailbox(let mailbox): mailbox.description
        }
    }

    public var description: String { "<\(address)>" }
}

/// The argument of RCPT TO: a mailbox, or the bare `<Postmaster>` every server must accept
/// (RFC 5321 §4.1.1.3, §4.5.1).
public enum ForwardPath: Hashable, Sendable, CustomStringConvertible {
    case postmaster
    case mailbox(Mailbox)

    public var address: String {
        switch self {
        case .postmaster: "Postmaster"
        case .mailbox(let mailbox): mailbox.description
        }
    }

    public var description: String { "<\(address)>" }
}
