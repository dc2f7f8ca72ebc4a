/// Content-Transfer-Encoding decoders (RFC 2045 §6). Both are lenient: bytes that cannot be
/// decoded are skipped (base64) or kept as they are (quoted-printable), as mail readers do.
public enum TransferDecoding {
    /// Decodes `encoding` (`base64`, `quoted-printable`; anything else is identity).
    public static func decode(_ bytes: ArraySlice<UInt8>, encoding: String?) -> [UInt8] {
        switch encoding?.lowercased() {
        case "base64": base64(bytes)
        case "quoted-printable": quotedPrintable(bytes)
        default: Array(bytes)
        }
    }

    private static let base64Values: [UInt8] = {
        var table = [UInt8](repeating: 0xFF, count: 256)
        for (index, byte) in "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8.enumerated() {
            table[Int(byte)] = UInt8(index)
        }
        // URL-safe alphabet too: some senders use it.
        table[Int(UInt8(ascii: "-"))] = 62
        table[Int(UInt8(ascii: "_"))] = 63
        return table
    }()

    /// How many bytes `decode` returns, without making them: an attachment's size costs no
    /// copy of its content (base64 is counted symbol by symbol; quoted-printable is decoded).
    public static func decodedCount(_ bytes: ArraySlice<UInt8>, encoding: String?) -> Int {
        switch encoding?.lowercased() {
        case "base64":
            let table = base64Values
            var symbols = 0
            for byte in bytes {
                if byte == UInt8(ascii: "=") { break }
                if table[Int(byte)] != 0xFF { symbols += 1 }
            }
            return symbols * 6 / 8
        case "quoted-printable": return quotedPrintable(bytes).count
        default: return bytes.count
        }
    }

    /// Base64 ignoring whitespace and anything outside the alphabet; stops at padding.
    public static func base64(_ bytes: ArraySlice<UInt8>) -> [UInt8] {
        var output: [UInt8] = []
        output.reserveCapacity(bytes.count * 3 / 4)
        var accumulator: UInt32 = 0
        var bits = 0
        // Read once: a global's accessor inside the loop would run for every byte.
        let table = base64Values
        for byte in bytes {
            if byte == UInt8(ascii: "=") { break }
            let value = table[Int(byte)]
            if value == 0xFF { continue }
            accumulator = (accumulator << 6) | UInt32(value)
            bits += 6
            if bits >= 8 {
                bits -= 8
                output.append(UInt8((accumulator >> UInt32(bits)) & 0xFF))
            }
        }
        return output
    }

    /// Quoted-printable: `=XX` escapes and `=` soft line breaks (RFC 2045 §6.7).
    public static func quotedPrintable(_ bytes: ArraySlice<UInt8>, underscoreIsSpace: Bool = false) -> [UInt8] {
        var output: [UInt8] = []
        output.reserveCapacity(bytes.count)
        var index = bytes.startIndex
        while index < bytes.endIndex {
            let byte = bytes[index]
            if byte == UInt8(ascii: "=") {
                // Soft line break: "=" then optional whitespace then CRLF or LF.
                var look = index + 1
                while look < bytes.endIndex && (bytes[look] == UInt8(ascii: " ") || bytes[look] == UInt8(ascii: "\t")) { look += 1 }
                if look < bytes.endIndex && bytes[look] == UInt8(ascii: "\r") && look + 1 < bytes.endIndex && bytes[look + 1] == UInt8(ascii: "\n") {
                    index = look + 2
                    continue
                }
                if look < bytes.endIndex && bytes[look] == UInt8(ascii: "\n") {
                    index = look + 1
                    continue
                }
                if look == bytes.endIndex {
                    index = look
                    continue
                }
                if index + 2 < bytes.endIndex, let high = hex(bytes[index + 1]), let low = hex(bytes[index + 2]) {
                    output.append(high << 4 | low)
                    index += 3
                    continue
                }
                output.append(byte)
                index += 1
            } else if underscoreIsSpace && byte == UInt8(ascii: "_") {
                output.append(UInt8(ascii: " "))
                index += 1
            } else {
                output.append(byte)
                index += 1
            }
        }
        return output
    }

    private static func hex(_ byte: UInt8) -> UInt8? {
        switch byte {
        case UInt8(ascii: "0")...UInt8(ascii: "9"): byte - UInt8(ascii: "0")
        case UInt8(ascii: "A")...UInt8(ascii: "F"): byte - UInt8(ascii: "A") + 10
        case UInt8(ascii: "a")...UInt8(ascii: "f"): byte - UInt8(ascii: "a") + 10
        default: nil
        }
    }
}
