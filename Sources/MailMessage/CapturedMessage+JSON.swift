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
        out.object {
            $0.field(key: "id") { $0.string(id) }
            $0.field(key: "envelope") { envelope in
                envelope.object {
                    $0.field(key: "mailFrom") { $0.string(self.envelope.mailFrom) }
                    $0.field(key: "mailParameters") { $0.dictionary(self.envelope.mailParameters) }
                    $0.field(key: "recipients") { list in
                        list.array(self.envelope.recipients) { writer, recipient in
                            writer.object {
                                $0.field(key: "address") { $0.string(recipient.address) }
                                $0.field(key: "parameters") { $0.dictionary(recipient.parameters) }
                            }
                        }
                    }
                }
            }
            $0.field(key: "session") { session in
                session.object {
                    $0.field(key: "id") { $0.string(self.session.id) }
                    $0.field(key: "remoteAddress") { $0.string(self.session.remoteAddress) }
                    $0.field(key: "localAddress") { $0.string(self.session.localAddress) }
                    $0.field(key: "helo") { $0.string(self.session.helo) }
                    $0.field(key: "esmtp") { $0.bool(self.session.esmtp) }
                    if let tls = self.session.tls {
                        $0.field(key: "tls") { writer in
                            writer.object {
                                $0.field(key: "version") { $0.string(tls.version) }
                                if let cipher = tls.cipher { $0.field(key: "cipher") { $0.string(cipher) } }
                                $0.field(key: "implicit") { $0.bool(tls.implicit) }
                            }
                        }
                    }
                    if let user = self.session.authUser { $0.field(key: "authUser") { $0.string(user) } }
                }
            }
            $0.field(key: "timestamps") { writer in
                writer.object {
                    $0.field(key: "connectedNanos") { $0.number(self.timestamps.connectedNanos) }
                    $0.field(key: "mailNanos") { $0.number(self.timestamps.mailNanos) }
                    $0.field(key: "dataStartNanos") { $0.number(self.timestamps.dataStartNanos) }
                    $0.field(key: "dataEndNanos") { $0.number(self.timestamps.dataEndNanos) }
                    if let sent = self.timestamps.replySentNanos { $0.field(key: "replySentNanos") { $0.number(sent) } }
                }
            }
            $0.field(key: "size") { $0.number(Int64(size)) }
            $0.field(key: "receivedHeaderLength") { $0.number(Int64(receivedHeaderLength)) }
            $0.field(key: "anomalies") { $0.array(anomalies) { $0.string($1) } }
            $0.field(key: "faults") { $0.array(faults) { $0.string($1) } }
            if let traceID { $0.field(key: "traceID") { $0.string(traceID) } }
            $0.field(key: "bodyStored") { $0.bool(bodyStored) }
        }
        return true
    }
}

/// A minimal JSON writer: objects, arrays, escaped strings, integers, booleans. Public for the
/// sink's own JSON lines (`attempts.jsonl`), which are written on the same hot paths.
public struct JSONWriter {
    public internal(set) var bytes: [UInt8] = []
    var needsComma = false

    public init(capacity: Int = 768) { bytes.reserveCapacity(capacity) }

    /// Appends bytes that are JSON already (a value another encoder wrote).
    public mutating func verbatim(_ json: some Collection<UInt8>) {
        bytes.append(contentsOf: json)
        needsComma = true
    }

    public mutating func object(_ body: (inout JSONWriter) -> Void) {
        bytes.append(UInt8(ascii: "{"))
        needsComma = false
        body(&self)
        bytes.append(UInt8(ascii: "}"))
        needsComma = true
    }

    public mutating func array<T>(_ items: [T], _ element: (inout JSONWriter, T) -> Void) {
        bytes.append(UInt8(ascii: "["))
        needsComma = false
        for item in items {
            if needsComma { bytes.append(UInt8(ascii: ",")) }
            element(&self, item)
            needsComma = true
        }
        bytes.append(UInt8(ascii: "]"))
        needsComma = true
    }

    public mutating func field(_ name: String, _ value: (inout JSONWriter) -> Void) {
        if needsComma { bytes.append(UInt8(ascii: ",")) }
        string(name)
        bytes.append(UInt8(ascii: ":"))
        needsComma = false
        value(&self)
        needsComma = true
    }

    /// A field whose name is a literal that needs no escaping (plain ASCII, no quote or
    /// backslash): copied as it is, not scanned.
    public mutating func field(key name: StaticString, _ value: (inout JSONWriter) -> Void) {
        if needsComma { bytes.append(UInt8(ascii: ",")) }
        bytes.append(UInt8(ascii: "\""))
        bytes.append(contentsOf: UnsafeBufferPointer(start: name.utf8Start, count: name.utf8CodeUnitCount))
        bytes.append(UInt8(ascii: "\""))
        bytes.append(UInt8(ascii: ":"))
        needsComma = false
        value(&self)
        needsComma = true
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
