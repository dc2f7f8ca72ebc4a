import Foundation

/// Text in a declared charset to a Swift string. UTF-8 and ASCII are decoded directly; the
/// Latin and Windows code pages and UTF-16 through Foundation; anything unknown or invalid as
/// UTF-8 with replacement characters, so text is never dropped.
public enum Charset {
    public static func decode(_ bytes: [UInt8], charset: String?) -> String {
        let name = (charset ?? "us-ascii").lowercased().trimmingCharacters(in: CharacterSet(charactersIn: "\" "))
        switch name {
        case "utf-8", "utf8", "us-ascii", "ascii", "":
            return String(decoding: bytes, as: UTF8.self)
        default:
            if let encoding = encodings[name], let text = String(bytes: bytes, encoding: encoding) {
                return text
            }
            return String(decoding: bytes, as: UTF8.self)
        }
    }

    private static let encodings: [String: String.Encoding] = [
        "iso-8859-1": .isoLatin1, "latin1": .isoLatin1, "iso8859-1": .isoLatin1,
        "iso-8859-2": .isoLatin2,
        "windows-1252": .windowsCP1252, "cp1252": .windowsCP1252,
        "windows-1250": .windowsCP1250, "windows-1251": .windowsCP1251,
        "windows-1253": .windowsCP1253, "windows-1254": .windowsCP1254,
        "utf-16": .utf16, "utf-16le": .utf16LittleEndian, "utf-16be": .utf16BigEndian,
        "shift_jis": .shiftJIS, "euc-jp": .japaneseEUC, "iso-2022-jp": .iso2022JP,
    ]
}
