import CSwallowSystem
import NIOCore

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// A listening TCP socket on a `SocketLoop` whose connections become `LoopChannel`s, handed to
/// the loops in turn: the `ServerBootstrap` of Swallow's own loops. `initializer` adds the
/// handlers of a new channel, on its loop, before the channel is active.
public final class LoopListener: LoopSocket, @unchecked Sendable {
    public let localAddress: SocketAddress
    private let fd: Int32
    private let loops: [SocketLoop]
    private let initializer: @Sendable (LoopChannel) throws -> Void
    private var slot = 0
    private var next = 0
    private var isOpen = true
    private let closed: EventLoopPromise<Void>
    /// How long the listener waits after `accept` failed for want of descriptors or memory.
    static let retryAfterFailedAccept = TimeAmount.milliseconds(100)
    /// Connections taken by one poller event before the others get a turn.
    private static let acceptsPerEvent = 64

    /// Binds and listens on `address`; the first loop accepts.
    public static func bind(
        _ address: SocketAddress, backlog: Int32 = 512, loops: [SocketLoop],
        initializer: @escaping @Sendable (LoopChannel) throws -> Void
    ) async throws -> LoopListener {
        let fd = address.withSockAddr { pointer, length in swallow_tcp_listen(pointer, UInt32(length), backlog) }
        guard fd >= 0 else { throw SocketError(operation: "listen on \(address)", code: errno) }
        guard let bound = Self.localAddress(of: fd) else {
            let code = errno
            _ = systemClose(fd)
            throw SocketError(operation: "getsockname", code: code)
        }
        let listener = LoopListener(fd: fd, local: bound, loops: loops, initializer: initializer)
        let box = UnsafeTransfer(listener)
        do {
            try await loops[0].submit { box.value.slot = try loops[0].register(box.value, fd: fd) }.get()
        } catch {
            _ = systemClose(fd)
            throw error
        }
        return listener
    }

    private init(fd: Int32, local: SocketAddress, loops: [SocketLoop], initializer: @escaping @Sendable (LoopChannel) throws -> Void) {
        self.fd = fd
        self.localAddress = local
        self.wildcard = local.ipAddress == "0.0.0.0" || local.ipAddress == "::"
        self.loops = loops
        self.initializer = initializer
        self.closed = loops[0].makePromise()
    }

    /// Completed once the listener is closed.
    public var closeFuture: EventLoopFuture<Void> { closed.futureResult }

    /// Stops accepting (from any thread).
    public func stop() {
        loops[0].execute { self.close() }
    }

    public func close() {
        guard isOpen else { return }
        isOpen = false
        if slot != 0 { loops[0].release(slot: slot) }
        _ = systemClose(fd)
        closed.succeed(())
    }

    public func handle(_ flags: UInt32) {
        guard isOpen, flags & UInt32(SWALLOW_POLL_READABLE | SWALLOW_POLL_HANGUP) != 0 else { return }
        acceptWaiting()
    }

    private func acceptWaiting() {
        for _ in 0..<Self.acceptsPerEvent {
            var storage = sockaddr_storage()
            var length = UInt32(MemoryLayout<sockaddr_storage>.size)
            let connection = swallow_tcp_accept(fd, &storage, &length)
            guard connection >= 0 else {
                let code = errno
                if code == EAGAIN || code == EWOULDBLOCK { return }
                if code == EINTR || code == ECONNABORTED || code == EPROTO { continue }
                // Out of descriptors or memory: the poller reports no new edge for connections
                // already waiting, so the listener tries again a little later.
                _ = loops[0].scheduleTask(in: Self.retryAfterFailedAccept) { [self] in if isOpen { acceptWaiting() } }
                return
            }
            hand(connection, remote: Self.address(storage))
        }
        // More may wait: taken on the next turn, after the loop's other sockets.
        loops[0].later { [self] in if isOpen { acceptWaiting() } }
    }

    private func hand(_ connection: Int32, remote: SocketAddress?) {
        let loop = loops[next]
        next = (next + 1) % loops.count
        let local = wildcard ? Self.localAddress(of: connection) ?? localAddress : localAddress
        // On this loop, opened at once (a closure for it was a `malloc` a connection).
        guard loop !== loops[0] else { return Self.open(connection, loop: loop, local: local, remote: remote, initializer: initializer) }
        let initializer = self.initializer
        loop.execute { Self.open(connection, loop: loop, local: local, remote: remote, initializer: initializer) }
    }

    private static func open(
        _ connection: Int32, loop: SocketLoop, local: SocketAddress?, remote: SocketAddress?,
        initializer: @Sendable (LoopChannel) throws -> Void
    ) {
        let channel = LoopChannel(fd: connection, loop: loop, local: local, remote: remote)
        do {
            try initializer(channel)
            try channel.start()
        } catch {
            channel.close()
        }
    }

    /// Bound to every address: a connection's own local address is asked for. Decided once
    /// (formatting the address for each connection showed in the profile of a connection per
    /// message).
    private let wildcard: Bool

    private static func localAddress(of fd: Int32) -> SocketAddress? {
        var storage = sockaddr_storage()
        var length = socklen_t(MemoryLayout<sockaddr_storage>.size)
        let named = withUnsafeMutablePointer(to: &storage) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        return named == 0 ? address(storage) : nil
    }

    static func address(_ storage: sockaddr_storage) -> SocketAddress? {
        var storage = storage
        switch Int32(storage.ss_family) {
        case AF_INET:
            // The host text NIO's `SocketAddress(sockaddr_in)` would make with `inet_ntop`,
            // made by `AddressText` (the same text).
            return withUnsafePointer(to: &storage) {
                $0.withMemoryRebound(to: sockaddr_in.self, capacity: 1) { address in
                    let host = withUnsafeBytes(of: address.pointee) { AddressText.dottedQuad(UnsafeRawBufferPointer(rebasing: $0[4..<8])) }
                    return SocketAddress(address.pointee, host: host)
                }
            }
        case AF_INET6:
            return withUnsafePointer(to: &storage) { $0.withMemoryRebound(to: sockaddr_in6.self, capacity: 1) { SocketAddress($0.pointee) } }
        default:
            return nil
        }
    }
}
