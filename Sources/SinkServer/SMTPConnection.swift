import Logging
import MailMessage
import NIOCore
import SMTPProtocol

/// Runs one SMTP connection: feeds the handler's events to an `SMTPSession` and carries out
/// its actions (write a reply, store a message, close).
struct SMTPConnection {
    let sessionConfiguration: SMTPSession.Configuration
    let configuration: SinkConfiguration
    let store: MessageStore
    let implicitTLS: Bool
    let sessionID: String
    let logger: Logger

    /// Per-message state the session does not hold: the bytes and the capture facts.
    private struct Capture {
        var id: String
        var body: ByteBuffer?
        var headerLength = 0
    }

    func run(_ channel: NIOAsyncChannel<SMTPServerEvent, SMTPReply>) async {
        let connectedNanos = WallClock.nanos()
        let remote = channel.channel.remoteAddress
        let local = channel.channel.localAddress
        var session = SMTPSession(configuration: sessionConfiguration)
        var tls: TLSInfo?
        var capture: Capture?
        var transcript = Transcript(enabled: configuration.transcripts)

        do {
            try await channel.executeThenClose { inbound, outbound in
                func send(_ reply: SMTPReply) async throws {
                    transcript.server(reply)
                    try await outbound.write(reply)
                }

                try await send(session.greeting())
                for try await event in inbound {
                    let action: SMTPSession.Action
                    switch event {
                    case .command(let command):
                        transcript.client(command)
                        action = session.receive(command, at: WallClock.nanos())
                    case .invalidCommand(let error):
                        transcript.client("(invalid line: \(error))")
                        action = session.receive(error)
                    case .pipelinedStartTLS:
                        transcript.client("STARTTLS (with pipelined input)")
                        action = .reply(SMTPReply(503, "5.5.1", "STARTTLS must be the last command in a group"))
                    case .authResponse(let line):
                        transcript.client(line == "*" ? "*" : "(AUTH response redacted)")
                        action = session.authResponse(line)
                    case .messageChunk(var bytes):
                        if session.messageBytes(bytes.readableBytes) {
                            append(&bytes, to: &capture, session: session, remote: remote)
                        }
                        continue
                    case .messageEnd:
                        action = session.messageEnd()
                    case .chunkData(var bytes, let complete):
                        if session.messageBytes(bytes.readableBytes) {
                            append(&bytes, to: &capture, session: session, remote: remote)
                        }
                        guard complete else { continue }
                        action = session.chunkComplete()
                    case .tlsEstablished(let info):
                        tls = info
                        session.tlsEstablished()
                        transcript.note("TLS established: \(info.version)")
                        continue
                    case .idleTimeout:
                        try await send(.idleTimeout)
                        return
                    }

                    switch action {
                    case .none:
                        break
                    case .reply(let reply):
                        try await send(reply)
                    case .replyAndClose(let reply):
                        try await send(reply)
                        return
                    case .deliver(let transaction):
                        startCapture(&capture, session: session, remote: remote, sizeHint: 0)
                        let current = capture!
                        capture = nil
                        let message = makeMessage(
                            current, transaction, session: session, tls: tls, connectedNanos: connectedNanos,
                            remote: remote, local: local, transcript: transcript.take()
                        )
                        let next: SMTPSession.Action
                        do {
                            try await store.insert(message, raw: current.body)
                            next = session.stored(id: message.id)
                        } catch {
                            logger.error("cannot store message", metadata: ["id": "\(message.id)", "error": "\(error)"])
                            next = session.storeFailed()
                        }
                        if case .reply(let reply) = next {
                            try await send(reply)
                            store.setReplySent(id: message.id, nanos: WallClock.nanos())
                        }
                    }
                }
            }
        } catch {
            logger.debug("connection ended with an error", metadata: ["session": "\(sessionID)", "error": "\(error)"])
        }
    }

    /// Appends kept message bytes to the current capture.
    private func append(_ bytes: inout ByteBuffer, to capture: inout Capture?, session: SMTPSession, remote: SocketAddress?) {
        startCapture(&capture, session: session, remote: remote, sizeHint: bytes.readableBytes)
        guard capture!.body != nil else { return }
        capture!.body!.writeBuffer(&bytes)
    }

    /// Starts a message at its first bytes: its id, and its body with the `Received:` header.
    private func startCapture(_ capture: inout Capture?, session: SMTPSession, remote: SocketAddress?, sizeHint: Int) {
        guard capture == nil else { return }
        let now = WallClock.nanos()
        let id = MessageIDGenerator.next(nanos: now)
        capture = Capture(id: id, body: nil)
        guard !configuration.discardBodies else { return }
        let header = receivedHeader(id: id, session: session, remote: remote, nanos: now)
        let capacity = min(max(sizeHint, 4096), configuration.limits.maxMessageBytes)
        var buffer = ByteBufferAllocator().buffer(capacity: header.utf8.count + capacity)
        capture!.headerLength = buffer.writeString(header)
        capture!.body = buffer
    }

    private func receivedHeader(id: String, session: SMTPSession, remote: SocketAddress?, nanos: Int64) -> String {
        // RFC 5321 §4.4 trace fields; the "with" keywords are RFC 3848's.
        var with = session.esmtp ? "ESMTP" : "SMTP"
        if session.tlsActive { with += "S" }
        if session.authUser != nil { with += "A" }
        let helo = session.helo ?? "unknown"
        let address = remote?.ipAddress ?? "unknown"
        return "Received: from \(helo) ([\(address)])\r\n\tby \(configuration.hostname) (Swallow) with \(with) id \(id);\r\n\t"
            + "\(WallClock.rfc5322Date(nanos: nanos))\r\n"
    }

    private func makeMessage(
        _ capture: Capture, _ transaction: SMTPSession.Transaction, session: SMTPSession, tls: TLSInfo?,
        connectedNanos: Int64, remote: SocketAddress?, local: SocketAddress?, transcript: [TranscriptEntry]?
    ) -> CapturedMessage {
        var headerLength = 0
        var anomalies: [String] = []
        var traceID: String?
        if var body = capture.body {
            headerLength = capture.headerLength
            body.moveReaderIndex(forwardBy: headerLength)
            anomalies = MessageAnomalies.scan(
                body, maxLineBytes: configuration.limits.maxTextLineBytes, eightBitDeclared: transaction.eightBitDeclared
            ).names
            traceID = body.withUnsafeReadableBytes { HeaderLookup.firstValue(named: "X-Swallow-Trace", in: $0) }
        }
        let envelope = Envelope(
            mailFrom: transaction.reversePath.address,
            mailParameters: Self.dictionary(transaction.parameters),
            recipients: transaction.recipients.map {
                Envelope.Recipient(address: $0.path.address, parameters: Self.dictionary($0.parameters))
            }
        )
        let sessionInfo = SessionInfo(
            id: sessionID,
            remoteAddress: remote.map(Self.describe) ?? "unknown",
            localAddress: local.map(Self.describe) ?? "unknown",
            helo: session.helo ?? "",
            esmtp: session.esmtp,
            tls: tls,
            authUser: session.authUser
        )
        return CapturedMessage(
            id: capture.id,
            envelope: envelope,
            session: sessionInfo,
            timestamps: CaptureTimestamps(
                connectedNanos: connectedNanos,
                mailNanos: transaction.mailNanos,
                dataStartNanos: transaction.dataStartNanos,
                dataEndNanos: WallClock.nanos()
            ),
            size: capture.body?.readableBytes ?? transaction.receivedBytes,
            receivedHeaderLength: headerLength,
            anomalies: anomalies,
            traceID: traceID,
            bodyStored: capture.body != nil,
            transcript: transcript
        )
    }

    private static func dictionary(_ parameters: [ESMTPParameter]) -> [String: String] {
        Dictionary(parameters.map { ($0.keyword, $0.value ?? "") }, uniquingKeysWith: { first, _ in first })
    }

    static func describe(_ address: SocketAddress) -> String {
        guard let ip = address.ipAddress, let port = address.port else { return "\(address)" }
        return ip.contains(":") ? "[\(ip)]:\(port)" : "\(ip):\(port)"
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
