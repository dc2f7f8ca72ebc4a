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

    /// The subaddress (RFC 5233's "detail"): what follows the first `+` of the local part,
    /// `job42` in `app+job42@example.com`, `job42+fail-451` in `app+job42+fail-451@…`; nil
    /// when there is no `+` or nothing after it. The one plus-tag parser: mailboxes, tags and
    /// plus-tag faults all read it.
    public var detail: Substring? { Self.detail(ofAddress: description) }

    /// The same, for an address held as text (`local@domain`; the last `@` ends the local part).
    /// Bytes, not characters: it runs for every recipient on the way to the `250`.
    // Inlinable: a generic called from another module runs unspecialized otherwise (the audit
    // asks for every recipient of every message).
    @inlinable
    public static func detail(ofAddress address: some StringProtocol) -> Substring? {
        let text = Substring(address)
        let bytes = text.utf8
        let localEnd = bytes.lastIndex(of: UInt8(ascii: "@")) ?? bytes.endIndex
        guard let plus = bytes[..<localEnd].firstIndex(of: UInt8(ascii: "+")) else { return nil }
        let start = bytes.index(after: plus)
        return start < localEnd ? text[start..<localEnd] : nil
    }

    /// True when any character is outside ASCII: such a path needs SMTPUTF8 (RFC 6531 §3.4).
    public var needsSMTPUTF8: Bool { !description.utf8.allSatisfy { $0 < 0x80 } }

    /// Parses `local@domain`, the inside of a path with any source route already removed.
    public static func parse(_ text: Substring) throws(SMTPParseError) -> Mailbox {
        guard let at = Self.splitIndex(text) else {
            throw .syntax("mailbox needs local-part@domain: \(text.prefix(64))")
        }
        let local = text[..<at]
        let domain = text[text.utf8.index(after: at)...]
        guard !local.isEmpty else { throw .syntax("empty local part in \(text.prefix(64))") }
        guard !domain.isEmpty else { throw .syntax("empty domain in \(text.prefix(64))") }
        if local.utf8.first == UInt8(ascii: "\"") {
            guard local.utf8.count >= 2, local.utf8.last == UInt8(ascii: "\"") else { throw .syntax("unterminated quoted local part") }
        } else {
            guard local.utf8.allSatisfy(Self.isAtomOrDot), Self.isDotSeparated(local.utf8) else {
                throw .syntax("invalid local part: \(local.prefix(64))")
            }
        }
        if domain.utf8.first == UInt8(ascii: "[") {
            guard domain.utf8.last == UInt8(ascii: "]"), domain.utf8.count > 2 else { throw .syntax("invalid address literal: \(domain.prefix(64))") }
        } else {
            guard domain.utf8.allSatisfy(Self.isDomainByte), Self.isDotSeparated(domain.utf8) else {
                throw .syntax("invalid domain: \(domain.prefix(64))")
            }
        }
        return Mailbox(localPart: String(local), domain: String(domain))
    }

    /// The `@` that separates local part and domain: the last one outside a quoted string.
    private static func splitIndex(_ text: Substring) -> Substring.Index? {
        var quoted = false
        var escaped = false
        var found: Substring.Index?
        let bytes = text.utf8
        var index = bytes.startIndex
        while index < bytes.endIndex {
            let byte = bytes[index]
            if escaped {
                escaped = false
            } else if quoted && byte == UInt8(ascii: "\\") {
                escaped = true
            } else if byte == UInt8(ascii: "\"") {
                quoted.toggle()
            } else if byte == UInt8(ascii: "@") && !quoted {
                found = index
            }
            index = bytes.index(after: index)
        }
        return found
    }

    /// No leading, trailing or doubled dot.
    static func isDotSeparated(_ bytes: Substring.UTF8View) -> Bool {
        var previousDot = true
        for byte in bytes {
            let dot = byte == UInt8(ascii: ".")
            if dot && previousDot { return false }
            previousDot = dot
        }
        return !previousDot
    }

    /// atext or "." (RFC 5322 §3.2.3), plus any UTF-8 byte of a non-ASCII character (RFC 6531 §3.3).
    static func isAtomOrDot(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"):
            true
        case 0x80...:
            true
        default:
            atextSymbols.contains(byte)
        }
    }

    private static let atextSymbols: Set<UInt8> = Set("!#$%&'*+-/=?^_`{|}~.".utf8)

    /// Letters, digits, hyphen, dot (and underscore, which real hosts use), or UTF-8 of an
    /// internationalized domain name.
    static func isDomainByte(_ byte: UInt8) -> Bool {
        switch byte {
        case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"),
            UInt8(ascii: "-"), UInt8(ascii: "."), UInt8(ascii: "_"), 0x80...:
            true
        default:
            false
        }
    }
}
