import MailMessage
import NIOCore
import SMTPProtocol

/// What `SMTPServerHandler` hands the connection's async loop, in wire order.
enum SMTPServerEvent: Sendable {
    case command(SMTPCommand)
    /// A line that is not a valid command (syntax, too long, bare LF, bad UTF-8).
    case invalidCommand(SMTPParseError)
    /// STARTTLS arrived with more bytes behind it; it is refused (RFC 3207 §4.2 forbids pipelining past it).
    case pipelinedStartTLS
    /// A client line inside an AUTH exchange (after a 334). Secret: never logged.
    case authResponse(String)
    /// Dot-unstuffed DATA bytes.
    case messageChunk(ByteBuffer)
    case messageEnd
    /// BDAT bytes; `complete` on the last piece of the announced size.
    case chunkData(ByteBuffer, complete: Bool)
    case tlsEstablished(TLSInfo)
    case idleTimeout
}
