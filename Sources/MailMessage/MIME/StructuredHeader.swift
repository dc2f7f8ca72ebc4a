import Foundation

/// A structured header value `token; name=value; ...` as in Content-Type and
/// Content-Disposition (RFC 2045 §5.1, RFC 2183), with RFC 2231 parameter continuations and
/// charset-encoded values.
public struct StructuredHeader: Hashable, Sendable {
    /// Lower-cased: `text/plain`, `attachment`.
    public var value: String
    /// Parameter names lower-cased; values decoded.
    public var parameters: [String: String]

    public init(value: String, parameters: [String: String] = [:]) {
        self.value = value
        self.parameters = parameters
    }

    public init(parsing text: String) {
        var items: [String] = []
        var current = ""
        var quoted = false
        var escaped = false
        for character in text {
            if escaped {
                current.append(character)
                escaped = false
            } else if quoted && character == "\\" {
                escaped = true
            } else if character == "\"" {
                quoted.toggle()
                current.append(character)
            } else if character == ";" && !quoted {
                items.append(current)
                current = ""
            } else {
                current.append(character)
            }
        }
        items.append(current)
        value = items[0].trimmingWhitespace().lowercased()
        var simple: [String: String] = [:]
        var continued: [String: [(Int, String, Bool)]] = [:]
        for item in items.dropFirst() {
            guard let eq = item.firstIndex(of: "=") else { continue }
            var name = String(item[..<eq]).trimmingWhitespace().lowercased()
            var raw = String(item[item.index(after: eq)...]).trimmingWhitespace()
            if raw.hasPrefix("\"") && raw.hasSuffix("\"") && raw.count >= 2 { raw = String(raw.dropFirst().dropLast()) }
            let extended = name.hasSuffix("*")
            if extended { name.removeLast() }
            if let star = name.firstIndex(of: "*"), let number = Int(name[name.index(after: star)...]) {
                continued[String(name[..<star]), default: []].append((number, raw, extended))
            } else if extended {
                simple[name] = Self.decode2231(raw, first: true).text
            } else {
                simple[name] = EncodedWords.decode(raw)
            }
        }
        for (name, pieces) in continued {
            var charset: String?
            var bytes: [UInt8] = []
            for (offset, piece) in pieces.sorted(by: { $0.0 < $1.0 }).enumerated() {
                if piece.2 {
                    let decoded = Self.decode2231(piece.1, first: offset == 0)
                    charset = charset ?? decoded.charset
                    bytes += decoded.bytes
                } else {
                    bytes += Array(piece.1.utf8)
                }
            }
            simple[name] = Charset.decode(bytes, charset: charset ?? "utf-8")
        }
        parameters = simple
    }

    /// `charset'language'percent-encoded` (RFC 2231 §4); only the first piece carries the charset.
    private static func decode2231(_ text: String, first: Bool) -> (charset: String?, bytes: [UInt8], text: String) {
        var body = Substring(text)
        var charset: String?
        if first {
            let parts = text.split(separator: "'", maxSplits: 2, omittingEmptySubsequences: false)
            if parts.count == 3 {
                charset = String(parts[0])
                body = parts[2]
            }
        }
        var bytes: [UInt8] = []
        var iterator = Array(body.utf8)[...]
        while let byte = iterator.popFirst() {
            if byte == UInt8(ascii: "%"), iterator.count >= 2,
                let value = UInt8(String(decoding: iterator.prefix(2), as: UTF8.self), radix: 16)
            {
                bytes.append(value)
                iterator = iterator.dropFirst(2)
            } else {
                bytes.append(byte)
            }
        }
        return (charset, bytes, Charset.decode(bytes, charset: charset ?? "utf-8"))
    }
}
