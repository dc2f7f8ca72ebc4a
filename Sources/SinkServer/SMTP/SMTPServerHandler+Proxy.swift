import Foundation
import MailMessage
import NIOCore
import SMTPClient
import SMTPProtocol

// Proxy mode (`--upstream URL`): each client transaction is forwarded to the upstream while the
// client waits, and the client gets the upstream's answers — to MAIL, to each RCPT, and after
// the data. The fault rules have acted first (a delay delays the forwarding, a reply answers
// without asking the upstream, disconnect and hang act on the client). DATA and BDAT are
// answered here and the whole message goes up after its end (as DATA), so a client's chunks
// never wait on the upstream. Every forwarded message is captured whatever the upstream said,
// with the hop (`relay` in its capture metadata).
extension SMTPServerHandler {
    /// Whether `command` goes to the upstream before the session answers it.
    func forwards(_ command: SMTPCommand) -> Bool {
        guard shared.proxy != nil else { return false }
        switch command {
        case .mail, .rcpt: return session.admits(command)
        default: return false
        }
    }

    /// Asks the upstream, then answers the client: the upstream's reply when it accepted (the
    /// session takes the command as its own), its refusal otherwise (the command did not happen).
    func forward(_ command: SMTPCommand, context: ChannelHandlerContext) {
        guard let proxy = shared.proxy else { return execute(command, context: context) }
        let link = upstreamLink ?? ProxyLink(proxy: proxy, loop: context.eventLoop)
        upstreamLink = link
        waitFor(context: context) {
            await link.exchange(command)
        } then: { handler, context, reply in
            if reply.code.rawValue / 100 == 2 {
                handler.execute(command, context: context, replacing: reply)
            } else {
                if case .mail = command { handler.transactionFaults = [] }
                handler.refuse(command, with: reply, context: context)
            }
        }
    }

    /// The message's end in proxy mode: the data goes up, the message is captured with the hop,
    /// and the client gets the upstream's final answer.
    func forwardMessage(_ message: CapturedMessage, raw: ByteBuffer?, after delay: Duration, context: ChannelHandlerContext) {
        guard let link = upstreamLink, let raw else {
            // Not forwarded (no upstream transaction, or --discard): refused, not captured.
            return after(delay, context: context) { handler, context in
                handler.act(handler.session.refuse(ProxyLink.unavailable("no upstream transaction")), context: context)
            }
        }
        after(delay, context: context) { handler, context in
            handler.waitFor(context: context) {
                await link.finish(raw, recipients: message.envelope.recipients.map(\.address), sender: message.envelope.mailFrom)
            } then: { handler, context, result in
                var message = message
                message.relay = [result.hop]
                handler.store(message, raw: raw, after: .zero, answer: result.reply, context: context)
            }
        }
    }

    /// Runs `work` off the event loop, reading and processing nothing meanwhile, then `body` on
    /// the loop with its result (as a fault's delay does).
    func waitFor<Value: Sendable>(
        context: ChannelHandlerContext, _ work: @escaping @Sendable () async -> Value,
        then body: @escaping (SMTPServerHandler, ChannelHandlerContext, Value) -> Void
    ) {
        paused = true
        flushReplies(context: context)
        let bound = NIOLoopBound((self, context, body), eventLoop: context.eventLoop)
        let promise = context.eventLoop.makePromise(of: Value.self)
        promise.completeWithTask { await work() }
        promise.futureResult.whenSuccess { value in
            let (handler, context, body) = bound.value
            handler.paused = false
            body(handler, context, value)
            handler.resume(context: context)
        }
    }

    /// The client's connection ended: so does the upstream's.
    func closeUpstream() {
        guard let link = upstreamLink else { return }
        upstreamLink = nil
        Task { await link.close() }
    }
}

/// `--upstream`: where proxy mode forwards, and how.
struct ProxySettings: Sendable {
    var upstream: Upstream
    var client: SMTPClientSettings
    var metrics: SinkMetrics
}

/// One client connection's connection to the upstream, opened at its first MAIL. Used by one
/// transaction step at a time (the handler waits for each), so its state needs no lock beyond
/// the actor's.
actor ProxyLink {
    let proxy: ProxySettings
    let loop: any EventLoop
    private var connection: SMTPClientConnection?
    /// The upstream has a transaction open (MAIL accepted, no final reply or RSET since).
    private var inTransaction = false
    /// RCPTs the upstream refused in this transaction, with its replies.
    private var refused: [String: String] = [:]

    init(proxy: ProxySettings, loop: any EventLoop) {
        self.proxy = proxy
        self.loop = loop
    }

    /// The answer to a client when the upstream gives none.
    static func unavailable(_ reason: String) -> SMTPReply {
        SMTPReply(451, "4.4.1", "Upstream unavailable: \(reason)")
    }

    /// A MAIL or RCPT sent up; what the upstream answered (or 451 4.4.1 when it could not be
    /// asked, 451 4.4.2 when its reply did not parse).
    func exchange(_ command: SMTPCommand) async -> SMTPReply {
        let started = ContinuousClock.now
        do {
            let connection = try await ready()
            if case .mail = command {
                if inTransaction { _ = try await connection.exchange(.rset, phase: "rset") }
                inTransaction = false
                refused = [:]
            }
            let reply = try await connection.exchange(command, phase: Self.phase(command))
            if case .mail = command, reply.code.rawValue / 100 == 2 { inTransaction = true }
            if case .rcpt(let path, _) = command, reply.code.rawValue / 100 != 2 {
                refused[path.address] = reply.description.replacingOccurrences(of: "\n", with: " ")
            }
            return reply
        } catch {
            // No message to record it on: counted, and the client told.
            proxy.metrics.relayed(outcome: "failed", latency: ContinuousClock.now - started)
            return fail(error)
        }
    }

    /// DATA and the message sent up; the hop to record and the answer for the client.
    func finish(_ raw: ByteBuffer, recipients: [String], sender: String) async -> (hop: RelayHop, reply: SMTPReply) {
        let clock = ContinuousClock()
        let started = clock.now
        let at = MailpitJSON.rfc3339(Date())
        var reply: SMTPReply
        var failure: String?
        do {
            guard let connection, inTransaction else { throw SMTPClientError.closed("data") }
            let dataReply = try await connection.exchange(.data, phase: "data")
            if dataReply.code.rawValue == 354 {
                reply = try await connection.sendData(raw)
            } else {
                reply = dataReply
            }
        } catch {
            failure = "\(error)"
            reply = fail(error)
        }
        inTransaction = false
        let latency = clock.now - started
        var outcome = RelayOutcome(reply: failure == nil ? reply : nil, failure: failure, latency: latency)
        outcome.refused = refused
        proxy.metrics.relayed(outcome: outcome.outcome, latency: latency)
        let hop = RelayHop(
            at: at, upstream: proxy.upstream.description, kind: "proxy", from: sender, to: recipients, reply: outcome.replyText,
            outcome: outcome.outcome, refused: refused.isEmpty ? nil : refused, latencyMs: latency.milliseconds)
        refused = [:]
        return (hop, reply)
    }

    func close() async {
        await connection?.quit()
        connection = nil
    }

    private func ready() async throws -> SMTPClientConnection {
        if let connection, connection.isActive { return connection }
        connection?.close()
        connection = nil
        inTransaction = false
        var times = SMTPClientConnection.PhaseTimes()
        let opened = try await SMTPClientConnection.open(
            to: .init(host: proxy.upstream.host, port: proxy.upstream.port), settings: proxy.client, group: loop, times: &times)
        connection = opened
        return opened
    }

    /// A failed exchange: the connection is dropped (the next MAIL opens another); the client
    /// is answered 451.
    private func fail(_ error: any Error) -> SMTPReply {
        connection?.close()
        connection = nil
        inTransaction = false
        if let error = error as? SMTPClientError, case .protocolError(let text) = error, text.contains("reply") {
            return SMTPReply(451, "4.4.2", "Upstream reply not understood")
        }
        if error is SMTPParseError { return SMTPReply(451, "4.4.2", "Upstream reply not understood") }
        return Self.unavailable("\(error)")
    }

    private static func phase(_ command: SMTPCommand) -> String {
        switch command {
        case .mail: "mail"
        case .rcpt: "rcpt"
        default: "command"
        }
    }
}
