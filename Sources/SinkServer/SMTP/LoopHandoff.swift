import NIOCore
import SocketIO
import Synchronization

/// Runs work handed over from other threads on one event loop, one `execute` for however many
/// tasks arrive while the first waits: the disk writer completes messages in batches, and a
/// wake-up of the loop per message cost more than the work.
final class LoopHandoff: Sendable {
    private struct State {
        var tasks: [@Sendable () -> Void] = []
        var scheduled = false
    }

    let loop: any EventLoop
    private let state = Mutex(State())
    /// The messages this loop stores itself in the current pass.
    let stores: InlineStoreBatch
    /// Capture buffers this loop's connections reuse.
    let captures: CaptureBuffers
    /// The last local address this loop's connections described, and its description: the
    /// connections of one listener share it, described once.
    private let localName = Mutex<(address: SocketAddress, name: String)?>(nil)

    init(loop: any EventLoop) {
        self.loop = loop
        self.stores = InlineStoreBatch(loop: loop)
        self.captures = CaptureBuffers(loop: loop)
    }

    /// `address` as `AddressText.describe` writes it, from the last one when it is the same.
    func describeLocal(_ address: SocketAddress?) -> String {
        guard let address else { return "unknown" }
        if let known = localName.withLock({ $0?.address == address ? $0?.name : nil }) { return known }
        let name = AddressText.describe(address)
        localName.withLock { $0 = (address, name) }
        return name
    }

    func post(_ task: @escaping @Sendable () -> Void) {
        let schedule = state.withLock { state in
            state.tasks.append(task)
            defer { state.scheduled = true }
            return !state.scheduled
        }
        if schedule { loop.execute { self.run() } }
    }

    private func run() {
        let tasks = state.withLock { state in
            defer {
                state.tasks.removeAll(keepingCapacity: true)
                state.scheduled = false
            }
            return state.tasks
        }
        for task in tasks { task() }
    }
}

/// One `LoopHandoff` per event loop, made on first use.
final class LoopHandoffs: Sendable {
    private let handoffs = Mutex<[ObjectIdentifier: LoopHandoff]>([:])

    func handoff(for loop: any EventLoop) -> LoopHandoff {
        handoffs.withLock { handoffs in
            let key = ObjectIdentifier(loop)
            if let existing = handoffs[key] { return existing }
            let made = LoopHandoff(loop: loop)
            handoffs[key] = made
            return made
        }
    }
}
