import SwallowConfig

/// Picks templates by weight, repeatably.
struct TemplatePicker: Sendable {
    private let names: [String]
    private let cumulative: [Double]
    private var random: SeededRandom

    init(mix: [(template: String, weight: Double)], seed: UInt64) {
        names = mix.map(\.template)
        var total = 0.0
        cumulative = mix.map {
            total += $0.weight
            return total
        }
        random = SeededRandom(seed: seed ^ 0x1111_2222)
    }

    mutating func next() -> String {
        guard let total = cumulative.last, total > 0 else { return names.first ?? "" }
        let point = Double(random.next() >> 11) / Double(1 << 53) * total
        return names[cumulative.firstIndex { point < $0 } ?? names.count - 1]
    }
}
