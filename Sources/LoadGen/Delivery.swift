import Foundation
import Histogram
import Synchronization

/// One message captured by the sink at the end of the mail path, named by the trace id the
/// load generator stamped on it (`X-Swallow-Trace: <run>/<seq>`).
public struct Delivery: Sendable {
    public var traceID: String
    public var capturedAt: Date

    public init(traceID: String, capturedAt: Date) {
        self.traceID = traceID
        self.capturedAt = capturedAt
    }
}

/// Where deliveries are read from: a sink's event stream, in process or over HTTP. LoadGen
/// knows no sink; whoever composes the run plugs one in. The stream must be subscribed when
/// `deliveries()` returns, so nothing sent afterwards is missed.
public protocol DeliverySource: Sendable {
    func deliveries() -> AsyncStream<Delivery>
}

/// Matches deliveries to what this run sent: delivery latency (captured minus scheduled, in
/// wall-clock time), delivered, lost and duplicated messages.
final class DeliveryTracker: Sendable {
    struct State {
        var scheduled: [Int: (offset: Double, template: String)] = [:]
        var accepted = Set<Int>()
        var delivered = Set<Int>()
        var duplicates = 0
        var foreign = 0
        var latency = Recorder.histogram()
        var perTemplate: [String: Histogram<UInt64>] = [:]
        var waiter: CheckedContinuation<Void, Never>?
        var finished = false
    }

    let runID: String
    let startedAt: Date
    let state = Mutex(State())

    init(runID: String, startedAt: Date) {
        self.runID = runID
        self.startedAt = startedAt
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
            let latency = delivery.capturedAt.timeIntervalSince(startedAt) - due.offset
            let micros = UInt64(max(1, latency * 1_000_000))
            _ = state.latency.record(micros)
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
