import NIOCore
import SMTPProtocol
import Testing

@Suite("Replies (RFC 5321 §4.2)")
struct SMTPReplyTests {
    @Test("a one-line reply with an enhanced code")
    func oneLine() {
        var buffer = ByteBuffer()
        buffer.writeSMTPReply(SMTPReply(250, "2.1.0", "Sender ok"))
        #expect(String(buffer: buffer) == "250 2.1.0 Sender ok\r\n")
    }

    @Test("a multi-line reply uses hyphens on every line but the last")
    func multiLine() {
        var buffer = ByteBuffer()
        buffer.writeSMTPReply(SMTPReply(code: .ok, lines: ["host greets you", "PIPELINING", "HELP"]))
        #expect(String(buffer: buffer) == "250-host greets you\r\n250-PIPELINING\r\n250 HELP\r\n")
    }

    @Test(
        "encoding writes every digit of codes and enhanced codes",
        arguments: [
            (
                SMTPReply(code: ReplyCode(rawValue: 451), enhanced: EnhancedStatusCode(4, 10, 100), lines: ["a", "b"]),
                "451-4.10.100 a\r\n451 4.10.100 b\r\n"
            ),
            (
                SMTPReply(code: ReplyCode(rawValue: 550), enhanced: EnhancedStatusCode(5, 7, 26), lines: ["Unauthenticated"]),
                "550 5.7.26 Unauthenticated\r\n"
            ),
            (SMTPReply(code: ReplyCode(rawValue: 220), lines: []), "220 \r\n"),
            (SMTPReply(code: ReplyCode(rawValue: 1234), lines: ["odd"]), "1234 odd\r\n"),
            (
                SMTPReply(code: ReplyCode(rawValue: 250), enhanced: EnhancedStatusCode(2, 1000, 0), lines: ["x", "y"]),
                "250-2.1000.0 x\r\n250 2.1000.0 y\r\n"
            ),
            (
                SMTPReply(code: ReplyCode(rawValue: 999), enhanced: EnhancedStatusCode(999, 999, 999), lines: ["héllo ✉︎"]),
                "999 999.999.999 héllo ✉︎\r\n"
            ),
            (SMTPReply(code: ReplyCode(rawValue: 0), lines: [""]), "0 \r\n"),
        ])
    func digits(reply: SMTPReply, wire: String) {
        var buffer = ByteBuffer()
        let written = buffer.writeSMTPReply(reply)
        #expect(String(buffer: buffer) == wire)
        #expect(written == wire.utf8.count)
        // After other bytes, in a buffer with no room to spare.
        var full = ByteBuffer(string: "354 go\r\n")
        full.reserveCapacity(full.readableBytes)
        #expect(full.writeSMTPReply(reply) == wire.utf8.count)
        #expect(String(buffer: full) == "354 go\r\n" + wire)
    }

    @Test("an empty 334 challenge is written as `334 `")
    func emptyChallenge() {
        var buffer = ByteBuffer()
        buffer.writeSMTPReply(SMTPReply(code: .authContinue, lines: [""]))
        #expect(String(buffer: buffer) == "334 \r\n")
    }

    @Test("the reply parser assembles multi-line replies and enhanced codes")
    func parser() throws {
        var parser = SMTPReplyParser()
        #expect(try parser.feed(line: "250-mx.example greets you") == nil)
        #expect(try parser.feed(line: "250-PIPELINING") == nil)
        let reply = try #require(try parser.feed(line: "250 SIZE 100"))
        #expect(reply.code == .ok)
        #expect(reply.lines == ["mx.example greets you", "PIPELINING", "SIZE 100"])
        let queued = try #require(try parser.feed(line: "250 2.0.0 Ok: queued as ABC"))
        #expect(queued.enhanced == EnhancedStatusCode(2, 0, 0))
        #expect(queued.text == "Ok: queued as ABC")
        #expect(try parser.feed(line: "354 End data with <CR><LF>.<CR><LF>")?.code == .startMailInput)
    }

    @Test("the reply parser rejects garbage and a code that changes mid-reply")
    func parserErrors() throws {
        var parser = SMTPReplyParser()
        #expect(throws: SMTPParseError.self) { try parser.feed(line: "hello") }
        var multi = SMTPReplyParser()
        _ = try multi.feed(line: "250-first")
        #expect(throws: SMTPParseError.self) { try multi.feed(line: "251 second") }
    }

    @Test(
        "parse errors map to the RFC replies",
        arguments: [
            (SMTPParseError.unrecognizedCommand("FROB"), 500, "5.5.1"),
            (.syntax("x"), 501, "5.5.4"),
            (.lineTooLong(limit: 512), 500, "5.5.2"),
            (.bareLineEnding, 500, "5.5.2"),
            (.unsupportedParameter("X"), 555, "5.5.4"),
        ])
    func errorReplies(_ error: SMTPParseError, _ code: Int, _ enhanced: String) {
        let reply = SMTPReply(for: error)
        #expect(reply.code.rawValue == code)
        #expect(reply.enhanced?.description == enhanced)
    }
}
