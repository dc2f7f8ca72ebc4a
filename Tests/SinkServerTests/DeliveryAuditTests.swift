import Foundation
import MailMessage
import SMTPProtocol
import Testing

@testable import SinkServer

/// The attempt log's joins and audit flags, and the timeline's buckets, on synthetic attempts.
@Suite("Delivery audit")
struct DeliveryAuditTests {
    /// Now: reading deliveries sweeps for `gave-up` at the real time.
    static let t0 = WallClock.nanos()

    static func attempt(
        _ seconds: Double, to recipient: String = "bob@example.com", code: Int?, phase: FaultPhase = .rcpt, id: String? = nil,
        retryAfter: Double? = nil, dropped: Bool = false
    ) -> Attempt {
        Attempt(
            atNanos: t0 + Int64(seconds * 1e9), recipient: recipient, phase: phase,
            reply: code.map { Attempt.Reply(code: $0, enhanced: nil, text: "t") }, messageID: id,
            origin: Attempt.Origin(session: "s1", client: "127.0.0.1", sender: "app@example.com"), retryAfter: retryAfter, dropped: dropped)
    }

    static func log(_ attempts: [Attempt], settings: AuditSettings = AuditSettings()) -> AttemptLog {
        let log = AttemptLog(settings: settings)
        for attempt in attempts { log.record(attempt) }
        return log
    }

    static func only(_ log: AttemptLog) throws -> Delivery {
        let page = log.deliveries(.init())
        try #require(page.total == 1, "one delivery, not \(page.total)")
        return page.items[0]
    }

    @Test("a client that backs off after a greylist and two tempfails: one delivery, delivered, no flags")
    func wellBehaved() throws {
        let log = Self.log([
            Self.attempt(0, code: 451, retryAfter: 1),
            Self.attempt(1.5, code: 451, phase: .dataEnd, id: "<a@x>"),
            Self.attempt(4, code: 451, phase: .dataEnd, id: "<a@x>"),
            Self.attempt(9, code: 250, phase: .dataEnd, id: "<a@x>"),
        ])
        let delivery = try Self.only(log)
        #expect(delivery.outcome == .delivered)
        #expect(delivery.messageID == "<a@x>")
        #expect(delivery.intervals == [1.5, 2.5, 5])
        #expect(delivery.flags.isEmpty)
    }

    @Test("retries at once, at a constant pace: retry-too-soon and no-backoff; sooner than retry_after is too soon too")
    func tooSoon() throws {
        let log = Self.log((0..<4).map { Self.attempt(Double($0) * 0.1, code: 451) })
        #expect(try Self.only(log).flags == [.retryTooSoon, .noBackoff])
        // 2 s is past --min-retry-interval but not past the greylisting rule's 5 s.
        let greylisted = Self.log([Self.attempt(0, code: 451, retryAfter: 5), Self.attempt(2, code: 250, phase: .dataEnd)])
        #expect(try Self.only(greylisted).flags == [.retryTooSoon])
        // Growing intervals are backoff, even with three retries.
        let backoff = Self.log([1.0, 3, 7, 15].enumerated().map { Self.attempt($0.offset == 0 ? 0 : $0.element, code: 451) })
        #expect(try Self.only(backoff).flags.isEmpty)
    }

    @Test("after a 550: the same message again is retry-after-permanent; a new one to the address is sent-after-bounce")
    func afterBounce() throws {
        let log = Self.log([
            Self.attempt(0, code: 550, phase: .dataEnd, id: "<a@x>"),
            Self.attempt(5, code: 550, phase: .dataEnd, id: "<a@x>"),
            Self.attempt(10, code: 250, phase: .dataEnd, id: "<b@x>"),
        ])
        let page = log.deliveries(.init())
        #expect(page.total == 2)
        let newest = page.items[0], first = page.items[1]
        #expect(first.flags == [.retryAfterPermanent])
        #expect(first.outcome == .bounced)
        #expect(newest.flags == [.sentAfterBounce])
        #expect(newest.outcome == .delivered)
        // Past --bounce-memory the bounce is forgotten.
        var settings = AuditSettings()
        settings.bounceMemory = 5
        let forgotten = Self.log(
            [Self.attempt(0, code: 550, phase: .dataEnd, id: "<a@x>"), Self.attempt(10, code: 250, phase: .dataEnd, id: "<b@x>")],
            settings: settings)
        #expect(forgotten.deliveries(.init()).items.allSatisfy { $0.flags.isEmpty })
        #expect(log.counts.flags["retry-after-permanent"] == 1 && log.counts.flags["sent-after-bounce"] == 1)
    }

    @Test("a deferred delivery without a further attempt for --give-up-after is gave-up; a delivered one is not")
    func gaveUp() throws {
        var settings = AuditSettings()
        settings.giveUpAfter = 60
        let log = Self.log(
            [Self.attempt(0, code: 451), Self.attempt(0, to: "carol@example.com", code: 250, phase: .dataEnd)], settings: settings)
        log.sweep(nowNanos: Self.t0 + 59_000_000_000)
        #expect(log.deliveries(.init(recipient: "bob@example.com"), start: 0, limit: 1).items.first?.flags == [])
        log.sweep(nowNanos: Self.t0 + 61_000_000_000)
        #expect(log.deliveries(.init(recipient: "BOB@example.com")).items.first?.flags == [.gaveUp])
        #expect(log.deliveries(.init(recipient: "carol@example.com")).items.first?.flags == [])
    }

    @Test("a new message after a delivered one is a new delivery; --max-attempts drops the oldest and counts them")
    func joinsAndBounds() throws {
        var settings = AuditSettings()
        settings.maxAttempts = 3
        let log = Self.log(
            [
                Self.attempt(0, code: 250, phase: .dataEnd), Self.attempt(1, code: 250, phase: .dataEnd),
                Self.attempt(2, code: 451), Self.attempt(3, code: 250, phase: .dataEnd, id: "<c@x>"),
            ], settings: settings)
        let counts = log.counts
        #expect(counts.attempts == 3)
        #expect(counts.droppedAttempts == 1)
        #expect(counts.deliveries == 2)
        let newest = log.deliveries(.init()).items[0]
        #expect(newest.attempts.count == 2 && newest.outcome == .delivered)
        // The query narrows by a flag, outcome, address or reply text.
        #expect(log.deliveries(.init(query: "delivered")).total == 2)
        #expect(log.deliveries(.init(query: "no-backoff")).total == 0)
    }

    @Test("attempts.jsonl brings the deliveries and their flags back after a restart")
    func persisted() throws {
        let directory = NSTemporaryDirectory() + "swallow-audit-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        let first = AttemptLog(settings: AuditSettings(), dataDirectory: directory)
        for attempt in (0..<4).map({ Self.attempt(Double($0) * 0.1, code: 451) }) { first.record(attempt) }
        first.flush()
        let second = AttemptLog(settings: AuditSettings(), dataDirectory: directory)
        let delivery = try Self.only(second)
        #expect(Array(delivery.attempts) == (0..<4).map { Self.attempt(Double($0) * 0.1, code: 451) })
        #expect(delivery.flags == [.retryTooSoon, .noBackoff])
    }

    @Test("an attempt's line in attempts.jsonl is byte for byte what JSONEncoder with sorted keys wrote, and reads back equal")
    func jsonLine() throws {
        let origin = Attempt.Origin(session: "s\"1", client: "[::1]:5", sender: "")
        let attempts = [
            Self.attempt(0, code: 250, phase: .dataEnd, id: "<a@x>"),
            Attempt(
                atNanos: 7, recipient: "b\\o\u{1}b@example.com", phase: .rcpt, reply: nil, rule: "+fail-451", origin: origin,
                dropped: true, mailboxes: ["team-a", "ci"], subject: "Ünïcode \"quoted\"", transactionNanos: 3, size: 1024),
            Attempt(
                atNanos: 9, recipient: "c@example.com", phase: .dataEnd,
                reply: Attempt.Reply(SMTPReply(250, "2.0.0", "Ok: queued as M1"), queuedAs: "M1"), origin: origin),
            Attempt(
                atNanos: 9, recipient: "d@example.com", phase: .rcpt, reply: Attempt.Reply(code: 451, enhanced: "4.7.1", text: "later"),
                rule: "grey\nlist", origin: origin, retryAfter: 300),
        ]
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        for attempt in attempts {
            var out = JSONWriter()
            attempt.writeJSON(&out)
            let reference = try encoder.encode(attempt)
            #expect(try JSONDecoder().decode(Attempt.self, from: Data(out.bytes)) == attempt)
            // JSONEncoder writes 300.0 as 300 and a newline as \n; the line writes 300.0 and
            // \u000a. Both read back the same.
            if attempt.retryAfter == nil { #expect(String(decoding: out.bytes, as: UTF8.self) == String(decoding: reference, as: UTF8.self)) }
        }
    }

    @Test("attempts.jsonl is rewritten with the attempts kept once four times --max-attempts were appended")
    func compacted() throws {
        let directory = NSTemporaryDirectory() + "swallow-audit-" + UUID().uuidString
        try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(atPath: directory) }
        var settings = AuditSettings()
        settings.maxAttempts = 10
        let log = AttemptLog(settings: settings, dataDirectory: directory)
        for index in 0..<4_001 { log.record(Self.attempt(Double(index) * 0.001, to: "u\(index)@example.com", code: 250, phase: .dataEnd)) }
        log.flush()
        let lines = try String(contentsOfFile: directory + "/attempts.jsonl", encoding: .utf8).split(separator: "\n")
        #expect(lines.count == 10)
        #expect(!FileManager.default.fileExists(atPath: directory + "/attempts.jsonl.new"))
        let reloaded = AttemptLog(settings: settings, dataDirectory: directory)
        #expect(reloaded.counts.attempts == 10)
        #expect(reloaded.deliveries(.init()).items.first?.recipient == "u4000@example.com")
    }

    @Test("the timeline: counts per bucket at 10 s, 1 min and 1 h steps; empty buckets listed")
    func timeline() throws {
        let now = WallClock.nanos() / 1_000_000_000
        let base = now - now % 60 - 120
        let timeline = Timeline(retention: 86_400)
        for second in [base + 1, base + 2, base + 15] {
            timeline.accepted(atNanos: second * 1_000_000_000, bytes: 100, transactionNanos: 2_000_000)
        }
        timeline.refused(atNanos: (base + 15) * 1_000_000_000, code: 451)
        timeline.refused(atNanos: (base + 61) * 1_000_000_000, code: 550)
        timeline.dropped(atNanos: (base + 61) * 1_000_000_000)
        timeline.session(atNanos: (base + 1) * 1_000_000_000)
        let fine = timeline.buckets(from: base, to: base + 70, step: 10)
        #expect(fine.count == 7)
        #expect(fine.map(\.accepted) == [2, 1, 0, 0, 0, 0, 0])
        #expect(fine.map(\.refused4xx) == [0, 1, 0, 0, 0, 0, 0])
        #expect(fine[6].refused5xx == 1 && fine[6].dropped == 1)
        #expect(fine[0].bytes == 200 && fine[0].sessions == 1)
        let p50 = try #require(fine[0].transactionMs.p50)
        #expect(abs(p50 - 2) < 0.05)
        #expect(fine[2].transactionMs.p50 == nil)
        let minutes = timeline.buckets(from: base, to: base + 120, step: 60)
        #expect(minutes.map(\.accepted) == [3, 0])
        #expect(minutes.map(\.refused5xx) == [0, 1])
        #expect(timeline.minuteVolumes(from: base, to: base + 120) == [4, 2])
    }
}
