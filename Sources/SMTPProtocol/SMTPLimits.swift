/// Every bound on untrusted SMTP input, in one place. Each default cites its source.
public struct SMTPLimits: Hashable, Sendable {
    /// A command line including CRLF: 512 octets (RFC 5321 §4.5.3.1.4).
    public var maxCommandLineBytes: Int
    /// An AUTH command or AUTH continuation line including CRLF: 12 288 octets (RFC 4954 §4).
    public var maxAuthLineBytes: Int
    /// A text line in DATA over this many octets (CRLF excluded) is recorded as an anomaly
    /// (RFC 5322 §2.1.1: 998).
    public var maxTextLineBytes: Int
    /// Recipients per message: 100 (RFC 5321 §4.5.3.1.8).
    public var maxRecipients: Int
    /// Message size, advertised with SIZE and enforced (RFC 1870): 25 MiB.
    public var maxMessageBytes: Int
    /// Bad commands in one session before `421` and a close (ours).
    public var maxBadCommands: Int

    public init(
        maxCommandLineBytes: Int = 512,
        maxAuthLineBytes: Int = 12_288,
        maxTextLineBytes: Int = 998,
        maxRecipients: Int = 100,
        maxMessageBytes: Int = 25 * 1024 * 1024,
        maxBadCommands: Int = 10
    ) {
        self.maxCommandLineBytes = maxCommandLineBytes
        self.maxAuthLineBytes = maxAuthLineBytes
        self.maxTextLineBytes = maxTextLineBytes
        self.maxRecipients = maxRecipients
        self.maxMessageBytes = maxMessageBytes
        self.maxBadCommands = maxBadCommands
    }

    /// The longest line the framer buffers before it gives up on it (the larger of the two).
    public var maxFrameLineBytes: Int { max(maxCommandLineBytes, maxAuthLineBytes) }
}
