import Foundation

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
        do {
            var data = Data()
            for item in items {
                data.append(try encoder.encode(item))
                data.append(0x0A)
            }
            if replacing {
                try data.write(to: URL(fileURLWithPath: path), options: .atomic)
            } else {
                if !FileManager.default.fileExists(atPath: path) { FileManager.default.createFile(atPath: path, contents: nil) }
                let handle = try FileHandle(forWritingTo: URL(fileURLWithPath: path))
                defer { try? handle.close() }
                try handle.seekToEnd()
                try handle.write(contentsOf: data)
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
