import Logging
import MailMessage
import NIOCore
import SMTPProtocol

/// The connection's side of every message's session metadata, described once per connection.
struct Peer {
    var sessionID = ""
    var remote = "unknown"
    var local = "unknown"
    var remoteIP = "unknown"
    /// A message of the HTTP send API.
    var viaHTTP = false

    init() {}

    /// The peer of a `POST /api/v1/send` session: named `http-api`, for fault rules too.
    static func httpAPI(sessionID: String) -> Peer {
        var peer = Peer()
        peer.sessionID = sessionID
        peer.remote = "http-api"
        peer.local = "http-api"
        peer.remoteIP = "http-api"
        peer.viaHTTP = true
        return peer
    }

    init(sessionID: String, remote: SocketAddress?, local: SocketAddress?) {
        self.sessionID = sessionID
        self.remote = remote.map(Self.describe) ?? "unknown"
        self.local = local.map(Self.describe) ?? "unknown"
        self.remoteIP = remote?.ipAddress ?? "unknown"
    }

    static func describe(_ address: SocketAddress) -> String {
        guard let ip = address.ipAddress, let port = address.port else { return "\(address)" }
        return ip.contains(":") ? "[\(ip)]:\(port)" : "\(ip):\(port)"
    }
}

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
        let header = "Received: from \(from)\r\n\tby \(configuration.hostname)"
            + " (Swallow) with \(with) id \(id);\r\n\t\(WallClock.rfc5322Date(nanos: now))\r\n"
        // Sized for the message when it is known (SIZE, or a first chunk holding all of it), so a
        // stored 1 KiB message does not keep a 4 KiB buffer alive.
        let capacity = min(sizeHint + 128, configuration.limits.maxMessageBytes)
        var buffer = allocator.buffer(capacity: header.utf8.count + capacity)
        headerLength = buffer.writeString(header)
        body = buffer
    }

    mutating func append(_ bytes: inout ByteBuffer) {
        guard body != nil else { return }
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

/// A session's transcript, kept only with `--transcripts`. AUTH secrets never enter it.
struct Transcript {
    let enabled: Bool
    private var entries: [TranscriptEntry] = []

    init(enabled: Bool) { self.enabled = enabled }

    mutating func client(_ command: SMTPCommand) {
        guard enabled else { return }
        if case .auth(let mechanism, let initial) = command {
            client(initial == nil ? "AUTH \(mechanism)" : "AUTH \(mechanism) (initial response redacted)")
        } else {
            var buffer = ByteBuffer()
            buffer.writeSMTPCommand(command)
            client(String(buffer.readString(length: buffer.readableBytes - 2) ?? ""))
        }
    }

    mutating func client(_ text: String) {
        guard enabled else { return }
        entries.append(TranscriptEntry(nanos: WallClock.nanos(), direction: .client, text: text))
    }

    mutating func server(_ reply: SMTPReply) {
        guard enabled else { return }
        var buffer = ByteBuffer()
        buffer.writeSMTPReply(reply)
        let text = String(buffer.readString(length: buffer.readableBytes) ?? "").replacingCRLF()
        entries.append(TranscriptEntry(nanos: WallClock.nanos(), direction: .server, text: text))
    }

    mutating func note(_ text: String) {
        guard enabled else { return }
        entries.append(TranscriptEntry(nanos: WallClock.nanos(), direction: .server, text: "(\(text))"))
    }

    /// The entries since the last message, handed to that message.
    mutating func take() -> [TranscriptEntry]? {
        guard enabled else { return nil }
        defer { entries.removeAll(keepingCapacity: true) }
        return entries
    }
}

extension String {
    fileprivate func replacingCRLF() -> String {
        var lines = split(separator: "\r\n", omittingEmptySubsequences: true).map(String.init)
        if lines.isEmpty { lines = [""] }
        return lines.joined(separator: "\n")
    }
}
