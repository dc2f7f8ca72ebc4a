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
public final class MessageEvents: Sendable {
    private let subscribers = Mutex<[UUID: AsyncStream<CapturedMessage>.Continuation]>([:])
    private let allSubscribers = Mutex<[UUID: AsyncStream<SinkEvent>.Continuation]>([:])

    public init() {}

    /// A stream of messages stored from now on. It ends when the task reading it is cancelled.
    public func subscribe(bufferSize: Int = 10_000) -> AsyncStream<CapturedMessage> {
        let (stream, continuation) = AsyncStream<CapturedMessage>.makeStream(bufferingPolicy: .bufferingNewest(bufferSize))
        let id = UUID()
        subscribers.withLock { $0[id] = continuation }
        continuation.onTermination = { [weak self] _ in
            _ = self?.subscribers.withLock { $0.removeValue(forKey: id) }
        }
        return stream
    }

    /// Stored messages, dropped messages and fault firings, from now on.
    public func subscribeAll(bufferSize: Int = 10_000) -> AsyncStream<SinkEvent> {
        let (stream, continuation) = AsyncStream<SinkEvent>.makeStream(bufferingPolicy: .bufferingNewest(bufferSize))
        let id = UUID()
        allSubscribers.withLock { $0[id] = continuation }
        continuation.onTermination = { [weak self] _ in
            _ = self?.allSubscribers.withLock { $0.removeValue(forKey: id) }
        }
        return stream
    }

    public var hasSubscribers: Bool { subscribers.withLock { !$0.isEmpty } || allSubscribers.withLock { !$0.isEmpty } }

    /// Someone listens for drops and faults.
    var hasEventSubscribers: Bool { allSubscribers.withLock { !$0.isEmpty } }

    func publish(_ message: CapturedMessage) {
        for continuation in subscribers.withLock({ Array($0.values) }) {
            continuation.yield(message)
        }
        publish(.message(message))
    }

    func publish(_ event: SinkEvent) {
        for continuation in allSubscribers.withLock({ Array($0.values) }) {
            continuation.yield(event)
        }
    }
}
