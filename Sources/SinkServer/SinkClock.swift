import CSwallowSystem
import CoreFoundation
import Foundation
import NIOCore
import Synchronization

/// The sink's time, injected where decisions depend on it (the fault engine's `after`/`until`,
/// rate windows and greylisting; the mailbox registry's TTLs): the system's clocks in the sink,
/// a `ManualClock` in tests, which then run in microseconds instead of waiting.
///
/// Delays the connection carries out are scheduled on its event loop, whose own clock an
/// `EmbeddedEventLoop` advances in tests (`advanceTime(by:)`).
public struct SinkClock: Sendable {
    /// Monotonic nanoseconds (only differences mean anything).
    public var monotonicNanos: @Sendable () -> UInt64
    /// Nanoseconds since the Unix epoch.
    public var wallNanos: @Sendable () -> Int64

    public init(monotonicNanos: @escaping @Sendable () -> UInt64, wallNanos: @escaping @Sendable () -> Int64) {
        self.monotonicNanos = monotonicNanos
        self.wallNanos = wallNanos
    }

    public static let system = SinkClock(
        monotonicNanos: { NIODeadline.now().uptimeNanoseconds },
        wallNanos: { WallClock.nanos() }
    )
}

/// A clock that moves only when told to: `clock` reads it, `advance(by:)` moves it.
public final class ManualClock: Sendable {
    private let monotonic: Atomic<UInt64>
    private let wall: Atomic<Int64>

    public init(wallNanos: Int64 = 1_800_000_000_000_000_000) {
        monotonic = Atomic(1_000_000_000)
        wall = Atomic(wallNanos)
    }

    public func advance(by duration: Duration) {
        let nanos = duration.wholeNanoseconds
        monotonic.add(UInt64(nanos), ordering: .relaxed)
        wall.add(nanos, ordering: .relaxed)
    }

    public var clock: SinkClock {
        SinkClock(
            monotonicNanos: { [self] in monotonic.load(ordering: .relaxed) },
            wallNanos: { [self] in wall.load(ordering: .relaxed) }
        )
    }
}

extension Duration {
    /// Whole nanoseconds (what the event loop schedules in).
    var wholeNanoseconds: Int64 {
        components.seconds * 1_000_000_000 + components.attoseconds / 1_000_000_000
    }

    var milliseconds: Double { Double(wholeNanoseconds) / 1e6 }

    static func seconds(exactly seconds: Double) -> Duration {
        .nanoseconds(Int64((seconds * 1e9).rounded()))
    }
}

/// Wall-clock time in nanoseconds since the Unix epoch: capture timestamps must be comparable
/// across processes (the load generator's send times), so this is CLOCK_REALTIME.
enum WallClock {
    static func nanos() -> Int64 {
        Int64(swallow_realtime_nanos())
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

    /// RFC 3339 in UTC with milliseconds (`2026-12-04T15:54:04.158Z`), as Foundation's
    /// `ISO8601DateFormatter` with fractional seconds writes it, without its ICU formatter
    /// (a profile of proxy mode had a quarter of its CPU in making one per hop).
    static func rfc3339(nanos: Int64) -> String {
        let milliseconds = nanos >= 0 ? nanos / 1_000_000 : (nanos - 999_999) / 1_000_000
        var seconds = time_t(milliseconds >= 0 ? milliseconds / 1000 : (milliseconds - 999) / 1000)
        let fraction = Int32(milliseconds - Int64(seconds) * 1000)
        var parts = tm()
        gmtime_r(&seconds, &parts)
        func pad(_ value: Int32, _ width: Int) -> String {
            let text = String(value)
            return String(repeating: "0", count: max(0, width - text.count)) + text
        }
        return "\(pad(parts.tm_year + 1900, 4))-\(pad(parts.tm_mon + 1, 2))-\(pad(parts.tm_mday, 2))T"
            + "\(pad(parts.tm_hour, 2)):\(pad(parts.tm_min, 2)):\(pad(parts.tm_sec, 2)).\(pad(fraction, 3))Z"
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
