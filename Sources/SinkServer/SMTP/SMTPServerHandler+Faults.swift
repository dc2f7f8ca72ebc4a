import NIOCore
import SMTPProtocol

// The connection's side of faults: which phase a command is, asking the fault sources (the
// rule engine, then the built-in faults) and carrying out what they decided (delays,
// replies, disconnects, hangs, throttling). What to do is decided under `Faults/`; here it
// is only done.
extension SMTPServerHandler {
    // MARK: Connect and greeting

    func greet(context: ChannelHandlerContext) {
        let banner = { (handler: SMTPServerHandler, context: ChannelHandlerContext) in
            handler.reply(handler.session.greeting(), context: context)
            handler.flushReplies(context: context)
        }
        guard let decision = consult(.greeting) else { return banner(self, context) }
        carryOut(decision, context: context, refuse: Self.refuseConnection, proceed: banner)
    }

    /// A fault's reply at connect or greeting: instead of the banner, then the connection ends.
    static func refuseConnection(_ handler: SMTPServerHandler, _ context: ChannelHandlerContext, _ reply: SMTPReply) {
        handler.act(.replyAndClose(reply), context: context)
    }

    // MARK: Commands

    /// A command a fault (or, in proxy mode, the upstream) answered instead of the session;
    /// `fault` is the decision when a fault did.
    func refuse(_ command: SMTPCommand, with reply: SMTPReply, fault: FaultDecision? = nil, context: ChannelHandlerContext) {
        // A refused BDAT's chunk follows the command: it is read, then answered.
        if case .bdat(let size, _) = command, size > 0 { decoder.mode = .chunk(remaining: size) }
        audited(command, transaction: session.transaction, reply: reply, fault: fault)
        act(session.answer(reply, to: command), context: context)
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

    /// Carries out a decision: `refuse` sends a reply in place of what `proceed` would do; a
    /// delay comes first; with a delay or throttle only, `proceed` runs. `command`: the one the
    /// decision answers, if any (a disconnect or hang at RCPT ends an attempt for its recipient).
    func carryOut(
        _ decision: FaultDecision, command: SMTPCommand? = nil, context: ChannelHandlerContext,
        refuse: @escaping (SMTPServerHandler, ChannelHandlerContext, SMTPReply) -> Void,
        proceed: @escaping (SMTPServerHandler, ChannelHandlerContext) -> Void
    ) {
        after(decision.delay, context: context) { handler, context in
            switch decision.effect {
            case .reply(let reply):
                refuse(handler, context, reply)
            case .disconnect(let reply, let partial):
                handler.auditedEnd(by: decision, reply: reply, command: command)
                handler.disconnect(reply: reply, partial: partial, context: context)
            case .hang:
                handler.auditedEnd(by: decision, reply: nil, command: command)
                handler.hang()
            case .throttle(let rate):
                handler.startThrottle(rate, context: context)
                proceed(handler, context)
            case .drop, .greylist, nil:
                proceed(handler, context)
            }
        }
    }

    /// What the fault sources decide at `phase`: the first rule that fires (recorded), then,
    /// unless that rule answered, the built-in faults (with `--magic-addresses`, on commands
    /// the session would accept). nil when nothing acts. What the event knows comes from
    /// `command` (the MAIL's sender, the RCPT's recipient, the EHLO's name) or else the session.
    func consult(_ phase: FaultPhase, command: SMTPCommand? = nil, message: ByteBuffer? = nil) -> FaultDecision? {
        let rules = shared.faults.rules(for: phase)
        let builtIn =
            shared.configuration.magicAddresses && BuiltInFaults.acts(at: phase)
            && (command.map(session.admits) ?? true)
        guard !rules.isEmpty || builtIn else { return nil }
        if rules.isEmpty, phase == .mail || phase == .rcpt {
            let sender = command?.senderPath ?? session.sender
            let recipient = command?.recipientPath ?? session.firstRecipient
            guard let fired = BuiltInFaults.decide(at: phase, sender: sender, recipient: recipient) else { return nil }
            transcript.note("\(fired.rule) at \(phase.rawValue)")
            return fired
        }
        if rules.isEmpty, phase == .dataEnd, let recipients = session.recipients {
            let fired = BuiltInFaults.decideAtDataEnd(sender: session.sender, recipients: recipients.lazy.map(\.path), message: message)
            if let fired { transcript.note("\(fired.rule) at \(phase.rawValue)") }
            return fired
        }
        let transaction = session.transaction
        let event = FaultEvent(
            phase: phase, client: peer.remoteIP, helo: command?.helo ?? session.helo, authUser: session.authUser,
            senderPath: command?.senderPath ?? transaction?.reversePath,
            recipientPaths: command?.recipientPath.map { [$0] } ?? transaction?.recipients.map(\.path) ?? [],
            message: message
        )
        var decision: FaultDecision?
        if !rules.isEmpty, let fired = shared.faults.decide(event.withText(), rules: rules) {
            record(fired)
            decision = fired
        }
        if builtIn, decision?.answers != true, let fired = BuiltInFaults().decide(event) {
            transcript.note("\(fired.rule) at \(phase.rawValue)")
            decision = decision?.then(fired) ?? fired
        }
        return decision
    }

    /// A rule fired: remembered for the message, counted, and announced on the event stream.
    private func record(_ decision: FaultDecision) {
        switch decision.phase {
        case .connect, .greeting, .ehlo, .starttls, .auth:
            if sessionFaults.count < 32, !sessionFaults.contains(decision.rule) { sessionFaults.append(decision.rule) }
        default:
            if transactionFaults.count < 32, !transactionFaults.contains(decision.rule) { transactionFaults.append(decision.rule) }
        }
        transcript.note("fault rule \(decision.rule) fired at \(decision.phase.rawValue)")
        shared.metrics.faultFired(rule: decision.rule)
        if shared.store.events.hasEventSubscribers {
            shared.store.events.publish(
                .fault(
                    FaultFiring(
                        rule: decision.rule, phase: decision.phase.rawValue, session: peer.sessionID, client: peer.remoteIP,
                        atNanos: WallClock.nanos()
                    )))
        }
    }

    /// Runs `body` after `delay`, reading and processing nothing meanwhile (later pipelined
    /// commands wait behind the delayed reply); at once when there is no delay.
    func after(
        _ delay: Duration, context: ChannelHandlerContext, _ body: @escaping (SMTPServerHandler, ChannelHandlerContext) -> Void
    ) {
        guard delay > .zero else { return body(self, context) }
        paused = true
        flushReplies(context: context)
        let bound = NIOLoopBound((self, context, body), eventLoop: context.eventLoop)
        context.eventLoop.scheduleTask(in: .nanoseconds(delay.wholeNanoseconds)) {
            let (handler, context, body) = bound.value
            handler.paused = false
            body(handler, context)
            handler.resume(context: context)
        }
    }

    /// After a wait (the store, or a delay): replies out, pipelined input processed.
    func resume(context: ChannelHandlerContext) {
        flushReplies(context: context)
        process(context: context)
        flushReplies(context: context)
        resumeReading(context: context)
    }

    func disconnect(reply: SMTPReply?, partial: String?, context: ChannelHandlerContext) {
        if let reply { self.reply(reply, context: context) }
        if let partial {
            transcript.note("partial reply, then closed: \(partial)")
            replyVerbatim(partial)
        }
        close(context: context)
    }

    /// Reads but never answers, until the client gives up or the idle timeout.
    func hang() {
        hung = true
        cumulation = nil
    }
}

extension SMTPCommand {
    /// The recipient of a RCPT command.
    fileprivate var recipientPath: ForwardPath? {
        if case .rcpt(let path, _) = self { return path }
        return nil
    }

    /// The name an EHLO or HELO gives.
    fileprivate var helo: String? {
        switch self {
        case .ehlo(let domain), .helo(let domain): domain
        default: nil
        }
    }

    /// The sender of a MAIL command.
    fileprivate var senderPath: ReversePath? {
        if case .mail(let path, _) = self { return path }
        return nil
    }
}
