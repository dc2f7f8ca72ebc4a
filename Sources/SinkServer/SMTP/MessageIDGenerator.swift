import Synchronization

/// Sortable message ids: 9 base-32 digits of milliseconds since the epoch (enough until the year
/// 3085), then 6 of a process-wide counter. Ids made later sort later (lexicographically), within
/// and across runs: ids of earlier versions had a tenth, leading `0` digit, so they sort before.
///
/// 15 bytes: a Swift string that short is held inline, so an id costs no allocation, and the
/// store's table, its order, the message and the audit share no heap copy (16 bytes took 64 a
/// message held).
enum MessageIDGenerator {
    private static let counter = Atomic<UInt64>(0)
    private static let alphabet = Array("0123456789ABCDEFGHJKMNPQRSTVWXYZ".utf8)

    static func next(nanos: Int64) -> String {
        let sequence = counter.add(1, ordering: .relaxed).newValue
        // Written on the stack: an array for the digits was a `malloc` per message.
        return withUnsafeTemporaryAllocation(of: UInt8.self, capacity: 15) { digits in
            var millis = UInt64(max(nanos, 0) / 1_000_000)
            for index in stride(from: 8, through: 0, by: -1) {
                digits[index] = alphabet[Int(millis & 31)]
                millis >>= 5
            }
            var rest = sequence & ((1 << 30) - 1)
            for index in stride(from: 14, through: 9, by: -1) {
                digits[index] = alphabet[Int(rest & 31)]
                rest >>= 5
            }
            return String(decoding: UnsafeBufferPointer(digits), as: UTF8.self)
        }
    }
}
