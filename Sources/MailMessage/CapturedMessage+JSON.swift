import Foundation

extension CapturedMessage {
    /// The message's metadata as compact JSON, with the keys and shapes its `Codable`
    /// conformance reads (nil optionals left out), written directly: Foundation's
    /// `JSONEncoder` builds a tree of values first and cost several times as much per message
    /// on the path to the `250`. A message with a transcript (rare: `--transcripts`) goes
    /// through `JSONEncoder`, as does one with relay hops.
    public func jsonData() throws -> Data {
        var out = JSONWriter()
        guard writeJSON(into: &out) else { return try JSONEncoder().encode(self) }
        return Data(out.bytes)
    }

    /// Appends what `jsonData()` returns to `out`, for a caller that writes many messages'
    /// lines into one buffer; false, with nothing written, for a message that goes through
    /// `JSONEncoder` (a transcript or relay hops).
    public func writeJSON(into out: inout JSONWriter) -> Bool {
        if transcript != nil || relay != nil { return false }
        // Flat calls, not nested closures: with `--fsync batch` this runs on the event loop
        // for every message, and the sink took 20 000 messages 1.7% faster so (5 runs each;
        // 5.8% faster with no metadata written at all, the bound of what this can win).
        out.beginObject()
        out.member("id", id)
        out.key("envelope")
        out.beginObject()
        out.member("mailFrom", envelope.mailFrom)
        out.key("mailParameters")
        out.dictionary(envelope.mailParameters)
        out.key("recipients")
        out.beginArray()
        for recipient in envelope.recipients {
            out.element()
            out.beginObject()
            out.member("address", recipient.address)
            out.key("parameters")
            out.dictionary(recipient.parameters)
            out.endObject()
        }
        out.endArray()
        out.endObject()
        out.key("session")
        out.beginObject()
        out.member("id", session.id)
        out.member("remoteAddress", session.remoteAddress)
        out.member("localAddress", session.localAddress)
        out.member("helo", session.helo)
        out.member("esmtp", session.esmtp)
        if let tls = session.tls {
            out.key("tls")
            out.beginObject()
            out.member("version", tls.version)
            if let cipher = tls.cipher {
                out.member("cipher", cipher)
            }
            out.member("implicit", tls.implicit)
            out.endObject()
        }
        if let user = session.authUser {
            out.member("authUser", user)
        }
        out.endObject()
        out.key("timestamps")
        out.beginObject()
        out.member("connectedNanos", timestamps.connectedNanos)
        out.member("mailNanos", timestamps.mailNanos)
        out.member("dataStartNanos", timestamps.dataStartNanos)
        out.member("dataEndNanos", timestamps.dataEndNanos)
        if let sent = timestamps.replySentNanos {
            out.member("replySentNanos", sent)
        }
        out.endObject()
        out.member("size", Int64(size))
        out.member("receivedHeaderLength", Int64(receivedHeaderLength))
        out.member("anomalies", anomalies)
        out.member("faults", faults)
        if let traceID {
            out.member("traceID", traceID)
        }
        out.member("bodyStored", bodyStored)
        out.endObject()
        return true
    }
}

/// A minimal JSON writer: objects, arrays, escaped strings, integers, booleans. Public for the
/// sink's own JSON lines (`attempts.jsonl`), which are written on the same hot paths.
public struct JSONWriter {
    public internal(set) var bytes: [UInt8] = []
    var needsComma = false

    public init(capacity: Int = 768) { bytes.reserveCapacity(capacity) }

    /// Writes into `buffer`'s memory (emptied first): a writer that runs often keeps one.
    public init(reusing buffer: [UInt8], capacity: Int) {
        bytes = buffer
        bytes.removeAll(keepingCapacity: true)
        bytes.reserveCapacity(capacity)
    }

    /// Appends bytes that are JSON already (a value another encoder wrote).
    public mutating func verbatim(_ json: some Collection<UInt8>) {
        bytes.append(contentsOf: json)
        needsComma = true
    }

    public mutating func object(_ body: (inout JSONWriter) -> Void) {
        beginObject()
        body(&self)
        endObject()
    }

    public mutating func array<T>(_ items: [T], _ write: (inout JSONWriter, T) -> Void) {
        beginArray()
        for item in items {
            element()
            write(&self, item)
            needsComma = true
        }
        endArray()
    }

    public mutating func field(_ name: String, _ value: (inout JSONWriter) -> Void) {
        if needsComma { bytes.append(UInt8(ascii: ",")) }
        string(name)
        bytes.append(UInt8(ascii: ":"))
        needsComma = false
        value(&self)
        needsComma = true
    }

    // The flat form, for the hottest writer (`CapturedMessage.writeJSON`): a value follows
    // each `key`; `element` comes before each value of an array.

    /// A field's name, a literal that needs no escaping (plain ASCII, no quote or backslash):
    /// copied as it is, not scanned. Its value is written next.
    public mutating func key(_ name: StaticString) {
        if needsComma { bytes.append(UInt8(ascii: ",")) }
        bytes.append(UInt8(ascii: "\""))
        bytes.append(contentsOf: UnsafeBufferPointer(start: name.utf8Start, count: name.utf8CodeUnitCount))
        bytes.append(UInt8(ascii: "\""))
        bytes.append(UInt8(ascii: ":"))
        needsComma = false
    }

    /// Before each value of an array (`beginArray`).
    public mutating func element() {
        if needsComma { bytes.append(UInt8(ascii: ",")) }
        needsComma = false
    }

    public mutating func beginObject() { open(UInt8(ascii: "{")) }
    public mutating func endObject() { close(UInt8(ascii: "}")) }
    public mutating func beginArray() { open(UInt8(ascii: "[")) }
    public mutating func endArray() { close(UInt8(ascii: "]")) }

    private mutating func open(_ bracket: UInt8) {
        bytes.append(bracket)
        needsComma = false
    }

    private mutating func close(_ bracket: UInt8) {
        bytes.append(bracket)
        needsComma = true
    }

    /// `key` and its value, in one call.
    public mutating func member(_ name: StaticString, _ value: String) {
        key(name)
        string(value)
    }

    public mutating func member(_ name: StaticString, _ value: Int64) {
        key(name)
        number(value)
    }

    public mutating func member(_ name: StaticString, _ value: Bool) {
        key(name)
        bool(value)
    }

    public mutating func member(_ name: StaticString, _ values: [String]) {
        key(name)
        strings(values)
    }

    /// An array of strings.
    public mutating func strings(_ values: [String]) {
        beginArray()
        for value in values {
            element()
            string(value)
        }
        endArray()
    }

    public mutating func dictionary(_ values: [String: String]) {
        if values.isEmpty {
            bytes.append(contentsOf: "{}".utf8)
            needsComma = true
            return
        }
        object {
            for (key, value) in values.sorted(by: { $0.key < $1.key }) {
                $0.field(key) { $0.string(value) }
            }
        }
    }

    public mutating func bool(_ value: Bool) {
        bytes.append(contentsOf: value ? "true".utf8 : "false".utf8)
        needsComma = true
    }

    /// Digits written straight into the bytes: `String(value)` allocated for every number of
    /// more than 15 digits (the nanosecond timestamps).
    public mutating func number(_ value: Int64) {
        if value < 0 { bytes.append(UInt8(ascii: "-")) }
        withDecimalDigits(of: value.magnitude) { bytes.append(contentsOf: $0) }
        needsComma = true
    }

    /// Runs of bytes that need no escape are appended whole (a byte at a time measured ~3% of
    /// the event loop's time with `--data --fsync batch`, which writes each message's metadata
    /// on the loop: `perf record`, 1 KiB x 20 sessions).
    public mutating func string(_ value: String) {
        bytes.append(UInt8(ascii: "\""))
        var value = value
        value.withUTF8 { utf8 in
            var start = 0
            for index in 0..<utf8.count {
                let byte = utf8[index]
                guard byte < 0x20 || byte == UInt8(ascii: "\"") || byte == UInt8(ascii: "\\") else { continue }
                bytes.append(contentsOf: UnsafeBufferPointer(rebasing: utf8[start..<index]))
                escape(byte)
                start = index + 1
            }
            bytes.append(contentsOf: UnsafeBufferPointer(rebasing: utf8[start...]))
        }
        bytes.append(UInt8(ascii: "\""))
        needsComma = true
    }

    private static let hexDigits = Array("0123456789abcdef".utf8)

    private mutating func escape(_ byte: UInt8) {
        switch byte {
        case UInt8(ascii: "\""): bytes.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "\"")])
        case UInt8(ascii: "\\"): bytes.append(contentsOf: [UInt8(ascii: "\\"), UInt8(ascii: "\\")])
        default:
            bytes.append(contentsOf: [
                UInt8(ascii: "\\"), UInt8(ascii: "u"), UInt8(ascii: "0"), UInt8(ascii: "0"),
                Self.hexDigits[Int(byte >> 4)], Self.hexDigits[Int(byte & 0xF)],
            ])
        }
    }

    public mutating func null() {
        bytes.append(contentsOf: "null".utf8)
        needsComma = true
    }

    /// Ends a line of JSON lines.
    public mutating func newline() {
        bytes.append(UInt8(ascii: "\n"))
        needsComma = false
    }
}

/// Calls `body` with the decimal digits of `value`, made in a stack buffer (no `String`).
/// Inlinable: a generic called from another module runs unspecialized otherwise.
@inlinable
public func withDecimalDigits<Result>(of value: UInt64, _ body: (UnsafeRawBufferPointer) -> Result) -> Result {
    var digits: (UInt64, UInt64, UInt64) = (0, 0, 0)
    return withUnsafeMutableBytes(of: &digits) { scratch in
        var value = value
        var index = scratch.count
        repeat {
            index -= 1
            scratch[index] = UInt8(ascii: "0") + UInt8(value % 10)
            value /= 10
        } while value > 0
        return body(UnsafeRawBufferPointer(rebasing: scratch[index...]))
    }
}
