import NIOCore
import NIOSSL

/// How a `LoadConnection` reaches its server. Used only on `eventLoop`.
protocol LoadWire: AnyObject {
    /// The loop the connection lives on; its clock is the run's.
    var eventLoop: any EventLoop { get }
    /// Writes the bytes (in order; what cannot go at once waits for the socket).
    func send(_ bytes: ByteBuffer)
    /// Closes; the connection hears `closed()` if it had connected.
    func close()
    /// Starts TLS after the server's 220 to STARTTLS.
    func startTLS(_ context: NIOSSLContext) throws
}

/// A `LoadConnection` over a NIO channel: the transport for TLS (implicit or STARTTLS).
final class LoadChannelHandler: ChannelInboundHandler, LoadWire {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    let connection: LoadConnection
    private var context: ChannelHandlerContext?
    let eventLoop: any EventLoop

    init(connection: LoadConnection, eventLoop: any EventLoop) {
        self.connection = connection
        self.eventLoop = eventLoop
    }

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
        connection.wire = self
    }

    func handlerRemoved(context: ChannelHandlerContext) {
        // The connection and this handler hold each other until the pipeline lets go.
        if connection.wire === self { connection.wire = nil }
        self.context = nil
    }

    func channelActive(context: ChannelHandlerContext) {
        connection.connected()
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        connection.closed()
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        connection.errored(error)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        connection.received(unwrapInboundIn(data))
    }

    func send(_ bytes: ByteBuffer) {
        context?.writeAndFlush(wrapOutboundOut(bytes), promise: nil)
    }

    func close() {
        context?.close(promise: nil)
    }

    func startTLS(_ tls: NIOSSLContext) throws {
        guard let context else { return }
        try context.pipeline.syncOperations.addHandler(try NIOSSLClientHandler(context: tls, serverHostname: nil), position: .first)
    }
}
