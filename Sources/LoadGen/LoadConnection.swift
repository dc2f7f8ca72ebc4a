import Foundation
import NIOCore
import NIOSSL
import SMTPProtocol

/// One message on its way over a `LoadConnection`: the commands and the dot-stuffed data,
/// rendered before the first byte, and what the server has said so far.
final class Transaction {
    let job: LoadRunner.Job
    /// `MAIL FROM:<…>`, one `RCPT TO:<…>` per recipient, CRLF after each.
    let mail: ByteBuffer
    let rcpts: [ByteBuffer]
    /// The message, dot-stuffed, with its `.` line.
    let data: ByteBuffer
    /// Uptime nanoseconds the message was taken up (its lag counts to here).
    let taken: UInt64
    var times = SMTPClientConnection.PhaseTimes()
    /// When the phase now waited for began.
    var phaseStarted: UInt64 = 0
    var mailReply: SMTPReply?
    var rcptReplies: [SMTPReply] = []
    /// A refusal decided before the end of data, reported once the RSET after it is answered.
    var refusal: (reply: SMTPReply, phase: String)?

    init(job: LoadRunner.Job, mail: ByteBuffer, rcpts: [ByteBuffer], data: ByteBuffer, taken: UInt64) {
        self.job = job
        self.mail = mail
        self.rcpts = rcpts
        self.data = data
        self.taken = taken
    }

    var rcptAccepted: Bool { rcptReplies.contains { $0.code.rawValue / 100 == 2 } }
}

/// What a `LoadConnection` tells the sender that owns it. Called on the connection's event loop.
protocol LoadConnectionDelegate: AnyObject {
    /// Banner, EHLO, STARTTLS and AUTH are done: transactions may begin.
    func connectionReady(_ connection: LoadConnection)
    /// The connection could not be readied; no transaction was begun on it.
    func connectionFailed(_ connection: LoadConnection, _ error: SMTPClientError, times: SMTPClientConnection.PhaseTimes)
    /// A transaction ended. `more`: another one is already under way on this connection.
    func transactionEnded(_ connection: LoadConnection, _ transaction: Transaction, _ outcome: SMTPClientConnection.Outcome, more: Bool)
    /// Asked while a message's data is written: the next transaction to pipeline behind it, if
    /// one is ready at once (RFC 2920 lets MAIL follow the end of data in the same group).
    func nextTransaction(_ connection: LoadConnection) -> Transaction?
    /// The channel closed (after `connectionReady` or `connectionFailed`, or after QUIT).
    func connectionClosed(_ connection: LoadConnection)
}

/// The load generator's SMTP client connection as a channel handler: a state machine driven by
/// the server's replies, entirely on the channel's event loop (no task, lock or hop per
/// message). Replies are parsed from the bytes in place; only the text of replies that are
/// not plain successes becomes strings.
final class LoadConnection: ChannelInboundHandler {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    struct Setup: Sendable {
        var helo: String
        var tls: Scenario.ConnectionSettings.TLSMode
        var tlsContext: NIOSSLContext?
        var auth: Scenario.ConnectionSettings.Auth?
        var pipelining: Bool
        var replyTimeout: UInt64
        /// Messages per connection (0: no limit); with PIPELINING, QUIT follows the last one's data.
        var perConnection: Int
    }

    private enum Expect {
        case banner, ehlo, starttls, authLoginUser, authLoginPassword, authResult
        case mail(Transaction), rcpt(Transaction), data(Transaction), dataEnd(Transaction)
        /// The `.` after a 354 that came although MAIL or every RCPT was refused.
        case emptyData
        case rset(Transaction?)
        case quit

        var phase: String {
            switch self {
            case .banner: "banner"
            case .ehlo: "ehlo"
            case .starttls: "starttls"
            case .authLoginUser, .authLoginPassword, .authResult: "auth"
            case .mail: "mail"
            case .rcpt: "rcpt"
            case .data: "data"
            case .dataEnd, .emptyData: "data-end"
            case .rset: "rset"
            case .quit: "quit"
            }
        }
    }

    weak var delegate: (any LoadConnectionDelegate)?
    private let setup: Setup
    private var context: ChannelHandlerContext?
    private var expects: [Expect] = []
    private var expectHead = 0
    private var cumulation: ByteBuffer?
    /// The reply being read: its code, and its lines while they are kept.
    private var replyLines: [String] = []
    /// What the last EHLO reply offered.
    private var offersPipelining = false
    private var offersStartTLS = false
    /// QUIT went out behind the last message's data (its reply is read after the data's).
    private var quitQueued = false
    private var tlsStarted = false
    private var pipelining = false
    private(set) var ready = false
    private var quitting = false
    private var failed = false
    /// Transactions begun on this connection.
    private(set) var transactions = 0
    /// Timed phases of the connection's set-up, given to its first transaction.
    private var setupTimes = SMTPClientConnection.PhaseTimes()
    private var phaseStarted: UInt64 = 0
    /// The reply timeout, checked lazily: one scheduled task per timeout period, re-armed
    /// when replies came meanwhile.
    private var deadline: UInt64 = .max
    private var timer: Scheduled<Void>?

    init(setup: Setup, delegate: any LoadConnectionDelegate, connectStarted: UInt64) {
        self.setup = setup
        self.delegate = delegate
        self.phaseStarted = connectStarted
    }

    static func now() -> UInt64 { NIODeadline.now().uptimeNanoseconds }

    // MARK: Channel events

    func handlerAdded(context: ChannelHandlerContext) {
        self.context = context
    }

    func channelActive(context: ChannelHandlerContext) {
        let now = Self.now()
        setupTimes.connect = now - phaseStarted
        phaseStarted = now
        tlsStarted = setup.tls == .implicit
        expect(.banner)
        context.fireChannelActive()
    }

    func channelInactive(context: ChannelHandlerContext) {
        timer?.cancel()
        timer = nil
        if !failed && !quitting {
            fail(.closed(pendingPhase ?? "idle"), close: false)
        }
        delegate?.connectionClosed(self)
        delegate = nil
        context.fireChannelInactive()
    }

    func errorCaught(context: ChannelHandlerContext, error: any Error) {
        fail(.closed("\(pendingPhase ?? "idle"): \(error)"))
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        var buffer = unwrapInboundIn(data)
        if var pending = cumulation {
            cumulation = nil
            pending.writeBuffer(&buffer)
            buffer = pending
        }
        while !failed, let newline = buffer.readableBytesView.firstIndex(of: UInt8(ascii: "\n")) {
            let length = newline - buffer.readerIndex
            readLine(buffer.readableBytesView.prefix(length))
            buffer.moveReaderIndex(forwardBy: length + 1)
        }
        guard !failed else { return }
        if buffer.readableBytes > 0 {
            guard buffer.readableBytes <= 65_536 else { return fail(.protocolError("reply line longer than 64 KiB")) }
            buffer.discardReadBytes()
            cumulation = buffer
        }
    }

    // MARK: Replies

    private var pendingPhase: String? {
        expectHead < expects.count ? expects[expectHead].phase : nil
    }

    /// One reply line, without its LF.
    private func readLine(_ line: ByteBufferView) {
        var line = line
        if line.last == UInt8(ascii: "\r") { line = line.dropLast() }
        let start = line.startIndex
        func digit(_ offset: Int) -> Int? {
            let byte = line[start + offset]
            return byte >= 0x30 && byte <= 0x39 ? Int(byte - 0x30) : nil
        }
        guard line.count >= 3, let d0 = digit(0), let d1 = digit(1), let d2 = digit(2) else {
            return fail(.protocolError("not a reply line: \(String(decoding: line.prefix(80), as: UTF8.self))"))
        }
        let code = d0 * 100 + d1 * 10 + d2
        let last = line.count == 3 || line[start + 3] != UInt8(ascii: "-")
        guard expectHead < expects.count else {
            return fail(.protocolError("a reply nobody asked for: \(code)"))
        }
        // The text is kept where it is used: EHLO's extensions, and replies that are not successes.
        let keep: Bool = switch expects[expectHead] {
        case .ehlo, .banner: true
        default: code >= 400
        }
        if keep { replyLines.append(String(decoding: line, as: UTF8.self)) }
        guard last else { return }
        let reply: SMTPReply
        if keep && code < 400 {
            // A banner or EHLO reply: its lines without the code (what the parser would give).
            reply = SMTPReply(code: ReplyCode(rawValue: code), lines: replyLines.map { String($0.utf8.dropFirst(4)) ?? "" })
            replyLines.removeAll(keepingCapacity: true)
        } else if keep {
            var parser = SMTPReplyParser()
            var parsed: SMTPReply?
            for line in replyLines where parsed == nil { parsed = try? parser.feed(line: line) }
            reply = parsed ?? SMTPReply(code: ReplyCode(rawValue: code), lines: replyLines)
            replyLines.removeAll(keepingCapacity: true)
        } else {
            reply = SMTPReply(code: ReplyCode(rawValue: code), lines: [])
        }
        let expected = expects[expectHead]
        expectHead += 1
        if expectHead == expects.count {
            expects.removeAll(keepingCapacity: true)
            expectHead = 0
            deadline = .max
        } else {
            deadline = Self.now() + setup.replyTimeout
        }
        handle(reply, to: expected)
    }

    private func handle(_ reply: SMTPReply, to expected: Expect) {
        let code = reply.code.rawValue
        let now = Self.now()
        switch expected {
        case .banner:
            setupTimes.banner = now - phaseStarted
            guard code == 220 else { return fail(.protocolError("banner: \(reply)")) }
            ehlo(now)
        case .ehlo:
            guard code == 250 else { return fail(.protocolError("EHLO: \(reply)")) }
            func offers(_ keyword: String) -> Bool {
                reply.lines.dropFirst().contains { line in
                    line.utf8.count >= keyword.utf8.count
                        && zip(line.utf8, keyword.utf8).allSatisfy { $0 & 0xDF == $1 }
                        && (line.utf8.count == keyword.utf8.count || line.utf8.dropFirst(keyword.utf8.count).first == UInt8(ascii: " "))
                }
            }
            offersPipelining = offers("PIPELINING")
            offersStartTLS = offers("STARTTLS")
            if setup.tls == .starttls && tlsStarted {
                setupTimes.tls = now - phaseStarted
            } else {
                setupTimes.ehlo = now - phaseStarted
            }
            phaseStarted = now
            if setup.tls == .starttls && !tlsStarted {
                guard offersStartTLS else { return fail(.protocolError("the server does not offer STARTTLS")) }
                write("STARTTLS\r\n", expecting: .starttls)
            } else if let auth = setup.auth {
                authenticate(auth)
            } else {
                becomeReady()
            }
        case .starttls:
            guard code == 220, let context, let tlsContext = setup.tlsContext else { return fail(.protocolError("STARTTLS: \(reply)")) }
            do {
                let handler = try NIOSSLClientHandler(context: tlsContext, serverHostname: nil)
                try context.pipeline.syncOperations.addHandler(handler, position: .first)
            } catch {
                return fail(.protocolError("TLS: \(error)"))
            }
            tlsStarted = true
            ehlo(phaseStarted)
        case .authLoginUser:
            guard code == 334, let auth = setup.auth else { return fail(.protocolError("AUTH: \(reply)")) }
            write(Self.base64(auth.user) + "\r\n", expecting: .authLoginPassword)
        case .authLoginPassword:
            guard code == 334, let auth = setup.auth else { return fail(.protocolError("AUTH: \(reply)")) }
            write(Self.base64(auth.password) + "\r\n", expecting: .authResult)
        case .authResult:
            guard code == 235 else { return fail(.protocolError("AUTH: \(reply)")) }
            setupTimes.auth = now - phaseStarted
            becomeReady()
        case .mail(let transaction):
            transaction.times.mail = now - transaction.phaseStarted
            transaction.phaseStarted = now
            transaction.mailReply = reply
            if !pipelining {
                guard code / 100 == 2 else { return refuse(transaction, reply, phase: "mail", dataStarted: false) }
                writeNextRecipient(transaction)
            }
        case .rcpt(let transaction):
            transaction.rcptReplies.append(reply)
            guard transaction.rcptReplies.count == transaction.rcpts.count else {
                if !pipelining { writeNextRecipient(transaction) }
                return
            }
            transaction.times.rcpt = now - transaction.phaseStarted
            transaction.phaseStarted = now
            if !pipelining {
                guard transaction.rcptAccepted else { return refuse(transaction, transaction.rcptReplies[0], phase: "rcpt", dataStarted: false) }
                write("DATA\r\n", expecting: .data(transaction))
            }
        case .data(let transaction):
            transaction.times.data = now - transaction.phaseStarted
            transaction.phaseStarted = now
            let dataStarted = code == 354
            if let mail = transaction.mailReply, mail.code.rawValue / 100 != 2 {
                return refuse(transaction, mail, phase: "mail", dataStarted: dataStarted)
            }
            if !transaction.rcptAccepted, let first = transaction.rcptReplies.first {
                return refuse(transaction, first, phase: "rcpt", dataStarted: dataStarted)
            }
            guard dataStarted else { return refuse(transaction, reply, phase: "data", dataStarted: false) }
            writeData(transaction)
        case .dataEnd(let transaction):
            transaction.times.final = now - transaction.phaseStarted
            end(transaction, .reply(reply, phase: "data-end"))
        case .emptyData:
            break
        case .rset(let transaction):
            if let transaction, let refusal = transaction.refusal {
                end(transaction, .reply(refusal.reply, phase: refusal.phase))
            }
        case .quit:
            context?.close(promise: nil)
        }
    }

    // MARK: Writing

    private func ehlo(_ started: UInt64) {
        phaseStarted = started
        write("EHLO \(setup.helo)\r\n", expecting: .ehlo)
    }

    private func authenticate(_ auth: Scenario.ConnectionSettings.Auth) {
        if auth.mechanism == "LOGIN" {
            write("AUTH LOGIN\r\n", expecting: .authLoginUser)
        } else {
            write("AUTH PLAIN \(Self.base64("\0\(auth.user)\0\(auth.password)"))\r\n", expecting: .authResult)
        }
    }

    private func becomeReady() {
        pipelining = setup.pipelining && offersPipelining
        ready = true
        delegate?.connectionReady(self)
    }

    /// Begins a transaction: with PIPELINING, MAIL, every RCPT and DATA in one write;
    /// without, MAIL alone.
    func begin(_ transaction: Transaction) {
        guard let context, ready, !failed else {
            return delegate?.transactionEnded(self, transaction, .failed(.closed("mail")), more: false) ?? ()
        }
        if transactions == 0 {
            transaction.times.connect = setupTimes.connect
            transaction.times.banner = setupTimes.banner
            transaction.times.ehlo = setupTimes.ehlo
            transaction.times.tls = setupTimes.tls
            transaction.times.auth = setupTimes.auth
        }
        transactions += 1
        var buffer = context.channel.allocator.buffer(capacity: 256)
        appendCommands(transaction, to: &buffer)
        context.writeAndFlush(wrapOutboundOut(buffer), promise: nil)
    }

    private func appendCommands(_ transaction: Transaction, to buffer: inout ByteBuffer) {
        transaction.phaseStarted = Self.now()
        buffer.writeImmutableBuffer(transaction.mail)
        expect(.mail(transaction))
        guard pipelining else { return }
        for rcpt in transaction.rcpts {
            buffer.writeImmutableBuffer(rcpt)
            expect(.rcpt(transaction))
        }
        buffer.writeStaticString("DATA\r\n")
        expect(.data(transaction))
    }

    private func writeNextRecipient(_ transaction: Transaction) {
        let next = transaction.rcptReplies.count
        guard let context, next < transaction.rcpts.count else { return }
        expect(.rcpt(transaction))
        context.writeAndFlush(wrapOutboundOut(transaction.rcpts[next]), promise: nil)
    }

    /// The message's data; with PIPELINING, the next transaction's commands behind it.
    private func writeData(_ transaction: Transaction) {
        guard let context else { return }
        transaction.phaseStarted = Self.now()
        expect(.dataEnd(transaction))
        if pipelining, let next = delegate?.nextTransaction(self) {
            var buffer = context.channel.allocator.buffer(capacity: transaction.data.readableBytes + 256)
            buffer.writeImmutableBuffer(transaction.data)
            transactions += 1
            appendCommands(next, to: &buffer)
            context.writeAndFlush(wrapOutboundOut(buffer), promise: nil)
        } else if pipelining, setup.perConnection > 0, transactions >= setup.perConnection {
            // The connection's last message: QUIT goes in the same write.
            var buffer = context.channel.allocator.buffer(capacity: transaction.data.readableBytes + 6)
            buffer.writeImmutableBuffer(transaction.data)
            buffer.writeStaticString("QUIT\r\n")
            quitQueued = true
            expect(.quit)
            context.writeAndFlush(wrapOutboundOut(buffer), promise: nil)
        } else {
            context.writeAndFlush(wrapOutboundOut(transaction.data), promise: nil)
        }
    }

    /// Ends a refused transaction: an empty message if the server said 354 anyway, then RSET;
    /// the refusal is reported when RSET is answered.
    private func refuse(_ transaction: Transaction, _ reply: SMTPReply, phase: String, dataStarted: Bool) {
        transaction.refusal = (reply, phase)
        var text = dataStarted ? ".\r\n" : ""
        if dataStarted { expect(.emptyData) }
        text += "RSET\r\n"
        write(text, expecting: .rset(transaction))
    }

    private func end(_ transaction: Transaction, _ outcome: SMTPClientConnection.Outcome) {
        let more = expects[expectHead..<expects.count].contains {
            if case .mail = $0 { return true }
            return false
        }
        delegate?.transactionEnded(self, transaction, outcome, more: more)
    }

    /// Says QUIT and closes when it is answered (or the reply times out); the delegate hears
    /// nothing more but the close.
    func quit() {
        guard context != nil, !quitting, !failed else { return }
        quitting = true
        if !quitQueued { write("QUIT\r\n", expecting: .quit) }
    }

    /// Closes at once.
    func close() {
        guard !failed else { return }
        failed = true
        context?.close(promise: nil)
    }

    private func write(_ text: String, expecting: Expect) {
        guard let context else { return }
        expect(expecting)
        context.writeAndFlush(wrapOutboundOut(context.channel.allocator.buffer(string: text)), promise: nil)
    }

    private func expect(_ reply: Expect) {
        if expectHead == expects.count {
            deadline = Self.now() + setup.replyTimeout
            armTimer()
        }
        expects.append(reply)
    }

    private func armTimer() {
        guard timer == nil, let context else { return }
        let loop = context.eventLoop
        timer = loop.assumeIsolated().scheduleTask(deadline: .uptimeNanoseconds(deadline)) { [weak self] in
            guard let self else { return }
            self.timer = nil
            guard self.deadline != .max, !self.failed else { return }
            if Self.now() >= self.deadline {
                self.fail(.timeout(self.pendingPhase ?? "reply"))
            } else {
                self.armTimer()
            }
        }
    }

    /// Fails every transaction still under way (or the set-up) and closes.
    private func fail(_ error: SMTPClientError, close: Bool = true) {
        guard !failed else { return }
        failed = true
        timer?.cancel()
        timer = nil
        var ended: [Transaction] = []
        for expected in expects[expectHead...] {
            switch expected {
            case .mail(let t), .rcpt(let t), .data(let t), .dataEnd(let t):
                if !ended.contains(where: { $0 === t }) { ended.append(t) }
            case .rset(let t?):
                if !ended.contains(where: { $0 === t }) { ended.append(t) }
            default: break
            }
        }
        expects.removeAll()
        expectHead = 0
        if quitting {
            // Nothing the delegate waits for.
        } else if !ready {
            delegate?.connectionFailed(self, error, times: setupTimes)
        } else {
            for (index, transaction) in ended.enumerated() {
                delegate?.transactionEnded(self, transaction, .failed(error), more: index < ended.count - 1)
            }
        }
        if close { context?.close(promise: nil) }
    }

    static func base64(_ text: String) -> String {
        Data(text.utf8).base64EncodedString()
    }
}
