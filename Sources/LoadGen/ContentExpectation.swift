import Foundation
import MailMessage
import SwallowConfig

/// A check on every delivered message of a template, under `expect.content`:
///
///     content:
///       - {template: otp, contains: "{otp}"}                 # the code received is the code sent
///       - {template: invoice, part: html, contains: "Invoice {seq}"}
///       - {template: otp, not_contains: "undefined"}
///
/// `{otp}`, `{seq}` and `{run}` are the values rendered for that very message. `part` is
/// `subject`, `text`, `html` or `any` (default). Needs a delivery sink (the message's bytes).
public struct ContentExpectation: Sendable {
    public var template: String
    public var part: String
    public var contains: String?
    public var notContains: String?

    public var name: String {
        let what = contains.map { "contains \"\($0)\"" } ?? notContains.map { "does not contain \"\($0)\"" } ?? ""
        return "content.\(template) \(part == "any" ? "" : "\(part) ")\(what)"
    }

    static func parse(_ reader: YAMLReader, templates: Set<String>) throws(InputError) -> [ContentExpectation] {
        try reader.items().map { (item: YAMLReader) throws(InputError) -> ContentExpectation in
            _ = try item.keys(allowed: ["template", "part", "contains", "not_contains"])
            let templateReader = try item.required("template")
            let template = try templateReader.string()
            guard templates.contains(template) else { throw templateReader.error("no template named `\(template)` under `templates`") }
            let partReader = try item.optional("part")
            let part = try partReader?.string() ?? "any"
            guard ["any", "subject", "text", "html"].contains(part) else { throw (partReader ?? item).error("expected any, subject, text or html") }
            let contains = try item.optional("contains")?.string()
            let notContains = try item.optional("not_contains")?.string()
            guard (contains == nil) != (notContains == nil) else { throw item.error("give one of `contains` or `not_contains`") }
            return ContentExpectation(template: template, part: part, contains: contains, notContains: notContains)
        }
    }

    /// Whether a delivered message passes, with its own rendered values.
    func holds(for parsed: ParsedMessage, seq: Int, runID: String, otp: String?) -> Bool {
        func fill(_ text: String) -> String {
            text.replacingOccurrences(of: "{seq}", with: String(seq)).replacingOccurrences(of: "{run}", with: runID)
                .replacingOccurrences(of: "{otp}", with: otp ?? "{otp}")
        }
        let haystack =
            switch part {
            case "subject": parsed.subject
            case "text": parsed.text
            case "html": parsed.html
            default: [parsed.subject, parsed.text, parsed.html].joined(separator: "\n")
            }
        if let contains { return haystack.contains(fill(contains)) }
        if let notContains { return !haystack.contains(fill(notContains)) }
        return true
    }
}
