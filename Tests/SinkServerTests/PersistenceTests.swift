import Foundation
import Logging
import MailMessage
import NIOCore
import SinkServer
import SwallowTestSupport
import Synchronization
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// `--data DIR` across restarts and crashes of the real `swallow serve` process.
@Suite("Persistence: restart and kill -9", .timeLimit(.minutes(4)), .serialized)
struct PersistenceTests {
    static func body(_ n: Int) -> String {
        "Subject: message \(n)\r\nX-Seq: \(n)\r\n\r\n" + String(repeating: "line of message \(n)\r\n", count: 20) + ".dot\r\n"
    }

    static func unstuffed(_ n: Int) -> String {
        body(n).replacingOccurrences(of: "\r\n.dot\r\n", with: "\r\ndot\r\n")
    }

    @Test("a restart with --data returns every message accepted before SIGTERM")
    func restartAfterSIGTERM() async throws {
        let directory = try temporaryDirectory()
        let process = try SinkProcess(arguments: ["--data", directory])
        let port = process.smtpPort
        let ids = try await onThread {
            let client = try RawSMTPClient(port: port)
            _ = try client.readReply()
            _ = try client.command("EHLO restart.example")
            return try (0..<25).map { try sendMessage(client, body: Self.body($0)) }
        }
        process.signal(SIGTERM)
        #expect(process.wait() == 0)
        let stored = try await storedBodies(reopening: directory)
        #expect(stored.count == 25)
        for (n, id) in ids.enumerated() {
            #expect(stored[id] == Self.unstuffed(n), "message \(n) (\(id))")
            #expect(FileManager.default.fileExists(atPath: "\(directory)/messages/\(id).eml"))
        }
    }

    /// With `batch` the four clients' messages arrive as a burst: their bodies go to the spool
    /// (`BodySpool`) and the restart writes their `.eml` files.
    @Test(
        "with --fsync always or batch, kill -9 loses no message that got its 250, and each has its .eml after a restart",
        arguments: ["always", "batch"])
    func killNineLosesNothingAcknowledged(fsync: String) async throws {
        let directory = try temporaryDirectory()
        let process = try SinkProcess(arguments: ["--data", directory, "--fsync", fsync])
        let port = process.smtpPort
        let pid = process.process.processIdentifier
        let acknowledged = Acknowledged()
        // Four clients send at once; the 60th acknowledgement kills the sink mid-stream, so
        // other transactions are cut at every stage.
        try await withThrowingTaskGroup(of: Void.self) { group in
            for worker in 0..<4 {
                group.addTask {
                    _ = try await onThread {
                        guard let client = try? RawSMTPClient(port: port) else { return }
                        _ = try? client.readReply()
                        _ = try? client.command("EHLO crash.example")
                        for i in 0..<1000 {
                            let n = worker * 1000 + i
                            guard let id = try? sendMessage(client, body: Self.body(n)) else { return }
                            let count = acknowledged.ids.withLock { acked in
                                acked[id] = n
                                return acked.count
                            }
                            if count == 60 { kill(pid, SIGKILL) }
                        }
                    }
                }
            }
            try await group.waitForAll()
        }
        _ = process.wait()
        let acked = acknowledged.ids.withLock { $0 }
        #expect(acked.count >= 60)
        let stored = try await storedBodies(reopening: directory)
        for (id, n) in acked {
            #expect(stored[id] == Self.unstuffed(n), "acknowledged message \(n) (\(id)) lost or damaged")
            #expect(FileManager.default.fileExists(atPath: "\(directory)/messages/\(id).eml"), "no .eml for \(id)")
        }
    }
}

/// Message ids that got their `250`, with the sequence number of the body sent.
final class Acknowledged: Sendable {
    let ids = Mutex<[String: Int]>([:])
}
