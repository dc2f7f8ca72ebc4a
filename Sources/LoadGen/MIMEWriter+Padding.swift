import MailMessage
import Synchronization

// Filler text for templates that ask for a message size: the load generator's own addition
// to the MIME writer.
private let paddingCache = Mutex<[Int: String]>([:])
private let encodedPaddingCache = Mutex<[Int: String]>([:])

extension MIMEWriter {
    /// About `bytes` of plain filler text, in lines of 64 characters (cached: a template pads
    /// every message by about the same amount).
    static func padding(_ bytes: Int) -> String {
        if let cached = paddingCache.withLock({ $0[bytes] }) { return cached }
        let text = makePadding(bytes)
        paddingCache.withLock { cache in
            if cache.count > 1024 { cache.removeAll() }
            cache[bytes] = text
        }
        return text
    }

    /// `padding(bytes)` as quoted-printable (cached too); it begins with a line break, so it
    /// can follow any encoded text (`message(…, encodedTextTail:)`).
    static func encodedPadding(_ bytes: Int) -> String {
        if let cached = encodedPaddingCache.withLock({ $0[bytes] }) { return cached }
        let text = quotedPrintable(padding(bytes))
        encodedPaddingCache.withLock { cache in
            if cache.count > 1024 { cache.removeAll() }
            cache[bytes] = text
        }
        return text
    }

    private static func makePadding(_ bytes: Int) -> String {
        let line = "The quick brown fox jumps over the lazy dog, swallow load filler."
        var out = "\n"
        var left = bytes
        while left > 0 {
            let piece = left >= line.count + 2 ? line : String(line.prefix(max(0, left - 2)))
            out += piece + "\n"
            left -= piece.count + 2
        }
        return out
    }
}
