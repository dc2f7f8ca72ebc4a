import Foundation
import SwallowConfig
import Testing

@testable import LoadGen

@Suite("Scenarios, schedules and expectations")
struct ScenarioTests {
    static let minimal = """
        name: t
        count: 10
        arrival: {kind: constant, rate: 100/s}
        templates:
          otp: {from: a@x.example, to: "u{seq}@x.example", subject: "Code {otp:6}", text: "Code {otp}"}
        """

    @Test("a valid scenario parses, with defaults")
    func parses() throws {
        let scenario = try Scenario.parse(Self.minimal)
        #expect(scenario.count == 10)
        #expect(scenario.arrival == .constant(rate: 100))
        #expect(scenario.mix.map(\.template) == ["otp"])
        #expect(scenario.connection.pool == 10)
    }

    @Test("crashes found by FuzzScenario are clear errors: sizes and durations beyond what the run can hold")
    func fuzzRegressions() throws {
        // FuzzScenario, 2026-12-05: a size past Int.max trapped converting to Int.
        let huge = Self.minimal.replacingOccurrences(
            of: "text: \"Code {otp}\"}",
            with: "text: \"Code {otp}\", attachments: [{kind: pdf, name: a.pdf, size: 0000000020000000000000000000000000000000000MiB}]}")
        #expect(huge != Self.minimal)
        do {
            _ = try Scenario.parse(huge, file: "s.yaml")
            Issue.record("a size past Int.max was accepted")
        } catch {
            #expect(error.description.contains("size"), "\(error.description)")
        }
        #expect(Quantity.size("9223372036854775808B") == nil)
        #expect(Quantity.size("8EiB") == nil && Quantity.size("1GiB") == 1 << 30)
        // Durations become Int64 nanoseconds: at most 10^9 s.
        #expect(Quantity.duration("1e300h") == nil)
        #expect(Quantity.duration("1000000000s") == 1e9 && Quantity.duration("1000000001s") == nil)
    }

    @Test("errors name the file, the line and the field")
    func errorsAreLocated() {
        let badRate = Self.minimal.replacingOccurrences(of: "rate: 100/s", with: "rate: fast")
        #expect(throws: InputError.self) { try Scenario.parse(badRate, file: "s.yaml") }
        do {
            _ = try Scenario.parse(badRate, file: "s.yaml")
        } catch {
            #expect(error.description.hasPrefix("s.yaml:3: arrival.rate:"))
        }
        let unknown = Self.minimal + "\nconnection: {pool: 2, colour: blue}"
        do {
            _ = try Scenario.parse(unknown, file: "s.yaml")
            Issue.record("an unknown key was accepted")
        } catch {
            #expect(error.field == "connection.colour")
            #expect(error.line == 6)
        }
        let noEnd = Self.minimal.replacingOccurrences(of: "count: 10\n", with: "")
        #expect(throws: InputError.self) { try Scenario.parse(noEnd) }
        let badMix = Self.minimal + "\nmix: [{template: nope}]"
        #expect(throws: InputError.self) { try Scenario.parse(badMix) }
        #expect(throws: InputError.self) { try Scenario.parse("arrival: [unclosed") }
        let badExpect = Self.minimal + "\nexpect: {submit_latency: {p99: \"fast\"}}"
        #expect(throws: InputError.self) { try Scenario.parse(badExpect) }
    }

    @Test("the shipped scenarios parse")
    func shippedScenarios() throws {
        let directory = URL(fileURLWithPath: #filePath).deletingLastPathComponent().appendingPathComponent("../../scenarios").standardized.path
        let names = try FileManager.default.contentsOfDirectory(atPath: directory).filter { $0.hasSuffix(".yaml") }
        #expect(names.count >= 2)
        for name in names {
            _ = try Scenario.load(path: directory + "/" + name)
        }
    }

    @Test("constant, poisson, ramp and burst schedules")
    func schedules() {
        let constant = Array(Schedule(arrival: .constant(rate: 100), duration: 1, count: nil, seed: 1))
        #expect(constant.count == 100)
        #expect(abs(constant[1].offset - 0.01) < 1e-9)

        let poisson = Array(Schedule(arrival: .poisson(rate: 1000), duration: nil, count: 5000, seed: 42))
        let again = Array(Schedule(arrival: .poisson(rate: 1000), duration: nil, count: 5000, seed: 42))
        #expect(poisson == again)
        let meanGap = poisson.last!.offset / Double(poisson.count - 1)
        #expect(abs(meanGap - 0.001) < 0.0001)
        #expect(Array(Schedule(arrival: .poisson(rate: 1000), duration: nil, count: 50, seed: 43)) != Array(poisson.prefix(50)))

        // 0 → 100/s over 2 s, then 100/s for 1 s: 100 + 100 messages.
        let ramp = Array(Schedule(arrival: .ramp(stages: [.init(to: 100, over: 2), .init(to: 100, over: 1)]), duration: nil, count: nil, seed: 1))
        #expect((199...201).contains(ramp.count))
        #expect(ramp.filter { $0.offset < 1 }.count < ramp.filter { $0.offset >= 1 && $0.offset < 2 }.count)

        let burst = Array(Schedule(arrival: .burst(bursts: [.init(at: 2, count: 3), .init(at: 0.5, count: 2)]), duration: nil, count: nil, seed: 1))
        #expect(burst.map(\.offset) == [0.5, 0.5, 2, 2, 2])
    }

    @Test("expectations read counts, percentages and durations")
    func expectations() {
        #expect(Expectation.parse(expression: ">= 99.9%", metric: "delivered")?.unit == .percent)
        #expect(Expectation.parse(expression: "< 500ms", metric: "x")?.value == 0.5)
        #expect(Expectation.parse(expression: "== 0", metric: "errors")?.comparison == .equal)
        #expect(Expectation.parse(expression: "about 3", metric: "errors") == nil)
    }
}
