import NIOCore
import NIOPosix
import SMTPProtocol

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// A message submitted from inside the sink (the HTTP send API): one SMTP session over a
/// socket pair, served by the same `SMTPServerHandler` as a network client, so magic
/// addresses, fault rules (delays included), events, stats and metrics treat it exactly as
/// mail received over SMTP. The session is marked as coming over HTTP (its `Received:` says
/// so) and needs no AUTH.
///
/// The client side pipelines the whole session in one write (EHLO, MAIL, every RCPT, one
/// `BDAT n LAST` with the message, QUIT): a refused recipient or MAIL costs nothing, because
/// the server reads and discards a refused chunk's bytes, and one reply comes back per command.
enum LocalSubmission {
    struct Outcome {
        /// The replies in command order: greeting, EHLO, MAIL, each RCPT, BDAT, QUIT (fewer when
        /// the session ended early: a fault's disconnect, a 421).
        var replies: [SMTPReply]
        var recipientCount: Int

        var greeting: SMTPReply? { replies.first }
        var mail: SMTPReply? { replies.count > 2 ? replies[2] : nil }
        var recipients: [SMTPReply] { Array(replies.dropFirst(3).prefix(recipientCount)) }
        var final: SMTPReply? { replies.count > 3 + recipientCount ? replies[3 + recipientCount] : nil }

        /// The reply that decides the outcome, with its phase: the first refusal that stopped
        /// the message, or the final reply; nil when the session ended without one.
        var decisive: (reply: SMTPReply, phase: String)? {
            if let greeting, greeting.code.rawValue != 220 { return (greeting, "greeting") }
            if replies.count > 1, replies[1].code.rawValue / 100 != 2 { return (replies[1], "ehlo") }
            if let mail, mail.code.rawValue / 100 != 2 { return (mail, "mail") }
            if let final {
                if final.code.rawValue / 100 != 2, let refused = recipients.first(where: { $0.code.rawValue / 100 != 2 }),
                    !recipients.contains(where: { $0.code.rawValue / 100 == 2 })
                {
                    return (refused, "rcpt")
                }
                return (final, "data-end")
            }
            if let refused = recipients.first(where: { $0.code.rawValue / 100 != 2 }) { return (refused, "rcpt") }
            return nil
        }

        /// The stored message's id, from `250 2.0.0 Ok: queued as ID`.
        var storedID: String? {
            guard let final, final.code.rawValue == 250, let last = final.lines.last?.split(separator: " ").last else { return nil }
            return String(last)
        }
    }

    struct Failure: Error, CustomStringConvertible {
        var description: String
    }

    static func submit(
        sender: String, recipients: [String], message: [UInt8], context: SMTPServerContext, group: any EventLoopGroup
    ) async throws -> Outcome {
        var fds: [Int32] = [-1, -1]
        #if canImport(Glibc)
            let type = Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue) | Int32(SOCK_NONBLOCK.rawValue)
        #else
            let type = SOCK_STREAM
        #endif
        guard socketpair(AF_UNIX, type, 0, &fds) == 0 else {
            throw Failure(description: "socketpair failed: errno \(errno)")
        }
        let server: any Channel
        do {
            server = try await adopt(fds[0], group: group) { pipeline in
                try pipeline.addHandler(SMTPServerHandler(context))
            }
        } catch {
            close(fds[0])
            close(fds[1])
            throw error
        }
        let collected = group.next().makePromise(of: ByteBuffer.self)
        let client: any Channel
        do {
            client = try await adopt(fds[1], group: group) { try $0.addHandler(Collector(promise: collected)) }
        } catch {
            close(fds[1])
            server.close(promise: nil)
            throw error
        }

        let smtputf8 = ([sender] + recipients).contains { !$0.utf8.allSatisfy { $0 < 128 } }
        var session = "EHLO http-api\r\nMAIL FROM:<\(sender)> SIZE=\(message.count)\(smtputf8 ? " SMTPUTF8" : "")\r\n"
        for recipient in recipients { session += "RCPT TO:<\(recipient)>\r\n" }
        session += "BDAT \(message.count) LAST\r\n"
        var buffer = client.allocator.buffer(capacity: session.utf8.count + message.count + 8)
        buffer.writeString(session)
        buffer.writeBytes(message)
        buffer.writeString("QUIT\r\n")
        client.writeAndFlush(buffer, promise: nil)

        let received = try await collected.futureResult.get()
        client.close(promise: nil)
        server.close(promise: nil)
        return Outcome(replies: parse(received), recipientCount: recipients.count)
    }

    /// A channel on one end of the socket pair, its pipeline set up by `handlers`.
    private static func adopt(
        _ fd: Int32, group: any EventLoopGroup,
        _ handlers: @escaping @Sendable (ChannelPipeline.SynchronousOperations) throws -> Void
    ) async throws -> any Channel {
        try await ClientBootstrap(group: group)
            .channelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try handlers(channel.pipeline.syncOperations) }
            }
            .withConnectedSocket(fd).get()
    }

    /// Every complete reply in the bytes; what does not parse ends the list.
    static func parse(_ bytes: ByteBuffer) -> [SMTPReply] {
        var replies: [SMTPReply] = []
        var parser = SMTPReplyParser()
        // Split on the byte: in a Swift String "\r\n" is one Character, never "\n".
        for line in bytes.readableBytesView.split(separator: UInt8(ascii: "\n")) {
            let text = String(decoding: line.last == UInt8(ascii: "\r") ? line.dropLast() : line, as: UTF8.self)
            do {
                if let reply = try parser.feed(line: text) {
                    replies.append(reply)
                    parser = SMTPReplyParser()
                }
            } catch {
                break
            }
        }
        return replies
    }

    /// Gathers what the server sends until it closes the connection.
    private final class Collector: ChannelInboundHandler {
        typealias InboundIn = ByteBuffer
        private var buffer = ByteBuffer()
        private let promise: EventLoopPromise<ByteBuffer>

        init(promise: EventLoopPromise<ByteBuffer>) {
            self.promise = promise
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            var bytes = unwrapInboundIn(data)
            // Replies only: a few KiB at most; anything past 1 MiB is not an SMTP server's.
            guard buffer.readableBytes < 1 << 20 else { return }
            buffer.writeBuffer(&bytes)
        }

        func channelInactive(context: ChannelHandlerContext) {
            promise.succeed(buffer)
            context.fireChannelInactive()
        }

        func errorCaught(context: ChannelHandlerContext, error: any Error) {
            context.close(promise: nil)
        }
    }
}
