/// One `keyword[=value]` parameter of MAIL FROM or RCPT TO (RFC 5321 §4.1.2 `esmtp-param`).
public struct ESMTPParameter: Hashable, Sendable, CustomStringConvertible {
    /// Upper-cased: keywords are case-insensitive.
    public var keyword: String
    public var value: String?

    public init(_ keyword: String, _ value: String? = nil) {
        self.keyword = keyword.uppercased()
        self.value = value
    }

    public var description: String { value.map { "\(keyword)=\($0)" } ?? keyword }

    /// Parses one space-free parameter token.
    public static func parse(_ token: Substring) throws(SMTPParseError) -> ESMTPParameter {
        let keyword: Substring
        let value: Substring?
        if let eq = token.firstIndex(of: "=") {
            keyword = token[..<eq]
            value = token[token.index(after: eq)...]
        } else {
            keyword = token
            value = nil
        }
        func isAlphanumeric(_ byte: UInt8) -> Bool {
            (UInt8(ascii: "a")...UInt8(ascii: "z")).contains(byte) || (UInt8(ascii: "A")...UInt8(ascii: "Z")).contains(byte)
                || (UInt8(ascii: "0")...UInt8(ascii: "9")).contains(byte)
        }
        guard let first = keyword.utf8.first, isAlphanumeric(first),
            keyword.utf8.allSatisfy({ isAlphanumeric($0) || $0 == UInt8(ascii: "-") })
        else { throw .syntax("invalid parameter keyword: \(token.prefix(40))") }
        if let value {
            // esmtp-value: %d33-60 / %d62-126, and UTF-8 under SMTPUTF8 (RFC 6531 §3.3).
            guard !value.isEmpty, value.unicodeScalars.allSatisfy({ $0.value >= 33 && $0 != "=" && $0.value != 127 }) else {
                throw .syntax("invalid value for \(keyword.uppercased())")
            }
        }
        return ESMTPParameter(String(keyword), value.map(String.init))
    }
}

extension Array where Element == ESMTPParameter {
    /// The value of the first parameter named `keyword`, `""` when it has no value, nil when absent.
    public subscript(keyword keyword: String) -> String? {
        guard let parameter = first(where: { $0.keyword == keyword }) else { return nil }
        return parameter.value ?? ""
    }

    /// `SIZE=n` (RFC 1870 §4).
    public var declaredSize: Int? { self[keyword: "SIZE"].flatMap { Int($0) } }
    /// `BODY=7BIT|8BITMIME` (RFC 6152 §2).
    public var body: String? { self[keyword: "BODY"]?.uppercased() }
    /// `SMTPUTF8` (RFC 6531 §3.4).
    public var smtpUTF8: Bool { self[keyword: "SMTPUTF8"] != nil }
}
