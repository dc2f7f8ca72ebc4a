/// The attempts of one message to one recipient: what the application did until the message
/// went through, bounced, or was given up.
///
/// Attempts join a delivery by the sender and recipient; where the attempts on both sides carry
/// a `Message-ID` and they differ, the later one is a new message (a new delivery). An attempt
/// after the client was told the message was taken (a 2xx, a drop rule's included) starts a new
/// delivery unless it carries the same `Message-ID`.
struct Delivery: Sendable {
    var id: Int
    var attempts: AttemptList
    var flags: [DeliveryFlag] = []

    init(id: Int, first: Attempt) {
        self.id = id
        self.attempts = AttemptList(first)
    }

    /// As the oldest attempt kept wrote them (the attempts of a delivery share them but for
    /// case). Read from the attempts, not held again.
    var sender: String { attempts.oldest.sender }
    var recipient: String { attempts.oldest.recipient }
    /// The first `Message-ID` among the attempts kept.
    var messageID: String? { attempts.firstMessageID }

    enum Outcome: String, Sendable {
        case delivered, deferred, bounced, dropped
    }

    /// From the last attempt: `dropped` when it got no answer or a drop rule took the message.
    var outcome: Outcome {
        attempts.withLatest { last in
            guard let reply = last.reply, !last.dropped else { return .dropped }
            switch reply.code / 100 {
            case 2: return .delivered
            case 4: return .deferred
            default: return .bounced
            }
        }
    }

    var firstNanos: Int64 { attempts.oldest.atNanos }
    var lastNanos: Int64 { attempts.latest.atNanos }

    /// Seconds between consecutive attempts.
    var intervals: [Double] {
        guard attempts.count > 1 else { return [] }
        return (1..<attempts.count).map { Double(attempts[$0].atNanos - attempts[$0 - 1].atNanos) / 1e9 }
    }

    mutating func flag(_ flag: DeliveryFlag) -> Bool {
        guard !flags.contains(flag) else { return false }
        flags.append(flag)
        flags.sort()
        return true
    }

    /// Whether `attempt` (to this delivery's sender and recipient) continues this delivery.
    func continues(with attempt: Attempt) -> Bool {
        if let other = attempt.messageID, let known = messageID { return known == other }
        // No Message-ID on one side: after the client was told it was taken, a new message.
        return !attempts.withLatest(\.accepted)
    }

    /// Whether a step of `intervals` grows: longer than the one before by over 10% and 50 ms
    /// (measured intervals carry the network's and the scheduler's jitter).
    static func grows(_ earlier: Double, _ later: Double) -> Bool {
        later > earlier * 1.1 + 0.05
    }
}

/// A delivery's attempts, oldest first; never empty. The oldest is held inline: most
/// deliveries have one attempt, and an array of one was a further allocation of 272 bytes for
/// each of the 100 000 attempts the audit keeps by default.
struct AttemptList: RandomAccessCollection, Sendable {
    private(set) var oldest: Attempt
    private var later: [Attempt] = []

    init(_ first: Attempt) { oldest = first }

    var startIndex: Int { 0 }
    var endIndex: Int { later.count + 1 }
    subscript(position: Int) -> Attempt { position == 0 ? oldest : later[position - 1] }

    var latest: Attempt { later.last ?? oldest }

    /// `body` of the latest attempt, read in place: `latest` returns a copy (a retain and a
    /// release of each of its references), and a `_read` accessor here allocated its frame
    /// (a `malloc` per look, counted with a uprobe on `malloc`).
    func withLatest<Result>(_ body: (Attempt) -> Result) -> Result {
        later.isEmpty ? body(oldest) : body(later[later.count - 1])
    }

    /// The first `Message-ID` among the attempts, read in place.
    var firstMessageID: String? {
        if let id = oldest.messageID { return id }
        for index in later.indices {
            if let id = later[index].messageID { return id }
        }
        return nil
    }

    mutating func append(_ attempt: Attempt) { later.append(attempt) }

    /// Drops the oldest attempt; false when it is the only one (kept: the delivery goes with it).
    mutating func dropOldest() -> Bool {
        guard !later.isEmpty else { return false }
        oldest = later.removeFirst()
        return true
    }
}

/// The audit's settings: `--max-attempts`, `--bounce-memory`, `--min-retry-interval`,
/// `--give-up-after`, `--stats-retention`.
public struct AuditSettings: Sendable, Equatable {
    /// Attempts kept; past it the oldest are dropped and counted. 0 records none.
    public var maxAttempts = 100_000
    /// Seconds a bounce is remembered for `sent-after-bounce`.
    public var bounceMemory: Double = 24 * 3600
    /// Seconds: a retry after a 4xx sooner than this is `retry-too-soon`.
    public var minRetryInterval: Double = 1
    /// Seconds without an attempt after a 4xx before a delivery is `gave-up`.
    public var giveUpAfter: Double = 600
    /// Seconds the timeline keeps its buckets.
    public var statsRetention: Double = 24 * 3600

    public init() {}
}
