import FoundationEssentials
import NIOCore
import NIOPosix
import NIOSSL
import SMTPProtocol

/// Splits the server's bytes into reply lines (without CRLF); a line over 64 KiB is an error.
struct ReplyLineDecoder: ByteToMessageDecoder {
    typealias InboundOut = String

    mutating func decode(context: ChannelHandlerContext, buffer: inout ByteBuffer) throws -> DecodingState {
        guard let newline = buffer.readableBytesView.firstIndex(of: UInt8(ascii: "\n")) else {
            if buffer.readableBytes > 65_536 { throw SMTPClientError.protocolError("reply line longer than 64 KiB") }
            return .needMoreData
        }
        let length = newline - buffer.readerIndex
        var line = buffer.readString(length: length) ?? ""
        buffer.moveReaderIndex(forwardBy: 1)
        if line.hasSuffix("\r") { line.removeLast() }
        context.fireChannelRead(wrapInboundOut(line))
        return .continue
    }
}

/// How a client connection is made ready for mail: TLS, authentication, the EHLO name,
/// pipelining and timeouts.
public struct SMTPClientSettings: Sendable {
    public enum TLSMode: String, Sendable, CaseIterable { case none, starttls, implicit }

    public struct Auth: Sendable {
        public var mechanism: String
        public var user: String
        public var password: String

        public init(mechanism: String, user: String, password: String) {
            self.mechanism = mechanism
            self.user = user
            self.password = password
        }
    }

    public var tls: TLSMode = .none
    /// With `.starttls`: carry on in plain text when the server does not offer STARTTLS.
    public var tlsOptional = false
    /// Verify the server's certificate against the system's trust roots (and its name). Off
    /// for load generation: a sandbox sink's certificate is self-signed, and timing, not
    /// trust, is what is measured.
    public var verifyCertificate = false
    public var auth: Auth?
    public var helo = "swallow.localhost"
    public var pipelining = true
    /// Seconds to wait for the connection, and for each reply.
    public var connectTimeout = 10.0
    public var replyTimeout = 60.0

    public init() {}
}

public enum SMTPClientError: Error, CustomStringConvertible, Sendable {
    case connect(String)
    case timeout(String)
    case closed(String)
    case protocolError(String)

    public var description: String {
        switch self {
        case .connect(let text): "connect: \(text)"
        case .timeout(let phase): "timeout waiting for the \(phase) reply"
        case .closed(let phase): "connection closed by the server during \(phase)"
        case .protocolError(let text): "protocol error: \(text)"
        }
    }

    /// The phase it happened in, for error counts.
    public var phase: String {
        switch self {
        case .connect: "connect"
        case .timeout(let phase), .closed(let phase): phase
        case .protocolError: "protocol"
        }
    }
}

/// One SMTP client connection, used by one task at a time: connect, banner, EHLO, STARTTLS,
/// AUTH, then transactions (pipelined when the server offers PIPELINING and the settings
/// allow it), each with its phase times.
///
/// Sendable so that a pool can hand it from task to task; it is not safe to use from two
/// tasks at once, and whoever holds it must not share it.
public final class SMTPClientConnection: @unchecked Sendable {
    public struct Target: Sendable {
        public var host: String
        public var port: Int
        /// The local address to connect from (`--bind`); nil: the system's choice.
        public var bind: String?

        public init(host: String, port: Int, bind: String? = nil) {
            self.host = host
            self.port = port
            self.bind = bind
        }
    }

    /// Nanosecond durations of one message's phases; connection phases only on the message
    /// that opened the connection.
    public struct PhaseTimes: Sendable {
        public var connect: UInt64?
        public var banner: UInt64?
        public var ehlo: UInt64?
        public var tls: UInt64?
        public var auth: UInt64?
        public var mail: UInt64?
        public var rcpt: UInt64?
        public var data: UInt64?
        public var final: UInt64?

        public init() {}
    }

    public enum Outcome: Sendable {
        /// The final reply (or the first refusal: MAIL, every RCPT, or DATA).
        case reply(SMTPReply, phase: String)
        case failed(SMTPClientError)
    }

    private let channel: NIOAsyncChannel<String, ByteBuffer>
    private var lines: NIOAsyncChannelInboundStream<String>.AsyncIterator
    private let replyTimeout: Double
    public private(set) var pipelining = false
    public private(set) var messagesSent = 0
    /// The RCPT replies of the last transaction, in the order of its recipients.
    public private(set) var lastRecipientReplies: [SMTPReply] = []
    private var closed = false
    public var isActive: Bool { channel.channel.isActive }

    private init(channel: NIOAsyncChannel<String, ByteBuffer>, replyTimeout: Double) {
        self.channel = channel
        self.lines = channel.inbound.makeAsyncIterator()
        self.replyTimeout = replyTimeout
    }

    public static func now() -> UInt64 { NIODeadline.now().uptimeNanoseconds }

    /// Opens a connection and readies it for mail: banner, EHLO, TLS, AUTH.
    public static func open(
        to target: Target, settings: SMTPClientSettings, group: any EventLoopGroup,
        times: inout PhaseTimes
    ) async throws -> SMTPClientConnection {
        var start = now()
        let tlsContext: NIOSSLContext? =
            settings.tls == .none
            ? nil
            : try {
                var configuration = TLSConfiguration.makeClientConfiguration()
                configuration.certificateVerification = settings.verifyCertificate ? .fullVerification : .none
                return try NIOSSLContext(configuration: configuration)
            }()
        // SNI and the name checked against the certificate: a name, never an address literal.
        let serverHostname = (try? SocketAddress(ipAddress: target.host, port: 0)) == nil ? target.host : nil
        let channel: NIOAsyncChannel<String, ByteBuffer>
        do {
            var bootstrap = ClientBootstrap(group: group)
            if let bind = target.bind { bootstrap = bootstrap.bind(to: try SocketAddress(ipAddress: bind, port: 0)) }
            channel =
                try await bootstrap
                .connectTimeout(.milliseconds(Int64(settings.connectTimeout * 1000)))
                .channelOption(.tcpOption(.tcp_nodelay), value: 1)
                .connect(host: target.host, port: target.port) { channel in
                    channel.eventLoop.makeCompletedFuture {
                        if settings.tls == .implicit, let tlsContext {
                            try channel.pipeline.syncOperations.addHandler(
                                try NIOSSLClientHandler(context: tlsContext, serverHostname: serverHostname))
                        }
                        try channel.pipeline.syncOperations.addHandler(ByteToMessageHandler(ReplyLineDecoder()))
                        return try NIOAsyncChannel<String, ByteBuffer>(wrappingChannelSynchronously: channel)
                    }
                }
        } catch {
            throw SMTPClientError.connect("\(target.host):\(target.port): \(error)")
        }
        let connection = SMTPClientConnection(channel: channel, replyTimeout: settings.replyTimeout)
        times.connect = now() - start
        do {
            start = now()
            let banner = try await connection.readReply(phase: "banner")
            times.banner = now() - start
            guard banner.code.rawValue == 220 else { throw SMTPClientError.protocolError("banner: \(banner)") }
            start = now()
            var extensions = try await connection.ehlo(settings.helo)
            times.ehlo = now() - start
            if settings.tls == .starttls, let tlsContext, extensions.contains("STARTTLS") || !settings.tlsOptional {
                start = now()
                guard extensions.contains("STARTTLS") else { throw SMTPClientError.protocolError("the server does not offer STARTTLS") }
                let reply = try await connection.command(.starttls, phase: "starttls")
                guard reply.code.rawValue == 220 else { throw SMTPClientError.protocolError("STARTTLS: \(reply)") }
                // Added on the channel's loop: the handler itself is not Sendable.
                try await channel.channel.eventLoop.submit {
                    try channel.channel.pipeline.syncOperations.addHandler(
                        try NIOSSLClientHandler(context: tlsContext, serverHostname: serverHostname), position: .first)
                }
                .get()
                extensions = try await connection.ehlo(settings.helo)
                times.tls = now() - start
            }
            if let auth = settings.auth {
                start = now()
                try await connection.authenticate(auth)
                times.auth = now() - start
            }
            connection.pipelining = settings.pipelining && extensions.contains("PIPELINING")
            return connection
        } catch {
            connection.close()
            throw error
        }
    }

    private func ehlo(_ name: String) async throws -> Set<String> {
        let reply = try await command(.ehlo(name), phase: "ehlo")
        guard reply.code.rawValue == 250 else { throw SMTPClientError.protocolError("EHLO: \(reply)") }
        return Set(reply.lines.dropFirst().compactMap { $0.split(separator: " ").first.map { $0.uppercased() } })
    }

    private func authenticate(_ auth: SMTPClientSettings.Auth) async throws {
        func base64(_ text: String) -> String { Data(text.utf8).base64EncodedString() }
        var reply: SMTPReply
        if auth.mechanism == "LOGIN" {
            reply = try await command(.auth(mechanism: "LOGIN", initialResponse: nil), phase: "auth")
            if reply.code.rawValue == 334 { reply = try await line(base64(auth.user), phase: "auth") }
            if reply.code.rawValue == 334 { reply = try await line(base64(auth.password), phase: "auth") }
        } else {
            reply = try await command(.auth(mechanism: "PLAIN", initialResponse: base64("\0\(auth.user)\0\(auth.password)")), phase: "auth")
        }
        guard reply.code.rawValue == 235 else { throw SMTPClientError.protocolError("AUTH: \(reply)") }
    }

    /// Sends one message. Replies other than 2xx/354 end the transaction (with RSET) and are the outcome.
    public func send(sender: String, recipients: [String], data: [UInt8], times: inout PhaseTimes) async -> Outcome {
        do {
            messagesSent += 1
            lastRecipientReplies = []
            let mail = SMTPCommand.mail(sender.isEmpty ? .null : .mailbox(try Mailbox.parse(Substring(sender))), parameters: [])
            let rcpts = try recipients.map { SMTPCommand.rcpt(.mailbox(try Mailbox.parse(Substring($0))), parameters: []) }
            var start = Self.now()
            var mailReply: SMTPReply
            var rcptReplies: [SMTPReply] = []
            var dataReply: SMTPReply
            if pipelining {
                var buffer = channel.channel.allocator.buffer(capacity: 256)
                buffer.writeSMTPCommand(mail)
                for rcpt in rcpts { buffer.writeSMTPCommand(rcpt) }
                buffer.writeSMTPCommand(.data)
                try await channel.outbound.write(buffer)
                mailReply = try await readReply(phase: "mail")
                times.mail = Self.now() - start
                start = Self.now()
                for _ in rcpts { rcptReplies.append(try await readReply(phase: "rcpt")) }
                lastRecipientReplies = rcptReplies
                times.rcpt = Self.now() - start
                start = Self.now()
                dataReply = try await readReply(phase: "data")
                times.data = Self.now() - start
            } else {
                mailReply = try await command(mail, phase: "mail")
                times.mail = Self.now() - start
                guard mailReply.code.rawValue / 100 == 2 else { return try await abandon(mailReply, phase: "mail", dataStarted: false) }
                start = Self.now()
                for rcpt in rcpts { rcptReplies.append(try await command(rcpt, phase: "rcpt")) }
                lastRecipientReplies = rcptReplies
                times.rcpt = Self.now() - start
                guard let refused = firstRefusal(rcptReplies) ?? nil else {
                    start = Self.now()
                    dataReply = try await command(.data, phase: "data")
                    times.data = Self.now() - start
                    return try await finish(dataReply: dataReply, data: data, times: &times)
                }
                return try await abandon(refused, phase: "rcpt", dataStarted: false)
            }
            if mailReply.code.rawValue / 100 != 2 {
                return try await abandon(mailReply, phase: "mail", dataStarted: dataReply.code.rawValue == 354)
            }
            if let refused = firstRefusal(rcptReplies) ?? nil {
                return try await abandon(refused, phase: "rcpt", dataStarted: dataReply.code.rawValue == 354)
            }
            return try await finish(dataReply: dataReply, data: data, times: &times)
        } catch let error as SMTPClientError {
            close()
            return .failed(error)
        } catch let error as SMTPParseError {
            close()
            return .failed(.protocolError("\(error)"))
        } catch {
            close()
            return .failed(.closed("send: \(error)"))
        }
    }

    /// The refusal to report when no recipient was accepted (nil when one was); partial
    /// acceptance goes on to DATA for the accepted recipients.
    private func firstRefusal(_ replies: [SMTPReply]) -> SMTPReply?? {
        replies.contains { $0.code.rawValue / 100 == 2 } ? .some(nil) : replies.first
    }

    private func finish(dataReply: SMTPReply, data: [UInt8], times: inout PhaseTimes) async throws -> Outcome {
        guard dataReply.code.rawValue == 354 else { return try await abandon(dataReply, phase: "data", dataStarted: false) }
        var buffer = channel.channel.allocator.buffer(capacity: data.count + data.count / 50 + 8)
        buffer.writeDotStuffedMessage(ByteBuffer(bytes: data))
        let start = Self.now()
        try await channel.outbound.write(buffer)
        let reply = try await readReply(phase: "data-end")
        times.final = Self.now() - start
        return .reply(reply, phase: "data-end")
    }

    /// Ends a refused transaction: an empty message if the server already said 354, then RSET.
    private func abandon(_ reply: SMTPReply, phase: String, dataStarted: Bool) async throws -> Outcome {
        if dataStarted { _ = try await line(".", phase: "data-end") }
        _ = try await command(.rset, phase: "rset")
        return .reply(reply, phase: phase)
    }

    public func quit() async {
        if isActive, let reply = try? await command(.quit, phase: "quit") { _ = reply }
        close()
    }

    public func close() {
        guard !closed else { return }
        closed = true
        channel.outbound.finish()
        channel.channel.close(promise: nil)
    }

    deinit {
        if !closed { channel.outbound.finish() }
    }

    private func command(_ command: SMTPCommand, phase: String) async throws -> SMTPReply {
        var buffer = channel.channel.allocator.buffer(capacity: 128)
        buffer.writeSMTPCommand(command)
        try await channel.outbound.write(buffer)
        return try await readReply(phase: phase)
    }

    private func line(_ text: String, phase: String) async throws -> SMTPReply {
        try await channel.outbound.write(ByteBuffer(string: text + "\r\n"))
        return try await readReply(phase: phase)
    }

    private func readReply(phase: String) async throws -> SMTPReply {
        var parser = SMTPReplyParser()
        let deadline = channel.channel.eventLoop.scheduleTask(in: .milliseconds(Int64(replyTimeout * 1000))) { [channel] in
            channel.channel.close(promise: nil)
        }
        defer { deadline.cancel() }
        let started = Self.now()
        while true {
            guard let line = try await lines.next() else {
                if Double(Self.now() - started) / 1e9 >= replyTimeout { throw SMTPClientError.timeout(phase) }
                throw SMTPClientError.closed(phase)
            }
            if let reply = try parser.feed(line: line) { return reply }
        }
    }
}
