import Foundation
import SMTPProtocol

/// The server side of one SMTP session as a pure state machine (RFC 5321 §4.1.4 ordering,
/// RFC 3030 BDAT, RFC 3207 STARTTLS, RFC 4954 AUTH).
///
/// No I/O and no clock: inputs are method calls (time passed in as wall-clock nanoseconds),
/// outputs are `Action`s the connection executes. Message bytes never enter the session; it
/// only hears their lengths and decides whether they are kept.
struct SMTPSession {
    struct Configuration: Sendable {
        var hostname: String
        var limits: SMTPLimits
        /// STARTTLS is offered (a TLS context exists and the session is not yet encrypted).
        var startTLSAvailable: Bool
        var auth: AuthPolicy?
        var requireAuth: Bool
        var authRequiresTLS: Bool
        /// Makes the CRAM-MD5 challenge (RFC 2195: unique, `<...@hostname>`).
        var makeChallenge: @Sendable () -> String
        /// `bounce@`, `tempfail@`, ... act as `MagicAddress` says.
        var magicAddresses = true
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
    }

    enum Action: Equatable, Sendable {
        case reply(SMTPReply)
        case replyAndClose(SMTPReply)
        /// Close the connection without a reply (magic `disconnect@`).
        case close
        /// Answer nothing more and read nothing more (magic `hang@`).
        case hang
        /// The message is complete: store it, then call `stored(id:)` or `storeFailed()`.
        case deliver(Transaction)
        case none
    }

    private enum AuthStep: Equatable {
        case plain
        case loginUser
        case loginPassword(user: String)
        case cramMD5(challenge: String)
    }

    private enum State: Equatable {
        /// Greeted, no EHLO/HELO yet (also after STARTTLS).
        case connected
        /// EHLO/HELO done, no transaction.
        case ready
        case mail(Transaction)
        case data(Transaction)
        /// Inside a BDAT chunk; `last` when it carries LAST. `rejection` is replied after the
        /// chunk's bytes have been read (BDAT without a valid transaction).
        case chunk(Transaction?, last: Bool, rejection: SMTPReply?)
        /// Between BDAT chunks.
        case chunked(Transaction)
        case auth(AuthStep, resume: AuthResume)
        case storing(Transaction)
        case closed
    }

    /// Where an AUTH exchange returns to.
    private enum AuthResume: Equatable { case connected, ready }

    // The replies of every transaction, made once.
    private static let senderOK = SMTPReply(250, "2.1.0", "Sender ok")
    private static let recipientOK = SMTPReply(250, "2.1.5", "Recipient ok")
    private static let startMailInput = SMTPReply(354, nil, "End data with <CR><LF>.<CR><LF>")
    private static let resetReply = SMTPReply(250, "2.0.0", "Reset")

    let configuration: Configuration
    private var state: State = .connected
    private(set) var helo: String?
    private(set) var esmtp = false
    private(set) var tlsActive: Bool
    private(set) var authUser: String?
    private(set) var badCommands = 0
    /// Whether the pending chunk rejection counts as a client error (not for fault rules).
    private var rejectionCounts = true

    init(configuration: Configuration, tlsActive: Bool = false) {
        self.configuration = configuration
        self.tlsActive = tlsActive
    }

    var isClosed: Bool { state == .closed }

    /// The SIZE the client declared for the message being received, if any (RFC 1870).
    var declaredSize: Int? {
        switch state {
        case .data(let transaction), .chunk(let transaction?, _, _), .chunked(let transaction): transaction.parameters.declaredSize
        default: nil
        }
    }
    /// The transaction under way (MAIL given), if any.
    var transaction: Transaction? {
        switch state {
        case .mail(let transaction), .data(let transaction), .chunked(let transaction), .storing(let transaction), .chunk(let transaction?, _, _):
            transaction
        default:
            nil
        }
    }

    var isInAuthExchange: Bool { if case .auth = state { true } else { false } }

    /// The client is sending a message's bytes: DATA after `354`, or a BDAT transaction not yet
    /// ended (inside a chunk that is kept, or between chunks). Every way a transaction ends
    /// without storing (a 552, RSET between chunks, a refused chunk, a refusal at data-end)
    /// leaves this state, and the connection drops what it gathered then.
    var isReceivingMessage: Bool {
        switch state {
        case .data, .chunk(.some, _, _), .chunked: true
        default: false
        }
    }

    private var authOffered: Bool {
        configuration.auth != nil && (tlsActive || !configuration.authRequiresTLS)
    }

    // MARK: Greeting and TLS

    func greeting() -> SMTPReply {
        SMTPReply(220, nil, "\(configuration.hostname) ESMTP Swallow")
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

    mutating func receive(_ command: SMTPCommand, at now: Int64) -> Action {
        switch (state, command) {
        case (.closed, _):
            return .none
        case (_, .quit):
            state = .closed
            return .replyAndClose(.bye)
        case (_, .noop):
            return .reply(.ok)
        case (_, .help):
            return .reply(SMTPReply(214, "2.0.0", "Swallow SMTP sink; commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP STARTTLS AUTH"))
        case (_, .vrfy):
            return .reply(SMTPReply(252, "2.5.0", "Cannot VRFY user, but will accept message"))
        case (_, .expn):
            return .reply(SMTPReply(502, "5.5.1", "EXPN not implemented"))

        case (.chunked, .ehlo), (.chunked, .helo), (.chunked, .mail), (.chunked, .data), (.chunked, .starttls), (.chunked, .auth):
            return badSequence("finish the BDAT transaction with BDAT LAST or RSET first")
        case (_, .ehlo(let domain)), (_, .helo(let domain)):
            let extended = if case .ehlo = command { true } else { false }
            helo = domain
            esmtp = extended
            state = .ready
            return .reply(extended ? ehloReply(domain) : SMTPReply(250, nil, "\(configuration.hostname)"))
        case (_, .rset):
            if state != .connected { state = .ready }
            return .reply(Self.resetReply)

        case (.connected, .mail), (.connected, .rcpt), (.connected, .data), (.connected, .bdat):
            if case .bdat(let size, _) = command { return rejectChunk(SMTPReply(503, "5.5.1", "Bad sequence of commands: send EHLO or HELO first"), size: size) }
            return badSequence("send EHLO or HELO first")

        case (.ready, .mail(let path, let parameters)):
            if configuration.requireAuth && authUser == nil {
                return error(SMTPReply(530, "5.7.0", "Authentication required"))
            }
            if let reply = checkMailParameters(parameters) { return error(reply) }
            if case .mailbox(let mailbox) = path, mailbox.needsSMTPUTF8, !parameters.smtpUTF8 {
                return error(SMTPReply(553, "5.6.7", "Non-ASCII address requires SMTPUTF8"))
            }
            if configuration.magicAddresses, let reply = PlusTagFault(path)?.reply {
                return .reply(reply)
            }
            state = .mail(Transaction(reversePath: path, parameters: parameters, mailNanos: now))
            return .reply(Self.senderOK)
        case (.mail, .mail), (.data, .mail), (.storing, .mail):
            return badSequence("nested MAIL command")
        case (.ready, .rcpt):
            return badSequence("need MAIL before RCPT")

        case (.mail(var transaction), .rcpt(let path, let parameters)):
            guard transaction.recipients.count < configuration.limits.maxRecipients else {
                return .reply(SMTPReply(452, "4.5.3", "Too many recipients (limit \(configuration.limits.maxRecipients))"))
            }
            if let reply = checkRecipientParameters(parameters) { return error(reply) }
            if case .mailbox(let mailbox) = path, mailbox.needsSMTPUTF8, !transaction.parameters.smtpUTF8 {
                return error(SMTPReply(553, "5.6.7", "Non-ASCII address requires SMTPUTF8"))
            }
            if configuration.magicAddresses, let reply = PlusTagFault(path)?.reply {
                return .reply(reply)
            }
            if configuration.magicAddresses, let action = MagicAddress(path)?.rcptAction {
                if action == .close || action == .hang { state = .closed }
                return action
            }
            transaction.recipients.append(AcceptedRecipient(path: path, parameters: parameters))
            state = .mail(transaction)
            return .reply(Self.recipientOK)

        case (.mail(var transaction), .data):
            guard !transaction.recipients.isEmpty else { return badSequence("need RCPT before DATA") }
            transaction.dataStartNanos = now
            state = .data(transaction)
            return .reply(Self.startMailInput)
        case (.ready, .data):
            return badSequence("need MAIL before DATA")

        case (.mail(var transaction), .bdat(let size, let last)):
            guard !transaction.recipients.isEmpty else {
                return rejectChunk(SMTPReply(503, "5.5.1", "Bad sequence of commands: need RCPT before BDAT"), size: size)
            }
            transaction.dataStartNanos = now
            transaction.usedBDAT = true
            state = .chunk(transaction, last: last, rejection: nil)
            return size == 0 ? finishChunk() : .none
        case (.chunked(let transaction), .bdat(let size, let last)):
            state = .chunk(transaction, last: last, rejection: nil)
            return size == 0 ? finishChunk() : .none
        case (_, .bdat(let size, _)):
            return rejectChunk(SMTPReply(503, "5.5.1", "Bad sequence of commands: need MAIL and RCPT before BDAT"), size: size)

        case (.connected, .starttls), (.ready, .starttls):
            guard configuration.startTLSAvailable, !tlsActive else {
                return tlsActive ? badSequence("TLS already active") : .reply(SMTPReply(454, "4.7.0", "TLS not available"))
            }
            // The handler switches to TLS when this 220 is written.
            return .reply(SMTPReply(220, "2.0.0", "Ready to start TLS"))

        case (.connected, .auth(let mechanism, let initial)):
            return startAuth(mechanism, initial, resume: .connected)
        case (.ready, .auth(let mechanism, let initial)):
            return startAuth(mechanism, initial, resume: .ready)

        default:
            return badSequence("\(command.verb) not allowed now")
        }
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
        case .data(var transaction):
            let keep = account(&transaction, count)
            state = .data(transaction)
            return keep
        case .chunk(var transaction?, let last, nil):
            let keep = account(&transaction, count)
            state = .chunk(transaction, last: last, rejection: nil)
            return keep
        default:
            return false
        }
    }

    private func account(_ transaction: inout Transaction, _ count: Int) -> Bool {
        transaction.receivedBytes += count
        if transaction.receivedBytes > configuration.limits.maxMessageBytes { transaction.tooBig = true }
        return !transaction.tooBig
    }

    /// The `CRLF.CRLF` ending DATA arrived.
    mutating func messageEnd() -> Action {
        guard case .data(let transaction) = state else { return .none }
        return complete(transaction)
    }

    /// The bytes of the current BDAT chunk are all read.
    mutating func chunkComplete() -> Action {
        finishChunk()
    }

    private mutating func finishChunk() -> Action {
        guard case .chunk(let transaction, let last, let rejection) = state else { return .none }
        if let rejection {
            state = helo == nil ? .connected : .ready
            defer { rejectionCounts = true }
            return rejectionCounts ? error(rejection) : .reply(rejection)
        }
        guard let transaction else { return .none }
        if last { return complete(transaction) }
        if transaction.tooBig { return complete(transaction) }
        state = .chunked(transaction)
        return .reply(SMTPReply(250, "2.0.0", "\(transaction.receivedBytes) octets received"))
    }

    private mutating func complete(_ transaction: Transaction) -> Action {
        if transaction.tooBig {
            state = .ready
            return .reply(SMTPReply(552, "5.3.4", "Message too big (limit \(configuration.limits.maxMessageBytes) octets)"))
        }
        state = .storing(transaction)
        return .deliver(transaction)
    }

    /// The delivered message is stored (and as durable as `--fsync` demands).
    mutating func stored(id: String) -> Action {
        guard case .storing = state else { return .none }
        state = .ready
        return .reply(SMTPReply(code: .ok, enhanced: EnhancedStatusCode(2, 0, 0), lines: ["Ok: queued as \(id)"]))
    }

    /// The message is refused after its final dot (magic `reject@`): nothing is stored.
    mutating func refuse(_ reply: SMTPReply) -> Action {
        guard case .storing = state else { return .none }
        state = .ready
        return .reply(reply)
    }

    /// A fault rule refused a BDAT: its chunk of `size` bytes is read and thrown away, then
    /// `reply` is sent; the transaction is over. Not counted as a client error.
    mutating func refuseChunk(_ reply: SMTPReply, size: Int) -> Action {
        state = .chunk(nil, last: false, rejection: reply)
        rejectionCounts = false
        return size == 0 ? finishChunk() : .none
    }

    /// Storing failed: the client must retry, nothing was accepted.
    mutating func storeFailed() -> Action {
        guard case .storing = state else { return .none }
        state = .ready
        return .reply(SMTPReply(451, "4.3.0", "Local error in processing: message not stored"))
    }

    // MARK: AUTH (RFC 4954)

    private mutating func startAuth(_ mechanism: String, _ initial: String?, resume: AuthResume) -> Action {
        guard helo != nil, esmtp else { return badSequence("send EHLO before AUTH") }
        guard authUser == nil else { return badSequence("already authenticated") }
        guard configuration.auth != nil else { return .reply(SMTPReply(502, "5.5.1", "AUTH not available")) }
        guard authOffered else { return .reply(SMTPReply(538, "5.7.11", "Encryption required for requested authentication mechanism")) }
        switch mechanism {
        case "PLAIN":
            guard let initial else {
                state = .auth(.plain, resume: resume)
                return .reply(SMTPReply(code: .authContinue, lines: [""]))
            }
            return finishPlain(initial, resume: resume)
        case "LOGIN":
            guard let initial else {
                state = .auth(.loginUser, resume: resume)
                return .reply(SMTPReply(code: .authContinue, lines: ["VXNlcm5hbWU6"]))
            }
            return loginUser(initial, resume: resume)
        case "CRAM-MD5":
            guard initial == nil else { return error(SMTPReply(501, "5.5.4", "CRAM-MD5 takes no initial response")) }
            let challenge = configuration.makeChallenge()
            state = .auth(.cramMD5(challenge: challenge), resume: resume)
            return .reply(SMTPReply(code: .authContinue, lines: [Data(challenge.utf8).base64EncodedString()]))
        default:
            return error(SMTPReply(504, "5.5.4", "Unrecognized authentication mechanism \(mechanism)"))
        }
    }

    /// A client line during an AUTH exchange.
    mutating func authResponse(_ line: String) -> Action {
        guard case .auth(let step, let resume) = state else { return .none }
        if line == "*" {
            state = resume == .connected ? .connected : .ready
            return .reply(SMTPReply(501, "5.0.0", "Authentication cancelled"))
        }
        switch step {
        case .plain:
            return finishPlain(line, resume: resume)
        case .loginUser:
            return loginUser(line, resume: resume)
        case .loginPassword(let user):
            guard let password = Self.decodeBase64(line) else { return authSyntax(resume) }
            return authResult(user: user, ok: configuration.auth?.verify(user: user, password: password) ?? false, resume: resume)
        case .cramMD5(let challenge):
            guard let response = Self.decodeBase64(line), let space = response.lastIndex(of: " ") else { return authSyntax(resume) }
            let user = String(response[..<space])
            let digest = String(response[response.index(after: space)...])
            let ok = configuration.auth?.verify(user: user, challenge: challenge, digest: digest) ?? false
            return authResult(user: user, ok: ok, resume: resume)
        }
    }

    private mutating func finishPlain(_ base64: String, resume: AuthResume) -> Action {
        // authzid NUL authcid NUL passwd (RFC 4616 §2); "=" is an empty initial response.
        guard base64 != "=", let decoded = Self.decodeBase64Bytes(base64) else { return authSyntax(resume) }
        let parts = decoded.split(separator: 0, maxSplits: 2, omittingEmptySubsequences: false)
        guard parts.count == 3 else { return authSyntax(resume) }
        let user = String(decoding: parts[1], as: UTF8.self)
        let password = String(decoding: parts[2], as: UTF8.self)
        return authResult(user: user, ok: configuration.auth?.verify(user: user, password: password) ?? false, resume: resume)
    }

    private mutating func loginUser(_ base64: String, resume: AuthResume) -> Action {
        guard let user = Self.decodeBase64(base64) else { return authSyntax(resume) }
        state = .auth(.loginPassword(user: user), resume: resume)
        return .reply(SMTPReply(code: .authContinue, lines: ["UGFzc3dvcmQ6"]))
    }

    private mutating func authResult(user: String, ok: Bool, resume: AuthResume) -> Action {
        state = resume == .connected ? .connected : .ready
        guard ok else { return error(SMTPReply(535, "5.7.8", "Authentication credentials invalid")) }
        authUser = user
        return .reply(SMTPReply(235, "2.7.0", "Authentication successful"))
    }

    private mutating func authSyntax(_ resume: AuthResume) -> Action {
        state = resume == .connected ? .connected : .ready
        return error(SMTPReply(501, "5.5.2", "Cannot decode AUTH response"))
    }

    private static func decodeBase64Bytes(_ text: String) -> [UInt8]? {
        Data(base64Encoded: text).map { [UInt8]($0) }
    }

    private static func decodeBase64(_ text: String) -> String? {
        decodeBase64Bytes(text).flatMap { String(validating: $0, as: UTF8.self) }
    }

    // MARK: Helpers

    private func ehloReply(_ domain: String) -> SMTPReply {
        var lines = [
            "\(configuration.hostname) greets \(domain)",
            "PIPELINING",
            "SIZE \(configuration.limits.maxMessageBytes)",
            "8BITMIME",
            "SMTPUTF8",
            "ENHANCEDSTATUSCODES",
            "CHUNKING",
            "DSN",
        ]
        if configuration.startTLSAvailable && !tlsActive { lines.append("STARTTLS") }
        if authOffered { lines.append("AUTH PLAIN LOGIN CRAM-MD5") }
        lines.append("HELP")
        return SMTPReply(code: .ok, lines: lines)
    }

    private func checkMailParameters(_ parameters: [ESMTPParameter]) -> SMTPReply? {
        for parameter in parameters {
            switch parameter.keyword {
            case "SIZE":
                guard let size = parameter.value.flatMap({ Int($0) }), size >= 0 else {
                    return SMTPReply(501, "5.5.4", "SIZE needs a number")
                }
                if size > configuration.limits.maxMessageBytes {
                    return SMTPReply(552, "5.3.4", "Message size exceeds fixed limit of \(configuration.limits.maxMessageBytes) octets")
                }
            case "BODY":
                guard let value = parameter.value?.uppercased(), value == "7BIT" || value == "8BITMIME" else {
                    return SMTPReply(555, "5.5.4", "BODY must be 7BIT or 8BITMIME")
                }
            case "SMTPUTF8":
                guard parameter.value == nil else { return SMTPReply(555, "5.5.4", "SMTPUTF8 takes no value") }
            case "RET":
                guard let value = parameter.value?.uppercased(), value == "FULL" || value == "HDRS" else {
                    return SMTPReply(555, "5.5.4", "RET must be FULL or HDRS")
                }
            case "ENVID", "AUTH":
                guard parameter.value != nil else { return SMTPReply(555, "5.5.4", "\(parameter.keyword) needs a value") }
            default:
                return SMTPReply(555, "5.5.4", "Unsupported MAIL parameter \(parameter.keyword)")
            }
        }
        return nil
    }

    private func checkRecipientParameters(_ parameters: [ESMTPParameter]) -> SMTPReply? {
        for parameter in parameters {
            switch parameter.keyword {
            case "NOTIFY", "ORCPT":
                guard parameter.value != nil else { return SMTPReply(555, "5.5.4", "\(parameter.keyword) needs a value") }
            default:
                return SMTPReply(555, "5.5.4", "Unsupported RCPT parameter \(parameter.keyword)")
            }
        }
        return nil
    }

    private mutating func badSequence(_ detail: String) -> Action {
        error(SMTPReply(503, "5.5.1", "Bad sequence of commands: \(detail)"))
    }

    /// A chunk that is read and thrown away, then answered with `reply`.
    private mutating func rejectChunk(_ reply: SMTPReply, size: Int = 0) -> Action {
        state = .chunk(nil, last: false, rejection: reply)
        return size == 0 ? finishChunk() : .none
    }

    /// Replies `reply` and counts a bad command; too many end the session.
    private mutating func error(_ reply: SMTPReply) -> Action {
        badCommands += 1
        if badCommands >= configuration.limits.maxBadCommands {
            state = .closed
            return .replyAndClose(SMTPReply(421, "4.7.0", "Too many errors, closing connection"))
        }
        return .reply(reply)
    }
}
