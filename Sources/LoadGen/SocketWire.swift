import CSwallowSystem
import NIOCore
import NIOSSL
import SocketIO

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// A `LoadConnection` over a plain non-blocking TCP socket of a `SocketLoop`: connect, read
/// into the loop's buffer, write what the socket takes and keep the rest until it is
/// writable again, close. Touched only on its loop.
final class SocketWire: LoadWire, LoopSocket {
    unowned let loop: SocketLoop
    let connection: LoadConnection
    private let fd: Int32
    private var slot = 0
    private var connecting = true
    private var isClosed = false
    /// Bytes the socket did not take yet, oldest first.
    private var unsent: [ByteBuffer] = []
    private var connectTimer: Scheduled<Void>?
    private var onConnect: ((Result<Void, any Error>) -> Void)?

    var eventLoop: any EventLoop { loop }

    /// Opens a connection to `address` (from `bind` when given); `completion` hears whether it
    /// connected, after the connection's `connected()` and before any reply.
    static func open(
        on loop: SocketLoop, to address: SocketAddress, from bind: SocketAddress?, timeout: TimeAmount,
        connection: LoadConnection, completion: @escaping (Result<Void, any Error>) -> Void
    ) {
        let fd = address.withSockAddr { target, targetLength in
            if let bind {
                bind.withSockAddr { local, localLength in
                    swallow_tcp_connect(target, UInt32(targetLength), local, UInt32(localLength))
                }
            } else {
                swallow_tcp_connect(target, UInt32(targetLength), nil, 0)
            }
        }
        guard fd >= 0 else {
            // Told on the next turn of the loop, as a NIO connect would: a refused connection
            // must not recurse into the sender's next attempt.
            let error = SocketError(operation: "connect", code: errno)
            return loop.later { completion(.failure(error)) }
        }
        let wire = SocketWire(loop: loop, fd: fd, connection: connection)
        do {
            wire.slot = try loop.register(wire, fd: fd)
        } catch {
            _ = systemClose(fd)
            return loop.later { completion(.failure(error)) }
        }
        wire.onConnect = completion
        connection.wire = wire
        wire.connectTimer = loop.assumeIsolated().scheduleTask(in: timeout) { [weak wire] in
            guard let wire, wire.connecting, !wire.isClosed else { return }
            wire.failConnect(SocketError(operation: "connect", code: ETIMEDOUT))
        }
    }

    private init(loop: SocketLoop, fd: Int32, connection: LoadConnection) {
        self.loop = loop
        self.fd = fd
        self.connection = connection
    }

    /// The poller's news for this socket.
    func handle(_ flags: UInt32) {
        if connecting {
            guard flags & UInt32(SWALLOW_POLL_WRITABLE | SWALLOW_POLL_HANGUP) != 0 else { return }
            let code = swallow_socket_error(fd)
            guard code == 0 else { return failConnect(SocketError(operation: "connect", code: code)) }
            connecting = false
            connectTimer?.cancel()
            connectTimer = nil
            connection.connected()
            let completion = onConnect
            onConnect = nil
            completion?(.success(()))
        }
        if flags & UInt32(SWALLOW_POLL_WRITABLE) != 0, !unsent.isEmpty, !isClosed {
            flush()
        }
        if flags & UInt32(SWALLOW_POLL_READABLE | SWALLOW_POLL_HANGUP) != 0 {
            readAll(toEnd: flags & UInt32(SWALLOW_POLL_HANGUP) != 0)
        }
    }

    /// Reads until the socket is drained: a read shorter than the buffer drained it (with edge
    /// triggering, bytes that arrive later raise a new edge). After a hang-up no edge follows,
    /// so it reads on to the end of the stream (or the error).
    private func readAll(toEnd: Bool) {
        while !isClosed {
            loop.readBuffer.clear()
            var result = 0
            loop.readBuffer.writeWithUnsafeMutableBytes(minimumWritableBytes: SocketLoop.readSize) { space in
                result = systemRead(fd, space.baseAddress, space.count)
                return max(result, 0)
            }
            if result > 0 {
                connection.received(loop.readBuffer)
                if result < SocketLoop.readSize && !toEnd { return }
            } else if result == 0 {
                return close()
            } else {
                let code = errno
                if code == EAGAIN || code == EWOULDBLOCK { return }
                if code == EINTR { continue }
                return fail(SocketError(operation: "read", code: code))
            }
        }
    }

    func send(_ bytes: ByteBuffer) {
        guard !isClosed else { return }
        if unsent.isEmpty && !connecting {
            var bytes = bytes
            guard write(&bytes) else { return }
            if bytes.readableBytes > 0 { unsent.append(bytes) }
        } else {
            unsent.append(bytes)
        }
    }

    /// Writes what waits until the socket takes no more.
    private func flush() {
        while !unsent.isEmpty {
            guard write(&unsent[0]) else { return }
            guard unsent[0].readableBytes == 0 else { return }
            unsent.removeFirst()
        }
    }

    /// Writes as much of `bytes` as the socket takes, moving its reader index; false if the
    /// connection failed.
    private func write(_ bytes: inout ByteBuffer) -> Bool {
        while bytes.readableBytes > 0 {
            let written = bytes.withUnsafeReadableBytes { swallow_send(fd, $0.baseAddress, UInt($0.count)) }
            if written >= 0 {
                bytes.moveReaderIndex(forwardBy: written)
                continue
            }
            let code = errno
            if code == EINTR { continue }
            if code == EAGAIN || code == EWOULDBLOCK { return true }
            fail(SocketError(operation: "write", code: code))
            return false
        }
        return true
    }

    func close() {
        guard !isClosed else { return }
        isClosed = true
        let wasConnected = !connecting
        connectTimer?.cancel()
        connectTimer = nil
        unsent.removeAll()
        _ = systemClose(fd)
        loop.release(slot: slot)
        if wasConnected {
            connection.closed()
        } else {
            // Never connected: nothing tells the connection, but it must let go of this wire
            // (each holds the other).
            connection.wire = nil
        }
    }

    private func fail(_ error: SocketError) {
        connection.errored(error)
        close()
    }

    private func failConnect(_ error: SocketError) {
        let completion = onConnect
        onConnect = nil
        close()
        completion?(.failure(error))
    }

    func startTLS(_ context: NIOSSLContext) throws {
        throw SocketError(operation: "STARTTLS on a plain socket", code: EPROTONOSUPPORT)
    }
}
