import Foundation
import Histogram
import SMTPClient
import SMTPProtocol
import Synchronization

/// What happened to each message, gathered while the run goes: HdrHistograms of submission
/// latency (scheduled time to the final reply, in microseconds) overall, per template and per
/// second of the run; phase times; reply codes; errors by phase; the scheduler's lag.
public final class Recorder: Sendable {
    struct Outcome: Sendable {
        public var template: String
        /// The target's `HOST:PORT`.
        public var target: String = ""
        /// Seconds from the run's start the message was due.
        public var scheduledOffset: Double
        /// Nanoseconds from scheduled time to the final reply (or failure).
        public var latency: UInt64
        /// Nanoseconds from scheduled time to the first byte sent.
        public var lag: UInt64
        public var reply: SMTPReply?
        public var phase: String
        public var error: String?
        var phases: SMTPClientConnection.PhaseTimes
    }

    struct State {
        var sent = 0
        var accepted = 0
        var rejected = 0
        var failed = 0
        var tempfailed = 0
        var retries = 0
        var replies: [Int: Int] = [:]
        var errors: [String: Int] = [:]
        var latency = Recorder.histogram()
        var lag = Recorder.histogram()
        var perTemplate: [String: (sent: Int, accepted: Int, latency: Histogram<UInt64>)] = [:]
        var perTarget: [String: (sent: Int, accepted: Int, rejected: Int, failed: Int, latency: Histogram<UInt64>)] = [:]
        /// Per phase, in `State.phaseNames` order (nil until a message has that phase).
        var phaseTimes = [Histogram<UInt64>?](repeating: nil, count: State.phaseNames.count)
        static let phaseNames = ["connect", "banner", "ehlo", "tls", "auth", "mail", "rcpt", "data", "final"]
        /// The phases seen, by name.
        var phases: [String: Histogram<UInt64>] {
            var named: [String: Histogram<UInt64>] = [:]
            for (name, histogram) in zip(State.phaseNames, phaseTimes) { named[name] = histogram }
            return named
        }
        var timeline: [Int: (sent: Int, accepted: Int, errors: Int, latency: Histogram<UInt64>)] = [:]
        var inFlight = 0
    }

    let state = Mutex(State())

    public init() {}

    /// Microseconds, 1 µs to 1 h, 3 significant digits.
    static func histogram(digits: SignificantDigits = .three) -> Histogram<UInt64> {
        var histogram = Histogram<UInt64>(lowestDiscernibleValue: 1, highestTrackableValue: 3_600_000_000, numberOfSignificantValueDigits: digits)
        histogram.autoResize = true
        return histogram
    }

    func started() { state.withLock { $0.inFlight += 1 } }
    func retried() { state.withLock { $0.retries += 1 } }

    /// One message's outcome. One lock, and one lookup per table (each entry is changed in
    /// place): a profile of `swallow load` had this at 10% of its CPU when every table was
    /// looked up two or three times and the phases by name.
    func record(_ outcome: Outcome, final: Bool) {
        let code = outcome.reply?.code.rawValue
        let kind = code.map { $0 / 100 } ?? 0
        state.withLock { state in
            state.inFlight -= 1
            if let code { state.replies[code, default: 0] += 1 }
            guard final else {
                state.tempfailed += 1
                return
            }
            let micros = max(1, outcome.latency / 1000)
            state.sent += 1
            _ = state.latency.record(micros)
            _ = state.lag.record(max(1, outcome.lag / 1000))
            Self.change(&state.perTemplate[outcome.template, default: (0, 0, Recorder.histogram())]) { figures in
                figures.sent += 1
                if kind == 2 { figures.accepted += 1 }
                _ = figures.latency.record(micros)
            }
            Self.change(&state.timeline[Int(outcome.scheduledOffset), default: (0, 0, 0, Recorder.histogram(digits: .two))]) { second in
                second.sent += 1
                if kind == 2 { second.accepted += 1 } else { second.errors += 1 }
                _ = second.latency.record(micros)
            }
            Self.change(&state.perTarget[outcome.target, default: (0, 0, 0, 0, Recorder.histogram())]) { figures in
                figures.sent += 1
                switch kind {
                case 2: figures.accepted += 1
                case 5: figures.rejected += 1
                default: figures.failed += 1
                }
                _ = figures.latency.record(micros)
            }
            switch (kind, code) {
            case (2, _): state.accepted += 1
            case (5, let code?):
                state.rejected += 1
                state.errors["\(outcome.phase) \(code)", default: 0] += 1
            case (_, let code?):
                state.failed += 1
                state.errors["\(outcome.phase) \(code)", default: 0] += 1
            case (_, nil):
                state.failed += 1
                state.errors["\(outcome.phase) \(outcome.error ?? "error")", default: 0] += 1
            }
            // No array of the nine values: it was an allocation per message.
            func add(_ index: Int, _ value: UInt64?) {
                guard let value else { return }
                Self.change(&state.phaseTimes[index]) { histogram in
                    if histogram == nil { histogram = Recorder.histogram() }
                    _ = histogram!.record(Swift.max(1, value / 1000))
                }
            }
            let phases = outcome.phases
            add(0, phases.connect)
            add(1, phases.banner)
            add(2, phases.ehlo)
            add(3, phases.tls)
            add(4, phases.auth)
            add(5, phases.mail)
            add(6, phases.rcpt)
            add(7, phases.data)
            add(8, phases.final)
        }
    }

    @inline(__always)
    private static func change<Value>(_ value: inout Value, _ body: (inout Value) -> Void) { body(&value) }

    /// A snapshot for the progress line: sent, in flight, errors, p50 and p99 in ms.
    public var progress: (sent: Int, inFlight: Int, errors: Int, p50: Double, p99: Double) {
        state.withLock { state in
            (
                state.sent, state.inFlight, state.rejected + state.failed,
                Double(state.latency.valueAtPercentile(50)) / 1000, Double(state.latency.valueAtPercentile(99)) / 1000
            )
        }
    }
}
