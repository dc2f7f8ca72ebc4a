import NIOCore

/// A `throttle` fault's budget for one connection: at most `bytesPerSecond` in both directions
/// together. Every byte read or written is charged; reading waits until the budget is back to
/// zero. Times are the event loop's (`NIODeadline`), so an embedded loop's clock drives it in tests.
///
/// Reads are made small (`configure`), but a connection's read buffer, once grown (a large
/// message before the throttle began), is reused at its size: what one read brings beyond
/// `piece` bytes waits in the handler (`throttled`) and is handed on a piece at a time, as the
/// budget allows, with no reading meanwhile.
struct ConnectionThrottle {
    private(set) var bytesPerSecond = 0.0
    /// How many bytes are handed on at a time (a twentieth of a second's worth).
    private(set) var piece = 64
    /// When the budget is back to zero (uptime nanoseconds).
    private(set) var freeAt: UInt64 = 0

    var isOn: Bool { bytesPerSecond > 0 }

    /// Turns the throttle on at `rate` from `now`.
    mutating func start(bytesPerSecond rate: Int, now: NIODeadline) {
        bytesPerSecond = Double(rate)
        piece = max(64, min(rate / 20, 64 * 1024))
        freeAt = now.uptimeNanoseconds
    }

    /// Charges `bytes` to the budget.
    mutating func spend(_ bytes: Int, now: NIODeadline) {
        guard isOn else { return }
        freeAt = max(freeAt, now.uptimeNanoseconds) + UInt64(Double(bytes) / bytesPerSecond * 1e9)
    }

    /// When the next read may happen, if not now.
    func readDeadline(now: NIODeadline) -> NIODeadline? {
        guard isOn, now.uptimeNanoseconds < freeAt else { return nil }
        return .uptimeNanoseconds(freeAt)
    }

    /// Small reads, so the rate is smooth rather than one burst per second, and one read per
    /// readiness event, so every read passes through the handler's `read(context:)`.
    func configure(_ channel: any Channel) {
        try? channel.syncOptions?.setOption(.recvAllocator, value: FixedSizeRecvByteBufferAllocator(capacity: piece))
        try? channel.syncOptions?.setOption(.maxMessagesPerRead, value: 1)
    }
}

extension SMTPServerHandler {
    /// Whether the throttle holds this read back; if so, the read is scheduled for when the
    /// budget allows it.
    func throttleDefersRead(context: ChannelHandlerContext) -> Bool {
        guard throttle.isOn, let deadline = throttle.readDeadline(now: context.eventLoop.now) else { return false }
        guard !throttledReadScheduled else { return true }
        throttledReadScheduled = true
        at(deadline, context: context) { handler, context in
            handler.throttledReadScheduled = false
            handler.read(context: context)
        }
        return true
    }

    /// Runs `body` on the connection's loop at `deadline`.
    private func at(
        _ deadline: NIODeadline, context: ChannelHandlerContext, _ body: @escaping (SMTPServerHandler, ChannelHandlerContext) -> Void
    ) {
        let bound = NIOLoopBound((self, context, body), eventLoop: context.eventLoop)
        context.eventLoop.scheduleTask(deadline: deadline) {
            let (handler, context, body) = bound.value
            body(handler, context)
        }
    }

    /// Hands what a throttled read brought on to the decoder a piece at a time, each piece when
    /// the budget allows it; reading resumes once all of it is handed on.
    func releaseThrottled(context: ChannelHandlerContext) {
        while var pending = throttled, pending.readableBytes > 0, !closing {
            if let deadline = throttle.readDeadline(now: context.eventLoop.now) {
                guard !throttledReleaseScheduled else { return }
                throttledReleaseScheduled = true
                at(deadline, context: context) { handler, context in
                    handler.throttledReleaseScheduled = false
                    handler.releaseThrottled(context: context)
                    handler.flushReplies(context: context)
                }
                return
            }
            var piece = pending.readSlice(length: min(throttle.piece, pending.readableBytes))!
            throttled = pending.readableBytes > 0 ? pending : nil
            throttle.spend(piece.readableBytes, now: context.eventLoop.now)
            accumulate(&piece)
            process(context: context)
        }
        throttled = nil
        resumeReading(context: context)
    }

    func startThrottle(_ bytesPerSecond: Int, context: ChannelHandlerContext) {
        throttle.start(bytesPerSecond: bytesPerSecond, now: context.eventLoop.now)
        throttle.configure(context.channel)
    }
}
