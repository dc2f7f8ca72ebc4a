import Logging
import NIOSSL

/// What every connection of one listener shares.
struct SMTPServerContext: Sendable {
    var session: SMTPSession.Configuration
    var configuration: SinkConfiguration
    var store: MessageStore
    var connections: ConnectionRegistry
    /// STARTTLS's certificate and context (made on the first STARTTLS); nil offers no STARTTLS.
    var startTLS: SinkTLS?
    var implicitTLS: Bool
    var logger: Logger
    var metrics: SinkMetrics
    var faults: FaultEngine
    var handoffs: LoopHandoffs
    /// Where attempts and the timeline are recorded (the sink's; a context of its own in unit tests).
    var audit = DeliveryAudit(settings: AuditSettings(), dataDirectory: nil, metrics: nil, health: nil)
    /// Sessions of the HTTP send API (`LocalSubmission`), not of a network client.
    var viaHTTP = false
    /// `--upstream`: proxy mode's upstream; nil captures as a sink does.
    var proxy: ProxySettings?

    /// One context for all of a listener's connections: each handler holding its own copy was a
    /// retain and a release of each of the context's references as a connection opened and
    /// closed (`perf record`, a connection per message).
    final class Shared: Sendable {
        let value: SMTPServerContext
        /// A new connection's session, made once: each connection copies it (a session made
        /// from the configuration boxed and copied the configuration's every field).
        let newSession: SMTPSession
        init(_ value: SMTPServerContext) {
            self.value = value
            newSession = SMTPSession(configuration: value.session)
        }
    }
}
