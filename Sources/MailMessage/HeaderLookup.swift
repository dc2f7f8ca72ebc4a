#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// A fast, allocation-light look at a message's header section, for the few fields the
/// sink needs at capture time (the trace id). The full RFC 5322 / MIME parse lives elsewhere.
public enum HeaderLookup {
    /// The unfolded, trimmed value of the first header field called `name` (case-insensitive)
    /// in the header section of `message` (which ends at the first empty line).
    public static func firstValue(named name: String, in message: UnsafeRawBufferPointer) -> String? {
        firstValue(named: Array(name.lowercased().utf8), in: message)
    }

    /// As `firstValue(named:in:)`, for a name given as lowercase ASCII bytes; nothing but the
    /// value is allocated.
    public static func firstValue(named name: [UInt8], in message: UnsafeRawBufferPointer) -> String? {
        var found: String?
        forEachField(in: message) { start, contentEnd, lineEnd in
            guard isField(name, at: start, contentEnd: contentEnd, in: message) else { return true }
            found = value(from: start + name.count + 1, to: contentEnd, lineEnd: lineEnd, in: message)
            return false
        }
        return found
    }

    /// The first value of each of `names` (lowercase ASCII bytes), unfolded and trimmed of
    /// spaces and tabs, in one pass over the header section; nil for a name it lacks.
    public static func firstValues(named names: [[UInt8]], in message: UnsafeRawBufferPointer) -> [String?] {
        var values = [String?](repeating: nil, count: names.count)
        firstValues(named: names, in: message) { index, value in values[index] = value }
        return values
    }

    /// `found(index, value)` for the first value of each of `names` (at most 64; lowercase ASCII
    /// bytes) the header section has, in one pass over it, in the order the fields come. No
    /// array is made for the results (the sink reads a message's fields with this at every
    /// message's end: a `malloc` fewer each).
    public static func firstValues(named names: [[UInt8]], in message: UnsafeRawBufferPointer, _ found: (Int, String) -> Void) {
        precondition(names.count <= 64, "at most 64 names")
        var seen: UInt64 = 0
        var remaining = names.count
        guard remaining > 0 else { return }
        forEachField(in: message) { start, contentEnd, lineEnd in
            for (index, wanted) in names.enumerated() where seen & (1 << UInt64(index)) == 0 {
                guard isField(wanted, at: start, contentEnd: contentEnd, in: message) else { continue }
                found(index, value(from: start + wanted.count + 1, to: contentEnd, lineEnd: lineEnd, in: message))
                seen |= 1 << UInt64(index)
                remaining -= 1
                break
            }
            return remaining > 0
        }
    }

    /// The value of every header field called `name` (lowercase ASCII bytes), in order, each
    /// unfolded and trimmed as `firstValues` does; empty when there is none.
    public static func allValues(named name: [UInt8], in message: UnsafeRawBufferPointer) -> [String] {
        var values: [String] = []
        forEachField(in: message) { start, contentEnd, lineEnd in
            if isField(name, at: start, contentEnd: contentEnd, in: message) {
                values.append(value(from: start + name.count + 1, to: contentEnd, lineEnd: lineEnd, in: message))
            }
            return true
        }
        return values
    }

    /// `body(start, contentEnd, lineEnd)` for each line of the header section (its first byte,
    /// the end of its text before any CR, its LF or the end), until `body` says false or the
    /// header section ends at an empty line.
    private static func forEachField(in message: UnsafeRawBufferPointer, _ body: (Int, Int, Int) -> Bool) {
        let count = message.count
        var lineStart = 0
        while lineStart < count {
            let lineEnd = Self.lineEnd(from: lineStart, in: message)
            let contentEnd = lineEnd > lineStart && message[lineEnd - 1] == UInt8(ascii: "\r") ? lineEnd - 1 : lineEnd
            if contentEnd == lineStart { return }  // end of the header section
            guard body(lineStart, contentEnd, lineEnd) else { return }
            lineStart = lineEnd + 1
        }
    }

    /// Whether the line at `start` is a field called `name` (a colon right after the name).
    private static func isField(_ name: [UInt8], at start: Int, contentEnd: Int, in message: UnsafeRawBufferPointer) -> Bool {
        contentEnd - start > name.count && message[start + name.count] == UInt8(ascii: ":") && Self.matches(name, message, at: start)
    }

    /// A header's value from `start` to `end` on its first line, with its continuation lines
    /// unfolded (RFC 5322 §2.2.3), spaces and tabs trimmed from both ends.
    private static func value(from start: Int, to end: Int, lineEnd: Int, in message: UnsafeRawBufferPointer) -> String {
        let count = message.count
        func blank(_ byte: UInt8) -> Bool { byte == UInt8(ascii: " ") || byte == UInt8(ascii: "\t") }
        let folded = lineEnd + 1 < count && blank(message[lineEnd + 1])
        if !folded {
            // One line: the string made from the bytes where they are (no array between).
            var first = start
            var last = end
            while first < last, blank(message[first]) { first += 1 }
            while last > first, blank(message[last - 1]) { last -= 1 }
            return String(decoding: UnsafeRawBufferPointer(rebasing: message[first..<last]), as: UTF8.self)
        }
        var value = [UInt8](UnsafeRawBufferPointer(rebasing: message[start..<end]))
        var next = lineEnd + 1
        while next < count, message[next] == UInt8(ascii: " ") || message[next] == UInt8(ascii: "\t") {
            let stop = Self.lineEnd(from: next, in: message)
            let contentStop = stop > next && message[stop - 1] == UInt8(ascii: "\r") ? stop - 1 : stop
            value.append(contentsOf: UnsafeRawBufferPointer(rebasing: message[next..<contentStop]))
            next = stop + 1
        }
        var first = 0
        var last = value.count
        while first < last, blank(value[first]) { first += 1 }
        while last > first, blank(value[last - 1]) { last -= 1 }
        return String(decoding: value[first..<last], as: UTF8.self)
    }

    /// The index of the first LF at or after `start`, or the end (`memchr`: a byte-at-a-time
    /// loop here was most of the lookups' cost).
    private static func lineEnd(from start: Int, in message: UnsafeRawBufferPointer) -> Int {
        guard start < message.count, let base = message.baseAddress else { return message.count }
        guard let found = memchr(base + start, Int32(UInt8(ascii: "\n")), message.count - start) else { return message.count }
        return UnsafeRawPointer(found) - base
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
