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
        // Each line's prefix (`250-2.0.0 `) is made in a small stack buffer and written with its
        // text: a byte at a time (`writeInteger`), the prefix cost a capacity and uniqueness
        // check per byte (~3% of the sink's 1 KiB profile with the code's digits, `perf record`).
        let start = writerIndex
        let count = max(reply.lines.count, 1)
        let digits = 0..<1000
        let fast =
            digits.contains(reply.code.rawValue)
            && reply.enhanced.map { digits.contains($0.statusClass) && digits.contains($0.subject) && digits.contains($0.detail) } ?? true
        for index in 0..<count {
            guard fast else {
                writeSlowly(reply, line: index, count: count)
                continue
            }
            // At most `999-999.999.999 `: 16 bytes.
            var prefix: (UInt64, UInt64) = (0, 0)
            let prefixLength = withUnsafeMutableBytes(of: &prefix) { bytes in
                var at = Self.putDecimal(reply.code.rawValue, into: bytes, at: 0)
                bytes[at] = index == count - 1 ? UInt8(ascii: " ") : UInt8(ascii: "-")
                at += 1
                if let enhanced = reply.enhanced {
                    at = Self.putDecimal(enhanced.statusClass, into: bytes, at: at)
                    bytes[at] = UInt8(ascii: ".")
                    at = Self.putDecimal(enhanced.subject, into: bytes, at: at + 1)
                    bytes[at] = UInt8(ascii: ".")
                    at = Self.putDecimal(enhanced.detail, into: bytes, at: at + 1)
                    bytes[at] = UInt8(ascii: " ")
                    at += 1
                }
                return at
            }
            var text = index < reply.lines.count ? reply.lines[index] : ""
            text.withUTF8 { utf8 in
                let length = prefixLength + utf8.count + 2
                writeWithUnsafeMutableBytes(minimumWritableBytes: length) { out in
                    withUnsafeBytes(of: prefix) { out.baseAddress!.copyMemory(from: $0.baseAddress!, byteCount: prefixLength) }
                    if utf8.count > 0 { (out.baseAddress! + prefixLength).copyMemory(from: utf8.baseAddress!, byteCount: utf8.count) }
                    out[length - 2] = UInt8(ascii: "\r")
                    out[length - 1] = UInt8(ascii: "\n")
                    return length
                }
            }
        }
        return writerIndex - start
    }

    /// Puts `value` (0...999) in decimal at `at`; returns where it ends.
    private static func putDecimal(_ value: Int, into bytes: UnsafeMutableRawBufferPointer, at: Int) -> Int {
        var at = at
        if value >= 100 {
            bytes[at] = UInt8(truncatingIfNeeded: 48 + value / 100)
            at += 1
        }
        if value >= 10 {
            bytes[at] = UInt8(truncatingIfNeeded: 48 + value / 10 % 10)
            at += 1
        }
        bytes[at] = UInt8(truncatingIfNeeded: 48 + value % 10)
        return at + 1
    }

    /// One line of a reply with a code or enhanced status part beyond three digits.
    private mutating func writeSlowly(_ reply: SMTPReply, line index: Int, count: Int) {
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
