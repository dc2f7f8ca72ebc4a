import Foundation
import SwallowConfig

/// The open-loop schedule: the send time (seconds from the start) of every message, made
/// lazily, so a long run at a high rate holds no list of them. Ends at `duration` or `count`.
public struct Schedule: Sequence, IteratorProtocol, Sendable {
    private var arrival: Scenario.Arrival
    private let duration: Double
    private let count: Int
    private var random: SeededRandom
    private var produced = 0
    private var time = 0.0
    /// Trace playback: offsets (already scaled) and template names.
    private var trace: [(Double, String?)] = []
    private var burstTimes: [Double] = []

    public struct Entry: Sendable, Equatable {
        public var offset: Double
        /// From a trace's second column, when it names one.
        public var template: String?
    }

    public init(arrival: Scenario.Arrival, duration: Double?, count: Int?, seed: UInt64, trace: [(Double, String?)] = []) {
        self.arrival = arrival
        self.duration = duration ?? .infinity
        self.count = count ?? .max
        self.random = SeededRandom(seed: seed ^ 0x5CED)
        if case .trace(_, let speed) = arrival {
            self.trace = trace.map { ($0.0 / speed, $0.1) }.sorted { $0.0 < $1.0 }
        }
        if case .burst(let bursts) = arrival {
            burstTimes = bursts.sorted { $0.at < $1.at }.flatMap { Array(repeating: $0.at, count: $0.count) }
        }
    }

    public mutating func next() -> Entry? {
        guard produced < count else { return nil }
        var entry: Entry
        switch arrival {
        case .constant(let rate):
            entry = Entry(offset: Double(produced) / rate)
        case .poisson(let rate):
            if produced > 0 {
                let uniform = Double(random.next() >> 11) / Double(1 << 53)
                time += -log(1 - uniform) / rate
            }
            entry = Entry(offset: time)
        case .ramp(let stages):
            guard let offset = rampOffset(stages) else { return nil }
            entry = Entry(offset: offset)
        case .burst:
            guard produced < burstTimes.count else { return nil }
            entry = Entry(offset: burstTimes[produced])
        case .trace:
            guard produced < trace.count else { return nil }
            entry = Entry(offset: trace[produced].0, template: trace[produced].1)
        case .closed:
            entry = Entry(offset: 0)
        }
        guard entry.offset < duration else { return nil }
        produced += 1
        return entry
    }

    /// The next send time under piecewise-linear rate stages: the time at which the integral
    /// of the rate reaches the next whole message.
    private mutating func rampOffset(_ stages: [Scenario.RampStage]) -> Double? {
        let target = Double(produced) + (produced == 0 ? 0 : 0)
        var start = 0.0
        var startRate = 0.0
        var done = 0.0
        for stage in stages {
            let area = (startRate + stage.to) / 2 * stage.over
            if done + area >= target && (stage.to > 0 || startRate > 0) {
                // Solve done + startRate*t + (to-startRate)/(2*over)*t^2 = target.
                let need = target - done
                let slope = stage.over > 0 ? (stage.to - startRate) / stage.over : 0
                let t: Double
                if abs(slope) < 1e-12 {
                    t = startRate > 0 ? need / startRate : 0
                } else {
                    t = (-startRate + (startRate * startRate + 2 * slope * need).squareRoot()) / slope
                }
                return start + Swift.max(0, t)
            }
            done += area
            start += stage.over
            startRate = stage.to
        }
        return nil
    }

    /// Reads a trace CSV: `offset,template` per line, the offset in seconds or a duration
    /// (`1.5s`); a header line and blank lines are skipped.
    public static func readTrace(path: String) throws(InputError) -> [(Double, String?)] {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw InputError(file: path, line: nil, field: "", message: "cannot read the trace file")
        }
        var result: [(Double, String?)] = []
        for (number, line) in String(decoding: data, as: UTF8.self).split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let fields = line.split(separator: ",").map { $0.trimmingCharacters(in: .whitespaces.union(["\r", "\""])) }
            guard let first = fields.first, !first.isEmpty else { continue }
            guard let offset = Double(first) ?? Quantity.duration(first), offset >= 0 else {
                if number == 0 { continue }
                throw InputError(file: path, line: number + 1, field: "offset", message: "expected seconds or a duration, got \(first)")
            }
            result.append((offset, fields.count > 1 && !fields[1].isEmpty ? fields[1] : nil))
        }
        return result
    }
}
