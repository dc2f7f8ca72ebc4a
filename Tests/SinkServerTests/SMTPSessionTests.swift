import Foundation
import SMTPProtocol
import SwallowTestSupport
import Testing

@testable import SinkServer

/// The session state machine alone: no sockets, no clock.
@Suite("SMTPSession state machine")
struct SMTPSessionTests {
    static func configuration(
        auth: AuthPolicy? = .any, requireAuth: Bool = false, authRequiresTLS: Bool = false,
        maxBadCommands: Int = 10
    ) -> SMTPSession.Configuration {
        SMTPSession.Configuration(
            hostname: "sink.test",
            limits: SMTPLimits(maxRecipients: 2, maxMessageBytes: 100, maxBadCommands: maxBadCommands),
            startTLSAvailable: true,
            auth: auth,
            requireAuth: requireAuth,
            authRequiresTLS: authRequiresTLS,
            makeChallenge: { "<1.2@sink.test>" }
        )
    }

    static func code(_ action: SMTPSession.Action) -> Int? {
        switch action {
        case .reply(let reply), .replyAndClose(let reply): reply.code.rawValue
        case .deliver, .none, .close: nil
        }
    }

    static let alice = Mailbox(localPart: "alice", domain: "example.com")

    @Test("a whole DATA transaction, then the 250 after storing")
    func transaction() {
        var session = SMTPSession(configuration: Self.configuration())
        #expect(Self.code(session.receive(.ehlo("c"), at: 1)) == 250)
        #expect(Self.code(session.receive(.mail(.mailbox(Self.alice), parameters: []), at: 2)) == 250)
        #expect(Self.code(session.receive(.rcpt(.mailbox(Self.alice), parameters: []), at: 3)) == 250)
        #expect(Self.code(session.receive(.data, at: 4)) == 354)
        let kept = session.messageBytes(50)
        #expect(kept)
        guard case .deliver(let transaction) = session.messageEnd() else {
            Issue.record("expected deliver")
            return
        }
        #expect(transaction.mailNanos == 2)
        #expect(transaction.dataStartNanos == 4)
        #expect(transaction.receivedBytes == 50)
        guard case .reply(let reply) = session.stored(id: "ID1") else {
            Issue.record("expected a reply")
            return
        }
        #expect(reply.code == .ok)
        #expect(reply.text.hasSuffix("queued as ID1"))
        // Ready for the next transaction.
        #expect(Self.code(session.receive(.mail(.null, parameters: []), at: 5)) == 250)
    }

    @Test("a transaction is gone once it ends: not seen by a later BDAT without MAIL, nor after RSET, a refusal or a close")
    func transactionEnds() {
        var session = SMTPSession(configuration: Self.configuration())
        _ = session.receive(.ehlo("c"), at: 0)
        _ = session.receive(.mail(.mailbox(Self.alice), parameters: [ESMTPParameter("SIZE", "40")]), at: 1)
        _ = session.receive(.rcpt(.mailbox(Self.alice), parameters: []), at: 2)
        #expect(session.transaction?.recipients.count == 1)
        #expect(session.declaredSize == nil)
        _ = session.receive(.data, at: 3)
        #expect(session.isReceivingMessage)
        #expect(session.declaredSize == 40)
        guard case .deliver = session.messageEnd() else {
            Issue.record("expected deliver")
            return
        }
        #expect(!session.isReceivingMessage)
        #expect(session.transaction?.mailNanos == 1)
        _ = session.stored(id: "ID1")
        #expect(session.transaction == nil)
        // A chunk without MAIL is read and refused: it belongs to no transaction.
        #expect(Self.code(session.receive(.bdat(size: 5, last: true), at: 4)) == nil)
        #expect(session.transaction == nil)
        #expect(!session.isReceivingMessage)
        let keptRefused = session.messageBytes(5)
        #expect(!keptRefused)
        #expect(Self.code(session.chunkComplete()) == 503)
        // A BDAT transaction: receiving between chunks; RSET ends it.
        _ = session.receive(.mail(.null, parameters: []), at: 5)
        _ = session.receive(.rcpt(.postmaster, parameters: []), at: 6)
        #expect(Self.code(session.receive(.bdat(size: 3, last: false), at: 7)) == nil)
        #expect(session.isReceivingMessage)
        let kept = session.messageBytes(3)
        #expect(kept)
        #expect(Self.code(session.chunkComplete()) == 250)
        #expect(session.isReceivingMessage)
        #expect(session.transaction?.receivedBytes == 3)
        #expect(Self.code(session.receive(.rset, at: 8)) == 250)
        #expect(session.transaction == nil)
        #expect(!session.isReceivingMessage)
        // A refusal at the message's end, and QUIT, leave none either.
        _ = session.receive(.mail(.null, parameters: []), at: 9)
        _ = session.receive(.rcpt(.postmaster, parameters: []), at: 10)
        _ = session.receive(.data, at: 11)
        _ = session.messageEnd()
        #expect(Self.code(session.refuse(SMTPReply(554, "5.7.1", "no"))) == 554)
        #expect(session.transaction == nil)
        _ = session.receive(.mail(.null, parameters: []), at: 12)
        _ = session.receive(.quit, at: 13)
        #expect(session.transaction == nil)
        #expect(session.isClosed)
    }

    @Test("over the size limit the bytes are dropped and the end gets 552")
    func tooBig() {
        var session = SMTPSession(configuration: Self.configuration())
        _ = session.receive(.ehlo("c"), at: 0)
        _ = session.receive(.mail(.null, parameters: []), at: 0)
        _ = session.receive(.rcpt(.postmaster, parameters: []), at: 0)
        _ = session.receive(.data, at: 0)
        let first = session.messageBytes(80)
        let second = session.messageBytes(80)
        #expect(first)
        #expect(!second)
        #expect(Self.code(session.messageEnd()) == 552)
    }

    @Test("the third recipient over a limit of two gets 452")
    func recipients() {
        var session = SMTPSession(configuration: Self.configuration())
        _ = session.receive(.ehlo("c"), at: 0)
        _ = session.receive(.mail(.null, parameters: []), at: 0)
        let codes = (0..<3).map { _ in Self.code(session.receive(.rcpt(.mailbox(Self.alice), parameters: []), at: 0)) }
        #expect(codes == [250, 250, 452])
    }

    @Test("STARTTLS forgets the EHLO and AUTH state (RFC 3207 §4.2)")
    func startTLS() {
        var session = SMTPSession(configuration: Self.configuration())
        _ = session.receive(.ehlo("c"), at: 0)
        #expect(Self.code(session.receive(.starttls, at: 0)) == 220)
        session.tlsEstablished()
        #expect(session.helo == nil)
        #expect(Self.code(session.receive(.mail(.null, parameters: []), at: 0)) == 503)
        _ = session.receive(.ehlo("c"), at: 0)
        #expect(Self.code(session.receive(.starttls, at: 0)) == 503)
    }

    @Test("AUTH is withheld without TLS when it requires TLS")
    func authRequiresTLS() {
        var session = SMTPSession(configuration: Self.configuration(authRequiresTLS: true))
        guard case .reply(let ehlo) = session.receive(.ehlo("c"), at: 0) else { return }
        #expect(!ehlo.lines.contains { $0.hasPrefix("AUTH") })
        #expect(Self.code(session.receive(.auth(mechanism: "PLAIN", initialResponse: nil), at: 0)) == 538)
        session.tlsEstablished()
        guard case .reply(let after) = session.receive(.ehlo("c"), at: 0) else { return }
        #expect(after.lines.contains("AUTH PLAIN LOGIN CRAM-MD5"))
    }

    @Test("AUTH LOGIN in steps, with a cancel and a success")
    func authLogin() {
        var session = SMTPSession(configuration: Self.configuration(auth: .credentials(["u": "p"])))
        _ = session.receive(.ehlo("c"), at: 0)
        #expect(Self.code(session.receive(.auth(mechanism: "LOGIN", initialResponse: nil), at: 0)) == 334)
        #expect(Self.code(session.authResponse("*")) == 501)
        #expect(Self.code(session.receive(.auth(mechanism: "LOGIN", initialResponse: Data("u".utf8).base64EncodedString()), at: 0)) == 334)
        #expect(Self.code(session.authResponse(Data("p".utf8).base64EncodedString())) == 235)
        #expect(session.authUser == "u")
        #expect(Self.code(session.receive(.auth(mechanism: "PLAIN", initialResponse: nil), at: 0)) == 503)
    }

    @Test("CRAM-MD5 checks the HMAC of the challenge (RFC 2195)")
    func cramMD5() {
        var session = SMTPSession(configuration: Self.configuration(auth: .credentials(["tim": "tanstaaftanstaaf"])))
        _ = session.receive(.ehlo("c"), at: 0)
        #expect(Self.code(session.receive(.auth(mechanism: "CRAM-MD5", initialResponse: nil), at: 0)) == 334)
        let wrong = "tim " + "e7c3d5d0c5b0b1b5a1b8b2e6a7c6f2d1"
        #expect(Self.code(session.authResponse(Data(wrong.utf8).base64EncodedString())) == 535)
        #expect(session.authUser == nil)
        #expect(Self.code(session.receive(.auth(mechanism: "CRAM-MD5", initialResponse: nil), at: 0)) == 334)
        // HMAC-MD5 keyed "tanstaaftanstaaf" of "<1.2@sink.test>", computed independently with Python's hmac.
        let right = "tim " + "e78a9a88c0e4d65696f724371120a11e"
        #expect(Self.code(session.authResponse(Data(right.utf8).base64EncodedString())) == 235)
        #expect(session.authUser == "tim")
    }

    @Test("BDAT without a transaction is read, then refused")
    func bdatOutOfSequence() {
        var session = SMTPSession(configuration: Self.configuration())
        _ = session.receive(.ehlo("c"), at: 0)
        let action = session.receive(.bdat(size: 10, last: true), at: 0)
        #expect(action == .none)
        let kept = session.messageBytes(10)
        #expect(!kept)
        #expect(Self.code(session.chunkComplete()) == 503)
        #expect(Self.code(session.receive(.mail(.null, parameters: []), at: 0)) == 250)
    }

    @Test("the tenth error ends the session with 421")
    func tooManyErrors() {
        var session = SMTPSession(configuration: Self.configuration(maxBadCommands: 3))
        let codes = (0..<3).map { _ in Self.code(session.receive(.unrecognizedCommand("X"))) }
        #expect(codes == [500, 500, 421])
        #expect(session.isClosed)
    }
}
