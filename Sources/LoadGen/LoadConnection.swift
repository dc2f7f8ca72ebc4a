import Foundation
import NIOCore
import NIOSSL
import SMTPClient
import SMTPProtocol

/// The load generator's SMTP client connection: a state machine driven by the server's
/// replies, entirely on its connection's event loop (no task, lock or hop per message).
/// Replies are parsed from the bytes in place; only the text of replies that are not plain
/// successes becomes strings. It reads and writes through a `LoadWire`: Swallow's own socket
/// loop for plain TCP (`SocketWire`), a NIO channel for TLS (`LoadChannelHandler`).
final class LoadConnection {
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

    enum Expect {
        case banner, ehlo, starttls, authLoginUser, authLoginPassword, authResult
        case mail(LoadTransaction)
        case rcpt(LoadTransaction)
        case data(LoadTransaction)
        case dataEnd(LoadTransaction)
        /// The `.` after a 354 that came although MAIL or every RCPT was refused.
        case emptyData
        case rset(LoadTransaction?)
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
    let setup: Setup
    /// The connection's transport, from `connected` (or before it) to `closed`.
    var wire: (any LoadWire)?
    static let allocator = ByteBufferAllocator()
    var expects: [Expect] = []
    var expectHead = 0
    var cumulation: ByteBuffer?
    /// The reply being read: its code, and its lines while they are kept.
    var replyLines: [String] = []
    /// What the last EHLO reply offered.
    var offersPipelining = false
    var offersStartTLS = false
    /// QUIT went out behind the last message's data (its reply is read after the data's).
    var quitQueued = false
    var tlsStarted = false
    var pipelining = false
    var ready = false
    var quitting = false
    var failed = false
    /// Transactions begun on this connection.
    var transactions = 0
    /// Timed phases of the connection's set-up, given to its first transaction.
    var setupTimes = SMTPClientConnection.PhaseTimes()
    var phaseStarted: UInt64 = 0
    /// The reply timeout, checked lazily: one scheduled task per timeout period, re-armed
    /// when replies came meanwhile.
    var deadline: UInt64 = .max
    var timer: Scheduled<Void>?

    init(setup: Setup, delegate: any LoadConnectionDelegate, connectStarted: UInt64) {
        self.setup = setup
        self.delegate = delegate
        self.phaseStarted = connectStarted
    }

    /// The time, in uptime nanoseconds, from the connection's event loop: the one clock of a
    /// run (senders, schedules and connections all read their loop's `now`), which a test
    /// moves by hand on an `EmbeddedEventLoop`.
    var now: UInt64 { wire?.eventLoop.now.uptimeNanoseconds ?? NIODeadline.now().uptimeNanoseconds }

    // MARK: Transport events

    /// The TCP connection is up.
    func connected() {
        let now = self.now
        setupTimes.connect = now - phaseStarted
        phaseStarted = now
        tlsStarted = setup.tls == .implicit
        expect(.banner)
    }

    /// The connection closed (it had connected).
    func closed() {
        timer?.cancel()
        timer = nil
        if !failed && !quitting {
            fail(.closed(pendingPhase ?? "idle"), close: false)
        }
        delegate?.connectionClosed(self)
        delegate = nil
        wire = nil
    }

    /// Reading or writing failed; the connection is closed.
    func errored(_ error: any Error) {
        fail(.closed("\(pendingPhase ?? "idle"): \(error)"))
    }

    /// Bytes from the server.
    func received(_ data: ByteBuffer) {
        var buffer = data
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

    var pendingPhase: String? {
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
        let keep: Bool =
            switch expects[expectHead] {
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
            deadline = now + setup.replyTimeout
        }
        handle(reply, to: expected)
    }

    private func handle(_ reply: SMTPReply, to expected: Expect) {
        let code = reply.code.rawValue
        let now = self.now
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
            guard code == 220, let wire, let tlsContext = setup.tlsContext else { return fail(.protocolError("STARTTLS: \(reply)")) }
            do {
                try wire.startTLS(tlsContext)
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
            wire?.close()
        }
    }
}
