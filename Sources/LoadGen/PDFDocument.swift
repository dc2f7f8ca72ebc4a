import Foundation
import MailMessage
import Synchronization

/// A minimal, valid PDF 1.4 document: one A4 page with a few lines of text in Helvetica, padded
/// (with comment lines inside the page's content stream, which readers ignore) to about `size`
/// bytes. The cross-reference table holds the real byte offsets, so readers open it without repair.
public enum PDFDocument {
    /// Each text line is a fixed-width string slot, so documents of one size and line count
    /// share one layout (and every byte offset): a message's PDF is the cached document with
    /// its lines written into the slots, not a document built afresh (a fifth of the cost of a
    /// 200 KiB invoice was building it).
    static let slotWidth = 100

    private struct Layout {
        var bytes: [UInt8]
        /// Offsets of the line slots (inside the parentheses).
        var slots: [Int]
        /// `bytes` in base64 lines (`MIMEWriter.base64Lines`).
        var base64: [UInt8]
    }

    private static let layouts = Mutex<[Int: Layout]>([:])

    public static func make(lines: [String], size: Int = 0) -> [UInt8] {
        let layout = layout(lineCount: lines.count, size: size)
        var output = layout.bytes
        fill(&output, lines: lines, slots: layout.slots, from: 0)
        return output
    }

    /// `make(lines:size:)` in base64 lines, as a MIME part carries it.
    public static func base64(lines: [String], size: Int = 0) -> String {
        encodedBody(lines: lines, size: size).string
    }

    /// `base64(lines:size:)` without writing it out: the cached layout's encoding with only the
    /// lines that hold the text encoded again (base64 maps each 57 bytes to one 76-character
    /// line, so the rest is unchanged), to be copied once into the message.
    static func encodedBody(lines: [String], size: Int = 0) -> EncodedBody {
        let layout = layout(lineCount: lines.count, size: size)
        guard let first = layout.slots.first, let last = layout.slots.last else { return EncodedBody(shared: layout.base64) }
        let start = first / 57 * 57
        let end = min(layout.bytes.count, (last + slotWidth + 56) / 57 * 57)
        var block = Array(layout.bytes[start..<end])
        fill(&block, lines: lines, slots: layout.slots, from: start)
        return EncodedBody(shared: layout.base64, at: start / 57 * 78, patch: Array(MIMEWriter.base64Lines(block).utf8))
    }

    private static func layout(lineCount: Int, size: Int) -> Layout {
        let key = size &* 64 &+ lineCount
        if let cached = layouts.withLock({ $0[key] }) { return cached }
        let built = build(lineCount: lineCount, size: size)
        layouts.withLock { cache in
            if cache.count > 64 { cache.removeAll() }
            cache[key] = built
        }
        return built
    }

    /// Writes each line into its slot; `bytes` starts at offset `from` of the document.
    private static func fill(_ bytes: inout [UInt8], lines: [String], slots: [Int], from: Int) {
        bytes.withUnsafeMutableBufferPointer { buffer in
            for (line, offset) in zip(lines, slots) {
                for (index, byte) in fitted(line).utf8.enumerated() { buffer[offset - from + index] = byte }
            }
        }
    }

    /// The line escaped and cut to the slot (never inside an escape).
    private static func fitted(_ line: String) -> String {
        var text = escape(line)
        var cut = line
        while text.utf8.count > slotWidth, !cut.isEmpty {
            cut.removeLast()
            text = escape(cut)
        }
        return text
    }

    private static func build(lineCount: Int, size: Int) -> Layout {
        let blank = String(repeating: " ", count: slotWidth)
        var content = "BT\n/F1 14 Tf\n72 770 Td\n18 TL\n"
        for _ in 0..<lineCount {
            content += "(\(blank)) Tj T*\n"
        }
        content += "ET\n"
        // Everything but the padding is under 1 KiB; pad the stream to reach `size`: whole
        // filler lines, then one comment line of spaces for the rest.
        let overhead = 700 + content.utf8.count
        if size > overhead {
            let padding = size - overhead
            let filler = "% " + String(repeating: "swallow load padding ", count: 3) + "\n"
            let lines = padding / filler.utf8.count
            let rest = padding - lines * filler.utf8.count
            content += String(repeating: filler, count: lines)
            if rest > 0 { content += "%" + String(repeating: " ", count: max(0, rest - 2)) + "\n" }
        }
        let objects = [
            "<< /Type /Catalog /Pages 2 0 R >>",
            "<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
            "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 595 842] /Contents 4 0 R /Resources << /Font << /F1 5 0 R >> >> >>",
            "<< /Length \(content.utf8.count) >>\nstream\n\(content)endstream",
            "<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica /Encoding /WinAnsiEncoding >>",
        ]
        var output: [UInt8] = Array("%PDF-1.4\n%\u{E2}\u{E3}\u{CF}\u{D3}\n".utf8)
        var offsets: [Int] = []
        var slots: [Int] = []
        for (index, body) in objects.enumerated() {
            offsets.append(output.count)
            let head = Array("\(index + 1) 0 obj\n".utf8)
            if index == 3 {
                // The slots: each `(` of the content's text lines.
                let start = output.count + head.count + Array("<< /Length \(content.utf8.count) >>\nstream\n".utf8).count
                var position = start
                for byte in content.utf8.prefix(while: { _ in slots.count < lineCount }) {
                    if byte == UInt8(ascii: "(") { slots.append(position + 1) }
                    position += 1
                }
            }
            output += head
            output += Array("\(body)\nendobj\n".utf8)
        }
        let xref = output.count
        var table = "xref\n0 \(objects.count + 1)\n0000000000 65535 f \n"
        for offset in offsets {
            table += String(format: "%010d 00000 n \n", offset)
        }
        table += "trailer\n<< /Size \(objects.count + 1) /Root 1 0 R >>\nstartxref\n\(xref)\n%%EOF\n"
        output += Array(table.utf8)
        return Layout(bytes: output, slots: slots, base64: Array(MIMEWriter.base64Lines(output).utf8))
    }

    /// PDF string literal escapes; non-Latin characters become `?` (Helvetica's WinAnsi has none).
    private static func escape(_ text: String) -> String {
        var result = ""
        for scalar in text.unicodeScalars {
            switch scalar {
            case "(", ")", "\\": result += "\\\(scalar)"
            case _ where scalar.value >= 0x20 && scalar.value < 0x7F: result.unicodeScalars.append(scalar)
            default: result += "?"
            }
        }
        return result
    }
}
