import NIOCore
import SMTPProtocol

/// A `HOST:PORT` to listen on. Port 0 asks the system for a free port.
public struct ListenAddress: Hashable, Sendable, CustomStringConvertible {
    public var host: String
    public var port: Int

    public init(host: String, port: Int) {
        self.host = host
        self.port = port
    }

    /// Parses `127.0.0.1:1025`, `[::1]:1025`, `localhost:0`.
    public init(parsing text: String) throws {
        guard let colon = text.lastIndex(of: ":") else {
            throw ConfigurationError(message: "expected HOST:PORT, got \(text)")
        }
        var host = String(text[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        guard !host.isEmpty, let port = Int(text[text.index(after: colon)...]), (0...65535).contains(port) else {
            throw ConfigurationError(message: "expected HOST:PORT with a port in 0...65535, got \(text)")
        }
        self.init(host: host, port: port)
    }

    public var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }

    /// True for `localhost`, 127.0.0.0/8 and `::1`: only this machine can connect.
    public var isLoopback: Bool {
        let host = host.lowercased()
        if host == "localhost" || host == "::1" || host == "0:0:0:0:0:0:0:1" { return true }
        let octets = host.split(separator: ".", omittingEmptySubsequences: false)
        return octets.count == 4 && octets[0] == "127" && octets.allSatisfy { UInt8($0) != nil }
    }
}

/// Everything `swallow serve` can be told. The defaults are a safe local sandbox: loopback
/// only, in-memory, AUTH accepted for anyone.
public struct SinkConfiguration: Sendable {
    /// Plain SMTP (STARTTLS offered). Default 127.0.0.1:1025.
    public var smtp = ListenAddress(host: "127.0.0.1", port: 1025)
    /// Implicit TLS (`--smtps`), off unless set.
    public var smtps: ListenAddress?
    /// Name in the greeting, EHLO reply, `Received:` header and self-signed certificate.
    public var hostname = "swallow.localhost"
    public var limits = SMTPLimits()
    /// A connection that sends nothing for this long gets `421 4.4.2` (RFC 5321 §4.5.3.2.7: 5 min).
    /// A connection that sends nothing for this long, or takes this long to complete one command
    /// line (timed from its first byte, so a client trickling bytes cannot hold it), gets
    /// `421 4.4.2` and a close (RFC 5321 §4.5.3.2.7: 5 min).
    public var idleTimeout: TimeAmount = .minutes(5)
    /// One message's DATA or BDAT phase, from `354` or the first BDAT to its end; then
    /// `421 4.4.2` and a close (RFC 5321 §4.5.3.2.6 gives 3 min per data block; ours bounds the whole).
    public var dataTimeout: TimeAmount = .minutes(10)
    /// Concurrent connections; one more gets `421 4.7.0` and a close.
    public var maxConnections = 1024
    /// nil turns AUTH off.
    public var auth: AuthPolicy? = .any
    /// MAIL before a successful AUTH gets `530 5.7.0`.
    public var requireAuth = false
    /// AUTH is withheld until STARTTLS (off by default: a sandbox on loopback).
    public var authRequiresTLS = false
    /// `bounce@`, `tempfail@`, `full@`, `disconnect@`, `reject@`, `slow-<duration>@` act as
    /// `MagicAddress` says (`--no-magic-addresses` turns them off).
    public var magicAddresses = true
    /// nil turns STARTTLS and `--smtps` off.
    public var tls: TLSSource? = .selfSigned
    /// `--data DIR`: messages also on disk, back after a restart.
    public var dataDirectory: String?
    public var fsync: FsyncPolicy = .batch
    /// Stored messages kept; the oldest are evicted. 0: no limit.
    public var maxMessages = 10_000
    /// Plain and implicit-TLS SMTP connections on SwiftNIO's own channels rather than on
    /// Swallow's socket loops (`--nio-channels`; systems without epoll always use NIO's).
    public var nioChannels = false
    /// Keep metadata and timings only, never bodies (`--discard`).
    public var discardBodies = false
    /// Keep each session's SMTP transcript with its messages (`--transcripts`).
    public var transcripts = false
    /// The fault rules in force at start (`--faults FILE`); changed later over the API.
    public var faultRules = FaultRuleSet()
    /// `--seed`: every probabilistic fault decision repeatable. nil: the rule file's `seed:`,
    /// or one picked at random (shown by `GET /api/v1/faults`).
    public var faultSeed: UInt64?
    /// How new messages get tags: `X-Tags:` always, `--tag NAME=SEARCH` rules, `--tags-from-plus`.
    public var tagging = Tagging()
    /// `--webhook` and its options.
    public var webhooks = WebhookSettings()
    /// `--relay` and its options: release and auto-relay to a real server.
    public var relay = RelaySettings()
    /// `--upstream`: proxy mode. Every transaction is forwarded to this server while the client
    /// waits, and the client gets its answers; fault rules act in front of it.
    public var upstream: Upstream?
    /// `--mailbox-quota`: messages kept per mailbox (created or implicit) without a quota of
    /// its own; its own oldest are evicted past it. 0: none.
    public var mailboxQuota = 0
    /// `--max-age`: messages older than this many seconds are removed. nil: kept.
    public var maxAge: Double?
    /// `--api-token`: Bearer tokens with admin rights on the HTTP API.
    public var apiTokens: [String] = []
    /// `--api-auth FILE`: `user:password` pairs for HTTP Basic with admin rights.
    public var apiCredentials: [String: String]?
    /// `--http-tls`: the API and web inbox over HTTPS with the sink's certificate.
    public var httpTLS = false
    /// `--metrics-mailboxes`: mailboxes named in `/metrics` and stats; the rest are summed as `other`.
    public var metricsMailboxes = 100
    /// The delivery audit: `--max-attempts`, `--bounce-memory`, `--min-retry-interval`,
    /// `--give-up-after`, `--stats-retention`.
    public var audit = AuditSettings()

    /// True when the API needs a credential (`--api-token` or `--api-auth`).
    public var apiAuthRequired: Bool { !apiTokens.isEmpty || apiCredentials != nil }

    public init() {}
}
