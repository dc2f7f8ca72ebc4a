import NIOCore
import SMTPClient
import SMTPProtocol

/// One message on its way over a `LoadConnection`: the commands and the dot-stuffed data,
/// rendered before the first byte, and what the server has said so far.
final class LoadTransaction {
    let job: LoadRunner.Job
    /// `MAIL FROM:<…>`, one `RCPT TO:<…>` per recipient, CRLF after each.
    let mail: ByteBuffer
    let rcpts: [ByteBuffer]
    /// The message, dot-stuffed, with its `.` line; taken (emptied) when it is sent.
    var data: ByteBuffer
    /// Uptime nanoseconds the message was taken up (its lag counts to here).
    let taken: UInt64
    var times = SMTPClientConnection.PhaseTimes()
    /// When the phase now waited for began.
    var phaseStarted: UInt64 = 0
    var mailReply: SMTPReply?
    var rcptReplies: [SMTPReply] = []
    /// A refusal decided before the end of data, reported once the RSET after it is answered.
    var refusal: (reply: SMTPReply, phase: String)?

    init(job: LoadRunner.Job, mail: ByteBuffer, rcpts: [ByteBuffer], data: ByteBuffer, taken: UInt64) {
        self.job = job
        self.mail = mail
        self.rcpts = rcpts
        self.data = data
        self.taken = taken
    }

    var rcptAccepted: Bool { rcptReplies.contains { $0.code.rawValue / 100 == 2 } }
}
