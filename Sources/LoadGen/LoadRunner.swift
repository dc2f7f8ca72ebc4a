import Foundation
import NIOCore
import NIOPosix
import NIOSSL
import SMTPClient
import SMTPProtocol
import SocketIO
import SwallowConfig
import Synchronization

/// Runs a scenario against an SMTP server. Open loop: every message has a scheduled time from
/// the arrival process, and its latency counts from that time, whether a connection was free
/// or not, so a slow server cannot hide its slowness (no coordinated omission). `closed`
/// arrival runs N senders back to back instead.
public struct LoadRunner: Sendable {
    public var scenario: Scenario
    /// Where the connections go, spread evenly (connection `i` to `targets[i % count]`).
    public var targets: [LoadTarget]
    /// Local addresses the connections are bound to, spread the same way; empty: any.
    public var bind: [String] = []
    /// Time zero of the schedule (`--start-at`): the run waits for it, or, started after it,
    /// sends what was due at once (latency still counts from each message's due time) and
    /// reports how late it started. nil: now.
    public var startAt: Date?
    public var seed: UInt64
    public var runID: String
    /// The sink's captures, for delivery latency; nil measures submission only.
    public var deliveries: (any DeliverySource)?
    /// How long after the last send a message may still arrive before it counts as lost.
    public var grace = 30.0
    /// Called about once a second with the recorder, while the run goes.
    /// Called about once a second while the run goes: the recorder, seconds elapsed, and
    /// messages delivered so far (nil without a delivery source).
    public var onProgress: (@Sendable (Recorder, Double, Int?) -> Void)?
    /// This process's part of a run split over several (`--shard K/N`); nil: all of it.
    public var shard: Shard?
    /// Plain TCP runs on Swallow's own socket loops (`SocketLoop`: `threads` of them, a
    /// connection a descriptor), TLS on SwiftNIO's channels. True: every connection a NIO channel, as TLS
    /// takes (for comparison and tests).
    public var nioChannelsOnly = false
    /// Threads (socket loops) for plain TCP; nil: `defaultThreads`.
    public var threads: Int?
    /// Half the cores, at least one: the generator usually shares the machine with the server
    /// it measures, and on this project's 2-core machine one loop sent more than two, at less
    /// CPU, against a server on the other core (README, "The load generator").
    public static var defaultThreads: Int { max(1, System.coreCount / 2) }
    /// Told how many socket loops the run started (0: NIO's event loops); for tests.
    var observeSocketLoops: (@Sendable (Int) -> Void)?

    public init(scenario: Scenario, host: String, port: Int, seed: UInt64, runID: String? = nil) {
        self.scenario = scenario
        self.targets = scenario.connection.targets.compactMap(LoadTarget.init(parsing:))
        if targets.isEmpty { targets = [LoadTarget(host: host, port: port)] }
        self.bind = scenario.connection.bind
        self.seed = seed
        self.runID = runID ?? Self.makeRunID()
    }

    static func makeRunID() -> String {
        let alphabet = Array("0123456789abcdefghijklmnopqrstuvwxyz")
        var random = SystemRandomNumberGenerator()
        return String((0..<10).map { _ in alphabet[Int(random.next() % UInt64(alphabet.count))] })
    }

    struct Job: Sendable {
        var seq: Int
        var template: String
        /// Uptime nanoseconds the message was due.
        var due: UInt64
        var offset: Double
        var attempt = 0
    }

    /// Runs to the end; returns the report.
    public func run() async throws(InputError) -> LoadReport {
        let trace: [(Double, String?)]
        if case .trace(let file, _) = scenario.arrival {
            let path = file.hasPrefix("/") ? file : (scenario.baseDirectory as NSString).appendingPathComponent(file)
            trace = try Schedule.readTrace(path: path)
            for name in trace.compactMap(\.1) where scenario.templates[name] == nil {
                throw InputError(file: path, line: nil, field: "template", message: "no template named `\(name)` in the scenario")
            }
        } else {
            trace = []
        }
        let recorder = Recorder()
        var renderer = Renderer(runID: runID, seed: seed)
        renderer.calibrate(scenario.templates.values, seq: 0, now: startAt ?? Date())
        let group = MultiThreadedEventLoopGroup.singleton
        // The run's one clock is its event loops' (`EventLoop.now`): every loop reads the same
        // uptime clock, and the schedule, the connections and this runner all count in it.
        let clockLoop = group.next()
        // Time zero as uptime nanoseconds and as a wall-clock instant (deliveries are timed on it).
        let wallNow = Date()
        let startedDate = startAt ?? wallNow
        let startOffset = startedDate.timeIntervalSince(wallNow)
        let uptimeNow = clockLoop.now.uptimeNanoseconds
        let started = startOffset >= 0 ? uptimeNow + UInt64(startOffset * 1e9) : uptimeNow - min(uptimeNow, UInt64(-startOffset * 1e9))
        let lateMs = startAt == nil ? nil : max(0, -startOffset * 1000)
        if started > clockLoop.now.uptimeNanoseconds { try? await Task.sleep(for: .nanoseconds(Int64(started - clockLoop.now.uptimeNanoseconds))) }
        let shard = self.shard ?? Shard(index: 0, count: 1)
        // Closed loop: the senders are split between the shards (the first take the remainder).
        let closedSenders: Int? =
            if case .closed(let senders) = scenario.arrival {
                senders / shard.count + (shard.index < senders % shard.count ? 1 : 0)
            } else {
                nil
            }
        let workers = closedSenders ?? scenario.connection.pool
        let counter = RunPlan.Counter()
        let settings = scenario.connection
        let scenario = self.scenario
        let targets = self.targets
        let bind = self.bind
        let deadline = scenario.duration.map { started + UInt64($0 * 1e9) }
        let tracker = deliveries.map { _ in DeliveryTracker(runID: runID, startedAt: startedDate, content: scenario.content) }
        let deliveryStream = await deliveries?.deliveries()
        let consumer = Task {
            guard let deliveryStream, let tracker else { return }
            for await delivery in deliveryStream { tracker.record(delivery) }
        }
        defer { consumer.cancel() }

        // The senders, spread over the event loops (the socket loops, or NIO's for TLS), the targets and the source
        // addresses; each loop runs its part of the schedule and its senders' connections.
        let socketLoops: [SocketLoop] =
            if settings.tls == .none && !nioChannelsOnly && SocketLoop.available {
                (try? SocketLoop.start(count: threads ?? Self.defaultThreads)) ?? []
            } else {
                []
            }
        observeSocketLoops?(socketLoops.count)
        let loops: [any EventLoop] = socketLoops.isEmpty ? Array(group.makeIterator()) : socketLoops
        let activeLoops = max(1, min(loops.count, workers))
        // Resolved once; a name that does not resolve fails each connection as a connect error.
        let addresses = targets.map { target in Result { try SocketAddress.makeAddressResolvingHost(target.host, port: target.port) } }
        let bindAddresses: [SocketAddress]
        do {
            bindAddresses = try bind.map { try SocketAddress(ipAddress: $0, port: 0) }
        } catch {
            throw InputError(file: "--bind", line: nil, field: "bind", message: "not an IP address: \(error)")
        }
        let tlsContext: NIOSSLContext? =
            if settings.tls == .none {
                nil
            } else {
                try? {
                    var configuration = TLSConfiguration.makeClientConfiguration()
                    // A sandbox sink's certificate is self-signed: load generation checks timing, not trust.
                    configuration.certificateVerification = .none
                    return try NIOSSLContext(configuration: configuration)
                }()
            }
        let plan = RunPlan(
            scenario: scenario, renderer: renderer, recorder: recorder, tracker: tracker,
            setup: .init(
                helo: settings.helo, tls: settings.tls, tlsContext: tlsContext, auth: settings.auth,
                pipelining: settings.pipelining, replyTimeout: UInt64(settings.replyTimeout * 1e9),
                perConnection: settings.perConnection),
            connectTimeout: .milliseconds(Int64(settings.connectTimeout * 1000)), perConnection: settings.perConnection,
            shard: shard, started: started, startedDate: startedDate, closed: closedSenders != nil, counter: counter,
            deadline: deadline, trace: trace, seed: seed
        )
        let targetNames = targets.map(\.description)
        var finished: [EventLoopFuture<Void>] = []
        for (index, loop) in loops.prefix(activeLoops).enumerated() {
            let mine = Swift.stride(from: index, to: workers, by: activeLoops).map { $0 }
            finished.append(
                loop.flatSubmit {
                    let work = LoopWork(eventLoop: loop, plan: plan, index: index, of: activeLoops)
                    let senders = mine.map { worker in
                        LoadSender(
                            work: work, address: addresses[worker % addresses.count],
                            bind: bindAddresses.isEmpty ? nil : bindAddresses[worker % bindAddresses.count],
                            targetName: targetNames[worker % targetNames.count], index: worker)
                    }
                    work.start(senders)
                    return work.done
                })
        }
        let progressTask = Task { [onProgress] in
            while !Task.isCancelled {
                try? await Task.sleep(for: .seconds(1))
                onProgress?(recorder, Double(clockLoop.now.uptimeNanoseconds - started) / 1e9, tracker?.deliveredCount)
            }
        }
        for future in finished { try? await future.get() }
        for loop in socketLoops { try? await loop.shutdownGracefully() }
        let sendingEnded = clockLoop.now.uptimeNanoseconds
        await tracker?.waitForDeliveries(grace: grace)
        progressTask.cancel()
        // The achieved rate counts the sending only, not the grace period for deliveries.
        let elapsed = Double(sendingEnded - started) / 1e9
        var report = LoadReport(scenario: scenario, runID: runID, recorder: recorder, elapsed: elapsed, seed: seed, deliveries: tracker)
        report.shard = self.shard.map(\.description)
        if let startAt {
            report.startedAt = LoadReport.rfc3339(startAt)
            report.startLateMs = lateMs.map { ($0 * 1000).rounded() / 1000 }
        }
        return report
    }
}
