import Foundation
import SMTPProtocol
import SwallowConfig

/// A fault rule file (`swallow serve --faults FILE`, `PUT /api/v1/faults`), in DESIGN.md's
/// fixed format:
///
/// ```yaml
/// seed: 42
/// rules:
///   - name: flaky-recipients
///     match: {phase: rcpt, recipient: "*@flaky.example"}
///     probability: 0.2
///     action: {reply: {code: 451, enhanced: "4.3.0", text: "Try again later"}}
/// ```
///
/// Every mistake is an `InputError` naming the file, the line and the field
/// (`rules[1].action.reply.code`). JSON is YAML, so the API takes the same document as JSON.
public struct FaultRuleSet: Sendable {
    public var seed: UInt64?
    public var rules: [FaultRule]

    public init(seed: UInt64? = nil, rules: [FaultRule] = []) {
        self.seed = seed
        self.rules = rules
    }

    public static func load(path: String) throws(InputError) -> FaultRuleSet {
        try parse(try YAMLReader.read(path: path), file: path)
    }

    /// Keys `GET /api/v1/faults` adds to what was written: accepted and ignored by
    /// `parse(_:file:acceptingReadOnlyKeys: true)`, so a script can read, edit and write back.
    static let readOnlyDocumentKeys: Set<String> = ["next", "compat", "fired"]
    static let readOnlyRuleKeys: Set<String> = ["fired", "remaining"]

    /// The whole document; a bare list is taken as its `rules`. With `acceptingReadOnlyKeys`
    /// (the API's PUT), the keys GET adds are ignored rather than refused.
    public static func parse(_ text: String, file: String = "faults", acceptingReadOnlyKeys: Bool = false) throws(InputError) -> FaultRuleSet {
        let root = try YAMLReader.parse(text, file: file)
        let readOnly = acceptingReadOnlyKeys ? readOnlyRuleKeys : []
        if root.isSequence { return FaultRuleSet(rules: try parseRules(root, ignoring: readOnly)) }
        _ = try root.keys(allowed: Set(["seed", "rules"]).union(acceptingReadOnlyKeys ? readOnlyDocumentKeys : []))
        // The API shows a seed as a signed 64-bit number (JSON has no unsigned): take its bits.
        let seed = try root.optional("seed").map { (reader: YAMLReader) throws(InputError) in
            UInt64(bitPattern: Int64(try reader.int(in: Int.min...Int.max)))
        }
        let rules = try root.optional("rules").map { (reader: YAMLReader) throws(InputError) in try parseRules(reader, ignoring: readOnly) } ?? []
        return FaultRuleSet(seed: seed, rules: rules)
    }

    static func parseRules(_ reader: YAMLReader, ignoring readOnly: Set<String> = []) throws(InputError) -> [FaultRule] {
        var names = Set<String>()
        var rules: [FaultRule] = []
        for (index, item) in try reader.items().enumerated() {
            let rule = try parseRule(item, defaultName: "rule-\(index + 1)", ignoring: readOnly)
            guard names.insert(rule.name).inserted else {
                throw try item.required("name").error("two rules are named `\(rule.name)`; names must be unique")
            }
            rules.append(rule)
        }
        return rules
    }

    /// One rule (also the body of `POST /api/v1/faults/next`).
    public static func parseRule(_ reader: YAMLReader, defaultName: String, ignoring readOnly: Set<String> = []) throws(InputError) -> FaultRule {
        _ = try reader.keys(allowed: Set(["name", "match", "probability", "every", "after", "until", "times", "action"]).union(readOnly))
        let name = try reader.optional("name")?.string() ?? defaultName
        if let field = try reader.optional("name"), name.isEmpty || name.count > 100 || name.contains(where: { $0.isNewline || $0 == "\"" }) {
            throw field.error("a name is 1 to 100 characters, no quotes or line breaks")
        }
        let match = try parseMatch(try reader.required("match"))
        var rule = FaultRule(name: name, match: match, action: try parseAction(try reader.required("action"), phases: match.phases))
        rule.probability = try reader.optional("probability")?.double(in: 0...1)
        rule.every = try reader.optional("every")?.int(in: 1...Int(Int32.max))
        rule.times = try reader.optional("times")?.int(in: 1...Int(Int32.max))
        rule.after = try reader.optional("after")?.duration()
        rule.until = try reader.optional("until")?.duration()
        if let after = rule.after, let until = rule.until, until <= after, let field = try reader.optional("until") {
            throw field.error("must be later than `after`")
        }
        if let field = try reader.optional("match")?.optional("rate"), match.phases.contains(where: { $0 == .greeting }) {
            throw field.error("count connections at phase connect, not greeting")
        }
        rule.source = reader.jsonValue()
        if !readOnly.isEmpty, case .object(let entries) = rule.source {
            rule.source = .object(entries.filter { !readOnly.contains($0.0) })
        }
        return rule
    }

    // MARK: match

    /// Which phases each match key can be checked at.
    private static let keyPhases: [String: Set<FaultPhase>] = [
        "sender": [.mail, .rcpt, .data, .dataEnd, .upstream],
        "recipient": [.rcpt, .data, .dataEnd, .upstream],
        "helo": [.ehlo, .starttls, .auth, .mail, .rcpt, .data, .dataEnd, .quit, .upstream],
        "auth_user": [.mail, .rcpt, .data, .dataEnd, .quit, .upstream],
        "header": [.dataEnd],
    ]

    private static func parseMatch(_ reader: YAMLReader) throws(InputError) -> FaultMatch {
        let keys = try reader.keys(allowed: ["phase", "sender", "recipient", "client", "helo", "auth_user", "header", "rate"])
        let phaseReader = try reader.required("phase")
        let phaseItems = phaseReader.isSequence ? try phaseReader.items() : [phaseReader]
        var phases: [FaultPhase] = []
        for item in phaseItems {
            guard let phase = FaultPhase(rawValue: try item.string()) else {
                throw item.error("unknown phase (expected one of: \(FaultPhase.allCases.map(\.rawValue).joined(separator: ", ")))")
            }
            if !phases.contains(phase) { phases.append(phase) }
        }
        guard !phases.isEmpty else { throw phaseReader.error("name at least one phase") }
        for key in keys {
            guard let allowed = keyPhases[key], let field = try reader.optional(key) else { continue }
            if let phase = phases.first(where: { !allowed.contains($0) }) {
                throw field.error(
                    "cannot be matched at phase \(phase.rawValue) (it can at: \(FaultPhase.allCases.filter(allowed.contains).map(\.rawValue).joined(separator: ", ")))"
                )
            }
        }
        var match = FaultMatch(phases: phases)
        match.sender = try pattern(reader, "sender")
        match.recipient = try pattern(reader, "recipient")
        match.client = try pattern(reader, "client")
        match.helo = try pattern(reader, "helo")
        match.authUser = try pattern(reader, "auth_user")
        if let headers = try reader.optional("header") {
            for (name, value) in try headers.entries() {
                guard !name.isEmpty, name.allSatisfy({ $0.isASCII && $0 != ":" && !$0.isWhitespace }) else {
                    throw value.error("not a header name")
                }
                match.headers.append((name, try compile(value)))
            }
        }
        if let rate = try reader.optional("rate") {
            _ = try rate.keys(allowed: ["over", "per"])
            let over = try rate.required("over")
            let text = try over.string()
            let parts = text.split(separator: "/", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
            let windows = ["s": 1.0, "m": 60.0, "h": 3600.0]
            guard parts.count == 2, let count = Double(parts[0]), count >= 0, count.isFinite, let window = windows[parts[1]] else {
                throw over.error("expected a rate such as 100/s or 600/m")
            }
            let perReader = try rate.optional("per")
            let per =
                try perReader.map { (reader: YAMLReader) throws(InputError) -> RateMatch.Key in
                    guard let key = RateMatch.Key(rawValue: try reader.string()) else { throw reader.error("expected client, sender or total") }
                    return key
                } ?? .total
            if per == .sender, let phase = phases.first(where: { !keyPhases["sender"]!.contains($0) }), let perReader {
                throw perReader.error("no sender is known at phase \(phase.rawValue)")
            }
            match.rate = RateMatch(over: count, window: window, per: per, text: text)
        }
        return match
    }

    private static func pattern(_ reader: YAMLReader, _ key: String) throws(InputError) -> FaultPattern? {
        try reader.optional(key).map(compile)
    }

    private static func compile(_ reader: YAMLReader) throws(InputError) -> FaultPattern {
        do {
            return try FaultPattern(try reader.string())
        } catch let error as FaultRuleError {
            throw reader.error(error.description)
        } catch let error as InputError {
            throw error
        } catch {
            throw reader.error("\(error)")
        }
    }

    // MARK: action

    private static func parseAction(_ reader: YAMLReader, phases: [FaultPhase]) throws(InputError) -> FaultAction {
        let keys = try reader.keys(allowed: ["delay", "reply", "disconnect", "hang", "throttle", "drop", "greylist"])
        var action = FaultAction()
        if let delay = try reader.optional("delay") { action.delay = try parseDelay(delay) }
        let effects = keys.filter { $0 != "delay" }
        if effects.count > 1, let second = try reader.optional(effects[1]) {
            throw second.error("a rule has at most one action besides `delay` (it also has `\(effects[0])`)")
        }
        if let key = effects.first, let value = try reader.optional(key) {
            action.effect = try parseEffect(key, value, phases: phases)
        }
        guard action.delay != nil || action.effect != nil else {
            throw reader.error("name an action: delay, reply, disconnect, hang, throttle, drop or greylist")
        }
        return action
    }

    private static func parseEffect(_ key: String, _ value: YAMLReader, phases: [FaultPhase]) throws(InputError) -> FaultAction.Effect? {
        func only(_ allowed: FaultPhase) throws(InputError) {
            if let phase = phases.first(where: { $0 != allowed }) {
                throw value.error("`\(key)` acts at phase \(allowed.rawValue) only, not \(phase.rawValue)")
            }
        }
        switch key {
        case "reply":
            return .reply(try parseReply(value))
        case "disconnect":
            if !value.isMapping { return try value.bool() ? .disconnect(reply: nil, partial: nil) : nil }
            _ = try value.keys(allowed: ["reply", "partial"])
            let reply = try value.optional("reply").map(parseReply)
            let partial = try value.optional("partial")?.string()
            if reply != nil, partial != nil, let field = try value.optional("partial") {
                throw field.error("give either a reply or a partial reply, not both")
            }
            if let partial, partial.contains(where: \.isNewline) || partial.utf8.count > 512, let field = try value.optional("partial") {
                throw field.error("a partial reply is one line of at most 512 bytes")
            }
            return .disconnect(reply: reply, partial: partial)
        case "hang":
            return try value.bool() ? .hang : nil
        case "throttle":
            let text = try value.string()
            guard text.hasSuffix("/s"), let bytes = Quantity.size(String(text.dropLast(2))), bytes > 0 else {
                throw value.error("expected bytes per second such as 64KiB/s")
            }
            return .throttle(bytesPerSecond: bytes)
        case "drop":
            try only(.dataEnd)
            return try value.bool() ? .drop : nil
        case "greylist":
            try only(.rcpt)
            var retryAfter = 60.0
            if value.isMapping {
                _ = try value.keys(allowed: ["retry_after"])
                retryAfter = try value.optional("retry_after")?.duration() ?? retryAfter
            } else if try !value.bool() {
                return nil
            }
            return .greylist(retryAfter: retryAfter)
        default:
            return nil
        }
    }

    /// `{code: 451, enhanced: "4.3.0", text: "..."}` (text may be a list of lines), or the
    /// same in one string: `"451 4.3.0 Try again later"`.
    static func parseReply(_ reader: YAMLReader) throws(InputError) -> SMTPReply {
        var code: Int
        var enhanced: EnhancedStatusCode?
        var lines: [String]
        if reader.isMapping {
            _ = try reader.keys(allowed: ["code", "enhanced", "text"])
            code = try reader.required("code").int(in: 400...599)
            if let field = try reader.optional("enhanced") {
                guard let parsed = EnhancedStatusCode(try field.string()) else {
                    throw field.error("expected an enhanced status code such as 4.3.0")
                }
                enhanced = parsed
            }
            if let text = try reader.optional("text") {
                lines =
                    text.isSequence
                    ? try text.items().map { (item: YAMLReader) throws(InputError) in try item.string() }
                    : try text.string().split(whereSeparator: \.isNewline).map(String.init)
            } else {
                lines = []
            }
        } else {
            let words = try reader.string().split(separator: " ", maxSplits: 2).map(String.init)
            guard let first = words.first, let number = Int(first), (400...599).contains(number) else {
                throw reader.error("expected a reply such as \"451 4.3.0 Try again later\" (code 400 to 599)")
            }
            code = number
            var rest = Array(words.dropFirst())
            if let word = rest.first, let parsed = EnhancedStatusCode(word) {
                enhanced = parsed
                rest.removeFirst()
            }
            lines = rest.isEmpty ? [] : [rest.joined(separator: " ")]
        }
        if let enhanced, enhanced.statusClass != code / 100 {
            throw reader.error("the enhanced code \(enhanced) does not agree with the reply code \(code)")
        }
        if lines.contains(where: { $0.utf8.count > 500 || $0.contains(where: \.isNewline) }) {
            throw reader.error("reply lines are at most 500 bytes")
        }
        if lines.isEmpty { lines = ["Fault injected by Swallow"] }
        return SMTPReply(code: ReplyCode(rawValue: code), enhanced: enhanced ?? EnhancedStatusCode(code / 100, 0, 0), lines: lines)
    }

    // MARK: delay

    /// `2s`, or `{distribution: fixed|uniform|normal|lognormal, ...}` with `min`/`max` bounds.
    static func parseDelay(_ reader: YAMLReader) throws(InputError) -> FaultDelay {
        func checked(_ seconds: Double, _ field: YAMLReader) throws(InputError) -> Double {
            guard seconds <= FaultDelay.limit else { throw field.error("at most 10m") }
            return seconds
        }
        guard reader.isMapping else { return .fixed(try checked(try reader.duration(), reader)) }
        let distribution = try reader.optional("distribution")?.string() ?? "fixed"
        func value(_ key: String) throws(InputError) -> Double {
            let field = try reader.required(key)
            return try checked(try field.duration(), field)
        }
        func bound(_ key: String, _ fallback: Double) throws(InputError) -> Double {
            guard let field = try reader.optional(key) else { return fallback }
            return try checked(try field.duration(), field)
        }
        switch distribution {
        case "fixed":
            _ = try reader.keys(allowed: ["distribution", "value"])
            return .fixed(try value("value"))
        case "uniform":
            _ = try reader.keys(allowed: ["distribution", "min", "max"])
            let low = try value("min"), high = try value("max")
            guard high >= low else { throw try reader.required("max").error("must not be less than min") }
            return .uniform(min: low, max: high)
        case "normal":
            _ = try reader.keys(allowed: ["distribution", "mean", "stddev", "min", "max"])
            let mean = try value("mean"), stddev = try value("stddev")
            let low = try bound("min", 0), high = try bound("max", FaultDelay.limit)
            guard high >= low else { throw try reader.required("max").error("must not be less than min") }
            return .normal(mean: mean, stddev: stddev, min: low, max: high)
        case "lognormal":
            _ = try reader.keys(allowed: ["distribution", "median", "p99", "sigma", "min", "max"])
            let median = try value("median")
            guard median > 0 else { throw try reader.required("median").error("must be more than 0") }
            let sigma: Double
            if let p99 = try reader.optional("p99") {
                let seconds = try checked(try p99.duration(), p99)
                guard seconds > median else { throw p99.error("must be more than the median") }
                // The 99th percentile of a standard normal is 2.3263.
                sigma = Foundation.log(seconds / median) / 2.326_347_874
            } else if let field = try reader.optional("sigma") {
                sigma = try field.double(in: 0...10)
            } else {
                throw reader.error("a lognormal delay needs p99 (or sigma)")
            }
            let low = try bound("min", 0), high = try bound("max", FaultDelay.limit)
            guard high >= low else { throw try reader.required("max").error("must not be less than min") }
            return .lognormal(median: median, sigma: sigma, min: low, max: high)
        default:
            throw try reader.required("distribution").error("expected fixed, uniform, normal or lognormal")
        }
    }
}
