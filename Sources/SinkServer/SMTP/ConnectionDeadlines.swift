import NIOCore
import SMTPProtocol

/// The deadlines of one connection besides silence (which `IdleStateHandler` times):
/// `--idle-timeout` from a command line's first byte to its CRLF (a client trickling one byte
/// at a time would otherwise reset the idle timer at every byte), and `--data-timeout` from the
/// start of a message's DATA or first BDAT to its end. Both answer `421 4.4.2` and close.
struct ConnectionDeadlines {
    var line: Scheduled<Void>?
    var data: Scheduled<Void>?

    mutating func lineEnded() {
        line?.cancel()
        line = nil
    }

    mutating func dataEnded() {
        data?.cancel()
        data = nil
    }

    mutating func cancelAll() {
        lineEnded()
        dataEnded()
    }
}

extension SMTPServerHandler {
    /// Starts the command-line deadline when a line has begun and not ended, stops it otherwise
    /// (a completed line stops it, so the next partial line is timed from its own first byte).
    /// Not while waiting for the store or a delay: the client is not the one late.
    func timeLine(context: ChannelHandlerContext) {
        let partial =
            decoder.mode == .command && !paused && !closing && !hung
            && ((cumulation?.readableBytes ?? 0) > 0 || decoder.isDiscardingLine)
        guard partial else { return deadlines.lineEnded() }
        guard deadlines.line == nil else { return }
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        deadlines.line = context.eventLoop.scheduleTask(in: shared.configuration.idleTimeout) {
            let (handler, context) = bound.value
            handler.deadlines.line = nil
            handler.timedOut(.commandLineTimeout, context: context)
        }
    }

    /// A message's data began: it must end within `--data-timeout`.
    func startDataDeadline(context: ChannelHandlerContext) {
        deadlines.dataEnded()
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        deadlines.data = context.eventLoop.scheduleTask(in: shared.configuration.dataTimeout) {
            let (handler, context) = bound.value
            handler.deadlines.data = nil
            handler.timedOut(.dataTimeout, context: context)
        }
    }

    private func timedOut(_ reply: SMTPReply, context: ChannelHandlerContext) {
        guard !closing else { return }
        transcript.note("timed out: \(reply.lines.first ?? "")")
        act(.replyAndClose(reply), context: context)
    }
}
