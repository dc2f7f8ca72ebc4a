/// Assembles reply lines, as a client reads them, into `SMTPReply` values (RFC 5321 §4.2.1).
///
/// Feed it one line at a time, without the CRLF. `parseEnhanced` splits a leading
/// `x.y.z` off each line when the server announced ENHANCEDSTATUSCODES.
public struct SMTPReplyParser: Sendable {
    public var parseEnhanced: Bool
    private var code: ReplyCode?
    private var enhanced: EnhancedStatusCode?
    private var lines: [String] = []

    public init(parseEnhanced: Bool = true) {
        self.parseEnhanced = parseEnhanced
    }

    /// Returns the complete reply when `line` is its last line, `nil` while more lines follow.
    public mutating func feed(line: String) throws(SMTPParseError) -> SMTPReply? {
        let bytes = Array(line.utf8)
        guard bytes.count >= 3,
            bytes[0...2].allSatisfy({ (UInt8(ascii: "0")...UInt8(ascii: "9")).contains($0) }),
            let value = Int(String(decoding: bytes[0...2], as: UTF8.self)),
            (200...599).contains(value)
        else { throw .syntax("reply line must start with a three-digit code: \(line.prefix(40))") }
        let separator = bytes.count > 3 ? bytes[3] : UInt8(ascii: " ")
        guard separator == UInt8(ascii: " ") || separator == UInt8(ascii: "-") else {
            throw .syntax("reply code must be followed by a space or a hyphen: \(line.prefix(40))")
        }
        let code = ReplyCode(rawValue: value)
        if let current = self.code, current != code {
            throw .syntax("reply code changed within a multi-line reply: \(current) then \(code)")
        }
        self.code = code
        var text = bytes.count > 4 ? String(decoding: bytes[4...], as: UTF8.self) : ""
        if parseEnhanced, let space = text.firstIndex(of: " ") ?? (text.isEmpty ? nil : text.endIndex),
            let status = EnhancedStatusCode(text[..<space])
        {
            enhanced = enhanced ?? status
            text = space == text.endIndex ? "" : String(text[text.index(after: space)...])
        }
        lines.append(text)
        guard separator == UInt8(ascii: " ") else { return nil }
        defer { self = SMTPReplyParser(parseEnhanced: parseEnhanced) }
        return SMTPReply(code: code, enhanced: enhanced, lines: lines)
    }
}
