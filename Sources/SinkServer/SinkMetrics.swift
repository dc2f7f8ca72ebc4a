import MailMessage
import Prometheus
import Synchronization

/// The sink's counters, exposed at `/metrics` in Prometheus text format (swift-prometheus).
public final class SinkMetrics: Sendable {
    public let registry = PrometheusCollectorRegistry()
    let connections: Counter
    let accepted: Counter
    let acceptedBytes: Counter
    let storedGauge: Gauge
    let openConnections: Gauge
    let dropped: Counter
    private let rejections = Mutex<[Int: Counter]>([:])
    private let replies = Mutex<[Int: Counter]>([:])
    /// Accepted messages' SMTP phases: MAIL to DATA (`envelope`), DATA to the final dot
    /// (`data`), the final dot to the reply (`reply`: the store, `--fsync`, injected delays), and
    /// MAIL to the reply (`transaction`).
    let phases: PhaseHistograms
    static let phaseNames = ["envelope", "data", "reply", "transaction"]
    private let reply250: Counter, reply354: Counter, reply220: Counter, reply221: Counter
    private let faults = Mutex<[String: Counter]>([:])
    private let relays = Mutex<[String: (Counter, DurationHistogram)]>([:])
    private let attempts = Mutex<[String: Counter]>([:])
    private let acceptedAttempts: Counter
    private let deliveryFlags = Mutex<[String: Counter]>([:])
    /// The same counts, readable for `/api/v1/stats` and `/api/v1/info`.
    let counts = Mutex(Counts())

    struct Counts: Encodable {
        var connections = 0
        var accepted = 0
        var acceptedBytes = 0
        var rejected = 0
        /// Answered 250 by a `drop` rule and not kept.
        var dropped = 0
        var faults = 0
        /// 4xx and 5xx replies by code.
        var rejectedByCode: [String: Int] = [:]
        /// Accepted messages per wall-clock second, the last 64 seconds (a ring).
        fileprivate var perSecond = [Int](repeating: 0, count: 64)
        fileprivate var currentSecond: Int64 = 0

        private enum CodingKeys: String, CodingKey {
            case connections, accepted, acceptedBytes, rejected, dropped, faults, rejectedByCode
        }

        fileprivate mutating func count(at second: Int64) {
            if second != currentSecond {
                if second - currentSecond >= 64 || second < currentSecond {
                    for index in perSecond.indices { perSecond[index] = 0 }
                } else {
                    var clear = currentSecond + 1
                    while clear <= second {
                        perSecond[Int(clear & 63)] = 0
                        clear += 1
                    }
                }
                currentSecond = second
            }
            perSecond[Int(second & 63)] += 1
        }

        /// Accepted per second over the last `seconds` whole seconds (before the current one).
        func rate(over seconds: Int, now: Int64) -> Double {
            guard seconds > 0, seconds < 64 else { return 0 }
            var total = 0
            for back in 1...seconds {
                let second = now - Int64(back)
                guard second <= currentSecond, currentSecond - second < 64 else { continue }
                total += perSecond[Int(second & 63)]
            }
            return Double(total) / Double(seconds)
        }
    }

    public init() {
        connections = registry.makeCounter(name: "swallow_smtp_connections_total", help: "SMTP connections accepted")
        accepted = registry.makeCounter(name: "swallow_smtp_messages_accepted_total", help: "Messages answered with 250 after DATA or BDAT LAST")
        acceptedBytes = registry.makeCounter(name: "swallow_smtp_message_bytes_total", help: "Bytes of accepted messages")
        storedGauge = registry.makeGauge(name: "swallow_store_messages", help: "Messages in the store")
        openConnections = registry.makeGauge(name: "swallow_smtp_open_connections", help: "Open SMTP connections")
        dropped = registry.makeCounter(name: "swallow_smtp_messages_dropped_total", help: "Messages answered with 250 by a drop rule and not kept")
        let registry = registry
        func replyCounter(_ code: Int) -> Counter {
            registry.makeCounter(name: "swallow_smtp_replies_total", labels: [("code", String(code))], help: "SMTP replies by code")
        }
        acceptedAttempts = registry.makeCounter(
            name: "swallow_attempts_total", labels: [("phase", "data-end"), ("class", "2xx")],
            help: "Delivery attempts (one per recipient and transaction) by the phase that decided and the reply's class")
        reply250 = replyCounter(250)
        reply354 = replyCounter(354)
        reply220 = replyCounter(220)
        reply221 = replyCounter(221)
        phases = PhaseHistograms(phases: Self.phaseNames, buckets: Self.phaseBuckets)
    }

    /// Records an accepted message's phase durations once its reply went out.
    func observe(_ timestamps: CaptureTimestamps, replySent: Int64) {
        phases.record(
            timestamps.dataStartNanos - timestamps.mailNanos, timestamps.dataEndNanos - timestamps.dataStartNanos,
            replySent - timestamps.dataEndNanos, replySent - timestamps.mailNanos)
    }

    /// The phases' buckets, in seconds: 50 µs to 30 s.
    static let phaseBuckets: [Duration] = [
        .microseconds(50), .microseconds(100), .microseconds(250), .microseconds(500), .milliseconds(1), .microseconds(2500),
        .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100), .milliseconds(250),
        .milliseconds(500), .seconds(1), .milliseconds(2500), .seconds(5), .seconds(10), .seconds(30),
    ]

    static let phaseHelp =
        "Accepted messages' SMTP phases: envelope (MAIL to DATA), data (DATA to the final dot), reply (the dot to the reply), transaction (MAIL to the reply)"

    /// Counts a reply by code: the codes of every transaction without a lookup, others through
    /// a table.
    func replied(_ code: Int) {
        switch code {
        case 250: reply250.increment()
        case 354: reply354.increment()
        case 220: reply220.increment()
        case 221: reply221.increment()
        default: replyCounter(code).increment()
        }
    }

    /// The counter of replies with `code` (every reply, 2xx to 5xx).
    private func replyCounter(_ code: Int) -> Counter {
        replies.withLock { counters in
            if let counter = counters[code] { return counter }
            let counter = registry.makeCounter(name: "swallow_smtp_replies_total", labels: [("code", String(code))], help: "SMTP replies by code")
            counters[code] = counter
            return counter
        }
    }

    /// Rule names become label values; past this many, further names count as `other`.
    static let maxFaultLabels = 1000

    func faultFired(rule: String) {
        counts.withLock { $0.faults += 1 }
        let counter = faults.withLock { counters in
            if let counter = counters[rule] { return counter }
            let name = counters.count < Self.maxFaultLabels ? rule : "other"
            if let counter = counters[name] { return counter }
            let counter = registry.makeCounter(name: "swallow_faults_total", labels: [("rule", name)], help: "Fault rules fired, by rule")
            counters[name] = counter
            return counter
        }
        counter.increment()
    }

    func droppedMessage() {
        dropped.increment()
        counts.withLock { $0.dropped += 1 }
    }

    /// Counts a 4xx or 5xx reply by its code.
    func connected() {
        connections.increment()
        counts.withLock { $0.connections += 1 }
    }

    /// `atNanos`: when (the wall clock of the connection's loop turn is close enough for a
    /// count per second).
    func accepted(bytes: Int, atNanos: Int64 = WallClock.nanos()) {
        accepted.increment()
        acceptedBytes.increment(by: Int64(bytes))
        let second = atNanos / 1_000_000_000
        counts.withLock {
            $0.accepted += 1
            $0.acceptedBytes += bytes
            $0.count(at: second)
        }
    }

    func rejected(code: Int) {
        counts.withLock {
            $0.rejected += 1
            $0.rejectedByCode[String(code), default: 0] += 1
        }
        let counter = rejections.withLock { counters in
            if let counter = counters[code] { return counter }
            let counter = registry.makeCounter(
                name: "swallow_smtp_rejections_total", labels: [("code", String(code))],
                help: "SMTP replies with a 4xx or 5xx code"
            )
            counters[code] = counter
            return counter
        }
        counter.increment()
    }

    /// A hand-over to an upstream (release, auto-relay, proxy): `swallow_relay_total{outcome}`
    /// and its latency in `swallow_relay_seconds{outcome}`.
    func relayed(outcome: String, latency: Duration) {
        let (counter, histogram) = relays.withLock { relays in
            if let known = relays[outcome] { return known }
            let made = (
                registry.makeCounter(
                    name: "swallow_relay_total", labels: [("outcome", outcome)], help: "Messages handed to an upstream, by outcome"),
                registry.makeDurationHistogram(
                    descriptor: MetricNameDescriptor(
                        namespace: "swallow", metricName: "relay", unitName: "seconds",
                        helpText: "Upstream latency of a hand-over (release, auto-relay, proxy), by outcome"
                    ),
                    labels: [("outcome", outcome)], buckets: Self.relayBuckets
                )
            )
            relays[outcome] = made
            return made
        }
        counter.increment()
        histogram.record(latency)
    }

    /// A delivery attempt: `swallow_attempts_total{phase,class}` (class `2xx`, `4xx`, `5xx`, `none`).
    func attempted(phase: String, class replyClass: String) {
        // Most attempts are messages accepted: that counter without a lookup.
        if phase == "data-end" && replyClass == "2xx" { return acceptedAttempts.increment() }
        let key = phase + " " + replyClass
        let counter = attempts.withLock { counters in
            if let counter = counters[key] { return counter }
            let counter = registry.makeCounter(
                name: "swallow_attempts_total", labels: [("phase", phase), ("class", replyClass)],
                help: "Delivery attempts (one per recipient and transaction) by the phase that decided and the reply's class")
            counters[key] = counter
            return counter
        }
        counter.increment()
    }

    /// A delivery raised an audit flag: `swallow_delivery_flags_total{flag}`.
    func deliveryFlagged(_ flag: String) {
        let counter = deliveryFlags.withLock { counters in
            if let counter = counters[flag] { return counter }
            let counter = registry.makeCounter(
                name: "swallow_delivery_flags_total", labels: [("flag", flag)], help: "Deliveries that raised an audit flag, by flag")
            counters[flag] = counter
            return counter
        }
        counter.increment()
    }

    private static let relayBuckets: [Duration] = [
        .milliseconds(1), .milliseconds(5), .milliseconds(10), .milliseconds(25), .milliseconds(50), .milliseconds(100),
        .milliseconds(250), .milliseconds(500), .seconds(1), .milliseconds(2500), .seconds(5), .seconds(10), .seconds(30),
    ]

    /// The exposition text, with the gauges brought up to date.
    func render(storedMessages: Int, openConnections open: Int) -> [UInt8] {
        storedGauge.set(Double(storedMessages))
        openConnections.set(Double(open))
        var buffer: [UInt8] = []
        registry.emit(into: &buffer)
        phases.emit(name: "swallow_smtp_phase_seconds", help: Self.phaseHelp, label: "phase", into: &buffer)
        return buffer
    }
}

/// `swallow_smtp_phase_seconds`: the four phase histograms of every accepted message, under
/// one lock, written in the text swift-prometheus writes for a `DurationHistogram`.
///
/// Recorded by hand rather than as four `DurationHistogram`s: each of those took its own lock
/// and compared the value with all 18 buckets (an out-of-line `Duration` comparison each), ~3%
/// of the sink's user CPU for a 1 KiB message in `perf record`. Here a value is counted once,
/// in the first bucket that holds it, in nanoseconds; the cumulative counts are summed when
/// rendered.
final class PhaseHistograms: Sendable {
    private let labels: [String]
    private let bounds: [Int64]
    /// Each bound as the exposition writes it (`Duration.bucketRepresentation`).
    private let boundTexts: [String]

    private struct State {
        /// Per phase, `bounds.count + 1` slots (the last: above every bound).
        var slots: [Int]
        var sums: [Int64]
        var counts: [Int]
    }

    private let state: Mutex<State>

    init(phases: [String], buckets: [Duration]) {
        precondition(phases.count == 4, "recorded four phases at a time")
        labels = phases
        bounds = buckets.map { Int64($0.components.seconds) * 1_000_000_000 + $0.components.attoseconds / 1_000_000_000 }
        boundTexts = buckets.map(\.bucketRepresentation)
        state = Mutex(
            State(
                slots: [Int](repeating: 0, count: phases.count * (buckets.count + 1)), sums: [Int64](repeating: 0, count: phases.count),
                counts: [Int](repeating: 0, count: phases.count)))
    }

    /// The four phases' values, in nanoseconds, in the order the phases were given; a negative
    /// value (a phase the message did not have) is not counted.
    func record(_ first: Int64, _ second: Int64, _ third: Int64, _ fourth: Int64) {
        let slots = (slot(first, phase: 0), slot(second, phase: 1), slot(third, phase: 2), slot(fourth, phase: 3))
        state.withLock { state in
            func add(_ slot: Int, _ phase: Int, _ value: Int64) {
                guard slot >= 0 else { return }
                state.slots[slot] += 1
                state.sums[phase] += value
                state.counts[phase] += 1
            }
            add(slots.0, 0, first)
            add(slots.1, 1, second)
            add(slots.2, 2, third)
            add(slots.3, 3, fourth)
        }
    }

    /// Where `value` is counted for `phase`: -1 when it is not.
    private func slot(_ value: Int64, phase: Int) -> Int {
        guard value >= 0 else { return -1 }
        var index = 0
        while index < bounds.count, value > bounds[index] { index += 1 }
        return phase * (bounds.count + 1) + index
    }

    func emit(name: String, help: String, label: String, into buffer: inout [UInt8]) {
        let state = state.withLock { $0 }
        buffer.append(contentsOf: "# HELP \(name) \(help)\n".utf8)
        buffer.append(contentsOf: "# TYPE \(name) histogram\n".utf8)
        let width = bounds.count + 1
        for (phase, value) in labels.enumerated() {
            let labelText = "\(label)=\"\(value)\""
            var cumulative = 0
            for (index, bound) in boundTexts.enumerated() {
                cumulative += state.slots[phase * width + index]
                buffer.append(contentsOf: "\(name)_bucket{\(labelText),le=\"\(bound)\"} \(cumulative)\n".utf8)
            }
            let count = state.counts[phase]
            buffer.append(contentsOf: "\(name)_bucket{\(labelText),le=\"+Inf\"} \(count)\n".utf8)
            buffer.append(contentsOf: "\(name)_sum{\(labelText)} \(Duration.nanoseconds(state.sums[phase]).bucketRepresentation)\n".utf8)
            buffer.append(contentsOf: "\(name)_count{\(labelText)} \(count)\n".utf8)
        }
    }
}
