/// One part of a run split over N processes: this one sends every Nth message of the schedule
/// (sequence numbers `index`, `index + N`, ...), so the parts are disjoint and together are
/// the whole run; each part's JSON report merges with the others (`swallow report merge`).
public struct Shard: Sendable, Equatable, CustomStringConvertible {
    /// 0-based.
    public var index: Int
    public var count: Int

    public init(index: Int, count: Int) {
        self.index = index
        self.count = count
    }

    /// `K/N`, K from 1 to N.
    public init?(parsing text: String) {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 2, let k = Int(parts[0]), let n = Int(parts[1]), n >= 1, n <= 10_000, (1...n).contains(k) else { return nil }
        self.init(index: k - 1, count: n)
    }

    func owns(_ seq: Int) -> Bool { seq % count == index }

    public var description: String { "\(index + 1)/\(count)" }
}
