import NIOCore
import SMTPProtocol

// What a connection writes: replies (counted, transcribed, charged to a throttle), flushed once
// per read; and its close, after whatever was written.
extension SMTPServerHandler {
    func reply(_ reply: SMTPReply, context: ChannelHandlerContext) {
        transcript.server(reply)
        let code = reply.code.rawValue
        if code >= 400 { shared.metrics.rejected(code: code) }
        shared.metrics.replied(code)
        var buffer = context.channel.allocator.buffer(capacity: 64)
        buffer.writeSMTPReply(reply)
        if throttle.isOn { throttle.spend(buffer.readableBytes, now: context.eventLoop.now) }
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
}
