import NIOCore
import SMTPProtocol

// The fault engine's side of a connection: which phase a command is, asking the rules, and
// carrying out what a fired rule decided (delays, replies, disconnects, hangs, throttling).
extension SMTPServerHandler {
    /// A command a fault rule answered instead of the session.
    func refuse(_ command: SMTPCommand, with reply: SMTPReply, context: ChannelHandlerContext) {
        switch command {
        case .bdat(let size, _):
            // The chunk's bytes follow the command: read them, then answer.
            if size > 0 { decoder.mode = .chunk(remaining: size) }
            act(session.refuseChunk(reply, size: size), context: context)
        case .quit:
            self.reply(reply, context: context)
            close(context: context)
        default:
            self.reply(reply, context: context)
        }
        if reply.code.rawValue == 421 { close(context: context) }
    }

    func phase(of command: SMTPCommand) -> FaultPhase? {
        switch command {
        case .ehlo, .helo: .ehlo
        case .starttls: .starttls
        case .auth: .auth
        case .mail: .mail
        case .rcpt: .rcpt
        case .data: .data
        // Only the first chunk starts the data phase.
        case .bdat: session.transaction?.usedBDAT == true ? nil : .data
        case .quit: .quit
        default: nil
        }
    }


    /// Carries out a fired rule's decision: `refuse` sends a reply in place of what `proceed`
    /// would do; a delay comes first; with a delay or throttle only, `proceed` runs.
    func carryOut(
        _ decision: FaultDecision, context: ChannelHandlerContext,
        refuse: @escaping (SMTPServerHandler, ChannelHandlerContext, SMTPReply) -> Void,
        proceed: @escaping (SMTPServerHandler, ChannelHandlerContext) -> Void
    ) {
        after(decision.delay, context: context) { handler, context in
            switch decision.effect {
            case .reply(let reply):
                refuse(handler, context, reply)
            case .disconnect(let reply, let partial):
                handler.disconnect(reply: reply, partial: partial, context: context)
            case .hang:
                handler.hang()
            case .throttle(let rate):
                handler.throttle(rate, context: context)
                proceed(handler, context)
            case .drop, .greylist, nil:
                proceed(handler, context)
            }
        }
    }

    /// The decision of the first rule that fires at `phase`, recorded; nil when none does.
    /// What the event knows comes from `command` (the MAIL's sender, the RCPT's recipient, the
    /// EHLO's name) or else the session, and is only gathered when a rule is in force.
    func consult(_ phase: FaultPhase, command: SMTPCommand? = nil, message: ByteBuffer? = nil) -> FaultDecision? {
        let rules = shared.faults.rules(for: phase)
        guard !rules.isEmpty else { return nil }
        let transaction = session.transaction
        var event = FaultEvent(
            phase: phase, client: peer.remoteIP, helo: command?.helo ?? session.helo, authUser: session.authUser,
            sender: command?.sender ?? transaction?.reversePath.address,
            recipients: command?.recipient.map { [$0] } ?? transaction?.recipients.map(\.path.address) ?? [],
            message: message
        )
        event.mailboxes = Self.mailboxes(of: event)
        guard let decision = shared.faults.decide(event, rules: rules) else { return nil }
        switch phase {
        case .connect, .greeting, .ehlo, .starttls, .auth:
            if sessionFaults.count < 32, !sessionFaults.contains(decision.rule) { sessionFaults.append(decision.rule) }
        default:
            if transactionFaults.count < 32, !transactionFaults.contains(decision.rule) { transactionFaults.append(decision.rule) }
        }
        transcript.note("fault rule \(decision.rule) fired at \(phase.rawValue)")
        shared.metrics.faultFired(rule: decision.rule)
        if shared.store.events.hasEventSubscribers {
            shared.store.events.publish(.fault(FaultFiring(
                rule: decision.rule, phase: phase.rawValue, session: peer.sessionID, client: peer.remoteIP, atNanos: WallClock.nanos()
            )))
        }
        return decision
    }

    /// The mailboxes an event is known to belong to, for a mailbox's own fault rules: the AUTH
    /// user from `mail` on, the recipients' plus tags from `rcpt`, the header at `data-end`.
    static func mailboxes(of event: FaultEvent) -> [String] {
        var names: [String] = []
        switch event.phase {
        case .mail, .rcpt, .data, .dataEnd, .quit: break
        default: return names
        }
        if let user = event.authUser, !user.isEmpty { names.append(user) }
        for recipient in event.recipients where recipient.contains("@") {
            if let detail = Mailbox.detail(ofAddress: recipient), !names.contains(String(detail)) { names.append(String(detail)) }
        }
        if let header = event.header("X-Swallow-Mailbox"), !header.isEmpty, !names.contains(header) { names.append(header) }
        return names
    }

    /// Runs `body` after `seconds`, reading and processing nothing meanwhile (later pipelined
    /// commands wait behind the delayed reply); at once when `seconds` is 0.
    func after(
        _ seconds: Double, context: ChannelHandlerContext, _ body: @escaping (SMTPServerHandler, ChannelHandlerContext) -> Void
    ) {
        guard seconds > 0 else { return body(self, context) }
        paused = true
        flushReplies(context: context)
        let bound = NIOLoopBound((self, context), eventLoop: context.eventLoop)
        context.eventLoop.scheduleTask(in: .nanoseconds(Int64(seconds * 1e9))) {
            let (handler, context) = bound.value
            handler.paused = false
            body(handler, context)
            handler.resume(context: context)
        }
    }

    func disconnect(reply: SMTPReply?, partial: String?, context: ChannelHandlerContext) {
        if let reply { self.reply(reply, context: context) }
        if let partial {
            transcript.note("partial reply, then closed: \(partial)")
            context.write(wrapOutboundOut(context.channel.allocator.buffer(string: partial)), promise: nil)
            unflushed = true
        }
        close(context: context)
    }

    /// Reads but never answers, until the client gives up or the idle timeout.
    func hang() {
        hung = true
        cumulation = nil
    }

    func throttle(_ bytesPerSecond: Int, context: ChannelHandlerContext) {
        throttleRate = Double(bytesPerSecond)
        throttleFreeAt = FaultEngine.now()
        // Small reads, so the rate is smooth rather than one burst per second.
        let chunk = max(64, min(bytesPerSecond / 20, 64 * 1024))
        try? context.channel.syncOptions?.setOption(.recvAllocator, value: FixedSizeRecvByteBufferAllocator(capacity: chunk))
        // One read per readiness event, so every read passes through `read(context:)`.
        try? context.channel.syncOptions?.setOption(.maxMessagesPerRead, value: 1)
    }

    /// Charges `bytes` to a throttled connection's budget.
    func spend(_ bytes: Int) {
        throttleFreeAt = max(throttleFreeAt, FaultEngine.now()) + UInt64(Double(bytes) / throttleRate * 1e9)
    }
}

extension SMTPCommand {
    /// The address of a RCPT command.
    fileprivate var recipient: String? {
        if case .rcpt(let path, _) = self { return path.address }
        return nil
    }

    /// The name an EHLO or HELO gives.
    fileprivate var helo: String? {
        switch self {
        case .ehlo(let domain), .helo(let domain): domain
        default: nil
        }
    }

    /// The address of a MAIL command.
    fileprivate var sender: String? {
        if case .mail(let path, _) = self { return path.address }
        return nil
    }
}
