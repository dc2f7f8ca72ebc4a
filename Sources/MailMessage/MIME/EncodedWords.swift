import Foundation

/// RFC 2047 encoded words in header values: `=?charset?B?...?=` and `=?charset?Q?...?=`.
/// Whitespace between two adjacent encoded words is dropped (§6.2).
public enum EncodedWords {
    public static func decode(_ value: String) -> String {
        guard value.contains("=?") else { return value }
        var output = ""
        var pendingSpace = ""
        var previousWasEncoded = false
        var rest = Substring(value)
        while !rest.isEmpty {
            guard let start = rest.range(of: "=?") else {
                output += pendingSpace + rest
                break
            }
            let before = rest[..<start.lowerBound]
            if let word = parseWord(rest[start.lowerBound...]) {
                let onlySpace = before.allSatisfy { $0 == " " || $0 == "\t" }
                if !(previousWasEncoded && onlySpace) {
                    output += pendingSpace + before
                }
                pendingSpace = ""
                output += word.text
                previousWasEncoded = true
                rest = rest[word.end...]
            } else {
                output += pendingSpace + before + "=?"
                pendingSpace = ""
                previousWasEncoded = false
                rest = rest[start.upperBound...]
            }
        }
        return output
    }

    private static func parseWord(_ text: Substring) -> (text: String, end: Substring.Index)? {
        // =?charset?encoding?encoded-text?=
        let parts = text.dropFirst(2)
        guard let q1 = parts.firstIndex(of: "?") else { return nil }
        let charset = parts[..<q1]
        let afterCharset = parts[parts.index(after: q1)...]
        guard let q2 = afterCharset.firstIndex(of: "?") else { return nil }
        let encoding = afterCharset[..<q2].uppercased()
        let payloadStart = afterCharset.index(after: q2)
        guard let end = afterCharset[payloadStart...].range(of: "?=") else { return nil }
        let payload = afterCharset[payloadStart..<end.lowerBound]
        guard !payload.contains(" ") else { return nil }
        // RFC 2231 §5: charset*language.
        let charsetName = charset.split(separator: "*").first.map(String.init) ?? String(charset)
        let bytes: [UInt8]
        switch encoding {
        case "B": bytes = TransferDecoding.base64(ArraySlice(payload.utf8))
        case "Q": bytes = TransferDecoding.quotedPrintable(ArraySlice(payload.utf8), underscoreIsSpace: true)
        default: return nil
        }
        return (Charset.decode(bytes, charset: charsetName), end.upperBound)
    }
}
