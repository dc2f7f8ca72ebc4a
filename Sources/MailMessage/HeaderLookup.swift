/// A fast, allocation-light look at a message's header section, for the few fields the
/// sink needs at capture time (the trace id). The full RFC 5322 / MIME parse lives elsewhere.
public enum HeaderLookup {
    /// The unfolded, trimmed value of the first header field called `name` (case-insensitive)
    /// in the header section of `message` (which ends at the first empty line).
    public static func firstValue(named name: String, in message: UnsafeRawBufferPointer) -> String? {
        let wanted = Array(name.lowercased().utf8)
        let count = message.count
        var lineStart = 0
        while lineStart < count {
            var lineEnd = lineStart
            while lineEnd < count && message[lineEnd] != UInt8(ascii: "\n") { lineEnd += 1 }
            let contentEnd = lineEnd > lineStart && message[lineEnd - 1] == UInt8(ascii: "\r") ? lineEnd - 1 : lineEnd
            if contentEnd == lineStart { return nil }  // end of the header section
            if contentEnd - lineStart > wanted.count, message[lineStart + wanted.count] == UInt8(ascii: ":"),
                Self.matches(wanted, message, at: lineStart)
            {
                var value = [UInt8](UnsafeRawBufferPointer(rebasing: message[(lineStart + wanted.count + 1)..<contentEnd]))
                // Unfold continuation lines (RFC 5322 §2.2.3).
                var next = lineEnd + 1
                while next < count, message[next] == UInt8(ascii: " ") || message[next] == UInt8(ascii: "\t") {
                    var end = next
                    while end < count && message[end] != UInt8(ascii: "\n") { end += 1 }
                    let stop = end > next && message[end - 1] == UInt8(ascii: "\r") ? end - 1 : end
                    value.append(contentsOf: UnsafeRawBufferPointer(rebasing: message[next..<stop]))
                    next = end + 1
                }
                let text = String(decoding: value, as: UTF8.self)
                return text.trimmingCharacters(in: " \t")
            }
            lineStart = lineEnd + 1
        }
        return nil
    }

    private static func matches(_ wanted: [UInt8], _ bytes: UnsafeRawBufferPointer, at start: Int) -> Bool {
        for (offset, byte) in wanted.enumerated() {
            var b = bytes[start + offset]
            if b >= UInt8(ascii: "A") && b <= UInt8(ascii: "Z") { b += 32 }
            if b != byte { return false }
        }
        return true
    }
}
