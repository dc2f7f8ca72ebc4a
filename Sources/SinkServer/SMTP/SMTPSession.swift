import SMTPProtocol

/// The server side of one SMTP session as a pure state machine (RFC 5321 §4.1.4 ordering,
/// RFC 3030 BDAT, RFC 3207 STARTTLS, RFC 4954 AUTH).
///
/// No I/O, no clock and no faults: inputs are method calls (time passed in as wall-clock
/// nanoseconds), outputs are `Action`s the connection executes. Message bytes never enter the
/// session; it only hears their lengths and decides whether they are kept. Faults are decided
/// in front of it (`Faults/`); it only hears their refusals (`refuse(_:)`, `answer(_:to:)`).
/// AUTH is in `SMTPSession+Auth.swift`, the EHLO keywords and ESMTP parameters in
/// `SMTPSession+Parameters.swift`, the replies in `SMTPReply+Server.swift`.
struct SMTPSession: Sendable {
    struct Configuration: Sendable {
        let hostname: String
        let limits: SMTPLimits
        /// STARTTLS is offered (a TLS context exists and the session is not yet encrypted).
        var startTLSAvailable: Bool
        var auth: AuthPolicy?
        var requireAuth: Bool
        var authRequiresTLS: Bool
        /// Makes the CRAM-MD5 challenge (RFC 2195: unique, `<...@hostname>`).
        var makeChallenge: @Sendable () -> String
        /// The `220` banner and the EHLO keywords that depend on nothing else, made once: every
        /// connection is greeted and most say EHLO (made per connection, with their text
        /// formatted and scanned, they showed at a connection per message in `perf record`).
        let greeting: SMTPReply
        /// The `250` answering HELO (it names this host only).
        let heloReply: SMTPReply
        let ehloKeywords: [String]

        init(
            hostname: String, limits: SMTPLimits, startTLSAvailable: Bool, auth: AuthPolicy?, requireAuth: Bool, authRequiresTLS: Bool,
            makeChallenge: @escaping @Sendable () -> String
        ) {
            self.hostname = hostname
            self.limits = limits
            self.startTLSAvailable = startTLSAvailable
            self.auth = auth
            self.requireAuth = requireAuth
            self.authRequiresTLS = authRequiresTLS
            self.makeChallenge = makeChallenge
            greeting = .greeting(hostname: hostname)
            heloReply = .helo(hostname: hostname)
            ehloKeywords = ["PIPELINING", "SIZE \(limits.maxMessageBytes)", "8BITMIME", "SMTPUTF8", "ENHANCEDSTATUSCODES", "CHUNKING", "DSN"]
        }
    }

    struct AcceptedRecipient: Hashable, Sendable {
        var path: ForwardPath
        var parameters: [ESMTPParameter]
    }

    /// One mail transaction, MAIL to final reply.
    struct Transaction: Hashable, Sendable {
        var reversePath: ReversePath
        var parameters: [ESMTPParameter]
        var recipients: [AcceptedRecipient] = []
        var mailNanos: Int64
        var dataStartNanos: Int64 = 0
        var receivedBytes = 0
        var tooBig = false
        var usedBDAT = false

        var eightBitDeclared: Bool { parameters.body == "8BITMIME" || parameters.smtpUTF8 }

        /// The SIZE the client declared (RFC 1870), read once.
        private(set) var declaredSize: Int?

        init(reversePath: ReversePath, parameters: [ESMTPParameter], mailNanos: Int64) {
            self.reversePath = reversePath
            self.parameters = parameters
            self.mailNanos = mailNanos
            declaredSize = parameters.declaredSize
        }
    }

    enum Action: Equatable, Sendable {
        case reply(SMTPReply)
        case replyAndClose(SMTPReply)
        /// Close the connection without a reply.
        case close
        /// The message is complete: store it, then call `stored(id:)` or `storeFailed()`.
        case deliver(Transaction)
        case none
    }

    enum AuthStep: Equatable {
        case plain
        case loginUser
        case loginPassword(user: String)
        case cramMD5(challenge: String)
    }

    /// Where the session is. The transaction of the states that have one (`holdsTransaction`)
    /// is kept beside the state (`current`), not in it: held in the enum, every command copied
    /// it out and back (a retain and release of each of its references, and the recipients
    /// array copied to append to it), ~10% of the sink's user time at 1 KiB (`perf record`).
    enum State: Equatable {
        /// Greeted, no EHLO/HELO yet (also after STARTTLS).
        case connected
        /// EHLO/HELO done, no transaction.
        case ready
        case mail
        case data
        /// Inside a BDAT chunk; `last` when it carries LAST. `rejection` is replied after the
        /// chunk's bytes have been read (BDAT without a valid transaction: no transaction then).
        case chunk(last: Bool, rejection: SMTPReply?)
        /// Between BDAT chunks.
        case chunked
        case auth(AuthStep, resume: AuthResume)
        case storing
        case closed

        /// The client is sending a message's bytes (see `isReceivingMessage`).
        var receivesMessage: Bool {
            switch self {
            case .data, .chunked: true
            case .chunk(_, let rejection): rejection == nil
            default: false
            }
        }

        var holdsTransaction: Bool {
            switch self {
            case .mail, .data, .chunked, .storing: true
            case .chunk(_, let rejection): rejection == nil
            case .connected, .ready, .auth, .closed: false
            }
        }
    }

    /// Where an AUTH exchange returns to.
    enum AuthResume: Equatable { case connected, ready }

    /// Held by reference: the handler reads the session in place, but a read the compiler
    /// makes through a copy (`perf record` showed whole-session copies in the handler) then
    /// retains one reference for the configuration, not each of its own.
    private let shared: SharedConfiguration
    var configuration: Configuration { shared.configuration }

    private final class SharedConfiguration: Sendable {
        let configuration: Configuration
        init(_ configuration: Configuration) { self.configuration = configuration }
    }
    // Internal for the session's extensions in other files (AUTH).
    var state: State = .connected {
        didSet {
            if !state.holdsTransaction { current = nil }
            isReceivingMessage = state.receivesMessage
        }
    }
    /// The transaction under way: set in the states that hold one, nil in the others.
    private var current: Transaction?
    private(set) var helo: String?
    private(set) var esmtp = false
    private(set) var tlsActive: Bool
    var authUser: String?
    private(set) var badCommands = 0
    /// Whether the pending chunk rejection counts as a client error (not for fault rules).
    private var rejectionCounts = true

    init(configuration: Configuration, tlsActive: Bool = false) {
        shared = SharedConfiguration(configuration)
        self.tlsActive = tlsActive
    }

    var isClosed: Bool { state == .closed }

    /// The SIZE the client declared for the message being received, if any (RFC 1870).
    var declaredSize: Int? { isReceivingMessage ? current?.declaredSize : nil }
    /// The transaction under way (MAIL given), if any.
    var transaction: Transaction? { current }
    /// The transaction's sender and first recipient, read where they are (through
    /// `transaction` the whole transaction is copied to read one of its fields).
    var sender: ReversePath? { current?.reversePath }
    var firstRecipient: ForwardPath? { current?.recipients.first?.path }
    var recipients: [AcceptedRecipient]? { current?.recipients }
    var hasTransaction: Bool { current?.mailNanos != nil }

    /// What a captured message records of its session.
    struct Facts {
        let helo: String?
        let esmtp: Bool
        let tlsActive: Bool
        let authUser: String?
    }

    /// Handed to a message's capture in place of the session (a copy of the session, its
    /// configuration included, is a retain and a release of each of its references).
    var facts: Facts { Facts(helo: helo, esmtp: esmtp, tlsActive: tlsActive, authUser: authUser) }

    var isInAuthExchange: Bool { if case .auth = state { true } else { false } }

    /// The client is sending a message's bytes: DATA after `354`, or a BDAT transaction not yet
    /// ended (inside a chunk that is kept, or between chunks). Every way a transaction ends
    /// without storing (a 552, RSET between chunks, a refused chunk, a refusal at data-end)
    /// leaves this state, and the connection drops what it gathered then.
    ///
    /// Stored, set with the state: read by the handler for every command and message piece, a
    /// computed property was read through a copy of the whole session (`objdump` of the
    /// handler: the session copied, then released, around the call).
    private(set) var isReceivingMessage = false

    var authOffered: Bool {
        configuration.auth != nil && (tlsActive || !configuration.authRequiresTLS)
    }

    // MARK: Greeting and TLS

    func greeting() -> SMTPReply {
        configuration.greeting
    }

    /// The TLS handshake finished (after STARTTLS, or at once for implicit TLS).
    /// RFC 3207 §4.2: everything learned before it is forgotten.
    mutating func tlsEstablished() {
        tlsActive = true
        helo = nil
        esmtp = false
        authUser = nil
        state = .connected
    }

    // MARK: Commands

    /// The command first, then the state: a `switch` over the pair of them copied both into a
    /// tuple (a retain and a release of each of their references) for every command.
    mutating func receive(_ command: SMTPCommand, at now: Int64) -> Action {
        if case .closed = state { return .none }
        let inBDAT = if case .chunked = state { true } else { false }
        let finishBDAT = "finish the BDAT transaction with BDAT LAST or RSET first"
        switch command {
        case .quit:
            state = .closed
            return .replyAndClose(.bye)
        case .noop:
            return .reply(.ok)
        case .help:
            return .reply(.help)
        case .vrfy:
            return .reply(.cannotVerify)
        case .expn:
            return .reply(.expnNotImplemented)

        case .ehlo(let domain), .helo(let domain):
            if inBDAT { return badSequence(finishBDAT) }
            let extended = if case .ehlo = command { true } else { false }
            helo = domain
            esmtp = extended
            state = .ready
            return .reply(extended ? ehloReply(domain) : configuration.heloReply)
        case .rset:
            if case .connected = state {} else { state = .ready }
            return .reply(.reset)

        case .mail(let path, let parameters):
            switch state {
            case .chunked:
                return badSequence(finishBDAT)
            case .connected:
                return badSequence("send EHLO or HELO first")
            case .ready:
                if configuration.requireAuth && authUser == nil {
                    return error(.authenticationRequired)
                }
                if let reply = checkMailParameters(parameters) { return error(reply) }
                if case .mailbox(let mailbox) = path, mailbox.needsSMTPUTF8, !parameters.smtpUTF8 {
                    return error(.needsSMTPUTF8)
                }
                state = .mail
                current = Transaction(reversePath: path, parameters: parameters, mailNanos: now)
                return .reply(.senderOK)
            case .mail, .data, .storing:
                return badSequence("nested MAIL command")
            default:
                return notAllowedNow(command)
            }

        case .rcpt(let path, let parameters):
            switch state {
            case .connected:
                return badSequence("send EHLO or HELO first")
            case .ready:
                return badSequence("need MAIL before RCPT")
            case .mail:
                // Read where it is: the transaction is not copied (a copy held while appending
                // would also copy the recipients).
                guard let count = current?.recipients.count, let smtpUTF8 = current?.parameters.smtpUTF8 else {
                    return badSequence("need MAIL before RCPT")
                }
                guard count < configuration.limits.maxRecipients else {
                    return .reply(.tooManyRecipients(limit: configuration.limits.maxRecipients))
                }
                if let reply = checkRecipientParameters(parameters) { return error(reply) }
                if case .mailbox(let mailbox) = path, mailbox.needsSMTPUTF8, !smtpUTF8 {
                    return error(.needsSMTPUTF8)
                }
                current!.recipients.append(AcceptedRecipient(path: path, parameters: parameters))
                return .reply(.recipientOK)
            default:
                return notAllowedNow(command)
            }

        case .data:
            switch state {
            case .chunked:
                return badSequence(finishBDAT)
            case .connected:
                return badSequence("send EHLO or HELO first")
            case .mail:
                guard current?.recipients.isEmpty == false else { return badSequence("need RCPT before DATA") }
                current!.dataStartNanos = now
                state = .data
                return .reply(.startMailInput)
            case .ready:
                return badSequence("need MAIL before DATA")
            default:
                return notAllowedNow(command)
            }

        case .bdat(let size, let last):
            switch state {
            case .connected:
                return rejectChunk(.outOfSequence("send EHLO or HELO first"), size: size)
            case .mail:
                guard current?.recipients.isEmpty == false else {
                    return rejectChunk(.outOfSequence("need RCPT before BDAT"), size: size)
                }
                current!.dataStartNanos = now
                current!.usedBDAT = true
                state = .chunk(last: last, rejection: nil)
                return size == 0 ? finishChunk() : .none
            case .chunked:
                state = .chunk(last: last, rejection: nil)
                return size == 0 ? finishChunk() : .none
            default:
                return rejectChunk(.outOfSequence("need MAIL and RCPT before BDAT"), size: size)
            }

        case .starttls:
            switch state {
            case .chunked:
                return badSequence(finishBDAT)
            case .connected, .ready:
                guard configuration.startTLSAvailable, !tlsActive else {
                    return tlsActive ? badSequence("TLS already active") : .reply(.tlsNotAvailable)
                }
                // The handler switches to TLS when this 220 is written.
                return .reply(.readyToStartTLS)
            default:
                return notAllowedNow(command)
            }

        case .auth(let mechanism, let initial):
            switch state {
            case .chunked:
                return badSequence(finishBDAT)
            case .connected:
                return startAuth(mechanism, initial, resume: .connected)
            case .ready:
                return startAuth(mechanism, initial, resume: .ready)
            default:
                return notAllowedNow(command)
            }
        }
    }

    private mutating func notAllowedNow(_ command: SMTPCommand) -> Action {
        badSequence("\(command.verb) not allowed now")
    }

    /// A line that did not parse as a command.
    mutating func receive(_ error: SMTPParseError) -> Action {
        self.error(SMTPReply(for: error))
    }

    // MARK: Message bytes

    /// Message bytes arrived; returns whether to keep them (false once over the size limit,
    /// or for a rejected BDAT chunk).
    mutating func messageBytes(_ count: Int) -> Bool {
        switch state {
        case .data, .chunk(_, nil):
            // Taken out, changed and put back: read through `current!` the transaction was copied
            // (a retain and a release of each of its references) for every piece of a message.
            let limit = configuration.limits.maxMessageBytes
            guard var transaction = current.take() else { return false }
            transaction.receivedBytes += count
            if transaction.receivedBytes > limit { transaction.tooBig = true }
            let keep = !transaction.tooBig
            current = consume transaction
            return keep
        default:
            return false
        }
    }

    /// The `CRLF.CRLF` ending DATA arrived.
    mutating func messageEnd() -> Action {
        guard case .data = state, let transaction = current else { return .none }
        return complete(transaction)
    }

    /// The bytes of the current BDAT chunk are all read.
    mutating func chunkComplete() -> Action {
        finishChunk()
    }

    private mutating func finishChunk() -> Action {
        guard case .chunk(let last, let rejection) = state else { return .none }
        if let rejection {
            state = helo == nil ? .connected : .ready
            defer { rejectionCounts = true }
            return rejectionCounts ? error(rejection) : .reply(rejection)
        }
        guard let transaction = current else { return .none }
        if last { return complete(transaction) }
        if transaction.tooBig { return complete(transaction) }
        state = .chunked
        return .reply(.chunkReceived(totalBytes: transaction.receivedBytes))
    }

    private mutating func complete(_ transaction: Transaction) -> Action {
        if transaction.tooBig {
            state = .ready
            return .reply(.messageTooBig(limit: configuration.limits.maxMessageBytes))
        }
        state = .storing
        return .deliver(transaction)
    }

    /// The delivered message is stored (and as durable as `--fsync` demands).
    mutating func stored(id: String) -> Action {
        guard case .storing = state else { return .none }
        state = .ready
        return .reply(.queued(id: id))
    }

    /// The message is refused after its final dot (by a fault): nothing is stored. A `421`
    /// also ends the session.
    mutating func refuse(_ reply: SMTPReply) -> Action {
        guard case .storing = state else { return .none }
        state = .ready
        return closingIf421(reply)
    }

    /// A fault answered `command` in the session's place: the session's state stays as it was
    /// (the command did not happen), except that a refused BDAT's chunk is read and thrown away
    /// first, and a `421` or an answered QUIT ends the session.
    mutating func answer(_ reply: SMTPReply, to command: SMTPCommand) -> Action {
        switch command {
        case .bdat(let size, _):
            return refuseChunk(reply, size: size)
        case .quit:
            state = .closed
            return .replyAndClose(reply)
        default:
            return closingIf421(reply)
        }
    }

    /// Whether the session would accept this MAIL or RCPT: in sequence, authenticated if that
    /// is required, under the recipient limit. The built-in faults act only on such commands.
    func admits(_ command: SMTPCommand) -> Bool {
        switch (state, command) {
        case (.ready, .mail): !configuration.requireAuth || authUser != nil
        case (.mail, .rcpt): (current?.recipients.count ?? 0) < configuration.limits.maxRecipients
        default: false
        }
    }

    private mutating func closingIf421(_ reply: SMTPReply) -> Action {
        guard reply.code.rawValue == 421 else { return .reply(reply) }
        state = .closed
        return .replyAndClose(reply)
    }

    /// A fault refused a BDAT: its chunk of `size` bytes is read and thrown away, then
    /// `reply` is sent; the transaction is over. Not counted as a client error.
    private mutating func refuseChunk(_ reply: SMTPReply, size: Int) -> Action {
        state = .chunk(last: false, rejection: reply)
        rejectionCounts = false
        return size == 0 ? finishChunk() : .none
    }

    /// Storing failed: the client must retry, nothing was accepted.
    mutating func storeFailed() -> Action {
        guard case .storing = state else { return .none }
        state = .ready
        return .reply(.notStored)
    }

    // MARK: Errors

    mutating func badSequence(_ detail: String) -> Action {
        error(.outOfSequence(detail))
    }

    /// A chunk that is read and thrown away, then answered with `reply`.
    private mutating func rejectChunk(_ reply: SMTPReply, size: Int = 0) -> Action {
        state = .chunk(last: false, rejection: reply)
        return size == 0 ? finishChunk() : .none
    }

    /// Replies `reply` and counts a bad command; too many end the session.
    mutating func error(_ reply: SMTPReply) -> Action {
        badCommands += 1
        if badCommands >= configuration.limits.maxBadCommands {
            state = .closed
            return .replyAndClose(.tooManyErrors)
        }
        return .reply(reply)
    }
}
