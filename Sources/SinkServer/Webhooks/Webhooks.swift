import AsyncHTTPClient
import Foundation
import NIOCore
import Synchronization

/// A sink's `--webhook`s: one dispatcher each, fed by the store's events, sharing one HTTP
/// client. Made when the sink binds; `finish()` (after the sink stops) ends the workers and the
/// client.
final class Webhooks: Sendable {
    let dispatchers: [WebhookDispatcher]
    private let client: HTTPClient
    private let workers: Mutex<[Task<Void, Never>]>

    init(settings: WebhookSettings, store: MessageStore, group: any EventLoopGroup) {
        let dispatchers = settings.hooks.map { WebhookDispatcher(hook: $0, settings: settings) }
        var configuration = HTTPClient.Configuration()
        configuration.redirectConfiguration = .disallow
        configuration.timeout = .init(connect: .seconds(5))
        let client = HTTPClient(eventLoopGroupProvider: .shared(group), configuration: configuration)
        self.dispatchers = dispatchers
        self.client = client
        self.workers = Mutex(
            dispatchers.map { dispatcher in
                Task { await dispatcher.run(client: client, store: store) }
            })
        store.events.addListener { event in
            for dispatcher in dispatchers { dispatcher.offer(event) }
        }
    }

    /// Stops taking events; retries waiting for their backoff give up.
    func close() {
        for dispatcher in dispatchers { dispatcher.close() }
        for worker in workers.withLock({ $0 }) { worker.cancel() }
    }

    func finish() async {
        close()
        for worker in workers.withLock({ $0 }) { await worker.value }
        try? await client.shutdown()
    }

    var counts: [WebhookDispatcher.Counts] { dispatchers.map(\.counts) }

    /// Every attempt to deliver a message's event, oldest first.
    func attempts(messageID: String) -> [WebhookDispatcher.Attempt] {
        dispatchers.flatMap { $0.attempts(messageID: messageID) }.sorted { $0.at < $1.at }
    }

    /// `/metrics` lines: the counters of `/api/v1/stats` per webhook URL.
    func metricsText() -> String {
        let counts = self.counts
        var text = ""
        for (name, help, type, value) in [
            ("swallow_webhook_delivered_total", "Events delivered (a 2xx answer)", "counter", \WebhookDispatcher.Counts.delivered),
            ("swallow_webhook_retried_total", "Attempts after a failed one", "counter", \.retried),
            ("swallow_webhook_failed_total", "Events given up after every attempt failed", "counter", \.failed),
            ("swallow_webhook_dropped_total", "Events dropped because the queue was full", "counter", \.dropped),
            ("swallow_webhook_pending", "Events queued or being sent", "gauge", \.pending),
        ] {
            text += "# HELP \(name) \(help).\n# TYPE \(name) \(type)\n"
            for count in counts {
                let url = count.url.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
                text += "\(name){url=\"\(url)\"} \(count[keyPath: value])\n"
            }
        }
        return text
    }
}
