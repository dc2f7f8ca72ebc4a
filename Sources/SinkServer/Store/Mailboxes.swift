import MailMessage

/// Mailbox names let many CI jobs share one sink without seeing each other's mail: a message
/// is filed under its AUTH user and under the plus tag of each recipient
/// (`app+job42@example.com` is in mailbox `job42`).
enum Mailboxes {
    static func names(for message: CapturedMessage) -> [String] {
        var names: [String] = []
        if let user = message.session.authUser, !user.isEmpty { names.append(user) }
        for recipient in message.envelope.recipients {
            guard let at = recipient.address.lastIndex(of: "@") else { continue }
            let local = recipient.address[..<at]
            guard let plus = local.firstIndex(of: "+") else { continue }
            let tag = String(local[local.index(after: plus)...])
            if !tag.isEmpty && !names.contains(tag) { names.append(tag) }
        }
        return names
    }
}
