import SMTPProtocol

// The EHLO reply's keywords and the ESMTP parameters of MAIL and RCPT the session accepts
// (SIZE RFC 1870, BODY RFC 6152, SMTPUTF8 RFC 6531, DSN's RET/ENVID/NOTIFY/ORCPT RFC 3461).
extension SMTPSession {
    func ehloReply(_ domain: String) -> SMTPReply {
        var lines: [String] = []
        lines.reserveCapacity(configuration.ehloKeywords.count + 4)
        lines.append("\(configuration.hostname) greets \(domain)")
        lines += configuration.ehloKeywords
        if configuration.startTLSAvailable && !tlsActive { lines.append("STARTTLS") }
        if authOffered { lines.append("AUTH PLAIN LOGIN CRAM-MD5") }
        lines.append("HELP")
        return SMTPReply(code: .ok, lines: lines)
    }

    func checkMailParameters(_ parameters: [ESMTPParameter]) -> SMTPReply? {
        for parameter in parameters {
            switch parameter.keyword {
            case "SIZE":
                guard let size = parameter.value.flatMap({ Int($0) }), size >= 0 else {
                    return .sizeNeedsNumber
                }
                if size > configuration.limits.maxMessageBytes {
                    return .sizeExceedsLimit(configuration.limits.maxMessageBytes)
                }
            case "BODY":
                guard let value = parameter.value?.uppercased(), value == "7BIT" || value == "8BITMIME" else {
                    return .badParameter("BODY must be 7BIT or 8BITMIME")
                }
            case "SMTPUTF8":
                guard parameter.value == nil else { return .badParameter("SMTPUTF8 takes no value") }
            case "RET":
                guard let value = parameter.value?.uppercased(), value == "FULL" || value == "HDRS" else {
                    return .badParameter("RET must be FULL or HDRS")
                }
            case "ENVID", "AUTH":
                guard parameter.value != nil else { return .badParameter("\(parameter.keyword) needs a value") }
            default:
                return .badParameter("Unsupported MAIL parameter \(parameter.keyword)")
            }
        }
        return nil
    }

    func checkRecipientParameters(_ parameters: [ESMTPParameter]) -> SMTPReply? {
        for parameter in parameters {
            switch parameter.keyword {
            case "NOTIFY", "ORCPT":
                guard parameter.value != nil else { return .badParameter("\(parameter.keyword) needs a value") }
            default:
                return .badParameter("Unsupported RCPT parameter \(parameter.keyword)")
            }
        }
        return nil
    }
}
