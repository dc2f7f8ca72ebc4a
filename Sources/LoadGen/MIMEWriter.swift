import Foundation

/// Writes MIME (RFC 2045–2047): text and HTML as a multipart/alternative, attachments in a
/// multipart/mixed, quoted-printable bodies (UTF-8, lines under 76 characters), base64
/// attachments, RFC 2047 subjects. Lines end in CRLF.
enum MIMEWriter {
    static func message(headers: [(String, String)], text: String?, html: String?,
                        attachments: [(name: String, type: String, bytes: [UInt8])], seq: Int) -> [UInt8] {
        var out = ""
        for (name, value) in headers { out += "\(name): \(value)\r\n" }
        let alternative = "=_alt_\(seq)_swallow"
        let mixed = "=_mixed_\(seq)_swallow"
        func textPart(_ body: String, _ subtype: String) -> String {
            "Content-Type: text/\(subtype); charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
                + quotedPrintable(body) + "\r\n"
        }
        var body: String
        switch (text, html) {
        case (let text?, let html?):
            body = "Content-Type: multipart/alternative; boundary=\"\(alternative)\"\r\n\r\n"
                + "--\(alternative)\r\n" + textPart(text, "plain")
                + "--\(alternative)\r\n" + textPart(html, "html")
                + "--\(alternative)--\r\n"
        case (nil, let html?): body = textPart(html, "html")
        default: body = textPart(text ?? "", "plain")
        }
        if !attachments.isEmpty {
            var parts = "Content-Type: multipart/mixed; boundary=\"\(mixed)\"\r\n\r\n--\(mixed)\r\n" + body
            for attachment in attachments {
                parts += "--\(mixed)\r\nContent-Type: \(attachment.type); name=\"\(attachment.name)\"\r\n"
                    + "Content-Disposition: attachment; filename=\"\(attachment.name)\"\r\n"
                    + "Content-Transfer-Encoding: base64\r\n\r\n" + base64Lines(attachment.bytes)
            }
            body = parts + "--\(mixed)--\r\n"
        }
        out += body
        return Array(out.utf8)
    }

    /// Quoted-printable, soft line breaks before 76 characters, CRLF line ends.
    static func quotedPrintable(_ text: String) -> String {
        var out = ""
        out.reserveCapacity(text.utf8.count + text.utf8.count / 8)
        var lineLength = 0
        let bytes = Array(Renderer.crlf(text).utf8)
        var index = 0
        while index < bytes.count {
            let byte = bytes[index]
            if byte == 13, index + 1 < bytes.count, bytes[index + 1] == 10 {
                out += "\r\n"
                lineLength = 0
                index += 2
                continue
            }
            let nextIsBreak = index + 1 >= bytes.count || bytes[index + 1] == 13
            var piece: String
            if (byte >= 33 && byte <= 126 && byte != 61) || ((byte == 32 || byte == 9) && !nextIsBreak) {
                piece = String(UnicodeScalar(byte))
            } else {
                piece = String(format: "=%02X", byte)
            }
            if lineLength + piece.count > 75 {
                out += "=\r\n"
                lineLength = 0
            }
            out += piece
            lineLength += piece.count
            index += 1
        }
        return out
    }

    static func base64Lines(_ bytes: [UInt8]) -> String {
        let encoded = Data(bytes).base64EncodedString(options: [.lineLength76Characters, .endLineWithCarriageReturn, .endLineWithLineFeed])
        return encoded + "\r\n"
    }

    /// `=?utf-8?B?...?=` when the text is not plain ASCII.
    static func encodedWord(_ text: String) -> String {
        guard !text.utf8.allSatisfy({ $0 >= 32 && $0 < 127 }) else { return text }
        return "=?utf-8?B?\(Data(text.utf8).base64EncodedString())?="
    }

    static func date(_ date: Date) -> String {
        let formatter = DateFormatter()
        formatter.locale = Locale(identifier: "en_US_POSIX")
        formatter.timeZone = TimeZone(identifier: "UTC")
        formatter.dateFormat = "EEE, dd MMM yyyy HH:mm:ss '+0000'"
        return formatter.string(from: date)
    }

    /// About `bytes` of plain filler text, in lines of 64 characters.
    static func padding(_ bytes: Int) -> String {
        let line = "The quick brown fox jumps over the lazy dog, swallow load filler."
        var out = "\n"
        var left = bytes
        while left > 0 {
            let piece = left >= line.count + 2 ? line : String(line.prefix(max(0, left - 2)))
            out += piece + "\n"
            left -= piece.count + 2
        }
        return out
    }
}
