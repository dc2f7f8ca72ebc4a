import Crypto
import Foundation
import MailMessage
import SinkServer
import SwallowTestSupport
import Testing

#if canImport(Glibc)
    import Glibc
#endif

/// A local HTTP receiver (Python's http.server, threaded) for webhooks: `POST /fail2...`
/// answers 500 to the first two attempts of each event, `/hang...` never answers in time,
/// anything else 200; `GET /log` lists what arrived (path, headers, body).
final class WebhookReceiver: @unchecked Sendable {
    let process = Process()
    private(set) var port = 0

    static let script = """
        import http.server, json, socketserver, threading, time
        log, counts, lock = [], {}, threading.Lock()
        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get('Content-Length', 0)))
                with lock:
                    log.append({'path': self.path, 'headers': dict(self.headers.items()), 'body': body.decode(), 'at': time.time()})
                    key = (self.path, self.headers.get('X-Swallow-Event-Id'))
                    counts[key] = counts.get(key, 0) + 1
                    attempt = counts[key]
                if self.path.startswith('/hang'):
                    time.sleep(30)
                self.send_response(500 if self.path.startswith('/fail2') and attempt <= 2 else 200)
                self.send_header('Content-Length', '0')
                self.end_headers()
            def do_GET(self):
                with lock:
                    data = json.dumps(log).encode()
                self.send_response(200)
                self.send_header('Content-Type', 'application/json')
                self.send_header('Content-Length', str(len(data)))
                self.end_headers()
                self.wfile.write(data)
        class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
            daemon_threads = True
        server = Server(('127.0.0.1', 0), Handler)
        print('ready', server.server_address[1], flush=True)
        server.serve_forever()
        """

    init() throws {
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", "-c", Self.script]
        let line = try startReadingFirstLine(process, name: "the webhook receiver")
        port = Int(line.split(separator: " ").last ?? "") ?? 0
    }

    func url(_ path: String) -> String { "http://127.0.0.1:\(port)\(path)" }

    struct Request {
        var path: String
        var headers: [String: String]
        var body: String
        var at: Double

        func header(_ name: String) -> String? {
            headers.first { $0.key.lowercased() == name.lowercased() }?.value
        }
    }

    func log() async throws -> [Request] {
        let text = try await curl(["http://127.0.0.1:\(port)/log"])
        let items = try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [[String: Any]])
        return items.map {
            Request(
                path: $0["path"] as? String ?? "", headers: $0["headers"] as? [String: String] ?? [:],
                body: $0["body"] as? String ?? "", at: $0["at"] as? Double ?? 0)
        }
    }

    func stop() {
        kill(process.processIdentifier, SIGKILL)
        process.waitUntilExit()
    }
}

@Suite("Webhooks", .serialized, .timeLimit(.minutes(4)), .enabled(if: Peers.available("python3"), Comment(rawValue: Peers.reason("python3"))))
struct WebhookTests {
    /// Polls `/api/v1/stats` until `done` holds for the webhooks' counts (deadline 20 s): the
    /// deliveries happen on their own schedule, behind the SMTP replies.
    static func webhookCounts(_ base: String, until done: ([[String: Any]]) -> Bool) async throws -> [[String: Any]] {
        let deadline = ContinuousClock.now + .seconds(20)
        while true {
            let stats = try jsonObject(try await curl(["\(base)/api/v1/stats"]))
            let hooks = stats["webhooks"] as? [[String: Any]] ?? []
            if done(hooks) || ContinuousClock.now > deadline { return hooks }
            try await Task.sleep(for: .milliseconds(100))
        }
    }

    @Test("a failing receiver gets retries with backoff, the same event id, a valid signature; counted")
    func retriesAndSignature() async throws {
        let receiver = try WebhookReceiver()
        defer { receiver.stop() }
        try await withSinkApplication({ configuration in
            configuration.webhooks.hooks = [.init(url: receiver.url("/fail2"))]
            configuration.webhooks.secret = "s3cret"
        }) { sink, base in
            try await HTTPAPITests.send(["02-otp-alternative.eml"], port: sink.smtpAddress.port)
            let id = try #require(sink.store.messages().first?.id)
            let counts = try await Self.webhookCounts(base) { ($0.first?["Delivered"] as? Int) == 1 }
            #expect(counts.count == 1)
            #expect(counts.first?["URL"] as? String == receiver.url("/fail2"))
            #expect(counts.first?["Delivered"] as? Int == 1)
            #expect(counts.first?["Retried"] as? Int == 2)
            #expect(counts.first?["Failed"] as? Int == 0)
            #expect(counts.first?["Dropped"] as? Int == 0)
            #expect(counts.first?["Pending"] as? Int == 0)

            let requests = try await receiver.log()
            #expect(requests.count == 3)
            #expect(requests.map { $0.header("X-Swallow-Event-Id") } == [id, id, id])
            #expect(requests.map { $0.header("X-Swallow-Delivery") } == ["1", "2", "3"])
            #expect(requests.allSatisfy { $0.header("X-Swallow-Event") == "message" && $0.header("Content-Type") == "application/json" })
            // Exponential backoff from 1 s: about 1 s, then about 2 s between attempts.
            if requests.count == 3 {
                #expect(requests[1].at - requests[0].at >= 0.9)
                #expect(requests[2].at - requests[1].at >= 1.9)
            }
            for request in requests {
                let mac = HMAC<SHA256>.authenticationCode(for: Data(request.body.utf8), using: SymmetricKey(data: Data("s3cret".utf8)))
                #expect(request.header("X-Swallow-Signature") == "sha256=" + mac.map { String(format: "%02x", $0) }.joined())
                let body = try jsonObject(request.body)
                #expect(body["id"] as? String == id)
                #expect((body["envelope"] as? [String: Any])?["mailFrom"] as? String == "app@bank.example")
            }
            let attempts = try jsonObject(try await curl(["\(base)/api/v1/message/\(id)/webhooks"]))["deliveries"] as? [[String: Any]]
            #expect(attempts?.map { $0["Status"] as? Int } == [500, 500, 200])
            let metrics = try await curl(["\(base)/metrics"])
            #expect(metrics.contains("swallow_webhook_delivered_total{url=\"\(receiver.url("/fail2"))\"} 1"))
            #expect(metrics.contains("swallow_webhook_retried_total{url=\"\(receiver.url("/fail2"))\"} 2"))
        }
    }

    @Test("a hanging receiver never slows SMTP; past the queue, events are dropped and counted")
    func hangingReceiver() async throws {
        let receiver = try WebhookReceiver()
        defer { receiver.stop() }
        try await withSinkApplication({ configuration in
            configuration.webhooks.hooks = [.init(url: receiver.url("/hang"))]
            configuration.webhooks.timeout = .seconds(2)
            configuration.webhooks.queueSize = 3
        }) { sink, base in
            let result = try await python(
                """
                import smtplib, time
                started = time.monotonic()
                with smtplib.SMTP('127.0.0.1', PORT, timeout=10) as s:
                    for i in range(20):
                        s.sendmail('app@x.example', ['bob@x.example'], b'Subject: %d\\r\\n\\r\\nbody\\r\\n' % i)
                print(time.monotonic() - started)
                """, port: sink.smtpAddress.port)
            #expect(result.status == 0, "\(result.stderr)")
            // Were SMTP to wait for the webhook, each message would take its 2 s timeout (40 s in
            // all); unhindered, 20 messages take milliseconds. 10 s leaves room for a busy machine.
            let seconds = Double(result.stdout.trimmingCharacters(in: .whitespacesAndNewlines)) ?? .infinity
            #expect(seconds < 10, "20 messages took \(seconds) s")
            #expect(sink.store.count == 20)
            let counts = try await Self.webhookCounts(base) { _ in true }
            let dropped = counts.first?["Dropped"] as? Int ?? 0
            let pending = counts.first?["Pending"] as? Int ?? 0
            // One in flight, three queued, the rest dropped.
            #expect(dropped >= 12, "\(counts)")
            #expect(pending <= 4)
            #expect(dropped + pending + (counts.first?["Delivered"] as? Int ?? 0) + (counts.first?["Failed"] as? Int ?? 0) == 20)
        }
    }

    @Test("--webhook-mailbox filters the --webhook before it; --webhook-events adds faults")
    func filtersAndEvents() async throws {
        let receiver = try WebhookReceiver()
        defer { receiver.stop() }
        let directory = try temporaryDirectory()
        try """
        rules:
          - name: defer-x
            match: {phase: rcpt, recipient: "x@example.com"}
            action: {reply: "451 4.3.0 later"}
        """.write(toFile: directory + "/rules.yaml", atomically: true, encoding: .utf8)
        let sink = try SinkProcess(arguments: [
            "--webhook", receiver.url("/one"), "--webhook-mailbox", "job1",
            "--webhook=\(receiver.url("/all"))", "--webhook-events", "message,fault", "--faults", directory + "/rules.yaml",
            "--webhook", receiver.url("/query"), "--webhook-query", "subject:two",
        ])
        defer {
            sink.signal(SIGTERM)
            _ = sink.wait()
        }
        let result = try await python(
            """
            import smtplib
            with smtplib.SMTP('127.0.0.1', PORT, timeout=10) as s:
                s.sendmail('app@x.example', ['app+job1@example.com'], b'Subject: one\\r\\n\\r\\nbody\\r\\n')
                s.sendmail('app@x.example', ['app+job2@example.com'], b'Subject: two\\r\\n\\r\\nbody\\r\\n')
                try:
                    s.sendmail('app@x.example', ['x@example.com'], b'Subject: three\\r\\n\\r\\nbody\\r\\n')
                except smtplib.SMTPRecipientsRefused:
                    pass
            """, port: sink.smtpPort)
        #expect(result.status == 0, "\(result.stderr)")
        let base = "http://127.0.0.1:\(sink.httpPort)"
        let counts = try await Self.webhookCounts(base) { hooks in
            hooks.count == 3 && (hooks[0]["Delivered"] as? Int) == 1 && (hooks[1]["Delivered"] as? Int) == 3
                && (hooks[2]["Delivered"] as? Int) == 1
        }
        #expect(counts.map { $0["Delivered"] as? Int } == [1, 3, 1])
        let requests = try await receiver.log()
        #expect(requests.filter { $0.path == "/one" }.map { $0.header("X-Swallow-Event") } == ["message"])
        let queried = requests.filter { $0.path == "/query" }
        #expect(queried.count == 1)
        #expect(((try? jsonObject(queried.first?.body ?? ""))?["envelope"] as? [String: Any]).map { "\($0)" }?.contains("job2") == true)
        let all = requests.filter { $0.path == "/all" }
        #expect(all.compactMap { $0.header("X-Swallow-Event") }.sorted() == ["fault", "message", "message"])
        let fault = try #require(all.first { $0.header("X-Swallow-Event") == "fault" })
        #expect(try jsonObject(fault.body)["rule"] as? String == "defer-x")

        // Bad webhook and tag options stop the start with exit 2, naming the option.
        let binary = productsDirectory().appendingPathComponent("swallow").path
        for (arguments, named) in [
            (["--webhook", "ftp://x"], "--webhook"), (["--webhook-mailbox", "a"], "--webhook-mailbox"),
            (["--webhook", "http://127.0.0.1:9/", "--webhook-events", "mail"], "--webhook-events"),
            (["--tag", "no-equals-sign"], "--tag"), (["--tag", "x=before:notadate"], "--tag"),
        ] {
            let bad = try await run([binary, "serve", "--smtp", "127.0.0.1:0", "--http", "127.0.0.1:0"] + arguments)
            #expect(bad.status == 2, "\(arguments)")
            #expect(bad.stderr.contains(named), "\(arguments): \(bad.stderr)")
        }
    }
}
