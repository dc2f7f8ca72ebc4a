import NIOCore

extension SMTPCommand {
    /// Parses one command line, CRLF already removed by the framer.
    ///
    /// Verbs are case-insensitive (RFC 5321 §2.4). A non-AUTH line longer than
    /// `limits.maxCommandLineBytes` (CRLF counted) is `lineTooLong`; AUTH lines may reach
    /// `limits.maxAuthLineBytes` (RFC 4954 §4).
    public static func parse(_ line: ByteBuffer, limits: SMTPLimits = SMTPLimits()) throws(SMTPParseError) -> SMTPCommand {
        try line.withUnsafeReadableBytes { bytes in
            Result { () throws(SMTPParseError) in try parse(bytes: bytes, limits: limits) }
        }.get()
    }

    /// Parses one command line given as text (without CRLF).
    public static func parse(_ text: String, limits: SMTPLimits = SMTPLimits()) throws(SMTPParseError) -> SMTPCommand {
        var text = text
        return try text.withUTF8 { bytes in
            Result { () throws(SMTPParseError) in try parse(bytes: UnsafeRawBufferPointer(bytes), limits: limits) }
        }.get()
    }

    /// The parser, over the line's bytes: offsets, not `String.Index`es, and text made only for
    /// what a command keeps (`Substring` index steps and the line made a `String` first were
    /// ~10% of the sink's user time per 1 KiB message in `perf record`).
    private static func parse(bytes: UnsafeRawBufferPointer, limits: SMTPLimits) throws(SMTPParseError) -> SMTPCommand {
        var high: UInt8 = 0
        var lineEnding = false
        var verbEnd = -1
        for index in bytes.indices {
            let byte = bytes[index]
            high |= byte
            if byte == UInt8(ascii: "\r") || byte == UInt8(ascii: "\n") || byte == 0 { lineEnding = true }
            if verbEnd < 0, byte == UInt8(ascii: " ") { verbEnd = index }
        }
        // Pure ASCII (nearly every line) needs no UTF-8 validation.
        if high >= 0x80, String(validating: bytes, as: UTF8.self) == nil { throw .invalidEncoding }
        if verbEnd < 0 { verbEnd = bytes.count }
        let verb = Verb(UnsafeRawBufferPointer(rebasing: bytes[..<verbEnd]))
        let limit = verb == .auth ? limits.maxAuthLineBytes : limits.maxCommandLineBytes
        guard bytes.count + 2 <= limit else { throw .lineTooLong(limit: limit) }
        guard !lineEnding else { throw .bareLineEnding }
        let rest = UnsafeRawBufferPointer(rebasing: bytes[min(verbEnd + 1, bytes.count)...])

        switch verb {
        case .mail:
            let (path, parameters) = try parsePathArgument(rest, prefix: "FROM:")
            if path.isEmpty { return .mail(.null, parameters: parameters) }
            return .mail(.mailbox(try Mailbox.parse(bytes: path)), parameters: parameters)
        case .rcpt:
            let (path, parameters) = try parsePathArgument(rest, prefix: "TO:")
            if path.count == 10, asciiCaseInsensitivePrefix(path, "POSTMASTER") { return .rcpt(.postmaster, parameters: parameters) }
            guard !path.isEmpty else { throw .syntax("RCPT TO needs a mailbox, <> is not one") }
            return .rcpt(.mailbox(try Mailbox.parse(bytes: path)), parameters: parameters)
        case .data, .rset, .quit, .starttls:
            guard trimmingSpaces(rest).isEmpty else { throw .syntax("\(verb.name) takes no argument") }
            switch verb {
            case .data: return .data
            case .rset: return .rset
            case .quit: return .quit
            default: return .starttls
            }
        case .noop, .help:
            let argument = trimmingSpaces(rest)
            let text = argument.isEmpty ? nil : String(decoding: argument, as: UTF8.self)
            return verb == .noop ? .noop(text) : .help(text)
        case .ehlo, .helo, .vrfy, .expn, .bdat, .auth:
            return try parse(verb, argument: Substring(String(decoding: trimmingSpaces(rest), as: UTF8.self)))
        default:
            throw .unrecognizedCommand(String(decoding: bytes[..<verbEnd], as: UTF8.self))
        }
    }

    /// The verbs whose argument is read as text.
    private static func parse(_ verb: Verb, argument: Substring) throws(SMTPParseError) -> SMTPCommand {
        switch verb {
        case .ehlo, .helo:
            guard !argument.isEmpty, !argument.contains(" ") else {
                throw .syntax("\(verb.name) needs a domain or address literal")
            }
            return verb == .ehlo ? .ehlo(String(argument)) : .helo(String(argument))
        case .vrfy, .expn:
            guard !argument.isEmpty else { throw .syntax("\(verb.name) needs an argument") }
            return verb == .vrfy ? .vrfy(String(argument)) : .expn(String(argument))
        case .bdat:
            let parts = argument.split(separator: " ")
            guard (1...2).contains(parts.count), parts[0].allSatisfy(\.isASCIIDigit), parts[0].count <= 18,
                let size = Int(parts[0])
            else { throw .syntax("BDAT needs a chunk size: BDAT <size> [LAST]") }
            if parts.count == 2 {
                guard parts[1].uppercased() == "LAST" else { throw .syntax("BDAT's second argument can only be LAST") }
            }
            return .bdat(size: size, last: parts.count == 2)
        default:
            let parts = argument.split(separator: " ")
            guard (1...2).contains(parts.count) else { throw .syntax("AUTH needs a mechanism: AUTH <mechanism> [initial-response]") }
            let mechanism = parts[0].uppercased()
            guard mechanism.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-" || $0 == "_") }) else {
                throw .syntax("invalid SASL mechanism name")
            }
            return .auth(mechanism: mechanism, initialResponse: parts.count == 2 ? String(parts[1]) : nil)
        }
    }

    /// A verb of up to eight bytes as one number, ASCII letters in capitals (other bytes kept);
    /// longer verbs are `.unknown`.
    private struct Verb: Equatable {
        let key: UInt64

        init(_ bytes: UnsafeRawBufferPointer) {
            guard bytes.count <= 8, !bytes.isEmpty else {
                key = 0
                return
            }
            var key: UInt64 = 0
            for byte in bytes {
                let upper = byte >= UInt8(ascii: "a") && byte <= UInt8(ascii: "z") ? byte - 32 : byte
                key = key << 8 | UInt64(upper)
            }
            self.key = key
        }

        /// The verbs below are written as their numbers: made from their text (`Verb("MAIL")`), each
        /// was a lazily made global, a `swift_once` call every time the parser compared a line's
        /// verb with it (~1% of the sink's user time with a connection per message).
        init(key: UInt64) { self.key = key }

        /// The verb in capitals.
        var name: String {
            var bytes: [UInt8] = []
            var rest = key
            while rest != 0 {
                bytes.append(UInt8(truncatingIfNeeded: rest))
                rest >>= 8
            }
            return String(decoding: bytes.reversed(), as: UTF8.self)
        }

        static let mail = Verb(key: 0x4D41_494C)  // "MAIL"
        static let rcpt = Verb(key: 0x5243_5054)  // "RCPT"
        static let data = Verb(key: 0x4441_5441)  // "DATA"
        static let rset = Verb(key: 0x5253_4554)  // "RSET"
        static let quit = Verb(key: 0x5155_4954)  // "QUIT"
        static let noop = Verb(key: 0x4E4F_4F50)  // "NOOP"
        static let ehlo = Verb(key: 0x4548_4C4F)  // "EHLO"
        static let helo = Verb(key: 0x4845_4C4F)  // "HELO"
        static let bdat = Verb(key: 0x4244_4154)  // "BDAT"
        static let vrfy = Verb(key: 0x5652_4659)  // "VRFY"
        static let expn = Verb(key: 0x4558_504E)  // "EXPN"
        static let help = Verb(key: 0x4845_4C50)  // "HELP"
        static let auth = Verb(key: 0x4155_5448)  // "AUTH"
        static let starttls = Verb(key: 0x5354_4152_5454_4C53)  // "STARTTLS"
    }

    /// Splits `FROM:<path> params` into the path's inside (source route removed) and its parameters.
    ///
    /// Lenient where real clients are sloppy: spaces after the colon, and a path without angle
    /// brackets when it holds no spaces.
    private static func parsePathArgument(
        _ rest: UnsafeRawBufferPointer, prefix: StaticString
    ) throws(SMTPParseError) -> (UnsafeRawBufferPointer, [ESMTPParameter]) {
        let verb = prefix.utf8Start.pointee == UInt8(ascii: "F") ? "MAIL" : "RCPT"
        guard asciiCaseInsensitivePrefix(rest, prefix) else {
            throw .syntax("expected \(verb) \(prefix)<address>")
        }
        let end = rest.count
        var index = prefix.utf8CodeUnitCount
        while index < end, rest[index] == UInt8(ascii: " ") { index += 1 }
        var path: Range<Int>
        if index < end, rest[index] == UInt8(ascii: "<") {
            guard let close = closingBracket(rest, from: index) else { throw .syntax("unterminated path: missing >") }
            path = index + 1..<close
            index = close + 1
            guard index == end || rest[index] == UInt8(ascii: " ") else { throw .syntax("expected a space after the path") }
        } else {
            let space = rest[index...].firstIndex(of: UInt8(ascii: " ")) ?? end
            path = index..<space
            index = space
            guard !path.isEmpty else { throw .syntax("expected \(verb) \(prefix)<address>") }
        }
        // A source route "@a,@b:" is accepted and ignored (RFC 5321 §4.1.2, Appendix C).
        if !path.isEmpty, rest[path.lowerBound] == UInt8(ascii: "@"), let colon = rest[path].firstIndex(of: UInt8(ascii: ":")) {
            path = colon + 1..<path.upperBound
        }
        var parameters: [ESMTPParameter] = []
        // Space-separated tokens, empty ones skipped.
        while index < end {
            let tokenEnd = rest[index...].firstIndex(of: UInt8(ascii: " ")) ?? end
            if index < tokenEnd {
                parameters.append(try ESMTPParameter.parse(Substring(String(decoding: rest[index..<tokenEnd], as: UTF8.self))))
            }
            index = tokenEnd + 1
        }
        return (UnsafeRawBufferPointer(rebasing: rest[path]), parameters)
    }

    /// Whether `bytes` begin with `prefix` (ASCII capitals), ignoring ASCII case.
    private static func asciiCaseInsensitivePrefix(_ bytes: UnsafeRawBufferPointer, _ prefix: StaticString) -> Bool {
        let expected = UnsafeRawBufferPointer(start: prefix.utf8Start, count: prefix.utf8CodeUnitCount)
        guard bytes.count >= expected.count else { return false }
        for (index, byte) in expected.enumerated() {
            let actual = bytes[index]
            guard actual == byte || (byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z") && actual == byte + 32) else { return false }
        }
        return true
    }

    /// The `>` that closes the path opened at `open`, skipping quoted strings.
    private static func closingBracket(_ bytes: UnsafeRawBufferPointer, from open: Int) -> Int? {
        var quoted = false
        var escaped = false
        for index in open + 1..<bytes.count {
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
        }
        return nil
    }

    /// `bytes` without leading and trailing spaces and tabs.
    private static func trimmingSpaces(_ bytes: UnsafeRawBufferPointer) -> UnsafeRawBufferPointer {
        let isSpace: (UInt8) -> Bool = { $0 == UInt8(ascii: " ") || $0 == UInt8(ascii: "\t") }
        guard let first = bytes.firstIndex(where: { !isSpace($0) }), let last = bytes.lastIndex(where: { !isSpace($0) }) else {
            return UnsafeRawBufferPointer(start: nil, count: 0)
        }
        return UnsafeRawBufferPointer(rebasing: bytes[first...last])
    }
}
