import NIOCore

extension SMTPCommand {
    /// Parses one command line, CRLF already removed by the framer.
    ///
    /// Verbs are case-insensitive (RFC 5321 §2.4). A non-AUTH line longer than
    /// `limits.maxCommandLineBytes` (CRLF counted) is `lineTooLong`; AUTH lines may reach
    /// `limits.maxAuthLineBytes` (RFC 4954 §4).
    public static func parse(_ line: ByteBuffer, limits: SMTPLimits = SMTPLimits()) throws(SMTPParseError) -> SMTPCommand {
        let text: String? = line.withUnsafeReadableBytes { bytes in
            // Pure ASCII (nearly every line) needs no UTF-8 validation.
            var high: UInt8 = 0
            for byte in bytes { high |= byte }
            return high < 0x80 ? String(decoding: bytes, as: UTF8.self) : String(validating: bytes, as: UTF8.self)
        }
        guard let text else { throw .invalidEncoding }
        return try parse(text, lineLength: line.readableBytes + 2, limits: limits)
    }

    /// Parses one command line given as text (without CRLF).
    public static func parse(_ text: String, limits: SMTPLimits = SMTPLimits()) throws(SMTPParseError) -> SMTPCommand {
        try parse(text, lineLength: text.utf8.count + 2, limits: limits)
    }

    private static func parse(_ text: String, lineLength: Int, limits: SMTPLimits) throws(SMTPParseError) -> SMTPCommand {
        let verbEnd = text.utf8.firstIndex(of: UInt8(ascii: " ")) ?? text.endIndex
        let verb = text[..<verbEnd].uppercased()
        let limit = verb == "AUTH" ? limits.maxAuthLineBytes : limits.maxCommandLineBytes
        guard lineLength <= limit else { throw .lineTooLong(limit: limit) }
        guard !text.utf8.contains(where: { $0 == UInt8(ascii: "\r") || $0 == UInt8(ascii: "\n") || $0 == 0 }) else {
            throw .bareLineEnding
        }
        let rest = verbEnd == text.endIndex ? Substring() : text[text.utf8.index(after: verbEnd)...]
        let argument = rest.trimmingSpaces()

        switch verb {
        case "EHLO", "HELO":
            guard !argument.isEmpty, !argument.contains(" ") else {
                throw .syntax("\(verb) needs a domain or address literal")
            }
            return verb == "EHLO" ? .ehlo(String(argument)) : .helo(String(argument))
        case "MAIL":
            let (path, parameters) = try parsePathArgument(rest, prefix: "FROM:")
            if path.isEmpty { return .mail(.null, parameters: parameters) }
            return .mail(.mailbox(try Mailbox.parse(path)), parameters: parameters)
        case "RCPT":
            let (path, parameters) = try parsePathArgument(rest, prefix: "TO:")
            if path.lowercased() == "postmaster" { return .rcpt(.postmaster, parameters: parameters) }
            guard !path.isEmpty else { throw .syntax("RCPT TO needs a mailbox, <> is not one") }
            return .rcpt(.mailbox(try Mailbox.parse(path)), parameters: parameters)
        case "DATA":
            try noArgument(verb, argument)
            return .data
        case "BDAT":
            let parts = argument.split(separator: " ")
            guard (1...2).contains(parts.count), parts[0].allSatisfy(\.isASCIIDigit), parts[0].count <= 18,
                let size = Int(parts[0])
            else { throw .syntax("BDAT needs a chunk size: BDAT <size> [LAST]") }
            if parts.count == 2 {
                guard parts[1].uppercased() == "LAST" else { throw .syntax("BDAT's second argument can only be LAST") }
            }
            return .bdat(size: size, last: parts.count == 2)
        case "RSET":
            try noArgument(verb, argument)
            return .rset
        case "NOOP":
            return .noop(argument.isEmpty ? nil : String(argument))
        case "QUIT":
            try noArgument(verb, argument)
            return .quit
        case "VRFY", "EXPN":
            guard !argument.isEmpty else { throw .syntax("\(verb) needs an argument") }
            return verb == "VRFY" ? .vrfy(String(argument)) : .expn(String(argument))
        case "HELP":
            return .help(argument.isEmpty ? nil : String(argument))
        case "STARTTLS":
            try noArgument(verb, argument)
            return .starttls
        case "AUTH":
            let parts = argument.split(separator: " ")
            guard (1...2).contains(parts.count) else { throw .syntax("AUTH needs a mechanism: AUTH <mechanism> [initial-response]") }
            let mechanism = parts[0].uppercased()
            guard mechanism.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == "_") }) else {
                throw .syntax("invalid SASL mechanism name")
            }
            return .auth(mechanism: mechanism, initialResponse: parts.count == 2 ? String(parts[1]) : nil)
        default:
            throw .unrecognizedCommand(String(text[..<verbEnd]))
        }
    }

    private static func noArgument(_ verb: String, _ argument: Substring) throws(SMTPParseError) {
        guard argument.isEmpty else { throw .syntax("\(verb) takes no argument") }
    }

    /// Splits `FROM:<path> params` into the path's inside (source route removed) and its parameters.
    ///
    /// Lenient where real clients are sloppy: spaces after the colon, and a path without angle
    /// brackets when it holds no spaces.
    private static func parsePathArgument(_ rest: Substring, prefix: String) throws(SMTPParseError) -> (Substring, [ESMTPParameter]) {
        let verb = prefix == "FROM:" ? "MAIL" : "RCPT"
        guard rest.count >= prefix.count, rest.prefix(prefix.count).uppercased() == prefix else {
            throw .syntax("expected \(verb) \(prefix)<address>")
        }
        var remainder = rest.dropFirst(prefix.count)
        while remainder.utf8.first == UInt8(ascii: " ") { remainder = remainder.dropFirst() }
        var path: Substring
        if remainder.utf8.first == UInt8(ascii: "<") {
            guard let close = closingBracket(remainder) else { throw .syntax("unterminated path: missing >") }
            path = remainder[remainder.index(after: remainder.startIndex)..<close]
            remainder = remainder[remainder.index(after: close)...]
            guard remainder.isEmpty || remainder.first == " " else { throw .syntax("expected a space after the path") }
        } else {
            let end = remainder.utf8.firstIndex(of: UInt8(ascii: " ")) ?? remainder.endIndex
            path = remainder[..<end]
            remainder = remainder[end...]
            guard !path.isEmpty else { throw .syntax("expected \(verb) \(prefix)<address>") }
        }
        // A source route "@a,@b:" is accepted and ignored (RFC 5321 §4.1.2, Appendix C).
        if path.utf8.first == UInt8(ascii: "@"), let colon = path.utf8.firstIndex(of: UInt8(ascii: ":")) {
            path = path[path.index(after: colon)...]
        }
        var parameters: [ESMTPParameter] = []
        for token in remainder.split(separator: " ", omittingEmptySubsequences: true) where !token.isEmpty {
            parameters.append(try ESMTPParameter.parse(token))
        }
        return (path, parameters)
    }

    /// The `>` that closes a path opened at `text.startIndex`, skipping quoted strings.
    private static func closingBracket(_ text: Substring) -> Substring.Index? {
        var quoted = false
        var escaped = false
        let bytes = text.utf8
        var index = bytes.index(after: bytes.startIndex)
        while index < bytes.endIndex {
            let byte = bytes[index]
            if escaped {
                escaped = false
            } else if quoted && byte == UInt8(ascii: "\\") {
                escaped = true
            } else if byte == UInt8(ascii: "\"") {
                quoted.toggle()
            } else if byte == UInt8(ascii: ">") && !quoted {
                return index
            }
            index = bytes.index(after: index)
        }
        return nil
    }
}

extension Substring {
    func trimmingSpaces() -> Substring {
        let isSpace: (Character) -> Bool = { $0 == " " || $0 == "\t" }
        guard let first = firstIndex(where: { !isSpace($0) }), let last = lastIndex(where: { !isSpace($0) }) else {
            return Substring()
        }
        return self[first...last]
    }
}
