import Foundation
import Hummingbird
import Logging
import MailMessage
import ServiceLifecycle
import SinkServer
import SwallowTestSupport
import Testing

/// Starts the whole sink application (SMTP and HTTP on free ports), runs `body` with the
/// sink and the HTTP base URL, then shuts it down gracefully.
func withSinkApplication<T: Sendable>(
    _ configure: (inout SinkConfiguration) -> Void = { _ in },
    _ body: @Sendable (Sink, String) async throws -> T
) async throws -> T {
    let sink = try await bindTestSink(configure)
    let logger = testLogger
    let (ready, readyContinuation) = AsyncStream<String>.makeStream()
    let app = try sink.application(http: ListenAddress(host: "127.0.0.1", port: 0), logger: logger) { line in
        readyContinuation.yield(line)
    }
    let group = ServiceGroup(configuration: .init(services: [app], gracefulShutdownSignals: [], logger: logger))
    return try await withThrowingTaskGroup(of: Void.self) { tasks in
        tasks.addTask { try await group.run() }
        defer { tasks.cancelAll() }
        var iterator = ready.makeAsyncIterator()
        guard let line = await iterator.next(),
            let http = line.split(separator: " ").first(where: { $0.hasPrefix("http=") || $0.hasPrefix("https=") })
        else {
            throw SinkProcess.Failure(description: "the application never became ready")
        }
        let scheme = http.hasPrefix("https=") ? "https" : "http"
        let base = scheme + "://" + http.dropFirst(scheme.count + 1)
        do {
            let result = try await body(sink, base)
            await group.triggerGracefulShutdown()
            try await tasks.next()
            return result
        } catch {
            // As on success: wait for the application to stop, or the task group would wait
            // for it anyway, and a failing test would hang instead of failing.
            await group.triggerGracefulShutdown()
            _ = try? await tasks.next()
            throw error
        }
    }
}

func curl(_ arguments: [String]) async throws -> String {
    let result = try await run(["curl", "--silent", "--show-error", "--fail-with-body", "--max-time", "10"] + arguments)
    guard result.status == 0 else { throw SinkProcess.Failure(description: "curl \(arguments): \(result.status) \(result.stdout) \(result.stderr)") }
    return result.stdout
}

func jsonObject(_ text: String) throws -> [String: Any] {
    try #require(try JSONSerialization.jsonObject(with: Data(text.utf8)) as? [String: Any])
}

/// The HTTP API over real HTTP on loopback, after real mail from smtplib.
@Suite(
    "HTTP API: Mailpit and MailHog compatible", .timeLimit(.minutes(4)),
    .enabled(if: Peers.available("curl", "python3"), Comment(rawValue: Peers.reason("curl", "python3"))))
struct HTTPAPITests {
    static let corpus = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("shared/corpus").path

    /// Sends corpus messages with smtplib; the envelope recipient carries `+mailbox`.
    static func send(_ files: [String], port: Int, mailbox: String = "ci", auth: Bool = false) async throws {
        let result = try await python(
            """
            import smtplib
            with smtplib.SMTP('127.0.0.1', PORT, timeout=10) as s:
                if AUTH == 'yes':
                    s.login('worker7', 'pw')
                for name in FILES.split(','):
                    data = open(CORPUS + '/' + name, 'rb').read()
                    s.sendmail('app@bank.example', ['app+' + MAILBOX + '@example.com'], data)
            """, port: port, env: ["FILES": files.joined(separator: ","), "CORPUS": corpus, "MAILBOX": mailbox, "AUTH": auth ? "yes" : "no"])
        #expect(result.status == 0, "\(result.stderr)")
    }

    @Test("capture metadata and, with --transcripts, the SMTP transcript of a message")
    func captureAndTranscript() async throws {
        try await withSinkApplication({ $0.transcripts = true }) { sink, base in
            try await Self.send(["01-otp-plain.eml"], port: sink.smtpAddress.port)
            let capture = try jsonObject(try await curl([base + "/api/v1/message/latest/capture"]))
            let envelope = try #require(capture["envelope"] as? [String: Any])
            #expect(envelope["mailFrom"] as? String == "app@bank.example")
            #expect((capture["session"] as? [String: Any])?["remoteAddress"] as? String != nil)
            #expect(((capture["timestamps"] as? [String: Any])?["dataEndNanos"] as? Int ?? 0) > 0)
            let transcript = try #require(
                try JSONSerialization.jsonObject(with: Data(try await curl([base + "/api/v1/message/latest/transcript"]).utf8)) as? [[String: Any]])
            let lines = transcript.compactMap { $0["text"] as? String }
            #expect(lines.contains { $0.hasPrefix("MAIL FROM:<app@bank.example>") }, "\(lines)")
            #expect(lines.contains { $0.hasPrefix("354") })
        }
        try await withSinkApplication { sink, base in
            try await Self.send(["01-otp-plain.eml"], port: sink.smtpAddress.port)
            let (status, _) = try await FaultAPITests.request("GET", base + "/api/v1/message/latest/transcript")
            #expect(status == 404)
            #expect(try await FaultAPITests.request("GET", base + "/api/v1/message/nope/capture").0 == 404)
        }
    }

    @Test("list, message, headers, raw, part and search answer in Mailpit's shapes")
    func mailpitRoutes() async throws {
        try await withSinkApplication { sink, base in
            try await Self.send(
                ["02-otp-alternative.eml", "03-invoice-pdf.eml", "04-utf8-subject-and-name.eml", "05-html-inline-image.eml"],
                port: sink.smtpAddress.port)
            let list = try jsonObject(try await curl(["\(base)/api/v1/messages?limit=2"]))
            #expect(list["total"] as? Int == 4)
            #expect(list["messages_count"] as? Int == 4)
            #expect(list["unread"] as? Int == 4)
            #expect(list["count"] as? Int == 2)
            let messages = try #require(list["messages"] as? [[String: Any]])
            #expect(messages.first?["Subject"] as? String == "Newsletter with inline logo", "newest first")
            for key in [
                "ID", "MessageID", "Read", "From", "To", "Cc", "Bcc", "ReplyTo", "Subject", "Created", "Tags", "Size", "Attachments", "Snippet",
            ] {
                #expect(messages.first?[key] != nil, "summary field \(key)")
            }

            // The RFC 2047 subject, decoded.
            let utf8 = try jsonObject(try await curl(["\(base)/api/v1/search?query=" + "subject:dikirim"]))
            let utf8Messages = try #require(utf8["messages"] as? [[String: Any]])
            #expect(utf8Messages.map { $0["Subject"] as? String } == ["Pesanan Anda telah dikirim — été ☃"])
            let from = try #require(utf8Messages.first?["From"] as? [String: Any])
            #expect(from["Name"] as? String == "Toko Élégant")

            // The invoice: attachment listed, downloadable byte for byte.
            let search = try jsonObject(try await curl(["\(base)/api/v1/search?query=has:attachment"]))
            #expect(search["messages_count"] as? Int == 1)
            #expect(search["total"] as? Int == 4)
            let invoiceID = try #require((search["messages"] as? [[String: Any]])?.first?["ID"] as? String)
            let invoice = try jsonObject(try await curl(["\(base)/api/v1/message/\(invoiceID)"]))
            #expect(invoice["Subject"] as? String == "Invoice INV-2026-0042")
            #expect((invoice["HTML"] as? String)?.contains("Amount due") == true)
            #expect((invoice["Text"] as? String)?.contains("INV-2026-0042") == true)
            #expect(invoice["Read"] as? Bool == true)
            let attachments = try #require(invoice["Attachments"] as? [[String: Any]])
            let pdf = try #require(attachments.first)
            #expect(pdf["ContentType"] as? String == "application/pdf")
            let partID = try #require(pdf["PartID"] as? String)
            let directory = try temporaryDirectory()
            _ = try await curl(["-o", directory + "/part.pdf", "\(base)/api/v1/message/\(invoiceID)/part/\(partID)"])
            let downloaded = try Data(contentsOf: URL(fileURLWithPath: directory + "/part.pdf"))
            #expect(downloaded.starts(with: Data("%PDF-".utf8)))
            #expect(downloaded.count == pdf["Size"] as? Int)

            // Reading it marked it read.
            let unread = try jsonObject(try await curl(["\(base)/api/v1/search?query=is:unread"]))
            #expect(unread["messages_count"] as? Int == 3)

            // Headers with Go's canonical names; raw is the stored bytes.
            let headers = try jsonObject(try await curl(["\(base)/api/v1/message/\(invoiceID)/headers"]))
            #expect(headers["Message-Id"] as? [String] == ["<corpus-3@swallow.test>"])
            #expect(headers["Mime-Version"] != nil)
            let raw = try await curl(["\(base)/api/v1/message/\(invoiceID)/raw"])
            let stored = try #require(try await sink.store.raw(id: invoiceID))
            #expect(raw == String(buffer: stored))

            // The inline image is Inline, not an attachment.
            let newsletter = try jsonObject(try await curl(["\(base)/api/v1/message/latest"]))
            #expect((newsletter["Inline"] as? [[String: Any]])?.first?["ContentID"] as? String == "logo@shop.example")
            #expect((newsletter["Attachments"] as? [Any])?.isEmpty == true)

            // Free text, quoted phrase, negation.
            let phrase = try jsonObject(
                try await curl(["--get", "--data-urlencode", "query=\"Amount due\" -subject:newsletter", "\(base)/api/v1/search"]))
            #expect(phrase["messages_count"] as? Int == 1)
        }
    }

    @Test("mark read, delete by ids and delete all; a malformed delete body is a 400")
    func updates() async throws {
        try await withSinkApplication { sink, base in
            try await Self.send(["01-otp-plain.eml", "02-otp-alternative.eml"], port: sink.smtpAddress.port)
            let ids = sink.store.listings().map(\.message.id)
            _ = try await curl(["-X", "PUT", "-d", "{\"Read\":true,\"IDs\":[\"\(ids[0])\"]}", "\(base)/api/v1/messages"])
            #expect(sink.store.listing(id: ids[0])?.read == true)
            #expect(sink.store.listing(id: ids[1])?.read == false)
            let bad = try await run([
                "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "DELETE", "-d", "{not json", "\(base)/api/v1/messages",
            ])
            #expect(bad.stdout == "400")
            #expect(sink.store.count == 2)
            _ = try await curl(["-X", "DELETE", "-d", "{\"IDs\":[\"\(ids[0])\"]}", "\(base)/api/v1/messages"])
            #expect(sink.store.listings().map(\.message.id) == [ids[1]])
            _ = try await curl(["-X", "DELETE", "\(base)/api/v1/messages"])
            #expect(sink.store.count == 0)
            let missing = try await run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "\(base)/api/v1/message/nope"])
            #expect(missing.stdout == "404")
            let emptySearch = try await run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "\(base)/api/v1/search?query="])
            #expect(emptySearch.stdout == "400")
        }
    }

    @Test("mailboxes: plus tags and AUTH users keep parallel jobs apart")
    func mailboxes() async throws {
        try await withSinkApplication { sink, base in
            try await Self.send(["01-otp-plain.eml"], port: sink.smtpAddress.port, mailbox: "job1")
            try await Self.send(["02-otp-alternative.eml", "03-invoice-pdf.eml"], port: sink.smtpAddress.port, mailbox: "job2", auth: true)
            let job1 = try jsonObject(try await curl(["\(base)/api/v1/messages?mailbox=job1"]))
            #expect(job1["total"] as? Int == 1)
            let job2 = try jsonObject(try await curl(["\(base)/api/v1/search?mailbox=job2&query=has:attachment"]))
            #expect(job2["messages_count"] as? Int == 1)
            #expect(job2["total"] as? Int == 2)
            let byUser = try jsonObject(try await curl(["\(base)/api/v1/messages?mailbox=worker7"]))
            #expect(byUser["total"] as? Int == 2)
            _ = try await curl(["-X", "DELETE", "\(base)/api/v1/messages?mailbox=job2"])
            #expect(sink.store.count == 1)
        }
    }

    @Test("MailHog v2: messages and search in the shapes its server really returns")
    func mailHog() async throws {
        try await withSinkApplication { sink, base in
            try await Self.send(["01-otp-plain.eml", "03-invoice-pdf.eml"], port: sink.smtpAddress.port)
            let list = try jsonObject(try await curl(["\(base)/api/v2/messages?limit=1"]))
            #expect(list["total"] as? Int == 2)
            #expect(list["count"] as? Int == 1)
            let item = try #require((list["items"] as? [[String: Any]])?.first)
            let from = try #require(item["From"] as? [String: Any])
            #expect(from["Mailbox"] as? String == "app")
            #expect(from["Domain"] as? String == "bank.example")
            let content = try #require(item["Content"] as? [String: Any])
            #expect((content["Headers"] as? [String: [String]])?["Subject"] == ["Invoice INV-2026-0042"])
            #expect((item["MIME"] as? [String: Any])?["Parts"] != nil)
            let raw = try #require(item["Raw"] as? [String: Any])
            #expect(raw["Helo"] as? String != nil)
            let search = try jsonObject(try await curl(["\(base)/api/v2/search?kind=containing&query=482913"]))
            #expect(search["total"] as? Int == 1)
            let to = try jsonObject(try await curl(["\(base)/api/v2/search?kind=to&query=app%2Bci"]))
            #expect(to["total"] as? Int == 2)
            let bad = try await run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "\(base)/api/v2/search?kind=nope&query=x"])
            #expect(bad.stdout == "400")
        }
    }

    @Test("the PyPI client mailpit-api-client works unchanged")
    func mailpitClient() async throws {
        try await withSinkApplication { sink, base in
            try await Self.send(["03-invoice-pdf.eml", "01-otp-plain.eml"], port: sink.smtpAddress.port)
            let result = try await run([
                "python3", "-c",
                """
                import mailpit.client.api as api
                client = api.API('\(base)')
                messages = client.get_messages()
                assert messages.total == 2, messages
                summary = [m for m in messages.messages if m.attachments == 1][0]
                message = client.get_message(summary.id)
                assert message.subject == 'Invoice INV-2026-0042', message.subject
                assert message.attachments[0].content_type == 'application/pdf'
                part = client.get_message_attachment(summary.id, message.attachments[0].part_id)
                assert part.startswith('%PDF-'), part[:10]
                headers = client.get_message_headers(summary.id)
                assert headers.message_id == ['<corpus-3@swallow.test>'], headers.message_id
                client.delete_messages([summary.id])
                assert client.get_messages().total == 1
                print('ok')
                """,
            ])
            #expect(result.status == 0, "\(result.stdout)\n\(result.stderr)")
            #expect(result.stdout.contains("ok"))
        }
    }

    @Test("/metrics parses as Prometheus text and counts what the sink did")
    func metrics() async throws {
        try await withSinkApplication { sink, base in
            try await Self.send(["01-otp-plain.eml", "02-otp-alternative.eml"], port: sink.smtpAddress.port)
            let result = try await run([
                "python3", "-c",
                """
                import urllib.request
                from prometheus_client.parser import text_string_to_metric_families
                text = urllib.request.urlopen('\(base)/metrics').read().decode()
                values = {}
                for family in text_string_to_metric_families(text):
                    for sample in family.samples:
                        labels = ','.join('%s=%s' % item for item in sorted(sample.labels.items()))
                        key = sample.name + ('{%s}' % labels if labels else '')
                        values[key] = sample.value
                assert values['swallow_smtp_messages_accepted_total'] == 2, values
                assert values['swallow_store_messages'] == 2, values
                assert values['swallow_smtp_replies_total{code=250}'] >= 6, values
                assert values['swallow_smtp_replies_total{code=354}'] == 2, values
                for phase in ['envelope', 'data', 'reply', 'transaction']:
                    assert values['swallow_smtp_phase_seconds_count{phase=%s}' % phase] == 2, (phase, values)
                    assert values['swallow_smtp_phase_seconds_bucket{le=+Inf,phase=%s}' % phase] == 2, (phase, values)
                print('ok')
                """,
            ])
            #expect(result.status == 0, "\(result.stdout)\n\(result.stderr)")
            let stats = try jsonObject(try await curl([base + "/api/v1/stats"]))
            let rates = try #require(stats["acceptedPerSecond"] as? [String: Double])
            #expect(Set(rates.keys) == ["last1s", "last10s", "last60s"])
            #expect((rates["last60s"] ?? 0) * 60 <= 2)
        }
    }

    @Test("the event stream announces each captured message with its trace id")
    func events() async throws {
        try await withSinkApplication { sink, base in
            let port = sink.smtpAddress.port
            // A client reads the stream until it has two events, then hangs up.
            async let stream = run(
                [
                    "python3", "-c",
                    """
                    import urllib.request
                    stream = urllib.request.urlopen('\(base)/api/v1/events?mailbox=ci', timeout=20)
                    seen = 0
                    while seen < 2:
                        line = stream.readline().decode()
                        if line.startswith('data:'):
                            print(line.strip())
                            seen += 1
                    """,
                ], timeout: 30)
            // Wait until the subscription exists, so no event is missed.
            while !sink.store.events.hasSubscribers { await Task.yield() }
            try await Self.send(["10-headers-cc-replyto-trace.eml"], port: port, mailbox: "other")
            try await Self.send(["10-headers-cc-replyto-trace.eml", "01-otp-plain.eml"], port: port, mailbox: "ci")
            let output = try await stream
            let lines = output.stdout.split(separator: "\n")
            #expect(lines.count == 2)
            let first = try jsonObject(String(lines[0].dropFirst("data: ".count)))
            #expect(first["traceID"] as? String != nil)
            #expect(((first["envelope"] as? [String: Any])?["recipients"] as? [[String: Any]])?.first?["address"] as? String == "app+ci@example.com")
        }
    }

    @Test("a client reconnecting with Last-Event-ID gets exactly the events it missed; a quiet stream gets keep-alives")
    func replayAndKeepAlive() async throws {
        try await withSinkApplication { sink, base in
            let port = sink.smtpAddress.port
            try await Self.send(["01-otp-plain.eml", "02-otp-alternative.eml", "03-invoice-pdf.eml", "04-utf8-subject-and-name.eml"], port: port)
            let ids = sink.store.messages().map(\.id)
            #expect(ids.count == 4)
            // Missed: the two after the second. Then a keep-alive comes on the quiet stream.
            let output = try await run(
                [
                    "python3", "-c",
                    """
                    import urllib.request
                    request = urllib.request.Request('\(base)/api/v1/events?keepalive=100ms', headers={'Last-Event-ID': '\(ids[1])'})
                    stream = urllib.request.urlopen(request, timeout=20)
                    while True:
                        line = stream.readline().decode().strip()
                        if line.startswith('id:') or line == ': keep-alive':
                            print(line)
                        if line == ': keep-alive':
                            break
                    """,
                ], timeout: 30)
            #expect(output.stdout.split(separator: "\n").map(String.init) == ["id: \(ids[2])", "id: \(ids[3])", ": keep-alive"], "\(output.stderr)")
            let stats = try jsonObject(try await curl([base + "/api/v1/stats"]))
            let replay = try #require(stats["eventReplay"] as? [String: Any])
            #expect(replay["held"] as? Int == 4 && replay["capacity"] as? Int == 10_000 && replay["oldest"] as? String == ids[0])
        }
    }
}

/// `--data DIR`: the SQLite index answers lists and searches, survives a restart, and is
/// rebuilt from the message files when it is lost.
@Suite(
    "HTTP API over the on-disk index", .timeLimit(.minutes(4)), .serialized,
    .enabled(if: Peers.available("curl", "python3"), Comment(rawValue: Peers.reason("curl", "python3"))))
struct IndexedAPITests {
    static func search(_ base: String, _ query: String) async throws -> [String: Any] {
        try jsonObject(try await curl(["--get", "--data-urlencode", "query=\(query)", "\(base)/api/v1/search"]))
    }

    @Test("search answers from the index, read flags persist, and a deleted index is rebuilt")
    func indexLifecycle() async throws {
        let directory = try temporaryDirectory()
        let configure: (inout SinkConfiguration) -> Void = { $0.dataDirectory = directory }
        let invoiceID = try await withSinkApplication(configure) { sink, base in
            try await HTTPAPITests.send(
                ["01-otp-plain.eml", "03-invoice-pdf.eml", "04-utf8-subject-and-name.eml", "05-html-inline-image.eml"],
                port: sink.smtpAddress.port
            )
            #expect(FileManager.default.fileExists(atPath: directory + "/index.sqlite"))
            let attachments = try await Self.search(base, "has:attachment")
            #expect(attachments["messages_count"] as? Int == 1)
            #expect(attachments["total"] as? Int == 4)
            let phrase = try await Self.search(base, "\"amount due\" -subject:newsletter")
            #expect(phrase["messages_count"] as? Int == 1)
            let utf8 = try await Self.search(base, "from:élégant")
            #expect(utf8["messages_count"] as? Int == 1)
            let id = try #require((attachments["messages"] as? [[String: Any]])?.first?["ID"] as? String)
            _ = try await curl(["\(base)/api/v1/message/\(id)"])
            let unread = try await Self.search(base, "is:unread")
            #expect(unread["messages_count"] as? Int == 3)
            let page = try jsonObject(try await curl(["\(base)/api/v1/messages?start=1&limit=2"]))
            #expect((page["messages"] as? [Any])?.count == 2)
            #expect(page["total"] as? Int == 4)
            let mailHog = try jsonObject(try await curl(["\(base)/api/v2/search?kind=containing&query=482913"]))
            #expect(mailHog["total"] as? Int == 1)
            return id
        }
        // A restart reads the index again, read flags included.
        try await withSinkApplication(configure) { sink, base in
            #expect(sink.store.count == 4)
            let unread = try await Self.search(base, "is:unread")
            #expect(unread["messages_count"] as? Int == 3)
            let read = try await Self.search(base, "is:read")
            #expect((read["messages"] as? [[String: Any]])?.first?["ID"] as? String == invoiceID)
        }
        // Lost index: rebuilt from the .eml and .json files.
        for suffix in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: directory + "/index.sqlite" + suffix) }
        try await withSinkApplication(configure) { sink, base in
            #expect(sink.store.count == 4)
            let attachments = try await Self.search(base, "has:attachment")
            #expect(attachments["messages_count"] as? Int == 1)
            let subject = try await Self.search(base, "subject:dikirim")
            #expect(subject["messages_count"] as? Int == 1)
        }
        // A damaged index is rebuilt too, by a restarted `swallow serve`.
        try Data("not a database".utf8).write(to: URL(fileURLWithPath: directory + "/index.sqlite"))
        for suffix in ["-wal", "-shm"] { try? FileManager.default.removeItem(atPath: directory + "/index.sqlite" + suffix) }
        let process = try SinkProcess(arguments: ["--data", directory])
        let all = try jsonObject(try await curl(["http://127.0.0.1:\(process.httpPort)/api/v1/search?query=has:attachment"]))
        #expect(all["total"] as? Int == 4)
        #expect(all["messages_count"] as? Int == 1)
        process.signal(SIGTERM)
        #expect(process.wait() == 0)
    }
}
