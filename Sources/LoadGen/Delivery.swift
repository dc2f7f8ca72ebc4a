import Foundation
import Histogram
import MailMessage
import Synchronization

/// One message captured by the sink at the end of the mail path, named by the trace id the
/// load generator stamped on it (`X-Swallow-Trace: <run>/<seq>`).
public struct Delivery: Sendable {
    public var traceID: String
    public var capturedAt: Date
    /// The message as captured, for `expect.content` (nil when the source does not read it).
    public var raw: [UInt8]?
    /// When the sink is a proxy (`swallow serve --upstream`): how long its upstream took to
    /// answer the message, the relay's own share of the delivery latency.
    public var relayLatencyMs: Double?

    public init(traceID: String, capturedAt: Date, raw: [UInt8]? = nil, relayLatencyMs: Double? = nil) {
        self.traceID = traceID
        self.capturedAt = capturedAt
        self.raw = raw
        self.relayLatencyMs = relayLatencyMs
    }
}

/// Where deliveries are read from: a sink's event stream, in process or over HTTP. LoadGen
/// knows no sink; whoever composes the run plugs one in. The stream must be subscribed when
/// `deliveries()` returns, so nothing sent afterwards is missed.
public protocol DeliverySource: Sendable {
    func deliveries() async -> AsyncStream<Delivery>
}

/// Matches deliveries to what this run sent: delivery latency (captured minus scheduled, in
/// wall-clock time), delivered, lost and duplicated messages.
final class DeliveryTracker: Sendable {
    struct State {
        var scheduled: [Int: (offset: Double, template: String)] = [:]
        var otp: [Int: String] = [:]
        /// Per content expectation: messages checked, and those that failed.
        var contentChecked: [Int] = []
        var contentFailed: [Int] = []
        var accepted = Set<Int>()
        var delivered = Set<Int>()
        var duplicates = 0
        var foreign = 0
        var latency = Recorder.histogram()
        /// The proxy hop's upstream latency, when the sink measured one.
        var relayLatency: Histogram<UInt64>?
        var perTemplate: [String: Histogram<UInt64>] = [:]
        /// Deliveries per second of the run (by capture time).
        var perSecond: [Int: Int] = [:]
        var waiter: CheckedContinuation<Void, Never>?
        var finished = false
    }

    let runID: String
    let startedAt: Date
    let content: [ContentExpectation]
    let state: Mutex<State>

    init(runID: String, startedAt: Date, content: [ContentExpectation] = []) {
        self.runID = runID
        self.startedAt = startedAt
        self.content = content
        var initial = State()
        initial.contentChecked = Array(repeating: 0, count: content.count)
        initial.contentFailed = Array(repeating: 0, count: content.count)
        self.state = Mutex(initial)
    }

    var deliveredCount: Int { state.withLock { $0.delivered.count } }

    /// The OTP rendered into a message, for content checks.
    func rendered(seq: Int, otp: String?) {
        guard let otp, !content.isEmpty else { return }
        state.withLock { $0.otp[seq] = otp }
    }

    func scheduled(seq: Int, offset: Double, template: String) {
        state.withLock { $0.scheduled[seq] = (offset, template) }
    }

    func accepted(seq: Int) {
        state.withLock { _ = $0.accepted.insert(seq) }
    }

    func record(_ delivery: Delivery) {
        let prefix = runID + "/"
        guard delivery.traceID.hasPrefix(prefix), let seq = Int(delivery.traceID.dropFirst(prefix.count)) else {
            state.withLock { $0.foreign += 1 }
            return
        }
        let waiter = state.withLock { state -> CheckedContinuation<Void, Never>? in
            guard let due = state.scheduled[seq] else {
                state.foreign += 1
                return nil
            }
            guard state.delivered.insert(seq).inserted else {
                state.duplicates += 1
                return nil
            }
            if let raw = delivery.raw, content.contains(where: { $0.template == due.template }) {
                let parsed = ParsedMessage(bytes: raw)
                for (index, check) in content.enumerated() where check.template == due.template {
                    state.contentChecked[index] += 1
                    if !check.holds(for: parsed, seq: seq, runID: runID, otp: state.otp[seq]) { state.contentFailed[index] += 1 }
                }
            }
            let sinceStart = delivery.capturedAt.timeIntervalSince(startedAt)
            state.perSecond[max(0, Int(sinceStart)), default: 0] += 1
            let latency = sinceStart - due.offset
            let micros = UInt64(max(1, latency * 1_000_000))
            _ = state.latency.record(micros)
            if let relay = delivery.relayLatencyMs {
                if state.relayLatency == nil { state.relayLatency = Recorder.histogram() }
                _ = state.relayLatency!.record(UInt64(max(1, relay * 1000)))
            }
            _ = state.perTemplate[due.template, default: Recorder.histogram()].record(micros)
            return state.finished && state.accepted.isSubset(of: state.delivered) ? state.waiter.take() : nil
        }
        waiter?.resume()
    }

    /// After the last send: waits until every accepted message was delivered, or `grace` passed.
    func waitForDeliveries(grace: Double) async {
        await withTaskGroup(of: Void.self) { group in
            group.addTask {
                await withCheckedContinuation { continuation in
                    let done = self.state.withLock { state -> Bool in
                        state.finished = true
                        if state.accepted.isSubset(of: state.delivered) { return true }
                        state.waiter = continuation
                        return false
                    }
                    if done { continuation.resume() }
                }
            }
            group.addTask { try? await Task.sleep(for: .seconds(grace)) }
            await group.next()
            group.cancelAll()
            // Release the waiter if the grace period ended first.
            self.state.withLock { $0.waiter.take() }?.resume()
        }
    }
}
