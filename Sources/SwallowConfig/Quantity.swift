import Foundation

/// The fixed formats of DESIGN.md: durations `250ms`, `2s`, `1.5s`, `1m`; rates `200/s`,
/// `12000/m`; sizes `512B`, `120KiB`, `2MiB`. Each parser returns nil for text it cannot read;
/// callers say which field was wrong.
public enum Quantity {
    /// The longest duration read: 10^9 s (31 years). Durations become nanoseconds in `Int64`
    /// (at most 9.2 x 10^18) and are added to clocks; a longer one would trap there.
    public static let longestDuration = 1e9

    /// Seconds, at most `longestDuration`.
    public static func duration(_ text: String) -> Double? {
        let text = text.trimmingCharacters(in: .whitespaces)
        for (suffix, scale) in [("ms", 0.001), ("us", 0.000_001), ("s", 1.0), ("m", 60.0), ("h", 3600.0)] where text.hasSuffix(suffix) {
            if let value = Double(text.dropLast(suffix.count)), value >= 0, value * scale <= longestDuration { return value * scale }
        }
        return nil
    }

    /// Events per second.
    public static func rate(_ text: String) -> Double? {
        let parts = text.trimmingCharacters(in: .whitespaces).split(separator: "/", maxSplits: 1)
        guard parts.count == 2, let value = Double(parts[0].trimmingCharacters(in: .whitespaces)), value >= 0, value.isFinite else {
            return nil
        }
        switch parts[1].trimmingCharacters(in: .whitespaces) {
        case "s": return value
        case "m": return value / 60
        case "h": return value / 3600
        default: return nil
        }
    }

    /// Bytes.
    public static func size(_ text: String) -> Int? {
        let text = text.trimmingCharacters(in: .whitespaces)
        for (suffix, scale) in [("KiB", 1024.0), ("MiB", 1_048_576.0), ("GiB", 1_073_741_824.0), ("B", 1.0)] where text.hasSuffix(suffix) {
            // Below 2^63 (`Double(Int.max)`), or `Int(_:)` traps (found by FuzzScenario:
            // `size: 0000000020000000000000000000000000000000000MiB`).
            if let value = Double(text.dropLast(suffix.count)), value >= 0, value * scale < Double(Int.max) { return Int(value * scale) }
        }
        return Int(text).flatMap { $0 >= 0 ? $0 : nil }
    }

    /// `1.5s`, `250ms`, `12.3µs` — for summaries.
    public static func format(seconds: Double) -> String {
        if seconds >= 1 { return String(format: "%.2fs", seconds) }
        if seconds >= 0.001 { return String(format: "%.1fms", seconds * 1000) }
        return String(format: "%.0fµs", seconds * 1_000_000)
    }
}
