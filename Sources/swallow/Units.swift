import ArgumentParser

/// The fixed formats of DESIGN.md: durations `250ms`, `2s`, `1.5s`, `1m`; sizes `512B`, `120KiB`, `2MiB`.
enum Units {
    static func duration(_ text: String, option: String) throws -> Double {
        let units: [(String, Double)] = [("ms", 0.001), ("us", 0.000_001), ("s", 1), ("m", 60), ("h", 3600)]
        for (suffix, scale) in units where text.hasSuffix(suffix) {
            if let value = Double(text.dropLast(suffix.count)), value >= 0 { return value * scale }
        }
        throw ValidationError("\(option): expected a duration such as 250ms, 2s, 1.5s or 1m, got \(text)")
    }

    static func bytes(_ text: String, option: String) throws -> Int {
        let units: [(String, Double)] = [("KiB", 1024), ("MiB", 1024 * 1024), ("GiB", 1024 * 1024 * 1024), ("B", 1)]
        for (suffix, scale) in units where text.hasSuffix(suffix) {
            if let value = Double(text.dropLast(suffix.count)), value > 0 { return Int(value * scale) }
        }
        if let value = Int(text), value > 0 { return value }
        throw ValidationError("\(option): expected a size such as 512B, 120KiB or 2MiB, got \(text)")
    }
}
