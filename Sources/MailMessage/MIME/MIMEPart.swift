/// One node of a message's MIME tree (RFC 2045, RFC 2046). Bodies are byte ranges of the
/// whole message; nothing is decoded until asked.
public struct MIMEPart: Hashable, Sendable {
    /// `1`, `2`, `2.1`: the position in the tree, as IMAP numbers body sections (RFC 3501 §6.4.5).
    public var partID: String
    public var headers: HeaderSection
    public var contentType: StructuredHeader
    public var disposition: StructuredHeader?
    /// `base64`, `quoted-printable`, `7bit`, ... lower-cased.
    public var transferEncoding: String?
    /// Without the angle brackets.
    public var contentID: String?
    /// The part's body (after its header section), as offsets into the message bytes.
    public var body: Range<Int>
    public var children: [MIMEPart]

    public var isMultipart: Bool { contentType.value.hasPrefix("multipart/") }
    public var charset: String? { contentType.parameters["charset"] }

    /// The file name from Content-Disposition, or Content-Type's `name`.
    public var fileName: String? {
        if let name = disposition?.parameters["filename"], !name.isEmpty { return name }
        if let name = contentType.parameters["name"], !name.isEmpty { return name }
        return nil
    }

    /// Every leaf below (or this part, when it is a leaf), depth first.
    public var leaves: [MIMEPart] {
        children.isEmpty && !isMultipart ? [self] : children.flatMap(\.leaves)
    }

    /// Every part, depth first, this one included.
    public var all: [MIMEPart] { [self] + children.flatMap(\.all) }
}

/// Limits on hostile MIME: depth and number of parts.
public struct MIMELimits: Hashable, Sendable {
    public var maxDepth = 32
    public var maxParts = 1000
    public init() {}
}

extension MIMEPart {
    /// Parses the part at `range` of `bytes`, its header section first.
    static func parse(_ bytes: [UInt8], range: Range<Int>, partID: String, depth: Int, budget: inout Int, limits: MIMELimits) -> MIMEPart {
        let (headers, bodyOffset) = HeaderSection.parse(bytes[range])
        let bodyRange = min(range.lowerBound + bodyOffset, range.upperBound)..<range.upperBound
        var contentType = StructuredHeader(parsing: headers["Content-Type"] ?? "text/plain")
        if !contentType.value.contains("/") { contentType = StructuredHeader(value: "text/plain", parameters: contentType.parameters) }
        var part = MIMEPart(
            partID: partID,
            headers: headers,
            contentType: contentType,
            disposition: headers["Content-Disposition"].map(StructuredHeader.init(parsing:)),
            transferEncoding: headers["Content-Transfer-Encoding"]?.trimmingWhitespace().lowercased(),
            contentID: headers["Content-ID"].map { $0.trimmingWhitespace().trimmingCharacters(in: "<>") },
            body: bodyRange,
            children: []
        )
        guard part.isMultipart, depth < limits.maxDepth, let boundary = contentType.parameters["boundary"], !boundary.isEmpty else {
            return part
        }
        let prefix = partID.isEmpty ? "" : partID + "."
        for (index, childRange) in splitMultipart(bytes, range: bodyRange, boundary: boundary).enumerated() {
            guard budget > 0 else { break }
            budget -= 1
            part.children.append(
                parse(bytes, range: childRange, partID: prefix + String(index + 1), depth: depth + 1, budget: &budget, limits: limits))
        }
        return part
    }

    /// The body parts between `--boundary` delimiter lines (RFC 2046 §5.1.1). The line end
    /// before a delimiter belongs to the delimiter.
    static func splitMultipart(_ bytes: [UInt8], range: Range<Int>, boundary: String) -> [Range<Int>] {
        let delimiter = Array("--\(boundary)".utf8)
        var parts: [Range<Int>] = []
        var partStart: Int?
        var lineStart = range.lowerBound
        while lineStart < range.upperBound {
            var lineEnd = lineStart
            while lineEnd < range.upperBound && bytes[lineEnd] != UInt8(ascii: "\n") { lineEnd += 1 }
            let next = min(lineEnd + 1, range.upperBound)
            if lineEnd - lineStart >= delimiter.count, bytes[lineStart..<(lineStart + delimiter.count)].elementsEqual(delimiter) {
                let after = bytes[(lineStart + delimiter.count)..<lineEnd]
                let closing = after.starts(with: [UInt8(ascii: "-"), UInt8(ascii: "-")])
                let rest = closing ? after.dropFirst(2) : after
                if rest.allSatisfy({ $0 == UInt8(ascii: " ") || $0 == UInt8(ascii: "\t") || $0 == UInt8(ascii: "\r") }) {
                    if let start = partStart {
                        var end = lineStart
                        if end > start && bytes[end - 1] == UInt8(ascii: "\n") { end -= 1 }
                        if end > start && bytes[end - 1] == UInt8(ascii: "\r") { end -= 1 }
                        parts.append(start..<max(start, end))
                    }
                    if closing { return parts }
                    partStart = next
                }
            }
            lineStart = next
        }
        // No closing delimiter: the last part runs to the end.
        if let start = partStart, start < range.upperBound { parts.append(start..<range.upperBound) }
        return parts
    }
}

extension String {
    func trimmingCharacters(in set: String) -> String {
        let scalars = Set(set.unicodeScalars)
        let view = unicodeScalars
        guard let first = view.firstIndex(where: { !scalars.contains($0) }),
            let last = view.lastIndex(where: { !scalars.contains($0) })
        else { return "" }
        return String(view[first...last])
    }
}
