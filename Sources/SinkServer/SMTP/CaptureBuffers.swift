import NIOCore

/// The buffers of messages the in-memory store has copied out, kept by one event loop for the
/// next messages its connections receive.
///
/// Why: a message's capture buffer grows as its pieces arrive and is garbage once the store has
/// copied the bytes. Allocated afresh for each message, a 200 KiB buffer on a new connection
/// grew through several sizes into memory the allocator had just handed back to the kernel:
/// ~20 page faults a message and its copies (`perf record -e page-faults -g`, 200 KiB, 20
/// sessions, a connection per message). A buffer kept here is already mapped and as large as
/// the messages that came before. Only large messages use them: a capture moves into a kept
/// buffer when it outgrows its first one past `minimumCapacity` (a 1 KiB message is one piece
/// in a buffer of its size, and kept buffers measured no faster there). Bounded: at most
/// `maximumCount` buffers, none over `maximumCapacity`, `maximumBytes` in all; a buffer still
/// shared when it comes back (a reader elsewhere) is copied on its first write, never
/// overwritten.
///
/// Confined to its event loop: only that loop's handlers take and give.
final class CaptureBuffers: @unchecked Sendable {
    static let minimumCapacity = 16 << 10
    static let maximumCount = 32
    static let maximumCapacity = 1 << 20
    static let maximumBytes = 8 << 20

    private let loop: any EventLoop
    private var kept: [ByteBuffer] = []
    private var keptBytes = 0

    init(loop: any EventLoop) {
        self.loop = loop
    }

    /// A kept buffer, empty, of at least `capacity` bytes; nil when none is kept.
    func take(capacity: Int) -> ByteBuffer? {
        loop.assertInEventLoop()
        guard var buffer = kept.popLast() else { return nil }
        keptBytes -= buffer.capacity
        // Emptied here, not when given: by now the message's other references are gone, and
        // `clear()` on a shared buffer allocates a new one.
        buffer.clear()
        buffer.reserveCapacity(capacity)
        return buffer
    }

    /// Keeps `buffer`'s memory for a later message, if there is room.
    func give(_ buffer: ByteBuffer) {
        loop.assertInEventLoop()
        let capacity = buffer.capacity
        guard capacity >= Self.minimumCapacity, capacity <= Self.maximumCapacity, kept.count < Self.maximumCount,
            keptBytes + capacity <= Self.maximumBytes
        else {
            return
        }
        kept.append(buffer)
        keptBytes += capacity
    }
}
