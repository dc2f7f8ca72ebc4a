import ArgumentParser
import CSwallowSystem
import Foundation
import Logging
import NIOCore
import SMTPProtocol
import ServiceLifecycle
import SinkServer
import SwallowConfig
import UnixSignals

struct Serve: AsyncParsableCommand {
    /// Above this an idle sink lets go of the code it mapped (see `run`): a little over what
    /// the code an idle sink keeps running (its timers) maps, ~13.9 MiB here.
    static let idleResidentBound: Int64 = 14 << 20

    static let configuration = CommandConfiguration(
        abstract: "Run the SMTP sink: capture every message to memory (and disk with --data).",
        discussion: """
            Prints one line `ready smtp=HOST:PORT [smtps=HOST:PORT]` on stdout once listening; logs go to stderr.
            SIGINT and SIGTERM shut down gracefully: every message answered with 250 is kept.
            """
    )

    @Option(help: "Plain SMTP listen address (STARTTLS offered); port 0 picks a free port.")
    var smtp = "127.0.0.1:1025"

    @Option(help: "HTTP API listen address; port 0 picks a free port.")
    var http = "127.0.0.1:8025"

    @Option(help: "Implicit-TLS SMTP listen address (off unless given).")
    var smtps: String?

    @Option(help: "Keep messages on disk in DIR (DIR/messages/<id>.eml and .json); a restart loads them again.")
    var data: String?

    @Option(help: "When the final 250 may be sent relative to the disk write: always, batch, never.")
    var fsync: String = "batch"

    @Option(help: "Messages kept; the oldest are evicted (0: no limit).")
    var maxMessages = 10_000

    @Option(help: "Largest accepted message, advertised with SIZE (e.g. 25MiB, 512KiB).")
    var maxMessageSize = "25MiB"

    @Option(help: "Recipients per message.")
    var maxRecipients = 100

    @Option(help: "Concurrent connections.")
    var maxConnections = 1024

    @Option(help: "Close a connection idle this long, or that takes this long to complete one command line (e.g. 5m, 30s).")
    var idleTimeout = "5m"

    @Option(help: "Close a connection whose message data (DATA or BDAT) takes longer than this (e.g. 10m).")
    var dataTimeout = "10m"

    @Option(help: "Name in the greeting, EHLO reply, Received: header and self-signed certificate.")
    var hostname = "swallow.localhost"

    @Option(help: "AUTH users: 'any' (accept everyone), 'off', or a file of user:password lines.")
    var auth = "any"

    @Flag(help: "Refuse MAIL until the client has authenticated (530 5.7.0).")
    var requireAuth = false

    @Flag(help: "Offer AUTH only after STARTTLS (or on --smtps).")
    var authRequiresTls = false

    @Flag(help: "Treat bounce@, tempfail@, full@, disconnect@, hang@, reject@, slow-<duration>@ and +fail-NNN / +delay-D tags as ordinary addresses.")
    var noMagicAddresses = false

    @Option(help: "Fault rules (YAML, see README \"Faults\"): latency, refusals, disconnects, hangs, throttling, drops, greylisting.")
    var faults: String?

    @Option(help: "Seed for every probabilistic fault decision (overrides the rule file's seed:).")
    var seed: UInt64?

    @Option(help: "PEM certificate chain for STARTTLS and --smtps (default: a self-signed one made at start).")
    var tlsCert: String?

    @Option(help: "PEM private key for --tls-cert.")
    var tlsKey: String?

    @Flag(help: "Do not offer STARTTLS.")
    var noTls = false

    @Flag(help: "Keep metadata and timings but not message bodies (relay benchmarks).")
    var discard = false

    @Flag(help: "Keep each session's SMTP transcript (AUTH secrets redacted) with its messages.")
    var transcripts = false

    @Option(name: .customLong("tag"), help: ArgumentHelp("Tag every new message matching a search query (repeatable).", valueName: "NAME=SEARCH"))
    var tags: [String] = []

    @Flag(help: "Tag messages with their recipients' plus tags (app+signup@x.example → signup).")
    var tagsFromPlus = false

    @Option(
        help: ArgumentHelp(
            "POST each stored message's event as JSON to URL (repeatable); a --webhook-mailbox or --webhook-query after it filters it.",
            valueName: "URL"))
    var webhook: [String] = []

    @Option(help: ArgumentHelp("Only messages of this mailbox, for the --webhook before it.", valueName: "NAME"))
    var webhookMailbox: [String] = []

    @Option(help: ArgumentHelp("Only messages matching this search query, for the --webhook before it.", valueName: "QUERY"))
    var webhookQuery: [String] = []

    @Option(help: "Sign webhook bodies: X-Swallow-Signature: sha256=<hex HMAC-SHA256 of the body>.")
    var webhookSecret: String?

    @Option(help: "A webhook attempt taking longer than this failed.")
    var webhookTimeout = "5s"

    @Option(help: "Attempts per event in all (backoff from 1s, doubling, at most 60s apart).")
    var webhookRetries = 8

    @Option(help: "Events waiting per webhook; past it they are dropped and counted.")
    var webhookQueue = 10_000

    @Option(help: "Events sent to webhooks: message, drop, fault, relay (comma-separated).")
    var webhookEvents = "message"

    @Option(
        help: ArgumentHelp(
            "Release and auto-relay through this server: smtp://[USER:PASSWORD@]HOST:PORT[?tls=none|starttls|implicit&verify=true|false] (STARTTLS when offered unless tls= says; certificates verified unless verify=false).",
            valueName: "URL"))
    var relay: String?

    @Option(
        help: ArgumentHelp(
            "Proxy mode: forward every transaction to this server (URL as for --relay) while the client waits; the client gets its answers, fault rules act in front of it, every message is captured with the hop.",
            valueName: "URL"))
    var upstream: String?

    @Flag(help: "Relay every stored message to its own envelope recipients (needs --relay).")
    var relayAll = false

    @Option(
        help: ArgumentHelp("Relay stored messages to those of their recipients matching this regular expression (needs --relay).", valueName: "REGEX")
    )
    var relayMatching: String?

    @Option(help: ArgumentHelp("Only recipients matching this glob or ~regex may be released or relayed to (repeatable).", valueName: "PATTERN"))
    var relayAllow: [String] = []

    @Option(
        help: ArgumentHelp(
            "Recipients matching this glob or ~regex are never released or relayed to (repeatable; wins over --relay-allow).", valueName: "PATTERN"))
    var relayDeny: [String] = []

    @Option(help: "Messages kept per mailbox without a quota of its own (created or implicit); its own oldest are evicted (0: no limit).")
    var mailboxQuota = 0

    @Option(help: "Remove messages older than this (e.g. 30m, 24h; 0: keep them), checked every second.")
    var maxAge = "0"

    @Option(
        name: .customLong("api-token"),
        help: ArgumentHelp(
            "An admin Bearer token for the HTTP API (repeatable); with it or --api-auth every route but the health checks needs a credential.",
            valueName: "TOKEN"))
    var apiTokens: [String] = []

    @Option(help: ArgumentHelp("Admin users of the HTTP API, for HTTP Basic: a file of user:password lines (as --auth FILE).", valueName: "FILE"))
    var apiAuth: String?

    @Flag(help: "Allow --http on an address that is not loopback without --api-token or --api-auth.")
    var apiInsecure = false

    @Flag(help: "Serve the HTTP API and web inbox over HTTPS with the sink's certificate (--tls-cert/--tls-key, or the self-signed one).")
    var httpTls = false

    @Option(help: "Mailboxes named in /metrics and /api/v1/stats; the rest are summed as 'other'.")
    var metricsMailboxes = 100

    @Option(
        help:
            "Delivery attempts kept for /api/v1/deliveries (one per recipient and transaction); the oldest are dropped and counted (0: none recorded)."
    )
    var maxAttempts = 100_000

    @Option(help: "How long a bounce (5xx) is remembered: a new message to that address within it is flagged sent-after-bounce.")
    var bounceMemory = "24h"

    @Option(help: "A retry after a 4xx sooner than this (or than a greylisting rule's retry_after) is flagged retry-too-soon.")
    var minRetryInterval = "1s"

    @Option(help: "A delivery deferred with a 4xx and then not tried again for this long is flagged gave-up.")
    var giveUpAfter = "10m"

    @Option(help: "How long /api/v1/stats/timeline keeps its buckets (10 s for the last hour, 1 min beyond).")
    var statsRetention = "24h"

    @Option(help: "I/O threads (default: half the cores, at least 1, leaving the rest to the senders that share the machine).")
    var threads: Int?

    @Flag(help: "Serve SMTP connections on SwiftNIO's channels instead of Swallow's own socket loops (which take ~20% less CPU a message).")
    var nioChannels = false

    static var defaultThreads: Int { max(1, ProcessInfo.processInfo.activeProcessorCount / 2) }

    @Option(help: "Log level: trace, debug, info, notice, warning, error, critical.")
    var logLevel = "info"

    /// A duration of Units, or of days (`7d`).
    static func days(_ text: String, option: String) throws -> Double {
        if text.hasSuffix("d"), let days = Double(text.dropLast()), days >= 0, days.isFinite { return days * 86_400 }
        return try Units.duration(text, option: option)
    }

    func makeConfiguration() throws -> SinkConfiguration {
        var configuration = SinkConfiguration()
        configuration.smtp = try ListenAddress(parsing: smtp)
        configuration.smtps = try smtps.map { try ListenAddress(parsing: $0) }
        configuration.dataDirectory = data
        guard let policy = FsyncPolicy(rawValue: fsync) else {
            throw ValidationError("--fsync must be always, batch or never, not \(fsync)")
        }
        configuration.fsync = policy
        guard maxMessages >= 0 else { throw ValidationError("--max-messages must be 0 or more") }
        configuration.maxMessages = maxMessages
        configuration.limits.maxMessageBytes = try Units.bytes(maxMessageSize, option: "--max-message-size")
        guard maxRecipients > 0 else { throw ValidationError("--max-recipients must be at least 1") }
        configuration.limits.maxRecipients = maxRecipients
        guard maxConnections > 0 else { throw ValidationError("--max-connections must be at least 1") }
        configuration.maxConnections = maxConnections
        configuration.idleTimeout = .nanoseconds(Int64(try Units.duration(idleTimeout, option: "--idle-timeout") * 1e9))
        configuration.dataTimeout = .nanoseconds(Int64(try Units.duration(dataTimeout, option: "--data-timeout") * 1e9))
        guard configuration.idleTimeout.nanoseconds > 0, configuration.dataTimeout.nanoseconds > 0 else {
            throw ValidationError("--idle-timeout and --data-timeout must be more than 0")
        }
        configuration.hostname = hostname
        switch auth {
        case "any": configuration.auth = .any
        case "off": configuration.auth = nil
        default: configuration.auth = try AuthPolicy.load(file: auth)
        }
        configuration.requireAuth = requireAuth
        configuration.authRequiresTLS = authRequiresTls
        configuration.magicAddresses = !noMagicAddresses
        switch (tlsCert, tlsKey) {
        case (nil, nil): configuration.tls = noTls ? nil : .selfSigned
        case (let cert?, let key?): configuration.tls = .files(certificate: cert, key: key)
        default: throw ValidationError("--tls-cert and --tls-key go together")
        }
        guard mailboxQuota >= 0 else { throw ValidationError("--mailbox-quota must be 0 or more") }
        configuration.mailboxQuota = mailboxQuota
        if maxAge != "0" {
            guard let seconds = Quantity.duration(maxAge) ?? (maxAge.hasSuffix("d") ? Double(maxAge.dropLast()).map { $0 * 86_400 } : nil),
                seconds >= 0, seconds.isFinite
            else { throw ValidationError("--max-age: expected a duration such as 30m or 24h (0: off), got \(maxAge)") }
            configuration.maxAge = seconds > 0 ? seconds : nil
        }
        guard metricsMailboxes >= 1 else { throw ValidationError("--metrics-mailboxes must be at least 1") }
        configuration.metricsMailboxes = metricsMailboxes
        guard maxAttempts >= 0 else { throw ValidationError("--max-attempts must be 0 or more") }
        configuration.audit.maxAttempts = maxAttempts
        configuration.audit.bounceMemory = try Self.days(bounceMemory, option: "--bounce-memory")
        configuration.audit.minRetryInterval = try Self.days(minRetryInterval, option: "--min-retry-interval")
        configuration.audit.giveUpAfter = try Self.days(giveUpAfter, option: "--give-up-after")
        configuration.audit.statsRetention = try Self.days(statsRetention, option: "--stats-retention")
        guard configuration.audit.statsRetention >= 60, configuration.audit.statsRetention <= 90 * 86_400 else {
            throw ValidationError("--stats-retention: from 1m to 90d")
        }
        guard !apiTokens.contains(where: \.isEmpty) else { throw ValidationError("--api-token must not be empty") }
        configuration.apiTokens = apiTokens
        if let apiAuth {
            guard case .credentials(let users) = try AuthPolicy.load(file: apiAuth) else { throw ValidationError("--api-auth: no users") }
            configuration.apiCredentials = users
        }
        configuration.httpTLS = httpTls
        configuration.discardBodies = discard
        configuration.nioChannels = nioChannels
        configuration.transcripts = transcripts
        if let threads, threads < 1 { throw ValidationError("--threads must be at least 1") }
        // A tag rule or webhook that does not parse is bad input, as a bad rule file is: exit 2.
        do {
            configuration.tagging = Tagging(rules: try tags.map(Tagging.parseRule), fromPlus: tagsFromPlus)
            configuration.webhooks = try makeWebhookSettings()
            configuration.relay = try makeRelaySettings()
            if let upstream {
                guard !discard else { throw Upstream.Invalid(description: "--upstream forwards message bodies: it cannot go with --discard") }
                do {
                    configuration.upstream = try Upstream(url: upstream)
                } catch {
                    throw Upstream.Invalid(description: "--upstream \(error)")
                }
            }
        } catch let error as Upstream.Invalid {
            FileHandle.standardError.write(Data("swallow serve: \(error)\n".utf8))
            throw ExitCode(2)
        } catch let error as Tagging.Invalid {
            FileHandle.standardError.write(Data("swallow serve: \(error)\n".utf8))
            throw ExitCode(2)
        } catch let error as WebhookSettings.Invalid {
            FileHandle.standardError.write(Data("swallow serve: \(error)\n".utf8))
            throw ExitCode(2)
        }
        return configuration
    }

    /// `--relay` and its options; a bad URL or pattern is bad input (exit 2), naming the part.
    func makeRelaySettings() throws -> RelaySettings {
        var settings = RelaySettings()
        guard let relay else {
            guard !relayAll, relayMatching == nil else {
                throw Upstream.Invalid(description: "--relay-all and --relay-matching need --relay smtp://HOST:PORT")
            }
            return settings
        }
        do {
            settings.upstream = try Upstream(url: relay)
        } catch {
            throw Upstream.Invalid(description: "--relay \(error)")
        }
        settings.all = relayAll
        do {
            settings.matching = try relayMatching.map { try FaultPattern("~" + $0) }
        } catch {
            throw Upstream.Invalid(description: "--relay-matching: \(error)")
        }
        for (flag, patterns) in [("--relay-allow", relayAllow), ("--relay-deny", relayDeny)] {
            do {
                let compiled = try patterns.map { try FaultPattern($0) }
                if flag == "--relay-allow" { settings.allow = compiled } else { settings.deny = compiled }
            } catch {
                throw Upstream.Invalid(description: "\(flag): \(error)")
            }
        }
        return settings
    }

    /// The webhook options; `--webhook-mailbox` and `--webhook-query` belong to the `--webhook`
    /// before them on the command line.
    func makeWebhookSettings() throws -> WebhookSettings {
        var settings = WebhookSettings()
        guard !webhook.isEmpty else {
            guard webhookMailbox.isEmpty, webhookQuery.isEmpty else {
                throw WebhookSettings.Invalid(description: "--webhook-mailbox and --webhook-query filter a --webhook: give one first")
            }
            return settings
        }
        do {
            var hooks = try WebhookSettings.hooks(fromCommandLine: Array(CommandLine.arguments.dropFirst()))
            if hooks.map(\.url) != webhook {
                // Not from this command line (a test's arguments): filters pair by position.
                hooks = webhook.map { WebhookSettings.Hook(url: $0) }
                for (index, mailbox) in webhookMailbox.enumerated() where index < hooks.count { hooks[index].mailbox = mailbox }
                for (index, query) in webhookQuery.enumerated() where index < hooks.count { hooks[index].query = try SearchQuery(query) }
            }
            settings.hooks = hooks
            settings.events = try WebhookSettings.events(webhookEvents)
        } catch let error as SearchQuery.Invalid {
            throw WebhookSettings.Invalid(description: "--webhook-query: \(error)")
        }
        settings.secret = webhookSecret
        guard let timeout = Quantity.duration(webhookTimeout), timeout > 0 else {
            throw WebhookSettings.Invalid(description: "--webhook-timeout: expected a duration such as 5s, got \(webhookTimeout)")
        }
        settings.timeout = .nanoseconds(Int64(timeout * 1e9))
        guard webhookRetries >= 1 else { throw WebhookSettings.Invalid(description: "--webhook-retries must be at least 1") }
        settings.attempts = webhookRetries
        guard webhookQueue >= 1 else { throw WebhookSettings.Invalid(description: "--webhook-queue must be at least 1") }
        settings.queueSize = webhookQueue
        return settings
    }

    func run() async throws {
        let level = Logger.Level(rawValue: logLevel) ?? .info
        LoggingSystem.bootstrap { label in
            var handler = StreamLogHandler.standardError(label: label)
            handler.logLevel = level
            return handler
        }
        let logger = Logger(label: "swallow")
        var configuration = try makeConfiguration()
        if let faults {
            do {
                configuration.faultRules = try FaultRuleSet.load(path: faults)
            } catch {
                FileHandle.standardError.write(Data("swallow serve: \(error)\n".utf8))
                throw ExitCode(2)
            }
        }
        configuration.faultSeed = seed
        let httpAddress: ListenAddress
        do {
            httpAddress = try ListenAddress(parsing: http)
        } catch {
            throw ValidationError("--http: \(error)")
        }
        // Anyone who reaches a public port could read every message and change the faults.
        if !httpAddress.isLoopback && !configuration.apiAuthRequired && !apiInsecure {
            FileHandle.standardError.write(
                Data(
                    """
                    swallow serve: --http \(http) is not a loopback address and the API has no authentication: \
                    give --api-token TOKEN or --api-auth FILE, or --api-insecure to serve it open anyway

                    """.utf8))
            throw ExitCode(2)
        }
        let sink: Sink
        do {
            sink = try await Sink.bind(configuration, logger: logger)
        } catch {
            FileHandle.standardError.write(Data("swallow serve: \(error)\n".utf8))
            throw ExitCode(2)
        }
        let app = try sink.application(http: httpAddress, logger: logger) { line in
            // Unbuffered: scripts wait for this line.
            FileHandle.standardOutput.write(Data((line + "\n").utf8))
            // Start-up is over: let the resident set forget the code only it ran (argument
            // parsing, configuration, binding) and what the kernel mapped around it; code that
            // runs later is mapped again on first use. Measured (Benchmarks/footprint.py): idle
            // RSS from 38 MiB to 16 MiB; the first message and API call bring it to ~29 MiB.
            _ = swallow_release_code_pages()
            // And again whenever the sink is idle (no SMTP connection open, under 1% of a core
            // used since the last look) and holds more than `idleResidentBound`: the first
            // timers' one-time work (lazy symbol binding, threads starting; libdispatch's
            // manager thread ~15 s in), and after use the code that mail and API calls ran, map
            // code and symbol tables again. Without it an idle sink held ~17 MiB from a second
            // after `ready` on (`/proc/PID/status` sampled for 20 s, `perf record -e
            // page-faults`); with it ~13.9 MiB. A look is a clock read and, past the CPU test,
            // a read of `/proc/self/statm`; a release reads `/proc/self/smaps`, then code that
            // runs again takes minor faults. A busy sink is never released.
            Task {
                var used = swallow_process_cpu_nanos()
                while true {
                    try await Task.sleep(for: .milliseconds(250))
                    let now = swallow_process_cpu_nanos()
                    defer { used = now }
                    guard now - used < 2_500_000, sink.openConnections == 0, swallow_resident_bytes() > Self.idleResidentBound else {
                        continue
                    }
                    _ = swallow_release_code_pages()
                }
            }
        }
        let group = ServiceGroup(
            configuration: .init(services: [app], gracefulShutdownSignals: [.sigterm, .sigint], logger: logger)
        )
        try await group.run()
    }
}
