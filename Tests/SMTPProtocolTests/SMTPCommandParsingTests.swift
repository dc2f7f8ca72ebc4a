import NIOCore
import SMTPProtocol
import Testing

@Suite("Command parsing (RFC 5321 §4.1)")
struct SMTPCommandParsingTests {
    struct Case: CustomTestStringConvertible, Sendable {
        enum Expected: Sendable {
            case command(SMTPCommand)
            case rejected(SMTPParseError)
            case rejectedWithReply(Int)
        }

        var line: String
        var expected: Expected

        init(_ line: String, _ expected: Expected) {
            self.line = line
            self.expected = expected
        }

        var testDescription: String { line.count > 60 ? String(line.prefix(60)) + "…" : line }

        func check() {
            let result = Result { () throws(SMTPParseError) in try SMTPCommand.parse(ByteBuffer(string: line)) }
            switch (expected, result) {
            case (.command(let want), .success(let got)):
                #expect(got == want)
            case (.rejected(let want), .failure(let got)):
                #expect(got == want)
            case (.rejectedWithReply(let code), .failure(let got)):
                #expect(SMTPReply(for: got).code.rawValue == code)
            default:
                Issue.record("\(line): expected \(expected), got \(result)")
            }
        }
    }

    static let alice = Mailbox(localPart: "alice", domain: "example.com")

    @Test(
        "command lines",
        arguments: [
            Case("EHLO client.example", .command(.ehlo("client.example"))),
            Case("ehlo [127.0.0.1]", .command(.ehlo("[127.0.0.1]"))),
            Case("HELO x", .command(.helo("x"))),
            Case("EHLO", .rejectedWithReply(501)),
            Case("MAIL FROM:<alice@example.com>", .command(.mail(.mailbox(alice), parameters: []))),
            Case(
                "mail from:<alice@example.com> SIZE=10 BODY=8BITMIME",
                .command(
                    .mail(
                        .mailbox(alice),
                        parameters: [
                            ESMTPParameter("SIZE", "10"), ESMTPParameter("BODY", "8BITMIME"),
                        ]))),
            Case("MAIL FROM: <alice@example.com>", .command(.mail(.mailbox(alice), parameters: []))),
            Case("MAIL FROM:alice@example.com", .command(.mail(.mailbox(alice), parameters: []))),
            Case("MAIL FROM:<>", .command(.mail(.null, parameters: []))),
            Case("MAIL FROM:<@relay.example:alice@example.com>", .command(.mail(.mailbox(alice), parameters: []))),
            Case(
                "MAIL FROM:<\"john doe\"@example.com>",
                .command(.mail(.mailbox(Mailbox(localPart: "\"john doe\"", domain: "example.com")), parameters: []))),
            Case(
                "MAIL FROM:<用户@例子.广告> SMTPUTF8",
                .command(.mail(.mailbox(Mailbox(localPart: "用户", domain: "例子.广告")), parameters: [ESMTPParameter("SMTPUTF8")]))),
            Case(
                "MAIL FROM:<alice@example.com> RET=HDRS ENVID=abc",
                .command(
                    .mail(
                        .mailbox(alice),
                        parameters: [
                            ESMTPParameter("RET", "HDRS"), ESMTPParameter("ENVID", "abc"),
                        ]))),
            Case("MAIL TO:<alice@example.com>", .rejectedWithReply(501)),
            Case("MAIL FROM:<alice@example.com", .rejectedWithReply(501)),
            Case("MAIL FROM:<alice>", .rejectedWithReply(501)),
            Case("MAIL FROM:<a..b@example.com>", .rejectedWithReply(501)),
            Case("MAIL FROM:<alice@example.com> =x", .rejectedWithReply(501)),
            Case(
                "RCPT TO:<alice@example.com> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;alice@example.com",
                .command(
                    .rcpt(
                        .mailbox(alice),
                        parameters: [
                            ESMTPParameter("NOTIFY", "SUCCESS,FAILURE"), ESMTPParameter("ORCPT", "rfc822;alice@example.com"),
                        ]))),
            Case("RCPT TO:<Postmaster>", .command(.rcpt(.postmaster, parameters: []))),
            Case("RCPT TO:<>", .rejectedWithReply(501)),
            Case("DATA", .command(.data)),
            Case("DATA now", .rejectedWithReply(501)),
            Case("BDAT 1000", .command(.bdat(size: 1000, last: false))),
            Case("BDAT 0 LAST", .command(.bdat(size: 0, last: true))),
            Case("bdat 12 last", .command(.bdat(size: 12, last: true))),
            Case("BDAT -1", .rejectedWithReply(501)),
            Case("BDAT 10 FIRST", .rejectedWithReply(501)),
            Case("BDAT 99999999999999999999999", .rejectedWithReply(501)),
            Case("RSET", .command(.rset)),
            Case("NOOP", .command(.noop(nil))),
            Case("NOOP hello", .command(.noop("hello"))),
            Case("QUIT", .command(.quit)),
            Case("VRFY alice", .command(.vrfy("alice"))),
            Case("EXPN list", .command(.expn("list"))),
            Case("HELP", .command(.help(nil))),
            Case("STARTTLS", .command(.starttls)),
            Case("AUTH PLAIN", .command(.auth(mechanism: "PLAIN", initialResponse: nil))),
            Case("auth plain AGFsaWNlAHNlY3JldA==", .command(.auth(mechanism: "PLAIN", initialResponse: "AGFsaWNlAHNlY3JldA=="))),
            Case("AUTH", .rejectedWithReply(501)),
            Case("FROB", .rejected(.unrecognizedCommand("FROB"))),
            Case("", .rejected(.unrecognizedCommand(""))),
            Case("NOOP " + String(repeating: "x", count: 600), .rejected(.lineTooLong(limit: 512))),
            Case(
                "AUTH PLAIN " + String(repeating: "A", count: 4000),
                .command(.auth(mechanism: "PLAIN", initialResponse: String(repeating: "A", count: 4000)))),
            Case("NOOP a\rb", .rejected(.bareLineEnding)),
            // Read as bytes: any case of the verb and the FROM:/TO: prefix, runs of spaces.
            Case(
                "MaIl FrOm:   <alice@example.com>  SIZE=10   BODY=7BIT ",
                .command(.mail(.mailbox(alice), parameters: [ESMTPParameter("SIZE", "10"), ESMTPParameter("BODY", "7BIT")]))),
            Case("rcpt to:<POSTMASTER>", .command(.rcpt(.postmaster, parameters: []))),
            Case(
                "RCPT TO:<postmaster@example.com>", .command(.rcpt(.mailbox(Mailbox(localPart: "postmaster", domain: "example.com")), parameters: []))
            ),
            Case("RCPT TO:<postmasters>", .rejectedWithReply(501)),
            Case("RCPT TO", .rejectedWithReply(501)),
            Case("RCPT T", .rejectedWithReply(501)),
            Case("MAIL FROM:<alice@example.com>x", .rejectedWithReply(501)),
            Case("NOOP \t hi \t", .command(.noop("hi"))),
            Case("EHLO \u{301}host", .command(.ehlo("\u{301}host"))),
            Case("MAİL FROM:<alice@example.com>", .rejected(.unrecognizedCommand("MAİL"))),
            // Verbs are read as up to eight bytes: longer or extended ones are unknown, as typed.
            Case("StartTls", .command(.starttls)),
            Case("STARTTLSX", .rejected(.unrecognizedCommand("STARTTLSX"))),
            Case("Mailx FROM:<alice@example.com>", .rejected(.unrecognizedCommand("Mailx"))),
            Case("quit now", .rejected(.syntax("QUIT takes no argument"))),
            Case("MAIL FROM:alice@example.com SIZE=10", .command(.mail(.mailbox(alice), parameters: [ESMTPParameter("SIZE", "10")]))),
            Case("MAIL FROM:<\"a>b\"@example.com>", .command(.mail(.mailbox(Mailbox(localPart: "\"a>b\"", domain: "example.com")), parameters: []))),
        ])
    func parse(_ c: Case) { c.check() }

    @Test("invalid UTF-8 is rejected, not replaced")
    func invalidUTF8() {
        var line = ByteBuffer(string: "MAIL FROM:<a")
        line.writeBytes([0xFF, 0xFE])
        line.writeString("@b.example>")
        #expect(throws: SMTPParseError.invalidEncoding) { try SMTPCommand.parse(line) }
    }

    @Test(
        "encoding a command and parsing it again gives the same command",
        arguments: [
            SMTPCommand.ehlo("client.example"),
            .mail(.mailbox(alice), parameters: [ESMTPParameter("SIZE", "100")]),
            .mail(.null, parameters: []),
            .rcpt(.mailbox(alice), parameters: [ESMTPParameter("NOTIFY", "NEVER")]),
            .bdat(size: 5, last: true),
            .auth(mechanism: "LOGIN", initialResponse: "YWxpY2U="),
            .quit,
        ])
    func roundTrip(_ command: SMTPCommand) throws {
        var buffer = ByteBuffer()
        buffer.writeSMTPCommand(command)
        let line = buffer.getSlice(at: 0, length: buffer.readableBytes - 2)!
        #expect(buffer.getString(at: buffer.readableBytes - 2, length: 2) == "\r\n")
        #expect(try SMTPCommand.parse(line) == command)
    }
}
