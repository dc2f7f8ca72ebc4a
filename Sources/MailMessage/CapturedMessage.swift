/// What the sink knows about one accepted message besides its bytes: the envelope, the
/// session it came in on, when each step happened, and what was odd about it.
///
/// Encoded as the JSON written beside each `.eml` file; field names are part of the
/// on-disk format.
public struct CapturedMessage: Codable, Hashable, Sendable, Identifiable {
    /// Sortable: later messages have larger ids.
    public var id: String
    public var envelope: Envelope
    /// The session, held by reference: the messages of one connection share one (see
    /// `shareSession(_:)`), so a held message does not carry a copy of it inline.
    public var session: SessionInfo {
        get { sharedSession.value }
        set { sharedSession = SharedSession(newValue) }
    }
    /// The reference `session` reads.
    public private(set) var sharedSession: SharedSession
    public var timestamps: CaptureTimestamps
    /// False when the sink ran with `--discard`: metadata and timings only. (Declared here, in
    /// the padding after `timestamps`.)
    public var bodyStored: Bool
    /// Size of the stored raw message in bytes, the prepended `Received:` header included.
    public var size: Int {
        get { Int(storedSize) }
        set { storedSize = UInt32(clamping: newValue) }
    }
    /// Length of the `Received:` header the sink prepended; the bytes after it are exactly
    /// what the client sent (dot-unstuffed).
    public var receivedHeaderLength: Int {
        get { Int(storedReceivedHeaderLength) }
        set { storedReceivedHeaderLength = UInt32(clamping: newValue) }
    }
    /// The two lengths as 32 bits (a message held in memory is far below 4 GiB), in the
    /// padding after `timestamps` and `bodyStored`.
    private var storedSize: UInt32
    private var storedReceivedHeaderLength: UInt32
    /// The `X-Swallow-Trace` header value, when present.
    public var traceID: String?
    /// What most messages do not have, boxed: a held message carries a reference for all of
    /// it (48 bytes less each, 100 000 held 1 KiB messages measured).
    private var extras: Extras?

    /// Names of protocol anomalies seen in the message bytes (`bare-lf`, `long-line`, ...).
    public var anomalies: [String] {
        get { extras?.values.anomalies ?? [] }
        set { changeExtras { $0.anomalies = newValue } }
    }
    /// Names of the fault rules that acted on this message's session.
    public var faults: [String] {
        get { extras?.values.faults ?? [] }
        set { changeExtras { $0.faults = newValue } }
    }
    /// The `X-Swallow-Mailbox` header value, when present: files the message under that
    /// mailbox (besides its recipients' plus tags and its AUTH user).
    public var mailbox: String? {
        get { extras?.values.mailbox }
        set { changeExtras { $0.mailbox = newValue } }
    }
    /// The session's SMTP transcript up to this message's final reply (with `--transcripts`).
    public var transcript: [TranscriptEntry]? {
        get { extras?.values.transcript }
        set { changeExtras { $0.transcript = newValue } }
    }
    /// Every hand-over of this message to a real server (release, auto-relay, proxy), oldest
    /// first; nil (left out of the JSON) until there is one.
    public var relay: [RelayHop]? {
        get { extras?.values.relay }
        set { changeExtras { $0.relay = newValue } }
    }

    public init(
        id: String,
        envelope: Envelope,
        session: SessionInfo,
        timestamps: CaptureTimestamps,
        size: Int,
        receivedHeaderLength: Int,
        anomalies: [String] = [],
        faults: [String] = [],
        traceID: String? = nil,
        mailbox: String? = nil,
        bodyStored: Bool = true,
        transcript: [TranscriptEntry]? = nil
    ) {
        self.init(
            id: id, envelope: envelope, sharedSession: SharedSession(session), timestamps: timestamps, size: size,
            receivedHeaderLength: receivedHeaderLength, anomalies: anomalies, faults: faults, traceID: traceID, mailbox: mailbox,
            bodyStored: bodyStored, transcript: transcript)
    }

    /// With a session description already shared (a connection's earlier message's): no box
    /// is made for this message's own.
    public init(
        id: String,
        envelope: Envelope,
        sharedSession: SharedSession,
        timestamps: CaptureTimestamps,
        size: Int,
        receivedHeaderLength: Int,
        anomalies: [String] = [],
        faults: [String] = [],
        traceID: String? = nil,
        mailbox: String? = nil,
        bodyStored: Bool = true,
        transcript: [TranscriptEntry]? = nil
    ) {
        self.id = id
        self.envelope = envelope
        self.sharedSession = sharedSession
        self.timestamps = timestamps
        self.storedSize = UInt32(clamping: size)
        self.storedReceivedHeaderLength = UInt32(clamping: receivedHeaderLength)
        self.traceID = traceID
        self.bodyStored = bodyStored
        let extras = Extras.Values(anomalies: anomalies, faults: faults, mailbox: mailbox, transcript: transcript)
        self.extras = extras == Extras.Values() ? nil : Extras(extras)
    }
}

extension CapturedMessage {
    /// The fields few messages have. Immutable once made: a change makes a new box, so copies
    /// of a message stay independent.
    final class Extras: Hashable, Sendable {
        struct Values: Hashable, Sendable {
            var anomalies: [String] = []
            var faults: [String] = []
            var mailbox: String?
            var transcript: [TranscriptEntry]?
            var relay: [RelayHop]?
        }

        let values: Values

        init(_ values: Values) { self.values = values }

        static func == (lhs: Extras, rhs: Extras) -> Bool { lhs === rhs || lhs.values == rhs.values }
        func hash(into hasher: inout Hasher) { hasher.combine(values) }
    }

    private mutating func changeExtras(_ change: (inout Extras.Values) -> Void) {
        var values = extras?.values ?? Extras.Values()
        change(&values)
        extras = values == Extras.Values() ? nil : Extras(values)
    }

    /// A session's description, shared by the messages of one connection.
    public final class SharedSession: Hashable, Sendable {
        public let value: SessionInfo

        public init(_ value: SessionInfo) { self.value = value }

        public static func == (lhs: SharedSession, rhs: SharedSession) -> Bool { lhs === rhs || lhs.value == rhs.value }
        public func hash(into hasher: inout Hasher) { hasher.combine(value) }
    }

    /// Holds `shared` instead of this message's own copy when they describe the same session
    /// (the sink keeps a connection's last one: 100 000 held messages are 100 000 copies less).
    public mutating func shareSession(_ shared: SharedSession) {
        if shared !== sharedSession, shared.value == sharedSession.value { sharedSession = shared }
    }

    enum CodingKeys: String, CodingKey {
        case id, envelope, session, timestamps, size, receivedHeaderLength, anomalies, faults, traceID, mailbox, bodyStored
        case transcript, relay
    }

    public init(from decoder: any Decoder) throws {
        let container = try decoder.container(keyedBy: CodingKeys.self)
        self.init(
            id: try container.decode(String.self, forKey: .id),
            envelope: try container.decode(Envelope.self, forKey: .envelope),
            session: try container.decode(SessionInfo.self, forKey: .session),
            timestamps: try container.decode(CaptureTimestamps.self, forKey: .timestamps),
            size: try container.decode(Int.self, forKey: .size),
            receivedHeaderLength: try container.decode(Int.self, forKey: .receivedHeaderLength),
            anomalies: try container.decode([String].self, forKey: .anomalies),
            faults: try container.decode([String].self, forKey: .faults),
            traceID: try container.decodeIfPresent(String.self, forKey: .traceID),
            mailbox: try container.decodeIfPresent(String.self, forKey: .mailbox),
            bodyStored: try container.decode(Bool.self, forKey: .bodyStored),
            transcript: try container.decodeIfPresent([TranscriptEntry].self, forKey: .transcript)
        )
        relay = try container.decodeIfPresent([RelayHop].self, forKey: .relay)
    }

    public func encode(to encoder: any Encoder) throws {
        var container = encoder.container(keyedBy: CodingKeys.self)
        try container.encode(id, forKey: .id)
        try container.encode(envelope, forKey: .envelope)
        try container.encode(session, forKey: .session)
        try container.encode(timestamps, forKey: .timestamps)
        try container.encode(size, forKey: .size)
        try container.encode(receivedHeaderLength, forKey: .receivedHeaderLength)
        try container.encode(anomalies, forKey: .anomalies)
        try container.encode(faults, forKey: .faults)
        try container.encodeIfPresent(traceID, forKey: .traceID)
        try container.encodeIfPresent(mailbox, forKey: .mailbox)
        try container.encode(bodyStored, forKey: .bodyStored)
        try container.encodeIfPresent(transcript, forKey: .transcript)
        try container.encodeIfPresent(relay, forKey: .relay)
    }
}

/// One hand-over of a captured message to an upstream server, and what it answered.
public struct RelayHop: Codable, Hashable, Sendable {
    /// When the hand-over started (RFC 3339, UTC, milliseconds).
    public var at: String
    /// The upstream, as `smtp://[USER@]HOST:PORT` (never the password).
    public var upstream: String
    /// `release`, `auto` or `proxy`.
    public var kind: String
    /// The envelope: the sender and the recipients handed over.
    public var from: String
    public var to: [String]
    /// The upstream's final answer as one line (`250 2.0.0 Ok: queued as …`), or why there
    /// was none (`connect: …`).
    public var reply: String
    /// `delivered` (2xx), `deferred` (4xx), `refused` (5xx), `failed` (no answer: connection,
    /// TLS, timeout, a reply that does not parse).
    public var outcome: String
    /// What each refused recipient was answered, when others were accepted.
    public var refused: [String: String]?
    /// From the start of the hand-over to the final answer.
    public var latencyMs: Double

    public init(
        at: String, upstream: String, kind: String, from: String, to: [String], reply: String, outcome: String,
        refused: [String: String]? = nil, latencyMs: Double
    ) {
        self.at = at
        self.upstream = upstream
        self.kind = kind
        self.from = from
        self.to = to
        self.reply = reply
        self.outcome = outcome
        self.refused = refused
        self.latencyMs = latencyMs
    }
}

/// The SMTP envelope: MAIL FROM and every RCPT TO, each with its ESMTP parameters
/// (SIZE, BODY, SMTPUTF8, and DSN's RET, ENVID, NOTIFY, ORCPT kept as sent).
public struct Envelope: Codable, Hashable, Sendable {
    /// The reverse path's address; empty for the null path `<>`.
    public var mailFrom: String
    public var mailParameters: [String: String]
    public var recipients: [Recipient]

    public init(mailFrom: String, mailParameters: [String: String] = [:], recipients: [Recipient]) {
        self.mailFrom = mailFrom
        self.mailParameters = mailParameters
        self.recipients = recipients
    }

    public struct Recipient: Codable, Hashable, Sendable {
        public var address: String
        public var parameters: [String: String]

        public init(address: String, parameters: [String: String] = [:]) {
            self.address = address
            self.parameters = parameters
        }
    }
}

/// The SMTP session a message arrived on.
public struct SessionInfo: Codable, Hashable, Sendable {
    /// Unique per connection within one sink run.
    public var id: String
    public var remoteAddress: String
    public var localAddress: String
    /// The argument of EHLO or HELO.
    public var helo: String
    /// True when the client greeted with EHLO.
    public var esmtp: Bool
    public var tls: TLSInfo?
    /// The authenticated user (after AUTH), if any.
    public var authUser: String?

    public init(
        id: String, remoteAddress: String, localAddress: String, helo: String, esmtp: Bool,
        tls: TLSInfo? = nil, authUser: String? = nil
    ) {
        self.id = id
        self.remoteAddress = remoteAddress
        self.localAddress = localAddress
        self.helo = helo
        self.esmtp = esmtp
        self.tls = tls
        self.authUser = authUser
    }
}

public struct TLSInfo: Codable, Hashable, Sendable {
    /// `TLSv1.3`, `TLSv1.2`, ...
    public var version: String
    /// The negotiated cipher suite's IANA name when known.
    public var cipher: String?
    /// True for implicit TLS (`--smtps`), false after STARTTLS.
    public var implicit: Bool

    public init(version: String, cipher: String?, implicit: Bool) {
        self.version = version
        self.cipher = cipher
        self.implicit = implicit
    }
}

/// Nanoseconds since the Unix epoch (UTC, the wall clock) of each step of one message.
public struct CaptureTimestamps: Codable, Hashable, Sendable {
    public var connectedNanos: Int64
    public var mailNanos: Int64
    public var dataStartNanos: Int64
    public var dataEndNanos: Int64
    /// When the final reply was handed to the socket; nil in metadata written before it.
    public var replySentNanos: Int64?

    public init(connectedNanos: Int64, mailNanos: Int64, dataStartNanos: Int64, dataEndNanos: Int64, replySentNanos: Int64? = nil) {
        self.connectedNanos = connectedNanos
        self.mailNanos = mailNanos
        self.dataStartNanos = dataStartNanos
        self.dataEndNanos = dataEndNanos
        self.replySentNanos = replySentNanos
    }
}

/// One line of an SMTP transcript. AUTH secrets are redacted before they get here.
public struct TranscriptEntry: Codable, Hashable, Sendable {
    public enum Direction: String, Codable, Hashable, Sendable {
        case client = "C"
        case server = "S"
    }

    public var nanos: Int64
    public var direction: Direction
    public var text: String

    public init(nanos: Int64, direction: Direction, text: String) {
        self.nanos = nanos
        self.direction = direction
        self.text = text
    }
}
