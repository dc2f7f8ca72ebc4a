import NIOCore
import SMTPProtocol
import SocketIO

/// The deadlines of one connection, each answered with `421 4.4.2` and a close:
/// - silence: `--idle-timeout` since the last bytes read;
/// - a command line: `--idle-timeout` from its first byte to its CRLF (a client trickling one
///   byte at a time would otherwise reset the silence deadline at every byte);
/// - a message: `--data-timeout` from the start of its DATA or first BDAT to its end.
///
/// One scheduled check per connection (the watchdog) times all three: starting or ending a
/// deadline only writes a time here, and the watchdog, when it fires, either finds a deadline
/// passed or schedules itself again at the earliest one. It is always due no later than the
/// earliest deadline. Measured choice (`perf record` of the sink at 1 KiB x 20 sessions): a
/// task scheduled and cancelled per message for the data deadline, and NIO's
/// `IdleStateHandler` in every pipeline for silence, cost about 3% of the sink's CPU.
struct ConnectionDeadlines {
    var lastRead = NIODeadline.uptimeNanoseconds(0)
    var lineStarted: NIODeadline?
    var dataStarted: NIODeadline?
    var watchdog: NIOScheduledCallback?
    var watchdogDue = NIODeadline.distantFuture

    mutating func lineEnded() {
        lineStarted = nil
    }

    mutating func dataEnded() {
        dataStarted = nil
    }

    mutating func cancelAll() {
        lineStarted = nil
        dataStarted = nil
        watchdog?.cancel()
        watchdog = nil
        watchdogDue = .distantFuture
    }

    /// The earliest deadline running, and the reply that answers it.
    func earliest(idle: TimeAmount, data: TimeAmount) -> (due: NIODeadline, reply: SMTPReply) {
        var earliest = (due: lastRead + idle, reply: SMTPReply.idleTimeout)
        if let lineStarted, lineStarted + idle < earliest.due {
            earliest = (lineStarted + idle, .commandLineTimeout)
        }
        if let dataStarted, dataStarted + data < earliest.due {
            earliest = (dataStarted + data, .dataTimeout)
        }
        return earliest
    }
}

extension SMTPServerHandler {
    /// Bytes arrived: the silence deadline starts again.
    func readHappened(context: ChannelHandlerContext) {
        deadlines.lastRead = context.eventLoop.now
    }

    /// Starts the command-line deadline when a line has begun and not ended, stops it otherwise
    /// (a completed line stops it, so the next partial line is timed from its own first byte).
    /// Not while waiting for the store or a delay: the client is not the one late.
    func timeLine(context: ChannelHandlerContext) {
        let partial =
            decoder.mode == .command && !paused && !closing && !hung
            && ((cumulation?.readableBytes ?? 0) > 0 || decoder.isDiscardingLine)
        guard partial else { return deadlines.lineEnded() }
        guard deadlines.lineStarted == nil else { return }
        let now = context.eventLoop.now
        deadlines.lineStarted = now
        watch(until: now + shared.configuration.idleTimeout, context: context)
    }

    /// A message's data began: it must end within `--data-timeout`.
    func startDataDeadline(context: ChannelHandlerContext) {
        let now = context.eventLoop.now
        deadlines.dataStarted = now
        watch(until: now + shared.configuration.dataTimeout, context: context)
    }

    /// Makes sure the watchdog is due no later than `deadline`.
    func watch(until deadline: NIODeadline, context: ChannelHandlerContext) {
        guard deadline < deadlines.watchdogDue else { return }
        deadlines.watchdog?.cancel()
        deadlines.watchdogDue = deadline
        // On a socket loop the loop calls the handler back (`loopDeferred`), with the context
        // it keeps until the connection closes: no closure or box made.
        if let socketLoop, loopContext != nil {
            deadlines.watchdog = socketLoop.scheduleCallback(at: deadline, target: self, step: 0)
            return
        }
        let watchdog = Watchdog(bound: NIOLoopBound((self, context), eventLoop: context.eventLoop))
        deadlines.watchdog = try? context.eventLoop.scheduleCallback(at: deadline, handler: watchdog)
    }

    /// The socket loop's call for the watchdog (the one step it is asked for).
    func loopDeferred(_ step: Int) {
        guard let loopContext else { return }
        watchdogFired(context: loopContext)
    }

    /// The watchdog's callback (no promise or future per connection, as `scheduleTask` makes).
    private struct Watchdog: NIOScheduledCallbackHandler, Sendable {
        let bound: NIOLoopBound<(SMTPServerHandler, ChannelHandlerContext)>

        func handleScheduledCallback(eventLoop: some EventLoop) {
            let (handler, context) = bound.value
            handler.watchdogFired(context: context)
        }
    }

    private func watchdogFired(context: ChannelHandlerContext) {
        deadlines.watchdog = nil
        deadlines.watchdogDue = .distantFuture
        guard !closing else { return }
        let earliest = deadlines.earliest(idle: shared.configuration.idleTimeout, data: shared.configuration.dataTimeout)
        guard earliest.due <= context.eventLoop.now else {
            return watch(until: earliest.due, context: context)
        }
        if earliest.reply != .idleTimeout {
            transcript.note("timed out: \(earliest.reply.lines.first ?? "")")
        }
        act(.replyAndClose(earliest.reply), context: context)
    }
}
