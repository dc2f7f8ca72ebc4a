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
        // Bytes, not characters, throughout: `Character` steps (grapheme breaking) and Unicode
        // case mapping were ~7% of the sink's CPU per 1 KiB message (`perf record`).
        let verbEnd = text.utf8.firstIndex(of: UInt8(ascii: " ")) ?? text.endIndex
        let verb = asciiUppercased(text[..<verbEnd])
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
            if asciiCaseInsensitivePrefix(path.utf8, "POSTMASTER"), path.utf8.count == 10 { return .rcpt(.postmaster, parameters: parameters) }
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
    private static func parsePathArgument(_ rest: Substring, prefix: StaticString) throws(SMTPParseError) -> (Substring, [ESMTPParameter]) {
        let verb = prefix.utf8Start.pointee == UInt8(ascii: "F") ? "MAIL" : "RCPT"
        guard asciiCaseInsensitivePrefix(rest.utf8, prefix) else {
            throw .syntax("expected \(verb) \(prefix)<address>")
        }
        var remainder = rest[rest.utf8.index(rest.utf8.startIndex, offsetBy: prefix.utf8CodeUnitCount)...]
        remainder = remainder[(remainder.utf8.firstIndex { $0 != UInt8(ascii: " ") } ?? remainder.endIndex)...]
        var path: Substring
        if remainder.utf8.first == UInt8(ascii: "<") {
            guard let close = closingBracket(remainder) else { throw .syntax("unterminated path: missing >") }
            path = remainder[remainder.utf8.index(after: remainder.startIndex)..<close]
            remainder = remainder[remainder.utf8.index(after: close)...]
            guard remainder.isEmpty || remainder.utf8.first == UInt8(ascii: " ") else { throw .syntax("expected a space after the path") }
        } else {
            let end = remainder.utf8.firstIndex(of: UInt8(ascii: " ")) ?? remainder.endIndex
            path = remainder[..<end]
            remainder = remainder[end...]
            guard !path.isEmpty else { throw .syntax("expected \(verb) \(prefix)<address>") }
        }
        // A source route "@a,@b:" is accepted and ignored (RFC 5321 §4.1.2, Appendix C).
        if path.utf8.first == UInt8(ascii: "@"), let colon = path.utf8.firstIndex(of: UInt8(ascii: ":")) {
            path = path[path.utf8.index(after: colon)...]
        }
        var parameters: [ESMTPParameter] = []
        // Space-separated tokens, empty ones skipped.
        var start = remainder.startIndex
        while start < remainder.endIndex {
            let end = remainder.utf8[start...].firstIndex(of: UInt8(ascii: " ")) ?? remainder.endIndex
            if start < end { parameters.append(try ESMTPParameter.parse(remainder[start..<end])) }
            start = end < remainder.endIndex ? remainder.utf8.index(after: end) : end
        }
        return (path, parameters)
    }

    /// A verb in ASCII capitals (other bytes kept): a short string, made without Unicode case
    /// mapping.
    private static func asciiUppercased(_ text: Substring) -> String {
        let bytes = text.utf8
        guard bytes.contains(where: { $0 >= UInt8(ascii: "a") && $0 <= UInt8(ascii: "z") }) else { return String(text) }
        return String(decoding: bytes.map { $0 >= UInt8(ascii: "a") && $0 <= UInt8(ascii: "z") ? $0 - 32 : $0 }, as: UTF8.self)
    }

    /// Whether `bytes` begin with `prefix` (ASCII capitals), ignoring ASCII case.
    private static func asciiCaseInsensitivePrefix(_ bytes: Substring.UTF8View, _ prefix: StaticString) -> Bool {
        let expected = UnsafeBufferPointer(start: prefix.utf8Start, count: prefix.utf8CodeUnitCount)
        guard bytes.count >= expected.count else { return false }
        var index = bytes.startIndex
        for byte in expected {
            let actual = bytes[index]
            guard actual == byte || (byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z") && actual == byte + 32) else { return false }
            index = bytes.index(after: index)
        }
        return true
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
        let isSpace: (UInt8) -> Bool = { $0 == UInt8(ascii: " ") || $0 == UInt8(ascii: "\t") }
        guard let first = utf8.firstIndex(where: { !isSpace($0) }), let last = utf8.lastIndex(where: { !isSpace($0) }) else {
            return Substring()
        }
        return self[first..<utf8.index(after: last)]
    }
}
