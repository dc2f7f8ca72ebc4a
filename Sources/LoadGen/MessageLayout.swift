import MailMessage
import NIOCore
import SMTPProtocol

/// One message's fields, filled: what `MIMEWriter.message` is given, and which of them vary
/// from one message of the template to the next.
struct MessageParts {
    var seq: Int
    var traceID: String
    var messageID: String
    var from = ""
    var recipients: [String] = []
    var headers: [(String, String)] = []
    var headerVaries: [Bool] = []
    var text: String?
    var textVaries = false
    var html: String?
    var htmlVaries = false
    var attachments: [(name: String, type: String, bytes: [UInt8])] = []
    var nameVaries: [Bool] = []
    /// Per attachment, its body already in base64 lines (a PDF's), or nil (its bytes are encoded).
    var encoded: [EncodedBody?] = []
    /// Quoted-printable padding after the text.
    var tail = ""
    var otp: String?
    /// Whether the `…Varies` flags are kept: only when a layout is made, not per message.
    var marking = false

    mutating func header(_ name: String, _ value: String, varies: Bool) {
        headers.append((name, value))
        if marking { headerVaries.append(varies) }
    }

    /// The message as the MIME writer writes it.
    func message() -> [UInt8] {
        MIMEWriter.message(
            headers: headers, text: text, html: html, attachments: attachments, seq: seq, encodedTextTail: tail,
            encodedAttachments: encoded.map { $0?.string })
    }
}

/// An attachment body already in base64 lines: bytes shared by every message (a cached
/// encoding) with `patch` written over them from `at`. Copied into a message once, where a
/// string of it would be copied, checked as UTF-8 and copied again.
struct EncodedBody {
    var shared: [UInt8]
    var at = 0
    var patch: [UInt8] = []

    /// The body's bytes in order: the shared bytes before the patch, the patch, the rest.
    func forEachSegment(_ body: (UnsafeRawBufferPointer) -> Void) {
        shared.withUnsafeBytes { shared in
            guard !patch.isEmpty else { return body(shared) }
            body(UnsafeRawBufferPointer(rebasing: shared[..<at]))
            patch.withUnsafeBytes(body)
            body(UnsafeRawBufferPointer(rebasing: shared[(at + patch.count)...]))
        }
    }

    var string: String {
        var bytes: [UInt8] = []
        bytes.reserveCapacity(shared.count)
        forEachSegment { bytes += $0 }
        return String(decoding: bytes, as: UTF8.self)
    }
}

/// A template's message written once with markers in place of what varies, and cut at the
/// markers: the bytes every message of the template shares, and holes between them. A message
/// is then its holes' values copied between the shared bytes, where the MIME writer would
/// build it again as text (a profile of `swallow load` had rendering at a quarter of its CPU,
/// most of it joining strings that are the same in every message).
struct MessageLayout: Sendable {
    enum Hole: Sendable, Equatable {
        /// A header field's value.
        case header(Int)
        /// The text or HTML body, quoted-printable.
        case text, html
        /// An attachment's `name="…"` or `filename="…"` parameter, whole.
        case name(Int, key: String)
        /// An attachment's base64 body.
        case body(Int)
        /// The sequence number (in the MIME boundaries).
        case seq
    }

    enum Piece: Sendable {
        case bytes([UInt8])
        case hole(Hole)
    }

    let pieces: [Piece]
    let sharedCount: Int

    /// Letters and digits only, so quoted-printable, encoded words and quoted parameters leave
    /// a marker as it is.
    private static let marker = Array("SWALLOWHOLE".utf8)
    /// A sequence number no run reaches, written where the boundaries take it.
    static let markSeq = 7_036_874_417_766_193
    private static let seqMarker = Array(String(markSeq).utf8)

    /// Nil when the message could not be cut (a marker's text in the template itself).
    init?(_ parts: MessageParts) {
        // Parts made without `marking` do not say what varies.
        guard parts.headerVaries.count == parts.headers.count, parts.nameVaries.count == parts.attachments.count else { return nil }
        var marked = parts
        marked.seq = Self.markSeq
        func mark(_ kind: Character, _ index: Int) -> String { "SWALLOWHOLE\(kind)\(index)Q" }
        for index in marked.headers.indices where parts.headerVaries[index] { marked.headers[index].1 = mark("h", index) }
        if parts.textVaries, marked.text != nil { marked.text = mark("t", 0) }
        if parts.htmlVaries, marked.html != nil { marked.html = mark("m", 0) }
        for index in marked.attachments.indices {
            if parts.nameVaries[index] { marked.attachments[index].name = mark("n", index) }
            marked.encoded[index] = EncodedBody(shared: Array(mark("b", index).utf8))
        }
        guard let pieces = Self.cut(marked.message()) else { return nil }
        self.pieces = pieces
        sharedCount = pieces.reduce(0) { count, piece in
            if case .bytes(let bytes) = piece { count + bytes.count } else { count }
        }
    }

    private static func cut(_ bytes: [UInt8]) -> [Piece]? {
        var pieces: [Piece] = []
        var literal: [UInt8] = []
        func starts(_ prefix: [UInt8], at index: Int) -> Bool {
            index + prefix.count <= bytes.count && bytes[index..<index + prefix.count].elementsEqual(prefix)
        }
        func hole(_ hole: Hole) {
            if !literal.isEmpty { pieces.append(.bytes(literal)) }
            literal = []
            pieces.append(.hole(hole))
        }
        var index = 0
        while index < bytes.count {
            if starts(seqMarker, at: index) {
                hole(.seq)
                index += seqMarker.count
                continue
            }
            guard starts(marker, at: index) else {
                literal.append(bytes[index])
                index += 1
                continue
            }
            var next = index + marker.count
            guard next < bytes.count else { return nil }
            let kind = bytes[next]
            next += 1
            var number = 0
            var digits = 0
            while next < bytes.count, (48...57).contains(bytes[next]), digits < 9 {
                number = number * 10 + Int(bytes[next] - 48)
                next += 1
                digits += 1
            }
            guard digits > 0, next < bytes.count, bytes[next] == UInt8(ascii: "Q") else { return nil }
            next += 1
            switch kind {
            case UInt8(ascii: "h"): hole(.header(number))
            case UInt8(ascii: "t"): hole(.text)
            case UInt8(ascii: "m"): hole(.html)
            case UInt8(ascii: "b"): hole(.body(number))
            case UInt8(ascii: "n"):
                // The whole parameter is the hole: a name that is not ASCII is written otherwise.
                guard next < bytes.count, bytes[next] == UInt8(ascii: "\"") else { return nil }
                let key = literal.suffix(10).elementsEqual("filename=\"".utf8) ? "filename" : "name"
                guard literal.count >= key.utf8.count + 2, literal.suffix(key.utf8.count + 2).elementsEqual((key + "=\"").utf8) else {
                    return nil
                }
                literal.removeLast(key.utf8.count + 2)
                next += 1
                hole(.name(number, key: key))
            default: return nil
            }
            index = next
        }
        if !literal.isEmpty { pieces.append(.bytes(literal)) }
        return pieces
    }

    /// The message of these parts: the same bytes as `parts.message()`.
    func message(_ parts: MessageParts) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(sharedCount + parts.encoded.reduce(1024) { $0 + ($1?.shared.count ?? 0) })
        forEachSegment(parts) { out += $0 }
        return out
    }

    /// `message(parts)` dot-stuffed into `buffer` with its final `.` line: the bytes DATA
    /// sends, copied once.
    func writeStuffed(_ parts: MessageParts, to buffer: inout ByteBuffer) {
        var stuffer = DotStuffer()
        forEachSegment(parts) { stuffer.write($0, to: &buffer) }
        stuffer.finish(&buffer)
    }

    /// The message's bytes in order, shared pieces and filled holes.
    private func forEachSegment(_ parts: MessageParts, _ body: (UnsafeRawBufferPointer) -> Void) {
        func text(_ string: String) {
            var string = string
            string.withUTF8 { body(UnsafeRawBufferPointer($0)) }
        }
        for piece in pieces {
            switch piece {
            case .bytes(let bytes): bytes.withUnsafeBytes(body)
            case .hole(.header(let index)): text(parts.headers[index].1)
            case .hole(.text): text(MIMEWriter.quotedPrintable(parts.text ?? ""))
            case .hole(.html): text(MIMEWriter.quotedPrintable(parts.html ?? ""))
            case .hole(.name(let index, let key)): text(MIMEWriter.fileParameter(key, parts.attachments[index].name))
            case .hole(.body(let index)):
                if let encoded = parts.encoded[index] {
                    encoded.forEachSegment(body)
                } else {
                    text(MIMEWriter.base64Lines(parts.attachments[index].bytes))
                }
            case .hole(.seq): text(String(parts.seq))
            }
        }
    }
}
