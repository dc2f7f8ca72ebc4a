import Logging
import MailMessage
import NIOCore
import NIOSSL
import NIOTLS
import SMTPProtocol

/// What every connection of one listener shares.
struct SMTPServerContext: Sendable {
    var session: SMTPSession.Configuration
    var configuration: SinkConfiguration
    var store: MessageStore
    var connections: ConnectionRegistry
    var startTLS: NIOSSLContext?
    var implicitTLS: Bool
    var logger: Logger
    var metrics: SinkMetrics
}

/// One SMTP connection, driven on its event loop: frames bytes with `SMTPFrameDecoder`,
/// feeds the commands to an `SMTPSession` and carries out its actions.
///
/// Everything but the disk write runs synchronously on the event loop: replies to pipelined
/// commands are written together and flushed once per read, and the framer's mode follows
/// the session at once (message mode after `354`, chunk mode after BDAT, TLS after the
/// `220` to STARTTLS). While a message waits for the disk (`--fsync always|batch`), the
/// handler stops decoding and reading, so a fast client cannot make it buffer without bound.
///
/// Measured choice: an earlier version ran the session in an async loop over
/// `NIOAsyncChannel`; the thread hops per command cost about 3x smtp-sink's CPU per
/// 1 KiB message (Benchmarks/peer-compare.py).
final class SMTPServerHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    private let shared: SMTPServerContext
    private var session: SMTPSession
    private var decoder: SMTPFrameDecoder
    private var cumulation: ByteBuffer?
    private var capture: MessageCapture?
    private var transcript: Transcript
    private var tls: TLSInfo?
    private var peer = Peer()
    private var connectedNanos: Int64 = 0
    /// Replies written but not flushed yet.
    private var unflushed = false
    /// Waiting for the store: no decoding, no reading.
    private var waitingForStore = false
    /// Magic `hang@`: no more replies, input dropped; the idle timeout ends the connection.
    private var hung = false
    private var readPending = false
    private var closing = false

    init(_ shared: SMTPServerContext) {
        self.shared = shared
        self.session = SMTPSession(configuration: shared.session)
        self.decoder = SMTPFrameDecoder(maxLineBytes: shared.configuration.limits.maxFrameLineBytes)
        self.transcript = Transcript(enabled: shared.configuration.transcripts)
    }

    // MARK: Connection lifecycle

    func channelActive(context: ChannelHandlerContext) {
        connectedNanos = WallClock.nanos()
        guard let number = shared.connections.add(context.channel) else {
            reply(SMTPReply(421, "4.7.0", "Too many connections, try again later"), context: context)
            close(context: context)
            return
        }
        shared.metrics.connected()
        peer = Peer(sessionID: "s\(number)", remote: context.channel.remoteAddress, local: context.channel.localAddress)
        reply(session.greeting(), context: context)
        flushReplies(context: context)
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        shared.connections.remove(context.channel)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        shared.logger.debug("connection error", metadata: ["session": "\(peer.sessionID)", "error": "\(error)"])
        context.close(promise: nil)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? IdleStateHandler.IdleStateEvent, event == .read {
            reply(.idleTimeout, context: context)
            close(context: context)
            return
        }
        if let event = event as? TLSUserEvent, case .handshakeCompleted = event {
            let handler = try? context.pipeline.syncOperations.handler(type: NIOSSLServerHandler.self)
            let info = TLSInfo(version: Self.name(handler?.tlsVersion), cipher: nil, implicit: shared.implicitTLS)
            tls = info
            session.tlsEstablished()
            transcript.note("TLS established: \(info.version)")
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    // MARK: Input

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        // Hung (magic `hang@`): what arrives is dropped, so memory stays bounded.
        guard !hung else { return }
        var bytes = unwrapInboundIn(data)
        if cumulation == nil || cumulation!.readableBytes == 0 {
            cumulation = bytes
        } else {
            cumulation!.writeBuffer(&bytes)
        }
        process(context: context)
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        flushReplies(context: context)
    }

    func read(context: ChannelHandlerContext) {
        guard !waitingForStore else {
            readPending = true
            return
        }
        context.read()
    }

    private func process(context: ChannelHandlerContext) {
        while !waitingForStore, !closing, !hung, cumulation != nil, let frame = decoder.next(&cumulation!) {
            handle(frame, context: context)
        }
        if let buffer = cumulation, buffer.readableBytes == 0 {
            cumulation = nil
        } else if let buffer = cumulation, buffer.readerIndex > 64 * 1024, buffer.readerIndex > buffer.readableBytes {
            cumulation!.discardReadBytes()
        }
    }

    private func handle(_ frame: SMTPFrame, context: ChannelHandlerContext) {
        switch frame {
        case .line(let line):
            if session.isInAuthExchange {
                let text = String(decoding: line.readableBytesView, as: UTF8.self)
                transcript.client(text == "*" ? "*" : "(AUTH response redacted)")
                act(session.authResponse(text), context: context)
                return
            }
            let command: SMTPCommand
            do {
                command = try SMTPCommand.parse(line, limits: shared.configuration.limits)
            } catch {
                transcript.client("(invalid line: \(error))")
                act(session.receive(error), context: context)
                return
            }
            transcript.client(command)
            switch command {
            case .starttls where (cumulation?.readableBytes ?? 0) > 0:
                // RFC 3207 §4.2: nothing may be pipelined after STARTTLS.
                act(.reply(SMTPReply(503, "5.5.1", "STARTTLS must be the last command in a group")), context: context)
                return
            case .bdat(let size, _) where size > 0:
                decoder.mode = .chunk(remaining: size)
            default:
                break
            }
            let action = session.receive(command, at: WallClock.nanos())
            act(action, context: context)
            switch (command, action) {
            case (.data, .reply(let reply)) where reply.code == .startMailInput:
                decoder.mode = .message
            case (.starttls, .reply(let reply)) where reply.code == .serviceReady:
                startTLS(context: context)
            default:
                break
            }
        case .invalidLine(let error):
            transcript.client("(invalid line: \(error))")
            act(session.receive(error), context: context)
        case .messageChunk(var bytes):
            keep(&bytes, context: context)
        case .messageEnd:
            act(session.messageEnd(), context: context)
        case .chunkData(var bytes, let complete):
            keep(&bytes, context: context)
            if complete { act(session.chunkComplete(), context: context) }
        }
    }

    private func keep(_ bytes: inout ByteBuffer, context: ChannelHandlerContext) {
        guard session.messageBytes(bytes.readableBytes) else { return }
        if capture == nil {
            capture = MessageCapture(
                session: session, peer: peer, configuration: shared.configuration,
                allocator: context.channel.allocator, sizeHint: session.declaredSize ?? bytes.readableBytes
            )
        }
        capture!.append(&bytes)
    }

    // MARK: Actions

    private func act(_ action: SMTPSession.Action, context: ChannelHandlerContext) {
        switch action {
        case .none:
            break
        case .reply(let reply):
            self.reply(reply, context: context)
        case .replyAndClose(let reply):
            self.reply(reply, context: context)
            close(context: context)
        case .close:
            close(context: context)
        case .hang:
            hung = true
            cumulation = nil
        case .deliver(let transaction):
            deliver(transaction, context: context)
        }
    }

    private func deliver(_ transaction: SMTPSession.Transaction, context: ChannelHandlerContext) {
        let current = capture ?? MessageCapture(
            session: session, peer: peer, configuration: shared.configuration,
            allocator: context.channel.allocator, sizeHint: 0
        )
        capture = nil
        let magic = shared.session.magicAddresses ? transaction.recipients.compactMap { MagicAddress($0.path) } : []
        if magic.contains(.reject) {
            act(session.refuse(MagicAddress.rejectReply), context: context)
            return
        }
        let headerFault = shared.session.magicAddresses
            ? current.body.flatMap { body in body.withUnsafeReadableBytes { HeaderLookup.firstValue(named: "X-Swallow-Fault", in: $0) } }
                .flatMap(HeaderFault.init)
            : nil
        if let reply = headerFault?.reply {
            let refusal = session.refuse(reply)
            guard let delay = headerFault?.delay, delay > 0 else { return act(refusal, context: context) }
            waitingForStore = true
            let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
            context.eventLoop.scheduleTask(in: .nanoseconds(Int64(delay * 1e9))) {
                let (handler, context) = bound.value
                handler.waitingForStore = false
                handler.act(refusal, context: context)
                handler.resume(context: context)
            }
            return
        }
        let tagged = shared.session.magicAddresses
            ? [PlusTagFault(transaction.reversePath)] + transaction.recipients.map { PlusTagFault($0.path) } : []
        let delay = max(
            magic.reduce(0.0) { if case .slow(let seconds) = $1 { max($0, seconds) } else { $0 } },
            tagged.reduce(0.0) { max($0, $1?.delay ?? 0) },
            headerFault?.delay ?? 0
        )
        let message = current.makeMessage(
            transaction, session: session, peer: peer, tls: tls, connectedNanos: connectedNanos,
            limits: shared.configuration.limits, transcript: transcript.take()
        )
        let store = shared.store
        guard store.insertWaitsForDisk || delay > 0 else {
            store.insertNow(message, raw: current.body)
            stored(message, .success(()), context: context)
            return
        }
        waitingForStore = true
        let loop = context.eventLoop
        let bound = NIOLoopBound((self, context), eventLoop: loop)
        store.insert(message, raw: current.body) { result in
            // A `slow-<duration>@` recipient: the reply waits; later commands wait behind it.
            guard delay > 0 else {
                return loop.execute {
                    let (handler, context) = bound.value
                    handler.storeFinished(message, result, context: context)
                }
            }
            loop.scheduleTask(in: .nanoseconds(Int64(delay * 1e9))) {
                let (handler, context) = bound.value
                handler.storeFinished(message, result, context: context)
            }
        }
    }

    private func storeFinished(_ message: CapturedMessage, _ result: Result<Void, any Error>, context: ChannelHandlerContext) {
        waitingForStore = false
        stored(message, result, context: context)
        resume(context: context)
    }

    /// After a wait (the store, or a requested delay): replies out, pipelined input processed.
    private func resume(context: ChannelHandlerContext) {
        flushReplies(context: context)
        process(context: context)
        flushReplies(context: context)
        if readPending && !waitingForStore {
            readPending = false
            context.read()
        }
    }

    private func stored(_ message: CapturedMessage, _ result: Result<Void, any Error>, context: ChannelHandlerContext) {
        switch result {
        case .success:
            shared.metrics.accepted(bytes: message.size)
            act(session.stored(id: message.id), context: context)
            shared.store.setReplySent(id: message.id, nanos: WallClock.nanos())
        case .failure(let error):
            shared.logger.error("cannot store message", metadata: ["id": "\(message.id)", "error": "\(error)"])
            act(session.storeFailed(), context: context)
        }
    }

    // MARK: Output

    private func reply(_ reply: SMTPReply, context: ChannelHandlerContext) {
        transcript.server(reply)
        if reply.code.rawValue >= 400 { shared.metrics.rejected(code: reply.code.rawValue) }
        var buffer = context.channel.allocator.buffer(capacity: 64)
        buffer.writeSMTPReply(reply)
        context.write(wrapOutboundOut(buffer), promise: nil)
        unflushed = true
    }

    private func flushReplies(context: ChannelHandlerContext) {
        guard unflushed else { return }
        unflushed = false
        context.flush()
    }

    private func close(context: ChannelHandlerContext) {
        guard !closing else { return }
        closing = true
        flushReplies(context: context)
        context.close(promise: nil)
    }

    private func startTLS(context: ChannelHandlerContext) {
        guard let startTLS = shared.startTLS else { return }
        // The 220 goes out in plaintext; everything after it is TLS.
        flushReplies(context: context)
        let handler = NIOSSLServerHandler(context: startTLS)
        do {
            try context.pipeline.syncOperations.addHandler(handler, position: .before(self))
        } catch {
            close(context: context)
        }
    }

    private static func name(_ version: TLSVersion?) -> String {
        switch version {
        case .tlsv13: "TLSv1.3"
        case .tlsv12: "TLSv1.2"
        case .tlsv11: "TLSv1.1"
        case .tlsv1: "TLSv1"
        case nil: "unknown"
        }
    }
}

@available(*, unavailable)
extension SMTPServerHandler: Sendable {}
