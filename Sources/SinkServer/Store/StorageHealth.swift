import Logging
import Synchronization

/// A storage operation an API request needed failed (answered 500 naming it).
public struct StorageFailure: Error, CustomStringConvertible, Sendable {
    public var component: StorageHealth.Component
    public var operation: String
    public var underlying: String

    public var description: String { "storage error: \(component.rawValue): \(operation): \(underlying)" }
}

/// Where storage failures go instead of `try?`: each is logged through swift-log, counted
/// (`/metrics`: `swallow_storage_errors_total{component}`), and marks the store `degraded`
/// (`/api/v1/stats`, `swallow_storage_degraded`) until that component next succeeds.
/// API requests that need the failing part answer 500 with what failed.
public final class StorageHealth: Sendable {
    /// What failed: the search index, the message files and journal.
    public enum Component: String, Sendable, CaseIterable {
        case index, disk
        /// The delivery audit's files (`attempts.jsonl`, `timeline.jsonl`).
        case audit
    }

    private struct State {
        var errors: [Component: Int] = [:]
        var degraded: [Component: String] = [:]
    }

    private let state = Mutex(State())
    private let logger: Logger

    public init(logger: Logger) {
        self.logger = logger
    }

    /// Records a failure of `what` (a short verb phrase: "index a batch of 500 messages").
    public func failed(_ component: Component, _ what: String, _ error: any Error) {
        logger.error("storage error", metadata: ["component": "\(component.rawValue)", "operation": "\(what)", "error": "\(error)"])
        state.withLock { state in
            state.errors[component, default: 0] += 1
            state.degraded[component] = "\(component.rawValue): \(what): \(error)"
        }
    }

    /// The component worked again: no longer degraded (its error count stays).
    public func succeeded(_ component: Component) {
        state.withLock { state in
            if state.degraded[component] != nil { state.degraded[component] = nil }
        }
    }

    /// Why the store is degraded (the components' last failures, joined), nil when healthy.
    public var degraded: String? {
        state.withLock { state in
            state.degraded.isEmpty ? nil : Component.allCases.compactMap { state.degraded[$0] }.joined(separator: "; ")
        }
    }

    /// Failures so far, by component.
    public var errorCounts: [String: Int] {
        state.withLock { state in
            Dictionary(uniqueKeysWithValues: Component.allCases.map { ($0.rawValue, state.errors[$0] ?? 0) })
        }
    }

    /// The Prometheus lines for `/metrics`.
    func metricsText() -> String {
        let (errors, degraded) = state.withLock { ($0.errors, !$0.degraded.isEmpty) }
        var text =
            "# HELP swallow_storage_errors_total Storage operations that failed, by component.\n"
            + "# TYPE swallow_storage_errors_total counter\n"
        for component in Component.allCases {
            text += "swallow_storage_errors_total{component=\"\(component.rawValue)\"} \(errors[component] ?? 0)\n"
        }
        text += "# HELP swallow_storage_degraded 1 while a storage component is failing.\n# TYPE swallow_storage_degraded gauge\n"
        text += "swallow_storage_degraded \(degraded ? 1 : 0)\n"
        return text
    }
}
