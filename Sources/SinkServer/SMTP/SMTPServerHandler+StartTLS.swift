import Logging
import MailMessage
import NIOCore
import NIOSSL
import NIOTLS

// STARTTLS (RFC 3207) and implicit TLS on a connection: the `220` goes out in plaintext, then
// the TLS handler goes in front of this one; when its handshake completes the session forgets
// what it learned before.
extension SMTPServerHandler {
    func tlsEstablished(context: ChannelHandlerContext) {
        let handler = try? context.pipeline.syncOperations.handler(type: NIOSSLServerHandler.self)
        let info = TLSInfo(version: Self.name(handler?.tlsVersion), cipher: nil, implicit: shared.implicitTLS)
        tls = info
        session.tlsEstablished()
        transcript.note("TLS established: \(info.version)")
    }

    func startTLS(context: ChannelHandlerContext) {
        guard let startTLS = shared.startTLS else { return }
        // The 220 goes out in plaintext; everything after it is TLS.
        flushReplies(context: context)
        // From here the TLS handler sees the bytes first.
        leaveDirect()
        do {
            try context.pipeline.syncOperations.addHandler(NIOSSLServerHandler(context: startTLS.context()), position: .before(self))
        } catch {
            shared.logger.error("STARTTLS failed: \(error)")
            close(context: context)
        }
    }

    static func name(_ version: TLSVersion?) -> String {
        switch version {
        case .tlsv13: "TLSv1.3"
        case .tlsv12: "TLSv1.2"
        case .tlsv11: "TLSv1.1"
        case .tlsv1: "TLSv1"
        case nil: "unknown"
        }
    }
}
