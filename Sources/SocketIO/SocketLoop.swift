import CSwallowSystem
import Foundation
import NIOCore
import Synchronization

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// A socket of a `SocketLoop`: told what the poller saw for it, closed when the loop stops.
/// Touched only on its loop.
public protocol LoopSocket: AnyObject {
    /// The poller's news (`SWALLOW_POLL_*` bits).
    func handle(_ flags: UInt32)
    /// Closes the socket (the loop is stopping).
    func close()
}

/// An object whose deferred work the loop runs by calling it (`SocketLoop.later(_:step:)`).
public protocol LoopDeferred: AnyObject {
    func loopDeferred(_ step: Int)
}

/// Swallow's own event loop for plain TCP: one thread, an edge-triggered poller (epoll), its
/// sockets, its timers, and the `EventLoop` interface the rest uses (promises, `scheduleTask`,
/// `execute`), so code written for NIO's loops runs on it unchanged.
///
/// Why it exists: a new connection per message is the load generator's hardest case, and a
/// NIO `Channel`'s life (bootstrap, options, registration, pipeline, close) cost ~64 µs of CPU
/// a connection on this project's machine, more than smtp-source's whole work per message
/// (`perf record -g`, README "Compared with"). A connection here is a descriptor, one poller
/// registration and two small objects. TLS still goes through NIO channels (NIOSSL).
public final class SocketLoop: EventLoop, @unchecked Sendable {
    /// Whether this system has the poller (Linux); elsewhere every connection is a NIO channel.
    public static let available: Bool = {
        var waker: Int32 = -1
        let poller = swallow_poller_create(&waker)
        guard poller >= 0 else { return false }
        _ = systemClose(poller)
        _ = systemClose(waker)
        return true
    }()

    private let poller: Int32
    private let waker: Int32
    private let name: String
    /// The loop thread's `pthread_self()`, once it runs.
    private let threadID = Atomic<UInt>(0)
    /// Work handed in from other threads, and whether the loop was told about it.
    /// `finished` once the loop has stopped and closed its descriptors: work handed in then is
    /// dropped, and nothing writes to a wake-up descriptor whose number may belong to another
    /// file by then.
    private let inbox = Mutex<(tasks: [@Sendable () -> Void], woken: Bool, finished: Bool)>(([], false, false))
    /// Set with a task handed in (under the inbox's lock): the loop takes the lock for the
    /// inbox only when it is set, not at every turn.
    private let handedInTasks = Atomic<Bool>(false)
    /// Whether `now` and `wallNanos` on the loop are the reading taken as its turn began (its
    /// wait returned), shared by every socket served in the turn: the sink's loops, which read
    /// the clock ~20 times a message otherwise (`perf record`, 1 KiB messages, one session: ~4%
    /// of its user time). The load generator's loops read the clock at each call: it measures
    /// latencies with `now`, and a turn's reading is late by the work done in the turn.
    private let turnClock: Bool
    /// The clocks as the turn began, with `turnClock`.
    private var turnUptime: UInt64 = 0
    private var turnWall: Int64 = 0
    /// Work queued on the loop, run before it waits again.
    private var ready: [ReadyTask] = []
    private var running: [ReadyTask] = []

    /// Work queued on the loop: a closure, or a socket's own step (no closure made for it).
    private enum ReadyTask {
        case closure(() -> Void)
        case step(any LoopDeferred, Int)

        func run() {
            switch self {
            case .closure(let task): task()
            case .step(let object, let step): object.loopDeferred(step)
            }
        }
    }
    private var timers = TimerHeap()
    private var sockets: [(any LoopSocket)?] = [nil]
    private var freeSlots: [Int] = []
    private var slotsFreedInBatch: [Int] = []
    private var stopping = false
    private var stopped: [@Sendable () -> Void] = []
    /// One read buffer for every socket of the loop (a reply is consumed before the next read).
    public var readBuffer = ByteBuffer()

    private init(name: String, turnClock: Bool) throws {
        self.turnClock = turnClock
        var waker: Int32 = -1
        let poller = swallow_poller_create(&waker)
        guard poller >= 0 else { throw SocketError(operation: "epoll", code: errno) }
        self.poller = poller
        self.waker = waker
        self.name = name
        readBuffer = ByteBufferAllocator().buffer(capacity: Self.readSize)
    }

    public static let readSize = 65_536

    private static var currentThread: UInt {
        #if canImport(Glibc)
            UInt(pthread_self())
        #else
            UInt(bitPattern: pthread_self())
        #endif
    }

    /// `count` loops, each on a thread of its own, running until `shutdownGracefully`.
    /// `turnClock`: `now` and `wallNanos` read once a turn (see `turnClock`).
    public static func start(count: Int, name: String = "swallow-load", turnClock: Bool = false) throws -> [SocketLoop] {
        let loops = try (0..<count).map { try SocketLoop(name: "\(name)-\($0)", turnClock: turnClock) }
        for loop in loops {
            let thread = Thread { loop.run() }
            thread.name = loop.name
            thread.start()
        }
        return loops
    }

    // MARK: EventLoop

    public var inEventLoop: Bool { threadID.load(ordering: .acquiring) == Self.currentThread }

    /// With `turnClock`, on the loop, the time its turn began (what it serves in one turn
    /// shares one reading); otherwise the clock's.
    public var now: NIODeadline { turnClock && inEventLoop ? .uptimeNanoseconds(turnUptime) : .now() }

    /// The wall clock (`CLOCK_REALTIME`, nanoseconds) as for `now`.
    public var wallNanos: Int64 { turnClock && inEventLoop ? turnWall : Int64(swallow_realtime_nanos()) }

    /// The uptime for the loop's own timers: the turn's reading with `turnClock` (a wait longer
    /// than needed by at most the turn's work), the clock's otherwise.
    private var timerNow: UInt64 { turnClock ? turnUptime : NIODeadline.now().uptimeNanoseconds }

    private func startTurn() {
        guard turnClock else { return }
        turnUptime = NIODeadline.now().uptimeNanoseconds
        turnWall = Int64(swallow_realtime_nanos())
    }

    public func execute(_ task: @escaping @Sendable () -> Void) {
        if inEventLoop {
            ready.append(.closure(task))
            return
        }
        inbox.withLock { inbox in
            guard !inbox.finished else { return }
            inbox.tasks.append(task)
            handedInTasks.store(true, ordering: .releasing)
            if !inbox.woken { swallow_poller_wake(waker) }
            inbox.woken = true
        }
    }

    /// Work handed in from other threads and not yet taken (for tests).
    var handedIn: Int { inbox.withLock { $0.tasks.count } }

    /// Runs `task` on this loop after what it does now. Call on the loop.
    public func later(_ task: @escaping () -> Void) {
        ready.append(.closure(task))
    }

    /// Calls `object.loopDeferred(step)` on this loop after what it does now, in order with
    /// `later`'s tasks. Call on the loop. A connection's deferred read and its teardown use
    /// this: a closure for each was a `malloc` a connection.
    public func later(_ object: any LoopDeferred, step: Int) {
        ready.append(.step(object, step))
    }

    public func scheduleTask<T>(deadline: NIODeadline, _ task: @escaping @Sendable () throws -> T) -> Scheduled<T> {
        let promise = makePromise(of: T.self)
        let timer = Timer(deadline: deadline.uptimeNanoseconds) {
            do { promise.assumeIsolatedUnsafeUnchecked().succeed(try task()) } catch { promise.fail(error) }
        }
        if inEventLoop {
            timers.push(timer)
        } else {
            let box = UnsafeTransfer(timer)
            execute { self.timers.push(box.value) }
        }
        let box = UnsafeTransfer(timer)
        return Scheduled(promise: promise) {
            if self.inEventLoop {
                self.cancel(box.value)
            } else {
                self.execute { self.cancel(box.value) }
            }
        }
    }

    /// Marks a timer cancelled; the heap drops cancelled timers when they are most of it
    /// (a connection's reply timer is cancelled when it closes, long before it is due).
    private func cancel(_ timer: Timer) {
        guard !timer.cancelled else { return }
        timer.cancelled = true
        // What the action holds goes now, not when the heap drops the timer: a connection's
        // watchdog held its handler, its context and so the whole connection until ~1 000
        // connections later, and every connection was built in fresh memory.
        timer.action = Self.noAction
        timer.target = nil
        cancelledTimers += 1
        if cancelledTimers > 1024 && cancelledTimers * 2 > timers.count {
            timers.removeCancelled()
            cancelledTimers = 0
        }
    }

    private var cancelledTimers = 0

    // MARK: Scheduled callbacks

    /// Timers of `scheduleCallback` until they run or are cancelled, in slots reused through
    /// `freeCallbacks`. A callback's id is its slot and the slot's generation at scheduling
    /// (`callbackID`), so a cancellation after the timer ran, or after its slot was reused,
    /// finds a different generation and does nothing. (A dictionary by a counter's id, and a
    /// closure for each scheduling and cancellation, were ~4% of the sink's user time with a
    /// connection per message: a connection's watchdog is scheduled and cancelled once each.)
    private var callbacks: [(timer: Timer?, generation: UInt32)] = []
    private var freeCallbacks: [Int] = []
    /// Callbacks scheduled from other threads, by id, until they run or are cancelled.
    private var offLoopCallbacks: [UInt64: Timer] = [:]
    private let nextOffLoopID = Atomic<UInt64>(0)
    private static let offLoopBit: UInt64 = 1 << 63

    private static func callbackID(slot: Int, generation: UInt32) -> UInt64 { UInt64(generation & 0x7FFF_FFFF) << 32 | UInt64(slot) }

    /// A callback without the promise, closures and cancellation future of `scheduleTask`: a
    /// connection's watchdog is scheduled and cancelled once per connection.
    public func scheduleCallback(
        at deadline: NIODeadline, handler: some (NIOScheduledCallbackHandler & Sendable)
    ) throws -> NIOScheduledCallback {
        guard inEventLoop else {
            // From another thread: an id of its own (the high bit set), the timer added on the loop.
            let id = Self.offLoopBit | nextOffLoopID.add(1, ordering: .relaxed).oldValue
            execute { [self] in
                let timer = Timer(deadline: deadline.uptimeNanoseconds) { [unowned self] in
                    offLoopCallbacks[id] = nil
                    handler.handleScheduledCallback(eventLoop: self)
                }
                offLoopCallbacks[id] = timer
                timers.push(timer)
            }
            return NIOScheduledCallback(self, id: id)
        }
        let slot = takeCallbackSlot()
        let timer = Timer(deadline: deadline.uptimeNanoseconds) { [unowned self] in
            releaseCallback(slot: slot)
            handler.handleScheduledCallback(eventLoop: self)
        }
        return place(timer, slot: slot)
    }

    /// `target.loopDeferred(step)` at `deadline`, cancelled as `scheduleCallback`'s are: a
    /// callback without a closure (a connection's watchdog, scheduled once per connection;
    /// its closure and the handler's loop-bound box were two allocations). Call on the loop.
    public func scheduleCallback(at deadline: NIODeadline, target: any LoopDeferred, step: Int) -> NIOScheduledCallback {
        preconditionInEventLoop()
        let slot = takeCallbackSlot()
        let timer = Timer(deadline: deadline.uptimeNanoseconds, action: Self.noAction)
        timer.target = target
        timer.step = step
        timer.slot = slot
        return place(timer, slot: slot)
    }

    private static let noAction: @Sendable () -> Void = {}

    /// A free callback slot (reused, or a new one).
    private func takeCallbackSlot() -> Int {
        if let free = freeCallbacks.popLast() { return free }
        callbacks.append((nil, 0))
        return callbacks.count - 1
    }

    /// `timer` in its slot and the heap; its id names the slot's generation now.
    private func place(_ timer: Timer, slot: Int) -> NIOScheduledCallback {
        callbacks[slot].timer = timer
        timers.push(timer)
        return NIOScheduledCallback(self, id: Self.callbackID(slot: slot, generation: callbacks[slot].generation))
    }

    private func releaseCallback(slot: Int) {
        callbacks[slot].timer = nil
        callbacks[slot].generation &+= 1
        freeCallbacks.append(slot)
    }

    public func scheduleCallback(
        in amount: TimeAmount, handler: some (NIOScheduledCallbackHandler & Sendable)
    ) throws -> NIOScheduledCallback {
        try scheduleCallback(at: .now() + amount, handler: handler)
    }

    public func cancelScheduledCallback(_ scheduledCallback: NIOScheduledCallback) {
        guard let id = scheduledCallback.customCallbackID else { return }
        guard inEventLoop else { return execute { self.cancelCallback(id: id) } }
        cancelCallback(id: id)
    }

    private func cancelCallback(id: UInt64) {
        if id & Self.offLoopBit != 0 {
            if let timer = offLoopCallbacks.removeValue(forKey: id) { cancel(timer) }
            return
        }
        let slot = Int(id & 0xFFFF_FFFF)
        guard slot < callbacks.count, callbacks[slot].generation & 0x7FFF_FFFF == UInt32(id >> 32), let timer = callbacks[slot].timer else { return }
        releaseCallback(slot: slot)
        cancel(timer)
    }

    public func scheduleTask<T>(in delay: TimeAmount, _ task: @escaping @Sendable () throws -> T) -> Scheduled<T> {
        scheduleTask(deadline: .now() + delay, task)
    }

    public func preconditionInEventLoop(file: StaticString, line: UInt) {
        precondition(inEventLoop, "not on \(name)", file: file, line: line)
    }

    public func preconditionNotInEventLoop(file: StaticString, line: UInt) {
        precondition(!inEventLoop, "on \(name)", file: file, line: line)
    }

    public func shutdownGracefully(queue: DispatchQueue, _ callback: @escaping @Sendable ((any Error)?) -> Void) {
        execute {
            self.stopping = true
            self.stopped.append { queue.async { callback(nil) } }
        }
    }

    // MARK: Sockets

    /// Registers a socket; its events go to `wire.handle(_:)` until `release(slot:)`.
    public func register(_ wire: any LoopSocket, fd: Int32) throws -> Int {
        let slot: Int
        if let free = freeSlots.popLast() {
            slot = free
            sockets[slot] = wire
        } else {
            slot = sockets.count
            sockets.append(wire)
        }
        guard swallow_poller_add(poller, fd, UInt64(slot)) == 0 else {
            let code = errno
            sockets[slot] = nil
            freeSlots.append(slot)
            throw SocketError(operation: "epoll_ctl", code: code)
        }
        return slot
    }

    /// Forgets a socket (closed, so the poller dropped it); its slot is reused after the
    /// events already taken from the poller are handled.
    public func release(slot: Int) {
        sockets[slot] = nil
        slotsFreedInBatch.append(slot)
    }

    // MARK: The loop

    private func run() {
        threadID.store(Self.currentThread, ordering: .releasing)
        // Named for `top -H` and `perf` (Foundation's `Thread.name` did not reach the kernel).
        swallow_name_thread(name)
        var events = [swallow_poll_event](repeating: swallow_poll_event(), count: 64)
        startTurn()
        while true {
            runReady()
            takeInbox()
            runTimers()
            if stopping && ready.isEmpty { break }
            let timeout: Int64
            if !ready.isEmpty {
                timeout = 0
            } else if let next = timers.nextDeadline {
                let now = timerNow
                timeout = next > now ? Int64(next - now) : 0
            } else {
                timeout = -1
            }
            let count = events.withUnsafeMutableBufferPointer { buffer in
                swallow_poller_wait(poller, waker, buffer.baseAddress, Int32(buffer.count), timeout)
            }
            if count < 0 {
                let code = errno
                fatalError("\(name): epoll_wait failed: \(String(cString: strerror(code)))")
            }
            startTurn()
            for index in 0..<Int(count) {
                let event = events[index]
                let slot = Int(event.token)
                if slot == 0 {
                    inbox.withLock { $0.woken = false }
                    continue
                }
                sockets[slot]?.handle(event.flags)
            }
            if !slotsFreedInBatch.isEmpty {
                freeSlots.append(contentsOf: slotsFreedInBatch)
                slotsFreedInBatch.removeAll(keepingCapacity: true)
            }
        }
        for case let wire? in sockets { wire.close() }
        inbox.withLock { $0.finished = true }
        _ = systemClose(poller)
        _ = systemClose(waker)
        for callback in stopped { callback() }
    }

    /// The tasks run and those they add go into two arrays in turn: copied out and emptied,
    /// the one array was made again (a `malloc`) at every turn that had a task. Called only
    /// from the loop's own turn, never from a task.
    private func runReady() {
        while !ready.isEmpty {
            swap(&ready, &running)
            for task in running { task.run() }
            running.removeAll(keepingCapacity: true)
        }
    }

    private func takeInbox() {
        guard handedInTasks.load(ordering: .acquiring) else { return }
        let tasks = inbox.withLock { inbox in
            handedInTasks.store(false, ordering: .relaxed)
            defer { inbox.tasks.removeAll(keepingCapacity: true) }
            return inbox.tasks
        }
        for task in tasks { task() }
        runReady()
    }

    private func runTimers() {
        guard timers.nextDeadline != nil else { return }
        let now = timerNow
        while let timer = timers.popDue(now: now) {
            if timer.cancelled {
                cancelledTimers -= 1
            } else if let target = timer.target {
                timer.target = nil
                releaseCallback(slot: timer.slot)
                target.loopDeferred(timer.step)
            } else {
                timer.action()
            }
            runReady()
        }
    }

    /// A scheduled task; cancelled ones stay in the heap and are skipped when due.
    final class Timer {
        let deadline: UInt64
        var action: () -> Void
        /// Instead of `action`: `target.loopDeferred(step)`, the callback in `slot`.
        var target: (any LoopDeferred)?
        var step = 0
        var slot = 0
        var cancelled = false
        var order: UInt64 = 0

        init(deadline: UInt64, action: @escaping () -> Void) {
            self.deadline = deadline
            self.action = action
        }
    }

    /// A binary min-heap of timers by deadline, then by the order they were scheduled in.
    struct TimerHeap {
        private var items: [Timer] = []
        private var scheduled: UInt64 = 0

        var nextDeadline: UInt64? { items.first?.deadline }
        var count: Int { items.count }

        /// Drops the cancelled timers and restores the heap order.
        mutating func removeCancelled() {
            items.removeAll { $0.cancelled }
            var index = items.count / 2
            while index > 0 {
                index -= 1
                siftDown(from: index)
            }
        }

        private static func before(_ a: Timer, _ b: Timer) -> Bool {
            a.deadline != b.deadline ? a.deadline < b.deadline : a.order < b.order
        }

        mutating func push(_ timer: Timer) {
            scheduled += 1
            timer.order = scheduled
            items.append(timer)
            var child = items.count - 1
            while child > 0 {
                let parent = (child - 1) / 2
                guard Self.before(items[child], items[parent]) else { break }
                items.swapAt(child, parent)
                child = parent
            }
        }

        mutating func popDue(now: UInt64) -> Timer? {
            guard let first = items.first, first.deadline <= now else { return nil }
            let last = items.removeLast()
            guard !items.isEmpty else { return first }
            items[0] = last
            siftDown(from: 0)
            return first
        }

        private mutating func siftDown(from start: Int) {
            var parent = start
            while true {
                let left = parent * 2 + 1
                guard left < items.count else { break }
                var child = left
                if left + 1 < items.count && Self.before(items[left + 1], items[left]) { child = left + 1 }
                guard Self.before(items[child], items[parent]) else { break }
                items.swapAt(child, parent)
                parent = child
            }
        }
    }
}

#if canImport(Glibc)
    public func systemClose(_ fd: Int32) -> Int32 { Glibc.close(fd) }
    public func systemRead(_ fd: Int32, _ bytes: UnsafeMutableRawPointer?, _ count: Int) -> Int { Glibc.read(fd, bytes, count) }
#elseif canImport(Darwin)
    public func systemClose(_ fd: Int32) -> Int32 { Darwin.close(fd) }
    public func systemRead(_ fd: Int32, _ bytes: UnsafeMutableRawPointer?, _ count: Int) -> Int { Darwin.read(fd, bytes, count) }
#endif

/// A failed system call of the socket loop.
public struct SocketError: Error, CustomStringConvertible {
    public var operation: String
    public var code: Int32

    public init(operation: String, code: Int32) {
        self.operation = operation
        self.code = code
    }

    public var description: String { "\(operation): \(String(cString: strerror(code)))" }
}

/// Carries a value touched only on one loop across a `@Sendable` boundary.
public struct UnsafeTransfer<Value>: @unchecked Sendable {
    public let value: Value
    public init(_ value: Value) { self.value = value }
}
