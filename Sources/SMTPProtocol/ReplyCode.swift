/// A three-digit SMTP reply code (RFC 5321 §4.2).
///
/// An open set: any code in 200...599 can appear on the wire, so this is a struct with
/// static members for the codes Swallow itself uses.
public struct ReplyCode: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public var rawValue: Int
    public init(rawValue: Int) { self.rawValue = rawValue }

    /// 211 System status (§4.2.3).
    public static let systemStatus = ReplyCode(rawValue: 211)
    /// 214 Help message.
    public static let help = ReplyCode(rawValue: 214)
    /// 220 Service ready; also the reply to STARTTLS (RFC 3207 §4).
    public static let serviceReady = ReplyCode(rawValue: 220)
    /// 221 Service closing transmission channel.
    public static let closing = ReplyCode(rawValue: 221)
    /// 235 Authentication succeeded (RFC 4954 §6).
    public static let authSucceeded = ReplyCode(rawValue: 235)
    /// 250 Requested mail action okay, completed.
    public static let ok = ReplyCode(rawValue: 250)
    /// 252 Cannot VRFY user, but will accept message (§3.5.3).
    public static let cannotVerify = ReplyCode(rawValue: 252)
    /// 334 Server challenge during AUTH (RFC 4954 §4).
    public static let authContinue = ReplyCode(rawValue: 334)
    /// 354 Start mail input.
    public static let startMailInput = ReplyCode(rawValue: 354)
    /// 421 Service not available, closing transmission channel.
    public static let serviceNotAvailable = ReplyCode(rawValue: 421)
    /// 451 Requested action aborted: local error in processing.
    public static let localError = ReplyCode(rawValue: 451)
    /// 452 Insufficient system storage (also "too many recipients", §4.5.3.1.10).
    public static let insufficientStorage = ReplyCode(rawValue: 452)
    /// 454 TLS not available / temporary authentication failure.
    public static let tlsNotAvailable = ReplyCode(rawValue: 454)
    /// 500 Syntax error, command unrecognized (also "line too long").
    public static let syntaxError = ReplyCode(rawValue: 500)
    /// 501 Syntax error in parameters or arguments.
    public static let parameterSyntaxError = ReplyCode(rawValue: 501)
    /// 502 Command not implemented.
    public static let notImplemented = ReplyCode(rawValue: 502)
    /// 503 Bad sequence of commands.
    public static let badSequence = ReplyCode(rawValue: 503)
    /// 504 Command parameter not implemented.
    public static let parameterNotImplemented = ReplyCode(rawValue: 504)
    /// 530 Authentication required (RFC 4954 §6).
    public static let authRequired = ReplyCode(rawValue: 530)
    /// 535 Authentication credentials invalid (RFC 4954 §6).
    public static let authInvalid = ReplyCode(rawValue: 535)
    /// 538 Encryption required for requested authentication mechanism (RFC 4954 §6).
    public static let encryptionRequired = ReplyCode(rawValue: 538)
    /// 550 Mailbox unavailable.
    public static let mailboxUnavailable = ReplyCode(rawValue: 550)
    /// 552 Exceeded storage allocation (message too big, RFC 1870 §6).
    public static let exceededStorage = ReplyCode(rawValue: 552)
    /// 553 Mailbox name not allowed.
    public static let mailboxNameNotAllowed = ReplyCode(rawValue: 553)
    /// 554 Transaction failed.
    public static let transactionFailed = ReplyCode(rawValue: 554)
    /// 555 MAIL FROM/RCPT TO parameters not recognized or not implemented (RFC 5321 §4.2.3).
    public static let parametersNotRecognized = ReplyCode(rawValue: 555)

    /// 2yz: positive completion.
    public var isPositive: Bool { (200..<400).contains(rawValue) }
    /// 4yz: transient negative completion.
    public var isTransient: Bool { (400..<500).contains(rawValue) }
    /// 5yz: permanent negative completion.
    public var isPermanent: Bool { (500..<600).contains(rawValue) }

    public var description: String { String(rawValue) }
}
