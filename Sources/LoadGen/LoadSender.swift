import Foundation
import NIOCore
import NIOPosix
import NIOSSL
import SMTPClient
import SMTPProtocol
import SocketIO

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
    private var waiting: LoadTransaction?
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
        let now = work.eventLoop.now.uptimeNanoseconds
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

    private func transaction(for job: LoadRunner.Job) -> LoadTransaction? {
        guard let template = plan.scenario.templates[job.template] else { return nil }
        var data = LoadConnection.allocator.buffer(capacity: 0)
        let message = plan.renderer.renderStuffed(template, seq: job.seq, now: plan.startedDate.addingTimeInterval(job.offset), into: &data)
        plan.tracker?.rendered(seq: job.seq, otp: message.otp)
        var mail = ByteBuffer(string: "MAIL FROM:<")
        mail.writeString(message.sender)
        mail.writeStaticString(">\r\n")
        let rcpts = message.recipients.map { ByteBuffer(string: "RCPT TO:<\($0)>\r\n") }
        plan.recorder.started()
        return LoadTransaction(job: job, mail: mail, rcpts: rcpts, data: data, taken: work.eventLoop.now.uptimeNanoseconds)
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
        let handler = LoadConnection(setup: plan.setup, delegate: self, connectStarted: work.eventLoop.now.uptimeNanoseconds)
        connection = handler
        let completion: (Result<Void, any Error>) -> Void = { [self] result in
            switch result {
            case .success:
                self.work.connectionOpened()
            case .failure(let error):
                guard self.connection === handler else { return }
                self.connection = nil
                self.failWaiting(.connect("\(self.targetName): \(error)"), times: SMTPClientConnection.PhaseTimes())
            }
        }
        if let loop = work.eventLoop as? SocketLoop {
            return SocketWire.open(on: loop, to: address, from: bind, timeout: plan.connectTimeout, connection: handler, completion: completion)
        }
        var bootstrap = ClientBootstrap(group: work.eventLoop)
            .connectTimeout(plan.connectTimeout)
            .channelOption(.tcpOption(.tcp_nodelay), value: 1)
        if let bind { bootstrap = bootstrap.bind(to: bind) }
        let setup = plan.setup
        let bound = NIOLoopBound(LoadChannelHandler(connection: handler, eventLoop: work.eventLoop), eventLoop: work.eventLoop)
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
        .whenComplete { completion($0.map { _ in () }) }
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

    func transactionEnded(_ connection: LoadConnection, _ transaction: LoadTransaction, _ outcome: SMTPClientConnection.Outcome, more: Bool) {
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

    func nextTransaction(_ connection: LoadConnection) -> LoadTransaction? {
        guard !finished, plan.perConnection == 0 || connection.transactions < plan.perConnection,
            let job = work.takeReadyJob(for: self)
        else { return nil }
        return transaction(for: job)
    }

    func connectionClosed(_ connection: LoadConnection) {
        if self.connection === connection { self.connection = nil }
        work.connectionClosed()
    }

    /// Records a transaction's outcome; a 4xx is retried as the scenario says.
    private func report(_ transaction: LoadTransaction, _ outcome: SMTPClientConnection.Outcome) {
        let job = transaction.job
        let finishedAt = work.eventLoop.now.uptimeNanoseconds
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
