import Foundation
import Hummingbird
import MailMessage
import SwallowConfig

/// What the application did when mail failed, and the volume over time:
///
/// - `GET /api/v1/deliveries?recipient=&sender=&query=&mailbox=&start=&limit=` → `{total, deliveries, version}`,
///   newest (last attempt) first; `GET /api/v1/deliveries/{Recipient}` for one address. With
///   `wait=D&after=V` the answer waits, server side, until something changed since `version` V
///   or `D` (at most 300 s) passed — how `swallow assert retries --within` waits without polling.
/// - `GET /api/v1/stats/timeline?from=&to=&step=10s|1m|1h` → `{from, to, step, buckets}`;
///   `from`/`to` are RFC 3339 times or Unix seconds (default: the last hour). With `mailbox=`
///   the buckets are made from that mailbox's attempts kept (`--max-attempts`).
/// - `GET /api/v1/stats/top?window=10m` → the top 10 senders, recipients, client addresses and
///   subjects in the window, and `burst`.
enum AuditRoutes {
    static let maxBuckets = 10_000

    static func add(to router: Router<BasicRequestContext>, sink: Sink) {
        let audit = sink.audit
        router.get("/api/v1/deliveries") { request, _ -> Response in
            try await deliveries(request, recipient: nil, audit: audit)
        }
        router.get("/api/v1/deliveries/:recipient") { request, context -> Response in
            let raw = try context.parameters.require("recipient")
            return try await deliveries(request, recipient: raw.removingPercentEncoding ?? raw, audit: audit)
        }
        router.get("/api/v1/stats/timeline") { request, _ -> Response in
            try timeline(request, audit: audit)
        }
        router.get("/api/v1/stats/top") { request, _ -> Response in
            try top(request, audit: audit)
        }
    }

    // MARK: Deliveries

    struct DeliveriesAnswer: Encodable {
        var total: Int
        var deliveries: [DeliveryJSON]
        /// Changes with every attempt recorded and flag raised: `after=` of the next wait.
        var version: UInt64
    }

    static func deliveries(_ request: Request, recipient: String?, audit: DeliveryAudit) async throws -> Response {
        let parameters = request.uri.queryParameters
        let filter = AttemptLog.Filter(
            // As given: a `+` in an address is part of it (encode it as %2B all the same).
            recipient: recipient ?? nonEmpty(SinkAPI.formValue("recipient", request, plusIsSpace: false)),
            sender: nonEmpty(SinkAPI.formValue("sender", request, plusIsSpace: false)),
            query: nonEmpty(SinkAPI.formValue("query", request)),
            mailbox: nonEmpty(parameters.get("mailbox")))
        let start = try integer("start", parameters.get("start"), default: 0, range: 0...Int.max)
        let limit = try integer("limit", parameters.get("limit"), default: 50, range: 1...10_000)
        let wait = try parameters.get("wait").map { try duration("wait", $0, maximum: WaitRoute.maxTimeout) }
        let after = try parameters.get("after").map { text -> UInt64 in
            guard let value = UInt64(text) else { throw HTTPError(.badRequest, message: "after: expected a version number") }
            return value
        }
        let log = audit.attempts
        if let wait, wait > 0 {
            let changes = log.changes()
            let seen = after ?? log.deliveries(filter, start: 0, limit: 1).version
            if log.deliveries(filter, start: 0, limit: 1).version == seen {
                await withTaskGroup(of: Void.self) { group in
                    group.addTask {
                        for await _ in changes { return }
                    }
                    group.addTask { try? await Task.sleep(for: .seconds(wait)) }
                    await group.next()
                    group.cancelAll()
                }
            }
        }
        let page = log.deliveries(filter, start: start, limit: limit)
        let answer = DeliveriesAnswer(total: page.total, deliveries: page.items.map(DeliveryJSON.init), version: page.version)
        return try SinkAPI.json(answer)
    }

    /// A delivery as the API shows it.
    struct DeliveryJSON: Encodable {
        var sender: String
        var recipient: String
        var messageID: String?
        var firstAt: String
        var lastAt: String
        var attempts: [AttemptJSON]
        var outcome: String
        var retries: Int
        var intervals: [Double]
        var flags: [String]

        init(_ delivery: Delivery) {
            sender = delivery.sender
            recipient = delivery.recipient
            messageID = delivery.messageID
            firstAt = WallClock.rfc3339(nanos: delivery.firstNanos)
            lastAt = WallClock.rfc3339(nanos: delivery.lastNanos)
            attempts = delivery.attempts.map(AttemptJSON.init)
            outcome = delivery.outcome.rawValue
            retries = max(0, delivery.attempts.count - 1)
            intervals = delivery.intervals.map { ($0 * 1000).rounded() / 1000 }
            flags = delivery.flags.map(\.rawValue)
        }

        func encode(to encoder: any Encoder) throws {
            var container = encoder.container(keyedBy: CodingKeys.self)
            try container.encode(sender, forKey: .sender)
            try container.encode(recipient, forKey: .recipient)
            try container.encode(messageID, forKey: .messageID)
            try container.encode(firstAt, forKey: .firstAt)
            try container.encode(lastAt, forKey: .lastAt)
            try container.encode(attempts, forKey: .attempts)
            try container.encode(outcome, forKey: .outcome)
            try container.encode(retries, forKey: .retries)
            try container.encode(intervals, forKey: .intervals)
            try container.encode(flags, forKey: .flags)
        }

        enum CodingKeys: String, CodingKey {
            case sender = "Sender", recipient = "Recipient", messageID = "MessageID", firstAt = "FirstAt", lastAt = "LastAt"
            case attempts = "Attempts", outcome = "Outcome", retries = "Retries", intervals = "Intervals", flags = "Flags"
        }
    }

    /// An attempt as the API shows it; absent values are `null`.
    struct AttemptJSON: Encodable {
        var attempt: Attempt

        init(_ attempt: Attempt) { self.attempt = attempt }

        func encode(to encoder: any Encoder) throws {
            var container = encoder.container(keyedBy: CodingKeys.self)
            try container.encode(WallClock.rfc3339(nanos: attempt.atNanos), forKey: .at)
            try container.encode(attempt.sender, forKey: .sender)
            try container.encode(attempt.recipient, forKey: .recipient)
            try container.encode(attempt.phase, forKey: .phase)
            try container.encode(attempt.reply, forKey: .reply)
            try container.encode(attempt.messageID, forKey: .messageID)
            try container.encode(attempt.rule, forKey: .rule)
            try container.encode(attempt.session, forKey: .session)
            try container.encode(attempt.client, forKey: .client)
            try container.encode(attempt.retryAfter, forKey: .retryAfter)
            try container.encode(attempt.dropped, forKey: .dropped)
            try container.encode(attempt.mailboxes, forKey: .mailboxes)
            try container.encode(attempt.subject.map(EncodedWords.decode), forKey: .subject)
        }

        enum CodingKeys: String, CodingKey {
            case at = "At", sender = "Sender", recipient = "Recipient", phase = "Phase", reply = "Reply", messageID = "MessageID"
            case rule = "Rule", session = "Session", client = "Client", retryAfter = "RetryAfter", dropped = "Dropped"
            case mailboxes = "Mailboxes", subject = "Subject"
        }
    }

    // MARK: Timeline

    struct TimelineAnswer: Encodable {
        var from: String
        var to: String
        var step: String
        var buckets: [Timeline.Bucket]
    }

    static func timeline(_ request: Request, audit: DeliveryAudit) throws -> Response {
        let parameters = request.uri.queryParameters
        let stepText = parameters.get("step") ?? "10s"
        let step = try duration("step", stepText, maximum: 86_400)
        guard step >= 10, step.truncatingRemainder(dividingBy: 10) == 0 else {
            throw HTTPError(.badRequest, message: "step: expected 10s, 1m, 1h or another whole multiple of 10 seconds")
        }
        let now = WallClock.nanos() / 1_000_000_000
        let to = try parameters.get("to").map { try time("to", $0) } ?? (now + 1)
        let from = try parameters.get("from").map { try time("from", $0) } ?? (to - 3600)
        guard from < to else { throw HTTPError(.badRequest, message: "from: must be before to") }
        let stepSeconds = Int64(step)
        let count = (to - from + stepSeconds - 1) / stepSeconds + 1
        guard count <= maxBuckets else {
            throw HTTPError(.badRequest, message: "step: \(count) buckets asked for, at most \(maxBuckets); use a longer step or a shorter range")
        }
        let buckets: [Timeline.Bucket]
        if let mailbox = nonEmpty(parameters.get("mailbox")) {
            let attempts = audit.attempts.attempts(sinceNanos: from * 1_000_000_000).filter { $0.mailboxes.contains(mailbox) }
            buckets = Timeline.buckets(of: attempts, from: from, to: to, step: stepSeconds)
        } else {
            buckets = audit.timeline.buckets(from: from, to: to, step: stepSeconds)
        }
        let answer = TimelineAnswer(
            from: WallClock.rfc3339(nanos: from * 1_000_000_000), to: WallClock.rfc3339(nanos: to * 1_000_000_000), step: stepText,
            buckets: buckets)
        return try SinkAPI.json(answer)
    }

    // MARK: Top

    struct Entry: Encodable {
        var value: String
        var count: Int

        enum CodingKeys: String, CodingKey { case value = "Value", count = "Count" }
    }

    struct TopAnswer: Encodable {
        var window: String
        var senders: [Entry]
        var recipients: [Entry]
        var clients: [Entry]
        var subjects: [Entry]
        /// The last minute's volume is over 5x the window's median minute.
        var burst: Bool
        var lastMinute: Int
        var medianMinute: Double
    }

    static func top(_ request: Request, audit: DeliveryAudit) throws -> Response {
        let parameters = request.uri.queryParameters
        let windowText = parameters.get("window") ?? "10m"
        let window = try duration("window", windowText, maximum: audit.timeline.retention)
        guard window >= 60 else { throw HTTPError(.badRequest, message: "window: expected at least 1m") }
        let mailbox = nonEmpty(parameters.get("mailbox"))
        let nowNanos = WallClock.nanos()
        var attempts = audit.attempts.attempts(sinceNanos: nowNanos - Int64(window * 1e9))
        if let mailbox { attempts = attempts.filter { $0.mailboxes.contains(mailbox) } }
        var senders: [String: Int] = [:]
        var recipients: [String: Int] = [:]
        var clients: [String: Int] = [:]
        var subjects: [String: Int] = [:]
        var transactions = Set<String>()
        for attempt in attempts {
            recipients[attempt.recipient.lowercased(), default: 0] += 1
            // Senders, clients and subjects count once per transaction.
            guard transactions.insert("\(attempt.session) \(attempt.transactionNanos)").inserted else { continue }
            senders[attempt.sender.lowercased(), default: 0] += 1
            clients[attempt.client, default: 0] += 1
            if let subject = attempt.subject { subjects[EncodedWords.decode(subject), default: 0] += 1 }
        }
        func ranked(_ counts: [String: Int]) -> [Entry] {
            counts.sorted { ($0.value, $1.key) > ($1.value, $0.key) }.prefix(10).map { Entry(value: $0.key, count: $0.value) }
        }
        // The burst: the minute before now against the median of the window's other minutes.
        // Minutes end with the current 10 s bucket, so the last one holds what just happened.
        let now = nowNanos / 1_000_000_000
        let end = now - now % Timeline.fineWidth + Timeline.fineWidth
        let minutes = max(2, Int(window / 60))
        let volumes = audit.timeline.minuteVolumes(from: end - Int64(minutes) * 60, to: end)
        let last = volumes.last ?? 0
        let earlier = volumes.dropLast().sorted()
        let median: Double =
            earlier.isEmpty
            ? 0
            : earlier.count % 2 == 1
                ? Double(earlier[earlier.count / 2])
                : Double(earlier[earlier.count / 2 - 1] + earlier[earlier.count / 2]) / 2
        let answer = TopAnswer(
            window: windowText, senders: ranked(senders), recipients: ranked(recipients), clients: ranked(clients),
            subjects: ranked(subjects), burst: last > 0 && Double(last) > 5 * median, lastMinute: last, medianMinute: median)
        return try SinkAPI.json(answer)
    }

    // MARK: Parameters

    private static func nonEmpty(_ text: String?) -> String? {
        guard let text, !text.trimmingCharacters(in: .whitespaces).isEmpty else { return nil }
        return text
    }

    static func integer(_ name: String, _ text: String?, default value: Int, range: ClosedRange<Int>) throws -> Int {
        guard let text else { return value }
        guard let number = Int(text), range.contains(number) else {
            throw HTTPError(.badRequest, message: "\(name): expected a whole number from \(range.lowerBound)")
        }
        return number
    }

    static func duration(_ name: String, _ text: String, maximum: Double) throws -> Double {
        guard let value = Double(text) ?? Quantity.duration(text), value.isFinite, value >= 0, value <= maximum else {
            throw HTTPError(.badRequest, message: "\(name): expected a duration such as 10s, 1m or 1h, at most \(Int(maximum))s")
        }
        return value
    }

    /// RFC 3339 (`2026-12-04T18:00:00Z`) or Unix seconds; whole seconds.
    static func time(_ name: String, _ text: String) throws -> Int64 {
        if let seconds = Double(text), seconds.isFinite, seconds >= 0, seconds < 1e11 { return Int64(seconds) }
        let formats = [
            Date.ISO8601FormatStyle(includingFractionalSeconds: true), Date.ISO8601FormatStyle(includingFractionalSeconds: false),
        ]
        for format in formats {
            if let date = try? format.parse(text) { return Int64(date.timeIntervalSince1970.rounded(.down)) }
        }
        throw HTTPError(.badRequest, message: "\(name): expected an RFC 3339 time (2026-12-04T18:00:00Z) or Unix seconds")
    }
}
