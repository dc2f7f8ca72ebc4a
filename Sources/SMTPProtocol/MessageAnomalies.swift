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
    ///
    /// One pass over all bytes 16 at a time (`ByteCensus`): CRs, LFs and CRLFs counted, NULs
    /// and octets over 127 noticed, and runs of blocks without an LF measured. An LF that does
    /// not end a CRLF, or a CR that does not begin one, makes the counts differ. The lines are
    /// measured one by one (a `memchr` for each LF) only when a run without LF is long enough
    /// to hold a line over the limit. Measured (`perf record`, 200 KiB messages of 80-byte
    /// lines): that `memchr` for every line was about as costly as the census itself.
    public static func scan(_ message: ByteBuffer, maxLineBytes: Int = 998, eightBitDeclared: Bool) -> MessageAnomalies {
        message.withUnsafeReadableBytes { bytes in
            var found: MessageAnomalies = []
            let census = ByteCensus(bytes, maxLineBytes: maxLineBytes)
            if census.lineFeeds != census.crlfs { found.insert(.bareLF) }
            if census.carriageReturns != census.crlfs { found.insert(.bareCR) }
            if census.hasNUL { found.insert(.nul) }
            if !eightBitDeclared && census.hasHighBit { found.insert(.eightBitWithoutDeclaration) }
            if census.mayHaveLongLine && hasLongLine(bytes, maxLineBytes: maxLineBytes) { found.insert(.longLine) }
            return found
        }
    }

    /// Whether a line, CRLF (or a bare LF) excluded, is longer than `maxLineBytes`.
    static func hasLongLine(_ bytes: UnsafeRawBufferPointer, maxLineBytes: Int) -> Bool {
        var lineStart = 0
        while let lf = SMTPFrameDecoder.find(UInt8(ascii: "\n"), in: bytes, from: lineStart) {
            let crlf = lf > 0 && bytes[lf - 1] == UInt8(ascii: "\r")
            if lf - lineStart - (crlf ? 1 : 0) > maxLineBytes { return true }
            lineStart = lf + 1
        }
        return bytes.count - lineStart > maxLineBytes
    }
}

/// What one pass over a message's bytes finds: how many CRs, LFs and CRLFs, whether any NUL,
/// whether any octet over 127, and whether a line may be longer than the limit. Sixteen bytes
/// at a time with SIMD comparisons, the last ones one by one.
struct ByteCensus {
    var carriageReturns = 0
    var lineFeeds = 0
    var crlfs = 0
    var hasNUL = false
    var hasHighBit = false
    /// Some run of bytes without LF is long enough to hold a line over `maxLineBytes`
    /// (conservative: the lines must then be measured).
    var mayHaveLongLine = false

    init(_ bytes: UnsafeRawBufferPointer, maxLineBytes: Int) {
        typealias Lanes = SIMD16<UInt8>
        let count = bytes.count
        let cr = Lanes(repeating: UInt8(ascii: "\r"))
        let lf = Lanes(repeating: UInt8(ascii: "\n"))
        let zero = Lanes(repeating: 0)
        let one = Lanes(repeating: 1)
        // A line over the limit holds at least this many whole blocks without LF, wherever it
        // starts (up to 15 bytes before its first whole block, up to 16 in the bytes read one
        // by one); short limits are always measured.
        let blocksWithoutLF = maxLineBytes >= 64 ? (maxLineBytes - 30) / 16 : 0
        mayHaveLongLine = count > maxLineBytes && blocksWithoutLF == 0
        var run = 0
        var reached = 0
        var index = 0
        var ored = zero
        var nuls = zero
        // Each block is compared with the block one byte on, for its CRLFs: blocks run while
        // that one is whole.
        while index + Lanes.scalarCount < count {
            // Per-lane counts stay below 256: at most 255 blocks before they are added up.
            var crs = zero
            var lfs = zero
            var pairs = zero
            var blocks = 0
            while blocks < 255 && index + Lanes.scalarCount < count {
                let block = bytes.loadUnaligned(fromByteOffset: index, as: Lanes.self)
                let next = bytes.loadUnaligned(fromByteOffset: index + 1, as: Lanes.self)
                ored |= block
                let blockLFs = one.replacing(with: 0, where: block .!= lf)
                crs &+= one.replacing(with: 0, where: block .!= cr)
                lfs &+= blockLFs
                pairs &+= one.replacing(with: 0, where: block .!= cr .| next .!= lf)
                nuls |= one.replacing(with: 0, where: block .!= zero)
                // Whether the block has an LF, as two words (`any` on a mask was a loop over
                // lanes), and no branch on it (one block in five has an LF: mispredicted).
                let halves = unsafeBitCast(blockLFs, to: SIMD2<UInt64>.self)
                let word = halves[0] | halves[1]
                let hasLF = Int(truncatingIfNeeded: (word | (0 &- word)) >> 63)
                run = (run &+ 1) & (hasLF &- 1)
                // All ones once a run reaches the blocks a long line needs.
                reached |= ~((run &- blocksWithoutLF) >> 63)
                index += Lanes.scalarCount
                blocks += 1
            }
            carriageReturns += Int(SIMD16<UInt16>(truncatingIfNeeded: crs).wrappedSum())
            lineFeeds += Int(SIMD16<UInt16>(truncatingIfNeeded: lfs).wrappedSum())
            crlfs += Int(SIMD16<UInt16>(truncatingIfNeeded: pairs).wrappedSum())
        }
        if blocksWithoutLF > 0 && reached != 0 { mayHaveLongLine = true }
        var tailOred: UInt8 = 0
        while index < count {
            let byte = bytes[index]
            tailOred |= byte
            if byte == UInt8(ascii: "\r") {
                carriageReturns += 1
                if index + 1 < count && bytes[index + 1] == UInt8(ascii: "\n") { crlfs += 1 }
            }
            if byte == UInt8(ascii: "\n") { lineFeeds += 1 }
            if byte == 0 { hasNUL = true }
            index += 1
        }
        hasHighBit = (ored.max() | tailOred) & 0x80 != 0
        hasNUL = hasNUL || nuls.max() != 0
    }
}
