import NIOCore

/// An SMTP command as a client sends it (RFC 5321 §4.1.1 and the extensions Swallow speaks).
public enum SMTPCommand: Hashable, Sendable {
    /// `EHLO domain` (§4.1.1.1).
    case ehlo(String)
    /// `HELO domain` (§4.1.1.1).
    case helo(String)
    /// `MAIL FROM:<path> [params]` (§4.1.1.2).
    case mail(ReversePath, parameters: [ESMTPParameter])
    /// `RCPT TO:<path> [params]` (§4.1.1.3).
    case rcpt(ForwardPath, parameters: [ESMTPParameter])
    /// `DATA` (§4.1.1.4).
    case data
    /// `BDAT size [LAST]`: a chunk of `size` octets follows at once (RFC 3030 §2).
    case bdat(size: Int, last: Bool)
    /// `RSET` (§4.1.1.5).
    case rset
    /// `NOOP [string]` (§4.1.1.9).
    case noop(String?)
    /// `QUIT` (§4.1.1.10).
    case quit
    /// `VRFY string` (§4.1.1.6).
    case vrfy(String)
    /// `EXPN string` (§4.1.1.7).
    case expn(String)
    /// `HELP [string]` (§4.1.1.8).
    case help(String?)
    /// `STARTTLS` (RFC 3207 §4).
    case starttls
    /// `AUTH mechanism [initial-response]` (RFC 4954 §4); the response stays base64.
    case auth(mechanism: String, initialResponse: String?)

    /// The verb, upper-case, as used in transcripts and metrics.
    public var verb: String {
        switch self {
        case .ehlo: "EHLO"
        case .helo: "HELO"
        case .mail: "MAIL"
        case .rcpt: "RCPT"
        case .data: "DATA"
        case .bdat: "BDAT"
        case .rset: "RSET"
        case .noop: "NOOP"
        case .quit: "QUIT"
        case .vrfy: "VRFY"
        case .expn: "EXPN"
        case .help: "HELP"
        case .starttls: "STARTTLS"
        case .auth: "AUTH"
        }
    }
}

// MARK: - Encoding

extension ByteBuffer {
    /// Writes `command` in wire form, CRLF included. Returns the number of bytes written.
    @discardableResult
    public mutating func writeSMTPCommand(_ command: SMTPCommand) -> Int {
        let start = writerIndex
        switch command {
        case .ehlo(let domain): writeString("EHLO \(domain)")
        case .helo(let domain): writeString("HELO \(domain)")
        case .mail(let path, let parameters):
            writeString("MAIL FROM:\(path)")
            writeParameters(parameters)
        case .rcpt(let path, let parameters):
            writeString("RCPT TO:\(path)")
            writeParameters(parameters)
        case .data: writeStaticString("DATA")
        case .bdat(let size, let last): writeString(last ? "BDAT \(size) LAST" : "BDAT \(size)")
        case .rset: writeStaticString("RSET")
        case .noop(let text): writeString(text.map { "NOOP \($0)" } ?? "NOOP")
        case .quit: writeStaticString("QUIT")
        case .vrfy(let text): writeString("VRFY \(text)")
        case .expn(let text): writeString("EXPN \(text)")
        case .help(let text): writeString(text.map { "HELP \($0)" } ?? "HELP")
        case .starttls: writeStaticString("STARTTLS")
        case .auth(let mechanism, let initial): writeString(initial.map { "AUTH \(mechanism) \($0)" } ?? "AUTH \(mechanism)")
        }
        writeStaticString("\r\n")
        return writerIndex - start
    }

    private mutating func writeParameters(_ parameters: [ESMTPParameter]) {
        for parameter in parameters {
            writeString(" \(parameter)")
        }
    }
}
