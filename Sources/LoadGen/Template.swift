import Foundation
import SwallowConfig

/// A message template: header fields and bodies with placeholders, rendered into real MIME.
///
/// Placeholders: `{seq}` (the message's sequence number), `{uuid}`, `{otp:N}` (a fresh N-digit
/// code; a later `{otp}` repeats it), `{user}` (from `users`, in turn), `{amount}` (a price),
/// `{date}` (today, `YYYY-MM-DD`), `{pick:a|b|c}` (one at random), `{run}` (the run id).
/// Random choices come from the run's seed and the sequence number, so a seed repeats a run.
public struct Template: Sendable {
    public var name: String
    public var from: String
    public var to: [String]
    public var cc: [String] = []
    public var subject: String
    public var text: String?
    public var html: String?
    public var headers: [(String, String)] = []
    public var attachments: [Attachment] = []
    /// Pads the text body so the whole message is about this many bytes.
    public var size: Int?
    /// A raw message file used as is (placeholders still replaced), instead of the fields above.
    public var eml: String?
    public var users: [String] = []

    public struct Attachment: Sendable {
        public enum Kind: String, Sendable { case pdf, bytes }
        public var kind: Kind
        public var name: String
        public var size: Int
    }

    static func parse(_ reader: YAMLReader, name: String, baseDirectory: String) throws(InputError) -> Template {
        _ = try reader.keys(allowed: ["from", "to", "cc", "subject", "text", "html", "headers", "attachments", "size", "eml", "users", "users_file"])
        func addresses(_ key: String) throws(InputError) -> [String] {
            guard let value = try reader.optional(key) else { return [] }
            if value.isSequence { return try value.items().map { (item: YAMLReader) throws(InputError) in try item.string() } }
            return [try value.string()]
        }
        var template = Template(name: name, from: "", to: [], subject: "")
        if let eml = try reader.optional("eml") {
            let path = try eml.string()
            let full = path.hasPrefix("/") ? path : (baseDirectory as NSString).appendingPathComponent(path)
            guard let data = FileManager.default.contents(atPath: full) else { throw eml.error("cannot read \(full)") }
            template.eml = String(decoding: data, as: UTF8.self)
        }
        template.from = try reader.optional("from")?.string() ?? ""
        template.to = try addresses("to")
        template.cc = try addresses("cc")
        if template.eml == nil {
            guard !template.from.isEmpty else { throw reader.error("missing required key `from`") }
            guard !template.to.isEmpty else { throw reader.error("missing required key `to`") }
        }
        template.subject = try reader.optional("subject")?.string() ?? ""
        template.text = try reader.optional("text")?.string()
        template.html = try reader.optional("html")?.string()
        if let headers = try reader.optional("headers") {
            for (key, value) in try headers.entries() {
                guard key.allSatisfy({ $0.isASCII && ($0.isLetter || $0.isNumber || $0 == "-") }) else {
                    throw value.error("not a header field name")
                }
                template.headers.append((key, try value.string()))
            }
        }
        if let attachments = try reader.optional("attachments") {
            for item in try attachments.items() {
                _ = try item.keys(allowed: ["kind", "name", "size"])
                let kindReader = try item.optional("kind")
                guard let kind = Attachment.Kind(rawValue: try kindReader?.string() ?? "pdf") else {
                    throw (kindReader ?? item).error("expected pdf or bytes")
                }
                let size = try item.optional("size")?.size() ?? 0
                guard size <= 50 * 1024 * 1024 else { throw item.error("attachments are limited to 50MiB") }
                template.attachments.append(
                    Attachment(
                        kind: kind, name: try item.optional("name")?.string() ?? "attachment.\(kind == .pdf ? "pdf" : "bin")", size: size
                    ))
            }
        }
        if let size = try reader.optional("size") {
            let bytes = try size.size()
            guard bytes <= 100 * 1024 * 1024 else { throw size.error("messages are limited to 100MiB") }
            template.size = bytes
        }
        if let users = try reader.optional("users") {
            template.users = try users.items().map { (item: YAMLReader) throws(InputError) in try item.string() }
        }
        if let file = try reader.optional("users_file") {
            let path = try file.string()
            let full = path.hasPrefix("/") ? path : (baseDirectory as NSString).appendingPathComponent(path)
            guard let data = FileManager.default.contents(atPath: full) else { throw file.error("cannot read \(full)") }
            // One address per line; in a CSV, the first field of each line (a header line without `@` is skipped).
            template.users = String(decoding: data, as: UTF8.self).split(whereSeparator: \.isNewline).compactMap { line in
                let field = line.split(separator: ",").first.map { $0.trimmingCharacters(in: .whitespaces.union(["\""])) } ?? ""
                return field.contains("@") ? field : nil
            }
            guard !template.users.isEmpty else { throw file.error("no addresses in \(full)") }
        }
        return template
    }
}

/// One rendered message, ready for the SMTP client.
public struct RenderedMessage: Sendable {
    public var seq: Int
    public var template: String
    public var sender: String
    public var recipients: [String]
    public var data: [UInt8]
    public var messageID: String
    public var traceID: String
    /// The OTP code it carries, if its template made one.
    public var otp: String?
}
