/// `--relay` and the options that go with it: where released and auto-relayed mail goes, and
/// to whom it may go.
public struct RelaySettings: Sendable {
    /// `--relay URL`: nil turns release and auto-relay off (release answers `503`).
    public var upstream: Upstream?
    /// `--relay-all`: every stored message goes on to its own envelope recipients.
    public var all = false
    /// `--relay-matching REGEX`: stored messages go on to those of their recipients that match
    /// (case-insensitive, anywhere in the address), the others are not relayed.
    public var matching: FaultPattern?
    /// `--relay-allow PATTERN` (repeatable): when any is given, only matching recipients may
    /// be released or relayed to. Globs or `~regex`, as in rule files.
    public var allow: [FaultPattern] = []
    /// `--relay-deny PATTERN` (repeatable): recipients never released or relayed to; wins over allow.
    public var deny: [FaultPattern] = []
    /// Seconds to wait for the upstream's connection and each of its replies.
    public var timeout = 30.0
    /// Connections kept open to the upstream between hand-overs, and hand-overs at once.
    public var connections = 4
    /// Stored messages waiting for auto-relay; past it they are recorded as failed.
    public var queueSize = 10_000

    public init() {}

    /// Whether mail may be handed on to this recipient.
    public func permits(_ recipient: String) -> Bool {
        if deny.contains(where: { $0.matches(recipient) }) { return false }
        return allow.isEmpty || allow.contains { $0.matches(recipient) }
    }

    /// The recipients auto-relay hands a message on to (none without `--relay-all` or
    /// `--relay-matching`).
    func autoRecipients(_ recipients: [String]) -> [String] {
        guard upstream != nil else { return [] }
        if let matching { return recipients.filter { matching.matches($0) && permits($0) } }
        return all ? recipients.filter(permits) : []
    }

    /// Whether any auto-relay is asked for.
    var automatic: Bool { upstream != nil && (all || matching != nil) }
}
