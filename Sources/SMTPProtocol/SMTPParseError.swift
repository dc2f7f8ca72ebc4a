/// Why a command line could not be turned into an `SMTPCommand`.
///
/// Every case is wire-visible; `SMTPReply(for:)` maps each one to its reply in one place.
public enum SMTPParseError: Error, Hashable, Sendable {
    /// The verb is unknown (RFC 5321 §4.2.4: 500 5.5.1).
    case unrecognizedCommand(String)
    /// A known verb with malformed arguments (501 5.5.4).
    case syntax(String)
    /// A line longer than the limit for its kind, CRLF included (RFC 5321 §4.5.3.1.4: 500 5.5.2).
    case lineTooLong(limit: Int)
    /// A line that contains a bare CR or ends with a bare LF (500 5.5.2: only CRLF ends a line).
    case bareLineEnding
    /// A line that is not valid UTF-8 (500 5.5.2).
    case invalidEncoding
    /// An ESMTP parameter that is malformed or not supported (RFC 5321 §4.2.3: 555 5.5.4).
    case unsupportedParameter(String)
}

extension SMTPReply {
    /// The reply a server sends for a command that failed to parse.
    public init(for error: SMTPParseError) {
        switch error {
        case .unrecognizedCommand(let verb):
            let shown = verb.count > 32 ? String(verb.prefix(32)) + "..." : verb
            self.init(500, "5.5.1", "Command unrecognized: \(shown.isEmpty ? "(empty line)" : shown)")
        case .syntax(let detail):
            self.init(501, "5.5.4", "Syntax error: \(detail)")
        case .lineTooLong(let limit):
            self.init(500, "5.5.2", "Line too long (limit \(limit) octets)")
        case .bareLineEnding:
            self.init(500, "5.5.2", "Bare CR or LF in command line; lines end with CRLF")
        case .invalidEncoding:
            self.init(500, "5.5.2", "Command line is not valid UTF-8")
        case .unsupportedParameter(let detail):
            self.init(555, "5.5.4", "Unsupported parameter: \(detail)")
        }
    }
}
