import MailMessage
import NIOCore
import Synchronization
import Testing

@testable import SinkServer

@Suite struct MessageArenaTests {
    static func message(_ id: String, size: Int) -> CapturedMessage {
        CapturedMessage(
            id: id, envelope: Envelope(mailFrom: "a@example.com", recipients: [.init(address: "b@example.com")]),
            session: SessionInfo(id: "s", remoteAddress: "127.0.0.1:1", localAddress: "127.0.0.1:25", helo: "h", esmtp: true),
            timestamps: CaptureTimestamps(connectedNanos: 0, mailNanos: 0, dataStartNanos: 0, dataEndNanos: 0), size: size,
            receivedHeaderLength: 0)
    }

    static func bytes(_ count: Int, seed: Int) -> ByteBuffer {
        // A fill of its own per message, its first KiB a pattern: a misplaced or overlapping copy shows.
        var buffer = ByteBuffer(repeating: UInt8(truncatingIfNeeded: seed &* 7 &+ 1), count: count)
        for index in 0..<min(count, 1_024) { buffer.setInteger(UInt8(truncatingIfNeeded: index &* 31 &+ seed), at: index) }
        return buffer
    }

    @Test("every message's bytes read back exactly, whether in the arena, in its entry or across regions")
    func bytesRoundTrip() {
        let arena = MessageArena()
        let sizes =
            [0, 1_024, MessageArena.smallest - 1, MessageArena.smallest, 100_003, MessageArena.largest, MessageArena.largest + 1]
            + Array(repeating: 204_800, count: 90)  // more than two regions' worth
        let entries = sizes.enumerated().map { index, size in
            MessageStore.Entry.make(message: Self.message("M\(index)", size: size), raw: Self.bytes(size, seed: index), arena: arena)
        }
        for (index, (entry, size)) in zip(entries, sizes).enumerated() {
            #expect(entry.rawCount == size)
            #expect(entry.copyRaw(count: size) == Self.bytes(size, seed: index), "message \(index), \(size) bytes")
            let inArena = size >= MessageArena.smallest && size <= MessageArena.largest
            #expect(entry.placedInArena == inArena, "message \(index), \(size) bytes")
        }
    }

    @Test("a region is unmapped once the arena moved on and its messages are gone, not before")
    func regionLifetime() {
        let arena = MessageArena()
        weak var first: MessageArena.Region?
        var held: [MessageStore.Entry] = []
        for index in 0..<3 {
            let entry = MessageStore.Entry.make(
                message: Self.message("M\(index)", size: 300_000), raw: Self.bytes(300_000, seed: index), arena: arena)
            if index == 0 { first = entry.arenaRegion }
            held.append(entry)
        }
        // Fill the first region so the arena moves to another.
        let perRegion = MessageArena.regionSize / 300_000
        for _ in 0..<perRegion { _ = arena.allocate(300_000) }
        #expect(first != nil, "messages still in it")
        #expect(held[2].copyRaw(count: 300_000) == Self.bytes(300_000, seed: 2))
        held.removeAll()
        #expect(first == nil)
    }

    @Test("the store keeps a large message's bytes in its arena and serves them")
    func storeServesArenaBytes() async throws {
        let store = MessageStore(maxMessages: 10)
        let raw = Self.bytes(204_800, seed: 5)
        store.insertNow(Self.message("BIG", size: 204_800), raw: raw)
        #expect(try await store.raw(id: "BIG") == raw)
        #expect(store.state.withLock { $0.entries["BIG"]?.placedInArena } == true)
    }
}
