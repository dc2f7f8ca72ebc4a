import Foundation
import NIOCore
import SMTPProtocol
import SwallowConfig
import SwallowTestSupport
import Testing

@testable import SinkServer

/// The rule file format and the engine's decisions, without sockets.
@Suite("Fault rules: format and engine")
struct FaultRuleTests {
    static func error(_ yaml: String) -> String {
        do {
            _ = try FaultRuleSet.parse(yaml, file: "f.yaml")
            return "no error"
        } catch {
            return error.description
        }
    }

    @Test("DESIGN.md's example reads as written")
    func designExample() throws {
        let set = try FaultRuleSet.parse(
            """
            seed: 42
            rules:
              - name: flaky-recipients
                match: {phase: rcpt, recipient: "*@flaky.example"}
                probability: 0.2
                action: {reply: {code: 451, enhanced: "4.3.0", text: "Try again later"}}
              - name: slow-accept
                match: {phase: data-end}
                action: {delay: {distribution: lognormal, median: 200ms, p99: 2s}}
              - name: drop-some-connections
                match: {phase: connect}
                every: 100
                action: {disconnect: true}
              - match: {phase: [mail, rcpt], sender: "~^bulk[0-9]+@"}
                after: 30s
                until: 2m
                action: {delay: 1s, disconnect: {reply: "421 4.4.2 Bye"}}
            """, file: "f.yaml")
        #expect(set.seed == 42)
        #expect(set.rules.map(\.name) == ["flaky-recipients", "slow-accept", "drop-some-connections", "rule-4"])
        guard case .reply(let reply) = set.rules[0].action.effect else {
            Issue.record("not a reply")
            return
        }
        #expect(reply.code.rawValue == 451 && reply.enhanced?.description == "4.3.0" && reply.lines == ["Try again later"])
        guard case .lognormal(let median, let sigma, _, _) = set.rules[1].action.delay else {
            Issue.record("not lognormal")
            return
        }
        #expect(median == 0.2 && abs(sigma - log(10) / 2.326_347_874) < 1e-9)
        #expect(set.rules[2].every == 100)
        #expect(set.rules[3].match.phases == [.mail, .rcpt] && set.rules[3].after == 30 && set.rules[3].until == 120)
        guard case .disconnect(let bye?, nil) = set.rules[3].action.effect else {
            Issue.record("not a disconnect")
            return
        }
        #expect(bye.code.rawValue == 421 && set.rules[3].action.delay == .fixed(1))
    }

    @Test("the example files in scenarios/faults read without error")
    func examples() throws {
        let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("scenarios/faults")
        let files = try FileManager.default.contentsOfDirectory(atPath: directory.path).filter { $0.hasSuffix(".yaml") }.sorted()
        #expect(files == ["flaky-provider.yaml", "greylisting-provider.yaml", "slow-provider.yaml"])
        for file in files {
            let set = try FaultRuleSet.load(path: directory.appendingPathComponent(file).path)
            #expect(!set.rules.isEmpty, "\(file)")
        }
    }

    @Test("mistakes name the file, the line and the field")
    func errors() {
        #expect(
            Self.error("rules:\n  - match: {phase: rcpt}\n    action: {reply: {code: 250}}\n")
                == "f.yaml:3: rules[0].action.reply.code: must be between 400 and 599")
        #expect(
            Self.error("rules:\n  - match: {phase: rcpt, header: {X-A: b}}\n    action: {hang: true}\n")
                .hasPrefix("f.yaml:2: rules[0].match.header: cannot be matched at phase rcpt"))
        #expect(
            Self.error("rules:\n  - match: {phase: lunch}\n    action: {hang: true}\n").hasPrefix("f.yaml:2: rules[0].match.phase: unknown phase"))
        #expect(
            Self.error("rules:\n  - match: {phase: rcpt}\n    action: {drop: true}\n")
                == "f.yaml:3: rules[0].action.drop: `drop` acts at phase data-end only, not rcpt")
        #expect(Self.error("rules:\n  - match: {phase: rcpt}\n    action: {hang: true, drop: true}\n").contains("at most one action besides `delay`"))
        #expect(
            Self.error("rules:\n  - match: {phase: rcpt}\n    probability: 1.5\n    action: {hang: true}\n")
                == "f.yaml:3: rules[0].probability: must be between 0.0 and 1.0")
        #expect(
            Self.error("rules:\n  - match: {phase: rcpt, recipient: \"~[\"}\n    action: {hang: true}\n")
                .hasPrefix("f.yaml:2: rules[0].match.recipient: not a valid regular expression"))
        #expect(Self.error("rules:\n  - match: {phase: rcpt}\n    action: {delay: 11m}\n") == "f.yaml:3: rules[0].action.delay: at most 10m")
        #expect(Self.error("rules:\n  - match: {phase: rcpt}\n    action: {throttle: fast}\n").contains("expected bytes per second"))
        #expect(Self.error("rules:\n  - match: {phase: rcpt}\n    action: {}\n").contains("name an action"))
        #expect(
            Self.error(
                "rules:\n  - {name: a, match: {phase: rcpt}, action: {hang: true}}\n  - {name: a, match: {phase: mail}, action: {hang: true}}\n"
            )
            .contains("two rules are named `a`"))
        #expect(Self.error("rules:\n  - match: {phase: rcpt}\n    action: {reply: \"451 5.1.1 mixed\"}\n").contains("does not agree"))
        #expect(Self.error("rules:\n  - match: {phase: rcpt}\n    actoin: {hang: true}\n").contains("rules[0].actoin: unknown key"))
        #expect(Self.error("rules: [\n").hasPrefix("f.yaml:"))
        // A key given twice is refused, whatever resolver types the scalars.
        #expect(Self.error("seed: 1\nseed: 2\nrules: []\n").contains("not valid YAML"))
    }

    @Test("plain scalars read as the field expects: numbers, booleans, JSON types")
    func scalarTypes() throws {
        let reader = try YAMLReader.parse("n: 42\nf: 0.25\nyes: true\nno: off\ntext: \"17\"\nnothing: ~\n", file: "t.yaml")
        #expect(try reader.required("n").int() == 42)
        #expect(try reader.required("f").double() == 0.25)
        #expect(try reader.required("yes").bool() == true)
        #expect(try reader.required("no").bool() == false)
        #expect(try reader.optional("nothing") == nil)
        #expect(
            reader.jsonValue()
                == .object([
                    ("n", .int(42)), ("f", .double(0.25)), ("yes", .bool(true)), ("no", .bool(false)), ("text", .string("17")), ("nothing", .null),
                ]))
    }

    @Test("whole numbers as YAML 1.2 writes them; base 60 and overflow are errors, not traps (found by FuzzRules)")
    func wholeNumbers() throws {
        // FuzzRules, 2026-12-05: Yams read this as base 60 and trapped on the overflow.
        #expect(throws: InputError.self) { try FaultRuleSet.parse(#"{"seed":2:2:1222222222222222:2:12:12:2:1:-0}"#) }
        let reader = try YAMLReader.parse(
            """
            hex: 0x1F
            octal: 0o17
            grouped: 1_000
            signed: -12
            sixty: 1:30
            over: 9223372036854775808
            least: -9223372036854775808
            spaced: 1 000
            exponent: 2.5e3
            time: "10:30"
            """, file: "t.yaml")
        #expect(try reader.required("hex").int() == 31)
        #expect(try reader.required("octal").int() == 15)
        #expect(try reader.required("grouped").int() == 1000)
        #expect(try reader.required("signed").int(in: -100...100) == -12)
        #expect(throws: InputError.self) { try reader.required("sixty").int() }
        #expect(throws: InputError.self) { try reader.required("over").int() }
        #expect(try reader.required("least").int(in: Int.min...0) == Int.min)
        #expect(throws: InputError.self) { try reader.required("spaced").int() }
        #expect(throws: InputError.self) { try reader.required("sixty").double() }
        #expect(try reader.required("exponent").double() == 2500)
        #expect(try reader.required("grouped").double() == 1000)
        let json = reader.jsonValue()
        #expect(
            json
                == .object([
                    ("hex", .int(31)), ("octal", .int(15)), ("grouped", .int(1000)), ("signed", .int(-12)), ("sixty", .string("1:30")),
                    ("over", .double(9223372036854775808)), ("least", .int(Int.min)), ("spaced", .string("1 000")),
                    ("exponent", .double(2500)), ("time", .string("10:30")),
                ]))
    }

    @Test("a phase's index is its place in allCases: the engine's mask bits and table slots")
    func phaseIndexes() {
        #expect(FaultPhase.allCases.map(\.index) == Array(FaultPhase.allCases.indices))
    }

    @Test("globs and regular expressions, case-insensitive")
    func patterns() throws {
        let cases: [(String, String, Bool)] = [
            ("*@flaky.example", "Bob@FLAKY.example", true),
            ("*@flaky.example", "bob@flaky.example.com", false),
            ("bob@*", "bob@x", true),
            ("a?c@*.example", "abc@mail.example", true),
            ("a?c@*.example", "ac@mail.example", false),
            ("*job*", "app+job42@x", true),
            ("exact@x", "EXACT@X", true),
            ("~^user[0-9]+@", "user17@x", true),
            ("~^user[0-9]+@", "auser17@x", false),
            ("*", "", true),
        ]
        for (pattern, text, expected) in cases {
            #expect(try FaultPattern(pattern).matches(text) == expected, "\(pattern) ~ \(text)")
        }
    }

    @Test("delay distributions stay in their bounds and centre where asked")
    func distributions() {
        var samples: [Double] = []
        for n in 1...20_000 {
            let u1 = FaultEngine.draw(7, 1, UInt64(n), 1), u2 = FaultEngine.draw(7, 1, UInt64(n), 2)
            samples.append(FaultDelay.lognormal(median: 0.2, sigma: log(10) / 2.326_347_874, min: 0, max: 600).sample(u1, u2))
        }
        samples.sort()
        #expect(abs(samples[10_000] - 0.2) < 0.01)
        #expect(abs(samples[19_800] - 2.0) < 0.25)
        let uniform = (1...1000).map { FaultDelay.uniform(min: 0.1, max: 0.3).sample(FaultEngine.draw(1, 2, UInt64($0), 1), 0.5) }
        #expect(uniform.allSatisfy { (0.1...0.3).contains($0) })
        let bounded = (1...1000).map {
            FaultDelay.normal(mean: 1, stddev: 5, min: 0.5, max: 2).sample(
                FaultEngine.draw(1, 2, UInt64($0), 1), FaultEngine.draw(1, 2, UInt64($0), 2))
        }
        #expect(bounded.allSatisfy { (0.5...2).contains($0) } && bounded.contains(0.5) && bounded.contains(2))
    }

    static func fires(_ engine: FaultEngine, _ phase: FaultPhase, recipient: String = "a@x", client: String = "127.0.0.1") -> String? {
        let event = FaultEvent(phase: phase, client: client, sender: "s@x", recipients: [recipient])
        return engine.decide(event, rules: engine.rules(for: phase))?.rule
    }

    @Test("probability 0.2 over 10 000 events fires within 3 standard deviations of 2 000; the seed decides which")
    func probabilityAndSeed() throws {
        let set = try FaultRuleSet.parse("rules:\n  - {name: p, match: {phase: rcpt}, probability: 0.2, action: {hang: true}}\n")
        func pattern(seed: UInt64) -> [Bool] {
            let engine = FaultEngine(seed: seed, rules: set)
            return (0..<10_000).map { _ in Self.fires(engine, .rcpt) != nil }
        }
        let first = pattern(seed: 1)
        let fired = first.filter { $0 }.count
        let sigma = (10_000 * 0.2 * 0.8).squareRoot()
        #expect(abs(Double(fired) - 2000) <= 3 * sigma, "fired \(fired)")
        #expect(pattern(seed: 1) == first)
        #expect(pattern(seed: 2) != first)
    }

    @Test("every, times, first match wins, a rule that does not fire lets the next one try")
    func ordering() throws {
        let engine = FaultEngine(
            seed: 1,
            rules: try FaultRuleSet.parse(
                """
                rules:
                  - {name: third, match: {phase: rcpt, recipient: "*@a.example"}, every: 3, action: {hang: true}}
                  - {name: twice, match: {phase: rcpt}, times: 2, action: {hang: true}}
                  - {name: rest, match: {phase: rcpt, recipient: "*@a.example"}, action: {delay: 1ms}}
                """))
        let fired = (0..<6).map { _ in Self.fires(engine, .rcpt, recipient: "u@a.example") ?? "-" }
        #expect(fired == ["twice", "twice", "third", "rest", "rest", "third"])
        #expect(Self.fires(engine, .rcpt, recipient: "u@b.example") == nil)
        #expect(Self.fires(engine, .mail) == nil)
        #expect(engine.snapshot.rules.map(\.rule.name) == ["third", "rest"])
        #expect(engine.firedCounts == ["third": 2, "twice": 2, "rest": 2])
    }

    @Test("rate: more than N per window, per client")
    func rate() throws {
        let engine = FaultEngine(
            seed: 1,
            rules: try FaultRuleSet.parse(
                "rules:\n  - {name: limit, match: {phase: connect, rate: {over: 3/m, per: client}}, action: {reply: \"421 4.7.0 Slow down\"}}\n"))
        let a = (0..<5).map { _ in Self.fires(engine, .connect, client: "10.0.0.1") }
        #expect(a == [nil, nil, nil, "limit", "limit"])
        #expect(Self.fires(engine, .connect, client: "10.0.0.2") == nil)
    }

    @Test("greylisting: the first attempt of a triple and early retries are refused")
    func greylist() throws {
        let engine = FaultEngine(
            seed: 1,
            rules: try FaultRuleSet.parse(
                "rules:\n  - {name: grey, match: {phase: rcpt}, action: {greylist: {retry_after: 10m}}}\n"))
        #expect(Self.fires(engine, .rcpt, recipient: "a@x") == "grey")
        #expect(Self.fires(engine, .rcpt, recipient: "a@x") == "grey")
        #expect(Self.fires(engine, .rcpt, recipient: "b@x") == "grey")
        let passing = FaultEngine(
            seed: 1,
            rules: try FaultRuleSet.parse(
                "rules:\n  - {name: grey, match: {phase: rcpt}, action: {greylist: {retry_after: 0s}}}\n"))
        #expect(Self.fires(passing, .rcpt) == "grey")
        #expect(Self.fires(passing, .rcpt) == nil)
    }

    // MARK: Time, on a manual clock

    static func engine(_ yaml: String, clock: ManualClock) throws -> FaultEngine {
        FaultEngine(seed: 1, rules: try FaultRuleSet.parse(yaml), clock: clock.clock)
    }

    @Test("greylisting on a manual clock: refused until retry_after has passed for that triple, then let through")
    func greylistManualClock() throws {
        let clock = ManualClock()
        let engine = try Self.engine("rules:\n  - {name: grey, match: {phase: rcpt}, action: {greylist: {retry_after: 5m}}}\n", clock: clock)
        #expect(Self.fires(engine, .rcpt, recipient: "a@x") == "grey")
        clock.advance(by: .seconds(299))
        #expect(Self.fires(engine, .rcpt, recipient: "a@x") == "grey")
        // Another triple starts its own wait.
        #expect(Self.fires(engine, .rcpt, recipient: "b@x") == "grey")
        clock.advance(by: .seconds(1))
        #expect(Self.fires(engine, .rcpt, recipient: "a@x") == nil)
        #expect(Self.fires(engine, .rcpt, recipient: "b@x") == "grey")
        clock.advance(by: .seconds(300))
        #expect(Self.fires(engine, .rcpt, recipient: "b@x") == nil)
    }

    @Test("rate on a manual clock: the window slides, and an idle window forgets")
    func rateManualClock() throws {
        let clock = ManualClock()
        let engine = try Self.engine(
            "rules:\n  - {name: limit, match: {phase: mail, rate: {over: 2/m, per: total}}, action: {reply: \"451 4.7.0 Slow\"}}\n", clock: clock)
        #expect((0..<4).map { _ in Self.fires(engine, .mail) } == [nil, nil, "limit", "limit"])
        // Two minutes later the earlier window no longer counts.
        clock.advance(by: .seconds(120))
        #expect((0..<3).map { _ in Self.fires(engine, .mail) } == [nil, nil, "limit"])
    }

    @Test("after and until on a manual clock: a rule acts only inside its window from when it was loaded")
    func afterUntilManualClock() throws {
        let clock = ManualClock()
        let engine = try Self.engine(
            "rules:\n  - {name: window, match: {phase: rcpt}, after: 10s, until: 20s, action: {reply: \"451 4.3.0 Later\"}}\n", clock: clock)
        #expect(Self.fires(engine, .rcpt) == nil)
        clock.advance(by: .milliseconds(9_999))
        #expect(Self.fires(engine, .rcpt) == nil)
        clock.advance(by: .milliseconds(1))
        #expect(Self.fires(engine, .rcpt) == "window")
        clock.advance(by: .milliseconds(9_999))
        #expect(Self.fires(engine, .rcpt) == "window")
        clock.advance(by: .milliseconds(1))
        #expect(Self.fires(engine, .rcpt) == nil)
    }

    @Test("times and a delay's draw are decided by the rule alone, whatever the clock says")
    func timesAndDelayManualClock() throws {
        let clock = ManualClock()
        let engine = try Self.engine(
            "rules:\n  - {name: thrice, match: {phase: rcpt}, times: 3, action: {delay: {distribution: uniform, min: 1s, max: 2s}}}\n", clock: clock)
        var delays: [Duration] = []
        for _ in 0..<5 {
            if let decision = engine.decide(FaultEvent(phase: .rcpt, client: "c", recipients: ["a@x"])) { delays.append(decision.delay) }
            clock.advance(by: .seconds(3600))
        }
        #expect(delays.count == 3)
        #expect(delays.allSatisfy { $0 >= .seconds(1) && $0 <= .seconds(2) })
        #expect(engine.snapshot.rules.isEmpty)
    }

    @Test("the built-in faults decide from the event alone, with the phase and address the table names")
    func builtIns() throws {
        func decide(_ phase: FaultPhase, sender: String = "a@x", recipients: [String], message: String? = nil) throws -> FaultDecision? {
            func mailbox(_ address: String) -> Mailbox {
                let at = address.lastIndex(of: "@")!
                return Mailbox(localPart: String(address[..<at]), domain: String(address[address.index(after: at)...]))
            }
            let reverse = ReversePath.mailbox(mailbox(sender))
            let forward = recipients.map { ForwardPath.mailbox(mailbox($0)) }
            return BuiltInFaults().decide(
                FaultEvent(
                    phase: phase, client: "c", helo: nil, authUser: nil, senderPath: reverse, recipientPaths: forward,
                    message: message.map { ByteBuffer(string: $0) }
                ))
        }
        #expect(try decide(.mail, sender: "app+fail-421@x", recipients: [])?.rule == "+fail-421")
        #expect(try decide(.rcpt, recipients: ["Bounce@x"])?.rule == "bounce@")
        #expect(try decide(.rcpt, recipients: ["tempfail+fail-550@x"])?.rule == "+fail-550")
        #expect(try decide(.rcpt, recipients: ["reject@x"]) == nil)
        #expect(try decide(.mail, recipients: ["bounce@x"]) == nil)
        #expect(try decide(.dataEnd, recipients: ["b@x", "reject@x"])?.rule == "reject@")
        let slow = try decide(.dataEnd, recipients: ["slow-2s@x", "c+delay-3s@x"], message: "X-Swallow-Fault: delay 1s\r\n\r\n")
        #expect(slow?.delay == .seconds(3) && slow?.effect == nil)
        let header = try decide(.dataEnd, recipients: ["b@x"], message: "X-Swallow-Fault: 451 4.3.0 No; delay 2s\r\n\r\n")
        #expect(header?.delay == .seconds(2) && header?.answers == true)
        #expect(try decide(.dataEnd, recipients: ["b@x"], message: "Subject: plain\r\n\r\n") == nil)
    }
}
