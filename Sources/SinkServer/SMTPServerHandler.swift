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
    var faults: FaultEngine
    var handoffs: LoopHandoffs
    /// Sessions of the HTTP send API (`LocalSubmission`), not of a network client.
    var viaHTTP = false
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

    // Internal rather than private where SMTPServerHandler+Faults.swift needs them.
    let shared: SMTPServerContext
    var session: SMTPSession
    var decoder: SMTPFrameDecoder
    var cumulation: ByteBuffer?
    private var capture: MessageCapture?
    var transcript: Transcript
    private var tls: TLSInfo?
    var peer = Peer()
    private var connectedNanos: Int64 = 0
    /// Where the disk writer hands completed messages back to this connection's loop.
    private var handoff: LoopHandoff?
    /// Replies written but not flushed yet.
    var unflushed = false
    /// Waiting for the store or a fault's delay: no decoding, no reading.
    var paused = false
    /// Fault rules that fired before MAIL, and in the transaction under way.
    var sessionFaults: [String] = []
    var transactionFaults: [String] = []
    /// A `throttle` fault: bytes per second (0: off), and when the connection's byte budget is
    /// back to zero (monotonic nanoseconds); reading waits until then.
    var throttleRate = 0.0
    var throttleFreeAt: UInt64 = 0
    private var throttledReadScheduled = false
    /// Magic `hang@`: no more replies, input dropped; the idle timeout ends the connection.
    var hung = false
    private var readPending = false
    private var closing = false
    /// `--idle-timeout` from a command line's first byte to its CRLF: silence is timed by the
    /// `IdleStateHandler`, but a client trickling one byte at a time resets that at every byte.
    private var lineTimer: Scheduled<Void>?
    /// `--data-timeout` from the start of a message's DATA or first BDAT to its end.
    private var dataTimer: Scheduled<Void>?

    init(_ shared: SMTPServerContext) {
        self.shared = shared
        self.session = SMTPSession(configuration: shared.session)
        self.decoder = SMTPFrameDecoder(maxLineBytes: shared.configuration.limits.maxFrameLineBytes)
        self.transcript = Transcript(enabled: shared.configuration.transcripts)
    }

    // MARK: Connection lifecycle

    func channelActive(context: ChannelHandlerContext) {
        connectedNanos = WallClock.nanos()
        handoff = shared.handoffs.handoff(for: context.eventLoop)
        guard let number = shared.connections.add(context.channel) else {
            reply(SMTPReply(421, "4.7.0", "Too many connections, try again later"), context: context)
            close(context: context)
            return
        }
        shared.metrics.connected()
        peer = shared.viaHTTP
            ? Peer.httpAPI(sessionID: "s\(number)")
            : Peer(sessionID: "s\(number)", remote: context.channel.remoteAddress, local: context.channel.localAddress)
        context.fireChannelActive()
        // Faults at connect, then at greeting, then the banner.
        guard let decision = consult(.connect) else { return greet(context: context) }
        carryOut(decision, context: context, refuse: Self.refuseConnection) { handler, context in handler.greet(context: context) }
    }

    private func greet(context: ChannelHandlerContext) {
        let banner = { (handler: SMTPServerHandler, context: ChannelHandlerContext) in
            handler.reply(handler.session.greeting(), context: context)
            handler.flushReplies(context: context)
        }
        guard let decision = consult(.greeting) else { return banner(self, context) }
        carryOut(decision, context: context, refuse: Self.refuseConnection, proceed: banner)
    }

    /// A fault's reply at connect or greeting: instead of the banner, then the connection ends.
    private static func refuseConnection(_ handler: SMTPServerHandler, _ context: ChannelHandlerContext, _ reply: SMTPReply) {
        handler.reply(reply, context: context)
        handler.close(context: context)
    }

    func channelInactive(context: ChannelHandlerContext) {
        lineTimer?.cancel()
        dataTimer?.cancel()
        capture = nil
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
        if throttleRate > 0 { spend(bytes.readableBytes) }
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
        guard !paused else {
            readPending = true
            return
        }
        if throttleRate > 0 {
            let now = FaultEngine.now()
            if now < throttleFreeAt {
                guard !throttledReadScheduled else { return }
                throttledReadScheduled = true
                let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
                context.eventLoop.scheduleTask(deadline: .uptimeNanoseconds(throttleFreeAt)) {
                    let (handler, context) = bound.value
                    handler.throttledReadScheduled = false
                    handler.read(context: context)
                }
                return
            }
        }
        context.read()
    }

    private func process(context: ChannelHandlerContext) {
        while !paused, !closing, !hung, cumulation != nil, let frame = decoder.next(&cumulation!) {
            handle(frame, context: context)
        }
        if let buffer = cumulation, buffer.readableBytes == 0 {
            cumulation = nil
        } else if let buffer = cumulation, buffer.readerIndex > 64 * 1024, buffer.readerIndex > buffer.readableBytes {
            cumulation!.discardReadBytes()
        }
        timeLine(context: context)
    }

    /// Starts the command-line deadline when a line has begun and not ended, stops it otherwise
    /// (a completed line stops it in `handle`, so the next partial line is timed from its own
    /// first byte). Not while waiting for the store or a delay: the client is not the one late.
    private func timeLine(context: ChannelHandlerContext) {
        let partial = decoder.mode == .command && !paused && !closing && !hung
            && ((cumulation?.readableBytes ?? 0) > 0 || decoder.isDiscardingLine)
        guard partial else {
            lineTimer?.cancel()
            lineTimer = nil
            return
        }
        guard lineTimer == nil else { return }
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        lineTimer = context.eventLoop.scheduleTask(in: shared.configuration.idleTimeout) {
            let (handler, context) = bound.value
            handler.lineTimer = nil
            handler.timedOut(.commandLineTimeout, context: context)
        }
    }

    private func timedOut(_ reply: SMTPReply, context: ChannelHandlerContext) {
        guard !closing else { return }
        transcript.note("timed out: \(reply.lines.first ?? "")")
        self.reply(reply, context: context)
        close(context: context)
    }

    private func handle(_ frame: SMTPFrame, context: ChannelHandlerContext) {
        switch frame {
        case .line(let line):
            lineTimer?.cancel()
            lineTimer = nil
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
            if case .starttls = command, (cumulation?.readableBytes ?? 0) > 0 {
                // RFC 3207 §4.2: nothing may be pipelined after STARTTLS.
                act(.reply(SMTPReply(503, "5.5.1", "STARTTLS must be the last command in a group")), context: context)
                return
            }
            // Most commands meet no rule: then nothing is allocated for the fault path.
            guard let phase = phase(of: command), let decision = consult(phase, command: command) else {
                return execute(command, context: context)
            }
            carryOut(decision, context: context) { handler, context, reply in
                handler.refuse(command, with: reply, context: context)
            } proceed: { handler, context in
                handler.execute(command, context: context)
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

    /// A command, as the session answers it.
    func execute(_ command: SMTPCommand, context: ChannelHandlerContext) {
        if case .bdat(let size, _) = command, size > 0 {
            decoder.mode = .chunk(remaining: size)
        }
        if case .mail = command { transactionFaults = [] }
        let startsData = switch command {
        case .data: true
        case .bdat: session.transaction?.usedBDAT == false
        default: false
        }
        let action = session.receive(command, at: WallClock.nanos())
        if startsData, session.isReceivingMessage { beginMessage(context: context) }
        act(action, context: context)
        switch (command, action) {
        case (.data, .reply(let reply)) where reply.code == .startMailInput:
            decoder.mode = .message
        case (.starttls, .reply(let reply)) where reply.code == .serviceReady:
            startTLS(context: context)
        default:
            break
        }
    }

    /// A message's data begins (DATA answered 354, or its first BDAT): nothing gathered for an
    /// earlier transaction can reach it, and its time runs from now.
    private func beginMessage(context: ChannelHandlerContext) {
        capture = nil
        dataTimer?.cancel()
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        dataTimer = context.eventLoop.scheduleTask(in: shared.configuration.dataTimeout) {
            let (handler, context) = bound.value
            handler.dataTimer = nil
            handler.timedOut(.dataTimeout, context: context)
        }
    }

    /// After every action: once the session is no longer receiving a message, whatever was
    /// gathered for it is gone (a refused or abandoned transaction leaves nothing behind).
    private func endMessageIfOver() {
        guard !session.isReceivingMessage else { return }
        capture = nil
        dataTimer?.cancel()
        dataTimer = nil
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

    func act(_ action: SMTPSession.Action, context: ChannelHandlerContext) {
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
        endMessageIfOver()
    }

    private func deliver(_ transaction: SMTPSession.Transaction, context: ChannelHandlerContext) {
        let current = capture ?? MessageCapture(
            session: session, peer: peer, configuration: shared.configuration,
            allocator: context.channel.allocator, sizeHint: 0
        )
        capture = nil
        var delay = 0.0
        if let decision = consult(.dataEnd, message: current.body) {
            delay = decision.delay
            switch decision.effect {
            case .reply(let reply):
                return after(delay, context: context) { handler, context in
                    handler.transactionFaults = []
                    handler.act(handler.session.refuse(reply), context: context)
                    if reply.code.rawValue == 421 { handler.close(context: context) }
                }
            case .disconnect(let reply, let partial):
                return after(delay, context: context) { handler, context in
                    handler.disconnect(reply: reply, partial: partial, context: context)
                }
            case .hang:
                return hang()
            case .drop:
                let message = makeMessage(transaction, current)
                return after(delay, context: context) { handler, context in
                    handler.shared.metrics.droppedMessage()
                    handler.shared.store.events.publish(.dropped(message))
                    handler.act(handler.session.stored(id: message.id), context: context)
                }
            case .throttle(let rate):
                throttle(rate, context: context)
            case .greylist, nil:
                break
            }
        } else if shared.session.magicAddresses {
            // With no rule acting at data-end: reject@, X-Swallow-Fault, slow-D@ and +delay-D.
            let magic = transaction.recipients.compactMap { MagicAddress($0.path) }
            if magic.contains(.reject) {
                transactionFaults = []
                return act(session.refuse(MagicAddress.rejectReply), context: context)
            }
            let headerFault = FaultEvent.header("X-Swallow-Fault", in: current.body).flatMap(HeaderFault.init)
            if let reply = headerFault?.reply {
                return after(headerFault?.delay ?? 0, context: context) { handler, context in
                    handler.transactionFaults = []
                    handler.act(handler.session.refuse(reply), context: context)
                    if reply.code.rawValue == 421 { handler.close(context: context) }
                }
            }
            let tagged = [PlusTagFault(transaction.reversePath)] + transaction.recipients.map { PlusTagFault($0.path) }
            delay = max(
                magic.reduce(0.0) { if case .slow(let seconds) = $1 { max($0, seconds) } else { $0 } },
                tagged.reduce(0.0) { max($0, $1?.delay ?? 0) },
                headerFault?.delay ?? 0
            )
        }
        let message = makeMessage(transaction, current)
        let store = shared.store
        guard store.insertWaitsForDisk || delay > 0 else {
            store.insertNow(message, raw: current.body)
            stored(message, .success(()), context: context)
            return
        }
        paused = true
        let loop = context.eventLoop
        let bound = NIOLoopBound((self, context), eventLoop: loop)
        // The delay counts from the message's recorded end of data, whatever the store takes.
        let deadline = NIODeadline.now() + .nanoseconds(Int64(delay * 1e9))
        let delayed = delay > 0
        let handoff = self.handoff ?? shared.handoffs.handoff(for: loop)
        store.insert(message, raw: current.body) { result in
            // A delayed reply: later commands wait behind it.
            guard delayed else {
                return handoff.post {
                    let (handler, context) = bound.value
                    handler.storeFinished(message, result, context: context)
                }
            }
            loop.scheduleTask(deadline: deadline) {
                let (handler, context) = bound.value
                handler.storeFinished(message, result, context: context)
            }
        }
    }

    private func makeMessage(_ transaction: SMTPSession.Transaction, _ capture: MessageCapture) -> CapturedMessage {
        var message = capture.makeMessage(
            transaction, session: session, peer: peer, tls: tls, connectedNanos: connectedNanos,
            limits: shared.configuration.limits, transcript: transcript.take()
        )
        if !sessionFaults.isEmpty || !transactionFaults.isEmpty {
            message.faults = sessionFaults + transactionFaults.filter { !sessionFaults.contains($0) }
            transactionFaults = []
        }
        return message
    }

    private func storeFinished(_ message: CapturedMessage, _ result: Result<Void, any Error>, context: ChannelHandlerContext) {
        paused = false
        stored(message, result, context: context)
        resume(context: context)
    }

    /// After a wait (the store, or a requested delay): replies out, pipelined input processed.
    func resume(context: ChannelHandlerContext) {
        flushReplies(context: context)
        process(context: context)
        flushReplies(context: context)
        if readPending && !paused {
            readPending = false
            context.read()
        }
    }

    private func stored(_ message: CapturedMessage, _ result: Result<Void, any Error>, context: ChannelHandlerContext) {
        switch result {
        case .success:
            shared.metrics.accepted(bytes: message.size)
            act(session.stored(id: message.id), context: context)
            let sent = WallClock.nanos()
            shared.store.setReplySent(id: message.id, nanos: sent)
            shared.metrics.observe(message.timestamps, replySent: sent)
        case .failure(let error):
            shared.logger.error("cannot store message", metadata: ["id": "\(message.id)", "error": "\(error)"])
            act(session.storeFailed(), context: context)
        }
    }

    // MARK: Output

    func reply(_ reply: SMTPReply, context: ChannelHandlerContext) {
        transcript.server(reply)
        let code = reply.code.rawValue
        if code >= 400 { shared.metrics.rejected(code: code) }
        shared.metrics.replied(code)
        var buffer = context.channel.allocator.buffer(capacity: 64)
        buffer.writeSMTPReply(reply)
        if throttleRate > 0 { spend(buffer.readableBytes) }
        context.write(wrapOutboundOut(buffer), promise: nil)
        unflushed = true
    }

    func flushReplies(context: ChannelHandlerContext) {
        guard unflushed else { return }
        unflushed = false
        context.flush()
    }

    func close(context: ChannelHandlerContext) {
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
