import Foundation
import MailMessage
import NIOCore
import SMTPProtocol
import SwallowTestSupport
import Testing

@testable import SinkServer

@Suite("Magic recipient addresses")
struct MagicAddressTests {
    @Test("addresses are recognised by local part, case-insensitively")
    func recognised() throws {
        func magic(_ address: String) throws -> MagicAddress? {
            MagicAddress(.mailbox(try Mailbox.parse(Substring(address))))
        }
        #expect(try magic("bounce@x.example") == .bounce)
        #expect(try magic("TempFail@x.example") == .tempfail)
        #expect(try magic("slow-250ms@x.example") == .slow(seconds: 0.25))
        #expect(try magic("slow-forever@x.example") == nil)
        #expect(try magic("slow-11m@x.example") == nil)
        #expect(try magic("alice@x.example") == nil)
        // Every name, in any case; near misses are not magic.
        #expect(try magic("FULL@x.example") == .full)
        #expect(try magic("Disconnect@x.example") == .disconnect)
        #expect(try magic("hAnG@x.example") == .hang)
        #expect(try magic("REJECT@x.example") == .reject)
        #expect(try magic("SLOW-2s@x.example") == .slow(seconds: 2))
        #expect(try magic("Slow-1.5s@x.example") == .slow(seconds: 1.5))
        #expect(try magic("bouncer@x.example") == nil)
        #expect(try magic("ful@x.example") == nil)
        #expect(try magic("disconnected@x.example") == nil)
        #expect(try magic("slow@x.example") == nil)
        #expect(try magic("1bounce@x.example") == nil)
        #expect(try magic("\"bounce\"@x.example") == nil)
    }

    @Test("plus tags: fail-NNN refuses that MAIL or RCPT, delay-<duration> delays the final 250")
    func plusTags() async throws {
        #expect(PlusTagFault("alice+fail-451@x.example") == .fail(code: 451))
        #expect(PlusTagFault("a+b+delay-250ms@x.example") == .delay(seconds: 0.25))
        #expect(PlusTagFault("alice+fail-200@x.example") == nil)
        #expect(PlusTagFault("alice+job42@x.example") == nil)
        try await withSink { sink in
            let replies = try await onThread { () -> [String] in
                let client = try RawSMTPClient(port: sink.smtpAddress.port)
                var replies = ["\(try client.readReply().code)"]
                _ = try client.command("EHLO c")
                let refused = try client.command("MAIL FROM:<app+fail-554@x.example>")
                replies.append("\(refused.code) \(refused.text)")
                replies.append("\(try client.command("MAIL FROM:<app+delay-60ms@x.example>").code)")
                replies.append("\(try client.command("RCPT TO:<bob+fail-452@x.example>").code)")
                replies.append("\(try client.command("RCPT TO:<carol+job7@x.example>").code)")
                replies.append("\(try client.command("DATA").code)")
                replies.append("\(try client.command("Subject: tagged\r\n\r\nbody\r\n.").code)")
                return replies
            }
            #expect(replies.count == 7)
            #expect(replies[1].hasPrefix("554") && replies[1].contains("fail-554"))
            #expect(Array(replies[2...]) == ["250", "452", "250", "354", "250"])
            let message = try #require(sink.store.messages().first)
            #expect(message.envelope.recipients.map(\.address) == ["carol+job7@x.example"])
            let replySent = try #require(message.timestamps.replySentNanos)
            #expect(replySent - message.timestamps.dataEndNanos >= 60_000_000)
        }
    }

    @Test("X-Swallow-Fault: a reply refuses the message after its dot, a delay postpones the final reply")
    func headerFault() async throws {
        #expect(HeaderFault("data-end: 451 4.3.0 Busy; delay 50ms")?.reply?.code.rawValue == 451)
        #expect(HeaderFault("data-end: 451 4.3.0 Busy; delay 50ms")?.delay == .milliseconds(50))
        #expect(HeaderFault("rcpt: 451") == nil)
        #expect(HeaderFault("nonsense") == nil)
        try await withSink { sink in
            let (codes, refusedAfter) = try await onThread { () -> ([Int], Duration) in
                let client = try RawSMTPClient(port: sink.smtpAddress.port)
                var codes = [try client.readReply().code, try client.command("EHLO c").code]
                for header in ["data-end: 451 4.3.0 Busy; delay 50ms", "delay 30ms", "rcpt: 451"] {
                    codes.append(try client.command("MAIL FROM:<a@x.example>").code)
                    codes.append(try client.command("RCPT TO:<b@x.example>").code)
                    codes.append(try client.command("DATA").code)
                    try client.send("X-Swallow-Fault: \(header)\r\nSubject: \(header)\r\n\r\nbody\r\n.\r\n")
                    codes.append(try client.readReply().code)
                }
                // The refusal's delay, measured alone.
                _ = try client.command("MAIL FROM:<a@x.example>")
                _ = try client.command("RCPT TO:<b@x.example>")
                _ = try client.command("DATA")
                let started = ContinuousClock.now
                codes.append(try client.command("X-Swallow-Fault: 554 5.7.1 No; delay 80ms\r\n\r\nbody\r\n.").code)
                return (codes, ContinuousClock.now - started)
            }
            #expect(codes == [220, 250, 250, 250, 354, 451, 250, 250, 354, 250, 250, 250, 354, 250, 554])
            #expect(refusedAfter >= .milliseconds(80))
            let stored = sink.store.messages()
            #expect(stored.count == 2)
            let delayed = try #require(stored.first)
            let replySent = try #require(delayed.timestamps.replySentNanos)
            #expect(replySent - delayed.timestamps.dataEndNanos >= 30_000_000)
        }
    }

    @Test("over a socket: RCPT refusals, reject@ after the dot, disconnect@, slow-; --no-magic-addresses turns them off")
    func overSocket() async throws {
        try await withSink { sink in
            let codes = try await onThread { () -> [Int] in
                let client = try RawSMTPClient(port: sink.smtpAddress.port)
                var codes = [try client.readReply().code]
                codes.append(try client.command("EHLO c").code)
                codes.append(try client.command("MAIL FROM:<a@x.example>").code)
                for rcpt in ["bounce", "tempfail", "full", "ok"] {
                    codes.append(try client.command("RCPT TO:<\(rcpt)@x.example>").code)
                }
                codes.append(try client.command("DATA").code)
                codes.append(try client.command("Subject: kept\r\n\r\nbody\r\n.").code)
                codes.append(try client.command("MAIL FROM:<a@x.example>").code)
                codes.append(try client.command("RCPT TO:<reject@x.example>").code)
                codes.append(try client.command("DATA").code)
                codes.append(try client.command("Subject: refused\r\n\r\nbody\r\n.").code)
                codes.append(try client.command("MAIL FROM:<a@x.example>").code)
                codes.append(try client.command("RCPT TO:<slow-50ms@x.example>").code)
                codes.append(try client.command("DATA").code)
                codes.append(try client.command("Subject: slow\r\n\r\nbody\r\n.").code)
                codes.append(try client.command("MAIL FROM:<a@x.example>").code)
                try client.send("RCPT TO:<disconnect@x.example>\r\n")
                codes.append(client.isClosedByServer() ? -1 : 0)
                return codes
            }
            #expect(codes == [220, 250, 250, 550, 451, 452, 250, 354, 250, 250, 250, 354, 554, 250, 250, 354, 250, 250, -1])
            let recipients = sink.store.messages().map(\.envelope.recipients.first?.address)
            #expect(recipients == ["ok@x.example", "slow-50ms@x.example"])
            let slow = try #require(sink.store.messages().last)
            let replySent = try #require(slow.timestamps.replySentNanos)
            #expect(replySent - slow.timestamps.dataEndNanos >= 50_000_000)
            // The disconnect at RCPT ended an attempt for the recipient it answered.
            let ended = sink.audit.attempts.attempts(sinceNanos: 0).filter { $0.recipient == "disconnect@x.example" }
            #expect(ended.map(\.phase) == ["rcpt"])
            #expect(ended.first?.reply == nil)
        }
        // hang@: nothing answers the RCPT nor what follows; the idle timeout's 421 is the next reply.
        try await withSink({ $0.idleTimeout = .milliseconds(300) }) { sink in
            let (code, stored) = try await onThread { () -> (Int, Int) in
                let client = try RawSMTPClient(port: sink.smtpAddress.port)
                _ = try client.readReply()
                _ = try client.command("EHLO c")
                _ = try client.command("MAIL FROM:<a@x.example>")
                try client.send("RCPT TO:<hang@x.example>\r\nNOOP\r\nDATA\r\n")
                return (try client.readReply().code, sink.store.count)
            }
            #expect(code == 421)
            #expect(stored == 0)
        }
        try await withSink({ $0.magicAddresses = false }) { sink in
            let code = try await onThread { () -> Int in
                let client = try RawSMTPClient(port: sink.smtpAddress.port)
                _ = try client.readReply()
                _ = try client.command("EHLO c")
                _ = try client.command("MAIL FROM:<a@x.example>")
                return try client.command("RCPT TO:<bounce@x.example>").code
            }
            #expect(code == 250)
        }
    }
}
