import Foundation
import SMTPProtocol
import SwallowConfig

/// Where in an SMTP session a fault rule is consulted.
public enum FaultPhase: String, CaseIterable, Sendable, Codable {
    /// The connection is accepted, before anything is written.
    case connect
    /// The `220` banner is about to be written.
    case greeting
    case ehlo, starttls, auth, mail, rcpt
    /// DATA or the first BDAT, before `354` (or before the chunk is read).
    case data
    /// After the final dot (or BDAT LAST), before the reply.
    case dataEnd = "data-end"
    case quit
    /// Proxy mode only: the upstream could not be reached, did not answer in time, or answered
    /// what does not parse. A rule's `reply` here replaces the `451 4.4.1` (`4.4.2`) the client
    /// would get.
    case upstream

    /// The phase's place in `allCases` (a bit of a mask, a slot of a table), without making
    /// the array: it is asked for at every consulted phase.
    var index: Int {
        switch self {
        case .connect: 0
        case .greeting: 1
        case .ehlo: 2
        case .starttls: 3
        case .auth: 4
        case .mail: 5
        case .rcpt: 6
        case .data: 7
        case .dataEnd: 8
        case .quit: 9
        case .upstream: 10
        }
    }
}

/// A pattern over an address, a host name or a user name: a glob (`*@flaky.example`, `?`
/// for one character) or, when it starts with `~`, a regular expression (`~^user[0-9]+@`).
/// Both are case-insensitive; a glob must match the whole text, a regular expression anywhere.
public struct FaultPattern: Sendable, CustomStringConvertible {
    public let description: String
    private let matcher: Matcher

    private enum Matcher: Sendable {
        case any
        case exact([UInt8])
        case prefix([UInt8])
        case suffix([UInt8])
        case glob([UInt8])
        case regex(RegexBox)
    }

    /// Throws the reason when the pattern cannot be compiled.
    public init(_ text: String) throws(FaultRuleError) {
        description = text
        if text.hasPrefix("~") {
            do {
                matcher = .regex(RegexBox(try Regex(String(text.dropFirst())).ignoresCase()))
            } catch {
                throw FaultRuleError("not a valid regular expression: \(error)")
            }
            return
        }
        let bytes = Array(text.lowercased().utf8)
        let stars = bytes.filter { $0 == UInt8(ascii: "*") }.count
        if bytes.contains(UInt8(ascii: "?")) || stars > 1 {
            matcher = bytes.allSatisfy({ $0 == UInt8(ascii: "*") }) ? .any : .glob(bytes)
        } else if stars == 0 {
            matcher = .exact(bytes)
        } else if bytes == [UInt8(ascii: "*")] {
            matcher = .any
        } else if bytes.first == UInt8(ascii: "*") {
            matcher = .suffix(Array(bytes.dropFirst()))
        } else if bytes.last == UInt8(ascii: "*") {
            matcher = .prefix(Array(bytes.dropLast()))
        } else {
            matcher = .glob(bytes)
        }
    }

    public func matches(_ text: String) -> Bool {
        switch matcher {
        case .any: return true
        case .regex(let box): return (try? box.regex.firstMatch(in: text)) != nil
        default: break
        }
        var text = text
        return text.withUTF8 { raw in
            switch matcher {
            case .exact(let pattern): return raw.count == pattern.count && Self.equalFolded(raw[...], pattern[...])
            case .prefix(let pattern): return raw.count >= pattern.count && Self.equalFolded(raw[..<pattern.count], pattern[...])
            case .suffix(let pattern): return raw.count >= pattern.count && Self.equalFolded(raw[(raw.count - pattern.count)...], pattern[...])
            case .glob(let pattern): return Self.glob(pattern, raw)
            case .any, .regex: return true
            }
        }
    }

    private static func lower(_ byte: UInt8) -> UInt8 {
        byte >= UInt8(ascii: "A") && byte <= UInt8(ascii: "Z") ? byte | 0x20 : byte
    }

    private static func equalFolded(_ text: Slice<UnsafeBufferPointer<UInt8>>, _ pattern: ArraySlice<UInt8>) -> Bool {
        zip(text, pattern).allSatisfy { lower($0) == $1 }
    }

    /// `*` and `?` over bytes, backtracking only to the last star: linear in practice.
    private static func glob(_ pattern: [UInt8], _ text: UnsafeBufferPointer<UInt8>) -> Bool {
        var p = 0, t = 0
        var star = -1, mark = 0
        while t < text.count {
            if p < pattern.count, pattern[p] == UInt8(ascii: "?") || pattern[p] == lower(text[t]) {
                p += 1
                t += 1
            } else if p < pattern.count, pattern[p] == UInt8(ascii: "*") {
                star = p
                mark = t
                p += 1
            } else if star >= 0 {
                p = star + 1
                mark += 1
                t = mark
            } else {
                return false
            }
        }
        while p < pattern.count, pattern[p] == UInt8(ascii: "*") { p += 1 }
        return p == pattern.count
    }
}

/// Swift's `Regex` is not declared `Sendable`; a compiled one is only ever read.
final class RegexBox: @unchecked Sendable {
    let regex: Regex<AnyRegexOutput>
    init(_ regex: Regex<AnyRegexOutput>) { self.regex = regex }
}

/// A rule that cannot be used, and why (the reader adds the file, line and field).
public struct FaultRuleError: Error, Sendable, CustomStringConvertible {
    public var description: String
    init(_ description: String) { self.description = description }
}

/// What must hold for a rule to be considered (`match:` in a rule file).
public struct FaultMatch: Sendable {
    /// One or more phases (a rule file may give a list).
    public var phases: [FaultPhase]
    public var sender: FaultPattern?
    /// At `rcpt`, the recipient of the command; at `data` and `data-end`, any recipient.
    public var recipient: FaultPattern?
    /// The client's IP address.
    public var client: FaultPattern?
    public var helo: FaultPattern?
    public var authUser: FaultPattern?
    /// At `data-end`: header name to pattern over its first value; every one must match.
    public var headers: [(name: String, pattern: FaultPattern)] = []
    public var rate: RateMatch?

    public init(phases: [FaultPhase]) { self.phases = phases }
}

/// `rate: {over: 100/s, per: client}`: matches while more than `over` events of the rule's
/// phase arrive in one window (a second for `/s`, a minute for `/m`), counted per client IP,
/// per sender, or in total, the way a provider's rate limiter answers 421 or 451.
public struct RateMatch: Sendable {
    public enum Key: String, Sendable { case client, sender, total }
    public var over: Double
    public var window: Double
    public var per: Key
    public var text: String
}

/// A delay: fixed, or drawn from a distribution within bounds (seconds).
public enum FaultDelay: Sendable, Equatable {
    case fixed(Double)
    case uniform(min: Double, max: Double)
    case normal(mean: Double, stddev: Double, min: Double, max: Double)
    /// `median` and the log-space standard deviation; bounds in seconds.
    case lognormal(median: Double, sigma: Double, min: Double, max: Double)

    /// No delay is longer than this.
    public static let limit = 600.0

    /// A sample, from two independent uniform draws in (0, 1).
    func sample(_ u1: Double, _ u2: Double) -> Double {
        // Box-Muller: one standard normal from two uniforms.
        let z = (-2 * Foundation.log(u1)).squareRoot() * cos(2 * Double.pi * u2)
        let value: Double
        switch self {
        case .fixed(let seconds): value = seconds
        case .uniform(let low, let high): value = low + (high - low) * u1
        case .normal(let mean, let stddev, let low, let high): value = Swift.min(high, Swift.max(low, mean + stddev * z))
        case .lognormal(let median, let sigma, let low, let high): value = Swift.min(high, Swift.max(low, median * exp(sigma * z)))
        }
        return Swift.min(Self.limit, Swift.max(0, value))
    }
}

/// What a rule does when it fires (`action:`): an optional delay, and at most one effect.
public struct FaultAction: Sendable {
    public enum Effect: Sendable {
        /// Answer this instead (a `421` also closes the connection).
        case reply(SMTPReply)
        /// Close the connection; first write `reply`, or `partial` bytes with no line end.
        case disconnect(reply: SMTPReply?, partial: String?)
        /// Read but never answer, until the client gives up (or the idle timeout).
        case hang
        /// From now on, this connection moves at most this many bytes per second (both
        /// directions share one budget).
        case throttle(bytesPerSecond: Int)
        /// At data-end: answer `250` but keep nothing (counted as dropped).
        case drop
        /// At rcpt: `451 4.7.1` to the first attempt of each client/sender/recipient triple,
        /// and to every retry sooner than `retryAfter` seconds.
        case greylist(retryAfter: Double)
    }

    public var delay: FaultDelay?
    public var effect: Effect?
}

/// One rule: match, when and how often, action.
public struct FaultRule: Sendable {
    public var name: String
    public var match: FaultMatch
    /// 0...1; nil: always (subject to `every`).
    public var probability: Double?
    /// Fires on every Nth matching event.
    public var every: Int?
    /// Active only from this many seconds after the rule set was loaded...
    public var after: Double?
    /// ... and until this many.
    public var until: Double?
    /// Retires after firing this many times (`times:`; how `POST /api/v1/faults/next` works).
    public var times: Int?
    public var action: FaultAction
    /// The rule as written, for `GET /api/v1/faults`.
    public var source: JSONValue = .object([])

    public init(name: String, match: FaultMatch, action: FaultAction) {
        self.name = name
        self.match = match
        self.action = action
    }
}
