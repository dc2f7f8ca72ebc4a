import CoreFoundation
import Foundation
import Synchronization

/// Wall-clock time in nanoseconds since the Unix epoch: capture timestamps must be comparable
/// across processes (the load generator's send times), so this is CLOCK_REALTIME.
enum WallClock {
    static func nanos() -> Int64 {
        var spec = timespec()
        clock_gettime(CLOCK_REALTIME, &spec)
        return Int64(spec.tv_sec) * 1_000_000_000 + Int64(spec.tv_nsec)
    }

    private static let lastDate = Mutex<(seconds: Int64, text: String)>((-1, ""))

    /// `Wed, 25 Nov 2026 01:47:30 +0000` (RFC 5322 §3.3), in UTC; formatted once per second.
    static func rfc5322Date(nanos: Int64) -> String {
        let seconds = nanos / 1_000_000_000
        if let cached = lastDate.withLock({ $0.seconds == seconds ? $0.text : nil }) { return cached }
        let text = format(seconds: seconds)
        lastDate.withLock { $0 = (seconds, text) }
        return text
    }

    private static func format(seconds: Int64) -> String {
        var seconds = time_t(seconds)
        var parts = tm()
        gmtime_r(&seconds, &parts)
        let days = ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]
        let months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
        func two(_ value: Int32) -> String { value < 10 ? "0\(value)" : "\(value)" }
        return "\(days[Int(parts.tm_wday)]), \(parts.tm_mday) \(months[Int(parts.tm_mon)]) \(parts.tm_year + 1900) "
            + "\(two(parts.tm_hour)):\(two(parts.tm_min)):\(two(parts.tm_sec)) +0000"
    }
}
