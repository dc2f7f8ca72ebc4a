import Foundation
import MailMessage
import NIOCore
import SMTPProtocol
import SocketIO
import SwallowTestSupport
import Testing

@testable import SinkServer

/// The sink over real sockets on 127.0.0.1, driven byte by byte.
@Suite("SMTP over loopback: raw sockets", .timeLimit(.minutes(3)))
struct LoopbackProtocolTests {
    static func greet(_ client: RawSMTPClient) throws {
        #expect(try client.readReply().code == 220)
        #expect(try client.command("EHLO client.example").code == 250)
    }

    static func stored(_ sink: Sink, at index: Int = 0) async throws -> (CapturedMessage, String) {
        let messages = sink.store.messages()
        try #require(messages.count > index)
        let bytes = try #require(try await sink.store.receivedBytes(id: messages[index].id))
        return (messages[index], String(buffer: bytes))
    }

    @Test("pipelined commands get their replies in order, and the message is stored byte-exact")
    func pipelining() async throws {
        try await withSink { sink in
            let replies = try await onThread {
                let client = try RawSMTPClient(port: sink.smtpAddress.port)
                #expect(try client.readReply().code == 220)
                try client.send(
                    "EHLO client.example\r\nMAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nRCPT TO:<e@f.example>\r\nNOOP\r\nDATA\r\n"
                )
                var codes: [Int] = []
                for _ in 0..<6 { codes.append(try client.readReply().code) }
                try client.send("Subject: pipelined\r\n\r\n..dot\r\nbody\r\n.\r\nRSET\r\nQUIT\r\n")
                for _ in 0..<3 { codes.append(try client.readReply().code) }
                return codes
            }
            #expect(replies == [250, 250, 250, 250, 250, 354, 250, 250, 221])
            let (message, body) = try await Self.stored(sink)
            #expect(body == "Subject: pipelined\r\n\r\n.dot\r\nbody\r\n")
            #expect(message.envelope.mailFrom == "a@b.example")
            #expect(message.envelope.recipients.map(\.address) == ["c@d.example", "e@f.example"])
            #expect(message.session.helo == "client.example")
            #expect(message.session.esmtp)
            #expect(message.timestamps.connectedNanos <= message.timestamps.mailNanos)
            #expect(message.timestamps.mailNanos <= message.timestamps.dataStartNanos)
            #expect(message.timestamps.dataStartNanos <= message.timestamps.dataEndNanos)
            let raw = try #require(try await sink.store.raw(id: message.id))
            #expect(
                String(buffer: raw).hasPrefix(
                    "Received: from client.example ([127.0.0.1])\r\n\tby swallow.localhost (Swallow) with ESMTP id \(message.id);"))
        }
    }

    @Test("each message's Received header names the HELO, protocol and id it came with, on one connection")
    func receivedPerMessage() async throws {
        try await withSink { sink in
            try await onThread {
                let client = try RawSMTPClient(port: sink.smtpAddress.port)
                try Self.greet(client)
                // The start of the header is kept from a connection's second message on, and made
                // again when the facts it names change.
                for (index, helo) in ["", "", "", "EHLO second.example", "HELO third.example", ""].enumerated() {
                    if !helo.isEmpty { #expect(try client.command(helo).code == 250) }
                    #expect(try client.command("MAIL FROM:<a@b.example>").code == 250)
                    #expect(try client.command("RCPT TO:<c@d.example>").code == 250)
                    #expect(try client.command("DATA").code == 354)
                    #expect(try client.command("Subject: \(index)\r\n\r\nbody\r\n.").code == 250)
                }
            }
            let messages = sink.store.messages().sorted { $0.timestamps.mailNanos < $1.timestamps.mailNanos }
            try #require(messages.count == 6)
            let expected = [
                ("client.example", "ESMTP"), ("client.example", "ESMTP"), ("client.example", "ESMTP"), ("second.example", "ESMTP"),
                ("third.example", "SMTP"), ("third.example", "SMTP"),
            ]
            for (message, (helo, with)) in zip(messages, expected) {
                let raw = String(buffer: try #require(try await sink.store.raw(id: message.id)))
                let header = "Received: from \(helo) ([127.0.0.1])\r\n\tby swallow.localhost (Swallow) with \(with) id \(message.id);\r\n\t"
                #expect(raw.hasPrefix(header))
                #expect(raw.hasSuffix("\r\n\r\nbody\r\n"))
            }
        }
    }

    @Test("BDAT chunks assemble into one message (RFC 3030)")
    func bdat() async throws {
        try await withSink { sink in
            let codes = try await onThread {
                let client = try RawSMTPClient(port: sink.smtpAddress.port)
                try Self.greet(client)
                #expect(try client.command("MAIL FROM:<a@b.example>").code == 250)
                #expect(try client.command("RCPT TO:<c@d.example>").code == 250)
                // Chunks carry raw bytes: no dot-stuffing, and a lone "." line is just data.
                try client.send("BDAT 21\r\nSubject: chunks\r\n\r\n.x")
                let first = try client.readReply()
                try client.send("BDAT 10\r\n\r\n.\r\nend\r\nBDAT 0 LAST\r\n")
                let second = try client.readReply()
                let last = try client.readReply()
                return [first.code, second.code, last.code]
            }
            #expect(codes == [250, 250, 250])
            let (_, body) = try await Self.stored(sink)
            #expect(body == "Subject: chunks\r\n\r\n.x\r\n.\r\nend\r\n")
        }
    }

    @Test("a message over the size limit gets 552 and nothing is stored")
    func sizeLimit() async throws {
        try await withSink({ $0.limits.maxMessageBytes = 1000 }) { sink in
            let codes = try await onThread {
                let client = try RawSMTPClient(port: sink.smtpAddress.port)
                try Self.greet(client)
                var codes = [try client.command("MAIL FROM:<a@b.example> SIZE=5000").code]
                #expect(try client.command("MAIL FROM:<a@b.example>").code == 250)
                #expect(try client.command("RCPT TO:<c@d.example>").code == 250)
                #expect(try client.command("DATA").code == 354)
                try client.send("Subject: big\r\n\r\n" + String(repeating: "0123456789\r\n", count: 200) + ".\r\n")
                codes.append(try client.readReply().code)
                // BDAT too.
                #expect(try client.command("MAIL FROM:<a@b.example>").code == 250)
                #expect(try client.command("RCPT TO:<c@d.example>").code == 250)
                try client.send("BDAT 2000 LAST\r\n" + String(repeating: "x", count: 2000))
                codes.append(try client.readReply().code)
                codes.append(try client.command("NOOP").code)
                return codes
            }
            #expect(codes == [552, 552, 552, 250])
            #expect(sink.store.count == 0)
        }
    }

    @Test("bad syntax gets 500/501, bad sequence 503, and too many errors 421 and a close")
    func errors() async throws {
        try await withSink { sink in
            let codes = try await onThread {
                let client = try RawSMTPClient(port: sink.smtpAddress.port)
                #expect(try client.readReply().code == 220)
                var codes: [Int] = []
                codes.append(try client.command("MAIL FROM:<a@b.example>").code)  // before EHLO
                codes.append(try client.command("EHLO client.example").code)
                codes.append(try client.command("FROB").code)
                codes.append(try client.command("MAIL FROM:<no-at-sign>").code)
                codes.append(try client.command("RCPT TO:<c@d.example>").code)  // before MAIL
                codes.append(try client.command("DATA").code)
                codes.append(try client.command("MAIL FROM:<a@b.example> FOO=1").code)
                codes.append(try client.command("MAIL FROM:<a@b.example>").code)
                codes.append(try client.command("MAIL FROM:<a@b.example>").code)  // nested
                codes.append(try client.command("DATA").code)  // no RCPT
                codes.append(try client.command("FROB").code)
                let last = try client.command("FROB")
                codes.append(last.code)
                #expect(client.isClosedByServer())
                return codes
            }
            #expect(codes == [503, 250, 500, 501, 503, 503, 555, 250, 503, 503, 500, 421])
        }
    }

    @Test("a 2 MB command line without CRLF gets 500 5.5.2, and the sink keeps serving")
    func hugeCommandLine() async throws {
        try await withSink { sink in
            let port = sink.smtpAddress.port
            let (reply, after) = try await onThread {
                let client = try RawSMTPClient(port: port)
                #expect(try client.readReply().code == 220)
                try client.send([UInt8](repeating: UInt8(ascii: "A"), count: 2 * 1024 * 1024))
                let reply = try client.readReply()
                try client.send("\r\n")
                return (reply, try client.command("NOOP").code)
            }
            #expect(reply.code == 500)
            #expect(reply.text.contains("5.5.2"))
            #expect(after == 250)
            // Another client is served normally.
            let other = try await onThread {
                let client = try RawSMTPClient(port: port)
                try Self.greet(client)
                return try client.command("QUIT").code
            }
            #expect(other == 221)
        }
    }

    @Test("large messages one after another on a connection (the loop's capture buffers reused) are each stored byte-exact")
    func largeMessagesInSequence() async throws {
        try await withSink { sink in
            // Sizes that shrink and grow, so a reused buffer holds more of an earlier message's bytes
            // than the next message writes, and has to grow for a later one.
            let sizes = [100_000, 40_000, 150_000, 20_000, 300_000]
            let bodies = sizes.enumerated().map { index, size in
                let line = String(repeating: Character(UnicodeScalar(UInt8(ascii: "a") + UInt8(index))), count: 76) + "\r\n"
                return "Subject: message \(index)\r\n\r\n" + String(repeating: line, count: size / 78)
            }
            let ids = try await onThread {
                let client = try RawSMTPClient(port: sink.smtpAddress.port)
                try Self.greet(client)
                return try bodies.map { try sendMessage(client, body: $0) }
            }
            for (index, id) in ids.enumerated() {
                let bytes = try #require(try await sink.store.receivedBytes(id: id))
                #expect(String(buffer: bytes) == bodies[index], "message \(index)")
            }
        }
    }

    @Test(
        "an accepted connection (Swallow's socket loop by default, NIO's with --nio-channels) has TCP_NODELAY (inherited from the listening socket); its reads start at 64 KiB once a message begins",
        arguments: [false, true])
    func acceptedSocketOptions(nioChannels: Bool) async throws {
        try await withSink({ $0.nioChannels = nioChannels }) { sink in
            try await onThread {
                let client = try RawSMTPClient(port: sink.smtpAddress.port)
                // The greeting is written once the connection is registered.
                try Self.greet(client)
                let channel = try #require(sink.openChannels.first)
                #expect((channel is LoopChannel) == (!nioChannels && SocketLoop.available))
                #expect(try channel.getOption(.tcpOption(.tcp_nodelay)).wait() != 0)
                func initialRead() throws -> Int? {
                    (try channel.getOption(.recvAllocator).wait() as? AdaptiveRecvByteBufferAllocator)?.initial
                }
                #expect(try initialRead() != 65_536)
                #expect(try client.command("MAIL FROM:<a@b.example>").code == 250)
                #expect(try client.command("RCPT TO:<c@d.example>").code == 250)
                #expect(try client.command("DATA").code == 354)
                #expect(try initialRead() == 65_536)
                #expect(try client.command("Subject: x\r\n\r\nbody\r\n.").code == 250)
            }
        }
    }

    @Test("a DATA line over 998 octets is accepted and flagged; bare LF is flagged")
    func longDataLine() async throws {
        try await withSink { sink in
            let longLine = String(repeating: "y", count: 1500)
            let code = try await onThread {
                let client = try RawSMTPClient(port: sink.smtpAddress.port)
                try Self.greet(client)
                #expect(try client.command("MAIL FROM:<a@b.example>").code == 250)
                #expect(try client.command("RCPT TO:<c@d.example>").code == 250)
                #expect(try client.command("DATA").code == 354)
                try client.send("Subject: long\r\n\r\n\(longLine)\r\nbare\nlf\r\n.\r\n")
                return try client.readReply().code
            }
            #expect(code == 250)
            let (message, body) = try await Self.stored(sink)
            #expect(body == "Subject: long\r\n\r\n\(longLine)\r\nbare\nlf\r\n")
            #expect(message.anomalies.contains("long-line"))
            #expect(message.anomalies.contains("bare-lf"))
        }
    }

    @Test("the trace id and DSN parameters are captured")
    func traceAndDSN() async throws {
        try await withSink { sink in
            _ = try await onThread {
                let client = try RawSMTPClient(port: sink.smtpAddress.port)
                try Self.greet(client)
                #expect(try client.command("MAIL FROM:<a@b.example> RET=HDRS ENVID=env42").code == 250)
                #expect(try client.command("RCPT TO:<c@d.example> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;c@d.example").code == 250)
                #expect(try client.command("DATA").code == 354)
                try client.send("X-Swallow-Trace: run-1/42\r\nSubject: t\r\n\r\nhi\r\n.\r\n")
                #expect(try client.readReply().code == 250)
            }
            let (message, _) = try await Self.stored(sink)
            #expect(message.traceID == "run-1/42")
            #expect(message.envelope.mailParameters == ["RET": "HDRS", "ENVID": "env42"])
            #expect(message.envelope.recipients.first?.parameters == ["NOTIFY": "SUCCESS,FAILURE", "ORCPT": "rfc822;c@d.example"])
        }
    }

    @Test("recipients over the limit get 452 4.5.3")
    func recipientLimit() async throws {
        try await withSink({ $0.limits.maxRecipients = 3 }) { sink in
            let codes = try await onThread {
                let client = try RawSMTPClient(port: sink.smtpAddress.port)
                try Self.greet(client)
                #expect(try client.command("MAIL FROM:<a@b.example>").code == 250)
                return try (1...4).map { try client.command("RCPT TO:<r\($0)@d.example>").code }
            }
            #expect(codes == [250, 250, 250, 452])
        }
    }

    @Test("connections over the limit get 421 and a close")
    func connectionLimit() async throws {
        try await withSink({ $0.maxConnections = 1 }) { sink in
            let port = sink.smtpAddress.port
            let code = try await onThread {
                let first = try RawSMTPClient(port: port)
                #expect(try first.readReply().code == 220)
                let second = try RawSMTPClient(port: port)
                let code = try second.readReply().code
                #expect(second.isClosedByServer())
                _ = first
                return code
            }
            #expect(code == 421)
        }
    }

    @Test("an idle client gets 421 4.4.2 and a close")
    func idleTimeout() async throws {
        try await withSink({ $0.idleTimeout = .milliseconds(200) }) { sink in
            let reply = try await onThread {
                let client = try RawSMTPClient(port: sink.smtpAddress.port)
                #expect(try client.readReply().code == 220)
                // Say nothing: the next reply is the timeout.
                return try client.readReply()
            }
            #expect(reply.code == 421)
            #expect(reply.text.contains("4.4.2"))
        }
    }
}
