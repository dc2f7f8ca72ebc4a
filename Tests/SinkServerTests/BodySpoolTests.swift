import Foundation
import MailMessage
import NIOCore
import Synchronization
import Testing

@testable import SinkServer

/// The spool of a burst's bodies (`BodySpool`) in the disk store: reads before the files
/// exist, the files written and the spool emptied, recovery after a crash.
@Suite("Body spool")
struct BodySpoolTests {
    static func message(_ id: String) -> CapturedMessage {
        CapturedMessage(
            id: id, envelope: Envelope(mailFrom: "a@example.com", recipients: [.init(address: "b@example.com")]),
            session: SessionInfo(id: "s", remoteAddress: "127.0.0.1:1", localAddress: "127.0.0.1:25", helo: "h", esmtp: true),
            timestamps: CaptureTimestamps(connectedNanos: 0, mailNanos: 0, dataStartNanos: 0, dataEndNanos: 0), size: 0,
            receivedHeaderLength: 0)
    }

    static func directory() throws -> String {
        let directory = NSTemporaryDirectory() + "swallow-spool-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: directory + "/messages", withIntermediateDirectories: true)
        return directory
    }

    static func size(_ path: String) -> Int {
        ((try? FileManager.default.attributesOfItem(atPath: path))?[.size] as? NSNumber)?.intValue ?? -1
    }

    @Test("a spool's records read back in order; a record cut short, or its header, ends them")
    func records() {
        let bytes = Array("M1 3\nabc\nM2 0\n\nM3 2\nx\n\nM4 10\nshort".utf8)
        let records = BodySpool.records(in: bytes)
        #expect(records.map(\.id) == ["M1", "M2", "M3"])
        #expect(records.map { String(decoding: $0.body, as: UTF8.self) } == ["abc", "", "x\n"])
        #expect(BodySpool.records(in: Array("M1 3\nab".utf8)).isEmpty)
        #expect(BodySpool.records(in: Array("M1 x\nabc\n".utf8)).isEmpty)
    }

    @Test("a burst stored by its loop: bodies read back at once; drained, each has its .eml and the spool is empty")
    func burstFiled() async throws {
        let root = try Self.directory()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let written = WrittenLog()
        let disk = try DiskStore(root: root, policy: .batch) { messages, _ in
            written.add(messages.map(\.message.id))
            return true
        }
        let items = (1...3).map {
            (message: Self.message("M\($0)"), raw: ByteBuffer(string: "Subject: \($0)\r\n\r\nbody \($0)\r\n"), tags: [String]())
        }
        let result = disk.storeInline(items)
        #expect(throws: Never.self) { try result.get() }
        #expect(Self.size("\(root)/messages/spool") > 0)
        #expect(written.ids == ["M1", "M2", "M3"])
        for item in items {
            #expect(try await disk.readRaw(id: item.message.id) == item.raw)
        }
        let journal = try String(contentsOfFile: "\(root)/messages/metadata.jsonl", encoding: .utf8)
        #expect(journal.split(separator: "\n").count == 3)
        await disk.drain()
        for item in items {
            #expect(FileManager.default.contents(atPath: "\(root)/messages/\(item.message.id).eml") == Data(item.raw.readableBytesView))
            #expect(try await disk.readRaw(id: item.message.id) == item.raw)
        }
        #expect(Self.size("\(root)/messages/spool") == 0)
        #expect(disk.spool.isEmpty)
    }

    @Test("waiting bodies are read back from the file where they went: across appends, and after the file was emptied and written again")
    func readBackByLocation() throws {
        let root = try Self.directory()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let spool = try BodySpool(directory: root + "/messages")
        let first = [("A", ByteBuffer(string: "first body\r\n")), ("B", ByteBuffer(string: ""))]
        let second = [("C", ByteBuffer(string: "third, after the others\r\n"))]
        try spool.store(first, now: 1) {}
        try spool.store(second, now: 2) {}
        for (id, body) in first + second {
            #expect(try spool.body(id) == body)
        }
        #expect(try spool.body("D") == nil)
        spool.discard(["A", "B", "C"])
        #expect(try spool.body("A") == nil)
        try spool.truncateIfFiled()
        #expect(Self.size(spool.path) == 0)
        let again = [("D", ByteBuffer(string: "after emptying\r\n"))]
        try spool.store(again, now: 3) {}
        #expect(try spool.body("D") == again[0].1)
        #expect(try spool.body("A") == nil)
        // A store whose metadata could not be written holds nothing.
        struct Refused: Error {}
        #expect(throws: Refused.self) { try spool.store([("E", ByteBuffer(string: "x"))], now: 4) { throw Refused() } }
        #expect(try spool.body("E") == nil)
        #expect(spool.count == 1)
    }

    @Test("the index is told of a burst's messages without their buffers, and reads their bodies back from the spool")
    func indexReadsSpool() throws {
        let root = try Self.directory()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let told = Mutex<[WrittenMessage]>([])
        let disk = try DiskStore(root: root, policy: .batch) { messages, _ in
            told.withLock { $0 += messages }
            return true
        }
        let items = ["M1", "M2"].map { (message: Self.message($0), raw: ByteBuffer(string: "Subject: \($0)\r\n\r\nbody\r\n"), tags: [String]()) }
        #expect(throws: Never.self) { try disk.storeInline(items).get() }
        let messages = told.withLock { $0 }
        #expect(messages.map(\.message.id) == ["M1", "M2"])
        #expect(messages.allSatisfy { $0.raw == nil })
        #expect(messages.map { $0.body() } == items.map { Array($0.raw.readableBytesView) })
    }

    @Test("a deleted message's spooled body never gets its .eml")
    func deletedBeforeFiled() async throws {
        let root = try Self.directory()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let disk = try DiskStore(root: root, policy: .batch)
        let items = ["M1", "M2"].map { (message: Self.message($0), raw: ByteBuffer(string: "body \($0)\r\n"), tags: [String]()) }
        let result = disk.storeInline(items)
        #expect(throws: Never.self) { try result.get() }
        disk.delete(ids: ["M1"])
        await disk.drain()
        #expect(!FileManager.default.fileExists(atPath: "\(root)/messages/M1.eml"))
        #expect(FileManager.default.fileExists(atPath: "\(root)/messages/M2.eml"))
        #expect(try await disk.readRaw(id: "M1") == nil)
    }

    @Test("a filed message's .eml goes when it is deleted; the deletion record reads back by the scan and by JSONDecoder")
    func deletedAfterFiled() async throws {
        let root = try Self.directory()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let disk = try DiskStore(root: root, policy: .batch)
        let items = ["M1", "M2"].map { (message: Self.message($0), raw: ByteBuffer(string: "body \($0)\r\n"), tags: [String]()) }
        #expect(throws: Never.self) { try disk.storeInline(items).get() }
        await disk.drain()
        #expect(FileManager.default.fileExists(atPath: "\(root)/messages/M1.eml"))
        disk.delete(ids: ["M1"])
        await disk.drain()
        #expect(!FileManager.default.fileExists(atPath: "\(root)/messages/M1.eml"))
        #expect(FileManager.default.fileExists(atPath: "\(root)/messages/M2.eml"))
        let journal = try String(contentsOfFile: "\(root)/messages/metadata.jsonl", encoding: .utf8)
        #expect(journal.split(separator: "\n").last == #"{"deleted":["M1"]}"#)
    }

    @Test("a deletion queued while its message's write still waits is recorded after that message's line")
    func deletionBehindItsWrite() async throws {
        let root = try Self.directory()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let disk = try DiskStore(root: root, policy: .never)
        // The writer is held, so the write and the deletion both wait in its queue.
        let gate = DispatchSemaphore(value: 0)
        disk.afterQueuedWrites { gate.wait() }
        disk.enqueue(Self.message("M1"), raw: ByteBuffer(string: "body 1\r\n"))
        disk.delete(ids: ["M1"])
        gate.signal()
        await disk.drain()
        let lines = try String(contentsOfFile: "\(root)/messages/metadata.jsonl", encoding: .utf8).split(separator: "\n")
        #expect(lines.count == 2)
        #expect(lines.first?.hasPrefix(#"{"id":"M1""#) == true)
        #expect(lines.last == #"{"deleted":["M1"]}"#)
        #expect(try disk.loadAll { _, _ in }.isEmpty)
        #expect(!FileManager.default.fileExists(atPath: "\(root)/messages/M1.eml"))
    }

    @Test("deletion records: written by hand, read by the scan's fast path, or by JSONDecoder when an id needs escapes")
    func deletionRecords() throws {
        struct Deletion: Decodable { var deleted: [String] }
        for ids in [["A"], ["A", "B", "C"], [], ["q\"uote", "back\\slash"]] {
            let line = DiskStore.deletionLine(ids)
            #expect(line.last == UInt8(ascii: "\n"))
            #expect(try JSONDecoder().decode(Deletion.self, from: line.dropLast()).deleted == ids)
            let fast = Array(line.dropLast()).withUnsafeBufferPointer { JournalCompaction.deletedIDs($0) }
            let escapes = ids.contains { $0.contains("\"") || $0.contains("\\") }
            #expect(fast == (escapes ? nil : ids))
        }
        for other in [#"{"id":"A"}"#, #"{"deleted":["A",]}"#, #"{"deleted":["A"] }"#, #"{"deleted":[A]}"#] {
            #expect(Array(other.utf8).withUnsafeBufferPointer { JournalCompaction.deletedIDs($0) } == nil)
        }
    }

    @Test("a start after a crash writes the .eml of each spooled message the journal describes and did not delete, then empties the spool")
    func recoveredAfterCrash() throws {
        let root = try Self.directory()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let messages = "\(root)/messages"
        // What a killed sink left: four bodies spooled (the third without a metadata line:
        // the sink died between the two appends, before any 250; the last cut short), the
        // lines of the first two, and a deletion of the second.
        let lines = try ["M1", "M2"].map { String(decoding: try Self.message($0).jsonData(), as: UTF8.self) }
        let journal = lines.joined(separator: "\n") + "\n{\"deleted\":[\"M2\"]}\n"
        try Data(journal.utf8).write(to: URL(fileURLWithPath: "\(messages)/metadata.jsonl"))
        try Data("M1 6\nbody 1\nM2 6\nbody 2\nM3 6\nbody 3\nM4 6\nbo".utf8).write(to: URL(fileURLWithPath: "\(messages)/spool"))
        let disk = try DiskStore(root: root, policy: .batch)
        #expect(FileManager.default.contents(atPath: "\(messages)/M1.eml") == Data("body 1".utf8))
        #expect(!FileManager.default.fileExists(atPath: "\(messages)/M2.eml"))
        #expect(!FileManager.default.fileExists(atPath: "\(messages)/M3.eml"))
        #expect(!FileManager.default.fileExists(atPath: "\(messages)/M4.eml"))
        #expect(Self.size("\(messages)/spool") == 0)
        let loaded = try disk.loadAll { _, _ in }
        #expect(loaded.map(\.id) == ["M1"])
    }

    @Test(
        "--fsync always's group commit waits for as many messages as the last sync answered plus those that waited after it, no longer than that sync took, at most 2 ms"
    )
    func groupCommitPolicy() {
        let lone = GroupCommit(answered: 1, waitingAfter: 0, syncNanos: 500_000)
        #expect(lone.linger(holding: 1) == 0)
        let split = GroupCommit(answered: 10, waitingAfter: 9, syncNanos: 700_000)
        #expect(split.expected == 19)
        #expect(split.linger(holding: 9) == 700_000)
        #expect(split.linger(holding: 19) == 0)
        #expect(split.linger(holding: 25) == 0)
        #expect(GroupCommit(answered: 20, waitingAfter: 0, syncNanos: 9_000_000).linger(holding: 1) == DiskStore.maxLinger)
        #expect(GroupCommit().linger(holding: 1) == 0)
    }

    @Test(
        "--fsync always: bursts appended from several threads are each answered once synced, indexed only then, every line in the journal; a lone burst after them is answered too"
    )
    func alwaysBurstsSynced() async throws {
        let root = try Self.directory()
        defer { try? FileManager.default.removeItem(atPath: root) }
        let written = WrittenLog()
        let disk = try DiskStore(root: root, policy: .always) { messages, _ in
            written.add(messages.map(\.message.id))
            return true
        }
        func store(_ ids: [String]) async -> Result<Void, any Error> {
            let items = ids.map { (message: Self.message($0), raw: ByteBuffer(string: "Subject: \($0)\r\n\r\nbody\r\n"), tags: [String]()) }
            return await withCheckedContinuation { continuation in
                let appended = disk.storeInline(items) { continuation.resume(returning: $0) }
                if case .failure = appended { continuation.resume(returning: appended) }
            }
        }
        let bursts = (0..<12).map { burst in (0..<4).map { "B\(burst)M\($0)" } }
        let results = await withTaskGroup(of: (ids: [String], indexed: Bool, result: Result<Void, any Error>).self) { group in
            for ids in bursts {
                group.addTask {
                    let result = await store(ids)
                    return (ids, Set(ids).isSubset(of: Set(written.ids)), result)
                }
            }
            return await group.reduce(into: []) { $0.append($1) }
        }
        #expect(results.count == bursts.count)
        for (ids, indexed, result) in results {
            #expect(throws: Never.self) { try result.get() }
            #expect(indexed, "\(ids) answered before it was handed to the index")
        }
        #expect(disk.lastGroupCommit.answered > 0)
        // Whatever the last sync expects, a lone burst is answered (a linger is bounded).
        let lone = await store(["LONE"])
        #expect(throws: Never.self) { try lone.get() }
        let journal = try String(contentsOfFile: "\(root)/messages/metadata.jsonl", encoding: .utf8)
        #expect(journal.split(separator: "\n").count == bursts.count * 4 + 1)
        for id in bursts.joined() + ["LONE"] {
            #expect(try await disk.readRaw(id: id) == ByteBuffer(string: "Subject: \(id)\r\n\r\nbody\r\n"))
        }
    }
}

/// Ids handed to the index, in order.
final class WrittenLog: Sendable {
    private let state = Mutex<[String]>([])
    func add(_ ids: [String]) { state.withLock { $0 += ids } }
    var ids: [String] { state.withLock { $0 } }
}
