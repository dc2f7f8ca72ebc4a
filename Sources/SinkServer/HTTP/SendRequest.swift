import Foundation
import MailMessage
import SMTPProtocol

/// A `POST /api/v1/send` body in Mailpit's shape, checked and turned into a MIME message and
/// its envelope. Keys are matched without regard to case, as Go's `encoding/json` does.
struct SendRequest {
    struct Address {
        var email: String
        var name: String
    }

    struct Attachment {
        var content: [UInt8]
        var filename: String
        var contentType: String
        var contentID: String?
    }

    var from: Address
    var to: [Address] = []
    var cc: [Address] = []
    var bcc: [String] = []
    var replyTo: [Address] = []
    var subject = ""
    var text: String?
    var html: String?
    var headers: [(String, String)] = []
    var tags: [String] = []
    var attachments: [Attachment] = []

    /// A 400's text: the field, and what is wrong with it.
    struct Invalid: Error, CustomStringConvertible {
        var field: String
        var problem: String
        var description: String { "\(field): \(problem)" }
    }

    init(json: Data) throws(Invalid) {
        guard let parsed = try? JSONSerialization.jsonObject(with: json), let object = parsed as? [String: Any] else {
            throw Invalid(field: "body", problem: "expected a JSON object")
        }
        let fields = Dictionary(object.map { ($0.key.lowercased(), $0.value) }, uniquingKeysWith: { first, _ in first })

        func string(_ value: Any?, field: String) throws(Invalid) -> String? {
            switch value {
            case nil, is NSNull: return nil
            case let text as String: return text
            default: throw Invalid(field: field, problem: "expected a string")
            }
        }
        func address(_ value: Any, field: String) throws(Invalid) -> Address {
            if let text = value as? String { return try Self.checked(Address(email: text, name: ""), field: field) }
            guard let object = value as? [String: Any] else { throw Invalid(field: field, problem: "expected {\"Email\", \"Name\"}") }
            let lowered = Dictionary(object.map { ($0.key.lowercased(), $0.value) }, uniquingKeysWith: { first, _ in first })
            let email = try string(lowered["email"], field: field + ".Email") ?? ""
            let name = try string(lowered["name"], field: field + ".Name") ?? ""
            return try Self.checked(Address(email: email, name: name), field: field)
        }
        func list(_ key: String, field: String) throws(Invalid) -> [Any] {
            switch fields[key] {
            case nil, is NSNull: return []
            case let items as [Any]: return items
            default: throw Invalid(field: field, problem: "expected a list")
            }
        }

        guard let fromValue = fields["from"], !(fromValue is NSNull) else { throw Invalid(field: "From", problem: "a sender is needed") }
        from = try address(fromValue, field: "From")
        var index = 0
        for item in try list("to", field: "To") {
            to.append(try address(item, field: "To[\(index)]"))
            index += 1
        }
        index = 0
        for item in try list("cc", field: "Cc") {
            cc.append(try address(item, field: "Cc[\(index)]"))
            index += 1
        }
        index = 0
        for item in try list("replyto", field: "ReplyTo") {
            replyTo.append(try address(item, field: "ReplyTo[\(index)]"))
            index += 1
        }
        index = 0
        // Mailpit's Bcc is a list of addresses as strings; {"Email"} objects are taken too.
        for item in try list("bcc", field: "Bcc") {
            bcc.append(try address(item, field: "Bcc[\(index)]").email)
            index += 1
        }
        guard !to.isEmpty || !cc.isEmpty || !bcc.isEmpty else {
            throw Invalid(field: "To", problem: "at least one recipient is needed (To, Cc or Bcc)")
        }
        subject = try string(fields["subject"], field: "Subject") ?? ""
        guard !Self.breaksLine(subject) else { throw Invalid(field: "Subject", problem: "no line breaks") }
        text = try string(fields["text"], field: "Text")
        html = try string(fields["html"], field: "HTML")

        switch fields["headers"] {
        case nil, is NSNull: break
        case let object as [String: Any]:
            for (name, value) in object.sorted(by: { $0.key < $1.key }) {
                guard !name.isEmpty, name.utf8.allSatisfy({ $0 > 32 && $0 < 127 && $0 != UInt8(ascii: ":") }) else {
                    throw Invalid(field: "Headers", problem: "bad header name \(name.debugDescription)")
                }
                guard let value = value as? String, !Self.breaksLine(value) else {
                    throw Invalid(field: "Headers.\(name)", problem: "expected a string without line breaks")
                }
                headers.append((name, value))
            }
        default: throw Invalid(field: "Headers", problem: "expected an object of name: value")
        }

        index = 0
        for item in try list("tags", field: "Tags") {
            guard let tag = item as? String, let valid = Tagging.validName(tag) else {
                throw Invalid(field: "Tags[\(index)]", problem: "invalid tag name (1 to 100 characters, no control characters or commas)")
            }
            tags.append(valid)
            index += 1
        }

        index = 0
        for item in try list("attachments", field: "Attachments") {
            let field = "Attachments[\(index)]"
            guard let object = item as? [String: Any] else { throw Invalid(field: field, problem: "expected an object") }
            let lowered = Dictionary(object.map { ($0.key.lowercased(), $0.value) }, uniquingKeysWith: { first, _ in first })
            guard let encoded = try string(lowered["content"], field: field + ".Content"),
                let content = Data(base64Encoded: encoded.filter { !$0.isWhitespace })
            else { throw Invalid(field: field + ".Content", problem: "expected base64") }
            guard let filename = try string(lowered["filename"], field: field + ".Filename"), !filename.isEmpty else {
                throw Invalid(field: field + ".Filename", problem: "a file name is needed")
            }
            let type = try string(lowered["contenttype"], field: field + ".ContentType").flatMap { $0.isEmpty ? nil : $0 }
            if let type, !type.utf8.allSatisfy({ $0 > 32 && $0 < 127 && $0 != UInt8(ascii: ";") }) {
                throw Invalid(field: field + ".ContentType", problem: "expected a media type such as image/png")
            }
            var contentID = try string(lowered["contentid"], field: field + ".ContentID").flatMap { $0.isEmpty ? nil : $0 }
            if let id = contentID {
                contentID = id.hasPrefix("<") && id.hasSuffix(">") ? String(id.dropFirst().dropLast()) : id
                guard contentID!.utf8.allSatisfy({ $0 > 32 && $0 < 127 && $0 != UInt8(ascii: "<") && $0 != UInt8(ascii: ">") }) else {
                    throw Invalid(field: field + ".ContentID", problem: "expected printable ASCII without spaces")
                }
            }
            attachments.append(
                Attachment(content: Array(content), filename: filename, contentType: type ?? Self.mediaType(filename), contentID: contentID))
            index += 1
        }
    }

    /// An address must be one SMTP can carry; a display name must not break the header.
    private static func checked(_ address: Address, field: String) throws(Invalid) -> Address {
        guard !address.email.isEmpty, (try? Mailbox.parse(Substring(address.email))) != nil else {
            throw Invalid(field: field, problem: "\(address.email.debugDescription) is not an email address")
        }
        guard !breaksLine(address.name) else {
            throw Invalid(field: field + ".Name", problem: "no line breaks")
        }
        return address
    }

    /// CR, LF or NUL anywhere (by byte: in a Swift String "\r\n" is one Character).
    static func breaksLine(_ text: String) -> Bool {
        text.utf8.contains { $0 == 13 || $0 == 10 || $0 == 0 }
    }

    /// A media type for an attachment given none, from its file name.
    static func mediaType(_ filename: String) -> String {
        let types = [
            "pdf": "application/pdf", "png": "image/png", "jpg": "image/jpeg", "jpeg": "image/jpeg", "gif": "image/gif",
            "webp": "image/webp", "svg": "image/svg+xml", "txt": "text/plain", "csv": "text/csv", "html": "text/html",
            "htm": "text/html", "json": "application/json", "xml": "application/xml", "zip": "application/zip",
            "ics": "text/calendar", "ical": "text/calendar",
        ]
        let suffix = filename.split(separator: ".").last.map { $0.lowercased() } ?? ""
        return types[suffix] ?? "application/octet-stream"
    }

    /// The envelope: the sender, and every To, Cc and Bcc address once.
    var envelopeRecipients: [String] {
        var seen = Set<String>()
        return (to.map(\.email) + cc.map(\.email) + bcc).filter { seen.insert($0.lowercased()).inserted }
    }

    /// The message as it is submitted: real MIME, encoded words for names and a subject that
    /// are not ASCII, `X-Tags` for `Tags`, no `Bcc:` field.
    func message(hostname: String, now: Date = Date()) -> [UInt8] {
        func format(_ address: Address) -> String {
            guard !address.name.isEmpty else { return address.email }
            let name = address.name
            if !name.utf8.allSatisfy({ $0 >= 32 && $0 < 127 }) { return "\(MIMEWriter.encodedWord(name)) <\(address.email)>" }
            let plain = name.allSatisfy { $0.isLetter || $0.isNumber || $0 == " " || "!#$%&'*+-/=?^_`{|}~".contains($0) }
            if plain { return "\(name) <\(address.email)>" }
            let quoted = name.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"")
            return "\"\(quoted)\" <\(address.email)>"
        }
        let given = Set(headers.map { $0.0.lowercased() })
        var fields: [(String, String)] = [("From", format(from))]
        if !to.isEmpty { fields.append(("To", to.map(format).joined(separator: ", "))) }
        if !cc.isEmpty { fields.append(("Cc", cc.map(format).joined(separator: ", "))) }
        if !replyTo.isEmpty { fields.append(("Reply-To", replyTo.map(format).joined(separator: ", "))) }
        fields.append(("Subject", MIMEWriter.encodedWord(subject)))
        if !given.contains("date") { fields.append(("Date", MIMEWriter.date(now))) }
        if !given.contains("message-id") {
            fields.append(("Message-ID", "<\(UInt64.random(in: 1...UInt64.max)).\(Int(now.timeIntervalSince1970))@\(hostname)>"))
        }
        if !tags.isEmpty && !given.contains("x-tags") { fields.append(("X-Tags", tags.joined(separator: ", "))) }
        fields += headers.map { ($0.0, $0.1.utf8.allSatisfy { $0 < 127 } ? $0.1 : MIMEWriter.encodedWord($0.1)) }
        fields.append(("MIME-Version", "1.0"))
        let inline = attachments.compactMap { attachment in
            attachment.contentID.map {
                MIMEWriter.InlinePart(name: attachment.filename, type: attachment.contentType, bytes: attachment.content, contentID: $0)
            }
        }
        let files = attachments.filter { $0.contentID == nil }.map { (name: $0.filename, type: $0.contentType, bytes: $0.content) }
        return MIMEWriter.message(
            headers: fields, text: text, html: html, attachments: files, inline: inline,
            seq: Int.random(in: 0...Int.max)
        )
    }
}
