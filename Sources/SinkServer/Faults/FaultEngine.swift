import Foundation
import MailMessage
import NIOCore
import SMTPProtocol
import Synchronization

/// One rule in force, with its counters.
final class ActiveRule: Sendable {
    let rule: FaultRule
    /// Mixed into every random draw of this rule, from its name (FNV-1a: stable across runs).
    let salt: UInt64
    /// Monotonic nanoseconds when the rule was put in force (`after`/`until` count from here).
    let loaded: UInt64
    /// A mailbox's own rule (`?mailbox=N`): matches only transactions filed under it.
    let scope: String?
    private let state = Mutex(State())

    struct State {
        var matched: UInt64 = 0
        var fired = 0
        var retired = false
        var windows: [String: RateWindow] = [:]
        /// Greylisting: client/sender/recipient triple → first attempt (monotonic nanoseconds).
        var greylist: [String: UInt64] = [:]
    }

    /// A sliding-window rate estimate: this window's count plus the previous window's,
    /// weighted by how much of it still overlaps the last `window` seconds.
    struct RateWindow {
        var index: UInt64
        var current: Double
        var previous: Double
    }

    /// Bounds on what a rule remembers per key, so traffic from many clients cannot grow memory.
    static let maxKeys = 100_000

    init(_ rule: FaultRule, now: UInt64, scope: String? = nil) {
        self.rule = rule
        self.loaded = now
        self.scope = scope
        var hash: UInt64 = 0xcbf2_9ce4_8422_2325
        for byte in rule.name.utf8 {
            hash = (hash ^ UInt64(byte)) &* 0x0000_0100_0000_01b3
        }
        self.salt = hash
    }

    var fired: Int { state.withLock { $0.fired } }
    var isRetired: Bool { state.withLock { $0.retired } }

    /// The stateless part: phase, time window and patterns.
    func matches(_ event: FaultEvent, now: UInt64) -> Bool {
        let match = rule.match
        if let scope, !event.mailboxes.contains(scope) { return false }
        let elapsed = Double(now &- loaded) / 1e9
        if let after = rule.after, elapsed < after { return false }
        if let until = rule.until, elapsed >= until { return false }
        if let pattern = match.client, !pattern.matches(event.client) { return false }
        if let pattern = match.helo, !pattern.matches(event.helo ?? "") { return false }
        if let pattern = match.authUser, !pattern.matches(event.authUser ?? "") { return false }
        if let pattern = match.sender, !pattern.matches(event.sender ?? "") { return false }
        if let pattern = match.recipient, !event.recipients.contains(where: pattern.matches) { return false }
        for (name, pattern) in match.headers {
            guard let value = event.header(name), pattern.matches(value) else { return false }
        }
        return true
    }

    /// The stateful part: rate, every, probability, greylisting, times. Returns the decision
    /// and whether the rule just retired.
    func decide(_ event: FaultEvent, seed: UInt64, now: UInt64) -> (FaultDecision, retired: Bool)? {
        state.withLock { state -> (FaultDecision, retired: Bool)? in
            guard !state.retired else { return nil }
            if let rate = rule.match.rate {
                let key: String =
                    switch rate.per {
                    case .client: event.client
                    case .sender: event.sender ?? ""
                    case .total: ""
                    }
                guard Self.count(&state.windows, key: key, rate: rate, now: now) > rate.over else { return nil }
            }
            state.matched += 1
            let n = state.matched
            if let every = rule.every, n % UInt64(every) != 0 { return nil }
            if let probability = rule.probability, FaultEngine.draw(seed, salt, n, 0) >= probability { return nil }
            if case .greylist(let retryAfter) = rule.action.effect {
                let triple = "\(event.client)|\(event.sender ?? "")|\(event.recipients.first ?? "")"
                if let first = state.greylist[triple] {
                    if Double(now &- first) / 1e9 >= retryAfter { return nil }
                } else {
                    if state.greylist.count >= Self.maxKeys {
                        let horizon = UInt64(max(retryAfter, 3600) * 1e9)
                        state.greylist = state.greylist.filter { now &- $0.value < horizon }
                        if state.greylist.count >= Self.maxKeys { state.greylist.removeAll() }
                    }
                    state.greylist[triple] = now
                }
            }
            state.fired += 1
            if let times = rule.times, state.fired >= times { state.retired = true }
            let seconds = rule.action.delay?.sample(FaultEngine.draw(seed, salt, n, 1), FaultEngine.draw(seed, salt, n, 2)) ?? 0
            let delay = Duration.seconds(exactly: seconds)
            var effect = rule.action.effect
            var greylisted: Double?
            if case .greylist(let retryAfter) = effect {
                effect = .reply(SMTPReply(451, "4.7.1", "Greylisted, try again in \(Int(retryAfter.rounded(.up))) seconds"))
                greylisted = retryAfter
            }
            var decision = FaultDecision(rule: rule.name, phase: event.phase, delay: delay, effect: effect)
            decision.retryAfter = greylisted
            return (decision, state.retired)
        }
    }

    /// Counts this event in its key's window; the estimated count over the last window.
    private static func count(_ windows: inout [String: RateWindow], key: String, rate: RateMatch, now: UInt64) -> Double {
        let length = UInt64(rate.window * 1e9)
        let index = now / length
        let position = Double(now % length) / Double(length)
        if windows[key] == nil, windows.count >= maxKeys {
            windows = windows.filter { index &- $0.value.index <= 1 }
            if windows.count >= maxKeys { windows.removeAll() }
        }
        var window = windows[key] ?? RateWindow(index: index, current: 0, previous: 0)
        if window.index != index {
            window.previous = window.index + 1 == index ? window.current : 0
            window.current = 0
            window.index = index
        }
        window.current += 1
        windows[key] = window
        return window.previous * (1 - position) + window.current
    }
}

/// The sink's fault engine: the rules in force, consulted at every SMTP phase.
///
/// Rules come in groups, consulted in this order: the "next N" rules of
/// `POST /api/v1/faults/next`, the rule set (`--faults FILE`, `PUT /api/v1/faults`), then
/// the Mailpit chaos triggers and MailHog's Jim. Within a phase the first rule that fires
/// wins. A rule that matches but does not fire (its probability, `every`, rate or greylist
/// says no) lets the next one try.
///
/// Repeatable: each random decision is a hash of (seed, rule name, N) where N counts the
/// events that rule matched, so the same seed and the same traffic in the same order fire
/// the same rules with the same delays, whatever the timing.
public final class FaultEngine: Sendable {
    private struct State {
        var rules: [ActiveRule] = []
        var next: [ActiveRule] = []
        var chaos = MailpitChaos()
        var jim: MailHogJim?
        var compat: [ActiveRule] = []
        /// Per mailbox: its own rule set and "next N" rules, consulted before the global ones.
        var scoped: [String: (rules: [ActiveRule], next: [ActiveRule])] = [:]
        /// Per phase, every active rule in consulting order.
        var byPhase: [[ActiveRule]] = Array(repeating: [], count: FaultPhase.allCases.count)
        var nextCounter = 0

        /// `byPhase` made again, and the phases that have rules as a bitmask.
        mutating func reindex() -> UInt32 {
            let all = scoped.values.flatMap { $0.next + $0.rules } + next + rules + compat
            byPhase = FaultPhase.allCases.map { phase in all.filter { $0.rule.match.phases.contains(phase) } }
            var mask: UInt32 = 0
            for (index, rules) in byPhase.enumerated() where !rules.isEmpty { mask |= 1 << UInt32(index) }
            return mask
        }
    }

    private let state = Mutex(State())
    private let currentSeed: Atomic<UInt64>
    /// Bit `phase.index` set while some rule is in force at that phase: read without the lock,
    /// so a phase with no rules costs one atomic load.
    private let phaseMask = Atomic<UInt32>(0)
    /// Fired counts by rule name since start, across rule set changes (a mailbox's own rules:
    /// per mailbox in `scopedTotals`).
    private let totals = Mutex<[String: Int]>([:])
    private let scopedTotals = Mutex<[String: [String: Int]]>([:])
    /// `--seed`: when given, a rule set's own `seed:` does not override it.
    private let fixedSeed: Bool

    /// Where `after`/`until`, rate windows and greylisting read the time.
    let clock: SinkClock

    /// `seed`: from `--seed`; nil picks one at random (shown by `GET /api/v1/faults`).
    /// `clock`: the system's, or a `ManualClock`'s in tests.
    public init(seed: UInt64? = nil, rules: FaultRuleSet = FaultRuleSet(), clock: SinkClock = .system) {
        self.clock = clock
        fixedSeed = seed != nil
        currentSeed = Atomic(seed ?? rules.seed ?? UInt64.random(in: 0...UInt64(Int64.max)))
        replace(rules)
    }

    // MARK: Consulting

    /// The rules to consult at `phase` (empty, cheaply, when there are none).
    func rules(for phase: FaultPhase) -> [ActiveRule] {
        guard phaseMask.load(ordering: .relaxed) & (1 << UInt32(phase.index)) != 0 else { return [] }
        return state.withLock { $0.byPhase[phase.index] }
    }

    var seed: UInt64 { currentSeed.load(ordering: .relaxed) }

    /// The decision for `event` by the rules in force at its phase, or nil when none fires.
    func decide(_ event: FaultEvent) -> FaultDecision? {
        decide(event, rules: rules(for: event.phase))
    }

    /// The decision of the first of `rules` that fires for `event`.
    func decide(_ event: FaultEvent, rules: [ActiveRule]) -> FaultDecision? {
        guard !rules.isEmpty else { return nil }
        let now = clock.monotonicNanos()
        let seed = self.seed
        for rule in rules where rule.matches(event, now: now) {
            guard let (decision, retired) = rule.decide(event, seed: seed, now: now) else { continue }
            if let scope = rule.scope {
                scopedTotals.withLock { $0[scope, default: [:]][decision.rule, default: 0] += 1 }
            } else {
                totals.withLock { $0[decision.rule, default: 0] += 1 }
            }
            if retired { retire(rule) }
            return decision
        }
        return nil
    }

    /// Fired counts by rule name since start: the global rules', or a mailbox's own.
    public func firedCounts(mailbox: String? = nil) -> [String: Int] {
        guard let mailbox else { return totals.withLock { $0 } }
        return scopedTotals.withLock { $0[mailbox] ?? [:] }
    }

    public var firedCounts: [String: Int] { firedCounts() }

    private func retire(_ rule: ActiveRule) {
        update { state in
            if let scope = rule.scope {
                state.scoped[scope]?.next.removeAll { $0 === rule }
                state.scoped[scope]?.rules.removeAll { $0 === rule }
            } else {
                state.next.removeAll { $0 === rule }
                state.rules.removeAll { $0 === rule }
            }
        }
    }

    /// A uniform draw in (0, 1) from (seed, salt, n, k): SplitMix64's finaliser.
    static func draw(_ seed: UInt64, _ salt: UInt64, _ n: UInt64, _ k: UInt64) -> Double {
        var z = seed &+ salt &* 0x9e37_79b9_7f4a_7c15 &+ n &* 0xbf58_476d_1ce4_e5b9 &+ k &* 0x94d0_49bb_1331_11eb
        z = (z ^ (z >> 30)) &* 0xbf58_476d_1ce4_e5b9
        z = (z ^ (z >> 27)) &* 0x94d0_49bb_1331_11eb
        z ^= z >> 31
        return (Double(z >> 11) + 0.5) / 9_007_199_254_740_992
    }

    // MARK: Changing the rules

    /// Every change goes through here: under the lock, then the per-phase index and mask.
    @discardableResult
    private func update<T>(_ change: (inout State) -> T) -> T {
        state.withLock { state in
            let result = change(&state)
            phaseMask.store(state.reindex(), ordering: .relaxed)
            return result
        }
    }

    /// Replaces the rule set (not the "next N" rules, not the compatibility triggers); with
    /// `mailbox`, that mailbox's own set (its `seed:` is ignored: the sink has one seed).
    public func replace(_ set: FaultRuleSet, mailbox: String? = nil) {
        let now = clock.monotonicNanos()
        update { state in
            let rules = set.rules.map { ActiveRule($0, now: now, scope: mailbox) }
            if let mailbox {
                state.scoped[mailbox, default: ([], [])].rules = rules
            } else {
                if let seed = set.seed, !fixedSeed { currentSeed.store(seed, ordering: .relaxed) }
                state.rules = rules
            }
        }
    }

    /// Clears the rule set and the "next N" rules (of `mailbox` only, when given).
    public func clear(mailbox: String? = nil) {
        update { state in
            if let mailbox {
                state.scoped[mailbox] = nil
            } else {
                state.rules = []
                state.next = []
            }
        }
    }

    /// Forgets a deleted mailbox's rules and counts.
    func removeMailbox(_ name: String) {
        clear(mailbox: name)
        scopedTotals.withLock { $0[name] = nil }
    }

    /// `rule` fires for exactly the next `count` events it matches, then retires. Returns the
    /// rule's name (`next-N` when it has none).
    @discardableResult
    public func addNext(_ rule: FaultRule, count: Int, mailbox: String? = nil) -> String {
        var rule = rule
        rule.times = count
        let now = clock.monotonicNanos()
        return update { state in
            state.nextCounter += 1
            if rule.name.isEmpty { rule.name = "next-\(state.nextCounter)" }
            let active = ActiveRule(rule, now: now, scope: mailbox)
            if let mailbox {
                state.scoped[mailbox, default: ([], [])].next.append(active)
            } else {
                state.next.append(active)
            }
            return rule.name
        }
    }

    /// The rules in force, for `GET /api/v1/faults`.
    var snapshot: (seed: UInt64, rules: [ActiveRule], next: [ActiveRule], compat: [ActiveRule]) { snapshot(mailbox: nil) }

    /// The rules in force, or a mailbox's own (no compatibility rules: those are global).
    func snapshot(mailbox: String?) -> (seed: UInt64, rules: [ActiveRule], next: [ActiveRule], compat: [ActiveRule]) {
        let seed = self.seed
        return state.withLock { state in
            guard let mailbox else { return (seed, state.rules, state.next, state.compat) }
            let scoped = state.scoped[mailbox]
            return (seed, scoped?.rules ?? [], scoped?.next ?? [], [])
        }
    }

    // MARK: Mailpit chaos and MailHog Jim

    public var chaos: MailpitChaos { state.withLock { $0.chaos } }

    public func setChaos(_ chaos: MailpitChaos) {
        updateCompat { $0.chaos = chaos }
    }

    public var jim: MailHogJim? { state.withLock { $0.jim } }

    public func setJim(_ jim: MailHogJim?) {
        updateCompat { $0.jim = jim }
    }

    private func updateCompat(_ change: (inout State) -> Void) {
        let now = clock.monotonicNanos()
        update { state in
            change(&state)
            state.compat = (state.chaos.rules + (state.jim?.rules ?? [])).map { ActiveRule($0, now: now) }
        }
    }
}
