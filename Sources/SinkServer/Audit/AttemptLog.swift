import Foundation
import NIOCore
import Synchronization

/// Every delivery attempt the sink answered, joined into deliveries and audited as they come
/// (`Flags`), bounded by `--max-attempts` (the oldest dropped and counted).
///
/// Recording is a lock and a dictionary lookup on the connection's event loop; the flags of a
/// delivery are decided when its attempts arrive, except `gave-up`, which a sweep decides once
/// a deferred delivery has waited `--give-up-after` (every second, and before each answer).
/// With `--data`, attempts are appended to `attempts.jsonl` in batches by `flush()` and read
/// back at start, so deliveries and their flags survive a restart.
final class AttemptLog: Sendable {
    struct Key: Hashable {
        var sender: String
        var recipient: String

        init(_ sender: String, _ recipient: String) {
            self.sender = sender.lowercased()
            self.recipient = recipient.lowercased()
        }
    }

    private struct State {
        var deliveries: [Int: Delivery] = [:]
        /// The latest delivery of each sender and recipient.
        var latest: [Key: Int] = [:]
        /// Per attempt kept, oldest first: the delivery it belongs to (for dropping the oldest).
        var order = CircularBuffer<Int>()
        var nextID = 1
        var droppedAttempts = 0
        /// The last bounce (5xx) of each recipient, for `sent-after-bounce`.
        var bounces: [String: Int64] = [:]
        /// Deliveries flagged so far, by flag (cumulative, as `swallow_delivery_flags_total`).
        var flagCounts: [DeliveryFlag: Int] = [:]
        /// Deferred deliveries not yet `gave-up`.
        var deferred: Set<Int> = []
        var version: UInt64 = 0
        /// Attempts not yet written to `attempts.jsonl`.
        var unwritten: [Attempt] = []
        var writtenSinceCompaction = 0
        var watchers: [UUID: AsyncStream<Void>.Continuation] = [:]
    }

    let settings: AuditSettings
    private let state = Mutex(State())
    private let file: String?
    private let metrics: SinkMetrics?
    private let health: StorageHealth?

    init(settings: AuditSettings, dataDirectory: String? = nil, metrics: SinkMetrics? = nil, health: StorageHealth? = nil) {
        self.settings = settings
        self.file = dataDirectory.map { ($0 as NSString).appendingPathComponent("attempts.jsonl") }
        self.metrics = metrics
        self.health = health
        if let file, settings.maxAttempts > 0 { load(file) }
    }

    var enabled: Bool { settings.maxAttempts > 0 }

    // MARK: Recording

    /// Records one attempt: joins it to its delivery and decides the flags it raises.
    func record(_ attempt: Attempt) {
        guard enabled else { return }
        metrics?.attempted(phase: attempt.phase, class: attempt.replyClass)
        let raised = state.withLock { state in
            let raised = Self.add(attempt, to: &state, settings: settings)
            if file != nil { state.unwritten.append(attempt) }
            state.version &+= 1
            for watcher in state.watchers.values { watcher.yield() }
            return raised
        }
        for flag in raised { metrics?.deliveryFlagged(flag.rawValue) }
    }

    private static func add(_ attempt: Attempt, to state: inout State, settings: AuditSettings) -> [DeliveryFlag] {
        let key = Key(attempt.sender, attempt.recipient)
        let recipientKey = key.recipient
        var raised: [DeliveryFlag] = []
        var delivery: Delivery
        if let id = state.latest[key], let existing = state.deliveries[id], existing.continues(with: attempt) {
            delivery = existing
            let previous = delivery.attempts.last!
            let interval = Double(attempt.atNanos - previous.atNanos) / 1e9
            if previous.permanent {
                if delivery.flag(.retryAfterPermanent) { raised.append(.retryAfterPermanent) }
                // Refused at RCPT, neither side carries a Message-ID: a retry of the same
                // message and a new message look alike, and both are faults.
                if previous.messageID == nil || attempt.messageID == nil, delivery.flag(.sentAfterBounce) {
                    raised.append(.sentAfterBounce)
                }
            }
            if previous.temporary || previous.reply == nil {
                let minimum = max(settings.minRetryInterval, previous.retryAfter ?? 0)
                if interval < minimum, delivery.flag(.retryTooSoon) { raised.append(.retryTooSoon) }
            }
            delivery.attempts.append(attempt)
            if delivery.messageID == nil { delivery.messageID = attempt.messageID }
            let intervals = delivery.intervals
            if intervals.count >= 3, !zip(intervals, intervals.dropFirst()).contains(where: { Delivery.grows($0, $1) }),
                delivery.flag(.noBackoff)
            {
                raised.append(.noBackoff)
            }
        } else {
            delivery = Delivery(
                id: state.nextID, sender: attempt.sender, recipient: attempt.recipient, messageID: attempt.messageID,
                attempts: [attempt])
            state.nextID += 1
            if let bounced = state.bounces[recipientKey], Double(attempt.atNanos - bounced) / 1e9 <= settings.bounceMemory,
                delivery.flag(.sentAfterBounce)
            {
                raised.append(.sentAfterBounce)
            }
            state.latest[key] = delivery.id
        }
        if attempt.permanent {
            if state.bounces.count >= max(settings.maxAttempts, 1024), state.bounces[recipientKey] == nil {
                let horizon = attempt.atNanos - Int64(settings.bounceMemory * 1e9)
                state.bounces = state.bounces.filter { $0.value >= horizon }
                if state.bounces.count >= max(settings.maxAttempts, 1024) { state.bounces.removeAll() }
            }
            state.bounces[recipientKey] = attempt.atNanos
        }
        if delivery.outcome == .deferred, !delivery.flags.contains(.gaveUp) {
            state.deferred.insert(delivery.id)
        } else {
            state.deferred.remove(delivery.id)
        }
        for flag in raised { state.flagCounts[flag, default: 0] += 1 }
        state.deliveries[delivery.id] = delivery
        state.order.append(delivery.id)
        while state.order.count > settings.maxAttempts {
            let oldest = state.order.removeFirst()
            state.droppedAttempts += 1
            guard var owner = state.deliveries[oldest] else { continue }
            owner.attempts.removeFirst()
            if owner.attempts.isEmpty {
                state.deliveries[oldest] = nil
                state.deferred.remove(oldest)
                let ownerKey = Key(owner.sender, owner.recipient)
                if state.latest[ownerKey] == oldest { state.latest[ownerKey] = nil }
            } else {
                state.deliveries[oldest] = owner
            }
        }
        return raised
    }

    /// `gave-up`: deferred deliveries with no attempt for `--give-up-after` by `nowNanos`.
    func sweep(nowNanos: Int64) {
        guard enabled else { return }
        let horizon = nowNanos - Int64(settings.giveUpAfter * 1e9)
        let raised = state.withLock { state -> Int in
            var raised = 0
            for id in state.deferred {
                guard var delivery = state.deliveries[id] else {
                    state.deferred.remove(id)
                    continue
                }
                guard delivery.lastNanos <= horizon else { continue }
                state.deferred.remove(id)
                if delivery.flag(.gaveUp) {
                    raised += 1
                    state.flagCounts[.gaveUp, default: 0] += 1
                    state.deliveries[id] = delivery
                }
            }
            if raised > 0 {
                state.version &+= 1
                for watcher in state.watchers.values { watcher.yield() }
            }
            return raised
        }
        for _ in 0..<raised { metrics?.deliveryFlagged(DeliveryFlag.gaveUp.rawValue) }
    }

    // MARK: Reading

    struct Filter: Sendable {
        var recipient: String?
        var sender: String?
        /// Contained (case-insensitively) in the sender, recipient, Message-ID, outcome, a
        /// flag, a rule or a reply's text.
        var query: String?
        var mailbox: String?

        func matches(_ delivery: Delivery) -> Bool {
            if let recipient, delivery.recipient.lowercased() != recipient.lowercased() { return false }
            if let sender, delivery.sender.lowercased() != sender.lowercased() { return false }
            if let mailbox, !delivery.attempts.contains(where: { $0.mailboxes.contains(mailbox) }) { return false }
            if let query, !query.isEmpty {
                let needle = query.lowercased()
                var haystack = [delivery.sender, delivery.recipient, delivery.messageID ?? "", delivery.outcome.rawValue]
                haystack += delivery.flags.map(\.rawValue)
                haystack += delivery.attempts.flatMap { [$0.rule ?? "", $0.reply?.text ?? ""] }
                guard haystack.contains(where: { $0.lowercased().contains(needle) }) else { return false }
            }
            return true
        }
    }

    /// The deliveries matching `filter`, newest (last attempt) first, and how many matched.
    func deliveries(_ filter: Filter, start: Int = 0, limit: Int = 50) -> (total: Int, items: [Delivery], version: UInt64) {
        sweep(nowNanos: WallClock.nanos())
        return state.withLock { state in
            let matching = state.deliveries.values.filter(filter.matches).sorted {
                ($0.lastNanos, $0.id) > ($1.lastNanos, $1.id)
            }
            let items = start < matching.count ? Array(matching[start..<min(matching.count, start + limit)]) : []
            return (matching.count, items, state.version)
        }
    }

    /// The attempts kept whose time is at or after `sinceNanos`, oldest first.
    func attempts(sinceNanos: Int64) -> [Attempt] {
        state.withLock { state in
            state.deliveries.values.flatMap { $0.attempts.filter { $0.atNanos >= sinceNanos } }.sorted { $0.atNanos < $1.atNanos }
        }
    }

    struct Counts: Encodable, Sendable {
        var attempts: Int
        var deliveries: Int
        /// Dropped by `--max-attempts` since the start.
        var droppedAttempts: Int
        /// Deliveries flagged since the start (or the replay of `attempts.jsonl`), by flag.
        var flags: [String: Int]
    }

    var counts: Counts {
        state.withLock { state in
            Counts(
                attempts: state.order.count, deliveries: state.deliveries.count, droppedAttempts: state.droppedAttempts,
                flags: Dictionary(uniqueKeysWithValues: DeliveryFlag.allCases.map { ($0.rawValue, state.flagCounts[$0] ?? 0) })
            )
        }
    }

    /// A stream that yields whenever an attempt is recorded or a flag raised; subscribe before
    /// reading, so nothing in between is missed.
    func changes() -> AsyncStream<Void> {
        let (stream, continuation) = AsyncStream.makeStream(of: Void.self, bufferingPolicy: .bufferingNewest(1))
        let id = UUID()
        state.withLock { $0.watchers[id] = continuation }
        continuation.onTermination = { [weak self] _ in
            _ = self?.state.withLock { $0.watchers.removeValue(forKey: id) }
        }
        return stream
    }

    // MARK: Persistence

    /// Writes the attempts recorded since the last flush to `attempts.jsonl`; past
    /// `--max-attempts` lines written, rewrites the file with the attempts kept.
    func flush() {
        guard let file else { return }
        let (pending, compact) = state.withLock { state -> ([Attempt], [Attempt]?) in
            let pending = state.unwritten
            state.unwritten = []
            state.writtenSinceCompaction += pending.count
            guard state.writtenSinceCompaction > max(settings.maxAttempts, 1000) else { return (pending, nil) }
            state.writtenSinceCompaction = 0
            return (pending, Self.kept(state))
        }
        guard !pending.isEmpty || compact != nil else { return }
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        do {
            if let compact {
                var data = Data()
                for attempt in compact {
                    data.append(try encoder.encode(attempt))
                    data.append(0x0A)
                }
                try data.write(to: URL(fileURLWithPath: file), options: .atomic)
            } else {
                var data = Data()
                for attempt in pending {
                    data.append(try encoder.encode(attempt))
                    data.append(0x0A)
                }
                if !FileManager.default.fileExists(atPath: file) {
                    FileManager.default.createFile(atPath: file, contents: nil)
                }
                let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: file))
                defer { try? handle.close() }
                try handle.seekToEnd()
                try handle.write(contentsOf: data)
            }
            health?.succeeded(.audit)
        } catch {
            health?.failed(.audit, "write \(file)", error)
        }
    }

    /// The attempts kept, in the order they were recorded.
    private static func kept(_ state: State) -> [Attempt] {
        var cursor: [Int: Int] = [:]
        var attempts: [Attempt] = []
        attempts.reserveCapacity(state.order.count)
        for id in state.order {
            guard let delivery = state.deliveries[id] else { continue }
            let index = cursor[id, default: 0]
            guard index < delivery.attempts.count else { continue }
            attempts.append(delivery.attempts[index])
            cursor[id] = index + 1
        }
        return attempts
    }

    private func load(_ file: String) {
        guard let data = FileManager.default.contents(atPath: file) else { return }
        let decoder = JSONDecoder()
        var skipped = 0
        state.withLock { state in
            for line in data.split(separator: 0x0A) where !line.isEmpty {
                guard let attempt = try? decoder.decode(Attempt.self, from: Data(line)) else {
                    skipped += 1
                    continue
                }
                _ = Self.add(attempt, to: &state, settings: settings)
            }
            state.writtenSinceCompaction = state.order.count
        }
        if skipped > 0 {
            health?.failed(.audit, "read \(file)", AuditFileError(lines: skipped))
        }
    }

    struct AuditFileError: Error, CustomStringConvertible {
        var lines: Int
        var description: String { "\(lines) lines that are not attempts were skipped" }
    }
}
