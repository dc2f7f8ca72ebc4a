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
        var phases: [String: Histogram<UInt64>] = [:]
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

    func record(_ outcome: Outcome, final: Bool) {
        state.withLock { state in
            state.inFlight -= 1
            if let code = outcome.reply?.code.rawValue {
                state.replies[code, default: 0] += 1
            }
            guard final else {
                state.tempfailed += 1
                return
            }
            let micros = max(1, outcome.latency / 1000)
            state.sent += 1
            _ = state.latency.record(micros)
            _ = state.lag.record(max(1, outcome.lag / 1000))
            // Mutated in place (`[key, default:]`): copying a histogram out and back would copy its counts.
            state.perTemplate[outcome.template, default: (0, 0, Recorder.histogram())].sent += 1
            _ = state.perTemplate[outcome.template, default: (0, 0, Recorder.histogram())].latency.record(micros)
            let second = Int(outcome.scheduledOffset)
            state.timeline[second, default: (0, 0, 0, Recorder.histogram(digits: .two))].sent += 1
            _ = state.timeline[second, default: (0, 0, 0, Recorder.histogram(digits: .two))].latency.record(micros)
            state.perTarget[outcome.target, default: (0, 0, 0, 0, Recorder.histogram())].sent += 1
            _ = state.perTarget[outcome.target, default: (0, 0, 0, 0, Recorder.histogram())].latency.record(micros)
            switch outcome.reply?.code.rawValue {
            case let code? where code / 100 == 2: state.perTarget[outcome.target]?.accepted += 1
            case let code? where code / 100 == 5: state.perTarget[outcome.target]?.rejected += 1
            default: state.perTarget[outcome.target]?.failed += 1
            }
            switch outcome.reply?.code.rawValue {
            case let code? where code / 100 == 2:
                state.accepted += 1
                state.perTemplate[outcome.template]?.accepted += 1
                state.timeline[second]?.accepted += 1
            case let code? where code / 100 == 5:
                state.rejected += 1
                state.timeline[second]?.errors += 1
                state.errors["\(outcome.phase) \(code)", default: 0] += 1
            case let code?:
                state.failed += 1
                state.timeline[second]?.errors += 1
                state.errors["\(outcome.phase) \(code)", default: 0] += 1
            case nil:
                state.failed += 1
                state.timeline[second]?.errors += 1
                state.errors["\(outcome.phase) \(outcome.error ?? "error")", default: 0] += 1
            }
            let phases = outcome.phases
            for (name, value) in [
                ("connect", phases.connect), ("banner", phases.banner), ("ehlo", phases.ehlo), ("tls", phases.tls),
                ("auth", phases.auth), ("mail", phases.mail), ("rcpt", phases.rcpt), ("data", phases.data),
                ("final", phases.final),
            ] {
                guard let value else { continue }
                _ = state.phases[name, default: Recorder.histogram()].record(Swift.max(1, value / 1000))
            }
        }
    }

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
