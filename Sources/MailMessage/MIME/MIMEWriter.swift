import Foundation

/// Writes MIME (RFC 2045–2047): text and HTML as a multipart/alternative, attachments in a
/// multipart/mixed, quoted-printable bodies (UTF-8, lines under 76 characters), base64
/// attachments, RFC 2047 subjects. Lines end in CRLF.
public enum MIMEWriter {
    /// A part shown inside the HTML by its `Content-ID` (`<img src="cid:ID">`).
    public struct InlinePart: Sendable {
        public var name: String
        public var type: String
        public var bytes: [UInt8]
        public var contentID: String

        public init(name: String, type: String, bytes: [UInt8], contentID: String) {
            self.name = name
            self.type = type
            self.bytes = bytes
            self.contentID = contentID
        }
    }

    /// A whole message: the headers as given, then text and HTML as a multipart/alternative,
    /// inline parts with the HTML in a multipart/related, attachments in a multipart/mixed.
    /// `encodedTextTail`: quoted-printable already encoded, appended to the text part; it must
    /// begin with a line break (then encoding text and tail together gives the same bytes).
    /// `encodedAttachments[i]`, when given, is attachment `i`'s body already in base64 lines
    /// (its `bytes` are then not read).
    public static func message(
        headers: [(String, String)], text: String?, html: String?,
        attachments: [(name: String, type: String, bytes: [UInt8])],
        inline: [InlinePart] = [], seq: Int, encodedTextTail: String = "",
        encodedAttachments: [String?] = []
    ) -> [UInt8] {
        var out = ""
        for (name, value) in headers { out += "\(name): \(value)\r\n" }
        let alternative = "=_alt_\(seq)_swallow"
        let related = "=_rel_\(seq)_swallow"
        let mixed = "=_mixed_\(seq)_swallow"
        func textPart(_ body: String, _ subtype: String) -> String {
            "Content-Type: text/\(subtype); charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n\r\n"
                + quotedPrintable(body) + (subtype == "plain" ? encodedTextTail : "") + "\r\n"
        }
        var body: String
        switch (text, html) {
        case (let text?, let html?):
            body =
                "Content-Type: multipart/alternative; boundary=\"\(alternative)\"\r\n\r\n"
                + "--\(alternative)\r\n" + textPart(text, "plain")
                + "--\(alternative)\r\n" + textPart(html, "html")
                + "--\(alternative)--\r\n"
        case (nil, let html?): body = textPart(html, "html")
        default: body = textPart(text ?? "", "plain")
        }
        if !inline.isEmpty {
            let rootType = text != nil && html != nil ? "multipart/alternative" : html != nil ? "text/html" : "text/plain"
            var parts = "Content-Type: multipart/related; type=\"\(rootType)\"; boundary=\"\(related)\"\r\n\r\n--\(related)\r\n" + body
            for part in inline {
                parts +=
                    "--\(related)\r\nContent-Type: \(part.type); \(fileParameter("name", part.name))\r\n"
                    + "Content-ID: <\(part.contentID)>\r\n"
                    + "Content-Disposition: inline; \(fileParameter("filename", part.name))\r\n"
                    + "Content-Transfer-Encoding: base64\r\n\r\n" + base64Lines(part.bytes)
            }
            body = parts + "--\(related)--\r\n"
        }
        if !attachments.isEmpty {
            var parts = "Content-Type: multipart/mixed; boundary=\"\(mixed)\"\r\n\r\n--\(mixed)\r\n" + body
            for (index, attachment) in attachments.enumerated() {
                let encoded = index < encodedAttachments.count ? encodedAttachments[index] : nil
                parts +=
                    "--\(mixed)\r\nContent-Type: \(attachment.type); \(fileParameter("name", attachment.name))\r\n"
                    + "Content-Disposition: attachment; \(fileParameter("filename", attachment.name))\r\n"
                    + "Content-Transfer-Encoding: base64\r\n\r\n" + (encoded ?? base64Lines(attachment.bytes))
            }
            body = parts + "--\(mixed)--\r\n"
        }
        out += body
        return Array(out.utf8)
    }

    /// `name="report.pdf"`; a name that is not plain ASCII also gets RFC 2231's
    /// `name*=utf-8''…` (what readers prefer) after an encoded-word fallback.
    public static func fileParameter(_ key: String, _ name: String) -> String {
        let ascii = name.utf8.allSatisfy { $0 >= 32 && $0 < 127 }
        let quoted =
            name.utf8.contains { $0 == UInt8(ascii: "\\") || $0 == UInt8(ascii: "\"") }
            ? name.replacingOccurrences(of: "\\", with: "\\\\").replacingOccurrences(of: "\"", with: "\\\"") : name
        guard !ascii else { return "\(key)=\"\(quoted)\"" }
        let unreserved = Set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~".utf8)
        let percent = name.utf8.map { unreserved.contains($0) ? String(UnicodeScalar($0)) : String(format: "%%%02X", $0) }.joined()
        return "\(key)=\"\(encodedWord(name))\"; \(key)*=utf-8''\(percent)"
    }

    /// Quoted-printable, soft line breaks before 76 characters, CRLF line ends. Written byte by
    /// byte into the result's own storage: it was the largest cost of rendering a message.
    public static func quotedPrintable(_ text: String) -> String {
        var text = text
        return text.withUTF8 { input in
            // At worst every byte becomes `=XX`, with a soft break (`=` CRLF) per 24 of them.
            String(unsafeUninitializedCapacity: input.count * 4 + 8) { out in
                @inline(__always) func hex(_ value: UInt8) -> UInt8 { value < 10 ? 48 + value : 55 + value }
                var written = 0
                var lineLength = 0
                var index = 0
                let count = input.count
                while index < count {
                    let byte = input[index]
                    if byte == 13 || byte == 10 {
                        // CRLF, a bare LF or a bare CR: one line break.
                        out[written] = 13
                        out[written + 1] = 10
                        written += 2
                        lineLength = 0
                        index += (byte == 13 && index + 1 < count && input[index + 1] == 10) ? 2 : 1
                        continue
                    }
                    let nextIsBreak = index + 1 >= count || input[index + 1] == 13 || input[index + 1] == 10
                    let literal = (byte >= 33 && byte <= 126 && byte != 61) || ((byte == 32 || byte == 9) && !nextIsBreak)
                    let width = literal ? 1 : 3
                    if lineLength + width > 75 {
                        out[written] = 61
                        out[written + 1] = 13
                        out[written + 2] = 10
                        written += 3
                        lineLength = 0
                    }
                    if literal {
                        out[written] = byte
                    } else {
                        out[written] = 61
                        out[written + 1] = hex(byte >> 4)
                        out[written + 2] = hex(byte & 0xF)
                    }
                    written += width
                    lineLength += width
                    index += 1
                }
                return written
            }
        }
    }

    /// Base64 in lines of 76 characters, each ended by CRLF (the last one too). Written into
    /// the result's storage directly: Foundation's encoder with line options was the largest
    /// single cost of rendering a 200 KiB invoice.
    public static func base64Lines(_ bytes: [UInt8]) -> String {
        let groups = (bytes.count + 2) / 3
        let lines = max(1, (groups + 18) / 19)
        return String(unsafeUninitializedCapacity: groups * 4 + lines * 2) { out in
            bytes.withUnsafeBufferPointer { input in
                base64Alphabet.withUnsafeBufferPointer { alphabet in
                    var written = 0
                    var index = 0
                    var inLine = 0
                    let count = input.count
                    while index < count {
                        let b0 = input[index]
                        let b1 = index + 1 < count ? input[index + 1] : 0
                        let b2 = index + 2 < count ? input[index + 2] : 0
                        out[written] = alphabet[Int(b0 >> 2)]
                        out[written + 1] = alphabet[Int((b0 & 0x03) << 4 | b1 >> 4)]
                        out[written + 2] = index + 1 < count ? alphabet[Int((b1 & 0x0F) << 2 | b2 >> 6)] : UInt8(ascii: "=")
                        out[written + 3] = index + 2 < count ? alphabet[Int(b2 & 0x3F)] : UInt8(ascii: "=")
                        written += 4
                        index += 3
                        inLine += 1
                        if inLine == 19 || index >= count {
                            out[written] = 13
                            out[written + 1] = 10
                            written += 2
                            inLine = 0
                        }
                    }
                    if count == 0 {
                        out[0] = 13
                        out[1] = 10
                        written = 2
                    }
                    return written
                }
            }
        }
    }

    private static let base64Alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)

    /// `=?utf-8?B?...?=` when the text is not plain ASCII.
    public static func encodedWord(_ text: String) -> String {
        guard !text.utf8.allSatisfy({ $0 >= 32 && $0 < 127 }) else { return text }
        return "=?utf-8?B?\(Data(text.utf8).base64EncodedString())?="
    }

    /// RFC 5322 date in UTC, `Tue, 25 Nov 2026 09:00:00 +0000`, written byte by byte (a
    /// `DateFormatter` per message was a quarter of the cost of rendering one, and joining the
    /// fields as strings still 3% of the load generator's CPU).
    public static func date(_ date: Date) -> String {
        let (year, month, day, hour, minute, second, weekday) = civil(date)
        guard (0...9999).contains(year) else {
            func two(_ value: Int) -> String { value < 10 ? "0\(value)" : "\(value)" }
            let names = (dayNames[weekday * 3..<weekday * 3 + 3], monthNames[(month - 1) * 3..<month * 3])
            return "\(String(decoding: names.0, as: UTF8.self)), \(two(day)) \(String(decoding: names.1, as: UTF8.self)) \(year) "
                + "\(two(hour)):\(two(minute)):\(two(second)) +0000"
        }
        return String(unsafeUninitializedCapacity: 31) { out in
            var at = 0
            func byte(_ value: UInt8) {
                out[at] = value
                at += 1
            }
            func name(_ table: [UInt8], _ index: Int) { for offset in 0..<3 { byte(table[index * 3 + offset]) } }
            func two(_ value: Int) {
                byte(48 + UInt8(value / 10))
                byte(48 + UInt8(value % 10))
            }
            name(dayNames, weekday)
            byte(UInt8(ascii: ","))
            byte(UInt8(ascii: " "))
            two(day)
            byte(UInt8(ascii: " "))
            name(monthNames, month - 1)
            byte(UInt8(ascii: " "))
            two(year / 100)
            two(year % 100)
            byte(UInt8(ascii: " "))
            two(hour)
            byte(UInt8(ascii: ":"))
            two(minute)
            byte(UInt8(ascii: ":"))
            two(second)
            for value in " +0000".utf8 { byte(value) }
            return at
        }
    }

    private static let dayNames = Array("SunMonTueWedThuFriSat".utf8)
    private static let monthNames = Array("JanFebMarAprMayJunJulAugSepOctNovDec".utf8)

    /// `YYYY-MM-DD` in UTC.
    public static func isoDay(_ date: Date) -> String {
        let (year, month, day, _, _, _, _) = civil(date)
        return "\(year)-\(month < 10 ? "0" : "")\(month)-\(day < 10 ? "0" : "")\(day)"
    }

    /// UTC calendar fields (days-from-civil inverse, proleptic Gregorian); weekday 0 is Sunday.
    public static func civil(_ date: Date) -> (Int, Int, Int, Int, Int, Int, Int) {
        let seconds = Int(date.timeIntervalSince1970.rounded(.down))
        let days = Int((Double(seconds) / 86_400).rounded(.down))
        let secondOfDay = seconds - days * 86_400
        let z = days + 719_468
        let era = (z >= 0 ? z : z - 146_096) / 146_097
        let dayOfEra = z - era * 146_097
        let yearOfEra = (dayOfEra - dayOfEra / 1460 + dayOfEra / 36_524 - dayOfEra / 146_096) / 365
        let dayOfYear = dayOfEra - (365 * yearOfEra + yearOfEra / 4 - yearOfEra / 100)
        let mp = (5 * dayOfYear + 2) / 153
        let day = dayOfYear - (153 * mp + 2) / 5 + 1
        let month = mp < 10 ? mp + 3 : mp - 9
        let year = yearOfEra + era * 400 + (month <= 2 ? 1 : 0)
        let weekday = ((days % 7) + 11) % 7
        return (year, month, day, secondOfDay / 3600, secondOfDay / 60 % 60, secondOfDay % 60, weekday)
    }
}
