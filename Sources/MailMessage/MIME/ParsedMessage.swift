import Foundation

/// A message's bytes parsed as RFC 5322 / MIME: the decoded envelope-like headers, the first
/// text and HTML bodies, and the attachments, each with its part id.
public struct ParsedMessage: Sendable {
    public let bytes: [UInt8]
    public let headers: HeaderSection
    public let root: MIMEPart

    public let subject: String
    public let from: MailAddress?
    public let to: [MailAddress]
    public let cc: [MailAddress]
    public let bcc: [MailAddress]
    public let replyTo: [MailAddress]
    /// Without angle brackets.
    public let messageID: String?
    public let date: Date?
    public let text: String
    public let html: String
    /// Parts a reader shows as attachments.
    public let attachments: [Attachment]
    /// Parts shown inside the HTML (`cid:` images of multipart/related, inline disposition).
    public let inline: [Attachment]

    public struct Attachment: Hashable, Sendable {
        public var partID: String
        public var fileName: String
        public var contentType: String
        public var contentID: String
        /// Decoded size in bytes.
        public var size: Int
    }

    public init(bytes: [UInt8], limits: MIMELimits = MIMELimits()) {
        self.bytes = bytes
        var budget = limits.maxParts
        let root = MIMEPart.parse(bytes, range: 0..<bytes.count, partID: "", depth: 0, budget: &budget, limits: limits)
        self.root = root
        self.headers = root.headers

        subject = EncodedWords.decode(root.headers["Subject"] ?? "")
        from = root.headers["From"].flatMap { MailAddress.parseList($0).first }
        to = root.headers.values("To").flatMap(MailAddress.parseList)
        cc = root.headers.values("Cc").flatMap(MailAddress.parseList)
        bcc = root.headers.values("Bcc").flatMap(MailAddress.parseList)
        replyTo = root.headers.values("Reply-To").flatMap(MailAddress.parseList)
        messageID = root.headers["Message-ID"].map { $0.trimmingWhitespace().trimmingCharacters(in: "<>") }
        date = root.headers["Date"].flatMap(MailDate.parse)

        var text: String?
        var html: String?
        var attachments: [Attachment] = []
        var inline: [Attachment] = []
        // A leaf that is the whole message gets part id "1".
        let leaves =
            root.isMultipart
            ? root.leaves
            : [
                {
                    var part = root
                    part.partID = "1"
                    return part
                }()
            ]
        let related = Set(root.all.filter { $0.contentType.value == "multipart/related" }.flatMap { $0.leaves.map(\.partID) })
        for part in leaves {
            let type = part.contentType.value
            let dispositionValue = part.disposition?.value
            let isAttachment = dispositionValue == "attachment" || (part.fileName != nil && dispositionValue != "inline")
            if !isAttachment && type == "text/plain" && text == nil {
                text = Self.decodeText(bytes, part)
                continue
            }
            if !isAttachment && type == "text/html" && html == nil {
                html = Self.decodeText(bytes, part)
                continue
            }
            if !isAttachment && (type == "text/plain" || type == "text/html") { continue }
            let decodedSize = TransferDecoding.decodedCount(bytes[part.body], encoding: part.transferEncoding)
            let attachment = Attachment(
                partID: part.partID,
                fileName: part.fileName ?? "",
                contentType: type,
                contentID: part.contentID ?? "",
                size: decodedSize
            )
            let isInline = !isAttachment && (dispositionValue == "inline" || (part.contentID != nil && related.contains(part.partID)))
            if isInline { inline.append(attachment) } else { attachments.append(attachment) }
        }
        self.text = text ?? ""
        self.html = html ?? ""
        self.attachments = attachments
        self.inline = inline
    }

    /// The part with this id (`1`, `2.1`); for a single-part message, `1` is the body.
    public func part(id: String) -> MIMEPart? {
        if !root.isMultipart && id == "1" { return root }
        return root.all.first { $0.partID == id && !id.isEmpty }
    }

    /// A part's body with its transfer encoding undone.
    public func decodedBody(_ part: MIMEPart) -> [UInt8] {
        TransferDecoding.decode(bytes[part.body], encoding: part.transferEncoding)
    }

    static func decodeText(_ bytes: [UInt8], _ part: MIMEPart) -> String {
        let decoded = TransferDecoding.decode(bytes[part.body], encoding: part.transferEncoding)
        return Charset.decode(decoded, charset: part.charset)
    }

    /// The HTML body as plain text (tags dropped, entities for the common characters decoded),
    /// or the text body when there is no HTML.
    public var plainText: String {
        html.isEmpty ? text : HTMLText.text(from: html)
    }

    /// Up to 250 characters (Unicode scalars, as Mailpit counts Go runes) of the body text with
    /// whitespace collapsed, as a list preview. Works on scalars with an ASCII fast path: the
    /// index makes one per stored message, and `Character.isWhitespace` per character was 4%
    /// of the sink's CPU with `--data`.
    public var snippet: String {
        var result = String.UnicodeScalarView()
        var count = 0
        var pendingSpace = false
        for scalar in plainText.unicodeScalars {
            let isSpace =
                scalar.isASCII
                ? scalar == " " || scalar == "\n" || scalar == "\r" || scalar == "\t" || scalar.value == 0x0B || scalar.value == 0x0C
                : scalar.properties.isWhitespace
            if isSpace {
                pendingSpace = !result.isEmpty
                continue
            }
            if count == 250 { return String(result) + "..." }
            if pendingSpace {
                result.append(" ")
                count += 1
                pendingSpace = false
                if count == 250 { return String(result) + "..." }
            }
            result.append(scalar)
            count += 1
        }
        return String(result)
    }
}

/// Just enough HTML to text for previews and search.
enum HTMLText {
    static func text(from html: String) -> String {
        var output = ""
        var inTag = false
        var skipping: String?
        var tagName = ""
        for character in html {
            if inTag {
                if character == ">" {
                    inTag = false
                    let name = tagName.split(separator: " ").first.map { $0.lowercased() } ?? ""
                    if name == "script" || name == "style" { skipping = name }
                    if let skip = skipping, name == "/" + skip { skipping = nil }
                    if ["br", "p", "/p", "div", "/div", "tr", "li", "/h1", "/h2", "/h3"].contains(name) { output.append(" ") }
                } else if tagName.last != " " && character != " " && character != "\n" {
                    tagName.append(character)
                } else {
                    tagName.append(" ")
                }
                continue
            }
            if character == "<" {
                inTag = true
                tagName = ""
                continue
            }
            if skipping == nil { output.append(character) }
        }
        let entities = ["&nbsp;": " ", "&amp;": "&", "&lt;": "<", "&gt;": ">", "&quot;": "\"", "&#39;": "'", "&apos;": "'"]
        for (entity, replacement) in entities { output = output.replacingOccurrences(of: entity, with: replacement) }
        return output
    }
}
