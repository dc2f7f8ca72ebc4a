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

    /// Starts a message: its id, and unless bodies are discarded, its body with the
    /// `Received:` trace header (RFC 5321 §4.4; the "with" keywords are RFC 3848's).
    init(session: SMTPSession, peer: Peer, configuration: SinkConfiguration, allocator: ByteBufferAllocator, sizeHint: Int) {
        let now = WallClock.nanos()
        id = MessageIDGenerator.next(nanos: now)
        guard !configuration.discardBodies else { return }
        var with = session.esmtp ? "ESMTP" : "SMTP"
        if session.tlsActive { with += "S" }
        if session.authUser != nil { with += "A" }
        let from = peer.viaHTTP ? "http-api (the HTTP send API)" : "\(session.helo ?? "unknown") ([\(peer.remoteIP)])"
        if peer.viaHTTP { with = "HTTP" }
        let header =
            "Received: from \(from)\r\n\tby \(configuration.hostname)"
            + " (Swallow) with \(with) id \(id);\r\n\t\(WallClock.rfc5322Date(nanos: now))\r\n"
        // Sized for the message when it is known (SIZE, or a first chunk holding all of it), so a
        // stored 1 KiB message does not keep a 4 KiB buffer alive.
        let capacity = min(sizeHint + 128, configuration.limits.maxMessageBytes)
        var buffer = allocator.buffer(capacity: header.utf8.count + capacity)
        headerLength = buffer.writeString(header)
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
        _ transaction: SMTPSession.Transaction, session: SMTPSession, peer: Peer, tls: TLSInfo?,
        connectedNanos: Int64, limits: SMTPLimits, transcript: [TranscriptEntry]?
    ) -> CapturedMessage {
        var anomalies: [String] = []
        var traceID: String?
        var mailbox: String?
        if var bytes = body {
            bytes.moveReaderIndex(forwardBy: headerLength)
            anomalies = MessageAnomalies.scan(bytes, maxLineBytes: limits.maxTextLineBytes, eightBitDeclared: transaction.eightBitDeclared).names
            traceID = bytes.withUnsafeReadableBytes { HeaderLookup.firstValue(named: "X-Swallow-Trace", in: $0) }
            mailbox = bytes.withUnsafeReadableBytes { HeaderLookup.firstValue(named: "X-Swallow-Mailbox", in: $0) }
                .flatMap { $0.isEmpty ? nil : $0 }
        }
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
        return CapturedMessage(
            id: id,
            envelope: envelope,
            session: sessionInfo,
            timestamps: CaptureTimestamps(
                connectedNanos: connectedNanos,
                mailNanos: transaction.mailNanos,
                dataStartNanos: transaction.dataStartNanos,
                dataEndNanos: WallClock.nanos()
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
