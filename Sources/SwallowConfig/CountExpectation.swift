/// How many of something an expectation asks for: `>=N`, `>N`, `==N`, `<=N`, `<N`, or `N`
/// (meaning `==N`); spaces ignored. The wait route's `count=`, `swallow assert --count` and
/// `swallow assert retries --attempts` read it.
public struct CountExpectation: Sendable, Equatable {
    public var comparison: String
    public var value: Int

    public init?(_ text: String) {
        let text = String(text.filter { $0 != " " })
        for comparison in [">=", "<=", "==", ">", "<", ""] where text.hasPrefix(comparison) {
            guard let value = Int(text.dropFirst(comparison.count)), value >= 0 else { return nil }
            self.comparison = comparison.isEmpty ? "==" : comparison
            self.value = value
            return
        }
        return nil
    }

    public var description: String { "\(comparison)\(value)" }

    /// Answered as soon as it holds (more cannot undo it).
    public var isLowerBound: Bool { comparison == ">=" || comparison == ">" }

    /// The most it admits (nil: no bound).
    public var upperBound: Int? {
        switch comparison {
        case "==", "<=": value
        case "<": value - 1
        default: nil
        }
    }

    public func holds(_ count: Int) -> Bool {
        switch comparison {
        case ">=": count >= value
        case ">": count > value
        case "<=": count <= value
        case "<": count < value
        default: count == value
        }
    }
}
