import SMTPProtocol

/// Every reply the sink's SMTP server writes on its own account, in one place (fault rules'
/// replies come from their rule files, the built-in faults' from `Faults/`). The generic ones
/// (`ok`, `bye`, timeouts) are in SMTPProtocol's `SMTPReply`.
extension SMTPReply {
    // MARK: Session

    static func greeting(hostname: String) -> SMTPReply { SMTPReply(220, nil, "\(hostname) ESMTP Swallow") }
    static func helo(hostname: String) -> SMTPReply { SMTPReply(250, nil, hostname) }
    static let help = SMTPReply(214, "2.0.0", "Swallow SMTP sink; commands: EHLO HELO MAIL RCPT DATA BDAT RSET NOOP QUIT VRFY HELP STARTTLS AUTH")
    static let cannotVerify = SMTPReply(252, "2.5.0", "Cannot VRFY user, but will accept message")
    static let expnNotImplemented = SMTPReply(502, "5.5.1", "EXPN not implemented")
    static let reset = SMTPReply(250, "2.0.0", "Reset")
    static func outOfSequence(_ detail: String) -> SMTPReply { SMTPReply(503, "5.5.1", "Bad sequence of commands: \(detail)") }
    static let tooManyErrors = SMTPReply(421, "4.7.0", "Too many errors, closing connection")
    static let tooManyConnections = SMTPReply(421, "4.7.0", "Too many connections, try again later")

    // MARK: Transaction

    static let senderOK = SMTPReply(250, "2.1.0", "Sender ok")
    static let recipientOK = SMTPReply(250, "2.1.5", "Recipient ok")
    static let startMailInput = SMTPReply(354, nil, "End data with <CR><LF>.<CR><LF>")
    static let authenticationRequired = SMTPReply(530, "5.7.0", "Authentication required")
    static let needsSMTPUTF8 = SMTPReply(553, "5.6.7", "Non-ASCII address requires SMTPUTF8")
    static func tooManyRecipients(limit: Int) -> SMTPReply { SMTPReply(452, "4.5.3", "Too many recipients (limit \(limit))") }
    static func chunkReceived(totalBytes: Int) -> SMTPReply { SMTPReply(250, "2.0.0", "\(totalBytes) octets received") }
    static func messageTooBig(limit: Int) -> SMTPReply { SMTPReply(552, "5.3.4", "Message too big (limit \(limit) octets)") }
    /// Its text made with one allocation (an interpolation was two).
    static func queued(id: String) -> SMTPReply { SMTPReply(code: .ok, enhanced: EnhancedStatusCode(2, 0, 0), lines: ["Ok: queued as " + id]) }
    static let notStored = SMTPReply(451, "4.3.0", "Local error in processing: message not stored")

    // MARK: ESMTP parameters

    static let sizeNeedsNumber = SMTPReply(501, "5.5.4", "SIZE needs a number")
    static func sizeExceedsLimit(_ limit: Int) -> SMTPReply { SMTPReply(552, "5.3.4", "Message size exceeds fixed limit of \(limit) octets") }
    static func badParameter(_ detail: String) -> SMTPReply { SMTPReply(555, "5.5.4", detail) }

    // MARK: STARTTLS

    static let tlsNotAvailable = SMTPReply(454, "4.7.0", "TLS not available")
    static let readyToStartTLS = SMTPReply(220, "2.0.0", "Ready to start TLS")
    static let startTLSNotLast = SMTPReply(503, "5.5.1", "STARTTLS must be the last command in a group")

    // MARK: AUTH

    static func authChallenge(_ text: String) -> SMTPReply { SMTPReply(code: .authContinue, lines: [text]) }
    static let authNotAvailable = SMTPReply(502, "5.5.1", "AUTH not available")
    static let encryptionRequired = SMTPReply(538, "5.7.11", "Encryption required for requested authentication mechanism")
    static let cramMD5InitialResponse = SMTPReply(501, "5.5.4", "CRAM-MD5 takes no initial response")
    static func unrecognizedMechanism(_ mechanism: String) -> SMTPReply {
        SMTPReply(504, "5.5.4", "Unrecognized authentication mechanism \(mechanism)")
    }
    static let authCancelled = SMTPReply(501, "5.0.0", "Authentication cancelled")
    static let authInvalid = SMTPReply(535, "5.7.8", "Authentication credentials invalid")
    static let authSucceeded = SMTPReply(235, "2.7.0", "Authentication successful")
    static let authUndecodable = SMTPReply(501, "5.5.2", "Cannot decode AUTH response")
}
