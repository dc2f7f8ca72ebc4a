import MailMessage
import NIOCore
import Testing

@testable import SinkServer

@Suite struct EntryTableTests {
    static func entry(_ id: String, size: Int = 0) -> MessageStore.Entry {
        let message = CapturedMessage(
            id: id, envelope: Envelope(mailFrom: "a@example.com", recipients: [.init(address: "b@example.com")]),
            session: SessionInfo(id: "s", remoteAddress: "127.0.0.1:1", localAddress: "127.0.0.1:25", helo: "h", esmtp: true),
            timestamps: CaptureTimestamps(connectedNanos: 0, mailNanos: 0, dataStartNanos: 0, dataEndNanos: 0), size: size,
            receivedHeaderLength: 0)
        return MessageStore.Entry.make(message: message, raw: ByteBuffer(string: String(repeating: "x", count: size)))
    }

    /// Random inserts, replacements and removals (many ids share a short run in a small table,
    /// runs wrap around its end) checked against a dictionary after every step.
    @Test("lookups, inserts and removals agree with a dictionary through growth and wrap-around")
    func agreesWithDictionary() {
        var random = SystemRandomNumberGenerator()
        for round in 0..<20 {
            var table = MessageStore.EntryTable()
            var model: [String: Int] = [:]
            let universe = (0..<(20 + round * 40)).map { "M\($0)" }
            for step in 0..<3_000 {
                let id = universe.randomElement(using: &random)!
                if Int.random(in: 0..<3, using: &random) == 0 {
                    #expect(table.removeValue(forKey: id)?.message.size == model.removeValue(forKey: id))
                } else {
                    table.insert(Self.entry(id, size: step))
                    model[id] = step
                }
                #expect(table.count == model.count)
                if step % 100 == 0 || step == 2_999 {
                    for id in universe { #expect(table[id]?.message.size == model[id], "\(id) at step \(step)") }
                    #expect(Set(table.keys) == Set(model.keys))
                    #expect(table.values.count == model.count)
                }
            }
        }
    }

    @Test("an entry's raw bytes are the bytes it was made with; none without a body")
    func rawBytes() {
        let entry = Self.entry("A", size: 1_000)
        #expect(entry.rawCount == 1_000)
        #expect(entry.copyRaw(count: 1_000) == ByteBuffer(string: String(repeating: "x", count: 1_000)))
        let bodiless = MessageStore.Entry.make(message: entry.message, raw: nil)
        #expect(bodiless.rawCount == nil)
    }

    @Test("reserved room is used without growing; the table still finds every entry after")
    func reserve() {
        var table = MessageStore.EntryTable()
        table.reserveCapacity(1_000)
        for index in 0..<1_000 { table.insert(Self.entry("R\(index)")) }
        for index in 0..<1_000 { #expect(table["R\(index)"] != nil) }
        #expect(table["R1000"] == nil)
    }
}
