import Logging
import MailMessage
import NIOCore
import SMTPProtocol

// The message-delivery step of a connection: at the end of a message's data, the faults at
// `data-end` decide first (a refusal, a drop, a delay); then the store round-trip (at once in
// memory, through the disk writer with `--fsync always|batch`), and the final reply once the
// message is as durable as asked and any delay has passed.
extension SMTPServerHandler {
    /// A message's data begins (DATA answered 354, or its first BDAT): nothing gathered for an
    /// earlier transaction can reach it, and its time runs from now.
    func beginMessage(context: ChannelHandlerContext) {
        capture = nil
        startDataDeadline(context: context)
        if !messageReads, !throttle.isOn {
            messageReads = true
            try? context.channel.syncOptions?.setOption(.recvAllocator, value: Self.messageReadSizes)
        }
    }

    /// From a connection's first message on, its reads start at 64 KiB rather than NIO's 2 KiB
    /// (which grows only after reads that fill it). Commands keep the small reads, so a thousand
    /// clients trickling their first line cost what they did; a `throttle` fault keeps its own
    /// small reads. Measured, alternating: 200 KiB messages from 20 sessions with a connection
    /// each, 6 rounds, median 2 483 -> 2 813 msg/s (fewer reads while the new connection's window
    /// opens, and fewer wake-ups of the sender from them; 64 KiB from the accept, 3 rounds,
    /// 2 790–2 816 -> 3 093–3 253 and ~12% less CPU a message); 1 KiB, a connection per message,
    /// one session or 20: no difference beyond the noise.
    /// The price: a connection holds a buffer of up to 64 KiB from then on (its pages touched as
    /// far as reads fill them; clients trickling message data measured ~14 KiB each), as NIO's
    /// own sizing already did after one large read.
    static let messageReadSizes = AdaptiveRecvByteBufferAllocator(minimum: 64, initial: 65_536, maximum: 65_536)

    func keep(_ bytes: inout ByteBuffer, context: ChannelHandlerContext) {
        guard session.messageBytes(bytes.readableBytes) else { return }
        if capture == nil {
            capture = startCapture(sizeHint: session.declaredSize ?? bytes.readableBytes, context: context)
        }
        capture!.append(&bytes, buffers: handoff?.captures)
    }

    /// A new message's capture, from the configuration's three facts it needs.
    private func startCapture(sizeHint: Int, context: ChannelHandlerContext) -> MessageCapture {
        MessageCapture(
            session: session.facts, peer: peer, hostname: shared.configuration.hostname,
            discardBodies: shared.configuration.discardBodies, maxMessageBytes: shared.configuration.limits.maxMessageBytes,
            allocator: context.channel.allocator, sizeHint: sizeHint, prefix: &receivedPrefix
        )
    }

    func deliver(_ transaction: SMTPSession.Transaction, context: ChannelHandlerContext) {
        let current = capture ?? startCapture(sizeHint: 0, context: context)
        capture = nil
        let decision = consult(.dataEnd, message: current.body)
        let delay = decision?.delay ?? .zero
        let fields = current.headerFields()
        let headers = audit.attempts.enabled ? MessageHeaders(fields) : MessageHeaders()
        ending = headers
        let size = current.body?.readableBytes ?? 0
        switch decision?.effect {
        case .reply(let reply):
            return after(delay, context: context) { handler, context in
                handler.transactionFaults = []
                handler.auditedMessageEnd(transaction, reply: reply, fault: decision, headers: headers, size: size)
                handler.act(handler.session.refuse(reply), context: context)
            }
        case .disconnect(let reply, let partial):
            return after(delay, context: context) { handler, context in
                handler.auditedMessageEnd(transaction, reply: reply, fault: decision, headers: headers, size: size, dropped: reply == nil)
                handler.disconnect(reply: reply, partial: partial, context: context)
            }
        case .hang:
            auditedMessageEnd(transaction, reply: nil, fault: decision, headers: headers, size: size, dropped: true)
            return hang()
        case .drop:
            let message = makeMessage(transaction, current, fields)
            return after(delay, context: context) { handler, context in
                handler.shared.metrics.droppedMessage()
                handler.shared.store.events.publish(.dropped(message))
                let action = handler.session.stored(id: message.id)
                if case .reply(let reply) = action {
                    handler.auditedMessageEnd(transaction, reply: reply, fault: decision, headers: headers, size: size, dropped: true)
                }
                handler.act(action, context: context)
            }
        case .throttle(let rate):
            startThrottle(rate, context: context)
        case .greylist, nil:
            break
        }
        if shared.proxy != nil {
            return forwardMessage(makeMessage(transaction, current, fields), raw: current.body, after: delay, context: context)
        }
        store(makeMessage(transaction, current, fields), raw: current.body, after: delay, context: context)
    }

    /// Stores the message, then replies: `250` with its id, or with `answer` (proxy mode: the
    /// upstream's final reply, a refusal included — the message is captured either way).
    func store(
        _ message: CapturedMessage, raw: ByteBuffer?, after delay: Duration, answer: SMTPReply? = nil, context: ChannelHandlerContext
    ) {
        let store = shared.store
        guard store.insertWaitsForDisk || delay > .zero else {
            let entry = store.insertNow(message, raw: raw)
            if let raw, store.copiesRaw { handoff?.captures.give(raw) }
            return stored(message, .success(()), answer: answer, entry: entry, context: context)
        }
        paused = true
        let loop = context.eventLoop
        let bound = NIOLoopBound((self, context), eventLoop: loop)
        let handoff = self.handoff ?? shared.handoffs.handoff(for: loop)
        if delay == .zero, let raw, store.takesInline(raw) {
            // Stored by this loop, with the others of this pass, after their reads.
            let item = InlineStoreBatch.Item(message: message, raw: raw) { result in
                let (handler, context) = bound.value
                handler.storeFinished(message, result, answer: answer, context: context)
            }
            return handoff.stores.add(item, to: store)
        }
        // The delay counts from the message's recorded end of data, whatever the store takes.
        let deadline = loop.now + .nanoseconds(delay.wholeNanoseconds)
        let delayed = delay > .zero
        store.insert(message, raw: raw) { result in
            // A delayed reply: later commands wait behind it.
            guard delayed else {
                return handoff.post {
                    let (handler, context) = bound.value
                    handler.storeFinished(message, result, answer: answer, context: context)
                }
            }
            loop.scheduleTask(deadline: deadline) {
                let (handler, context) = bound.value
                handler.storeFinished(message, result, answer: answer, context: context)
            }
        }
    }

    private func makeMessage(
        _ transaction: SMTPSession.Transaction, _ capture: MessageCapture, _ fields: MessageCapture.HeaderFields
    ) -> CapturedMessage {
        var message = capture.makeMessage(
            transaction, session: session.facts, peer: peer, tls: tls, connectedNanos: connectedNanos, endedNanos: wallNanos, fields: fields,
            limits: shared.configuration.limits, transcript: transcript.take(), previousSession: previousMessage?.sharedSession
        )
        if !sessionFaults.isEmpty || !transactionFaults.isEmpty {
            message.faults = sessionFaults + transactionFaults.filter { !sessionFaults.contains($0) }
            transactionFaults = []
        }
        shareWithPrevious(&message)
        return message
    }

    /// The connection's messages share one session description, and an envelope (or sender)
    /// equal to the previous message's shares its strings: a held message then carries only
    /// what is its own (measured: 100 000 held 1 KiB messages from 20 sessions).
    private func shareWithPrevious(_ message: inout CapturedMessage) {
        if let previous = previousMessage {
            message.shareSession(previous.sharedSession)
            if message.envelope == previous.envelope {
                message.envelope = previous.envelope
            } else if message.envelope.mailFrom == previous.envelope.mailFrom {
                message.envelope.mailFrom = previous.envelope.mailFrom
            }
        }
        previousMessage = (message.sharedSession, message.envelope)
    }

    private func storeFinished(
        _ message: CapturedMessage, _ result: Result<Void, any Error>, answer: SMTPReply?, context: ChannelHandlerContext
    ) {
        paused = false
        stored(message, result, answer: answer, context: context)
        resume(context: context)
    }

    /// `entry`: the stored message's, when it was stored in memory here.
    private func stored(
        _ message: CapturedMessage, _ result: Result<Void, any Error>, answer: SMTPReply? = nil, entry: MessageStore.Entry? = nil,
        context: ChannelHandlerContext
    ) {
        // The session still holds the transaction the message ended (it is not copied to say so).
        let audited = session.hasTransaction ? ending : nil
        ending = nil
        switch result {
        case .success:
            if let answer, answer.code.rawValue / 100 != 2 {
                if let audited { auditedMessageEnd(of: message, reply: answer, headers: audited) }
                act(session.refuse(answer), context: context)
            } else if let answer {
                shared.metrics.accepted(bytes: message.size, atNanos: wallNanos)
                if let audited { auditedMessageEnd(of: message, reply: answer, headers: audited) }
                replacement = answer
                act(session.stored(id: message.id), context: context)
                replacement = nil
            } else {
                let action = session.stored(id: message.id)
                act(action, context: context)
                // The client waits for this `250` and nothing more is to be read: it leaves now,
                // and what only records it (the metrics, the audit, the message's announcement)
                // runs while it travels. With one session, each message waits for its replies.
                sendRepliesIfNothingWaits(context: context)
                shared.metrics.accepted(bytes: message.size, atNanos: wallNanos)
                if let audited, case .reply(let reply) = action {
                    auditedMessageEnd(of: message, reply: reply, headers: audited, storedID: message.id)
                }
            }
            let sent = WallClock.nanos()
            shared.store.announce(message, entry: entry, replySentNanos: sent)
            shared.metrics.observe(message.timestamps, replySent: sent)
        case .failure(let error):
            shared.logger.error("cannot store message", metadata: ["id": "\(message.id)", "error": "\(error)"])
            let action = session.storeFailed()
            if let audited, case .reply(let reply) = action { auditedMessageEnd(of: message, reply: reply, headers: audited) }
            act(action, context: context)
        }
    }
}
