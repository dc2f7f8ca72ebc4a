import Foundation
import NIOCore
import Synchronization

/// What every event loop of a run shares; fixed before the first message.
struct RunPlan: Sendable {
    var scenario: Scenario
    var renderer: Renderer
    var recorder: Recorder
    var tracker: DeliveryTracker?
    var setup: LoadConnection.Setup
    var connectTimeout: TimeAmount
    var perConnection: Int
    var shard: Shard
    /// Uptime nanoseconds of time zero, and the same instant on the wall clock.
    var started: UInt64
    var startedDate: Date
    /// Closed loop: sequence numbers are handed out from here, up to `count` or `deadline`.
    var closed: Bool
    var counter: Counter
    var deadline: UInt64?
    var trace: [(Double, String?)]
    var seed: UInt64

    /// Numbers the messages of a run across its event loops.
    final class Counter: Sendable {
        private let value = Atomic<Int>(0)

        func next() -> Int { value.wrappingAdd(1, ordering: .relaxed).oldValue }
    }
}
