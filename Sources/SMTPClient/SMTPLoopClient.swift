import FoundationEssentials
import NIOCore
import NIOPosix
import NIOSSL
import SMTPProtocol

/// An SMTP client connection driven on one event loop with futures, for code that itself runs
/// on that loop (the sink's proxy mode): each command's reply is a future completed by the
/// channel's own handler, so a forwarded command costs no task switch or thread hop.
/// `SMTPClientConnection` is the same client for async code.
///
/// Every method must be called on `eventLoop`; replies are matched to commands in order.
public final class SMTPLoopClient: @unchecked Sendable {
    public let eventLoop: any EventLoop
    private let channel: any Channel
    private let replies: ReplyMatcher
    private let replyTimeout: TimeAmount

    private init(channel: any Channel, replies: ReplyMatcher, replyTimeout: TimeAmount) {
        self.eventLoop = channel.eventLoop
        self.channel = channel
        self.replies = replies
        self.replyTimeout = replyTimeout
    }

    public var isActive: Bool { channel.isActive }

    /// Connects on `eventLoop` and readies the connection for mail: banner, EHLO, STARTTLS (as
    /// `settings.tls` says), AUTH.
    public static func connect(
        to target: SMTPClientConnection.Target, settings: SMTPClientSettings, tlsContext: NIOSSLContext?, on eventLoop: any EventLoop
    ) -> EventLoopFuture<SMTPLoopClient> {
        let serverHostname = (try? SocketAddress(ipAddress: target.host, port: 0)) == nil ? target.host : nil
        let timeout = TimeAmount.milliseconds(Int64(settings.replyTimeout * 1000))
        let connected = ClientBootstrap(group: eventLoop)
            .connectTimeout(.milliseconds(Int64(settings.connectTimeout * 1000)))
            .channelOption(.tcpOption(.tcp_nodelay), value: 1)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture {
                    if settings.tls == .implicit, let tlsContext {
                        try channel.pipeline.syncOperations.addHandler(
                            try NIOSSLClientHandler(context: tlsContext, serverHostname: serverHostname))
                    }
                    try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(ReplyLineDecoder()))
                    try channel.pipeline.syncOperations.addHandler(ReplyMatcher())
                }
            }
            .connect(host: target.host, port: target.port)
            .flatMapErrorThrowing { error in throw SMTPClientError.connect("\(target.host):\(target.port): \(error)") }
        return connected.flatMap { channel in
            channel.pipeline.handler(type: ReplyMatcher.self).map { matcher in
                SMTPLoopClient(channel: channel, replies: matcher, replyTimeout: timeout)
            }
        }
        .flatMap { client in
            client.ready(settings: settings, tlsContext: tlsContext, serverHostname: serverHostname)
                .map { client }
                .flatMapError { error in
                    client.close()
                    return eventLoop.makeFailedFuture(error)
                }
        }
    }

    private func ready(settings: SMTPClientSettings, tlsContext: NIOSSLContext?, serverHostname: String?) -> EventLoopFuture<Void> {
        expect(phase: "banner")
            .flatMapThrowing { banner in
                guard banner.code.rawValue == 220 else { throw SMTPClientError.protocolError("banner: \(banner)") }
            }
            .flatMap { self.ehlo(settings.helo) }
            .flatMap { extensions -> EventLoopFuture<Void> in
                guard settings.tls == .starttls, let tlsContext, extensions.contains("STARTTLS") || !settings.tlsOptional else {
                    return self.eventLoop.makeSucceededVoidFuture()
                }
                guard extensions.contains("STARTTLS") else {
                    return self.eventLoop.makeFailedFuture(SMTPClientError.protocolError("the server does not offer STARTTLS"))
                }
                return self.exchange(.starttls, phase: "starttls")
                    .flatMapThrowing { reply in
                        guard reply.code.rawValue == 220 else { throw SMTPClientError.protocolError("STARTTLS: \(reply)") }
                        try self.channel.pipeline.syncOperations.addHandler(
                            try NIOSSLClientHandler(context: tlsContext, serverHostname: serverHostname), position: .first)
                    }
                    .flatMap { self.ehlo(settings.helo).map { _ in } }
            }
            .flatMap { () -> EventLoopFuture<Void> in
                guard let auth = settings.auth else { return self.eventLoop.makeSucceededVoidFuture() }
                return self.authenticate(auth)
            }
    }

    private func ehlo(_ name: String) -> EventLoopFuture<Set<String>> {
        exchange(.ehlo(name), phase: "ehlo").flatMapThrowing { reply in
            guard reply.code.rawValue == 250 else { throw SMTPClientError.protocolError("EHLO: \(reply)") }
            return Set(reply.lines.dropFirst().compactMap { $0.split(separator: " ").first.map { $0.uppercased() } })
        }
    }

    private static func base64(_ text: String) -> String { Data(text.utf8).base64EncodedString() }

    private func authenticate(_ auth: SMTPClientSettings.Auth) -> EventLoopFuture<Void> {
        let base64 = Self.base64
        let reply: EventLoopFuture<SMTPReply>
        if auth.mechanism == "LOGIN" {
            reply = exchange(.auth(mechanism: "LOGIN", initialResponse: nil), phase: "auth")
                .flatMap { $0.code.rawValue == 334 ? self.line(base64(auth.user), phase: "auth") : self.eventLoop.makeSucceededFuture($0) }
                .flatMap { $0.code.rawValue == 334 ? self.line(base64(auth.password), phase: "auth") : self.eventLoop.makeSucceededFuture($0) }
        } else {
            reply = exchange(.auth(mechanism: "PLAIN", initialResponse: base64("\0\(auth.user)\0\(auth.password)")), phase: "auth")
        }
        return reply.flatMapThrowing { reply in
            guard reply.code.rawValue == 235 else { throw SMTPClientError.protocolError("AUTH: \(reply)") }
        }
    }

    /// Sends one command; its reply.
    public func exchange(_ command: SMTPCommand, phase: String) -> EventLoopFuture<SMTPReply> {
        var buffer = channel.allocator.buffer(capacity: 128)
        buffer.writeSMTPCommand(command)
        return send(buffer, phase: phase)
    }

    /// After a `354`: the message (CRLF line ends, not dot-stuffed; stuffed and ended here);
    /// the final reply.
    public func sendData(_ data: ByteBuffer) -> EventLoopFuture<SMTPReply> {
        var buffer = channel.allocator.buffer(capacity: data.readableBytes + data.readableBytes / 50 + 8)
        buffer.writeDotStuffedMessage(data)
        return send(buffer, phase: "data-end")
    }

    private func line(_ text: String, phase: String) -> EventLoopFuture<SMTPReply> {
        send(channel.allocator.buffer(string: text + "\r\n"), phase: phase)
    }

    private func send(_ bytes: ByteBuffer, phase: String) -> EventLoopFuture<SMTPReply> {
        let reply = expect(phase: phase)
        channel.writeAndFlush(bytes, promise: nil)
        return reply
    }

    /// The next reply, failed with a timeout (and the connection closed) when it takes longer
    /// than the reply timeout.
    private func expect(phase: String) -> EventLoopFuture<SMTPReply> {
        let promise = eventLoop.makePromise(of: SMTPReply.self)
        guard channel.isActive else {
            promise.fail(SMTPClientError.closed(phase))
            return promise.futureResult
        }
        replies.waiting.append((phase, promise))
        let channel = self.channel
        let timeout = eventLoop.scheduleTask(in: replyTimeout) {
            promise.fail(SMTPClientError.timeout(phase))
            channel.close(promise: nil)
        }
        promise.futureResult.whenComplete { _ in timeout.cancel() }
        return promise.futureResult
    }

    /// QUIT, then the connection closes (whatever the server answers).
    public func quit() {
        guard channel.isActive else { return }
        exchange(.quit, phase: "quit").whenComplete { [channel] _ in channel.close(promise: nil) }
    }

    public func close() {
        channel.close(promise: nil)
    }
}

/// Completes the waiting commands' futures with the server's replies, in order; fails them
/// when the connection ends or a reply does not parse.
final class ReplyMatcher: ChannelInboundHandler, RemovableChannelHandler, @unchecked Sendable {
    typealias InboundIn = String

    var waiting = CircularBuffer<(phase: String, promise: EventLoopPromise<SMTPReply>)>()
    private var parser = SMTPReplyParser()

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let line = unwrapInboundIn(data)
        do {
            guard let reply = try parser.feed(line: line) else { return }
            parser = SMTPReplyParser()
            // A reply nobody asked for (a 421 before closing) is dropped: the close follows.
            waiting.popFirst()?.promise.succeed(reply)
        } catch {
            failAll(SMTPClientError.protocolError("reply not understood: \(error)"))
            context.close(promise: nil)
        }
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        failAll(SMTPClientError.closed("\(waiting.first?.phase ?? "idle"): \(error)"))
        context.close(promise: nil)
    }

    func channelInactive(context: ChannelHandlerContext) {
        failAll(nil)
        context.fireChannelInactive()
    }

    private func failAll(_ error: SMTPClientError?) {
        while let (phase, promise) = waiting.popFirst() { promise.fail(error ?? SMTPClientError.closed(phase)) }
    }
}
