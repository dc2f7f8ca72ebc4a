import Foundation

/// A display name and an address, as in From, To, Cc (RFC 5322 §3.4). Encoded words in the
/// name are decoded. Shaped like Go's `net/mail.Address` for the Mailpit-compatible API.
public struct MailAddress: Codable, Hashable, Sendable {
    public var name: String
    public var address: String

    public init(name: String, address: String) {
        self.name = name
        self.address = address
    }

    enum CodingKeys: String, CodingKey {
        case name = "Name"
        case address = "Address"
    }

    /// Parses an address list leniently: `a@b`, `Name <a@b>`, `"Last, First" <a@b>`,
    /// comments, and groups (`team: a@b, c@d;`, members kept).
    public static func parseList(_ text: String) -> [MailAddress] {
        var results: [MailAddress] = []
        for item in splitList(text) {
            var item = item.trimmingWhitespace()
            if item.isEmpty { continue }
            // A group's name ends at an unquoted colon before any "<" or "@".
            if let colon = item.firstIndex(of: ":"), !item[..<colon].contains("@"), !item[..<colon].contains("<"),
                !item[..<colon].contains("\"")
            {
                item = String(item[item.index(after: colon)...]).trimmingWhitespace()
            }
            if item.hasSuffix(";") { item.removeLast() }
            if item.isEmpty { continue }
            if let open = item.lastIndex(of: "<"), let close = item.lastIndex(of: ">"), open < close {
                let address = String(item[item.index(after: open)..<close]).trimmingWhitespace()
                var name = String(item[..<open]).trimmingWhitespace()
                if name.hasPrefix("\"") && name.hasSuffix("\"") && name.count >= 2 {
                    name = String(name.dropFirst().dropLast()).replacingOccurrences(of: "\\\"", with: "\"")
                }
                results.append(MailAddress(name: EncodedWords.decode(name), address: address))
            } else {
                // `a@b (Comment)`: the comment is the name.
                var address = item
                var name = ""
                if let open = item.firstIndex(of: "("), let close = item.lastIndex(of: ")"), open < close {
                    name = String(item[item.index(after: open)..<close])
                    address = String(item[..<open]).trimmingWhitespace()
                }
                results.append(MailAddress(name: EncodedWords.decode(name), address: address))
            }
        }
        return results
    }

    /// Splits at commas outside quotes, angle brackets and comments.
    private static func splitList(_ text: String) -> [String] {
        var items: [String] = []
        var current = ""
        var quoted = false
        var angle = 0
        var comment = 0
        var escaped = false
        for character in text {
            if escaped {
                escaped = false
                current.append(character)
                continue
            }
            switch character {
            case "\\" where quoted: escaped = true
            case "\"" where comment == 0: quoted.toggle()
            case "<" where !quoted: angle += 1
            case ">" where !quoted: angle = max(0, angle - 1)
            case "(" where !quoted: comment += 1
            case ")" where !quoted: comment = max(0, comment - 1)
            case "," where !quoted && angle == 0 && comment == 0:
                items.append(current)
                current = ""
                continue
            default: break
            }
            current.append(character)
        }
        items.append(current)
        return items
    }
}
