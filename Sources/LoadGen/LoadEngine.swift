import Foundation
import NIOCore
import NIOPosix
import NIOSSL
import SMTPProtocol

/// What every event loop of a run shares; fixed before the first message.
struct RunPlan: Sendable {
    var scenario: Scenario
    var renderer: Renderer
    var recorder: Recorder
    var tracker: DeliveryTracker?
    var setup: LoadConnection.Setup
    var connectTimeout: TimeAmount
    var perConnection: Int
    var shard: Shard
    /// Uptime nanoseconds of time zero, and the same instant on the wall clock.
    var started: UInt64
    var startedDate: Date
    /// Closed loop: sequence numbers are handed out from here, up to `count` or `deadline`.
    var closed: Bool
    var counter: Counter
    var deadline: UInt64?
    var trace: [(Double, String?)]
    var seed: UInt64
}

/// The jobs of one event loop and the senders that take them; touched only on that loop.
final class LoopWork {
    let eventLoop: any EventLoop
    let plan: RunPlan
    private var jobs: [LoadRunner.Job] = []
    private var head = 0
    private var idle: [LoadSender] = []
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
            schedule = Schedule(arrival: plan.scenario.arrival, duration: plan.scenario.duration, count: plan.scenario.count,
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
            idle = senders
            tick()
        }
    }

    /// Queues every entry of this loop's schedule due by now (within 200 µs), hands them to
    /// idle senders, and sleeps until the next one is due.
    private func tick() {
        let now = LoadConnection.now()
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
            idle.removeLast().next()
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
        let horizon = LoadConnection.now() + 200_000
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
        guard head < jobs.count, jobs[head].due <= LoadConnection.now() + 200_000 else { return nil }
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
            job.due = min(job.due, LoadConnection.now())
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

/// One sender: at most one connection at a time, reopened after `per_connection` messages
/// or an error; takes its jobs from its loop. Touched only on that loop.
final class LoadSender: LoadConnectionDelegate {
    let work: LoopWork
    let address: Result<SocketAddress, any Error>
    let bind: SocketAddress?
    let targetName: String
    private var picker: TemplatePicker
    private var connection: LoadConnection?
    /// A transaction waiting for its connection to be ready.
    private var waiting: Transaction?
    private var finished = false

    init(work: LoopWork, address: Result<SocketAddress, any Error>, bind: SocketAddress?, targetName: String, index: Int) {
        self.work = work
        self.address = address
        self.bind = bind
        self.targetName = targetName
        self.picker = TemplatePicker(mix: work.plan.scenario.mix, seed: work.plan.seed &+ UInt64(index))
    }

    private var plan: RunPlan { work.plan }

    /// Closed loop: this shard's next sequence number, now due; nil past the count or duration.
    func makeClosedJob() -> LoadRunner.Job? {
        let seq = plan.counter.next() * plan.shard.count + plan.shard.index
        let now = LoadConnection.now()
        if let count = plan.scenario.count, seq >= count { return nil }
        if let deadline = plan.deadline, now >= deadline { return nil }
        let offset = Double(now - min(now, plan.started)) / 1e9
        let job = LoadRunner.Job(seq: seq, template: picker.next(), due: now, offset: offset)
        plan.tracker?.scheduled(seq: seq, offset: offset, template: job.template)
        return job
    }

    /// Takes the next job and starts it, or waits, or finishes.
    func next() {
        guard !finished else { return }
        switch work.takeJob(for: self) {
        case .job(let job): start(job)
        case .wait: break
        case .finish: finish()
        }
    }

    private func finish() {
        finished = true
        connection?.quit()
        connection = nil
        work.senderFinished()
    }

    private func transaction(for job: LoadRunner.Job) -> Transaction? {
        guard let template = plan.scenario.templates[job.template] else { return nil }
        let message = plan.renderer.render(template, seq: job.seq, now: plan.startedDate.addingTimeInterval(job.offset))
        plan.tracker?.rendered(seq: job.seq, otp: message.otp)
        var mail = ByteBuffer(string: "MAIL FROM:<")
        mail.writeString(message.sender)
        mail.writeStaticString(">\r\n")
        let rcpts = message.recipients.map { ByteBuffer(string: "RCPT TO:<\($0)>\r\n") }
        var data = ByteBuffer()
        data.writeDotStuffedMessage(ByteBuffer(bytes: message.data))
        plan.recorder.started()
        return Transaction(job: job, mail: mail, rcpts: rcpts, data: data, taken: LoadConnection.now())
    }

    private func start(_ job: LoadRunner.Job) {
        guard let transaction = transaction(for: job) else { return next() }
        if let connection, connection.ready {
            connection.begin(transaction)
        } else {
            waiting = transaction
            open()
        }
    }

    private func open() {
        let address: SocketAddress
        switch self.address {
        case .success(let resolved): address = resolved
        case .failure(let error): return failWaiting(.connect("\(targetName): \(error)"), times: SMTPClientConnection.PhaseTimes())
        }
        let handler = LoadConnection(setup: plan.setup, delegate: self, connectStarted: LoadConnection.now())
        connection = handler
        var bootstrap = ClientBootstrap(group: work.eventLoop)
            .connectTimeout(plan.connectTimeout)
            .channelOption(.socketOption(.tcp_nodelay), value: 1)
        if let bind { bootstrap = bootstrap.bind(to: bind) }
        let setup = plan.setup
        let bound = NIOLoopBound(handler, eventLoop: work.eventLoop)
        bootstrap.channelInitializer { channel in
            channel.eventLoop.makeCompletedFuture {
                if setup.tls == .implicit, let context = setup.tlsContext {
                    try channel.pipeline.syncOperations.addHandler(try NIOSSLClientHandler(context: context, serverHostname: nil))
                }
                try channel.pipeline.syncOperations.addHandler(bound.value)
            }
        }
        .connect(to: address)
        .assumeIsolated()
        .whenComplete { [self] result in
            switch result {
            case .success:
                self.work.connectionOpened()
            case .failure(let error):
                guard self.connection === handler else { return }
                self.connection = nil
                self.failWaiting(.connect("\(self.targetName): \(error)"), times: SMTPClientConnection.PhaseTimes())
            }
        }
    }

    private func failWaiting(_ error: SMTPClientError, times: SMTPClientConnection.PhaseTimes) {
        guard let transaction = waiting else { return }
        waiting = nil
        transaction.times = times
        report(transaction, .failed(error))
        next()
    }

    // MARK: LoadConnectionDelegate

    func connectionReady(_ connection: LoadConnection) {
        guard let transaction = waiting else { return }
        waiting = nil
        connection.begin(transaction)
    }

    func connectionFailed(_ connection: LoadConnection, _ error: SMTPClientError, times: SMTPClientConnection.PhaseTimes) {
        if self.connection === connection { self.connection = nil }
        failWaiting(error, times: times)
    }

    func transactionEnded(_ connection: LoadConnection, _ transaction: Transaction, _ outcome: SMTPClientConnection.Outcome, more: Bool) {
        if case .failed = outcome, self.connection === connection {
            self.connection = nil
            connection.close()
        }
        report(transaction, outcome)
        guard !more else { return }
        if let open = self.connection, plan.perConnection > 0, open.transactions >= plan.perConnection {
            open.quit()
            self.connection = nil
        }
        next()
    }

    func nextTransaction(_ connection: LoadConnection) -> Transaction? {
        guard !finished, plan.perConnection == 0 || connection.transactions < plan.perConnection,
              let job = work.takeReadyJob(for: self) else { return nil }
        return transaction(for: job)
    }

    func connectionClosed(_ connection: LoadConnection) {
        if self.connection === connection { self.connection = nil }
        work.connectionClosed()
    }

    /// Records a transaction's outcome; a 4xx is retried as the scenario says.
    private func report(_ transaction: Transaction, _ outcome: SMTPClientConnection.Outcome) {
        let job = transaction.job
        let finishedAt = LoadConnection.now()
        var record = Recorder.Outcome(
            template: job.template, target: targetName, scheduledOffset: job.offset,
            latency: finishedAt - min(job.due, finishedAt), lag: transaction.taken - min(job.due, transaction.taken),
            reply: nil, phase: "data-end", error: nil, phases: transaction.times
        )
        switch outcome {
        case .reply(let reply, let phase):
            record.reply = reply
            record.phase = phase
        case .failed(let error):
            record.error = "\(error)"
            record.phase = error.phase
        }
        let tempfail = record.reply.map { $0.code.rawValue / 100 == 4 } ?? false
        let retry = plan.scenario.retry
        if tempfail && job.attempt < retry.on4xx && !plan.closed {
            plan.recorder.record(record, final: false)
            plan.recorder.retried()
            var again = job
            again.attempt += 1
            work.retry(again, after: retry.backoff * pow(2, Double(job.attempt)))
        } else {
            plan.recorder.record(record, final: true)
            if let code = record.reply?.code.rawValue, code / 100 == 2 { plan.tracker?.accepted(seq: job.seq) }
        }
    }
}
