import Foundation
import Histogram
import Synchronization

/// The sink's volume over time: per bucket, messages accepted, refusals by class, drops,
/// bytes, sessions opened, and an HdrHistogram of accepted transactions' times (MAIL to the
/// final reply, in microseconds, two significant digits).
///
/// Buckets are 10 s wide for the last hour, then folded into 1 min buckets, kept for
/// `--stats-retention`. With `--data`, what changed is appended to `timeline.jsonl` by
/// `flush()` (each line a delta: lines of the same bucket add up when read back), and the file
/// is rewritten whole once it holds more lines than buckets kept.
final class Timeline: Sendable {
    static let fineWidth: Int64 = 10
    static let coarseWidth: Int64 = 60
    /// Fine buckets older than this are folded into minutes.
    static let fineSpan: Int64 = 3600

    struct Counts: Sendable {
        var accepted = 0
        var refused4xx = 0
        var refused5xx = 0
        var dropped = 0
        var bytes = 0
        var sessions = 0
        var transactions: Histogram<UInt32>?

        var isEmpty: Bool { accepted == 0 && refused4xx == 0 && refused5xx == 0 && dropped == 0 && sessions == 0 }

        mutating func add(_ other: Counts) {
            accepted += other.accepted
            refused4xx += other.refused4xx
            refused5xx += other.refused5xx
            dropped += other.dropped
            bytes += other.bytes
            sessions += other.sessions
            if let histogram = other.transactions {
                if transactions == nil { transactions = Timeline.makeHistogram() }
                transactions!.add(histogram)
            }
        }

        /// Messages accepted, refused and dropped: the volume `top`'s burst indicator compares.
        var volume: Int { accepted + refused4xx + refused5xx + dropped }
    }

    private struct State {
        /// By start second (a multiple of 10).
        var fine: [Int64: Counts] = [:]
        /// By start second (a multiple of 60).
        var coarse: [Int64: Counts] = [:]
        /// With `--data`: what changed since the last flush, by (start, width).
        var unsaved: [BucketKey: Counts] = [:]
        var linesWritten = 0
        var lastFold: Int64 = 0
    }

    struct BucketKey: Hashable {
        var start: Int64
        var width: Int64
    }

    private let state = Mutex(State())
    let retention: Double
    private let file: JSONLinesFile?

    init(retention: Double, dataDirectory: String? = nil, health: StorageHealth? = nil) {
        self.retention = retention
        self.file = dataDirectory.map { JSONLinesFile(path: ($0 as NSString).appendingPathComponent("timeline.jsonl"), health: health) }
        if let file { load(file) }
    }

    static func makeHistogram() -> Histogram<UInt32> {
        Histogram<UInt32>(lowestDiscernibleValue: 1, highestTrackableValue: 600_000_000, numberOfSignificantValueDigits: .two)
    }

    // MARK: Recording

    private func update(atNanos: Int64, _ body: (inout Counts) -> Void) {
        let second = atNanos / 1_000_000_000
        let start = second - second % Self.fineWidth
        let persist = file != nil
        state.withLock { state in
            if second - state.lastFold >= Self.fineWidth {
                Self.fold(&state, now: second, retention: Int64(retention))
                state.lastFold = second
            }
            body(&state.fine[start, default: Counts()])
            if persist { body(&state.unsaved[BucketKey(start: start, width: Self.fineWidth), default: Counts()]) }
        }
    }

    func session(atNanos: Int64) {
        update(atNanos: atNanos) { $0.sessions += 1 }
    }

    /// An accepted message: its size and its transaction's time (MAIL to the reply).
    func accepted(atNanos: Int64, bytes: Int, transactionNanos: Int64) {
        let micros = UInt64(max(1, min(transactionNanos / 1000, 600_000_000)))
        update(atNanos: atNanos) { counts in
            counts.accepted += 1
            counts.bytes += bytes
            if counts.transactions == nil { counts.transactions = Self.makeHistogram() }
            _ = counts.transactions!.record(micros)
        }
    }

    /// A refusal of MAIL, RCPT, DATA or a message's end, by its code.
    func refused(atNanos: Int64, code: Int) {
        update(atNanos: atNanos) { counts in
            if code / 100 == 4 { counts.refused4xx += 1 } else { counts.refused5xx += 1 }
        }
    }

    /// A message a drop rule took, or a transaction a rule's disconnect or hang ended.
    func dropped(atNanos: Int64) {
        update(atNanos: atNanos) { $0.dropped += 1 }
    }

    /// Folds fine buckets older than an hour into minutes, and forgets what is past retention.
    private static func fold(_ state: inout State, now: Int64, retention: Int64) {
        let fineHorizon = now - fineSpan
        for (start, counts) in state.fine where start < fineHorizon {
            state.fine[start] = nil
            state.coarse[start - start % coarseWidth, default: Counts()].add(counts)
        }
        let horizon = now - retention
        for start in state.coarse.keys where start + coarseWidth <= horizon { state.coarse[start] = nil }
        for start in state.fine.keys where start + fineWidth <= horizon { state.fine[start] = nil }
    }

    // MARK: Reading

    struct Bucket: Encodable, Sendable {
        var at: String
        var accepted: Int
        var refused4xx: Int
        var refused5xx: Int
        var dropped: Int
        var bytes: Int
        var sessions: Int
        var transactionMs: Percentiles

        struct Percentiles: Encodable, Sendable {
            /// nil (JSON null) when the bucket accepted nothing.
            var p50: Double?
            var p99: Double?

            func encode(to encoder: any Encoder) throws {
                var container = encoder.container(keyedBy: CodingKeys.self)
                try container.encode(p50, forKey: .p50)
                try container.encode(p99, forKey: .p99)
            }

            enum CodingKeys: String, CodingKey { case p50, p99 }
        }

        enum CodingKeys: String, CodingKey {
            case at = "At", accepted = "Accepted", refused4xx = "Refused4xx", refused5xx = "Refused5xx", dropped = "Dropped"
            case bytes = "Bytes", sessions = "Sessions", transactionMs = "TransactionMs"
        }
    }

    /// The buckets of `step` seconds from `from` (rounded down to a step) up to `to`, empty ones
    /// included. Data older than an hour is held per minute: a step finer than that shows each
    /// minute in the step where it starts.
    func buckets(from: Int64, to: Int64, step: Int64) -> [Bucket] {
        let first = from - ((from % step) + step) % step
        let count = Int(max(0, (to - first + step - 1) / step))
        var totals = [Counts](repeating: Counts(), count: count)
        state.withLock { state in
            Self.fold(&state, now: WallClock.nanos() / 1_000_000_000, retention: Int64(retention))
            for buckets in [state.fine, state.coarse] {
                for (start, counts) in buckets where start >= first && start < to {
                    totals[Int((start - first) / step)].add(counts)
                }
            }
        }
        return Self.render(totals, first: first, step: step)
    }

    private static func render(_ totals: [Counts], first: Int64, step: Int64) -> [Bucket] {
        totals.enumerated().map { index, counts in
            let at = first + Int64(index) * step
            let p50 = counts.transactions.map { Double($0.valueAtPercentile(50)) / 1000 }
            let p99 = counts.transactions.map { Double($0.valueAtPercentile(99)) / 1000 }
            return Bucket(
                at: WallClock.rfc3339(nanos: at * 1_000_000_000), accepted: counts.accepted, refused4xx: counts.refused4xx,
                refused5xx: counts.refused5xx, dropped: counts.dropped, bytes: counts.bytes, sessions: counts.sessions,
                transactionMs: .init(p50: p50, p99: p99))
        }
    }

    /// The same buckets made from attempts (a mailbox's timeline, from the attempts kept):
    /// accepted and dropped messages once per transaction, refusals once per attempt, and as
    /// sessions those that made an attempt in the bucket.
    static func buckets(of attempts: [Attempt], from: Int64, to: Int64, step: Int64) -> [Bucket] {
        let first = from - ((from % step) + step) % step
        let count = Int(max(0, (to - first + step - 1) / step))
        var totals = [Counts](repeating: Counts(), count: count)
        var transactions = Set<String>()
        var sessions = Set<String>()
        for attempt in attempts {
            let second = attempt.atNanos / 1_000_000_000
            guard second >= first, second < to else { continue }
            let index = Int((second - first) / step)
            if sessions.insert("\(index) \(attempt.session)").inserted { totals[index].sessions += 1 }
            if attempt.temporary && !attempt.dropped {
                totals[index].refused4xx += 1
                continue
            }
            if attempt.permanent {
                totals[index].refused5xx += 1
                continue
            }
            guard transactions.insert("\(attempt.session) \(attempt.transactionNanos)").inserted else { continue }
            if attempt.dropped || attempt.reply == nil {
                totals[index].dropped += 1
            } else {
                totals[index].accepted += 1
                totals[index].bytes += attempt.size
                if totals[index].transactions == nil { totals[index].transactions = makeHistogram() }
                let micros = UInt64(max(1, min((attempt.atNanos - attempt.transactionNanos) / 1000, 600_000_000)))
                _ = totals[index].transactions!.record(micros)
            }
        }
        return render(totals, first: first, step: step)
    }

    /// The volume (accepted, refused, dropped) of each whole minute in `[from, to)`, by minute.
    func minuteVolumes(from: Int64, to: Int64) -> [Int] {
        let count = Int(max(0, (to - from) / 60))
        var volumes = [Int](repeating: 0, count: count)
        state.withLock { state in
            for buckets in [state.fine, state.coarse] {
                for (start, counts) in buckets where start >= from && start < from + Int64(count) * 60 {
                    volumes[Int((start - from) / 60)] += counts.volume
                }
            }
        }
        return volumes
    }

    // MARK: Persistence

    private struct Line: Codable {
        var start: Int64
        var width: Int64
        var accepted, refused4xx, refused5xx, dropped, bytes, sessions: Int
        /// The transaction histogram as [value, count] pairs (microseconds; each value the
        /// lowest of its bucket), and its exact least and greatest values, which percentiles are
        /// bounded by.
        var transactions: [[UInt64]]?
        var transactionsMin: UInt64?
        var transactionsMax: UInt64?

        init(_ key: BucketKey, _ counts: Counts) {
            start = key.start
            width = key.width
            accepted = counts.accepted
            refused4xx = counts.refused4xx
            refused5xx = counts.refused5xx
            dropped = counts.dropped
            bytes = counts.bytes
            sessions = counts.sessions
            transactions = counts.transactions.map { histogram in
                histogram.recordedValues().map { [histogram.lowestEquivalentForValue($0.value), UInt64($0.count)] }
            }
            transactionsMin = counts.transactions.map(\.min)
            transactionsMax = counts.transactions.map(\.maxRecorded)
        }

        var counts: Counts {
            var counts = Counts(
                accepted: accepted, refused4xx: refused4xx, refused5xx: refused5xx, dropped: dropped, bytes: bytes, sessions: sessions)
            if let transactions {
                var histogram = Timeline.makeHistogram()
                // The buckets holding the least and the greatest value get them exactly, so the
                // percentiles read back as they were written.
                let least = transactionsMin ?? 0, greatest = transactionsMax ?? 0
                for pair in transactions where pair.count == 2 && pair[1] > 0 {
                    let (value, count) = (pair[0], UInt32(clamping: pair[1]))
                    let hasLeast = histogram.valuesAreEquivalent(value, least)
                    let hasGreatest = histogram.valuesAreEquivalent(value, greatest)
                    if hasLeast && hasGreatest && count >= 2 {
                        _ = histogram.record(least, count: count - 1)
                        _ = histogram.record(greatest)
                    } else {
                        _ = histogram.record(hasLeast ? least : hasGreatest ? greatest : value, count: count)
                    }
                }
                counts.transactions = histogram
            }
            return counts
        }
    }

    /// Appends what changed since the last flush; rewrites the file when it has grown past
    /// twice the buckets kept.
    func flush() {
        guard let file else { return }
        let (changes, whole) = state.withLock { state -> ([(BucketKey, Counts)], [(BucketKey, Counts)]?) in
            let changes = state.unsaved.map { ($0.key, $0.value) }
            state.unsaved = [:]
            state.linesWritten += changes.count
            let kept = state.fine.count + state.coarse.count
            guard state.linesWritten > max(2 * kept, 512) else { return (changes, nil) }
            state.linesWritten = kept
            return (
                changes,
                state.fine.map { (BucketKey(start: $0.key, width: Self.fineWidth), $0.value) }
                    + state.coarse.map { (BucketKey(start: $0.key, width: Self.coarseWidth), $0.value) }
            )
        }
        let lines = (whole ?? changes).sorted(by: { $0.0.start < $1.0.start }).map { Line($0.0, $0.1) }
        if whole != nil {
            file.write(lines, replacing: true)
        } else if !lines.isEmpty {
            file.write(lines)
        }
    }

    private func load(_ file: JSONLinesFile) {
        let lines = file.read(Line.self).filter { $0.width > 0 }
        state.withLock { state in
            for entry in lines {
                if entry.width == Self.coarseWidth {
                    state.coarse[entry.start, default: Counts()].add(entry.counts)
                } else {
                    state.fine[entry.start, default: Counts()].add(entry.counts)
                }
                state.linesWritten += 1
            }
            Self.fold(&state, now: WallClock.nanos() / 1_000_000_000, retention: Int64(retention))
        }
    }
}
