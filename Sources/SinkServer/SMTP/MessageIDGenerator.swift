import Synchronization

/// Sortable message ids: 10 base-32 digits of milliseconds since the epoch, then 6 of a
/// process-wide counter. Ids made later sort later (lexicographically), within and across runs.
enum MessageIDGenerator {
    private static let counter = Atomic<UInt64>(0)
    private static let alphabet = Array("0123456789ABCDEFGHJKMNPQRSTVWXYZ".utf8)

    static func next(nanos: Int64) -> String {
        let sequence = counter.add(1, ordering: .relaxed).newValue
        var digits = [UInt8](repeating: 0, count: 16)
        var millis = UInt64(max(nanos, 0) / 1_000_000)
        for index in stride(from: 9, through: 0, by: -1) {
            digits[index] = alphabet[Int(millis & 31)]
            millis >>= 5
        }
        var rest = sequence & ((1 << 30) - 1)
        for index in stride(from: 15, through: 10, by: -1) {
            digits[index] = alphabet[Int(rest & 31)]
            rest >>= 5
        }
        return String(decoding: digits, as: UTF8.self)
    }
}
