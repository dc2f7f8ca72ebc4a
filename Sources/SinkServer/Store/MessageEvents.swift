import Foundation
import MailMessage
import Synchronization

/// Announces every stored message to whoever listens: the HTTP event stream, and waits for a
/// message to arrive. Each subscriber has its own bounded buffer; a subscriber too slow to
/// keep up loses the oldest events, never blocks the SMTP side.
public final class MessageEvents: Sendable {
    private let subscribers = Mutex<[UUID: AsyncStream<CapturedMessage>.Continuation]>([:])

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

    public var hasSubscribers: Bool { subscribers.withLock { !$0.isEmpty } }

    func publish(_ message: CapturedMessage) {
        let current = subscribers.withLock { Array($0.values) }
        for continuation in current {
            continuation.yield(message)
        }
    }
}
