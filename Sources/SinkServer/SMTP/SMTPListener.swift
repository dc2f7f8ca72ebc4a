import NIOCore
import NIOPosix
import NIOSSL
import SocketIO

/// A listening SMTP socket: a NIO server channel, or one on Swallow's own socket loops
/// (`LoopListener`), whose connections run the same pipeline.
enum SMTPListener: Sendable {
    case nio(any Channel)
    case loop(LoopListener)

    var localAddress: SocketAddress? {
        switch self {
        case .nio(let channel): channel.localAddress
        case .loop(let listener): listener.localAddress
        }
    }

    /// Stops accepting (from any thread).
    func close() {
        switch self {
        case .nio(let channel): channel.close(promise: nil)
        case .loop(let listener): listener.stop()
        }
    }

    /// Returns once the listener is closed.
    func closed() async {
        switch self {
        case .nio(let channel): try? await channel.closeFuture.get()
        case .loop(let listener): try? await listener.closeFuture.get()
        }
    }

    /// Binds `address`; each connection gets the TLS handler when `implicitTLS` is given, then
    /// the SMTP handler.
    static func bind(
        _ address: ListenAddress, _ context: SMTPServerContext, group: any EventLoopGroup, loops: [SocketLoop],
        implicitTLS: NIOSSLContext?
    ) async throws -> SMTPListener {
        let shared = SMTPServerContext.Shared(context)
        @Sendable func initialize(_ pipeline: ChannelPipeline.SynchronousOperations) throws {
            if let implicitTLS { try pipeline.addHandler(NIOSSLServerHandler(context: implicitTLS)) }
            try pipeline.addHandler(SMTPServerHandler(shared), name: "smtp")
        }
        if !loops.isEmpty {
            let socketAddress = try SocketAddress.makeAddressResolvingHost(address.host, port: address.port)
            return .loop(
                try await LoopListener.bind(socketAddress, loops: loops) { channel in
                    try initialize(channel.pipeline.syncOperations)
                })
        }
        let channel = try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 512)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            // No child channel options: NIO sets TCP_NODELAY on the listening socket, which accepted
            // sockets inherit (Linux, BSD); each child option costs a `setsockopt` or a chain of
            // futures per connection.
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try initialize(channel.pipeline.syncOperations) }
            }
            .bind(host: address.host, port: address.port)
            .get()
        return .nio(channel)
    }
}
