import NIOCore

/// What the framer cuts from the byte stream: command lines, or the pieces of a message body.
///
/// Framing never looks at verbs: whoever owns the decoder switches its `mode` after DATA
/// (`.message`) or BDAT (`.chunk`).
public enum SMTPFrame: Hashable, Sendable {
    /// A command line, CRLF removed.
    case line(ByteBuffer)
    /// A line that cannot be a command: too long, or ended by a bare LF. The bytes are gone.
    case invalidLine(SMTPParseError)
    /// Message bytes from DATA, dot-unstuffed, line ends kept (RFC 5321 §4.5.2).
    case messageChunk(ByteBuffer)
    /// The `CRLF.CRLF` that ends DATA; the framer is back in command mode.
    case messageEnd
    /// Bytes of a BDAT chunk; `complete` on the piece that finishes the announced size (RFC 3030 §2).
    case chunkData(ByteBuffer, complete: Bool)
}
