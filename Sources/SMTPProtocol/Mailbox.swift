/// A mailbox `local-part@domain` (RFC 5321 §4.1.2).
///
/// The local part is kept as written (a quoted string keeps its quotes); the domain may be a
/// name or an address literal such as `[127.0.0.1]`. With SMTPUTF8 either may hold UTF-8
/// (RFC 6531 §3.3).
public struct Mailbox: Hashable, Sendable, CustomStringConvertible {
    public var localPart: String
    public var domain: String

    public init(localPart: String, domain: String) {
        self.localPart = localPart
        self.domain = domain
    }

    public var description: String { "\(localPart)@\(domain)" }

    /// True when any character is outside ASCII: such a path needs SMTPUTF8 (RFC 6531 §3.4).
    public var needsSMTPUTF8: Bool { !description.utf8.allSatisfy { $0 < 0x80 } }

    /// Parses `local@domain`, the inside of a path with any source route already removed.
    public static func parse(_ text: Substring) throws(SMTPParseError) -> Mailbox {
        guard let at = Self.splitIndex(text) else {
            throw .syntax("mailbox needs local-part@domain: \(text.prefix(64))")
        }
        let local = text[..<at]
        let domain = text[text.index(after: at)...]
        guard !local.isEmpty else { throw .syntax("empty local part in \(text.prefix(64))") }
        guard !domain.isEmpty else { throw .syntax("empty domain in \(text.prefix(64))") }
        if local.first == "\"" {
            guard local.count >= 2, local.last == "\"" else { throw .syntax("unterminated quoted local part") }
        } else {
            guard local.unicodeScalars.allSatisfy(Self.isAtomOrDot), !local.hasPrefix("."), !local.hasSuffix("."),
                  !local.contains("..")
            else { throw .syntax("invalid local part: \(local.prefix(64))") }
        }
        if domain.first == "[" {
            guard domain.last == "]", domain.count > 2 else { throw .syntax("invalid address literal: \(domain.prefix(64))") }
        } else {
            guard domain.unicodeScalars.allSatisfy(Self.isDomainScalar), !domain.hasPrefix("."), !domain.hasSuffix("."),
                  !domain.contains("..")
            else { throw .syntax("invalid domain: \(domain.prefix(64))") }
        }
        return Mailbox(localPart: String(local), domain: String(domain))
    }

    /// The `@` that separates local part and domain: the last one outside a quoted string.
    private static func splitIndex(_ text: Substring) -> Substring.Index? {
        var quoted = false
        var escaped = false
        var found: Substring.Index?
        var index = text.startIndex
        while index < text.endIndex {
            let c = text[index]
            if escaped {
                escaped = false
            } else if quoted && c == "\\" {
                escaped = true
            } else if c == "\"" {
                quoted.toggle()
            } else if c == "@" && !quoted {
                found = index
            }
            index = text.index(after: index)
        }
        return found
    }

    /// atext or "." (RFC 5322 §3.2.3), plus any non-ASCII scalar (RFC 6531 §3.3).
    static func isAtomOrDot(_ s: Unicode.Scalar) -> Bool {
        if s.value >= 0x80 { return true }
        if s.properties.isAlphabetic && s.isASCII { return true }
        if ("0"..."9").contains(s) { return true }
        return "!#$%&'*+-/=?^_`{|}~.".unicodeScalars.contains(s)
    }

    static func isDomainScalar(_ s: Unicode.Scalar) -> Bool {
        if s.value >= 0x80 { return true }
        return ("a"..."z").contains(s) || ("A"..."Z").contains(s) || ("0"..."9").contains(s) || s == "-" || s == "."
            || s == "_"
    }
}
