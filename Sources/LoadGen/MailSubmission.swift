import NIOCore
import NIOPosix
import SMTPClient
import SMTPProtocol

/// One message handed to an SMTP server, and what the server said: the submission behind
/// `swallow sendmail`. A transaction over one plain connection (banner, EHLO, MAIL, RCPT per
/// recipient, DATA, QUIT), on the load generator's client.
public enum MailSubmission {
    public struct Result: Sendable {
        /// The final reply after the data, or the refusal that ended the transaction early
        /// (MAIL, DATA, or the last RCPT when no recipient was accepted); nil when the
        /// connection failed.
        public var reply: SMTPReply?
        /// The phase `reply` answered (`mail`, `rcpt`, `data`, `data-end`).
        public var phase: String
        /// Recipients the server refused while others were accepted, with their replies.
        public var refusedRecipients: [(recipient: String, reply: SMTPReply)]
        /// Why no reply was had: the connection failed, timed out or was closed.
        public var failure: SMTPClientError?
    }

    /// Submits `data` (a message with CRLF line ends, not dot-stuffed) from `sender` to
    /// `recipients` at `target`.
    public static func submit(
        to target: LoadTarget, sender: String, recipients: [String], data: [UInt8],
        helo: String = "localhost", timeout: Double = 60
    ) async -> Result {
        var settings = SMTPClientSettings()
        settings.pipelining = false
        settings.helo = helo
        settings.connectTimeout = min(timeout, 10)
        settings.replyTimeout = timeout
        var times = SMTPClientConnection.PhaseTimes()
        let connection: SMTPClientConnection
        do {
            connection = try await SMTPClientConnection.open(
                to: .init(host: target.host, port: target.port), settings: settings,
                group: MultiThreadedEventLoopGroup.singleton, times: &times)
        } catch let error as SMTPClientError {
            return Result(reply: nil, phase: "connect", refusedRecipients: [], failure: error)
        } catch {
            return Result(reply: nil, phase: "connect", refusedRecipients: [], failure: .connect("\(error)"))
        }
        let outcome = await connection.send(sender: sender, recipients: recipients, data: data, times: &times)
        let refused = zip(recipients, connection.lastRecipientReplies).filter { $0.1.code.rawValue / 100 != 2 }
        await connection.quit()
        switch outcome {
        case .reply(let reply, let phase):
            // A refusal of every recipient is the outcome itself, not a partial one.
            let partial = phase == "rcpt" ? [] : refused.map { (recipient: $0.0, reply: $0.1) }
            return Result(reply: reply, phase: phase, refusedRecipients: partial, failure: nil)
        case .failed(let error):
            return Result(reply: nil, phase: error.phase, refusedRecipients: [], failure: error)
        }
    }
}
