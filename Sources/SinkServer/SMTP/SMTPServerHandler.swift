import Logging
import MailMessage
import NIOCore
import NIOSSL
import NIOTLS
import SMTPProtocol
import SocketIO

/// One SMTP connection, driven on its event loop: frames bytes with `SMTPFrameDecoder`,
/// feeds the commands to an `SMTPSession` and carries out its actions.
///
/// This file is the channel adapter: connection lifecycle, input, framing and output. The
/// steps it calls live beside it: asking the fault engine and carrying out its decisions
/// (`+Faults`), the message's store round-trip and final reply (`+Delivery`), the deadlines
/// (`ConnectionDeadlines`: silence, a command line, a message's data), the throttle (`ConnectionThrottle`), STARTTLS (`+StartTLS`) and
/// writing (`+Output`).
///
/// Everything but the disk write runs synchronously on the event loop: replies to pipelined
/// commands are written together and flushed once per read, and the framer's mode follows
/// the session at once (message mode after `354`, chunk mode after BDAT, TLS after the
/// `220` to STARTTLS). While a message waits for the disk (`--fsync always|batch`) or a
/// fault's delay, the handler stops decoding (`paused`), and reading once 64 KiB wait, so a
/// fast client cannot make it buffer without bound.
///
/// Measured choice: an earlier version ran the session in an async loop over
/// `NIOAsyncChannel`; the thread hops per command cost about 3x smtp-sink's CPU per
/// 1 KiB message (Benchmarks/peer-compare.py).
final class SMTPServerHandler: ChannelDuplexHandler, RemovableChannelHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    // Internal rather than private where the step files beside this one need them.
    // `@exclusivity(unchecked)`: a handler runs on its channel's event loop only, one call at
    // a time, so the runtime's check of each access (a thread-local lookup and a set insert,
    // ~4% of the sink's CPU per 1 KiB message in `perf record`, half of it on these fields)
    // guards nothing here. The static checks of the compiler still apply.
    let sharedBox: SMTPServerContext.Shared
    /// The listener's context (read in place from its box; see `SMTPServerContext.Shared`).
    var shared: SMTPServerContext { sharedBox.value }
    @exclusivity(unchecked) var session: SMTPSession
    @exclusivity(unchecked) var decoder: SMTPFrameDecoder
    @exclusivity(unchecked) var cumulation: ByteBuffer?
    /// The message being received, from its first byte to its end (or its refusal).
    @exclusivity(unchecked) var capture: MessageCapture?
    @exclusivity(unchecked) var transcript: Transcript
    @exclusivity(unchecked) var tls: TLSInfo?
    @exclusivity(unchecked) var peer = Peer()
    @exclusivity(unchecked) var connectedNanos: Int64 = 0
    /// The connection's loop when it is a `SocketLoop`, whose turn's clock reading the
    /// connection's timestamps share (`wallNanos`).
    @exclusivity(unchecked) var socketLoop: SocketLoop?
    /// This handler's context while its channel is open on a `SocketLoop`, for the loop's calls
    /// back (`loopDeferred`); dropped when the channel closes.
    @exclusivity(unchecked) var loopContext: ChannelHandlerContext?
    /// Where the disk writer hands completed messages back to this connection's loop.
    @exclusivity(unchecked) var handoff: LoopHandoff?
    /// The replies of one pass (its readable bytes: written, not flushed yet), handed to the
    /// channel together by `flushReplies`. Its memory is
    /// reused: once the channel has sent them, the next reply starts it over (a buffer per
    /// reply was a `malloc` and a `free` per reply).
    @exclusivity(unchecked) var replies = ByteBuffer()
    /// Waiting for the store or a fault's delay: no decoding, no reading.
    @exclusivity(unchecked) var paused = false
    /// Fault rules that fired before MAIL, and in the transaction under way.
    @exclusivity(unchecked) var sessionFaults: [String] = []
    @exclusivity(unchecked) var transactionFaults: [String] = []
    @exclusivity(unchecked) var throttle = ConnectionThrottle()
    @exclusivity(unchecked) var throttledReadScheduled = false
    /// Under a throttle: bytes read but not yet handed to the decoder, and whether their release is scheduled.
    @exclusivity(unchecked) var throttled: ByteBuffer?
    @exclusivity(unchecked) var throttledReleaseScheduled = false
    /// Reads sized for message data from now on (`messageReadSizes`).
    @exclusivity(unchecked) var messageReads = false
    /// A `hang` fault: no more replies, input dropped; the idle timeout ends the connection.
    @exclusivity(unchecked) var hung = false
    @exclusivity(unchecked) var deadlines = ConnectionDeadlines()
    @exclusivity(unchecked) private var readPending = false
    @exclusivity(unchecked) var closing = false
    /// Proxy mode: this connection's connection to the upstream, from its first MAIL.
    @exclusivity(unchecked) var upstreamLink: ProxyLink?
    /// Proxy mode: the upstream's reply to send in place of the session's own acceptance.
    @exclusivity(unchecked) var replacement: SMTPReply?
    /// The message's headers the attempts need, from its end until its final reply.
    @exclusivity(unchecked) var ending: MessageHeaders?
    /// The last message's session and envelope, which the next shares when equal.
    /// The origin of this connection's delivery attempts (see `attemptOrigin()`).
    @exclusivity(unchecked) var lastOrigin: Attempt.Origin?
    /// The start of the `Received:` header of this connection's last message.
    @exclusivity(unchecked) var receivedPrefix = MessageCapture.ReceivedPrefix.Cache.none
    @exclusivity(unchecked) var previousMessage: (sharedSession: CapturedMessage.SharedSession, envelope: Envelope)?
    /// A plain connection on a `LoopChannel`: the channel calls this handler directly, and
    /// replies and read requests go straight to it (`LoopChannelDirect`); `nil` under TLS, whose
    /// handler sits in front of this one. Set from activation to closing or STARTTLS.
    @exclusivity(unchecked) var directChannel: LoopChannel?
    @exclusivity(unchecked) var directContext: ChannelHandlerContext?

    convenience init(_ shared: SMTPServerContext) {
        self.init(SMTPServerContext.Shared(shared))
    }

    init(_ box: SMTPServerContext.Shared) {
        let shared = box.value
        self.sharedBox = box
        self.session = box.newSession
        self.decoder = SMTPFrameDecoder(maxLineBytes: shared.configuration.limits.maxFrameLineBytes)
        self.transcript = Transcript(enabled: shared.configuration.transcripts)
    }

    /// The wall clock for the connection's timestamps: its `SocketLoop`'s reading for the
    /// turn under way, or the clock's on other loops.
    var wallNanos: Int64 { socketLoop?.wallNanos ?? WallClock.nanos() }

    // MARK: Connection lifecycle

    func channelActive(context: ChannelHandlerContext) {
        socketLoop = context.eventLoop as? SocketLoop
        if socketLoop != nil { loopContext = context }
        if !shared.implicitTLS, let channel = context.channel as? LoopChannel {
            directChannel = channel
            directContext = context
            channel.direct = self
        }
        connectedNanos = wallNanos
        let handoff = shared.handoffs.handoff(for: context.eventLoop)
        self.handoff = handoff
        readHappened(context: context)
        guard let number = shared.connections.add(context.channel) else {
            return act(.replyAndClose(.tooManyConnections), context: context)
        }
        shared.metrics.connected()
        shared.audit.timeline.session(atNanos: connectedNanos)
        peer =
            shared.viaHTTP
            ? Peer.httpAPI(sessionID: "s\(number)")
            : Peer(
                sessionID: "s\(number)", remote: context.channel.remoteAddress,
                local: handoff.describeLocal(context.channel.localAddress))
        context.fireChannelActive()
        // Faults at connect, then at greeting, then the banner; the idle watchdog (timed from
        // the connection's start) is set once the banner has gone: the client waits for it.
        defer { if !closing { watch(until: deadlines.lastRead + shared.configuration.idleTimeout, context: context) } }
        guard let decision = consult(.connect) else { return greet(context: context) }
        carryOut(decision, context: context, refuse: Self.refuseConnection) { handler, context in handler.greet(context: context) }
    }

    func channelInactive(context: ChannelHandlerContext) {
        leaveDirect()
        deadlines.cancelAll()
        loopContext = nil
        closeUpstream()
        capture = nil
        throttled = nil
        shared.connections.remove(context.channel)
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        shared.logger.debug("connection error", metadata: ["session": "\(peer.sessionID)", "error": "\(error)"])
        context.close(promise: nil)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? TLSUserEvent, case .handshakeCompleted = event {
            return tlsEstablished(context: context)
        }
        context.fireUserInboundEventTriggered(event)
    }

    // MARK: Input

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        received(unwrapInboundIn(data), context: context)
    }

    /// Bytes read from the client.
    func received(_ read: ByteBuffer, context: ChannelHandlerContext) {
        readHappened(context: context)
        // Hung: what arrives is dropped, so memory stays bounded.
        guard !hung else { return }
        var bytes = read
        if throttle.isOn {
            if throttled == nil { throttled = bytes } else { throttled!.writeBuffer(&bytes) }
            return releaseThrottled(context: context)
        }
        accumulate(&bytes)
        process(context: context)
    }

    /// Adds bytes read to those waiting for the decoder (taking the read's buffer when none wait).
    func accumulate(_ bytes: inout ByteBuffer) {
        if cumulation == nil || cumulation!.readableBytes == 0 {
            cumulation = bytes
        } else {
            cumulation!.writeBuffer(&bytes)
        }
    }

    func channelReadComplete(context: ChannelHandlerContext) {
        flushReplies(context: context)
    }

    /// While paused, input is still read (kept, not decoded) until this many bytes wait: a read
    /// withheld at once made NIO drop the socket's read interest and add it back after the
    /// wait, two `epoll_ctl`s for every message that waits for the disk (`perf stat`, 1 KiB
    /// messages with `--fsync batch`), though the client sends nothing until it has its `250`.
    static let pausedReadBound = 64 * 1024

    func read(context: ChannelHandlerContext) {
        guard !paused || (cumulation?.readableBytes ?? 0) < Self.pausedReadBound, throttled == nil else {
            readPending = true
            return
        }
        guard !throttleDefersRead(context: context) else { return }
        requestRead(context: context)
    }

    /// Reads again if a read was asked for while paused.
    func resumeReading(context: ChannelHandlerContext) {
        guard readPending, !paused, throttled == nil else { return }
        readPending = false
        requestRead(context: context)
    }

    private func requestRead(context: ChannelHandlerContext) {
        if let directChannel { directChannel.read0() } else { context.read() }
    }

    /// Bytes left over after a read, at most this many, are copied out of a read buffer at
    /// least four times as large (`process`).
    static let leftoverCopyBound = 1024

    func process(context: ChannelHandlerContext) {
        while !paused, !closing, !hung, cumulation != nil, let frame = decoder.next(&cumulation!) {
            handle(frame, context: context)
        }
        if let buffer = cumulation, buffer.readableBytes == 0 {
            cumulation = nil
        } else if let buffer = cumulation, buffer.readableBytes <= Self.leftoverCopyBound, buffer.capacity >= 4 * Self.leftoverCopyBound {
            // A few bytes left over (a line cut by the read) are copied out rather than keep the
            // whole read buffer: held, it cannot be reused, and NIO allocates another for the
            // next read (measured: 500 clients trickling message data held ~45 KiB each, ~14 with
            // the copy).
            var own = context.channel.allocator.buffer(capacity: Self.leftoverCopyBound)
            own.writeImmutableBuffer(buffer)
            cumulation = own
        } else if let buffer = cumulation, buffer.readerIndex > 64 * 1024, buffer.readerIndex > buffer.readableBytes {
            cumulation!.discardReadBytes()
        }
        timeLine(context: context)
    }

    private func handle(_ frame: SMTPFrame, context: ChannelHandlerContext) {
        switch frame {
        case .line(let line):
            deadlines.lineEnded()
            if session.isInAuthExchange {
                let text = String(decoding: line.readableBytesView, as: UTF8.self)
                transcript.client(text == "*" ? "*" : "(AUTH response redacted)")
                return act(session.authResponse(text), context: context)
            }
            let command: SMTPCommand
            do {
                command = try SMTPCommand.parse(line, limits: shared.configuration.limits)
            } catch {
                transcript.client("(invalid line: \(error))")
                return act(session.receive(error), context: context)
            }
            transcript.client(command)
            if case .starttls = command, (cumulation?.readableBytes ?? 0) > 0 {
                // RFC 3207 §4.2: nothing may be pipelined after STARTTLS.
                return act(.reply(.startTLSNotLast), context: context)
            }
            // Most commands meet no fault: then nothing is allocated for the fault path.
            guard let phase = phase(of: command), let decision = consult(phase, command: command) else {
                return forwards(command) ? forward(command, context: context) : execute(command, context: context)
            }
            carryOut(decision, command: command, context: context) { handler, context, reply in
                handler.refuse(command, with: reply, fault: decision, context: context)
            } proceed: { handler, context in
                if handler.forwards(command) { return handler.forward(command, context: context) }
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

    /// A command, as the session answers it; with `replacing`, an acceptance by the session is
    /// answered with that reply instead (the upstream's, in proxy mode).
    func execute(_ command: SMTPCommand, context: ChannelHandlerContext, replacing upstreamReply: SMTPReply? = nil) {
        // Set and cleared only when given: most commands have no upstream reply.
        if let upstreamReply { replacement = upstreamReply }
        defer { if upstreamReply != nil { replacement = nil } }
        if case .bdat(let size, _) = command, size > 0 {
            decoder.mode = .chunk(remaining: size)
        }
        if case .mail = command { transactionFaults = [] }
        let startsData =
            switch command {
            case .data: true
            case .bdat: session.transaction?.usedBDAT == false
            default: false
            }
        let action = session.receive(command, at: wallNanos)
        if startsData, session.isReceivingMessage { beginMessage(context: context) }
        switch action {
        case .reply(let reply) where reply.code.rawValue >= 400, .replyAndClose(let reply) where reply.code.rawValue >= 400:
            audited(command, transaction: session.transaction, reply: reply, fault: nil)
        default:
            break
        }
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

    // MARK: Actions

    func act(_ action: SMTPSession.Action, context: ChannelHandlerContext) {
        switch action {
        case .none:
            break
        case .reply(let reply):
            if let replacement, reply.code.rawValue / 100 == 2 {
                self.reply(replacement, context: context)
            } else {
                self.reply(reply, context: context)
            }
        case .replyAndClose(let reply):
            self.reply(reply, context: context)
            close(context: context)
        case .close:
            close(context: context)
        case .deliver(let transaction):
            deliver(transaction, context: context)
        }
        // Once the session is no longer receiving a message, whatever was gathered for it is
        // gone (a refused or abandoned transaction leaves nothing behind).
        if !session.isReceivingMessage {
            capture = nil
            deadlines.dataEnded()
        }
    }
}

// The pipeline's events, called by a `LoopChannel` directly on a plain connection.
extension SMTPServerHandler: LoopChannelDirect, LoopDeferred {
    func loopChannelRead(_ buffer: ByteBuffer) {
        guard let directContext else { return }
        received(buffer, context: directContext)
    }

    func loopChannelReadComplete() {
        guard let directContext else { return }
        channelReadComplete(context: directContext)
    }

    func loopChannelWantsRead() {
        guard let directContext else { return }
        read(context: directContext)
    }

    /// Back to the pipeline (closing, or a TLS handler about to go in front of this one).
    func leaveDirect() {
        directChannel?.direct = nil
        directChannel = nil
        directContext = nil
    }
}

@available(*, unavailable)
extension SMTPServerHandler: Sendable {}
