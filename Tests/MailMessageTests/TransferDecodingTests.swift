import Testing

@testable import MailMessage

@Suite("Content-Transfer-Encoding: decoding and decoded sizes")
struct TransferDecodingTests {
    /// Deterministic bytes (a linear congruential sequence), so a failure reproduces.
    static func bytes(_ count: Int, seed: UInt64) -> [UInt8] {
        var state = seed
        return (0..<count).map { _ in
            state = state &* 6_364_136_223_846_793_005 &+ 1_442_695_040_888_963_407
            return UInt8(truncatingIfNeeded: state >> 33)
        }
    }

    static let alphabet = Array("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/".utf8)

    /// Base64 as mail carries it: 76-column lines, CRLF, padding; then the same with noise.
    static func base64Samples() -> [[UInt8]] {
        var samples: [[UInt8]] = [[], Array("=".utf8), Array("QQ==".utf8), Array("QUI=".utf8), Array("QUJD".utf8)]
        for length in [1, 2, 3, 4, 57, 58, 59, 1000, 4097] {
            let data = bytes(length, seed: UInt64(length))
            var text: [UInt8] = []
            var index = 0
            while index < data.count {
                let chunk = Array(data[index..<min(index + 3, data.count)])
                let value = chunk.enumerated().reduce(UInt32(0)) { $0 | UInt32($1.element) << UInt32(16 - 8 * $1.offset) }
                for position in 0..<4 {
                    text.append(position <= chunk.count ? alphabet[Int(value >> UInt32(18 - 6 * position) & 63)] : UInt8(ascii: "="))
                }
                index += 3
                if index % 57 == 0 { text += [13, 10] }
            }
            samples.append(text)
            // Whitespace, characters outside the alphabet, URL-safe symbols and a stray "=".
            var noisy = text
            for (offset, junk) in [(5, UInt8(ascii: " ")), (9, UInt8(ascii: "*")), (13, UInt8(ascii: "-")), (17, UInt8(ascii: "_"))]
            where offset < noisy.count {
                noisy.insert(junk, at: offset)
            }
            samples.append(noisy)
            samples.append(Array(noisy.prefix(noisy.count / 2)) + Array("=".utf8) + Array(noisy.suffix(noisy.count / 2)))
        }
        return samples
    }

    @Test("a decoded size is the length of the decoding, for base64, quoted-printable and identity")
    func decodedCountMatchesDecoding() {
        for sample in Self.base64Samples() {
            let slice = ArraySlice(sample)
            #expect(TransferDecoding.decodedCount(slice, encoding: "base64") == TransferDecoding.decode(slice, encoding: "base64").count)
            #expect(TransferDecoding.decodedCount(slice, encoding: "BASE64") == TransferDecoding.base64(slice).count)
        }
        for text in ["", "plain", "caf=C3=A9 =\r\nsoft break", "=4", "==", "trailing =", "tab =\t\r\nnext", "=ZZ not hex"] {
            let slice = ArraySlice(Array(text.utf8))
            #expect(TransferDecoding.decodedCount(slice, encoding: "quoted-printable") == TransferDecoding.quotedPrintable(slice).count)
            #expect(TransferDecoding.decodedCount(slice, encoding: "7bit") == slice.count)
            #expect(TransferDecoding.decodedCount(slice, encoding: nil) == slice.count)
        }
    }

    @Test("base64 decodes what it encodes, across line ends")
    func base64RoundTrip() {
        let data = Self.bytes(1000, seed: 1000)
        let encoded = Self.base64Samples()[5 + 3 * 7]  // the 1000-byte sample, clean
        #expect(TransferDecoding.base64(ArraySlice(encoded)) == data)
    }
}
