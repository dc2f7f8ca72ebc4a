import Assertions
import Foundation
import Logging
import MailMessage
import NIOCore
import SinkServer

/// A Swallow sink in the test's own process, on a free loopback port, readable as an `Inbox`:
///
///     let sink = try await TestSink.start()
///     defer { sink.stop() }
///     try await app.sendLoginCode(to: "alice@example.com", smtpPort: sink.smtpPort)
///     let mail = try await sink.waitFor(.to("alice@example.com").subject(containing: "code"), within: .seconds(5))
///     let code = try mail.extract(#"(\d{6})"#)
///
/// Waiting listens to the sink's event stream: it returns the moment the mail is captured.
public final class TestSink: Inbox {
    public let sink: Sink
    private let serving: Task<Void, any Error>

    public var smtpPort: Int { sink.smtpAddress.port }

    private init(sink: Sink) {
        self.sink = sink
        self.serving = Task { try await sink.run() }
    }

    /// Starts a sink (in memory, SMTP on 127.0.0.1, a free port); `configure` may change the rest.
    public static func start(_ configure: (inout SinkConfiguration) -> Void = { _ in }) async throws -> TestSink {
        var configuration = SinkConfiguration()
        configuration.smtp = ListenAddress(host: "127.0.0.1", port: 0)
        configure(&configuration)
        var logger = Logger(label: "swallow.test-sink")
        logger.logLevel = .warning
        return TestSink(sink: try await Sink.bind(configuration, logger: logger))
    }

    /// Closes the listeners and connections.
    public func stop() {
        sink.shutdown()
    }

    public func messages(matching query: MailQuery) async throws -> [DeliveredMessage] {
        var result: [DeliveredMessage] = []
        for message in sink.store.messages().reversed() {
            if let delivered = try await Self.delivered(message, store: sink.store), query.matches(delivered) { result.append(delivered) }
        }
        return result
    }

    public func waitFor(_ query: MailQuery, count: Int, within: Duration) async throws -> [DeliveredMessage] {
        // Subscribe before looking, so nothing captured in between is missed.
        let events = sink.store.events.subscribe()
        var found = try await messages(matching: query)
        if found.count >= count { return found }
        let store = sink.store
        let arrived: [DeliveredMessage] = try await withThrowingTaskGroup(of: [DeliveredMessage]?.self) { group in
            group.addTask { [found] in
                var found = found
                for await message in events {
                    guard let delivered = try await Self.delivered(message, store: store) else { continue }
                    if query.matches(delivered) {
                        found.insert(delivered, at: 0)
                        if found.count >= count { return found }
                    }
                }
                return nil
            }
            group.addTask {
                try await Task.sleep(for: within)
                return nil
            }
            let first = try await group.next() ?? nil
            group.cancelAll()
            return first ?? []
        }
        if arrived.count >= count { return arrived }
        found = try await messages(matching: query)
        guard found.count >= count else {
            throw InboxError.timedOut(query: query, expected: count, found: found.count, newest: found.prefix(3).map(\.subject))
        }
        return found
    }

    private static func delivered(_ message: CapturedMessage, store: MessageStore) async throws -> DeliveredMessage? {
        guard let bytes = try await store.receivedBytes(id: message.id) else { return nil }
        return DeliveredMessage(
            captured: message, parsed: ParsedMessage(bytes: Array(bytes.readableBytesView)),
            received: Date(timeIntervalSince1970: Double(message.timestamps.dataEndNanos) / 1e9)
        )
    }
}
