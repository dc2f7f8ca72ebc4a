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
    public var needsSMTPUTF8: Bool { !localPart.utf8.allSatisfy { $0 < 0x80 } || !domain.utf8.allSatisfy { $0 < 0x80 } }

    /// Parses `local@domain`, the inside of a path with any source route already removed.
    public static func parse(_ text: Substring) throws(SMTPParseError) -> Mailbox {
        var text = text
        return try text.withUTF8 { bytes in
            Result { () throws(SMTPParseError) in try parse(bytes: UnsafeRawBufferPointer(bytes)) }
        }.get()
    }

    /// The same over valid UTF-8 (`SMTPCommand`'s parser hands over the path's bytes).
    static func parse(bytes text: UnsafeRawBufferPointer) throws(SMTPParseError) -> Mailbox {
        func shown(_ bytes: UnsafeRawBufferPointer) -> Substring { String(decoding: bytes, as: UTF8.self).prefix(64) }
        guard let at = Self.splitIndex(text) else {
            throw .syntax("mailbox needs local-part@domain: \(shown(text))")
        }
        let local = UnsafeRawBufferPointer(rebasing: text[..<at])
        let domain = UnsafeRawBufferPointer(rebasing: text[(at + 1)...])
        guard !local.isEmpty else { throw .syntax("empty local part in \(shown(text))") }
        guard !domain.isEmpty else { throw .syntax("empty domain in \(shown(text))") }
        if local.first == UInt8(ascii: "\"") {
            guard local.count >= 2, local.last == UInt8(ascii: "\"") else { throw .syntax("unterminated quoted local part") }
        } else {
            guard local.allSatisfy(Self.isAtomOrDot), Self.isDotSeparated(local) else {
                throw .syntax("invalid local part: \(shown(local))")
            }
        }
        if domain.first == UInt8(ascii: "[") {
            guard domain.last == UInt8(ascii: "]"), domain.count > 2 else { throw .syntax("invalid address literal: \(shown(domain))") }
        } else {
            guard domain.allSatisfy(Self.isDomainByte), Self.isDotSeparated(domain) else {
                throw .syntax("invalid domain: \(shown(domain))")
            }
        }
        return Mailbox(localPart: String(decoding: local, as: UTF8.self), domain: String(decoding: domain, as: UTF8.self))
    }

    /// The `@` that separates local part and domain: the last one outside a quoted string.
    private static func splitIndex(_ bytes: UnsafeRawBufferPointer) -> Int? {
        var quoted = false
        var escaped = false
        var found: Int?
        for (index, byte) in bytes.enumerated() {
            if escaped {
                escaped = false
            } else if quoted && byte == UInt8(ascii: "\\") {
                escaped = true
            } else if byte == UInt8(ascii: "\"") {
                quoted.toggle()
            } else if byte == UInt8(ascii: "@") && !quoted {
                found = index
            }
        }
        return found
    }

    /// No leading, trailing or doubled dot.
    static func isDotSeparated(_ bytes: UnsafeRawBufferPointer) -> Bool {
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
        case UInt8(ascii: "!"), UInt8(ascii: "#"), UInt8(ascii: "$"), UInt8(ascii: "%"), UInt8(ascii: "&"), UInt8(ascii: "'"),
            UInt8(ascii: "*"), UInt8(ascii: "+"), UInt8(ascii: "-"), UInt8(ascii: "/"), UInt8(ascii: "="), UInt8(ascii: "?"),
            UInt8(ascii: "^"), UInt8(ascii: "_"), UInt8(ascii: "`"), UInt8(ascii: "{"), UInt8(ascii: "|"), UInt8(ascii: "}"),
            UInt8(ascii: "~"), UInt8(ascii: "."):
            true
        default:
            false
        }
    }

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
