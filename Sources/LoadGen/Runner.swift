import Foundation
import NIOCore
import NIOPosix
import SMTPProtocol
import SwallowConfig
import Synchronization

/// Runs a scenario against an SMTP server. Open loop: every message has a scheduled time from
/// the arrival process, and its latency counts from that time, whether a connection was free
/// or not, so a slow server cannot hide its slowness (no coordinated omission). `closed`
/// arrival runs N senders back to back instead.
public struct LoadRunner: Sendable {
    public var scenario: Scenario
    /// Where the connections go, spread evenly (connection `i` to `targets[i % count]`).
    public var targets: [LoadTarget]
    /// Local addresses the connections are bound to, spread the same way; empty: any.
    public var bind: [String] = []
    /// Time zero of the schedule (`--start-at`): the run waits for it, or, started after it,
    /// sends what was due at once (latency still counts from each message's due time) and
    /// reports how late it started. nil: now.
    public var startAt: Date?
    public var seed: UInt64
    public var runID: String
    /// The sink's captures, for delivery latency; nil measures submission only.
    public var deliveries: (any DeliverySource)?
    /// How long after the last send a message may still arrive before it counts as lost.
    public var grace = 30.0
    /// Called about once a second with the recorder, while the run goes.
    /// Called about once a second while the run goes: the recorder, seconds elapsed, and
    /// messages delivered so far (nil without a delivery source).
    public var onProgress: (@Sendable (Recorder, Double, Int?) -> Void)?
    /// This process's part of a run split over several (`--shard K/N`); nil: all of it.
    public var shard: Shard?

    public init(scenario: Scenario, host: String, port: Int, seed: UInt64, runID: String? = nil) {
        self.scenario = scenario
        self.targets = scenario.connection.targets.compactMap(LoadTarget.init(parsing:))
        if targets.isEmpty { targets = [LoadTarget(host: host, port: port)] }
        self.bind = scenario.connection.bind
        self.seed = seed
        self.runID = runID ?? Self.makeRunID()
    }

    static func makeRunID() -> String {
        let alphabet = Array("0123456789abcdefghijklmnopqrstuvwxyz")
        var random = SystemRandomNumberGenerator()
        return String((0..<10).map { _ in alphabet[Int(random.next() % UInt64(alphabet.count))] })
    }

    struct Job: Sendable {
        var seq: Int
        var template: String
        /// Uptime nanoseconds the message was due.
        var due: UInt64
        var offset: Double
        var attempt = 0
    }

    /// Jobs waiting for a free connection; workers wait on it.
    final class JobQueue: Sendable {
        private struct State {
            var jobs: [Job] = []
            var head = 0
            var waiters: [CheckedContinuation<Job?, Never>] = []
            var closed = false
            var pendingRetries = 0
        }

        private let state = Mutex(State())

        func push(_ job: Job) {
            let waiter = state.withLock { state -> CheckedContinuation<Job?, Never>? in
                if !state.waiters.isEmpty { return state.waiters.removeFirst() }
                state.jobs.append(job)
                return nil
            }
            waiter?.resume(returning: job)
        }

        func retryScheduled() { state.withLock { $0.pendingRetries += 1 } }
        func retryDone(_ job: Job) {
            push(job)
            let finish = state.withLock { state -> [CheckedContinuation<Job?, Never>] in
                state.pendingRetries -= 1
                return state.closed && state.pendingRetries == 0 && state.head >= state.jobs.count ? state.waiters.removeAllReturning() : []
            }
            for waiter in finish { waiter.resume(returning: nil) }
        }

        /// No more jobs except retries already scheduled.
        func close() {
            let waiters = state.withLock { state -> [CheckedContinuation<Job?, Never>] in
                state.closed = true
                return state.pendingRetries == 0 ? state.waiters.removeAllReturning() : []
            }
            for waiter in waiters { waiter.resume(returning: nil) }
        }

        func next() async -> Job? {
            await withCheckedContinuation { continuation in
                let result: Job?? = state.withLock { state in
                    if state.head < state.jobs.count {
                        let job = state.jobs[state.head]
                        state.head += 1
                        if state.head > 4096 && state.head * 2 > state.jobs.count {
                            state.jobs.removeFirst(state.head)
                            state.head = 0
                        }
                        return .some(job)
                    }
                    if state.closed && state.pendingRetries == 0 { return .some(nil) }
                    state.waiters.append(continuation)
                    return nil
                }
                if let result { continuation.resume(returning: result) }
            }
        }

        var depth: Int { state.withLock { $0.jobs.count - $0.head } }
    }

    /// Runs to the end; returns the report.
    public func run() async throws(InputError) -> LoadReport {
        let trace: [(Double, String?)]
        if case .trace(let file, _) = scenario.arrival {
            let path = file.hasPrefix("/") ? file : (scenario.baseDirectory as NSString).appendingPathComponent(file)
            trace = try Schedule.readTrace(path: path)
            for name in trace.compactMap(\.1) where scenario.templates[name] == nil {
                throw InputError(file: path, line: nil, field: "template", message: "no template named `\(name)` in the scenario")
            }
        } else {
            trace = []
        }
        let recorder = Recorder()
        let queue = JobQueue()
        let renderer = Renderer(runID: runID, seed: seed)
        let group = MultiThreadedEventLoopGroup.singleton
        // Time zero as uptime nanoseconds and as a wall-clock instant (deliveries are timed on it).
        let wallNow = Date()
        let startedDate = startAt ?? wallNow
        let startOffset = startedDate.timeIntervalSince(wallNow)
        let uptimeNow = SMTPClientConnection.now()
        let started = startOffset >= 0 ? uptimeNow + UInt64(startOffset * 1e9) : uptimeNow - min(uptimeNow, UInt64(-startOffset * 1e9))
        let lateMs = startAt == nil ? nil : max(0, -startOffset * 1000)
        if started > SMTPClientConnection.now() { try? await Task.sleep(for: .nanoseconds(Int64(started - SMTPClientConnection.now()))) }
        var picker = TemplatePicker(mix: scenario.mix, seed: seed)
        let shard = self.shard ?? Shard(index: 0, count: 1)
        // Closed loop: the senders are split between the shards (the first take the remainder).
        let closedSenders: Int? = if case .closed(let senders) = scenario.arrival {
            senders / shard.count + (shard.index < senders % shard.count ? 1 : 0)
        } else {
            nil
        }
        let workers = closedSenders ?? scenario.connection.pool
        let counter = Counter()
        let settings = scenario.connection
        let scenario = self.scenario
        let targets = self.targets
        let bind = self.bind
        let deadline = scenario.duration.map { started + UInt64($0 * 1e9) }
        let tracker = deliveries.map { _ in DeliveryTracker(runID: runID, startedAt: startedDate, content: scenario.content) }
        let deliveryStream = await deliveries?.deliveries()
        let consumer = Task {
            guard let deliveryStream, let tracker else { return }
            for await delivery in deliveryStream { tracker.record(delivery) }
        }
        defer { consumer.cancel() }

        var sendingEnded = started
        await withTaskGroup(of: Void.self) { tasks in
            // Progress.
            let progressTask = Task { [onProgress] in
                while !Task.isCancelled {
                    try? await Task.sleep(for: .seconds(1))
                    onProgress?(recorder, Double(SMTPClientConnection.now() - started) / 1e9, tracker?.deliveredCount)
                }
            }
            // Workers: one connection each, reopened after `per_connection` messages or an error.
            for worker in 0..<workers {
                let target = targets[worker % targets.count]
                let endpoint = SMTPClientConnection.Target(
                    host: target.host, port: target.port, bind: bind.isEmpty ? nil : bind[worker % bind.count]
                )
                let targetName = target.description
                tasks.addTask {
                    var connection: SMTPClientConnection?
                    var closedPicker = TemplatePicker(mix: scenario.mix, seed: seed &+ UInt64(worker))
                    while true {
                        let job: Job
                        if closedSenders != nil {
                            // This shard's sequence numbers: index, index + N, index + 2N, ...
                            let seq = counter.next() * shard.count + shard.index
                            let now = SMTPClientConnection.now()
                            if let count = scenario.count, seq >= count { break }
                            if let deadline, now >= deadline { break }
                            job = Job(seq: seq, template: closedPicker.next(), due: now, offset: Double(now - started) / 1e9)
                            tracker?.scheduled(seq: seq, offset: job.offset, template: job.template)
                        } else {
                            guard let next = await queue.next() else { break }
                            job = next
                        }
                        guard let template = scenario.templates[job.template] else { continue }
                        let message = renderer.render(template, seq: job.seq, now: startedDate.addingTimeInterval(job.offset))
                        tracker?.rendered(seq: job.seq, otp: message.otp)
                        recorder.started()
                        var times = SMTPClientConnection.PhaseTimes()
                        let sendStart = SMTPClientConnection.now()
                        let lag = sendStart - min(job.due, sendStart)
                        var outcome: SMTPClientConnection.Outcome
                        do {
                            if connection == nil || connection?.isActive == false {
                                connection = try await SMTPClientConnection.open(to: endpoint, settings: settings, group: group, times: &times)
                            }
                            outcome = await connection!.send(sender: message.sender, recipients: message.recipients, data: message.data, times: &times)
                        } catch let error as SMTPClientError {
                            outcome = .failed(error)
                        } catch {
                            outcome = .failed(.connect("\(error)"))
                        }
                        let finished = SMTPClientConnection.now()
                        var record = Recorder.Outcome(
                            template: job.template, target: targetName, scheduledOffset: job.offset, latency: finished - min(job.due, finished), lag: lag,
                            reply: nil, phase: "data-end", error: nil, phases: times
                        )
                        switch outcome {
                        case .reply(let reply, let phase):
                            record.reply = reply
                            record.phase = phase
                        case .failed(let error):
                            record.error = "\(error)"
                            record.phase = error.phase
                            connection?.close()
                            connection = nil
                        }
                        let tempfail = record.reply.map { $0.code.rawValue / 100 == 4 } ?? false
                        if tempfail && job.attempt < scenario.retry.on4xx && closedSenders == nil {
                            recorder.record(record, final: false)
                            recorder.retried()
                            var retry = job
                            retry.attempt += 1
                            queue.retryScheduled()
                            let backoff = scenario.retry.backoff * pow(2, Double(job.attempt))
                            Task {
                                try? await Task.sleep(for: .seconds(backoff))
                                queue.retryDone(retry)
                            }
                        } else {
                            recorder.record(record, final: true)
                            if let code = record.reply?.code.rawValue, code / 100 == 2 { tracker?.accepted(seq: job.seq) }
                        }
                        if let open = connection, settings.perConnection > 0, open.messagesSent >= settings.perConnection {
                            await open.quit()
                            connection = nil
                        }
                    }
                    await connection?.quit()
                }
            }
            // The open-loop scheduler.
            if closedSenders == nil {
                var schedule = Schedule(arrival: scenario.arrival, duration: scenario.duration, count: scenario.count, seed: seed, trace: trace)
                var seq = 0
                while let entry = schedule.next() {
                    // Every shard walks the whole schedule (and template choices), and sends
                    // every Nth message of it: together they send exactly the unsharded run.
                    let template = entry.template ?? picker.next()
                    defer { seq += 1 }
                    guard shard.owns(seq) else { continue }
                    let due = started + UInt64(entry.offset * 1e9)
                    let now = SMTPClientConnection.now()
                    if due > now + 200_000 {
                        try? await Task.sleep(for: .nanoseconds(Int64(due - now)))
                    }
                    let job = Job(seq: seq, template: template, due: due, offset: entry.offset)
                    tracker?.scheduled(seq: seq, offset: job.offset, template: job.template)
                    queue.push(job)
                }
                queue.close()
            }
            await tasks.waitForAll()
            sendingEnded = SMTPClientConnection.now()
            await tracker?.waitForDeliveries(grace: grace)
            progressTask.cancel()
        }
        // The achieved rate counts the sending only, not the grace period for deliveries.
        let elapsed = Double(sendingEnded - started) / 1e9
        var report = LoadReport(scenario: scenario, runID: runID, recorder: recorder, elapsed: elapsed, seed: seed, deliveries: tracker)
        report.shard = self.shard.map(\.description)
        if let startAt {
            report.startedAt = LoadReport.rfc3339(startAt)
            report.startLateMs = lateMs.map { ($0 * 1000).rounded() / 1000 }
        }
        return report
    }
}

/// One part of a run split over N processes: this one sends every Nth message of the schedule
/// (sequence numbers `index`, `index + N`, ...), so the parts are disjoint and together are
/// the whole run; each part's JSON report merges with the others (`swallow report merge`).
public struct Shard: Sendable, Equatable, CustomStringConvertible {
    /// 0-based.
    public var index: Int
    public var count: Int

    public init(index: Int, count: Int) {
        self.index = index
        self.count = count
    }

    /// `K/N`, K from 1 to N.
    public init?(parsing text: String) {
        let parts = text.split(separator: "/", omittingEmptySubsequences: false)
        guard parts.count == 2, let k = Int(parts[0]), let n = Int(parts[1]), n >= 1, n <= 10_000, (1...n).contains(k) else { return nil }
        self.init(index: k - 1, count: n)
    }

    func owns(_ seq: Int) -> Bool { seq % count == index }

    public var description: String { "\(index + 1)/\(count)" }
}

final class Counter: Sendable {
    private let value = Atomic<Int>(0)

    func next() -> Int { value.wrappingAdd(1, ordering: .relaxed).oldValue }
}

/// Picks templates by weight, repeatably.
struct TemplatePicker: Sendable {
    private let names: [String]
    private let cumulative: [Double]
    private var random: SeededRandom

    init(mix: [(template: String, weight: Double)], seed: UInt64) {
        names = mix.map(\.template)
        var total = 0.0
        cumulative = mix.map { total += $0.weight; return total }
        random = SeededRandom(seed: seed ^ 0x1111_2222)
    }

    mutating func next() -> String {
        guard let total = cumulative.last, total > 0 else { return names.first ?? "" }
        let point = Double(random.next() >> 11) / Double(1 << 53) * total
        return names[cumulative.firstIndex { point < $0 } ?? names.count - 1]
    }
}

extension Array {
    mutating func removeAllReturning() -> [Element] {
        defer { removeAll() }
        return self
    }
}
