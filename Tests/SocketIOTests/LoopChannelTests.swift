import NIOCore
import SwallowTestSupport
import Synchronization
import Testing

@testable import SocketIO

#if canImport(Glibc)
    import Glibc
#endif

/// `LoopChannel` and `LoopListener` over real loopback sockets, with a blocking client on the
/// test's thread: what NIO's socket channels promise a pipeline (reads only when asked, in
/// pieces the allocator sizes; writes in order, kept until the peer takes them; close seen on
/// both sides).
@Suite(.enabled(if: SocketLoop.available, "needs epoll"))
struct LoopChannelTests {
    /// Records what reaches the pipeline; echoes when asked to.
    final class Recorder: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = ByteBuffer
        typealias OutboundOut = ByteBuffer
        let echo: Bool
        let events = Mutex<[String]>([])
        let received = Mutex<[UInt8]>([])
        let reads = Mutex<[Int]>([])
        let inactive: EventLoopPromise<Void>
        let active: EventLoopPromise<any Channel>

        init(echo: Bool, loop: any EventLoop) {
            self.echo = echo
            inactive = loop.makePromise()
            active = loop.makePromise()
        }

        func channelActive(context: ChannelHandlerContext) {
            events.withLock { $0.append("active") }
            active.succeed(context.channel)
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let buffer = unwrapInboundIn(data)
            received.withLock { $0 += Array(buffer.readableBytesView) }
            reads.withLock { $0.append(buffer.readableBytes) }
            if echo { context.write(data, promise: nil) }
        }

        func channelReadComplete(context: ChannelHandlerContext) {
            if echo { context.flush() }
        }

        func channelInactive(context: ChannelHandlerContext) {
            events.withLock { $0.append("inactive") }
            inactive.succeed(())
        }
    }

    /// A blocking TCP client.
    struct Client {
        let fd: Int32

        init(port: Int) throws {
            fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var address = sockaddr_in()
            address.sin_family = sa_family_t(AF_INET)
            address.sin_port = in_port_t(UInt16(port).bigEndian)
            address.sin_addr.s_addr = inet_addr("127.0.0.1")
            let result = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            try #require(result == 0)
        }

        func send(_ bytes: [UInt8]) {
            var offset = 0
            while offset < bytes.count {
                let sent = bytes[offset...].withUnsafeBytes { Glibc.send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
                guard sent > 0 else { return }
                offset += sent
            }
        }

        /// Reads until `count` bytes or end of input.
        func receive(_ count: Int) -> [UInt8] {
            var bytes: [UInt8] = []
            var chunk = [UInt8](repeating: 0, count: 65_536)
            while bytes.count < count {
                let got = chunk.withUnsafeMutableBytes { recv(fd, $0.baseAddress, min($0.count, count - bytes.count), 0) }
                guard got > 0 else { break }
                bytes += chunk[..<got]
            }
            return bytes
        }

        func close() { _ = Glibc.close(fd) }
    }

    static func listen(
        loops: [SocketLoop], _ configure: @escaping @Sendable (LoopChannel) throws -> Void
    ) async throws -> LoopListener {
        try await LoopListener.bind(try SocketAddress(ipAddress: "127.0.0.1", port: 0), loops: loops, initializer: configure)
    }

    /// A listener on `loop` whose connections each get a non-echoing `Recorder` (after
    /// `configure`), handed out in the order they were accepted.
    static func recording(
        on loop: SocketLoop, _ configure: @escaping @Sendable (LoopChannel) throws -> Void = { _ in }
    ) async throws -> (LoopListener, AsyncStream<Recorder>.AsyncIterator) {
        let (accepted, next) = AsyncStream.makeStream(of: Recorder.self)
        let listener = try await listen(loops: [loop]) { channel in
            let made = Recorder(echo: false, loop: channel.eventLoop)
            try configure(channel)
            next.yield(made)
            try channel.pipeline.syncOperations.addHandler(made)
        }
        return (listener, accepted.makeAsyncIterator())
    }

    @Test("accepted connections echo through the pipeline, know both addresses, and close on end of input")
    func echoAndClose() async throws {
        let loops = try SocketLoop.start(count: 2, name: "test-echo")
        defer { for loop in loops { loop.shutdownGracefully { _ in } } }
        let recorders = Mutex<[Recorder]>([])
        let listener = try await Self.listen(loops: loops) { channel in
            let recorder = Recorder(echo: true, loop: channel.eventLoop)
            recorders.withLock { $0.append(recorder) }
            try channel.pipeline.syncOperations.addHandler(recorder)
        }
        defer { listener.stop() }
        let port = try #require(listener.localAddress.port)
        for round in 0..<4 {
            let client = try Client(port: port)
            let message = Array("hello \(round)\r\n".utf8)
            client.send(message)
            #expect(client.receive(message.count) == message)
            client.close()
        }
        let all = recorders.withLock { $0 }
        #expect(all.count == 4)
        for recorder in all {
            let channel = try await recorder.active.futureResult.get()
            #expect(channel.remoteAddress?.ipAddress == "127.0.0.1")
            #expect(channel.localAddress?.port == port)
            try await recorder.inactive.futureResult.get()
            try await channel.closeFuture.get()
            #expect(recorder.events.withLock { $0 } == ["active", "inactive"])
        }
        // Connections went to both loops in turn.
        #expect(Set(all.map { ObjectIdentifier(try! $0.active.futureResult.wait().eventLoop as AnyObject) }).count == 2)
    }

    @Test("a write larger than the socket takes is kept until the peer reads, in order, and its promise waits for it")
    func backpressure() async throws {
        let loops = try SocketLoop.start(count: 1, name: "test-write")
        defer { for loop in loops { loop.shutdownGracefully { _ in } } }
        var (listener, recorders) = try await Self.recording(on: loops[0])
        defer { listener.stop() }
        let client = try Client(port: try #require(listener.localAddress.port))
        defer { client.close() }
        client.send([1])
        let channel = try await #require(await recorders.next()).active.futureResult.get()
        let size = 16 * 1024 * 1024
        let pieces = (1...4).map { piece in [UInt8](repeating: UInt8(piece), count: size / 4) }
        let written = try await channel.eventLoop.submit {
            for piece in pieces.dropLast() { channel.write(ByteBuffer(bytes: piece), promise: nil) }
            return channel.writeAndFlush(ByteBuffer(bytes: pieces.last!))
        }.get()
        // The client has read nothing: 16 MiB cannot all be in the sockets' buffers.
        let done = Mutex(false)
        written.whenComplete { _ in done.withLock { $0 = true } }
        try await channel.eventLoop.submit {}.get()
        #expect(!done.withLock { $0 })
        let received = client.receive(size)
        #expect(received == pieces.flatMap { $0 })
        try await written.get()
    }

    @Test("reads happen only when asked for with autoRead off, in pieces the allocator sizes")
    func readsOnRequest() async throws {
        let loops = try SocketLoop.start(count: 1, name: "test-read")
        defer { for loop in loops { loop.shutdownGracefully { _ in } } }
        var (listener, recorders) = try await Self.recording(on: loops[0]) { channel in
            try channel.syncOptions!.setOption(.autoRead, value: false)
            try channel.syncOptions!.setOption(.recvAllocator, value: FixedSizeRecvByteBufferAllocator(capacity: 16))
            try channel.syncOptions!.setOption(.maxMessagesPerRead, value: 1)
        }
        defer { listener.stop() }
        let client = try Client(port: try #require(listener.localAddress.port))
        defer { client.close() }
        client.send([UInt8](repeating: 65, count: 40))
        let made = try #require(await recorders.next())
        let channel = try await made.active.futureResult.get()
        // The bytes were in the socket when `send` returned; after two turns of the loop its
        // poller has reported them, and anything read unasked would have been read.
        try await channel.eventLoop.submit {}.get()
        try await channel.eventLoop.submit {}.get()
        #expect(made.reads.withLock { $0 }.isEmpty)
        for expected in [[16], [16, 16], [16, 16, 8]] {
            try await channel.eventLoop.submit { channel.read() }.get()
            try await channel.eventLoop.submit {}.get()
            #expect(made.reads.withLock { $0 } == expected)
        }
        #expect(made.received.withLock { $0 } == [UInt8](repeating: 65, count: 40))
    }

    /// Keeps every other buffer it is given, and answers each read with one byte.
    final class Keeper: ChannelInboundHandler, @unchecked Sendable {
        typealias InboundIn = ByteBuffer
        typealias OutboundOut = ByteBuffer
        let kept = Mutex<[ByteBuffer]>([])
        let addresses = Mutex<[UInt]>([])

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let buffer = unwrapInboundIn(data)
            let count = addresses.withLock { addresses in
                addresses.append(buffer.withUnsafeReadableBytes { UInt(bitPattern: $0.baseAddress) })
                return addresses.count
            }
            if count % 2 == 1 { kept.withLock { $0.append(buffer) } }
            context.writeAndFlush(wrapOutboundOut(ByteBuffer(bytes: [UInt8(count)])), promise: nil)
        }
    }

    @Test("a read buffer the pipeline let go of is read into again; one it keeps is never written over")
    func readBufferReuse() async throws {
        let loops = try SocketLoop.start(count: 1, name: "test-reuse")
        defer { for loop in loops { loop.shutdownGracefully { _ in } } }
        let keeper = Keeper()
        let listener = try await Self.listen(loops: loops) { channel in try channel.pipeline.syncOperations.addHandler(keeper) }
        defer { listener.stop() }
        let client = try Client(port: try #require(listener.localAddress.port))
        defer { client.close() }
        let pieces = (0..<8).map { piece in [UInt8](repeating: UInt8(65 + piece), count: 100 + piece) }
        for (index, piece) in pieces.enumerated() {
            client.send(piece)
            // Each piece is read (and answered) before the next is sent: one read each.
            #expect(client.receive(1) == [UInt8(index + 1)])
        }
        let kept = keeper.kept.withLock { $0 }
        #expect(kept.map { Array($0.readableBytesView) } == stride(from: 0, to: 8, by: 2).map { pieces[$0] })
        let addresses = keeper.addresses.withLock { $0 }
        try #require(addresses.count == 8)
        for index in 0..<7 {
            if index % 2 == 0 {
                #expect(addresses[index + 1] != addresses[index], "read \(index + 1) went into a kept buffer")
            } else {
                #expect(addresses[index + 1] == addresses[index], "read \(index + 1) did not reuse the buffer let go of")
            }
        }
    }

    @Test("closing from another thread closes the socket: the client reads end of input")
    func closeFromAnotherThread() async throws {
        let loops = try SocketLoop.start(count: 1, name: "test-close")
        defer { for loop in loops { loop.shutdownGracefully { _ in } } }
        var (listener, recorders) = try await Self.recording(on: loops[0])
        let client = try Client(port: try #require(listener.localAddress.port))
        defer { client.close() }
        let made = try #require(await recorders.next())
        let channel = try await made.active.futureResult.get()
        try await channel.close()
        #expect(client.receive(1) == [])
        try await made.inactive.futureResult.get()
        await #expect(throws: ChannelError.self) { try await channel.close() }
        listener.stop()
        try await listener.closeFuture.get()
    }

    /// Echoes what it is given, recording whether it came directly or through the pipeline.
    final class DirectEcho: ChannelInboundHandler, LoopChannelDirect, @unchecked Sendable {
        typealias InboundIn = ByteBuffer
        typealias OutboundOut = ByteBuffer
        let events = Mutex<[String]>([])
        let active: EventLoopPromise<LoopChannel>
        let inactive: EventLoopPromise<Void>
        var channel: LoopChannel?

        init(loop: any EventLoop) {
            active = loop.makePromise()
            inactive = loop.makePromise()
        }

        func channelActive(context: ChannelHandlerContext) {
            let channel = context.channel as! LoopChannel
            self.channel = channel
            channel.direct = self
            active.succeed(channel)
        }

        func channelRead(context: ChannelHandlerContext, data: NIOAny) {
            let buffer = unwrapInboundIn(data)
            events.withLock { $0.append("pipeline \(String(buffer: buffer))") }
            context.write(data, promise: nil)
        }

        func channelReadComplete(context: ChannelHandlerContext) { context.flush() }

        func channelInactive(context: ChannelHandlerContext) { inactive.succeed(()) }

        func loopChannelRead(_ buffer: ByteBuffer) {
            events.withLock { $0.append("direct \(String(buffer: buffer))") }
            channel?.send(buffer)
        }

        func loopChannelReadComplete() { events.withLock { $0.append("direct complete") } }

        func loopChannelWantsRead() { channel?.read0() }
    }

    @Test("a direct handler gets reads, completions and read requests without the pipeline, until it hands them back")
    func directHandler() async throws {
        let loops = try SocketLoop.start(count: 1, name: "test-direct")
        defer { for loop in loops { loop.shutdownGracefully { _ in } } }
        let (made, next) = AsyncStream.makeStream(of: DirectEcho.self)
        let listener = try await Self.listen(loops: loops) { channel in
            let handler = DirectEcho(loop: channel.eventLoop)
            next.yield(handler)
            try channel.pipeline.syncOperations.addHandler(handler)
        }
        defer { listener.stop() }
        var handlers = made.makeAsyncIterator()
        let client = try Client(port: try #require(listener.localAddress.port))
        client.send(Array("abc".utf8))
        #expect(client.receive(3) == Array("abc".utf8))
        let handler = try #require(await handlers.next())
        let channel = try await handler.active.futureResult.get()
        #expect(handler.events.withLock { $0 } == ["direct abc", "direct complete"])
        try await channel.eventLoop.submit { channel.direct = nil }.get()
        client.send(Array("de".utf8))
        #expect(client.receive(2) == Array("de".utf8))
        #expect(handler.events.withLock { $0 } == ["direct abc", "direct complete", "pipeline de"])
        try await channel.eventLoop.submit { channel.direct = handler }.get()
        client.close()
        try await handler.inactive.futureResult.get()
        // Closing drops the handler (no cycle through the channel).
        #expect(try await channel.eventLoop.submit { channel.direct == nil }.get())
    }

    final class Fired: Sendable {
        let names = Mutex<[String]>([])
    }

    struct Recording: NIOScheduledCallbackHandler, Sendable {
        let name: String
        let fired: Fired
        let done: EventLoopPromise<Void>?

        func handleScheduledCallback(eventLoop: some EventLoop) {
            fired.names.withLock { $0.append(name) }
            done?.succeed(())
        }
    }

    @Test("scheduled callbacks run in deadline order; a cancelled one never runs")
    func scheduledCallbacks() async throws {
        let loops = try SocketLoop.start(count: 1, name: "test-timers")
        defer { for loop in loops { loop.shutdownGracefully { _ in } } }
        let loop = loops[0]
        let fired = Fired()
        let last = loop.makePromise(of: Void.self)
        let now = NIODeadline.now()
        try await loop.submit {
            _ = try loop.scheduleCallback(at: now + .milliseconds(30), handler: Recording(name: "c", fired: fired, done: nil))
            let cancelled = try loop.scheduleCallback(at: now + .milliseconds(5), handler: Recording(name: "x", fired: fired, done: nil))
            _ = try loop.scheduleCallback(at: now + .milliseconds(10), handler: Recording(name: "b", fired: fired, done: nil))
            _ = try loop.scheduleCallback(at: now + .milliseconds(1), handler: Recording(name: "a", fired: fired, done: nil))
            cancelled.cancel()
        }.get()
        // From another thread too: with the loop held, "y" is scheduled already due and
        // cancelled, so both requests wait in the loop's inbox and are taken together.
        try await holding(loop) {
            let other = try loop.scheduleCallback(at: .now(), handler: Recording(name: "y", fired: fired, done: nil))
            other.cancel()
        }
        // Due no earlier than "y" and after "c": had "y" not been cancelled, it would run first.
        _ = try loop.scheduleCallback(
            at: max(now + .milliseconds(40), .now()), handler: Recording(name: "z", fired: fired, done: last))
        try await last.futureResult.get()
        #expect(fired.names.withLock { $0 } == ["a", "b", "c", "z"])
    }

    @Test("cancelling a callback that already ran does nothing, even to the callback that took its place", .timeLimit(.minutes(1)))
    func cancelAfterRunning() async throws {
        let loops = try SocketLoop.start(count: 1, name: "test-reuse")
        defer { for loop in loops { loop.shutdownGracefully { _ in } } }
        let loop = loops[0]
        let fired = Fired()
        let first = loop.makePromise(of: Void.self)
        let ran = try await loop.submit {
            try loop.scheduleCallback(at: .now(), handler: Recording(name: "a", fired: fired, done: first))
        }.get()
        try await first.futureResult.get()
        let second = loop.makePromise(of: Void.self)
        try await loop.submit {
            // Takes the slot "a" had; the stale handle must not cancel it.
            _ = try loop.scheduleCallback(at: .now() + .milliseconds(5), handler: Recording(name: "b", fired: fired, done: second))
            ran.cancel()
        }.get()
        try await second.futureResult.get()
        #expect(fired.names.withLock { $0 } == ["a", "b"])
    }

    @Test("a cancelled timer lets go of what its action holds at once, long before it would have been due")
    func cancelReleases() async throws {
        final class Held: Sendable {}
        let loops = try SocketLoop.start(count: 1, name: "test-release")
        defer { for loop in loops { loop.shutdownGracefully { _ in } } }
        let loop = loops[0]
        let released = try await loop.submit {
            var held: Held? = Held()
            weak let watched = held
            let scheduled = loop.scheduleTask(in: .hours(1)) { [held] in _ = held }
            held = nil
            let before = watched != nil
            scheduled.cancel()
            return (before, watched == nil)
        }.get()
        #expect(released.0)
        #expect(released.1)
    }

    /// Records the steps the loop calls it back with.
    final class Steps: LoopDeferred, @unchecked Sendable {
        var seen: [Int] = []
        let done: EventLoopPromise<Void>?
        init(done: EventLoopPromise<Void>?) { self.done = done }
        func loopDeferred(_ step: Int) {
            seen.append(step)
            if step == 3 { done?.succeed(()) }
        }
    }

    @Test("callbacks to an object run in deadline order with its steps; a cancelled one never runs and lets go of the object")
    func targetCallbacks() async throws {
        let loops = try SocketLoop.start(count: 1, name: "test-target")
        defer { for loop in loops { loop.shutdownGracefully { _ in } } }
        let loop = loops[0]
        let done = loop.makePromise(of: Void.self)
        let steps = Steps(done: done)
        let released = try await loop.submit {
            let now = NIODeadline.now()
            _ = loop.scheduleCallback(at: now + .milliseconds(30), target: steps, step: 3)
            _ = loop.scheduleCallback(at: now + .milliseconds(10), target: steps, step: 1)
            let cancelled = loop.scheduleCallback(at: now + .milliseconds(20), target: steps, step: 2)
            cancelled.cancel()
            // A cancelled callback holds its object no longer.
            var other: Steps? = Steps(done: nil)
            weak let watched = other
            let held = loop.scheduleCallback(at: now + .hours(1), target: other!, step: 9)
            other = nil
            let before = watched != nil
            held.cancel()
            return (before, watched == nil)
        }.get()
        try await done.futureResult.get()
        #expect(try await loop.submit { steps.seen }.get() == [1, 3])
        #expect(released.0)
        #expect(released.1)
    }

    @Test("work handed to a loop after it stopped is dropped (its wake-up descriptor, closed, may name another file by then)")
    func executeAfterShutdown() async throws {
        let loop = try SocketLoop.start(count: 1, name: "test-stopped")[0]
        try await loop.shutdownGracefully()
        let ran = Mutex(false)
        loop.execute { ran.withLock { $0 = true } }
        #expect(loop.handedIn == 0)
        #expect(!ran.withLock { $0 })
    }
}
