import Foundation

/// A minimal, valid PDF 1.4 document: one A4 page with a few lines of text in Helvetica, padded
/// (with comment lines inside the page's content stream, which readers ignore) to about `size`
/// bytes. The cross-reference table holds the real byte offsets, so readers open it without repair.
public enum PDFDocument {
    public static func make(lines: [String], size: Int = 0) -> [UInt8] {
        var content = "BT\n/F1 14 Tf\n72 770 Td\n18 TL\n"
        for line in lines {
            content += "(\(escape(line))) Tj T*\n"
        }
        content += "ET\n"
        // Everything but the padding is under 1 KiB; pad the stream to reach `size`.
        let overhead = 700 + content.utf8.count
        if size > overhead {
            // Whole filler lines, then one comment line of spaces for the rest (built in one
            // piece each: appending line by line was a fifth of the cost of a 200 KiB message).
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
        for (index, body) in objects.enumerated() {
            offsets.append(output.count)
            output += Array("\(index + 1) 0 obj\n\(body)\nendobj\n".utf8)
        }
        let xref = output.count
        var table = "xref\n0 \(objects.count + 1)\n0000000000 65535 f \n"
        for offset in offsets {
            table += String(format: "%010d 00000 n \n", offset)
        }
        table += "trailer\n<< /Size \(objects.count + 1) /Root 1 0 R >>\nstartxref\n\(xref)\n%%EOF\n"
        output += Array(table.utf8)
        return output
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
