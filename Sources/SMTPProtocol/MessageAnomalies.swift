import NIOCore

/// Irregularities in received message bytes: the raw material of SMTP smuggling and of
/// broken senders. Recorded, never silently repaired.
public struct MessageAnomalies: OptionSet, Hashable, Sendable {
    public var rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }

    /// An LF not preceded by CR (RFC 5321 §2.3.8 allows only CRLF).
    public static let bareLF = MessageAnomalies(rawValue: 1 << 0)
    /// A CR not followed by LF.
    public static let bareCR = MessageAnomalies(rawValue: 1 << 1)
    /// A line over `SMTPLimits.maxTextLineBytes` octets, CRLF excluded (RFC 5322 §2.1.1).
    public static let longLine = MessageAnomalies(rawValue: 1 << 2)
    /// Octets over 127 in a message not sent with BODY=8BITMIME (RFC 6152 §3).
    public static let eightBitWithoutDeclaration = MessageAnomalies(rawValue: 1 << 3)
    /// A NUL octet (RFC 5322 §2.2 forbids it in headers and RFC 5321 in text).
    public static let nul = MessageAnomalies(rawValue: 1 << 4)

    /// Stable names, as recorded in capture metadata.
    public var names: [String] {
        var names: [String] = []
        if contains(.bareLF) { names.append("bare-lf") }
        if contains(.bareCR) { names.append("bare-cr") }
        if contains(.longLine) { names.append("long-line") }
        if contains(.eightBitWithoutDeclaration) { names.append("8bit-without-8bitmime") }
        if contains(.nul) { names.append("nul") }
        return names
    }

    /// Scans a whole message. `eightBitDeclared` is true when the client sent BODY=8BITMIME
    /// (or SMTPUTF8, which implies it).
    public static func scan(_ message: ByteBuffer, maxLineBytes: Int = 998, eightBitDeclared: Bool) -> MessageAnomalies {
        message.withUnsafeReadableBytes { bytes in
            var found: MessageAnomalies = []
            let count = bytes.count
            // Line ends: every LF must follow a CR; every CR must precede an LF.
            var lineStart = 0
            var index = 0
            while let lf = SMTPFrameDecoder.find(UInt8(ascii: "\n"), in: bytes, from: index) {
                let crlf = lf > 0 && bytes[lf - 1] == UInt8(ascii: "\r")
                if !crlf { found.insert(.bareLF) }
                if lf - lineStart - (crlf ? 1 : 0) > maxLineBytes { found.insert(.longLine) }
                lineStart = lf + 1
                index = lf + 1
            }
            if count - lineStart > maxLineBytes { found.insert(.longLine) }
            index = 0
            while let cr = SMTPFrameDecoder.find(UInt8(ascii: "\r"), in: bytes, from: index) {
                if cr + 1 >= count || bytes[cr + 1] != UInt8(ascii: "\n") {
                    found.insert(.bareCR)
                    break
                }
                index = cr + 2
            }
            if SMTPFrameDecoder.find(0, in: bytes, from: 0) != nil { found.insert(.nul) }
            if !eightBitDeclared && Self.hasHighBit(bytes) { found.insert(.eightBitWithoutDeclaration) }
            return found
        }
    }

    private static func hasHighBit(_ bytes: UnsafeRawBufferPointer) -> Bool {
        var index = 0
        let count = bytes.count
        var accumulated: UInt64 = 0
        while index + 8 <= count {
            accumulated |= bytes.loadUnaligned(fromByteOffset: index, as: UInt64.self)
            index += 8
        }
        while index < count {
            accumulated |= UInt64(bytes[index])
            index += 1
        }
        return accumulated & 0x8080_8080_8080_8080 != 0
    }
}
