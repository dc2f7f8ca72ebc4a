import Foundation
import Logging
import NIOCore
import NIOPosix
import NIOSSL
import SMTPProtocol
import ServiceLifecycle
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

    private typealias Listener = NIOAsyncChannel<NIOAsyncChannel<SMTPServerEvent, SMTPReply>, Never>

    private let listeners: [(listener: Listener, implicitTLS: Bool)]
    private let sessionConfiguration: SMTPSession.Configuration
    private let logger: Logger
    private let connections = Mutex<[ObjectIdentifier: any Channel]>([:])
    private let connectionCount = Atomic<Int>(0)
    private let sessionCounter = Atomic<UInt64>(0)
    private let shuttingDown = Atomic<Bool>(false)

    private init(
        configuration: SinkConfiguration, store: MessageStore, listeners: [(listener: Listener, implicitTLS: Bool)],
        sessionConfiguration: SMTPSession.Configuration, logger: Logger
    ) {
        self.configuration = configuration
        self.store = store
        self.listeners = listeners
        self.sessionConfiguration = sessionConfiguration
        self.logger = logger
        self.smtpAddress = Self.bound(listeners[0].listener, fallback: configuration.smtp)
        self.smtpsAddress = listeners.count > 1 ? Self.bound(listeners[1].listener, fallback: configuration.smtps!) : nil
    }

    /// Opens the store and binds every listener.
    public static func bind(
        _ configuration: SinkConfiguration,
        logger: Logger = Logger(label: "swallow.sink"),
        eventLoopGroup: any EventLoopGroup = MultiThreadedEventLoopGroup.singleton
    ) async throws -> Sink {
        let tlsContext = try configuration.tls.map { try TLSSetup.makeContext($0, hostname: configuration.hostname) }
        if configuration.smtps != nil && tlsContext == nil {
            throw ConfigurationError(message: "--smtps needs TLS, which is turned off")
        }
        let store = try MessageStore.open(
            dataDirectory: configuration.dataDirectory, policy: configuration.fsync,
            maxMessages: configuration.maxMessages, logger: logger
        )
        let hostname = configuration.hostname
        let sessionConfiguration = SMTPSession.Configuration(
            hostname: hostname,
            limits: configuration.limits,
            startTLSAvailable: tlsContext != nil,
            auth: configuration.auth,
            requireAuth: configuration.requireAuth,
            authRequiresTLS: configuration.authRequiresTLS,
            makeChallenge: { "<\(UInt64.random(in: 1...UInt64.max)).\(WallClock.nanos() / 1_000_000_000)@\(hostname)>" }
        )

        var listeners: [(listener: Listener, implicitTLS: Bool)] = []
        do {
            listeners.append((try await listen(configuration.smtp, configuration: configuration, group: eventLoopGroup,
                                               startTLS: tlsContext, implicitTLS: nil), false))
            if let smtps = configuration.smtps, let tlsContext {
                listeners.append((try await listen(smtps, configuration: configuration, group: eventLoopGroup,
                                                   startTLS: nil, implicitTLS: tlsContext), true))
            }
        } catch {
            for (listener, _) in listeners { try? await listener.channel.close() }
            throw ConfigurationError(message: "cannot listen: \(error)")
        }
        return Sink(configuration: configuration, store: store, listeners: listeners,
                    sessionConfiguration: sessionConfiguration, logger: logger)
    }

    private static func listen(
        _ address: ListenAddress, configuration: SinkConfiguration, group: any EventLoopGroup,
        startTLS: NIOSSLContext?, implicitTLS: NIOSSLContext?
    ) async throws -> Listener {
        let limits = configuration.limits
        let idleTimeout = configuration.idleTimeout
        return try await ServerBootstrap(group: group)
            .serverChannelOption(.backlog, value: 512)
            .serverChannelOption(.socketOption(.so_reuseaddr), value: 1)
            .childChannelOption(.tcpOption(.tcp_nodelay), value: 1)
            .bind(host: address.host, port: address.port) { channel in
                channel.eventLoop.makeCompletedFuture {
                    let pipeline = channel.pipeline.syncOperations
                    if let implicitTLS { try pipeline.addHandler(NIOSSLServerHandler(context: implicitTLS)) }
                    try pipeline.addHandler(IdleStateHandler(readTimeout: idleTimeout))
                    try pipeline.addHandler(SMTPServerHandler(limits: limits, startTLSContext: startTLS, implicitTLS: implicitTLS != nil))
                    return try NIOAsyncChannel<SMTPServerEvent, SMTPReply>(wrappingChannelSynchronously: channel)
                }
            }
    }

    private static func bound(_ listener: Listener, fallback: ListenAddress) -> ListenAddress {
        guard let address = listener.channel.localAddress, let port = address.port else { return fallback }
        return ListenAddress(host: address.ipAddress ?? fallback.host, port: port)
    }

    /// `ready smtp=HOST:PORT [smtps=HOST:PORT]`: the line `swallow serve` prints once listening.
    public var readyLine: String {
        var line = "ready smtp=\(smtpAddress)"
        if let smtpsAddress { line += " smtps=\(smtpsAddress)" }
        return line
    }

    /// Serves until `shutdown()` or a graceful shutdown, then waits for open sessions to end
    /// and for queued disk writes.
    public func run() async throws {
        await withGracefulShutdownHandler {
            await withDiscardingTaskGroup { group in
                for (listener, implicitTLS) in listeners {
                    group.addTask { await self.accept(on: listener, implicitTLS: implicitTLS) }
                }
            }
        } onGracefulShutdown: {
            self.shutdown()
        }
        await store.drain()
        logger.info("sink stopped", metadata: ["messages": "\(store.count)"])
    }

    private func accept(on listener: Listener, implicitTLS: Bool) async {
        do {
            try await withThrowingDiscardingTaskGroup { group in
                try await listener.executeThenClose { inbound in
                    for try await connection in inbound {
                        group.addTask { await self.serve(connection, implicitTLS: implicitTLS) }
                    }
                }
            }
        } catch {
            if !shuttingDown.load(ordering: .relaxed) {
                logger.error("listener failed", metadata: ["error": "\(error)"])
            }
        }
    }

    private func serve(_ connection: NIOAsyncChannel<SMTPServerEvent, SMTPReply>, implicitTLS: Bool) async {
        let channel = connection.channel
        let id = ObjectIdentifier(channel)
        let open = connectionCount.add(1, ordering: .relaxed).newValue
        connections.withLock { $0[id] = channel }
        defer {
            connections.withLock { $0[id] = nil }
            connectionCount.subtract(1, ordering: .relaxed)
        }
        if open > configuration.maxConnections || shuttingDown.load(ordering: .relaxed) {
            try? await connection.executeThenClose { _, outbound in
                try await outbound.write(SMTPReply(421, "4.7.0", "Too many connections, try again later"))
            }
            return
        }
        let session = sessionCounter.add(1, ordering: .relaxed).newValue
        let handler = SMTPConnection(
            sessionConfiguration: sessionConfiguration, configuration: configuration, store: store,
            implicitTLS: implicitTLS, sessionID: "s\(session)", logger: logger
        )
        await handler.run(connection)
    }

    /// Stops accepting and closes every open connection. Messages already answered with `250`
    /// are stored; a message whose DATA was cut short never got its `250`.
    public func shutdown() {
        guard !shuttingDown.exchange(true, ordering: .relaxed) else { return }
        for (listener, _) in listeners {
            listener.channel.close(promise: nil)
        }
        let open = connections.withLock { Array($0.values) }
        for channel in open {
            channel.close(promise: nil)
        }
    }
}
