import CSwallowSystem
import NIOCore

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// An accepted TCP connection served on a `SocketLoop`, as a NIO `Channel`: the same pipeline
/// and handlers as on NIO's own sockets (NIOSSL's included), without NIO's per-connection
/// machinery (bootstrap futures, registration state, pending-writes manager). Touched only on
/// its loop.
///
/// What it does as NIO's socket channels do: reads only when a read was asked for (`read0`, which
/// `autoRead` asks for after every read pass), up to `maxMessagesPerRead` reads a pass into
/// buffers sized by the `recvAllocator`; writes what was flushed, keeping the rest until the
/// socket is writable; closes on end of input (no half-closure) and on errors.
/// What it leaves out: write watermarks (`isWritable` is always true; the sink's handlers write
/// replies a read at a time and never wait on writability), options other than `autoRead`,
/// `recvAllocator`, `maxMessagesPerRead` and socket options (`operationUnsupported`), and
/// closing only the input.
///
/// A handler that is the only one in the pipeline may take the channel's events directly
/// (`direct`): reads, read completions and read requests are then calls to it rather than
/// passes through the pipeline, and it writes with `send` and asks for reads with
/// `read0`. The pipeline still carries everything else (activation, errors, closing).
public final class LoopChannel: Channel, ChannelCore, LoopSocket, LoopDeferred, @unchecked Sendable {
    public let loop: SocketLoop
    private let fd: Int32
    // `@exclusivity(unchecked)`: the channel's state is touched on its loop only, one call at
    // a time, so the run-time check of each access (a thread-local lookup and a set insert
    // per access, ~1% of the sink's time in `perf record` without cross-module optimization)
    // guards nothing. The compiler's static checks still apply.
    @exclusivity(unchecked) private var slot = 0
    @exclusivity(unchecked) private var _pipeline: ChannelPipeline!
    private let closePromise: EventLoopPromise<Void>
    public let localAddress: SocketAddress?
    public let remoteAddress: SocketAddress?
    public let allocator: ByteBufferAllocator

    @exclusivity(unchecked) private var isOpen = true
    /// A read was asked for and not done yet.
    @exclusivity(unchecked) private var readRequested = false
    /// The socket may hold input (an edge seen, no short read or `EAGAIN` since).
    @exclusivity(unchecked) private var mayRead = false
    /// A read pass is queued on the loop.
    @exclusivity(unchecked) private var readQueued = false
    @exclusivity(unchecked) private var autoRead = true
    @exclusivity(unchecked) private var maxMessagesPerRead = 4
    /// The read sizes: NIO's adaptive allocator, held as itself (as an `any
    /// RecvByteBufferAllocator` it lived in a box, projected and made unique at each read),
    /// or any other one set with `recvAllocator`.
    @exclusivity(unchecked) private var adaptiveSizes: AdaptiveRecvByteBufferAllocator? = AdaptiveRecvByteBufferAllocator()
    @exclusivity(unchecked) private var otherSizes: (any RecvByteBufferAllocator)?
    /// The buffer of the last read, read into again when nothing else holds it any more.
    @exclusivity(unchecked) private var readBuffer: ByteBuffer?
    /// Written and not yet taken by the socket; the first `flushed` of them are due.
    @exclusivity(unchecked) private var unsent = CircularBuffer<(ByteBuffer, EventLoopPromise<Void>?)>(initialCapacity: 4)
    @exclusivity(unchecked) private var flushed = 0
    @exclusivity(unchecked) private var waitingForWritable = false
    /// The handler that takes reads directly, when it is the pipeline's only one; `nil` puts
    /// the pipeline back in charge (a handler added in front of it must see the bytes). Dropped
    /// when the channel closes.
    @exclusivity(unchecked) public var direct: (any LoopChannelDirect)?

    /// Wraps `fd` (connected, non-blocking). Call `start` once handlers are added.
    public init(
        fd: Int32, loop: SocketLoop, local: SocketAddress?, remote: SocketAddress?,
        allocator: ByteBufferAllocator = ByteBufferAllocator()
    ) {
        self.fd = fd
        self.loop = loop
        self.localAddress = local
        self.remoteAddress = remote
        self.allocator = allocator
        self.closePromise = loop.makePromise()
        self._pipeline = ChannelPipeline(channel: self)
    }

    /// Registers with the loop and makes the channel active (registered, active, a first read).
    public func start() throws {
        slot = try loop.register(self, fd: fd)
        mayRead = true
        let pipeline = _pipeline.syncOperations
        pipeline.fireChannelRegistered()
        pipeline.fireChannelActive()
        if autoRead, isOpen { askForRead() }
    }

    // MARK: Channel

    public var pipeline: ChannelPipeline { _pipeline }
    public var closeFuture: EventLoopFuture<Void> { closePromise.futureResult }
    public var parent: (any Channel)? { nil }
    public var isWritable: Bool { true }
    public var isActive: Bool { isOpen }
    public var _channelCore: any ChannelCore { self }
    public var eventLoop: any EventLoop { loop }
    public var syncOptions: (any NIOSynchronousChannelOptions)? { SynchronousOptions(channel: self) }

    public func setOption<Option: ChannelOption>(_ option: Option, value: Option.Value) -> EventLoopFuture<Void> {
        guard loop.inEventLoop else {
            return loop.submit { try self.setOption0(option, value: value) }
        }
        return loop.makeCompletedFuture { try setOption0(option, value: value) }
    }

    public func getOption<Option: ChannelOption>(_ option: Option) -> EventLoopFuture<Option.Value> {
        guard loop.inEventLoop else {
            return loop.submit { try self.getOption0(option) }
        }
        return loop.makeCompletedFuture { try getOption0(option) }
    }

    struct SynchronousOptions: NIOSynchronousChannelOptions {
        let channel: LoopChannel
        func setOption<Option: ChannelOption>(_ option: Option, value: Option.Value) throws {
            try channel.setOption0(option, value: value)
        }
        func getOption<Option: ChannelOption>(_ option: Option) throws -> Option.Value {
            try channel.getOption0(option)
        }
    }

    private func setOption0<Option: ChannelOption>(_ option: Option, value: Option.Value) throws {
        loop.preconditionInEventLoop()
        switch option {
        case is ChannelOptions.Types.AutoReadOption:
            let on = value as! Bool
            let was = autoRead
            autoRead = on
            if on, !was, isOpen { read0() }
        case is ChannelOptions.Types.RecvAllocatorOption:
            let sizes = value as! any RecvByteBufferAllocator
            if let adaptive = sizes as? AdaptiveRecvByteBufferAllocator {
                (adaptiveSizes, otherSizes) = (adaptive, nil)
            } else {
                (adaptiveSizes, otherSizes) = (nil, sizes)
            }
        case is ChannelOptions.Types.MaxMessagesPerReadOption:
            maxMessagesPerRead = Int(value as! UInt)
        case let option as ChannelOptions.Types.SocketOption:
            var number = value as! SocketOptionValue
            let result = setsockopt(
                fd, option.optionLevel.rawValue, option.optionName.rawValue, &number, socklen_t(MemoryLayout<SocketOptionValue>.size))
            guard result == 0 else { throw SocketError(operation: "setsockopt", code: errno) }
        default:
            throw ChannelError.operationUnsupported
        }
    }

    private func getOption0<Option: ChannelOption>(_ option: Option) throws -> Option.Value {
        loop.preconditionInEventLoop()
        switch option {
        case is ChannelOptions.Types.AutoReadOption:
            return autoRead as! Option.Value
        case is ChannelOptions.Types.RecvAllocatorOption:
            return (adaptiveSizes.map { $0 as any RecvByteBufferAllocator } ?? otherSizes!) as! Option.Value
        case is ChannelOptions.Types.MaxMessagesPerReadOption:
            return UInt(maxMessagesPerRead) as! Option.Value
        case let option as ChannelOptions.Types.SocketOption:
            var number: SocketOptionValue = 0
            var length = socklen_t(MemoryLayout<SocketOptionValue>.size)
            guard getsockopt(fd, option.optionLevel.rawValue, option.optionName.rawValue, &number, &length) == 0 else {
                throw SocketError(operation: "getsockopt", code: errno)
            }
            return number as! Option.Value
        default:
            throw ChannelError.operationUnsupported
        }
    }

    // MARK: ChannelCore

    public func localAddress0() throws -> SocketAddress {
        guard let localAddress else { throw ChannelError.operationUnsupported }
        return localAddress
    }

    public func remoteAddress0() throws -> SocketAddress {
        guard let remoteAddress else { throw ChannelError.operationUnsupported }
        return remoteAddress
    }

    public func register0(promise: EventLoopPromise<Void>?) {
        promise?.succeed(())
    }

    public func registerAlreadyConfigured0(promise: EventLoopPromise<Void>?) {
        promise?.succeed(())
    }

    public func bind0(to: SocketAddress, promise: EventLoopPromise<Void>?) {
        promise?.fail(ChannelError.operationUnsupported)
    }

    public func connect0(to: SocketAddress, promise: EventLoopPromise<Void>?) {
        promise?.fail(ChannelError.operationUnsupported)
    }

    public func write0(_ data: NIOAny, promise: EventLoopPromise<Void>?) {
        guard isOpen else {
            promise?.fail(ChannelError.ioOnClosedChannel)
            return
        }
        unsent.append((unwrapData(data, as: ByteBuffer.self), promise))
    }

    public func flush0() {
        guard isOpen else { return }
        flushed = unsent.count
        if !waitingForWritable { writeFlushed() }
    }

    public func read0() {
        guard isOpen else { return }
        readRequested = true
        if mayRead, !readQueued {
            readQueued = true
            loop.later(self, step: Self.queuedRead)
        }
    }

    public func close0(error: any Error, mode: CloseMode, promise: EventLoopPromise<Void>?) {
        guard isOpen else {
            promise?.fail(ChannelError.alreadyClosed)
            return
        }
        switch mode {
        case .output:
            _ = shutdown(fd, Int32(SHUT_WR))
            promise?.succeed(())
            return
        case .input:
            promise?.fail(ChannelError.operationUnsupported)
            return
        case .all:
            break
        }
        isOpen = false
        direct = nil
        readBuffer = nil
        if slot != 0 { loop.release(slot: slot) }
        _ = systemClose(fd)
        if !unsent.isEmpty {
            let failed = unsent
            unsent.removeAll()
            for (_, pending) in failed { pending?.fail(ChannelError.ioOnClosedChannel) }
        }
        flushed = 0
        promise?.succeed(())
        _pipeline.syncOperations.fireChannelInactive()
        _pipeline.syncOperations.fireChannelUnregistered()
        loop.later(self, step: Self.closed)
    }

    public func triggerUserOutboundEvent0(_ event: Any, promise: EventLoopPromise<Void>?) {
        promise?.fail(ChannelError.operationUnsupported)
    }

    public func channelRead0(_ data: NIOAny) {}

    public func errorCaught0(error: any Error) {}

    // MARK: LoopSocket

    public func handle(_ flags: UInt32) {
        guard isOpen else { return }
        if flags & UInt32(SWALLOW_POLL_READABLE | SWALLOW_POLL_HANGUP) != 0 {
            mayRead = true
            if readRequested { readPass() }
        }
        if isOpen, waitingForWritable, flags & UInt32(SWALLOW_POLL_WRITABLE) != 0 {
            waitingForWritable = false
            writeFlushed()
        }
    }

    public func close() {
        guard isOpen else { return }
        close0(error: ChannelError.eof, mode: .all, promise: nil)
    }

    private static let queuedRead = 0
    private static let closed = 1

    /// The steps `read0` and `close0` leave for later in the loop's turn.
    public func loopDeferred(_ step: Int) {
        if step == Self.queuedRead {
            readQueued = false
            if readRequested, mayRead, isOpen { readPass() }
        } else {
            removeHandlers(pipeline: _pipeline)
            closePromise.succeed(())
        }
    }

    // MARK: Reading and writing

    /// Up to `maxMessagesPerRead` reads, then `channelReadComplete` and, with `autoRead`, the
    /// next read asked for.
    private func readPass() {
        readRequested = false
        let pipeline = _pipeline.syncOperations
        var readSome = false
        for _ in 0..<max(maxMessagesPerRead, 1) {
            var result = 0
            var code: Int32 = 0
            let size = adaptiveSizes?.nextBufferSize() ?? otherSizes?.nextBufferSize() ?? 2048
            // The last read's buffer again when the handler kept no part of it (no copy on
            // write), else a new one.
            let reused = readBuffer?.modifyIfUniquelyOwned { buffer in buffer.clear(minimumCapacity: size) } != nil
            if !reused { readBuffer = adaptiveSizes?.buffer(allocator: allocator) ?? otherSizes!.buffer(allocator: allocator) }
            readBuffer!.writeWithUnsafeMutableBytes(minimumWritableBytes: 0) { space in
                result = systemRead(fd, space.baseAddress, space.count)
                if result < 0 { code = errno }
                return max(result, 0)
            }
            let buffer = readBuffer!
            if result > 0 {
                if adaptiveSizes != nil {
                    _ = adaptiveSizes!.record(actualReadBytes: result)
                } else {
                    _ = otherSizes!.record(actualReadBytes: result)
                }
                readSome = true
                let full = result == buffer.capacity
                if let direct { direct.loopChannelRead(buffer) } else { pipeline.fireChannelRead(NIOAny(buffer)) }
                guard isOpen else { return }
                if !full {
                    mayRead = false
                    break
                }
            } else if result == 0 {
                mayRead = false
                if readSome { readComplete() }
                return close0(error: ChannelError.eof, mode: .all, promise: nil)
            } else if code == EAGAIN || code == EWOULDBLOCK {
                mayRead = false
                break
            } else if code == EINTR {
                continue
            } else {
                mayRead = false
                pipeline.fireErrorCaught(SocketError(operation: "read", code: code))
                if isOpen { close0(error: ChannelError.eof, mode: .all, promise: nil) }
                return
            }
        }
        if readSome { readComplete() }
        if isOpen, autoRead { askForRead() }
    }

    private func readComplete() {
        if let direct { direct.loopChannelReadComplete() } else { _pipeline.syncOperations.fireChannelReadComplete() }
    }

    /// The pipeline's `read()`, through the direct handler when there is one.
    private func askForRead() {
        if let direct { direct.loopChannelWantsRead() } else { _pipeline.syncOperations.read() }
    }

    /// Writes `buffer` and sends it with what was written before: the pipeline's `write` and
    /// `flush` for the direct handler.
    public func send(_ buffer: ByteBuffer) {
        guard isOpen else { return }
        // Nothing waiting before it: sent at once, kept only for what the socket did not take
        // (through the queue, each reply was an append and a removal, a retain and a release).
        if unsent.isEmpty, !waitingForWritable {
            let written = buffer.withUnsafeReadableBytes { bytes in swallow_send(fd, bytes.baseAddress, UInt(bytes.count)) }
            if written == buffer.readableBytes { return }
            var rest = buffer
            if written > 0 { rest.moveReaderIndex(forwardBy: written) }
            // The rest, or an error (`EAGAIN` included), as `writeFlushed` handles it.
            unsent.append((rest, nil))
            return flush0()
        }
        unsent.append((buffer, nil))
        flush0()
    }

    /// Writes the flushed buffers, in one system call when it takes them all.
    private func writeFlushed() {
        while flushed > 0, isOpen {
            var written = 0
            var code: Int32 = 0
            if flushed == 1 || unsent[unsent.startIndex].0.readableBytes >= 65_536 {
                written = unsent[unsent.startIndex].0.withUnsafeReadableBytes { bytes in
                    swallow_send(fd, bytes.baseAddress, UInt(bytes.count))
                }
            } else {
                written = writeVector()
            }
            if written < 0 {
                code = errno
                if code == EAGAIN || code == EWOULDBLOCK {
                    waitingForWritable = true
                    return
                }
                if code == EINTR { continue }
                _pipeline.syncOperations.fireErrorCaught(SocketError(operation: "write", code: code))
                if isOpen { close0(error: ChannelError.eof, mode: .all, promise: nil) }
                return
            }
            var left = written
            while left > 0, flushed > 0 {
                let size = unsent[unsent.startIndex].0.readableBytes
                if left >= size {
                    left -= size
                    let (_, promise) = unsent.removeFirst()
                    flushed -= 1
                    promise?.succeed(())
                } else {
                    unsent[unsent.startIndex].0.moveReaderIndex(forwardBy: left)
                    left = 0
                }
            }
            // Empty buffers are done once reached.
            while flushed > 0, unsent[unsent.startIndex].0.readableBytes == 0 {
                let (_, promise) = unsent.removeFirst()
                flushed -= 1
                promise?.succeed(())
            }
        }
    }

    private func writeVector() -> Int {
        let count = min(flushed, 64)
        return withUnsafeTemporaryAllocation(of: iovec.self, capacity: count) { vectors in
            var index = unsent.startIndex
            for slot in 0..<count {
                unsent[index].0.withUnsafeReadableBytes { bytes in
                    vectors[slot] = iovec(iov_base: UnsafeMutableRawPointer(mutating: bytes.baseAddress), iov_len: bytes.count)
                }
                index = unsent.index(after: index)
            }
            var message = msghdr()
            message.msg_iov = vectors.baseAddress
            message.msg_iovlen = numericCast(count)
            return sendmsg(fd, &message, Int32(MSG_NOSIGNAL))
        }
    }
}

/// The handler a `LoopChannel` calls directly (see `LoopChannel.direct`): the pipeline's
/// `channelRead`, `channelReadComplete` and `read` for a handler that is its only one.
public protocol LoopChannelDirect: AnyObject {
    func loopChannelRead(_ buffer: ByteBuffer)
    func loopChannelReadComplete()
    /// Reading may go on: the handler calls `read0()` on the channel when it wants more.
    func loopChannelWantsRead()
}
