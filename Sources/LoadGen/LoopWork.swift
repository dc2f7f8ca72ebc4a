import Foundation
import NIOCore
import NIOPosix
import NIOSSL
import SMTPProtocol

/// The jobs of one event loop and the senders that take them; touched only on that loop.
final class LoopWork {
    let eventLoop: any EventLoop
    let plan: RunPlan
    private var jobs: [LoadRunner.Job] = []
    private var head = 0
    /// Senders waiting for a job, longest waiting first: open-loop jobs go round the pool, so
    /// every connection (and with several targets, every target) takes its share even at a
    /// rate one connection could carry (a stack gave every job to the same sender).
    private var idle = CircularBuffer<LoadSender>()
    /// Every sender of this loop (connections only hold their sender weakly).
    private var senders: [LoadSender] = []
    /// The schedule has no more entries for this loop.
    private var scheduleDone: Bool
    private var pendingRetries = 0
    private var liveSenders = 0
    private var openConnections = 0
    private let finished: EventLoopPromise<Void>
    /// This loop's part of an open-loop schedule: every `stride`th entry the shard owns, from `offset`.
    private var schedule: Schedule?
    private var picker: TemplatePicker
    private var scheduleSeq = 0
    private var owned = 0
    private let stride: Int
    private let offset: Int

    init(eventLoop: any EventLoop, plan: RunPlan, index: Int, of count: Int) {
        self.eventLoop = eventLoop
        self.plan = plan
        self.finished = eventLoop.makePromise()
        self.picker = TemplatePicker(mix: plan.scenario.mix, seed: plan.seed)
        self.stride = count
        self.offset = index
        if plan.closed {
            scheduleDone = true
        } else {
            scheduleDone = false
            schedule = Schedule(
                arrival: plan.scenario.arrival, duration: plan.scenario.duration, count: plan.scenario.count,
                seed: plan.seed, trace: plan.trace)
        }
    }

    var done: EventLoopFuture<Void> { finished.futureResult }

    /// On the loop: starts the senders and this loop's part of the schedule.
    func start(_ senders: [LoadSender]) {
        eventLoop.assertInEventLoop()
        self.senders = senders
        liveSenders = senders.count
        if senders.isEmpty { return finishIfDone() }
        if plan.closed {
            for sender in senders { sender.next() }
        } else {
            idle = CircularBuffer(senders)
            tick()
        }
    }

    /// Queues every entry of this loop's schedule due by now (within 200 µs), hands them to
    /// idle senders, and sleeps until the next one is due.
    private func tick() {
        let now = eventLoop.now.uptimeNanoseconds
        while var schedule {
            guard let entry = schedule.next() else {
                self.schedule = nil
                scheduleDone = true
                break
            }
            self.schedule = schedule
            // Every loop and every shard walk the whole schedule and its template choices: together
            // they send exactly the unsharded run.
            let template = entry.template ?? picker.next()
            let seq = scheduleSeq
            scheduleSeq += 1
            guard plan.shard.owns(seq) else { continue }
            defer { owned += 1 }
            guard owned % stride == offset else { continue }
            let due = plan.started + UInt64(max(0, entry.offset) * 1e9)
            let job = LoadRunner.Job(seq: seq, template: template, due: due, offset: entry.offset)
            plan.tracker?.scheduled(seq: seq, offset: job.offset, template: job.template)
            jobs.append(job)
            if due > now + 200_000 {
                // Not yet: wake when it is due (the job waits at the back of the queue).
                pendingDue = due
                break
            }
        }
        dispatch(upTo: now + 200_000)
        if let pendingDue {
            eventLoop.assumeIsolated().scheduleTask(deadline: .uptimeNanoseconds(pendingDue)) { [self] in
                self.pendingDue = nil
                self.tick()
            }
        } else if scheduleDone {
            wakeIdle()
        }
    }

    /// The due time of the last queued job, when it is still in the future.
    private var pendingDue: UInt64?

    private func dispatch(upTo horizon: UInt64) {
        while !idle.isEmpty, head < jobs.count, jobs[head].due <= horizon {
            idle.removeFirst().next()
        }
    }

    private func wakeIdle() {
        guard scheduleDone, pendingRetries == 0, head >= jobs.count else {
            dispatch(upTo: .max)
            return
        }
        let waiting = idle
        idle.removeAll()
        for sender in waiting { sender.next() }
    }

    enum Next {
        case job(LoadRunner.Job)
        /// Nothing due yet: the sender is in the idle list and is called again.
        case wait
        /// Nothing more will come.
        case finish
    }

    /// The next job for `sender`.
    func takeJob(for sender: LoadSender) -> Next {
        if plan.closed { return sender.makeClosedJob().map(Next.job) ?? .finish }
        let horizon = eventLoop.now.uptimeNanoseconds + 200_000
        if head < jobs.count, jobs[head].due <= horizon {
            return .job(popJob())
        }
        guard !scheduleDone || pendingRetries > 0 || head < jobs.count else { return .finish }
        idle.append(sender)
        return .wait
    }

    /// A job that is ready at once, for pipelining behind a message's data.
    func takeReadyJob(for sender: LoadSender) -> LoadRunner.Job? {
        if plan.closed { return sender.makeClosedJob() }
        guard head < jobs.count, jobs[head].due <= eventLoop.now.uptimeNanoseconds + 200_000 else { return nil }
        return popJob()
    }

    /// The job at the head; the queue's taken part is dropped now and then, so a run of any
    /// length keeps only the jobs not yet taken.
    private func popJob() -> LoadRunner.Job {
        let job = jobs[head]
        head += 1
        if head > 4096 && head * 2 > jobs.count {
            jobs.removeFirst(head)
            head = 0
        }
        return job
    }

    /// A 4xx to retry after `backoff` seconds.
    func retry(_ job: LoadRunner.Job, after backoff: Double) {
        pendingRetries += 1
        eventLoop.assumeIsolated().scheduleTask(in: .nanoseconds(Int64(backoff * 1e9))) { [self] in
            self.pendingRetries -= 1
            var job = job
            job.due = min(job.due, eventLoop.now.uptimeNanoseconds)
            // Queued at the front's place in time: it is due now.
            self.jobs.insert(job, at: self.head)
            self.dispatch(upTo: .max)
            self.wakeIdle()
        }
    }

    func senderFinished() {
        liveSenders -= 1
        finishIfDone()
    }

    func connectionOpened() { openConnections += 1 }

    func connectionClosed() {
        openConnections -= 1
        finishIfDone()
    }

    private var succeeded = false

    private func finishIfDone() {
        guard liveSenders == 0, openConnections == 0, !succeeded else { return }
        succeeded = true
        finished.succeed()
    }
}
