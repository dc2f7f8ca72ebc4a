import Foundation
import MailMessage

/// A file of one JSON object a line, as the audit keeps with `--data` (`attempts.jsonl`,
/// `timeline.jsonl`): lines appended as they come, the whole file rewritten (atomically) when
/// it has grown past what it holds, every line read back at start. Failures are reported to
/// the store's health (logged, counted, `degraded`), never swallowed.
struct JSONLinesFile: Sendable {
    let path: String
    let health: StorageHealth?

    /// Appends `items`, or with `replacing` writes them as the whole file.
    func write(_ items: [some Encodable], replacing: Bool = false) {
        let encoder = JSONEncoder()
        encoder.outputFormatting = .sortedKeys
        write(items, replacing: replacing) { chunk in
            var data = Data()
            for item in chunk {
                data.append(try encoder.encode(item))
                data.append(0x0A)
            }
            return data
        }
    }

    /// Appends `items` (or replaces the file with them), each written by its own `writeJSON`.
    func write(_ items: [some JSONLine], replacing: Bool = false) {
        write(items, replacing: replacing) { chunk in
            var out = JSONWriter()
            for item in chunk {
                item.writeJSON(&out)
                out.newline()
            }
            return out.bytes
        }
    }

    private func write<Item>(_ items: [Item], replacing: Bool, encode: (ArraySlice<Item>) throws -> some DataProtocol) {
        // A rewrite goes to a file beside, then takes its name; either way the lines are
        // written a thousand at a time, never held whole (a soak's RSS stepped up by 29 MiB
        // when 100 000 attempts were encoded into one buffer).
        let target = replacing ? path + ".new" : path
        do {
            if replacing || !FileManager.default.fileExists(atPath: target) {
                FileManager.default.createFile(atPath: target, contents: nil)
            }
            let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: target))
            defer { try? handle.close() }
            try handle.seekToEnd()
            var start = items.startIndex
            while start < items.endIndex {
                let end = items.index(start, offsetBy: 1000, limitedBy: items.endIndex) ?? items.endIndex
                try handle.write(contentsOf: try encode(items[start..<end]))
                start = end
            }
            if replacing {
                try handle.synchronize()
                guard rename(target, path) == 0 else { throw CocoaError(.fileWriteUnknown) }
            }
            health?.succeeded(.audit)
        } catch {
            health?.failed(.audit, "write \(path)", error)
        }
    }

    /// Every line that decodes as `Item`, in order; lines that do not are skipped and reported.
    func read<Item: Decodable>(_ type: Item.Type) -> [Item] {
        guard let data = FileManager.default.contents(atPath: path) else { return [] }
        let decoder = JSONDecoder()
        var items: [Item] = []
        var skipped = 0
        for line in data.split(separator: 0x0A) where !line.isEmpty {
            if let item = try? decoder.decode(Item.self, from: Data(line)) { items.append(item) } else { skipped += 1 }
        }
        if skipped > 0 { health?.failed(.audit, "read \(path)", Unreadable(lines: skipped)) }
        return items
    }

    struct Unreadable: Error, CustomStringConvertible {
        var lines: Int
        var description: String { "\(lines) lines that do not parse were skipped" }
    }
}

/// What `JSONLinesFile` writes without `JSONEncoder`: the audit records one attempt per
/// recipient, and `JSONEncoder` spent 14 µs of the event loop's time per 1 KiB message on
/// `attempts.jsonl` (`perf record`, `--data` with `--fsync never`).
protocol JSONLine: Encodable {
    /// The item as one JSON object with the keys and shapes `encode(to:)` gives, sorted.
    func writeJSON(_ out: inout JSONWriter)
}
