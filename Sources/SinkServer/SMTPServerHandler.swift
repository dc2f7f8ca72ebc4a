import MailMessage
import NIOCore
import NIOSSL
import NIOTLS
import SMTPProtocol

/// Bytes ⇄ `SMTPServerEvent` / `SMTPReply`, on the event loop.
///
/// Frames with `SMTPFrameDecoder`, parses command lines, and switches the framer's mode. The
/// mode after DATA, STARTTLS and AUTH depends on the reply, so after those commands the handler
/// holds further input (and stops reading) until that reply is written through it: a `354`
/// starts message mode, a `334` makes the next line an AUTH response, a `220` to STARTTLS puts
/// TLS in front of this handler. BDAT switches to chunk mode at once (RFC 3030: the bytes follow
/// the command without waiting).
final class SMTPServerHandler: ChannelDuplexHandler {
    typealias InboundIn = ByteBuffer
    typealias InboundOut = SMTPServerEvent
    typealias OutboundIn = SMTPReply
    typealias OutboundOut = ByteBuffer

    private enum Hold {
        case data
        case auth
        case startTLS
    }

    private let limits: SMTPLimits
    private let startTLSContext: NIOSSLContext?
    private let implicitTLS: Bool
    private var decoder: SMTPFrameDecoder
    private var cumulation: ByteBuffer?
    private var hold: Hold?
    /// Replies still to be written, the greeting included: every command (but a BDAT with
    /// bytes), every invalid line, AUTH response, end of DATA and end of chunk gets exactly one.
    /// A held command's reply is the one that brings this to zero.
    private var repliesOwed = 1
    private var authResponseNext = false
    private var readHeld = false

    init(limits: SMTPLimits, startTLSContext: NIOSSLContext?, implicitTLS: Bool) {
        self.limits = limits
        self.startTLSContext = startTLSContext
        self.implicitTLS = implicitTLS
        self.decoder = SMTPFrameDecoder(maxLineBytes: limits.maxFrameLineBytes)
    }

    // MARK: Inbound

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var bytes = unwrapInboundIn(data)
        if cumulation == nil || cumulation!.readableBytes == 0 {
            cumulation = bytes
        } else {
            cumulation!.writeBuffer(&bytes)
        }
        process(context: context)
    }

    func userInboundEventTriggered(context: ChannelHandlerContext, event: Any) {
        if let event = event as? IdleStateHandler.IdleStateEvent, event == .read {
            repliesOwed += 1
            context.fireChannelRead(wrapInboundOut(.idleTimeout))
            context.fireChannelReadComplete()
            return
        }
        if let event = event as? TLSUserEvent, case .handshakeCompleted = event {
            let handler = try? context.pipeline.syncOperations.handler(type: NIOSSLServerHandler.self)
            let info = TLSInfo(version: Self.name(handler?.tlsVersion), cipher: nil, implicit: implicitTLS)
            context.fireChannelRead(wrapInboundOut(.tlsEstablished(info)))
            context.fireChannelReadComplete()
            return
        }
        context.fireUserInboundEventTriggered(event)
    }

    private func process(context: ChannelHandlerContext) {
        while hold == nil, cumulation != nil, let frame = decoder.next(&cumulation!) {
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
            repliesOwed += 1
            if authResponseNext {
                hold = .auth
                let text = String(decoding: line.readableBytesView, as: UTF8.self)
                context.fireChannelRead(wrapInboundOut(.authResponse(text)))
                return
            }
            let command: SMTPCommand
            do {
                command = try SMTPCommand.parse(line, limits: limits)
            } catch {
                context.fireChannelRead(wrapInboundOut(.invalidCommand(error)))
                return
            }
            switch command {
            case .data:
                hold = .data
            case .auth:
                hold = .auth
            case .starttls:
                if let rest = cumulation, rest.readableBytes > 0 {
                    context.fireChannelRead(wrapInboundOut(.pipelinedStartTLS))
                    return
                }
                hold = .startTLS
            case .bdat(let size, _) where size > 0:
                repliesOwed -= 1  // answered when the chunk is complete
                decoder.mode = .chunk(remaining: size)
            default:
                break
            }
            context.fireChannelRead(wrapInboundOut(.command(command)))
        case .invalidLine(let error):
            repliesOwed += 1
            context.fireChannelRead(wrapInboundOut(.invalidCommand(error)))
        case .messageChunk(let bytes):
            context.fireChannelRead(wrapInboundOut(.messageChunk(bytes)))
        case .messageEnd:
            repliesOwed += 1
            context.fireChannelRead(wrapInboundOut(.messageEnd))
        case .chunkData(let bytes, let complete):
            if complete { repliesOwed += 1 }
            context.fireChannelRead(wrapInboundOut(.chunkData(bytes, complete: complete)))
        }
    }

    // MARK: Outbound

    func write(context: ChannelHandlerContext, data: NIOAny, promise: EventLoopPromise<Void>?) {
        let reply = unwrapOutboundIn(data)
        var buffer = context.channel.allocator.buffer(capacity: 64)
        buffer.writeSMTPReply(reply)
        context.write(wrapOutboundOut(buffer), promise: promise)
        repliesOwed -= 1
        guard let held = hold, repliesOwed <= 0 else { return }
        hold = nil
        switch held {
        case .data:
            if reply.code == .startMailInput { decoder.mode = .message }
        case .auth:
            authResponseNext = reply.code == .authContinue
        case .startTLS:
            if reply.code == .serviceReady, let startTLSContext {
                // The 220 is already below us in plaintext; everything after it is TLS.
                context.flush()
                let tls = NIOSSLServerHandler(context: startTLSContext)
                try? context.pipeline.syncOperations.addHandler(tls, position: .before(self))
            }
        }
        process(context: context)
        context.fireChannelReadComplete()
        if readHeld && hold == nil {
            readHeld = false
            context.read()
        }
    }

    func read(context: ChannelHandlerContext) {
        // While a reply decides the mode, read nothing more: bounded memory for fast senders.
        guard hold == nil else {
            readHeld = true
            return
        }
        context.read()
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
