import Foundation
import MailMessage
import NIOCore
import NIOPosix
import SMTPClient
import SinkServer
import SwallowConfig
import SwallowTestSupport
import Synchronization
import Testing

@testable import LoadGen
@testable import SocketIO

#if canImport(Glibc)
    import Glibc
#endif

/// A scripted SMTP server for the socket loop's edge cases: it answers every command with
/// success, writing each reply one byte at a time (so the client reads lines in pieces), or
/// says nothing at all.
final class ScriptedServer: ChannelInboundHandler, Sendable {
    typealias InboundIn = ByteBuffer
    typealias OutboundOut = ByteBuffer

    enum Script: Sendable { case byteByByte, silent }
    let script: Script
    let messages = Atomic<Int>(0)
    private let pending = Mutex<[ObjectIdentifier: (line: [UInt8], inData: Bool)]>([:])

    init(script: Script) { self.script = script }

    static func start(_ script: Script) async throws -> (ScriptedServer, any Channel) {
        let server = ScriptedServer(script: script)
        let channel = try await ServerBootstrap(group: MultiThreadedEventLoopGroup.singleton)
            .childChannelOption(.tcpOption(.tcp_nodelay), value: 1)
            .childChannelInitializer { channel in
                channel.eventLoop.makeCompletedFuture { try channel.pipeline.syncOperations.addHandler(server) }
            }
            .bind(host: "127.0.0.1", port: 0).get()
        return (server, channel)
    }

    private func reply(_ text: String, context: ChannelHandlerContext) {
        guard script == .byteByByte else { return }
        for byte in text.utf8 {
            context.write(wrapOutboundOut(ByteBuffer(bytes: [byte])), promise: nil)
            context.flush()
        }
    }

    func channelActive(context: ChannelHandlerContext) {
        reply("220 scripted\r\n", context: context)
    }

    func channelRead(context: ChannelHandlerContext, data: NIOAny) {
        let key = ObjectIdentifier(context.channel)
        var state = pending.withLock { $0[key] ?? ([], false) }
        for byte in unwrapInboundIn(data).readableBytesView {
            guard byte == UInt8(ascii: "\n") else {
                state.line.append(byte)
                continue
            }
            let line = String(decoding: state.line, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
            state.line.removeAll()
            if state.inData {
                if line == "." {
                    state.inData = false
                    messages.wrappingAdd(1, ordering: .relaxed)
                    reply("250 2.0.0 queued\r\n", context: context)
                }
                continue
            }
            let verb = line.prefix(4).uppercased()
            switch verb {
            case "EHLO": reply("250-scripted\r\n250 PIPELINING\r\n", context: context)
            case "DATA":
                state.inData = true
                reply("354 go\r\n", context: context)
            case "QUIT":
                reply("221 bye\r\n", context: context)
                context.close(promise: nil)
            default: reply("250 ok\r\n", context: context)
            }
        }
        pending.withLock { $0[key] = state }
    }
}

/// A delegate that wants nothing.
final class QuietDelegate: LoadConnectionDelegate {
    func connectionReady(_ connection: LoadConnection) {}
    func connectionFailed(_ connection: LoadConnection, _ error: SMTPClientError, times: SMTPClientConnection.PhaseTimes) {}
    func transactionEnded(_ connection: LoadConnection, _ transaction: LoadTransaction, _ outcome: SMTPClientConnection.Outcome, more: Bool) {}
    func nextTransaction(_ connection: LoadConnection) -> LoadTransaction? { nil }
    func connectionClosed(_ connection: LoadConnection) {}
}

@Suite("The load generator's socket loop", .enabled(if: SocketLoop.available, "no epoll here: every connection is a NIO channel"))
struct SocketLoopTests {
    static func scenario(count: Int, connection: String, template: String = "{from: a@x.example, to: b@x.example, subject: s, text: t}")
        -> Scenario
    {
        try! Scenario.parse(
            """
            name: socket
            count: \(count)
            arrival: {kind: closed, senders: 4}
            connection: \(connection)
            templates: {t: \(template)}
            """)
    }

    @Test("plain TCP runs on the socket loop and sends what NIO's channels send: 300 KiB messages, kept and per connection")
    func sameAsChannels() async throws {
        for perConnection in [0, 1] {
            var sizes: [[Int]] = []
            for channelsOnly in [false, true] {
                let socketLoops = Atomic<Int>(-1)
                let stored = try await LoadRunTests.withSink { sink in
                    var runner = LoadRunner(
                        scenario: Self.scenario(
                            count: 12, connection: "{pool: 4, per_connection: \(perConnection)}",
                            template: "{from: a@x.example, to: b@x.example, subject: s, text: t, size: 300KiB}"),
                        host: "127.0.0.1", port: sink.smtpAddress.port, seed: 3, runID: "same")
                    runner.nioChannelsOnly = channelsOnly
                    runner.observeSocketLoops = { socketLoops.store($0, ordering: .relaxed) }
                    let report = try await runner.run()
                    #expect(report.accepted == 12, "\(report.errors)")
                    return sink.store.messages().map(\.size).sorted()
                }
                // The socket loop ran exactly when it should have.
                #expect((socketLoops.load(ordering: .relaxed) > 0) == !channelsOnly)
                sizes.append(stored)
            }
            #expect(sizes[0].count == 12 && sizes[0].allSatisfy { $0 > 300_000 })
            #expect(sizes[0] == sizes[1])
        }
    }

    @Test("threads: the run starts as many socket loops as asked, half the cores by default")
    func threads() async throws {
        for threads in [nil, 1, 3] {
            let socketLoops = Atomic<Int>(-1)
            try await LoadRunTests.withSink { sink in
                var runner = LoadRunner(
                    scenario: Self.scenario(count: 6, connection: "{pool: 4}"), host: "127.0.0.1", port: sink.smtpAddress.port, seed: 1)
                runner.threads = threads
                runner.observeSocketLoops = { socketLoops.store($0, ordering: .relaxed) }
                let report = try await runner.run()
                #expect(report.accepted == 6)
            }
            #expect(socketLoops.load(ordering: .relaxed) == (threads ?? max(1, System.coreCount / 2)))
        }
    }

    @Test("replies written a byte at a time are read whole, pipelined and one connection per message")
    func repliesInPieces() async throws {
        let (server, channel) = try await ScriptedServer.start(.byteByByte)
        defer { channel.close(promise: nil) }
        let port = channel.localAddress!.port!
        for perConnection in [0, 1] {
            let report = try await LoadRunner(
                scenario: Self.scenario(count: 8, connection: "{pool: 2, per_connection: \(perConnection)}"),
                host: "127.0.0.1", port: port, seed: 1
            ).run()
            #expect(report.accepted == 8, "\(report.errors)")
        }
        #expect(server.messages.load(ordering: .relaxed) == 16)
    }

    @Test("a server that never answers is a timeout of the banner, not a hang")
    func silentServer() async throws {
        let (_, channel) = try await ScriptedServer.start(.silent)
        defer { channel.close(promise: nil) }
        let report = try await LoadRunner(
            scenario: Self.scenario(count: 3, connection: "{pool: 1, timeout: 200ms}"),
            host: "127.0.0.1", port: channel.localAddress!.port!, seed: 1
        ).run()
        #expect(report.accepted == 0)
        #expect(report.failed == 3)
        #expect(report.errors.keys.allSatisfy { $0.hasPrefix("banner") && $0.contains("timeout") }, "\(report.errors)")
    }

    @Test("a connect that is never answered is a connect failure after connect_timeout, not a hang, and nothing of it is kept")
    func connectTimeout() async throws {
        // A listener that never accepts, its queue filled: further SYNs are dropped, so a
        // connect stays in SYN-SENT until the client gives up.
        let listener = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        #expect(listener >= 0)
        defer { close(listener) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let port = withUnsafeMutablePointer(to: &address) { pointer in
            pointer.withMemoryRebound(to: sockaddr.self, capacity: 1) { raw -> Int in
                guard bind(listener, raw, length) == 0, listen(listener, 0) == 0, getsockname(listener, raw, &length) == 0 else { return 0 }
                return Int(UInt16(bigEndian: pointer.pointee.sin_port))
            }
        }
        #expect(port > 0)
        var fillers: [Int32] = []
        defer { for fd in fillers { close(fd) } }
        for _ in 0..<3 {
            let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_NONBLOCK.rawValue), 0)
            var target = address
            target.sin_port = in_port_t(UInt16(port).bigEndian)
            _ = withUnsafePointer(to: &target) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            fillers.append(fd)
        }
        let started = ContinuousClock.now
        let report = try await LoadRunner(
            scenario: Self.scenario(count: 2, connection: "{pool: 2, connect_timeout: 300ms}"),
            host: "127.0.0.1", port: port, seed: 1
        ).run()
        #expect(report.accepted == 0)
        #expect(report.failed == 2)
        #expect(report.errors.keys.allSatisfy { $0.hasPrefix("connect") && $0.contains("timed out") }, "\(report.errors)")
        // Not a hang: without its own timeout the kernel gives up on a SYN after about two
        // minutes. (A loaded test run has taken 11 s here, in scheduling alone.)
        #expect(ContinuousClock.now - started < .seconds(60))

        // A connection whose connect failed and its socket let go of each other (each holds the
        // other while it is open).
        let loop = try #require(try SocketLoop.start(count: 1).first)
        let released = loop.makePromise(of: Bool.self)
        loop.execute {
            let delegate = QuietDelegate()
            let setup = LoadConnection.Setup(
                helo: "t", tls: .none, tlsContext: nil, auth: nil, pipelining: true, replyTimeout: 1_000_000_000, perConnection: 0)
            var connection: LoadConnection? = LoadConnection(setup: setup, delegate: delegate, connectStarted: 0)
            weak let weakConnection = connection
            SocketWire.open(
                on: loop, to: try! SocketAddress(ipAddress: "127.0.0.1", port: port), from: nil, timeout: .milliseconds(100),
                connection: connection!
            ) { result in
                guard case .failure = result else { return released.succeed(false) }
                loop.later { released.succeed(weakConnection == nil) }
            }
            connection = nil
        }
        #expect(try await released.futureResult.get())
        try await loop.shutdownGracefully()
    }

    @Test("as an EventLoop: tasks run in deadline order, cancelled ones never, work from other threads on the loop")
    func eventLoop() async throws {
        let loop = try #require(try SocketLoop.start(count: 1).first)
        let order = Mutex<[Int]>([])
        // The loop is held while this thread schedules and cancels, so every request waits in
        // its inbox and is taken at once: on a busy machine, a deadline could pass in between.
        let (futures, cancelled) = await holding(loop) {
            let now = NIODeadline.now()
            var futures: [EventLoopFuture<Void>] = []
            for (index, delay) in [30, 10, 20].enumerated() {
                futures.append(loop.scheduleTask(deadline: now + .milliseconds(Int64(delay))) { order.withLock { $0.append(index) } }.futureResult)
            }
            let cancelled = loop.scheduleTask(in: .milliseconds(5)) { order.withLock { $0.append(99) } }
            cancelled.cancel()
            return (futures, cancelled)
        }
        let onLoop = try await loop.submit { loop.inEventLoop }.get()
        #expect(onLoop)
        #expect(!loop.inEventLoop)
        for future in futures { try await future.get() }
        #expect(throws: EventLoopError.self) { try cancelled.futureResult.wait() }
        #expect(order.withLock { $0 } == [1, 2, 0])
        try await loop.shutdownGracefully()
    }

    @Test("on the loop, now and wallNanos are the turn's reading (one for a turn, later for a later turn); elsewhere the clock's")
    func turnClock() async throws {
        let loop = try #require(try SocketLoop.start(count: 1, turnClock: true).first)
        // The wall clock in microseconds (Date's), less one for its rounding.
        let before = (NIODeadline.now(), Int64(Date().timeIntervalSince1970 * 1e6 - 1) * 1000)
        let first = try await loop.submit {
            let readings = (loop.now, loop.wallNanos)
            // Work within a turn does not move its clock.
            var spin = 0
            let started = NIODeadline.now()
            while NIODeadline.now() - started < .milliseconds(2) { spin &+= 1 }
            return (readings, (loop.now, loop.wallNanos), spin)
        }.get()
        #expect(first.0.0 == first.1.0)
        #expect(first.0.1 == first.1.1)
        #expect(first.0.0 >= before.0)
        #expect(first.0.1 >= before.1)
        let second = try await loop.submit { (loop.now, loop.wallNanos) }.get()
        #expect(second.0 >= first.0.0 + .milliseconds(2))
        #expect(second.1 >= first.0.1 + 2_000_000)
        // Off the loop: a reading of its own.
        let outside = loop.now
        #expect(outside >= second.0)
        try await loop.shutdownGracefully()
    }

    @Test("without a turn clock (the load generator's loops, which time replies with now) now moves within a turn")
    func exactClock() async throws {
        let loop = try #require(try SocketLoop.start(count: 1).first)
        let (first, second) = try await loop.submit {
            let first = loop.now
            let started = NIODeadline.now()
            while NIODeadline.now() - started < .milliseconds(2) {}
            return (first, loop.now)
        }.get()
        #expect(second >= first + .milliseconds(2))
        try await loop.shutdownGracefully()
    }

    @Test("the timer heap pops by deadline and keeps its order after cancelled timers are dropped")
    func timerHeap() {
        var heap = SocketLoop.TimerHeap()
        var generator = SystemRandomNumberGenerator()
        var timers: [SocketLoop.Timer] = []
        for _ in 0..<2000 {
            let timer = SocketLoop.Timer(deadline: UInt64.random(in: 0..<500, using: &generator)) {}
            timers.append(timer)
            heap.push(timer)
        }
        for timer in timers where Bool.random(using: &generator) { timer.cancelled = true }
        heap.removeCancelled()
        let live = timers.filter { !$0.cancelled }
        #expect(heap.count == live.count)
        var popped: [SocketLoop.Timer] = []
        while let timer = heap.popDue(now: 400) { popped.append(timer) }
        #expect(popped.map(\.deadline) == live.map(\.deadline).filter { $0 <= 400 }.sorted())
        // Equal deadlines leave in the order they were scheduled.
        for (a, b) in zip(popped, popped.dropFirst()) where a.deadline == b.deadline { #expect(a.order < b.order) }
        #expect(heap.count == live.filter { $0.deadline > 400 }.count)
    }
}
