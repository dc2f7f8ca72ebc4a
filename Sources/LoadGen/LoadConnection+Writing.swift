import Foundation
import NIOCore
import NIOSSL
import SMTPClient
import SMTPProtocol

// What a load connection writes: EHLO, AUTH, each transaction's pipelined commands and data,
// QUIT; and how a transaction ends.
extension LoadConnection {
    func ehlo(_ started: UInt64) {
        phaseStarted = started
        write("EHLO \(setup.helo)\r\n", expecting: .ehlo)
    }

    func authenticate(_ auth: Scenario.ConnectionSettings.Auth) {
        if auth.mechanism == "LOGIN" {
            write("AUTH LOGIN\r\n", expecting: .authLoginUser)
        } else {
            write("AUTH PLAIN \(Self.base64("\0\(auth.user)\0\(auth.password)"))\r\n", expecting: .authResult)
        }
    }

    func becomeReady() {
        pipelining = setup.pipelining && offersPipelining
        ready = true
        delegate?.connectionReady(self)
    }

    /// Begins a transaction: with PIPELINING, MAIL, every RCPT and DATA in one write;
    /// without, MAIL alone.
    func begin(_ transaction: LoadTransaction) {
        guard let wire, ready, !failed else {
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
        var buffer = Self.allocator.buffer(capacity: 256)
        appendCommands(transaction, to: &buffer)
        wire.send(buffer)
    }

    func appendCommands(_ transaction: LoadTransaction, to buffer: inout ByteBuffer) {
        transaction.phaseStarted = now
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

    func writeNextRecipient(_ transaction: LoadTransaction) {
        let next = transaction.rcptReplies.count
        guard let wire, next < transaction.rcpts.count else { return }
        expect(.rcpt(transaction))
        wire.send(transaction.rcpts[next])
    }

    /// The message's data; with PIPELINING, the next transaction's commands behind it.
    func writeData(_ transaction: LoadTransaction) {
        guard let wire else { return }
        transaction.phaseStarted = now
        expect(.dataEnd(transaction))
        // The data is sent once: the commands that follow it are appended to its own buffer,
        // taken from the transaction so no copy is made (a 200 KiB message was copied again
        // here for the few bytes after it).
        var buffer = transaction.data
        transaction.data = ByteBuffer()
        if pipelining, let next = delegate?.nextTransaction(self) {
            transactions += 1
            appendCommands(next, to: &buffer)
        } else if pipelining, setup.perConnection > 0, transactions >= setup.perConnection {
            // The connection's last message: QUIT goes in the same write.
            buffer.writeStaticString("QUIT\r\n")
            quitQueued = true
            expect(.quit)
        }
        wire.send(buffer)
    }

    /// Ends a refused transaction: an empty message if the server said 354 anyway, then RSET;
    /// the refusal is reported when RSET is answered.
    func refuse(_ transaction: LoadTransaction, _ reply: SMTPReply, phase: String, dataStarted: Bool) {
        transaction.refusal = (reply, phase)
        var text = dataStarted ? ".\r\n" : ""
        if dataStarted { expect(.emptyData) }
        text += "RSET\r\n"
        write(text, expecting: .rset(transaction))
    }

    func end(_ transaction: LoadTransaction, _ outcome: SMTPClientConnection.Outcome) {
        let more = expects[expectHead..<expects.count].contains {
            if case .mail = $0 { return true }
            return false
        }
        delegate?.transactionEnded(self, transaction, outcome, more: more)
    }

    /// Says QUIT and closes when it is answered (or the reply times out); the delegate hears
    /// nothing more but the close.
    func quit() {
        guard wire != nil, !quitting, !failed else { return }
        quitting = true
        if !quitQueued { write("QUIT\r\n", expecting: .quit) }
    }

    /// Closes at once.
    func close() {
        guard !failed else { return }
        failed = true
        wire?.close()
    }

    func write(_ text: String, expecting: Expect) {
        guard let wire else { return }
        expect(expecting)
        wire.send(Self.allocator.buffer(string: text))
    }

    func expect(_ reply: Expect) {
        if expectHead == expects.count {
            deadline = now + setup.replyTimeout
            armTimer()
        }
        expects.append(reply)
    }

    func armTimer() {
        guard timer == nil, let wire else { return }
        let loop = wire.eventLoop
        timer = loop.assumeIsolated().scheduleTask(deadline: .uptimeNanoseconds(deadline)) { [weak self] in
            guard let self else { return }
            self.timer = nil
            guard self.deadline != .max, !self.failed else { return }
            if now >= self.deadline {
                self.fail(.timeout(self.pendingPhase ?? "reply"))
            } else {
                self.armTimer()
            }
        }
    }

    /// Fails every transaction still under way (or the set-up) and closes.
    func fail(_ error: SMTPClientError, close: Bool = true) {
        guard !failed else { return }
        failed = true
        timer?.cancel()
        timer = nil
        var ended: [LoadTransaction] = []
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
        if close { wire?.close() }
    }

    static func base64(_ text: String) -> String {
        Data(text.utf8).base64EncodedString()
    }
}
