import MailMessage
import NIOCore
import SMTPProtocol

/// A session's transcript, kept only with `--transcripts`. AUTH secrets never enter it.
struct Transcript {
    let enabled: Bool
    private var entries: [TranscriptEntry] = []

    init(enabled: Bool) { self.enabled = enabled }

    mutating func client(_ command: SMTPCommand) {
        guard enabled else { return }
        if case .auth(let mechanism, let initial) = command {
            client(initial == nil ? "AUTH \(mechanism)" : "AUTH \(mechanism) (initial response redacted)")
        } else {
            var buffer = ByteBuffer()
            buffer.writeSMTPCommand(command)
            client(String(buffer.readString(length: buffer.readableBytes - 2) ?? ""))
        }
    }

    mutating func client(_ text: String) {
        guard enabled else { return }
        entries.append(TranscriptEntry(nanos: WallClock.nanos(), direction: .client, text: text))
    }

    mutating func server(_ reply: SMTPReply) {
        guard enabled else { return }
        var buffer = ByteBuffer()
        buffer.writeSMTPReply(reply)
        let text = String(buffer.readString(length: buffer.readableBytes) ?? "").replacingCRLF()
        entries.append(TranscriptEntry(nanos: WallClock.nanos(), direction: .server, text: text))
    }

    mutating func note(_ text: String) {
        guard enabled else { return }
        entries.append(TranscriptEntry(nanos: WallClock.nanos(), direction: .server, text: "(\(text))"))
    }

    /// The entries since the last message, handed to that message.
    mutating func take() -> [TranscriptEntry]? {
        guard enabled else { return nil }
        defer { entries.removeAll(keepingCapacity: true) }
        return entries
    }
}

extension String {
    fileprivate func replacingCRLF() -> String {
        var lines = split(separator: "\r\n", omittingEmptySubsequences: true).map(String.init)
        if lines.isEmpty { lines = [""] }
        return lines.joined(separator: "\n")
    }
}
