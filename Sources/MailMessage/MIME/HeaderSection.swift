/// One header field: its name as written and its value unfolded (RFC 5322 §2.2), still
/// undecoded (encoded words stay as they are).
public struct HeaderField: Hashable, Sendable {
    public var name: String
    public var value: String

    public init(name: String, value: String) {
        self.name = name
        self.value = value
    }
}

/// A header section: the fields in order, and where the body starts.
public struct HeaderSection: Hashable, Sendable {
    public var fields: [HeaderField]

    public init(fields: [HeaderField]) {
        self.fields = fields
    }

    /// The first value of `name`, compared case-insensitively.
    public subscript(_ name: String) -> String? {
        let lowered = name.lowercased()
        return fields.first { $0.name.lowercased() == lowered }?.value
    }

    /// Every value of `name`, in order.
    public func values(_ name: String) -> [String] {
        let lowered = name.lowercased()
        return fields.filter { $0.name.lowercased() == lowered }.map(\.value)
    }

    /// Parses the header section at the start of `bytes` (CRLF or bare LF line ends). Returns
    /// the fields and the offset of the body (after the empty line), or `bytes.count` when
    /// there is no body. A line without a colon ends the section (lenient, as mail readers are).
    public static func parse(_ bytes: ArraySlice<UInt8>) -> (HeaderSection, bodyStart: Int) {
        var fields: [HeaderField] = []
        var index = bytes.startIndex
        var current: (name: String, value: [UInt8])?

        func finish() {
            if let field = current {
                let value = String(decoding: field.value, as: UTF8.self)
                fields.append(HeaderField(name: field.name, value: value.trimmingWhitespace()))
            }
            current = nil
        }

        while index < bytes.endIndex {
            var lineEnd = index
            while lineEnd < bytes.endIndex && bytes[lineEnd] != UInt8(ascii: "\n") { lineEnd += 1 }
            let next = lineEnd < bytes.endIndex ? lineEnd + 1 : lineEnd
            var contentEnd = lineEnd
            if contentEnd > index && bytes[contentEnd - 1] == UInt8(ascii: "\r") { contentEnd -= 1 }
            if contentEnd == index {  // the empty line
                finish()
                return (HeaderSection(fields: fields), next - bytes.startIndex)
            }
            let first = bytes[index]
            if first == UInt8(ascii: " ") || first == UInt8(ascii: "\t") {
                if current != nil {
                    // Unfold: the CRLF goes, the whitespace stays (RFC 5322 §2.2.3).
                    current!.value.append(contentsOf: bytes[index..<contentEnd])
                }
            } else if let colon = bytes[index..<contentEnd].firstIndex(of: UInt8(ascii: ":")) {
                finish()
                let name = String(decoding: bytes[index..<colon], as: UTF8.self).trimmingWhitespace()
                current = (name, Array(bytes[(colon + 1)..<contentEnd]))
            } else {
                finish()
                return (HeaderSection(fields: fields), index - bytes.startIndex)
            }
            index = next
        }
        finish()
        return (HeaderSection(fields: fields), bytes.count)
    }
}

extension String {
    func trimmingWhitespace() -> String {
        let scalars = unicodeScalars
        guard let first = scalars.firstIndex(where: { !$0.properties.isWhitespace }),
            let last = scalars.lastIndex(where: { !$0.properties.isWhitespace })
        else { return "" }
        return String(scalars[first...last])
    }
}
