import Foundation
import Logging
import NIOCore
import NIOPosix
import NIOSSL
import SMTPProtocol
import ServiceLifecycle
import SocketIO
import Synchronization

/// The SMTP sink: listeners bound, a store opened, ready to serve.
///
/// `bind` does everything that can fail at start (ports, certificate, data directory), so the
/// caller can print its `ready` line; `run` serves until `shutdown()` or graceful shutdown.
/// The same type runs `swallow serve` and the in-process sinks of tests.
public final class Sink: Service, Sendable {
    public let configuration: SinkConfiguration
    public let store: MessageStore
    /// The bound plain SMTP address (the real port when 0 was asked for).
    public let smtpAddress: ListenAddress
    /// The bound implicit-TLS address, when `--smtps` was given.
    public let smtpsAddress: ListenAddress?
    public let metrics: SinkMetrics
    /// The fault rules in force, consulted at every SMTP phase.
    public let faults: FaultEngine

    private let listeners: [SMTPListener]
    /// Swallow's own loops serving plain SMTP connections (empty: NIO's loops serve them).
    private let socketLoops: [SocketLoop]
    private let connections: ConnectionRegistry
    /// What a session of the HTTP send API runs with: the plain listener's, marked as HTTP,
    /// without AUTH or STARTTLS.
    private let localContext: SMTPServerContext
    private let eventLoopGroup: any EventLoopGroup
    /// The certificate and key of STARTTLS and `--smtps`, which `--http-tls` serves too.
    let tls: SinkTLS?
    /// `--webhook`s, when any are given.
    let webhooks: Webhooks?
    /// `--relay`, when given: release and auto-relay.
    let relay: Relay?
    /// Delivery attempts, audited, and the timeline.
    let audit: DeliveryAudit
    private let logger: Logger
    private let shuttingDown = Atomic<Bool>(false)

    private init(
        configuration: SinkConfiguration, store: MessageStore, listeners: [SMTPListener], socketLoops: [SocketLoop],
        connections: ConnectionRegistry,
        metrics: SinkMetrics, faults: FaultEngine, logger: Logger, localContext: SMTPServerContext, eventLoopGroup: any EventLoopGroup,
        tls: SinkTLS?
    ) {
        self.tls = tls
        self.localContext = localContext
        self.eventLoopGroup = eventLoopGroup
        self.webhooks =
            configuration.webhooks.hooks.isEmpty
            ? nil : Webhooks(settings: configuration.webhooks, store: store, group: eventLoopGroup)
        self.relay = Relay(
            settings: configuration.relay, hostname: configuration.hostname, store: store, metrics: metrics, group: eventLoopGroup,
            logger: logger)
        self.metrics = metrics
        self.faults = faults
        self.audit = localContext.audit
        self.configuration = configuration
        self.store = store
        self.listeners = listeners
        self.socketLoops = socketLoops
        self.connections = connections
        self.logger = logger
        self.smtpAddress = Self.bound(listeners[0], fallback: configuration.smtp)
        self.smtpsAddress = listeners.count > 1 ? Self.bound(listeners[1], fallback: configuration.smtps!) : nil
    }

    /// A sink bound and never run (or dropped while running) stops accepting and lets its socket
    /// loops end; after `run` they have ended already, and this does nothing.
    deinit {
        for listener in listeners { listener.close() }
        for loop in socketLoops { loop.shutdownGracefully { _ in } }
    }

    /// Opens the store and binds every listener.
    public static func bind(
        _ configuration: SinkConfiguration,
        logger: Logger = Logger(label: "swallow.sink"),
        eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) async throws -> Sink {
        let tls = try configuration.tls.map { try SinkTLS($0, hostname: configuration.hostname) }
        if configuration.httpTLS && tls == nil {
            throw ConfigurationError(message: "--http-tls needs TLS, which is turned off (--no-tls)")
        }
        if configuration.smtps != nil && tls == nil {
            throw ConfigurationError(message: "--smtps needs TLS, which is turned off")
        }
        let store = try MessageStore.open(
            dataDirectory: configuration.dataDirectory, policy: configuration.fsync,
            maxMessages: configuration.maxMessages, tagging: configuration.tagging, mailboxQuota: configuration.mailboxQuota,
            logger: logger
        )
        let hostname = configuration.hostname
        let sessionConfiguration = SMTPSession.Configuration(
            hostname: hostname,
            limits: configuration.limits,
            startTLSAvailable: tls != nil,
            auth: configuration.auth,
            requireAuth: configuration.requireAuth,
            authRequiresTLS: configuration.authRequiresTLS,
            makeChallenge: { "<\(UInt64.random(in: 1...UInt64.max)).\(WallClock.nanos() / 1_000_000_000)@\(hostname)>" }
        )
        let connections = ConnectionRegistry(limit: configuration.maxConnections)
        let metrics = SinkMetrics()
        let faults = FaultEngine(seed: configuration.faultSeed, rules: configuration.faultRules)
        var plain = SMTPServerContext(
            session: sessionConfiguration, configuration: configuration, store: store, connections: connections,
            startTLS: tls, implicitTLS: false, logger: logger, metrics: metrics, faults: faults,
            handoffs: LoopHandoffs(),
            audit: DeliveryAudit(
                settings: configuration.audit, dataDirectory: configuration.dataDirectory, metrics: metrics, health: store.health)
        )
        plain.proxy = try configuration.upstream.map { upstream in
            try ProxySettings(
                upstream: upstream, client: upstream.clientSettings(helo: hostname, timeout: configuration.relay.timeout), metrics: metrics)
        }
        var listeners: [SMTPListener] = []
        let socketLoops = try Self.startSocketLoops(group: eventLoopGroup, configuration: configuration)
        do {
            listeners.append(
                try await SMTPListener.bind(configuration.smtp, plain, group: eventLoopGroup, loops: socketLoops, implicitTLS: nil))
            if let smtps = configuration.smtps, let tls {
                var implicit = plain
                implicit.startTLS = nil
                implicit.implicitTLS = true
                implicit.session.startTLSAvailable = false
                listeners.append(
                    try await SMTPListener.bind(smtps, implicit, group: eventLoopGroup, loops: socketLoops, implicitTLS: tls.context()))
            }
        } catch {
            for listener in listeners { listener.close() }
            for loop in socketLoops { try? await loop.shutdownGracefully() }
            throw ConfigurationError(message: "cannot listen: \(error)")
        }
        var local = plain
        local.viaHTTP = true
        local.startTLS = nil
        local.session.startTLSAvailable = false
        local.session.requireAuth = false
        return Sink(
            configuration: configuration, store: store, listeners: listeners, socketLoops: socketLoops, connections: connections,
            metrics: metrics, faults: faults, logger: logger, localContext: local, eventLoopGroup: eventLoopGroup, tls: tls
        )
    }

    /// Swallow's own socket loops for SMTP connections, as many as the group has loops (none
    /// with `--nio-channels`, where there is no epoll, or in proxy mode, whose upstream client
    /// is a NIO channel on its connection's loop).
    ///
    /// Why: against NIO's channels, a `perf stat`/`/proc` split of the sink under smtp-source
    /// (1 KiB messages, 20 sessions) measured 30 -> 22.5 µs of user and 37 -> 32.5 µs of system
    /// time a message over persistent sessions, and 72 -> 50 and 85 -> 71 µs with a connection
    /// per message (21.8 -> 17.8 system calls): no bootstrap futures, registration state or
    /// pending-writes manager per connection, one poller registration, no `getpeername`.
    private static func startSocketLoops(group: any EventLoopGroup, configuration: SinkConfiguration) throws -> [SocketLoop] {
        guard !configuration.nioChannels, configuration.upstream == nil, SocketLoop.available else { return [] }
        var count = 0
        for _ in group.makeIterator() { count += 1 }
        return try SocketLoop.start(count: max(count, 1), name: "swallow-smtp", turnClock: true)
    }

    private static func bound(_ listener: SMTPListener, fallback: ListenAddress) -> ListenAddress {
        guard let address = listener.localAddress, let port = address.port else { return fallback }
        return ListenAddress(host: address.ipAddress ?? fallback.host, port: port)
    }

    /// `ready smtp=HOST:PORT [smtps=HOST:PORT]`: the line `swallow serve` prints once listening.
    public var readyLine: String {
        var line = "ready smtp=\(smtpAddress)"
        if let smtpsAddress { line += " smtps=\(smtpsAddress)" }
        return line
    }

    /// Serves until `shutdown()` or a graceful shutdown, then waits for queued disk writes.
    public func run() async throws {
        // Retention: TTLs and --max-age, checked every second.
        let store = self.store
        let maxAge = configuration.maxAge
        let audit = self.audit
        // The work itself runs on a queue of its own: the task runs on the event loops (NIO is
        // the concurrency executor), and the audit's file writes would stall their connections.
        let housekeeping = DispatchQueue(label: "swallow.housekeeping", qos: .utility)
        let sweeper = Task {
            while !Task.isCancelled {
                try? await Task.sleep(for: .seconds(1))
                housekeeping.async {
                    store.expire(nowNanos: WallClock.nanos(), maxAge: maxAge)
                    audit.tick(nowNanos: WallClock.nanos())
                }
            }
        }
        await withGracefulShutdownHandler {
            for listener in listeners {
                await listener.closed()
            }
        } onGracefulShutdown: {
            self.shutdown()
        }
        sweeper.cancel()
        await withCheckedContinuation { (done: CheckedContinuation<Void, Never>) in
            housekeeping.async {
                audit.tick(nowNanos: WallClock.nanos())
                done.resume()
            }
        }
        await relay?.finish()
        await store.drain()
        await webhooks?.finish()
        for loop in socketLoops { try? await loop.shutdownGracefully() }
        logger.info("sink stopped", metadata: ["messages": "\(store.count)"])
    }

    /// Submits a message as an SMTP client would, through the same session and handler
    /// (`POST /api/v1/send`).
    func submitLocally(sender: String, recipients: [String], message: [UInt8]) async throws -> LocalSubmission.Outcome {
        try await LocalSubmission.submit(sender: sender, recipients: recipients, message: message, context: localContext, group: eventLoopGroup)
    }

    /// Open SMTP connections now.
    public var openConnections: Int { connections.count }

    /// The open SMTP connections' channels.
    var openChannels: [any Channel] { connections.channels }

    /// `/metrics` text.
    public func metricsText() -> [UInt8] {
        metrics.render(storedMessages: store.count, openConnections: connections.count) + Array(store.health.metricsText().utf8)
            + Array((webhooks?.metricsText() ?? "").utf8) + Array(mailboxMetricsText().utf8)
    }

    /// Per mailbox: stored messages and quota evictions, at most `--metrics-mailboxes` names
    /// (the rest summed as `other`).
    func mailboxMetricsText() -> String {
        let counts = store.mailboxCounts(limit: configuration.metricsMailboxes)
        var text = "# HELP swallow_mailbox_messages Messages stored per mailbox.\n# TYPE swallow_mailbox_messages gauge\n"
        for entry in counts { text += "swallow_mailbox_messages{mailbox=\"\(Self.labelValue(entry.name))\"} \(entry.messages)\n" }
        text += "# HELP swallow_mailbox_evictions_total Messages evicted by their mailbox's quota.\n"
        text += "# TYPE swallow_mailbox_evictions_total counter\n"
        for entry in counts { text += "swallow_mailbox_evictions_total{mailbox=\"\(Self.labelValue(entry.name))\"} \(entry.evicted)\n" }
        return text
    }

    /// A Prometheus label value: backslash, quote and newline escaped.
    static func labelValue(_ text: String) -> String {
        text.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
            .replacingOccurrences(of: "\n", with: "\\n")
    }

    /// Stops accepting and closes every open connection. Messages already answered with `250`
    /// are stored; a message whose DATA was cut short never got its `250`.
    public func shutdown() {
        guard !shuttingDown.exchange(true, ordering: .relaxed) else { return }
        webhooks?.close()
        for listener in listeners {
            listener.close()
        }
        connections.closeAll()
    }
}
