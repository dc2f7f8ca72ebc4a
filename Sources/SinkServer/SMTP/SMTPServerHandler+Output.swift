import NIOCore
import SMTPProtocol
import SocketIO

// What a connection writes: replies (counted, transcribed, charged to a throttle), flushed once
// per read; and its close, after whatever was written.
extension SMTPServerHandler {
    func reply(_ reply: SMTPReply, context: ChannelHandlerContext) {
        transcript.server(reply)
        let code = reply.code.rawValue
        if code >= 400 { shared.metrics.rejected(code: code) }
        shared.metrics.replied(code)
        startReplies()
        let written = replies.writeSMTPReply(reply)
        if throttle.isOn { throttle.spend(written, now: context.eventLoop.now) }
    }

    /// Bytes to send after the replies so far (a fault's partial reply).
    func replyVerbatim(_ text: String) {
        startReplies()
        replies.writeString(text)
    }

    /// Starts the reply buffer over once what it held was handed to the channel: without a
    /// copy once the channel has sent it (the usual case: it sends at once), with a new buffer
    /// while it still holds it.
    private func startReplies() {
        guard replies.readableBytes == 0, replies.readerIndex > 0 else { return }
        if replies.capacity > 16 * 1024 { replies = ByteBuffer() } else { replies.clear() }
    }

    func flushReplies(context: ChannelHandlerContext) {
        guard replies.readableBytes > 0 else { return }
        if let directChannel {
            directChannel.send(replies)
        } else {
            context.writeAndFlush(wrapOutboundOut(replies), promise: nil)
        }
        replies.moveReaderIndex(to: replies.writerIndex)
    }

    /// Sends the replies so far at once, not at the end of the read, when no input waits to be
    /// decoded after them (with more, their replies go together, as pipelining wants).
    func sendRepliesIfNothingWaits(context: ChannelHandlerContext) {
        guard (cumulation?.readableBytes ?? 0) == 0 else { return }
        flushReplies(context: context)
    }

    func close(context: ChannelHandlerContext) {
        guard !closing else { return }
        closing = true
        flushReplies(context: context)
        context.close(promise: nil)
    }
}
