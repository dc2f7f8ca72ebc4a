import Foundation
import MailMessage
import SwallowTestSupport
import Testing

@testable import SinkServer

/// metadata.jsonl stays bounded when messages are evicted or deleted.
@Suite("Journal compaction", .timeLimit(.minutes(5)), .enabled(if: Peers.available("python3"), Comment(rawValue: Peers.reason("python3"))))
struct JournalCompactionTests {
    static func line(_ id: String, transcript: Bool = false) throws -> Data {
        let message = CapturedMessage(
            id: id, envelope: Envelope(mailFrom: "a@x", recipients: [.init(address: "b@x")]),
            session: SessionInfo(id: "s", remoteAddress: "r", localAddress: "l", helo: "h", esmtp: true, tls: nil, authUser: nil),
            timestamps: CaptureTimestamps(connectedNanos: 1, mailNanos: 2, dataStartNanos: 3, dataEndNanos: 4),
            size: 1, receivedHeaderLength: 0,
            transcript: transcript ? [TranscriptEntry(nanos: 1, direction: .client, text: "EHLO h")] : nil
        )
        return try message.jsonData()
    }

    @Test("the scan keeps the lines of messages still stored, in order")
    func scan() throws {
        var journal = Data()
        for part in [
            try Self.line("A"), try Self.line("B"), Data(#"{"deleted":["A"]}"#.utf8), try Self.line("C", transcript: true),
            Data("{not json".utf8), try Self.line("B"),
        ] {
            journal.append(part)
            journal.append(UInt8(ascii: "\n"))
        }
        let scan = JournalCompaction.scan(journal)
        #expect(scan.lines == 6)
        let ids = try scan.live.map { try JSONDecoder().decode(CapturedMessage.self, from: journal[$0]).id }
        #expect(ids == ["C", "B"])
    }

    @Test("a sink that evicts keeps a bounded journal, and a restart finds the messages kept")
    func evictionChurn() async throws {
        let directory = NSTemporaryDirectory() + "swallow-journal-\(UUID().uuidString)"
        defer { try? FileManager.default.removeItem(atPath: directory) }
        // Evictions enough for 10 000 dead message lines (deletion records may each name
        // several messages: evictions that arrive together share one).
        let count = 10_300
        try await withSink({
            $0.dataDirectory = directory
            $0.maxMessages = 100
            $0.fsync = .never
        }) { sink in
            let result = try await python(
                """
                import smtplib
                with smtplib.SMTP('127.0.0.1', PORT, timeout=30) as s:
                    for n in range(int(COUNT)):
                        s.sendmail('a@x.example', ['b@x.example'], ('Subject: message %d\\r\\n\\r\\nbody\\r\\n' % n).encode())
                """, port: sink.smtpAddress.port, env: ["COUNT": "\(count)"])
            #expect(result.status == 0, "\(result.stderr)")
        }
        let journal = try String(contentsOfFile: directory + "/messages/metadata.jsonl", encoding: .utf8)
        let lines = journal.split(separator: "\n").count
        // Without compaction: a line per message and the deletion records, over 10 300. With
        // it, the journal is rewritten whenever 10 000 lines are dead (the 100 kept are live):
        // it never holds many more than 10 100 (how many depends on how evictions shared
        // deletion records, so on timing; the bound does not).
        #expect(lines < 10_200, "\(lines) lines")
        let bodies = try await storedBodies(reopening: directory)
        #expect(bodies.count == 100)
        #expect(bodies.values.contains { $0.contains("Subject: message \(count - 1)\r\n") })
        #expect(!bodies.values.contains { $0.contains("Subject: message \(count - 101)\r\n") })
    }
}
