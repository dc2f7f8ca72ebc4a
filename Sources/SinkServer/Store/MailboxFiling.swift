import MailMessage
import SMTPProtocol

/// Mailbox names let many CI jobs share one sink without seeing each other's mail: a message
/// is filed under its AUTH user and under the plus tag of each recipient
/// (`app+job42@example.com` is in mailbox `job42`), and under its `X-Swallow-Mailbox` header.
enum MailboxFiling {
    static func names(for message: CapturedMessage) -> [String] {
        var names: [String] = []
        if let user = message.session.authUser, !user.isEmpty { names.append(user) }
        for recipient in message.envelope.recipients {
            guard recipient.address.utf8.contains(UInt8(ascii: "@")), let detail = Mailbox.detail(ofAddress: recipient.address) else { continue }
            let tag = String(detail)
            if !names.contains(tag) { names.append(tag) }
        }
        if let header = message.mailbox, !names.contains(header) { names.append(header) }
        return names
    }
}
