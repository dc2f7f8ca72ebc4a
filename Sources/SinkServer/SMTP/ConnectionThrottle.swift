import NIOCore

/// A `throttle` fault's budget for one connection: at most `bytesPerSecond` in both directions
/// together. Every byte read or written is charged; reading waits until the budget is back to
/// zero. Times are the event loop's (`NIODeadline`), so an embedded loop's clock drives it in tests.
struct ConnectionThrottle {
    private(set) var bytesPerSecond = 0.0
    /// When the budget is back to zero (uptime nanoseconds).
    private(set) var freeAt: UInt64 = 0

    var isOn: Bool { bytesPerSecond > 0 }

    /// Turns the throttle on at `rate` from `now`.
    mutating func start(bytesPerSecond rate: Int, now: NIODeadline) {
        bytesPerSecond = Double(rate)
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
    static func configure(_ channel: any Channel, bytesPerSecond rate: Int) {
        let chunk = max(64, min(rate / 20, 64 * 1024))
        try? channel.syncOptions?.setOption(.recvAllocator, value: FixedSizeRecvByteBufferAllocator(capacity: chunk))
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
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        context.eventLoop.scheduleTask(deadline: deadline) {
            let (handler, context) = bound.value
            handler.throttledReadScheduled = false
            handler.read(context: context)
        }
        return true
    }

    func startThrottle(_ bytesPerSecond: Int, context: ChannelHandlerContext) {
        throttle.start(bytesPerSecond: bytesPerSecond, now: context.eventLoop.now)
        ConnectionThrottle.configure(context.channel, bytesPerSecond: bytesPerSecond)
    }
}
