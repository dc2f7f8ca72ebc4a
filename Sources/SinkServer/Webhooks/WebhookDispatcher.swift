import AsyncHTTPClient
import Crypto
import Foundation
import MailMessage
import NIOCore
import NIOHTTP1
import Synchronization

/// One `--webhook`: a bounded queue of events and one worker that POSTs them in order,
/// retrying a failed attempt (a non-2xx answer, a timeout, a refused connection) with
/// exponential backoff. Offering an event never blocks: the SMTP side calls `offer` as it
/// publishes, and an event that finds the queue full is dropped and counted.
final class WebhookDispatcher: Sendable {
    /// One attempt to deliver one event, as the API shows it.
    struct Attempt: Encodable, Sendable {
        var url: String
        var event: String
        var attempt: Int
        /// The HTTP status, when an answer came.
        var status: Int?
        var error: String?
        var at: Date
        var durationMs: Double

        enum CodingKeys: String, CodingKey {
            case url = "URL"
            case event = "Event"
            case attempt = "Attempt"
            case status = "Status"
            case error = "Error"
            case at = "At"
            case durationMs = "DurationMs"
        }
    }

    struct Counts: Encodable, Sendable {
        var url: String
        var delivered = 0
        var retried = 0
        var failed = 0
        var dropped = 0
        var pending = 0

        enum CodingKeys: String, CodingKey {
            case url = "URL"
            case delivered = "Delivered"
            case retried = "Retried"
            case failed = "Failed"
            case dropped = "Dropped"
            case pending = "Pending"
        }
    }

    private struct State {
        var queue = CircularBuffer<SinkEvent>()
        var waiter: CheckedContinuation<SinkEvent?, Never>?
        var inFlight = false
        var closed = false
        var counts: Counts
        /// The attempts for the latest messages, by message id (at most `recordedMessages`).
        var attempts: [String: [Attempt]] = [:]
        var recordedOrder = CircularBuffer<String>()
    }

    static let recordedMessages = 10_000

    let hook: WebhookSettings.Hook
    private let settings: WebhookSettings
    private let state: Mutex<State>

    init(hook: WebhookSettings.Hook, settings: WebhookSettings) {
        self.hook = hook
        self.settings = settings
        self.state = Mutex(State(counts: Counts(url: hook.url)))
    }

    /// Queues an event if this webhook wants it; drops it (counted) when the queue is full.
    func offer(_ event: SinkEvent) {
        switch event {
        case .message(let message), .dropped(let message):
            guard settings.events.contains(event.kind) else { return }
            if let mailbox = hook.mailbox, !MailboxFiling.names(for: message).contains(mailbox) { return }
        case .fault:
            // A firing belongs to a session, not to a message: a filtered webhook does not get it.
            guard settings.events.contains(.fault), hook.mailbox == nil, hook.query == nil else { return }
        case .relay(let relay):
            guard settings.events.contains(.relay), hook.query == nil else { return }
            if let mailbox = hook.mailbox, !relay.mailboxes.contains(mailbox) { return }
        }
        let waiter = state.withLock { state -> CheckedContinuation<SinkEvent?, Never>? in
            guard !state.closed else { return nil }
            if let waiter = state.waiter {
                state.waiter = nil
                state.inFlight = true
                return waiter
            }
            if state.queue.count >= settings.queueSize {
                state.counts.dropped += 1
            } else {
                state.queue.append(event)
            }
            return nil
        }
        waiter?.resume(returning: event)
    }

    /// The next event to send; nil once closed.
    private func next() async -> SinkEvent? {
        await withCheckedContinuation { continuation in
            let ready = state.withLock { state -> SinkEvent?? in
                state.inFlight = false
                if let event = state.queue.popFirst() {
                    state.inFlight = true
                    return .some(event)
                }
                if state.closed { return .some(nil) }
                state.waiter = continuation
                return nil
            }
            if let ready { continuation.resume(returning: ready) }
        }
    }

    /// Stops the worker once the event in flight is done; what is queued is not sent.
    func close() {
        let waiter = state.withLock { state -> CheckedContinuation<SinkEvent?, Never>? in
            state.closed = true
            defer { state.waiter = nil }
            return state.waiter
        }
        waiter?.resume(returning: nil)
    }

    var counts: Counts {
        state.withLock { state in
            var counts = state.counts
            counts.pending = state.queue.count + (state.inFlight ? 1 : 0)
            return counts
        }
    }

    func attempts(messageID: String) -> [Attempt] {
        state.withLock { $0.attempts[messageID] ?? [] }
    }

    /// Sends events until closed.
    func run(client: HTTPClient, store: MessageStore) async {
        let encoder = JSONEncoder()
        while let event = await next() {
            if let query = hook.query, case .message(let message) = event {
                guard let summary = await store.summary(id: message.id),
                    query.matches(summary, read: false, tags: store.listing(id: message.id)?.tags ?? [])
                else { continue }
            }
            guard let (kind, body) = try? event.encoded(encoder) else { continue }
            let id = event.id ?? event.faultID
            var backoff = settings.firstBackoff
            for attempt in 1...max(1, settings.attempts) {
                if attempt > 1 {
                    state.withLock { $0.counts.retried += 1 }
                    try? await Task.sleep(for: backoff)
                    backoff = min(backoff * 2, settings.maxBackoff)
                }
                let record = await post(body, kind: kind, id: id, attempt: attempt, client: client)
                let delivered = record.status.map { (200..<300).contains($0) } ?? false
                state.withLock { state in
                    if let messageID = event.id { Self.record(record, for: messageID, in: &state) }
                    if delivered { state.counts.delivered += 1 } else if attempt == max(1, settings.attempts) { state.counts.failed += 1 }
                }
                if delivered || state.withLock({ $0.closed }) { break }
            }
        }
    }

    private static func record(_ attempt: Attempt, for id: String, in state: inout State) {
        if state.attempts[id] == nil {
            state.recordedOrder.append(id)
            if state.recordedOrder.count > recordedMessages, let oldest = state.recordedOrder.popFirst() {
                state.attempts[oldest] = nil
            }
        }
        state.attempts[id, default: []].append(attempt)
    }

    private func post(_ body: Data, kind: String, id: String, attempt: Int, client: HTTPClient) async -> Attempt {
        var request = HTTPClientRequest(url: hook.url)
        request.method = .POST
        request.headers.add(name: "Content-Type", value: "application/json")
        request.headers.add(name: "User-Agent", value: "swallow")
        request.headers.add(name: "X-Swallow-Event", value: kind)
        request.headers.add(name: "X-Swallow-Event-Id", value: id)
        request.headers.add(name: "X-Swallow-Delivery", value: "\(attempt)")
        if let secret = settings.secret {
            let mac = HMAC<SHA256>.authenticationCode(for: body, using: SymmetricKey(data: Data(secret.utf8)))
            request.headers.add(name: "X-Swallow-Signature", value: "sha256=" + mac.map { String(format: "%02x", $0) }.joined())
        }
        request.body = .bytes(ByteBuffer(bytes: body))
        let started = ContinuousClock.now
        let at = Date()
        var status: Int?
        var error: String?
        do {
            let response = try await client.execute(request, timeout: .nanoseconds(settings.timeout.wholeNanoseconds))
            status = Int(response.status.code)
            // The answer's body is not needed; reading a little of it lets the connection be reused.
            _ = try? await response.body.collect(upTo: 64 * 1024)
        } catch let failure {
            error = "\(failure)"
        }
        let elapsed = ContinuousClock.now - started
        return Attempt(url: hook.url, event: kind, attempt: attempt, status: status, error: error, at: at, durationMs: elapsed.milliseconds)
    }
}

extension SinkEvent {
    var kind: WebhookSettings.Event {
        switch self {
        case .message: .message
        case .dropped: .drop
        case .fault: .fault
        case .relay: .relay
        }
    }

    /// A fault firing's id for `X-Swallow-Event-Id` (the rule and the nanosecond it fired), or a
    /// relay hop's (the message and when the hop started).
    var faultID: String {
        switch self {
        case .fault(let firing): "fault-\(firing.rule)-\(firing.atNanos)"
        case .relay(let relay): "relay-\(relay.id)-\(relay.hop.at)"
        default: ""
        }
    }

    /// The event as the event stream's `data:` and a webhook's body carry it: the capture
    /// metadata (without a transcript) for `message` and `drop`, the firing for `fault`.
    func encoded(_ encoder: JSONEncoder) throws -> (kind: String, data: Data) {
        switch self {
        case .message(var message), .dropped(var message):
            message.transcript = nil
            return (kind.rawValue, try encoder.encode(message))
        case .fault(let firing):
            return ("fault", try encoder.encode(firing))
        case .relay(let relay):
            return ("relay", try encoder.encode(relay))
        }
    }
}
