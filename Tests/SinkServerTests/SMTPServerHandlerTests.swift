import Logging
import MailMessage
import NIOCore
import NIOEmbedded
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
            channel = EmbeddedChannel(handler: SMTPServerHandler(context), loop: loop)
            try channel.connect(to: SocketAddress(ipAddress: "127.0.0.1", port: 25)).wait()
        }

        func send(_ text: String) throws {
            try channel.writeInbound(ByteBuffer(string: text))
        }

        /// Every reply written so far, one string per write, CRLFs kept.
        func replies() throws -> [String] {
            var replies: [String] = []
            while let buffer = try channel.readOutbound(as: ByteBuffer.self) {
                replies.append(String(buffer: buffer))
            }
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

    @Test("hang: nothing more is answered; the command-line deadline does not run while hung")
    func hang() throws {
        let harness = try Harness { $0.idleTimeout = .seconds(2) }
        _ = try harness.replies()
        try harness.send("EHLO c\r\nMAIL FROM:<a@x>\r\nRCPT TO:<hang@x>\r\nRCPT TO:<b@x>\r\nDATA\r\n")
        #expect(try harness.codes() == [250, 250])
        try harness.send("NOOP\r\nNOOP")
        harness.loop.advanceTime(by: .seconds(60))
        #expect(try harness.codes() == [])
        #expect(harness.channel.isActive)
        #expect(harness.store.messages().count == 0)
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
}
