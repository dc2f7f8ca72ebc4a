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
            self.sender = Self.folded(sender)
            self.recipient = Self.folded(recipient)
        }

        /// Lowercased; the string itself when it has no capital (most addresses: no copy).
        static func folded(_ text: String) -> String {
            text.utf8.contains(where: { $0 >= UInt8(ascii: "A") && $0 <= UInt8(ascii: "Z") || $0 >= 0x80 }) ? text.lowercased() : text
        }
    }

    private struct State {
        var deliveries = DeliveryTable()
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
    private let file: JSONLinesFile?
    private let metrics: SinkMetrics?

    init(settings: AuditSettings, dataDirectory: String? = nil, metrics: SinkMetrics? = nil, health: StorageHealth? = nil) {
        self.settings = settings
        self.file = dataDirectory.map { JSONLinesFile(path: ($0 as NSString).appendingPathComponent("attempts.jsonl"), health: health) }
        self.metrics = metrics
        // Room for the deliveries kept, reserved once (its pages are only resident once used):
        // grown by doubling, the table left its earlier copies behind in the heap. Not the
        // order ring: a `CircularBuffer` writes every slot of its room (2 MiB of idle RSS).
        state.withLock { $0.deliveries.reserveCapacity(min(settings.maxAttempts, 100_000)) }
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
        var raised: [DeliveryFlag] = []
        // The key is hashed once: its slot is read and set in place (0 while it has none).
        let (id, deferred, continued) = Self.join(
            attempt, latest: &state.latest[key, default: 0], deliveries: &state.deliveries, nextID: &state.nextID,
            bounced: state.bounces.isEmpty ? nil : state.bounces[key.recipient], settings: settings, raised: &raised)
        if continued, !deferred { state.deferred.remove(id) }
        if deferred { state.deferred.insert(id) }
        if attempt.permanent {
            if state.bounces.count >= max(settings.maxAttempts, 1024), state.bounces[key.recipient] == nil {
                let horizon = attempt.atNanos - Int64(settings.bounceMemory * 1e9)
                state.bounces = state.bounces.filter { $0.value >= horizon }
                if state.bounces.count >= max(settings.maxAttempts, 1024) { state.bounces.removeAll() }
            }
            state.bounces[key.recipient] = attempt.atNanos
        }
        for flag in raised { state.flagCounts[flag, default: 0] += 1 }
        state.order.append(id)
        while state.order.count > settings.maxAttempts {
            let oldest = state.order.removeFirst()
            state.droppedAttempts += 1
            guard state.deliveries.contains(oldest) else { continue }
            let emptied = state.deliveries.modify(oldest) { owner in !owner.attempts.dropOldest() }
            guard emptied, let owner = state.deliveries.remove(oldest) else { continue }
            state.deferred.remove(oldest)
            let ownerKey = Key(owner.sender, owner.recipient)
            if state.latest[ownerKey] == oldest { state.latest[ownerKey] = nil }
        }
        return raised
    }

    /// Joins `attempt` to the delivery `latest` names when it continues it (`continued`), or
    /// starts a new one and names it in `latest`. `bounced`: when its recipient last bounced.
    private static func join(
        _ attempt: Attempt, latest: inout Int, deliveries: inout DeliveryTable, nextID: inout Int, bounced: Int64?,
        settings: AuditSettings, raised: inout [DeliveryFlag]
    ) -> (id: Int, deferred: Bool, continued: Bool) {
        if latest != 0, deliveries.read(latest, { $0.continues(with: attempt) }) == true {
            // In place: the delivery's attempts are not copied to append one.
            let deferred = deliveries.modify(latest) { delivery in
                Self.append(attempt, to: &delivery, settings: settings, raised: &raised)
                return delivery.outcome == .deferred && !delivery.flags.contains(.gaveUp)
            }
            return (latest, deferred, true)
        }
        let id = nextID
        nextID += 1
        var delivery = Delivery(id: id, first: attempt)
        if let bounced, Double(attempt.atNanos - bounced) / 1e9 <= settings.bounceMemory, delivery.flag(.sentAfterBounce) {
            raised.append(.sentAfterBounce)
        }
        let deferred = delivery.outcome == .deferred
        deliveries.append(consume delivery)
        latest = id
        return (id, deferred, false)
    }

    /// Appends a further attempt to its delivery and raises the flags it earns.
    private static func append(_ attempt: Attempt, to delivery: inout Delivery, settings: AuditSettings, raised: inout [DeliveryFlag]) {
        let previous = delivery.attempts.latest
        let interval = Double(attempt.atNanos - previous.atNanos) / 1e9
        if previous.permanent {
            if delivery.flag(.retryAfterPermanent) { raised.append(.retryAfterPermanent) }
            // Refused at RCPT, neither side carries a Message-ID: a retry of the same message and
            // a new message look alike, and both are faults.
            if previous.messageID == nil || attempt.messageID == nil, delivery.flag(.sentAfterBounce) {
                raised.append(.sentAfterBounce)
            }
        }
        if previous.temporary || previous.reply == nil {
            let minimum = max(settings.minRetryInterval, previous.retryAfter ?? 0)
            if interval < minimum, delivery.flag(.retryTooSoon) { raised.append(.retryTooSoon) }
        }
        delivery.attempts.append(attempt)
        let intervals = delivery.intervals
        if intervals.count >= 3, !zip(intervals, intervals.dropFirst()).contains(where: { Delivery.grows($0, $1) }),
            delivery.flag(.noBackoff)
        {
            raised.append(.noBackoff)
        }
    }

    /// `gave-up`: deferred deliveries with no attempt for `--give-up-after` by `nowNanos`.
    func sweep(nowNanos: Int64) {
        guard enabled else { return }
        let horizon = nowNanos - Int64(settings.giveUpAfter * 1e9)
        let raised = state.withLock { state -> Int in
            var raised = 0
            for id in state.deferred {
                guard let last = state.deliveries[id]?.lastNanos else {
                    state.deferred.remove(id)
                    continue
                }
                guard last <= horizon else { continue }
                state.deferred.remove(id)
                if state.deliveries.modify(id, { $0.flag(.gaveUp) }) {
                    raised += 1
                    state.flagCounts[.gaveUp, default: 0] += 1
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
            let matching = state.deliveries.all.filter(filter.matches).sorted {
                ($0.lastNanos, $0.id) > ($1.lastNanos, $1.id)
            }
            let items = start < matching.count ? Array(matching[start..<min(matching.count, start + limit)]) : []
            return (matching.count, items, state.version)
        }
    }

    /// The attempts kept whose time is at or after `sinceNanos`, oldest first.
    func attempts(sinceNanos: Int64) -> [Attempt] {
        state.withLock { state in
            state.deliveries.all.flatMap { $0.attempts.filter { $0.atNanos >= sinceNanos } }.sorted { $0.atNanos < $1.atNanos }
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

    /// A mailbox's deliveries kept, and how many of them carry each flag now.
    func counts(mailbox: String) -> [String: Int] {
        let deliveries = self.deliveries(Filter(mailbox: mailbox), start: 0, limit: 1_000_000).items
        var counts = ["deliveries": deliveries.count]
        for flag in DeliveryFlag.allCases { counts[flag.rawValue] = deliveries.filter { $0.flags.contains(flag) }.count }
        return counts
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

    /// Writes the attempts recorded since the last flush to `attempts.jsonl`; past four times
    /// `--max-attempts` lines written, rewrites the file with the attempts kept.
    func flush() {
        guard let file else { return }
        let (pending, compact) = state.withLock { state -> ([Attempt], [Attempt]?) in
            let pending = state.unwritten
            state.unwritten = []
            state.writtenSinceCompaction += pending.count
            // Rewritten when four times what is kept has been appended (not every --max-attempts).
            guard state.writtenSinceCompaction > 4 * max(settings.maxAttempts, 1000) else { return (pending, nil) }
            state.writtenSinceCompaction = 0
            return (pending, Self.kept(state))
        }
        if let compact {
            file.write(compact, replacing: true)
        } else if !pending.isEmpty {
            file.write(pending)
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

    private func load(_ file: JSONLinesFile) {
        let attempts = file.read(Attempt.self)
        state.withLock { state in
            // The attempts of a connection share one origin again, as when they were recorded.
            var origins: [String: Attempt.Origin] = [:]
            for var attempt in attempts {
                let key = attempt.session + " " + attempt.client + " " + attempt.sender
                if let shared = origins[key] { attempt.origin = shared } else { origins[key] = attempt.origin }
                _ = Self.add(attempt, to: &state, settings: settings)
            }
            state.writtenSinceCompaction = state.order.count
        }
    }
}

/// The deliveries by id. Ids are handed out in order and the oldest deliveries go first, so an
/// array indexed by `id - first` (with holes for deliveries already gone, trimmed from the
/// front) rather than a hash table: a profile of 1 KiB messages had the table's hashing and
/// growth at a quarter of the audit's cost.
struct DeliveryTable {
    private var slots: [Delivery?] = []
    /// Slots before `head` are gone.
    private var head = 0
    /// The id of `slots[0]`.
    private var first = 1
    private(set) var count = 0

    private func slot(_ id: Int) -> Int? {
        let index = id - first
        return index >= head && index < slots.count ? index : nil
    }

    subscript(id: Int) -> Delivery? {
        slot(id).flatMap { slots[$0] }
    }

    /// `body` of a delivery where it is, nil when it is gone (the subscript returns a copy: a
    /// retain and a release of each reference of its attempts).
    func read<Result>(_ id: Int, _ body: (Delivery) -> Result) -> Result? {
        guard let index = slot(id), slots[index] != nil else { return nil }
        return body(slots[index].unsafelyUnwrapped)
    }

    func contains(_ id: Int) -> Bool {
        slot(id).map { slots[$0] != nil } ?? false
    }

    mutating func reserveCapacity(_ capacity: Int) {
        slots.reserveCapacity(capacity)
    }

    /// Adds the delivery with the next id (moved in: a copy was a retain and a release of each
    /// of its attempt's references).
    mutating func append(_ delivery: consuming Delivery) {
        let id = delivery.id
        if slots.isEmpty { first = id }
        precondition(id == first + slots.count, "deliveries are added in id order")
        slots.append(consume delivery)
        count += 1
    }

    /// Changes a delivery where it is (it must be there).
    mutating func modify<Result>(_ id: Int, _ body: (inout Delivery) -> Result) -> Result {
        let index = slot(id)!
        return body(&slots[index]!)
    }

    mutating func remove(_ id: Int) -> Delivery? {
        guard let index = slot(id), let delivery = slots[index] else { return nil }
        slots[index] = nil
        count -= 1
        while head < slots.count, slots[head] == nil { head += 1 }
        if head >= 1024, head * 2 >= slots.count {
            slots.removeFirst(head)
            first += head
            head = 0
        }
        return delivery
    }

    var all: [Delivery] { slots[head...].compactMap { $0 } }
}
