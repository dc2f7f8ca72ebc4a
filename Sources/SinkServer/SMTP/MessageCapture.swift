import Logging
import MailMessage
import NIOCore
import SMTPProtocol

/// One message being received: its id, its bytes (the `Received:` header first), and the
/// facts the capture metadata needs. Made at the message's first bytes, turned into a
/// `CapturedMessage` at the end of its data.
struct MessageCapture {
    var id: String
    var body: ByteBuffer?
    var headerLength = 0

    /// The header fields the sink reads at a message's end: for the message (trace id,
    /// mailbox) and for its delivery attempts (Message-ID, Subject, mailbox).
    struct HeaderFields {
        var traceID: String?
        var mailbox: String?
        var messageID: String?
        var subject: String?
    }

    private static let headerNames = ["x-swallow-trace", "x-swallow-mailbox", "message-id", "subject"].map { Array($0.utf8) }

    /// The message's `HeaderFields`, in one pass over its header section (the message and the
    /// audit each reading it was two passes; `perf record`, 1 KiB messages).
    func headerFields() -> HeaderFields {
        guard var bytes = body else { return HeaderFields() }
        bytes.moveReaderIndex(forwardBy: headerLength)
        var fields = HeaderFields()
        bytes.withUnsafeReadableBytes { header in
            HeaderLookup.firstValues(named: Self.headerNames, in: header) { index, value in
                switch index {
                case 0: fields.traceID = value
                case 1: fields.mailbox = value
                case 2: fields.messageID = value
                default: fields.subject = value
                }
            }
        }
        return fields
    }

    /// The `Received:` header up to the message's id, as written for a connection's messages:
    /// the same for each of them until the client says HELO again, starts TLS or
    /// authenticates. Kept from a connection's second message on (a connection with one
    /// message would only pay for the copy) and written whole, it is one copy; written a
    /// piece at a time, it was a dozen calls into NIO's `ByteBuffer` per message (~2% of the
    /// sink's user CPU for a 1 KiB message in `perf record`).
    struct ReceivedPrefix {
        let facts: SMTPSession.Facts
        let bytes: ByteBuffer

        /// A connection's: none yet, a first message written, or kept.
        enum Cache {
            case none
            case once
            case kept(ReceivedPrefix)
        }

        func matches(_ other: SMTPSession.Facts) -> Bool {
            facts.helo == other.helo && facts.esmtp == other.esmtp && facts.tlsActive == other.tlsActive
                && (facts.authUser == nil) == (other.authUser == nil)
        }

        /// Writes `Received: from HELO ([IP])\r\n\tby HOST (Swallow) with ESMTP id ` (RFC 5321
        /// §4.4; the "with" keywords are RFC 3848's).
        static func write(into buffer: inout ByteBuffer, facts: SMTPSession.Facts, peer: Peer, hostname: String) {
            buffer.writeStaticString("Received: from ")
            if peer.viaHTTP {
                buffer.writeStaticString("http-api (the HTTP send API)")
            } else {
                buffer.writeString(facts.helo ?? "unknown")
                buffer.writeStaticString(" ([")
                buffer.writeString(peer.remoteIP)
                buffer.writeStaticString("])")
            }
            buffer.writeStaticString("\r\n\tby ")
            buffer.writeString(hostname)
            buffer.writeStaticString(" (Swallow) with ")
            if peer.viaHTTP {
                buffer.writeStaticString("HTTP")
            } else {
                buffer.writeStaticString(facts.esmtp ? "ESMTP" : "SMTP")
                if facts.tlsActive { buffer.writeStaticString("S") }
                if facts.authUser != nil { buffer.writeStaticString("A") }
            }
            buffer.writeStaticString(" id ")
        }
    }

    /// Starts a message: its id, and unless bodies are discarded, its body with the
    /// `Received:` trace header, its start taken from the connection's `prefix` when kept for
    /// the same facts. Takes the configuration's three facts it needs (the whole
    /// configuration, read from the shared context, was a copy of every field per message).
    init(
        session: SMTPSession.Facts, peer: Peer, hostname: String, discardBodies: Bool, maxMessageBytes: Int,
        allocator: ByteBufferAllocator, sizeHint: Int, prefix: inout ReceivedPrefix.Cache
    ) {
        let now = WallClock.nanos()
        id = MessageIDGenerator.next(nanos: now)
        guard !discardBodies else { return }
        let date = WallClock.rfc5322Date(nanos: now)
        // Sized for the message when it is known (SIZE, or a first chunk holding all of it), so a
        // stored 1 KiB message does not keep a 4 KiB buffer alive.
        let capacity = min(sizeHint + 128, maxMessageBytes)
        let start: Int
        if case .kept(let kept) = prefix, kept.matches(session) {
            start = kept.bytes.readableBytes
        } else {
            start = 64 + (session.helo?.utf8.count ?? 7) + peer.remoteIP.utf8.count + hostname.utf8.count
        }
        var buffer = allocator.buffer(capacity: start + id.utf8.count + date.utf8.count + 8 + capacity)
        if case .kept(let kept) = prefix, kept.matches(session) {
            buffer.writeImmutableBuffer(kept.bytes)
        } else {
            ReceivedPrefix.write(into: &buffer, facts: session, peer: peer, hostname: hostname)
            if case .none = prefix {
                prefix = .once
            } else {
                prefix = .kept(ReceivedPrefix(facts: session, bytes: ByteBuffer(bytes: buffer.readableBytesView)))
            }
        }
        buffer.writeString(id)
        buffer.writeStaticString(";\r\n\t")
        buffer.writeString(date)
        buffer.writeStaticString("\r\n")
        headerLength = buffer.readableBytes
        body = buffer
    }

    /// Adds a piece of the body; a body growing past its first buffer moves into one of the
    /// loop's kept buffers when there is one (`CaptureBuffers`).
    mutating func append(_ bytes: inout ByteBuffer, buffers: CaptureBuffers?) {
        guard body != nil else { return }
        let needed = body!.readableBytes + bytes.readableBytes
        if body!.capacity < needed, needed > CaptureBuffers.minimumCapacity, var kept = buffers?.take(capacity: needed) {
            kept.writeImmutableBuffer(body!)
            body = kept
        }
        body!.writeBuffer(&bytes)
    }

    func makeMessage(
        _ transaction: SMTPSession.Transaction, session: SMTPSession.Facts, peer: Peer, tls: TLSInfo?,
        connectedNanos: Int64, endedNanos: Int64, fields: HeaderFields, limits: SMTPLimits, transcript: [TranscriptEntry]?,
        previousSession: CapturedMessage.SharedSession? = nil
    ) -> CapturedMessage {
        var anomalies: [String] = []
        if var bytes = body {
            bytes.moveReaderIndex(forwardBy: headerLength)
            anomalies = MessageAnomalies.scan(bytes, maxLineBytes: limits.maxTextLineBytes, eightBitDeclared: transaction.eightBitDeclared).names
        }
        let traceID = fields.traceID
        let mailbox = fields.mailbox.flatMap { $0.isEmpty ? nil : $0 }
        let envelope = Envelope(
            mailFrom: transaction.reversePath.address,
            mailParameters: Self.dictionary(transaction.parameters),
            recipients: transaction.recipients.map {
                Envelope.Recipient(address: $0.path.address, parameters: Self.dictionary($0.parameters))
            }
        )
        let sessionInfo = SessionInfo(
            id: peer.sessionID,
            remoteAddress: peer.remote,
            localAddress: peer.local,
            helo: session.helo ?? "",
            esmtp: session.esmtp,
            tls: tls,
            authUser: session.authUser
        )
        // The connection's earlier message's description when it is the same (a box per message
        // made and then replaced by it was a `malloc` per message).
        let shared =
            previousSession.flatMap { $0.value == sessionInfo ? $0 : nil } ?? CapturedMessage.SharedSession(sessionInfo)
        return CapturedMessage(
            id: id,
            envelope: envelope,
            sharedSession: shared,
            timestamps: CaptureTimestamps(
                connectedNanos: connectedNanos,
                mailNanos: transaction.mailNanos,
                dataStartNanos: transaction.dataStartNanos,
                dataEndNanos: endedNanos
            ),
            size: body?.readableBytes ?? transaction.receivedBytes,
            receivedHeaderLength: headerLength,
            anomalies: anomalies,
            traceID: traceID,
            mailbox: mailbox,
            bodyStored: body != nil,
            transcript: transcript
        )
    }

    private static func dictionary(_ parameters: [ESMTPParameter]) -> [String: String] {
        Dictionary(parameters.map { ($0.keyword, $0.value ?? "") }, uniquingKeysWith: { first, _ in first })
    }
}
