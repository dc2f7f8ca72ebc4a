import Foundation
import Logging
import MailMessage
import NIOCore
import SMTPClient
import SMTPProtocol
import Synchronization

/// The sink's hand-overs to a real server (`--relay`): releases asked for over the API and
/// auto-relay of stored messages (`--relay-all`, `--relay-matching`). Each hand-over goes
/// through a small pool of connections to the upstream, kept open between messages, and is
/// recorded on the message (`relay` in its capture metadata), announced as `event: relay`,
/// and counted in `/metrics`.
final class Relay: Sendable {
    let settings: RelaySettings
    let upstream: Upstream
    private let pool: UpstreamPool
    private let store: MessageStore
    private let metrics: SinkMetrics
    private let logger: Logger
    /// Auto-relay's queue of stored message ids, and its worker.
    private let queued: AsyncStream<String>.Continuation?
    private let worker: Mutex<Task<Void, Never>?>

    init?(settings: RelaySettings, hostname: String, store: MessageStore, metrics: SinkMetrics, group: any EventLoopGroup, logger: Logger) {
        guard let upstream = settings.upstream else { return nil }
        self.settings = settings
        self.upstream = upstream
        self.store = store
        self.metrics = metrics
        self.logger = logger
        pool = UpstreamPool(
            upstream: upstream, settings: upstream.clientSettings(helo: hostname, timeout: settings.timeout), size: settings.connections,
            group: group)
        guard settings.automatic else {
            queued = nil
            worker = Mutex(nil)
            return
        }
        let (stream, continuation) = AsyncStream<String>.makeStream(bufferingPolicy: .bufferingOldest(settings.queueSize))
        queued = continuation
        worker = Mutex(nil)
        let relay = self
        worker.withLock {
            $0 = Task {
                await withTaskGroup(of: Void.self) { group in
                    var running = 0
                    for await id in stream {
                        if running >= settings.connections {
                            await group.next()
                            running -= 1
                        }
                        group.addTask { await relay.relayStored(id: id) }
                        running += 1
                    }
                }
            }
        }
        store.events.addListener { event in
            guard case .message(let message) = event else { return }
            relay.offer(message)
        }
    }

    /// Queues a stored message for auto-relay when it has recipients to go to (on the SMTP
    /// path: returns at once).
    private func offer(_ message: CapturedMessage) {
        let recipients = settings.autoRecipients(message.envelope.recipients.map(\.address))
        guard !recipients.isEmpty, let queued else { return }
        if case .dropped = queued.yield(message.id) {
            record(
                RelayOutcome.failure("auto-relay queue full (\(settings.queueSize) messages waiting)", latency: .zero), kind: "auto",
                message: message, to: recipients, at: Date())
        }
    }

    private func relayStored(id: String) async {
        guard let listing = store.listing(id: id) else { return }
        let recipients = settings.autoRecipients(listing.message.envelope.recipients.map(\.address))
        guard !recipients.isEmpty else { return }
        _ = await handOver(listing.message, to: recipients, kind: "auto")
    }

    /// Sends a stored message to `recipients` through the upstream and records the hop.
    func handOver(_ message: CapturedMessage, to recipients: [String], kind: String) async -> RelayOutcome {
        let started = Date()
        let outcome: RelayOutcome
        do {
            if let raw = try await store.raw(id: message.id) {
                outcome = await pool.send(sender: message.envelope.mailFrom, recipients: recipients, data: Array(raw.readableBytesView))
            } else {
                outcome = .failure("the message body was not stored (--discard)", latency: .zero)
            }
        } catch {
            outcome = .failure("reading the stored message: \(error)", latency: .zero)
        }
        record(outcome, kind: kind, message: message, to: recipients, at: started)
        return outcome
    }

    private func record(_ outcome: RelayOutcome, kind: String, message: CapturedMessage, to recipients: [String], at: Date) {
        let hop = RelayHop(
            at: MailpitJSON.rfc3339(at),
            upstream: upstream.description, kind: kind, from: message.envelope.mailFrom, to: recipients, reply: outcome.replyText,
            outcome: outcome.outcome, refused: outcome.refused.isEmpty ? nil : outcome.refused, latencyMs: outcome.latency.milliseconds)
        metrics.relayed(outcome: outcome.outcome, latency: outcome.latency)
        if outcome.outcome != "delivered" {
            logger.notice(
                "relay not delivered",
                metadata: ["id": "\(message.id)", "upstream": "\(upstream)", "kind": "\(kind)", "reply": "\(outcome.replyText)"])
        }
        store.recordRelay(hop, id: message.id)
    }

    /// Stops taking messages for auto-relay, lets the queued ones go, closes the pool.
    func finish() async {
        queued?.finish()
        await worker.withLock({ $0 })?.value
        await pool.close()
    }
}

/// What the upstream made of one hand-over.
struct RelayOutcome: Sendable {
    /// The final reply (or the refusal that ended the transaction); nil when none was had.
    var reply: SMTPReply?
    /// Why there was no reply: connection, TLS, timeout, a reply that does not parse.
    var failure: String?
    /// Recipients refused while others were accepted, with their replies.
    var refused: [String: String] = [:]
    var latency: Duration

    static func failure(_ reason: String, latency: Duration) -> RelayOutcome {
        RelayOutcome(reply: nil, failure: reason, latency: latency)
    }

    /// `delivered`, `deferred`, `refused` or `failed`.
    var outcome: String {
        guard let reply else { return "failed" }
        switch reply.code.rawValue / 100 {
        case 2: return "delivered"
        case 4: return "deferred"
        default: return "refused"
        }
    }

    /// The reply on one line, or the failure.
    var replyText: String {
        guard let reply else { return failure ?? "no reply" }
        return reply.description.replacingOccurrences(of: "\n", with: " ")
    }
}

/// Connections to one upstream, opened on demand and kept (up to `size`) between hand-overs.
final class UpstreamPool: Sendable {
    let upstream: Upstream
    let settings: SMTPClientSettings
    let size: Int
    private let group: any EventLoopGroup
    private let idle = Mutex<[SMTPClientConnection]>([])

    init(upstream: Upstream, settings: SMTPClientSettings, size: Int, group: any EventLoopGroup) {
        self.upstream = upstream
        self.settings = settings
        self.size = size
        self.group = group
    }

    /// One transaction: `data` (CRLF line ends, not dot-stuffed) from `sender` to `recipients`.
    func send(sender: String, recipients: [String], data: [UInt8]) async -> RelayOutcome {
        let clock = ContinuousClock()
        let started = clock.now
        // A kept connection the upstream has closed meanwhile fails before the transaction
        // starts: the hand-over is then tried once more on a new one.
        for _ in 0..<2 {
            let pooled = idle.withLock { $0.popLast() }
            let connection: SMTPClientConnection
            if let pooled, pooled.isActive {
                connection = pooled
            } else {
                pooled?.close()
                var times = SMTPClientConnection.PhaseTimes()
                do {
                    connection = try await SMTPClientConnection.open(
                        to: .init(host: upstream.host, port: upstream.port), settings: settings, group: group, times: &times)
                } catch {
                    return .failure("\(error)", latency: clock.now - started)
                }
            }
            var times = SMTPClientConnection.PhaseTimes()
            let outcome = await connection.send(sender: sender, recipients: recipients, data: data, times: &times)
            switch outcome {
            case .failed(let error):
                connection.close()
                if pooled != nil, error.phase == "mail" || error.phase.hasPrefix("send") { continue }
                return .failure("\(error)", latency: clock.now - started)
            case .reply(let reply, let phase):
                var result = RelayOutcome(reply: reply, failure: nil, latency: clock.now - started)
                if phase != "rcpt" {
                    for (recipient, answer) in zip(recipients, connection.lastRecipientReplies) where answer.code.rawValue / 100 != 2 {
                        result.refused[recipient] = answer.description.replacingOccurrences(of: "\n", with: " ")
                    }
                }
                keep(connection)
                return result
            }
        }
        return .failure("the upstream closed the connection twice before the transaction", latency: clock.now - started)
    }

    private func keep(_ connection: SMTPClientConnection) {
        guard connection.isActive else { return connection.close() }
        let kept = idle.withLock { idle -> Bool in
            guard idle.count < size else { return false }
            idle.append(connection)
            return true
        }
        if !kept { Task { await connection.quit() } }
    }

    func close() async {
        let connections = idle.withLock { idle in
            defer { idle.removeAll() }
            return idle
        }
        for connection in connections { await connection.quit() }
    }
}
