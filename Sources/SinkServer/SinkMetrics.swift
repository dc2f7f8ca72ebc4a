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
    private let faults = Mutex<[String: Counter]>([:])
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
    }

    public init() {
        connections = registry.makeCounter(name: "swallow_smtp_connections_total", help: "SMTP connections accepted")
        accepted = registry.makeCounter(name: "swallow_smtp_messages_accepted_total", help: "Messages answered with 250 after DATA or BDAT LAST")
        acceptedBytes = registry.makeCounter(name: "swallow_smtp_message_bytes_total", help: "Bytes of accepted messages")
        storedGauge = registry.makeGauge(name: "swallow_store_messages", help: "Messages in the store")
        openConnections = registry.makeGauge(name: "swallow_smtp_open_connections", help: "Open SMTP connections")
        dropped = registry.makeCounter(name: "swallow_smtp_messages_dropped_total", help: "Messages answered with 250 by a drop rule and not kept")
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

    func accepted(bytes: Int) {
        accepted.increment()
        acceptedBytes.increment(by: Int64(bytes))
        counts.withLock {
            $0.accepted += 1
            $0.acceptedBytes += bytes
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

    /// The exposition text, with the gauges brought up to date.
    func render(storedMessages: Int, openConnections open: Int) -> [UInt8] {
        storedGauge.set(Double(storedMessages))
        openConnections.set(Double(open))
        var buffer: [UInt8] = []
        registry.emit(into: &buffer)
        return buffer
    }
}
