import HTTPTypes
import Hummingbird
import NIOCore

/// Responses that carry captured mail (its HTML, text, raw bytes, parts): data, never a page of
/// ours. A captured message is hostile input: its HTML may hold scripts that would otherwise
/// run in the API's origin and call `DELETE /api/v1/messages` in the browser of whoever opens
/// it. So every such response is sandboxed by CSP (no script, no same-origin, nothing loaded
/// but inline styles and `data:`/`cid:` images) and never content-sniffed; what is not meant
/// to be shown (raw bytes, parts other than images) is plain text or a download.
enum CapturedContent {
    /// The policy on every response that carries captured content.
    static let contentSecurityPolicy = "sandbox; default-src 'none'; img-src data: cid:; style-src 'unsafe-inline'"

    static func headers(contentType: String) -> HTTPFields {
        [
            .contentType: contentType,
            .contentSecurityPolicy: contentSecurityPolicy,
            .xContentTypeOptions: "nosniff",
        ]
    }

    /// Captured bytes with the sandboxing headers; `download` makes it an attachment with that
    /// (sanitised) file name.
    static func response(_ body: ByteBuffer, contentType: String, download fileName: String? = nil) -> Response {
        var fields = headers(contentType: contentType)
        if let fileName { fields[.contentDisposition] = ContentDisposition.attachment(fileName: fileName) }
        return Response(status: .ok, headers: fields, body: .init(byteBuffer: body))
    }

    /// Image types a browser shows as an image and nothing else (not SVG: it can hold script).
    /// These may be served inline, so a message's `cid:` images show in the sandboxed view.
    static func isInertImage(_ contentType: String) -> Bool {
        let type = String(contentType.prefix { $0 != ";" }.filter { $0 != " " && $0 != "\t" }).lowercased()
        return ["image/png", "image/jpeg", "image/jpg", "image/gif", "image/webp", "image/bmp", "image/avif"].contains(type)
    }
}

/// `Content-Disposition: attachment` with a file name taken from mail (RFC 6266).
///
/// The name is hostile input. The header holds no path separator (`/`, `\`), no control
/// character (so no CR/LF header injection, no NUL), no leading dot (no hidden or `..` files),
/// and no quote in the quoted fallback; non-ASCII names go in `filename*=UTF-8''…`
/// (RFC 8187 percent-encoding) beside an ASCII fallback. The JSON API keeps the original
/// name: it is data there.
enum ContentDisposition {
    static func attachment(fileName: String) -> String {
        let safe = sanitised(fileName)
        let fallback = String(
            String.UnicodeScalarView(
                safe.unicodeScalars.map { scalar in
                    scalar.isASCII && scalar != "\"" && scalar != "%" ? scalar : "_"
                }))
        guard safe.unicodeScalars.contains(where: { !$0.isASCII || $0 == "\"" || $0 == "%" }) else {
            return "attachment; filename=\"\(safe)\""
        }
        return "attachment; filename=\"\(fallback)\"; filename*=UTF-8''\(percentEncoded(safe))"
    }

    /// The name with separators and control characters replaced, leading dots and spaces
    /// dropped, at most 200 bytes; "attachment" when nothing is left.
    static func sanitised(_ name: String) -> String {
        var scalars = String.UnicodeScalarView()
        for scalar in name.unicodeScalars {
            switch scalar.value {
            case 0x00...0x1F, 0x7F...0x9F, 0x2028, 0x2029: scalars.append("_")
            case 0x2F, 0x5C: scalars.append("_")  // "/" and "\"
            default: scalars.append(scalar)
            }
        }
        var result = Substring(String(scalars))
        while let first = result.first, first == "." || first == " " || first == "_" && result.dropFirst().first == "." {
            result = result.dropFirst()
        }
        while result.utf8.count > 200 { result = result.dropLast() }
        while result.last == " " { result = result.dropLast() }
        return result.isEmpty ? "attachment" : String(result)
    }

    /// RFC 8187 `attr-char`s stay, every other byte of the UTF-8 is `%XX`.
    static func percentEncoded(_ text: String) -> String {
        var out = ""
        for byte in text.utf8 {
            switch byte {
            case UInt8(ascii: "a")...UInt8(ascii: "z"), UInt8(ascii: "A")...UInt8(ascii: "Z"), UInt8(ascii: "0")...UInt8(ascii: "9"):
                out.unicodeScalars.append(UnicodeScalar(byte))
            case UInt8(ascii: "!"), UInt8(ascii: "#"), UInt8(ascii: "$"), UInt8(ascii: "&"), UInt8(ascii: "+"), UInt8(ascii: "-"),
                UInt8(ascii: "."), UInt8(ascii: "^"), UInt8(ascii: "_"), UInt8(ascii: "`"), UInt8(ascii: "|"), UInt8(ascii: "~"):
                out.unicodeScalars.append(UnicodeScalar(byte))
            default:
                let hex = Array("0123456789ABCDEF".utf8)
                out.unicodeScalars.append("%")
                out.unicodeScalars.append(UnicodeScalar(hex[Int(byte >> 4)]))
                out.unicodeScalars.append(UnicodeScalar(hex[Int(byte & 0x0F)]))
            }
        }
        return out
    }
}
