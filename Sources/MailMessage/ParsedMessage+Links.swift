import Foundation

extension ParsedMessage {
    /// Every link of the message, in order of first appearance, without repeats: `href` and
    /// `src` attributes of the HTML part (entities `&amp;` decoded) and URLs written in the text
    /// part (`http`, `https` and `mailto`), trailing punctuation left out.
    public var links: [String] {
        var seen = Set<String>()
        var result: [String] = []
        func add(_ link: String) {
            let trimmed = link.trimmingCharacters(in: .whitespacesAndNewlines)
            guard !trimmed.isEmpty, seen.insert(trimmed).inserted else { return }
            result.append(trimmed)
        }
        let attribute = /(?i)\b(?:href|src)\s*=\s*(?:"([^"]*)"|'([^']*)'|([^\s>]+))/
        for match in html.matches(of: attribute) {
            let value = match.output.1 ?? match.output.2 ?? match.output.3 ?? ""
            let link = String(value).replacingOccurrences(of: "&amp;", with: "&")
            if link.hasPrefix("cid:") || link.hasPrefix("#") || link.lowercased().hasPrefix("data:") { continue }
            add(link)
        }
        let url = /(?i)\b(?:https?:\/\/|mailto:)[^\s<>"'\]\)]+/
        for match in text.matches(of: url) {
            var link = String(match.output)
            while let last = link.last, ".,;:!?".contains(last) { link.removeLast() }
            add(link)
        }
        return result
    }
}
