import Foundation
import MailMessage
import Synchronization

/// What the live event stream carries besides stored messages.
public enum SinkEvent: Sendable {
    /// Stored (and as durable as `--fsync` asks).
    case message(CapturedMessage)
    /// Answered `250` by a `drop` rule, and not kept.
    case dropped(CapturedMessage)
    /// A fault rule fired.
    case fault(FaultFiring)
    /// A stored message was handed to an upstream (release, auto-relay, proxy).
    case relay(RelayEvent)

    /// The event's `id:` on the stream: the message's id (sortable); fault firings and relay
    /// hops have none (they are not replayed).
    public var id: String? {
        switch self {
        case .message(let message), .dropped(let message): message.id
        case .fault, .relay: nil
        }
    }
}

/// A relay hop as the event stream reports it: the message's id and the hop's fields.
public struct RelayEvent: Encodable, Sendable {
    public var id: String
    public var hop: RelayHop
    /// The message's mailboxes, to narrow the stream by (not encoded).
    var mailboxes: [String]

    public func encode(to encoder: any Encoder) throws {
        try hop.encode(to: encoder)
        var container = encoder.container(keyedBy: Key.self)
        try container.encode(id, forKey: .id)
    }

    private enum Key: String, CodingKey { case id = "ID" }
}

/// One firing of a fault rule, as the event stream reports it.
public struct FaultFiring: Codable, Sendable {
    public var rule: String
    public var phase: String
    public var session: String
    public var client: String
    /// Unix time in nanoseconds.
    public var atNanos: Int64
}

/// Announces every stored message to whoever listens: the HTTP event stream, and waits for a
/// message to arrive. Each subscriber has its own bounded buffer; a subscriber too slow to
/// keep up loses the oldest events, never blocks the SMTP side.
///
/// The last `replayCapacity` message and drop events are held, so a client that reconnects
/// with `Last-Event-ID` gets every one it missed that is still held, then the live ones, each
/// exactly once.
public final class MessageEvents: Sendable {
    private struct State {
        var subscribers: [UUID: AsyncStream<CapturedMessage>.Continuation] = [:]
        var allSubscribers: [UUID: AsyncStream<SinkEvent>.Continuation] = [:]
        /// Called with every event as it is published (webhooks): each must return at once.
        var listeners: [@Sendable (SinkEvent) -> Void] = []
        /// A ring of the latest events with ids; `next` is where the next one goes.
        var replay: [Held] = []
        var next = 0
    }

    /// A held event: a stored message by its id only (the store has it; copying the metadata
    /// into the ring cost a retain per field on every message), a dropped one whole.
    private enum Held {
        case stored(String)
        case dropped(CapturedMessage)

        var id: String {
            switch self {
            case .stored(let id): id
            case .dropped(let message): message.id
            }
        }
    }

    private let state = Mutex(State())
    public let replayCapacity: Int

    public init(replayCapacity: Int = 10_000) {
        self.replayCapacity = max(0, replayCapacity)
    }

    /// A stream of messages stored from now on. It ends when the task reading it is cancelled.
    public func subscribe(bufferSize: Int = 10_000) -> AsyncStream<CapturedMessage> {
        let (stream, continuation) = AsyncStream<CapturedMessage>.makeStream(bufferingPolicy: .bufferingNewest(bufferSize))
        let id = UUID()
        state.withLock { $0.subscribers[id] = continuation }
        continuation.onTermination = { [weak self] _ in
            _ = self?.state.withLock { $0.subscribers.removeValue(forKey: id) }
        }
        return stream
    }

    /// Stored messages, dropped messages and fault firings from now on; with `lastEventID`,
    /// first the held events after that one (all held events newer than it when it is no
    /// longer held).
    /// `lookup` finds a stored message by id (a held one deleted since is skipped).
    public func subscribeAll(
        bufferSize: Int = 10_000, lastEventID: String? = nil, lookup: (String) -> CapturedMessage? = { _ in nil }
    ) -> AsyncStream<SinkEvent> {
        let (stream, continuation) = AsyncStream<SinkEvent>.makeStream(bufferingPolicy: .bufferingNewest(bufferSize))
        let id = UUID()
        state.withLock { state in
            // Under the lock: an event published meanwhile is either held (and replayed) or
            // sent live, never both.
            if let lastEventID {
                let held = ordered(state)
                let missed: ArraySlice<Held>
                if let position = held.lastIndex(where: { $0.id == lastEventID }) {
                    missed = held[(position + 1)...]
                } else {
                    missed = held.filter { $0.id > lastEventID }[...]
                }
                for event in missed {
                    switch event {
                    case .stored(let id): if let message = lookup(id) { continuation.yield(.message(message)) }
                    case .dropped(let message): continuation.yield(.dropped(message))
                    }
                }
            }
            state.allSubscribers[id] = continuation
        }
        continuation.onTermination = { [weak self] _ in
            _ = self?.state.withLock { $0.allSubscribers.removeValue(forKey: id) }
        }
        return stream
    }

    /// Calls `listener` with every event from now on, on the publisher's thread: it must not
    /// block (the webhooks queue what they are given).
    func addListener(_ listener: @escaping @Sendable (SinkEvent) -> Void) {
        state.withLock { $0.listeners.append(listener) }
    }

    /// The held events, oldest first.
    private func ordered(_ state: State) -> [Held] {
        state.replay.count < replayCapacity ? state.replay : Array(state.replay[state.next...] + state.replay[..<state.next])
    }

    /// How many events are held for replay now, and the id of the oldest.
    public var replayHeld: (count: Int, oldest: String?) {
        state.withLock { state in (state.replay.count, ordered(state).first?.id) }
    }

    public var hasSubscribers: Bool { state.withLock { !$0.subscribers.isEmpty || !$0.allSubscribers.isEmpty } }

    /// Someone listens for drops and faults.
    var hasEventSubscribers: Bool { state.withLock { !$0.allSubscribers.isEmpty || !$0.listeners.isEmpty } }

    /// A stored message, its reply sent at `replySentNanos`: to both kinds of subscriber,
    /// with one pass under the lock (this runs once per accepted message). The message is
    /// copied to carry that time only when someone listens.
    func publish(_ stored: CapturedMessage, replySentNanos: Int64) {
        let (plain, all, listeners) = state.withLock { state in
            hold(.stored(stored.id), in: &state)
            return (Array(state.subscribers.values), Array(state.allSubscribers.values), state.listeners)
        }
        guard !plain.isEmpty || !all.isEmpty || !listeners.isEmpty else { return }
        var message = stored
        message.timestamps.replySentNanos = replySentNanos
        for continuation in plain { continuation.yield(message) }
        if !all.isEmpty || !listeners.isEmpty {
            let event = SinkEvent.message(message)
            for continuation in all { continuation.yield(event) }
            for listener in listeners { listener(event) }
        }
    }

    func publish(_ event: SinkEvent) {
        let (current, listeners) = state.withLock { state in
            switch event {
            case .message(let message): hold(.stored(message.id), in: &state)
            case .dropped(let message): hold(.dropped(message), in: &state)
            case .fault, .relay: break
            }
            return (Array(state.allSubscribers.values), state.listeners)
        }
        for continuation in current { continuation.yield(event) }
        for listener in listeners { listener(event) }
    }

    /// Keeps `held` in the replay ring, over the oldest once it is full.
    private func hold(_ held: Held, in state: inout State) {
        guard replayCapacity > 0 else { return }
        if state.replay.count < replayCapacity {
            state.replay.append(held)
        } else {
            state.replay[state.next] = held
            state.next = (state.next + 1) % replayCapacity
        }
    }
}
