import Foundation
import MailMessage
import NIOCore
import NIOSSL
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
        waitFor(link.exchange(command), context: context) { handler, context, answer in
            let reply = answer.failed ? handler.upstreamFailure(answer.reply, command: command, message: nil) : answer.reply
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
            let recipients = message.envelope.recipients.map(\.address)
            handler.waitFor(link.finish(raw, recipients: recipients, sender: message.envelope.mailFrom), context: context) {
                handler, context, result in
                var message = message
                message.relay = [result.hop]
                let reply = result.failed ? handler.upstreamFailure(result.reply, command: nil, message: raw) : result.reply
                handler.store(message, raw: raw, after: .zero, answer: reply, context: context)
            }
        }
    }

    /// The client's answer when the upstream gave none: a rule's reply at the `upstream` phase,
    /// else `standard` (451 4.4.1, or 4.4.2 for a reply that did not parse).
    func upstreamFailure(_ standard: SMTPReply, command: SMTPCommand?, message: ByteBuffer?) -> SMTPReply {
        guard let decision = consult(.upstream, command: command, message: message), case .reply(let reply) = decision.effect else {
            return standard
        }
        return reply
    }

    /// Waits for `future` (completed on this loop), reading and processing nothing meanwhile,
    /// then runs `body` with its value (as a fault's delay does).
    func waitFor<Value: Sendable>(
        _ future: EventLoopFuture<Value>, context: ChannelHandlerContext,
        then body: @escaping (SMTPServerHandler, ChannelHandlerContext, Value) -> Void
    ) {
        paused = true
        flushReplies(context: context)
        let bound = NIOLoopBound((self, context, body), eventLoop: context.eventLoop)
        future.whenSuccess { value in
            let (handler, context, body) = bound.value
            handler.paused = false
            body(handler, context, value)
            handler.resume(context: context)
        }
    }

    /// The client's connection ended: so does the upstream's.
    func closeUpstream() {
        upstreamLink?.close()
        upstreamLink = nil
    }
}

/// `--upstream`: where proxy mode forwards, and how.
struct ProxySettings: Sendable {
    var upstream: Upstream
    var client: SMTPClientSettings
    /// Made once: a context per connection would read the trust roots each time.
    var tlsContext: NIOSSLContext?
    var metrics: SinkMetrics

    init(upstream: Upstream, client: SMTPClientSettings, metrics: SinkMetrics) throws {
        self.upstream = upstream
        self.client = client
        self.metrics = metrics
        if client.tls == .none {
            tlsContext = nil
        } else {
            var configuration = TLSConfiguration.makeClientConfiguration()
            configuration.certificateVerification = client.verifyCertificate ? .fullVerification : .none
            tlsContext = try NIOSSLContext(configuration: configuration)
        }
    }
}

/// One client connection's connection to the upstream, opened at its first MAIL, on the
/// client connection's event loop: every step is a future completed on that loop, and the
/// handler waits for each, so the state here is only ever touched from that loop.
final class ProxyLink {
    let proxy: ProxySettings
    let loop: any EventLoop
    private var client: SMTPLoopClient?
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

    /// A MAIL or RCPT sent up; what the upstream answered, or (`failed`) 451 4.4.1 when it could
    /// not be asked, 451 4.4.2 when its reply did not parse. Never fails.
    func exchange(_ command: SMTPCommand) -> EventLoopFuture<(reply: SMTPReply, failed: Bool)> {
        let started = NIODeadline.now()
        let bound = NIOLoopBound(self, eventLoop: loop)
        return ready().flatMap { client -> EventLoopFuture<SMTPReply> in
            let link = bound.value
            guard case .mail = command else { return client.exchange(command, phase: "rcpt") }
            let reset = link.inTransaction ? client.exchange(.rset, phase: "rset").map { _ in } : client.eventLoop.makeSucceededVoidFuture()
            link.inTransaction = false
            link.refused = [:]
            return reset.flatMap { client.exchange(command, phase: "mail") }
        }
        .map { reply in
            let link = bound.value
            if case .mail = command, reply.code.rawValue / 100 == 2 { link.inTransaction = true }
            if case .rcpt(let path, _) = command, reply.code.rawValue / 100 != 2 {
                link.refused[path.address] = reply.description.replacingOccurrences(of: "\n", with: " ")
            }
            return (reply, false)
        }
        .recover { error in
            let link = bound.value
            // No message to record it on: counted, and the client told.
            link.proxy.metrics.relayed(outcome: "failed", latency: .nanoseconds(Int64((NIODeadline.now() - started).nanoseconds)))
            return (link.fail(error), true)
        }
    }

    /// DATA and the message sent up; the hop to record and the answer for the client. Never fails.
    func finish(_ raw: ByteBuffer, recipients: [String], sender: String) -> EventLoopFuture<(hop: RelayHop, reply: SMTPReply, failed: Bool)> {
        let started = NIODeadline.now()
        let at = MailpitJSON.rfc3339(Date())
        let bound = NIOLoopBound(self, eventLoop: loop)
        let answer: EventLoopFuture<SMTPReply>
        if let client, inTransaction {
            answer = client.exchange(.data, phase: "data").flatMap { reply in
                reply.code.rawValue == 354 ? client.sendData(raw) : client.eventLoop.makeSucceededFuture(reply)
            }
        } else {
            answer = loop.makeFailedFuture(SMTPClientError.closed("data"))
        }
        return answer.map { reply -> (SMTPReply, String?) in (reply, nil) }
            .recover { error in (bound.value.fail(error), "\(error)") }
            .map { reply, failure in
                let link = bound.value
                link.inTransaction = false
                let latency = Duration.nanoseconds(Int64((NIODeadline.now() - started).nanoseconds))
                var outcome = RelayOutcome(reply: failure == nil ? reply : nil, failure: failure, latency: latency)
                outcome.refused = link.refused
                link.proxy.metrics.relayed(outcome: outcome.outcome, latency: latency)
                let hop = RelayHop(
                    at: at, upstream: link.proxy.upstream.description, kind: "proxy", from: sender, to: recipients,
                    reply: outcome.replyText, outcome: outcome.outcome, refused: link.refused.isEmpty ? nil : link.refused,
                    latencyMs: latency.milliseconds)
                link.refused = [:]
                return (hop, reply, failure != nil)
            }
    }

    func close() {
        client?.quit()
        client = nil
    }

    private func ready() -> EventLoopFuture<SMTPLoopClient> {
        if let client, client.isActive { return loop.makeSucceededFuture(client) }
        client?.close()
        client = nil
        inTransaction = false
        let bound = NIOLoopBound(self, eventLoop: loop)
        return SMTPLoopClient.connect(
            to: .init(host: proxy.upstream.host, port: proxy.upstream.port), settings: proxy.client, tlsContext: proxy.tlsContext,
            on: loop
        )
        .map { client in
            bound.value.client = client
            return client
        }
    }

    /// A failed exchange: the connection is dropped (the next MAIL opens another); the client
    /// is answered 451.
    private func fail(_ error: any Error) -> SMTPReply {
        client?.close()
        client = nil
        inTransaction = false
        if let error = error as? SMTPClientError, case .protocolError(let text) = error, text.contains("reply not understood") {
            return SMTPReply(451, "4.4.2", "Upstream reply not understood")
        }
        return Self.unavailable("\(error)")
    }
}
