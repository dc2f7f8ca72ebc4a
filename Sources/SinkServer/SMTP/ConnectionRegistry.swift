import NIOCore
import Synchronization

/// The open SMTP connections of one sink: counted against `maxConnections`, and closed
/// together at shutdown.
final class ConnectionRegistry: Sendable {
    private struct State {
        var channels: [ObjectIdentifier: any Channel] = [:]
        var accepted: UInt64 = 0
        var closed = false
    }

    private let limit: Int
    private let state = Mutex(State())

    init(limit: Int) {
        self.limit = limit
    }

    /// Registers a new connection; returns its sequence number, or nil when over the limit
    /// or shutting down.
    func add(_ channel: any Channel) -> UInt64? {
        state.withLock { state in
            guard !state.closed, state.channels.count < limit else { return nil }
            state.channels[ObjectIdentifier(channel)] = channel
            state.accepted += 1
            return state.accepted
        }
    }

    func remove(_ channel: any Channel) {
        _ = state.withLock { $0.channels.removeValue(forKey: ObjectIdentifier(channel)) }
    }

    var count: Int { state.withLock { $0.channels.count } }

    /// The open connections' channels (tests look at their options).
    var channels: [any Channel] { state.withLock { Array($0.channels.values) } }

    /// Refuses new connections and closes the open ones.
    func closeAll() {
        let open = state.withLock { state in
            state.closed = true
            return Array(state.channels.values)
        }
        for channel in open {
            channel.close(promise: nil)
        }
    }
}
