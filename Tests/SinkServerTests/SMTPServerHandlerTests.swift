import Foundation
import Logging
import MailMessage
import NIOCore
import NIOEmbedded
import SMTPProtocol
import SwallowConfig
import SwallowTestSupport
import Synchronization
import Testing

@testable import SinkServer

/// The SMTP channel handler on an `EmbeddedChannel`: no sockets, no threads, and the event
/// loop's clock moved by hand, so delays and timeouts are exact and take no time.
@Suite("SMTP handler on an embedded channel")
struct SMTPServerHandlerTests {
    /// A handler on an embedded channel, with its store and fault engine.
    struct Harness {
        let channel: EmbeddedChannel
        let loop: EmbeddedEventLoop
        let store: MessageStore
        let faults: FaultEngine
        let audit: DeliveryAudit

        init(rules: String = "rules: []\n", _ configure: (inout SinkConfiguration) -> Void = { _ in }) throws {
            var configuration = SinkConfiguration()
            configure(&configuration)
            loop = EmbeddedEventLoop()
            store = MessageStore(maxMessages: 100)
            faults = FaultEngine(seed: 1, rules: try FaultRuleSet.parse(rules))
            let session = SMTPSession.Configuration(
                hostname: "sink.test", limits: configuration.limits, startTLSAvailable: false, auth: .any,
                requireAuth: false, authRequiresTLS: false, makeChallenge: { "<1.2@sink.test>" }
            )
            let context = SMTPServerContext(
                session: session, configuration: configuration, store: store, connections: ConnectionRegistry(limit: 10),
                startTLS: nil, implicitTLS: false, logger: Logger(label: "test"), metrics: SinkMetrics(), faults: faults,
                handoffs: LoopHandoffs()
            )
            audit = context.audit
            channel = EmbeddedChannel(handler: SMTPServerHandler(context), loop: loop)
            try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 25)).wait()
        }

        func send(_ text: String) throws {
            try channel.writeInbound(ByteBuffer(string: text))
        }

        /// Every reply written so far, one string per reply (a multi-line reply is one), CRLFs
        /// kept. The replies of one pass leave in one write.
        func replies() throws -> [String] {
            var replies: [String] = []
            var current = ""
            while let buffer = try channel.readOutbound(as: ByteBuffer.self) {
                var text = Substring(String(buffer: buffer))
                while let end = text.range(of: "\r\n") {
                    let line = text[..<end.upperBound]
                    current += line
                    text = text[end.upperBound...]
                    // `250-…` continues a reply; `250 …` ends it.
                    if line.dropFirst(3).first != "-" {
                        replies.append(current)
                        current = ""
                    }
                }
                current += text
            }
            if !current.isEmpty { replies.append(current) }
            return replies
        }

        func codes() throws -> [Int] {
            try replies().map { Int($0.prefix(3)) ?? -1 }
        }
    }

    static let message = "MAIL FROM:<a@x>\r\nRCPT TO:<b@x>\r\nDATA\r\nSubject: t\r\n\r\nbody\r\n.\r\n"

    @Test("a pipelined group in one read is answered in order, and the message is stored")
    func pipelining() throws {
        let harness = try Harness()
        #expect(try harness.codes() == [220])
        try harness.send("EHLO c\r\n" + Self.message + "QUIT\r\n")
        #expect(try harness.codes() == [250, 250, 250, 354, 250, 221])
        #expect(harness.store.messages().count == 1)
        #expect(!harness.channel.isActive)
    }

    @Test("a message is published once, after its 250, with the time of that reply")
    func publishedAfterReply() throws {
        let harness = try Harness()
        let published = Mutex<[CapturedMessage]>([])
        harness.store.events.addListener { event in
            if case .message(let message) = event { published.withLock { $0.append(message) } }
        }
        _ = try harness.replies()
        try harness.send("EHLO c\r\n" + Self.message)
        #expect(try harness.codes() == [250, 250, 250, 354, 250])
        let events = published.withLock { $0 }
        #expect(events.count == 1)
        let sent = try #require(events.first?.timestamps.replySentNanos)
        #expect(sent >= events[0].timestamps.dataEndNanos)
        #expect(harness.store.messages().first?.timestamps.replySentNanos == sent)
    }

    @Test("a delay at data-end holds the 250 and every pipelined command behind it until the loop's clock passes it")
    func delayPausesProcessing() throws {
        let harness = try Harness(rules: "rules:\n  - {name: slow, match: {phase: data-end}, action: {delay: 30s}}\n")
        _ = try harness.replies()
        try harness.send("EHLO c\r\n" + Self.message + "NOOP\r\n")
        #expect(try harness.codes() == [250, 250, 250, 354])
        harness.loop.advanceTime(by: .seconds(29))
        #expect(try harness.codes() == [])
        harness.loop.advanceTime(by: .seconds(1))
        #expect(try harness.codes() == [250, 250])
        #expect(harness.store.messages().count == 1)
    }

    /// Counts the reads that reach the socket's end of the pipeline.
    final class ReadCounter: ChannelOutboundHandler {
        typealias OutboundIn = ByteBuffer
        var reads = 0
        func read(context: ChannelHandlerContext) {
            reads += 1
            context.read()
        }
    }

    @Test("while a message waits, input is still read until 64 KiB wait undecoded; then reads stop until it is answered")
    func pausedReadsAreBounded() throws {
        let harness = try Harness(rules: "rules:\n  - {name: slow, match: {phase: data-end}, action: {delay: 30s}}\n")
        let counter = ReadCounter()
        try harness.channel.pipeline.syncOperations.addHandler(counter, position: .first)
        _ = try harness.replies()
        try harness.send("EHLO c\r\n" + Self.message)
        #expect(try harness.codes() == [250, 250, 250, 354])
        // Waiting, little buffered: a read goes through (withholding it costs two epoll_ctl).
        counter.reads = 0
        harness.channel.read()
        #expect(counter.reads == 1)
        // A client that pipelines 72 KB behind the message: kept, not decoded, and no more reads.
        try harness.send(String(repeating: "NOOP\r\n", count: 12_000))
        counter.reads = 0
        harness.channel.read()
        #expect(counter.reads == 0)
        #expect(try harness.codes() == [])
        // Answered: the buffered commands are processed and the withheld read goes out.
        harness.loop.advanceTime(by: .seconds(30))
        let codes = try harness.codes()
        #expect(codes.count == 12_001 && codes.allSatisfy { $0 == 250 })
        #expect(counter.reads == 1)
    }

    @Test("slow-D@ and +delay-D are built-in delays, decided like a rule's")
    func builtInDelay() throws {
        let harness = try Harness()
        _ = try harness.replies()
        try harness.send("EHLO c\r\nMAIL FROM:<a@x>\r\nRCPT TO:<slow-5s@x>\r\nRCPT TO:<b+delay-7s@x>\r\nDATA\r\nbody\r\n.\r\n")
        #expect(try harness.codes() == [250, 250, 250, 250, 354])
        harness.loop.advanceTime(by: .milliseconds(6_999))
        #expect(try harness.codes() == [])
        harness.loop.advanceTime(by: .milliseconds(1))
        #expect(try harness.codes() == [250])
    }

    @Test("hang: nothing more is answered; the command-line deadline does not run while hung, silence ends it")
    func hang() throws {
        let harness = try Harness { $0.idleTimeout = .seconds(2) }
        _ = try harness.replies()
        try harness.send("EHLO c\r\nMAIL FROM:<a@x>\r\nRCPT TO:<hang@x>\r\nRCPT TO:<b@x>\r\nDATA\r\n")
        #expect(try harness.codes() == [250, 250])
        harness.loop.advanceTime(by: .seconds(1))
        // Input while hung is dropped but is not silence: the 2 s count from here.
        try harness.send("NOOP\r\nNOOP")
        harness.loop.advanceTime(by: .milliseconds(1_999))
        #expect(try harness.codes() == [])
        #expect(harness.channel.isActive)
        harness.loop.advanceTime(by: .milliseconds(1))
        #expect(try harness.replies() == ["421 4.4.2 Idle timeout, closing connection\r\n"])
        #expect(!harness.channel.isActive)
        #expect(harness.store.messages().count == 0)
    }

    @Test("--idle-timeout of silence answers 421 and closes; every read starts it again")
    func silence() throws {
        let harness = try Harness { $0.idleTimeout = .seconds(2) }
        #expect(try harness.codes() == [220])
        harness.loop.advanceTime(by: .milliseconds(1_900))
        try harness.send("EHLO c\r\n")
        harness.loop.advanceTime(by: .milliseconds(1_900))
        try harness.send("NOOP\r\n")
        harness.loop.advanceTime(by: .milliseconds(1_999))
        #expect(try harness.codes() == [250, 250])
        #expect(harness.channel.isActive)
        harness.loop.advanceTime(by: .milliseconds(1))
        #expect(try harness.replies() == ["421 4.4.2 Idle timeout, closing connection\r\n"])
        #expect(!harness.channel.isActive)
    }

    @Test("--data-timeout counts from DATA, however steadily the message's bytes come; a message that ends in time stops it")
    func dataDeadline() throws {
        let harness = try Harness {
            $0.idleTimeout = .seconds(2)
            $0.dataTimeout = .seconds(3)
        }
        _ = try harness.replies()
        // A message that ends in time: its deadline must not cut the next transaction.
        try harness.send("EHLO c\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@x>\r\nDATA\r\n")
        harness.loop.advanceTime(by: .milliseconds(1_500))
        try harness.send("body\r\n")
        harness.loop.advanceTime(by: .milliseconds(1_000))
        try harness.send(".\r\n")
        #expect(try harness.codes() == [250, 250, 250, 354, 250])
        try harness.send("MAIL FROM:<a@x>\r\nRCPT TO:<b@x>\r\n")
        harness.loop.advanceTime(by: .milliseconds(1_000))
        #expect(try harness.codes() == [250, 250])
        #expect(harness.channel.isActive)
        // A message whose lines keep coming, each well within the idle timeout, is cut at 3 s.
        try harness.send("DATA\r\n")
        for _ in 0..<5 {
            harness.loop.advanceTime(by: .milliseconds(500))
            try harness.send("line\r\n")
        }
        harness.loop.advanceTime(by: .milliseconds(499))
        #expect(try harness.codes() == [354])
        harness.loop.advanceTime(by: .milliseconds(1))
        #expect(try harness.replies() == ["421 4.4.2 Message data not completed in time, closing connection\r\n"])
        #expect(!harness.channel.isActive)
        #expect(harness.store.messages().count == 1)
    }

    @Test("a command line that trickles in is cut at --idle-timeout from its first byte")
    func trickle() throws {
        let harness = try Harness { $0.idleTimeout = .seconds(2) }
        _ = try harness.replies()
        for byte in "EHLO trickling".utf8 {
            try harness.send(String(UnicodeScalar(byte)))
            harness.loop.advanceTime(by: .milliseconds(100))
        }
        // 1.4 s after the first byte: 0.5 s more is not yet 2 s, 0.1 s more is.
        harness.loop.advanceTime(by: .milliseconds(500))
        #expect(try harness.codes() == [])
        harness.loop.advanceTime(by: .milliseconds(100))
        #expect(try harness.replies() == ["421 4.4.2 Command line not completed in time, closing connection\r\n"])
        #expect(!harness.channel.isActive)
    }

    @Test("a 421 from a rule at rcpt, and from X-Swallow-Fault at data-end, answers and closes")
    func replyAndClose() throws {
        let harness = try Harness(rules: "rules:\n  - {name: busy, match: {phase: rcpt, recipient: 'busy@*'}, action: {reply: '421 4.7.0 Busy'}}\n")
        _ = try harness.replies()
        try harness.send("EHLO c\r\nMAIL FROM:<a@x>\r\nRCPT TO:<busy@x>\r\nRCPT TO:<b@x>\r\n")
        #expect(try harness.codes() == [250, 250, 421])
        #expect(!harness.channel.isActive)

        let other = try Harness()
        _ = try other.replies()
        try other.send("EHLO c\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@x>\r\nDATA\r\nX-Swallow-Fault: 421 4.3.2 Going away\r\n\r\nbody\r\n.\r\nNOOP\r\n")
        #expect(try other.codes() == [250, 250, 250, 354, 421])
        #expect(!other.channel.isActive)
        #expect(other.store.messages().count == 0)
    }

    @Test("a rule that only delays at rcpt lets a magic address still answer, after the delay")
    func ruleDelayThenBuiltIn() throws {
        let harness = try Harness(rules: "rules:\n  - {name: wait, match: {phase: rcpt}, action: {delay: 3s}}\n")
        _ = try harness.replies()
        try harness.send("EHLO c\r\nMAIL FROM:<a@x>\r\nRCPT TO:<bounce@x>\r\n")
        #expect(try harness.codes() == [250, 250])
        harness.loop.advanceTime(by: .seconds(3))
        #expect(try harness.codes() == [550])
    }

    @Test("a magic address never hides a protocol error: RCPT bounce@ before MAIL is 503")
    func builtInAfterSequence() throws {
        let harness = try Harness()
        _ = try harness.replies()
        try harness.send("EHLO c\r\nRCPT TO:<bounce@x>\r\nMAIL FROM:<a+fail-452@x>\r\n")
        #expect(try harness.codes() == [250, 503, 452])
    }

    @Test("a connection's messages share one session description and an equal envelope; a changed session gets its own")
    func sharedSession() throws {
        let harness = try Harness()
        try harness.send("EHLO client.test\r\n" + Self.message + Self.message)
        try harness.send("EHLO other.test\r\n" + Self.message)
        let messages = harness.store.messages()
        try #require(messages.count == 3)
        #expect(messages[0].sharedSession === messages[1].sharedSession)
        #expect(messages[0].envelope == messages[1].envelope)
        #expect(messages[0].session.helo == "client.test" && messages[1].session.helo == "client.test")
        #expect(messages[2].sharedSession !== messages[1].sharedSession)
        #expect(messages[2].session.helo == "other.test")
        // Setting a session gives that message its own; the others keep theirs.
        var changed = messages[1]
        changed.session.authUser = "job7"
        #expect(changed.sharedSession !== messages[0].sharedSession && messages[0].session.authUser == nil)
    }

    @Test("an accepted attempt keeps the stored id for its reply and still reads as 250 2.0.0 Ok: queued as ID")
    func queuedReply() throws {
        let harness = try Harness()
        try harness.send("EHLO client.test\r\n" + Self.message)
        let id = try #require(harness.store.messages().first?.id)
        let delivery = try #require(harness.audit.attempts.deliveries(.init()).items.first)
        let reply = try #require(delivery.attempts.first?.reply)
        #expect(reply.keptAsQueuedID)
        #expect(reply.code == 250 && reply.enhanced == "2.0.0" && reply.text == "Ok: queued as \(id)")
        #expect(reply == Attempt.Reply(.queued(id: id)))
        let encoded = String(decoding: try JSONEncoder().encode(reply), as: UTF8.self)
        #expect(encoded.contains("\"Text\":\"Ok: queued as \(id)\""))
        // A reply that only looks alike is kept as it was.
        let other = SMTPReply(code: .ok, enhanced: EnhancedStatusCode(2, 0, 0), lines: ["Ok: queued as \(id)x"])
        #expect(!Attempt.Reply(other, queuedAs: id).keptAsQueuedID)
        #expect(Attempt.Reply(other, queuedAs: id).text == "Ok: queued as \(id)x")
    }

    @Test("message ids: 15 characters (held inline), later ones sort later, and after an earlier version's 16-character ids")
    func messageIDs() {
        let now = WallClock.nanos()
        let first = MessageIDGenerator.next(nanos: now)
        let second = MessageIDGenerator.next(nanos: now)
        let later = MessageIDGenerator.next(nanos: now + 1_000_000)
        #expect(first.utf8.count == 15 && first < second && second < later)
        // An earlier version wrote the same instant and counter with a tenth, leading 0 digit.
        #expect("0" + later < first)
    }
}
