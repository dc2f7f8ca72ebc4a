import NIOCore

/// One SMTP reply: a code, an optional enhanced status code, and one or more text lines
/// (RFC 5321 §4.2; multi-line form `250-...` / `250 ...`).
public struct SMTPReply: Hashable, Sendable, CustomStringConvertible {
    public var code: ReplyCode
    /// Written before the text of every line when present (RFC 2034 §4).
    public var enhanced: EnhancedStatusCode?
    /// The text lines; never empty when encoded (an empty text is written as one empty line).
    public var lines: [String]

    public init(code: ReplyCode, enhanced: EnhancedStatusCode? = nil, lines: [String]) {
        self.code = code
        self.enhanced = enhanced
        self.lines = lines
    }

    /// A reply from its parts; `text` may hold several lines separated by `\n`.
    public init(_ code: Int, _ enhanced: String? = nil, _ text: String) {
        self.init(
            code: ReplyCode(rawValue: code),
            enhanced: enhanced.flatMap { EnhancedStatusCode($0) },
            lines: text.utf8.contains(UInt8(ascii: "\n"))
                ? text.split(separator: "\n", omittingEmptySubsequences: false).map(String.init) : [text]
        )
    }

    /// All lines joined by a newline, without codes.
    public var text: String { lines.joined(separator: "\n") }

    public var description: String {
        let prefix = enhanced.map { "\(code) \($0) " } ?? "\(code) "
        return prefix + text
    }
}

extension SMTPReply {
    /// 221 2.0.0 in answer to QUIT.
    public static let bye = SMTPReply(221, "2.0.0", "Bye")
    /// 250 2.0.0 Ok.
    public static let ok = SMTPReply(250, "2.0.0", "Ok")
    /// 503 5.5.1 Bad sequence of commands (RFC 5321 §4.2.4).
    public static let badSequence = SMTPReply(503, "5.5.1", "Bad sequence of commands")
    /// 500 5.5.2 Line too long (RFC 5321 §4.5.3.1.4).
    public static let lineTooLong = SMTPReply(500, "5.5.2", "Line too long")
    /// 421 4.4.2 sent when a client has been idle past the limit (RFC 5321 §4.5.3.2.7).
    public static let idleTimeout = SMTPReply(421, "4.4.2", "Idle timeout, closing connection")
    /// A command line not completed within the idle timeout of its first byte.
    public static let commandLineTimeout = SMTPReply(421, "4.4.2", "Command line not completed in time, closing connection")
    /// A message's data not completed within the data timeout.
    public static let dataTimeout = SMTPReply(421, "4.4.2", "Message data not completed in time, closing connection")
}

// MARK: - Encoding

extension ByteBuffer {
    /// Writes `reply` in wire form: every line but the last as `code-text`, the last as
    /// `code text`, each ended by CRLF (RFC 5321 §4.2.1). Returns the number of bytes written.
    @discardableResult
    public mutating func writeSMTPReply(_ reply: SMTPReply) -> Int {
        // Digits are written as bytes: string interpolation here cost eight allocations per
        // reply (Benchmarks/: "encode the replies of one transaction").
        let start = writerIndex
        let count = max(reply.lines.count, 1)
        for index in 0..<count {
            writeDecimal(reply.code.rawValue)
            writeInteger(index == count - 1 ? UInt8(ascii: " ") : UInt8(ascii: "-"))
            if let enhanced = reply.enhanced {
                writeDecimal(enhanced.statusClass)
                writeInteger(UInt8(ascii: "."))
                writeDecimal(enhanced.subject)
                writeInteger(UInt8(ascii: "."))
                writeDecimal(enhanced.detail)
                writeInteger(UInt8(ascii: " "))
            }
            if index < reply.lines.count { writeString(reply.lines[index]) }
            writeStaticString("\r\n")
        }
        return writerIndex - start
    }

    /// A non-negative integer in decimal, without making a `String`.
    private mutating func writeDecimal(_ value: Int) {
        guard value >= 0, value < 1000 else {
            writeString(String(value))
            return
        }
        if value >= 100 { writeInteger(UInt8(truncatingIfNeeded: 48 + value / 100)) }
        if value >= 10 { writeInteger(UInt8(truncatingIfNeeded: 48 + value / 10 % 10)) }
        writeInteger(UInt8(truncatingIfNeeded: 48 + value % 10))
    }
}
