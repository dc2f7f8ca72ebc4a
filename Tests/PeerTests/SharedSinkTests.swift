import Foundation
import MailMessage
import SwallowTestSupport
import Testing

@testable import SinkServer

/// One sink shared by many jobs: mailboxes with tokens, quotas, retention and faults of their
/// own, API authentication and HTTPS, over real HTTP (curl) and SMTP (smtplib).
@Suite(
    "Shared sink: mailboxes, tokens, API auth, HTTPS", .timeLimit(.minutes(4)),
    .enabled(if: Peers.available("curl", "openssl", "python3"), Comment(rawValue: Peers.reason("curl", "openssl", "python3"))))
struct SharedSinkTests {
    /// curl with optional headers: the status, the body and the response headers.
    static func request(
        _ method: String, _ url: String, body: String? = nil, headers: [String] = [], extra: [String] = []
    ) async throws -> (status: Int, body: String, headers: String) {
        let headerFile = try temporaryDirectory() + "/headers"
        var arguments = ["curl", "--silent", "--max-time", "10", "-X", method, "-D", headerFile, "-w", "\n%{http_code}"] + extra + [url]
        for header in headers { arguments += ["-H", header] }
        if let body { arguments += ["--data-binary", body, "-H", "Content-Type: application/json"] }
        let result = try await run(arguments)
        let lines = result.stdout.split(separator: "\n", omittingEmptySubsequences: false)
        let responseHeaders = (try? String(contentsOfFile: headerFile, encoding: .utf8)) ?? ""
        return (Int(lines.last ?? "") ?? 0, lines.dropLast().joined(separator: "\n"), responseHeaders)
    }

    static func bearer(_ token: String) -> [String] { ["Authorization: Bearer \(token)"] }

    /// Creates a mailbox; its name and token.
    static func create(_ base: String, _ body: String, headers: [String] = []) async throws -> (name: String, token: String) {
        let (status, text, _) = try await request("POST", base + "/api/v1/mailboxes", body: body, headers: headers)
        #expect(status == 201, "\(text)")
        let object = try jsonObject(text)
        return (try #require(object["Name"] as? String), try #require(object["Token"] as? String))
    }

    /// Sends one message per (recipient, subject) with smtplib, in one session.
    static func send(_ port: Int, _ messages: [(to: String, subject: String)], headers: String = "") async throws {
        let list = messages.map { "(\"\($0.to)\", \"\($0.subject)\")" }.joined(separator: ", ")
        let result = try await python(
            """
            import smtplib
            with smtplib.SMTP("127.0.0.1", PORT) as s:
                for to, subject in [\(list)]:
                    s.sendmail("app@example.com", [to], f"From: app@example.com\\r\\nTo: {to}\\r\\nSubject: {subject}\\r\\n\(headers)\\r\\nbody\\r\\n")
            """, port: port)
        #expect(result.status == 0, "\(result.stderr)")
    }

    static func subjects(_ base: String, token: String? = nil, query: String = "") async throws -> [String] {
        let (status, text, _) = try await request("GET", base + "/api/v1/messages" + query, headers: token.map(bearer) ?? [])
        #expect(status == 200, "\(text)")
        return (try jsonObject(text)["messages"] as? [[String: Any]] ?? []).compactMap { $0["Subject"] as? String }
    }

    @Test("two jobs: each creates a mailbox, its quota evicts only its own oldest, bad fields are 400 and names in use 409")
    func twoJobsAndQuotas() async throws {
        try await withSinkApplication { sink, base in
            let a = try await Self.create(base, #"{"Name": "job-a", "Quota": 3, "TTL": "1h"}"#)
            let b = try await Self.create(base, #"{"Name": "job-b"}"#)
            #expect(a.name == "job-a" && b.name == "job-b" && a.token != b.token && a.token.count >= 32)
            try await Self.send(
                sink.smtpAddress.port,
                [("app+job-b@example.com", "b1")] + (1...5).map { ("app+job-a@example.com", "a\($0)") }
                    + [("app+job-b@example.com", "b2")])
            #expect(try await Self.subjects(base, token: a.token) == ["a5", "a4", "a3"])
            #expect(try await Self.subjects(base, token: b.token) == ["b2", "b1"])
            #expect(try await Self.subjects(base).count == 5)

            let (_, shown, _) = try await Self.request("GET", base + "/api/v1/mailboxes/job-a")
            let record = try jsonObject(shown)
            #expect(record["Messages"] as? Int == 3 && record["Quota"] as? Int == 3 && record["TTL"] as? String == "1h")
            #expect(record["Created"] is String)
            let (_, list, _) = try await Self.request("GET", base + "/api/v1/mailboxes")
            let names = (try jsonObject(list)["mailboxes"] as? [[String: Any]] ?? []).compactMap { $0["Name"] as? String }
            #expect(names == ["job-a", "job-b"])

            let generated = try await Self.create(base, "")
            #expect(generated.name.hasPrefix("mb-"))
            for (body, field) in [
                (#"{"Name": "Job A"}"#, "Name"), (#"{"Quota": -1}"#, "Quota"), (#"{"Quota": "x"}"#, "Quota"),
                (#"{"TTL": "soon"}"#, "TTL"), (#"{"Colour": 1}"#, "Colour"),
            ] {
                let (status, text, _) = try await Self.request("POST", base + "/api/v1/mailboxes", body: body)
                #expect(status == 400 && text.contains(field), "\(body): \(status) \(text)")
            }
            #expect(try await Self.request("POST", base + "/api/v1/mailboxes", body: #"{"Name": "job-a"}"#).status == 409)
            #expect(try await Self.request("GET", base + "/api/v1/mailboxes/nope").status == 404)

            // Per-mailbox counts in the stats and the metrics.
            let (_, statsText, _) = try await Self.request("GET", base + "/api/v1/stats")
            let boxes = try #require(try jsonObject(statsText)["mailboxes"] as? [String: [String: Int]])
            #expect(boxes["job-a"] == ["messages": 3, "evicted": 2] && boxes["job-b"] == ["messages": 2, "evicted": 0])
            let metrics = try await curl([base + "/metrics"])
            #expect(metrics.contains("swallow_mailbox_messages{mailbox=\"job-a\"} 3"))
            #expect(metrics.contains("swallow_mailbox_evictions_total{mailbox=\"job-a\"} 2"))

            // Deleting a mailbox deletes its messages; its token stops working.
            #expect(try await Self.request("DELETE", base + "/api/v1/mailboxes/job-b").status == 200)
            #expect(try await Self.subjects(base).count == 3)
            #expect(try await Self.request("GET", base + "/api/v1/messages", headers: Self.bearer(b.token)).status == 401)
        }
    }

    @Test("a mailbox token narrows every route: its own messages answer, another mailbox's are 404, unnarrowable routes 403")
    func tokensNarrowEveryRoute() async throws {
        try await withSinkApplication { sink, base in
            let a = try await Self.create(base, #"{"Name": "job-a"}"#)
            _ = try await Self.create(base, #"{"Name": "job-b"}"#)
            try await Self.send(sink.smtpAddress.port, [("app+job-a@example.com", "mine"), ("app+job-b@example.com", "theirs")])
            let all = sink.store.listings()
            let own = try #require(all.first { $0.mailboxes == ["job-a"] }).message.id
            let other = try #require(all.first { $0.mailboxes == ["job-b"] }).message.id
            let token = Self.bearer(a.token)

            for route in [
                "/api/v1/message/ID", "/api/v1/message/ID/raw", "/api/v1/message/ID/headers", "/api/v1/message/ID/capture",
                "/view/ID.html", "/view/ID.txt",
            ] {
                let mine = try await Self.request("GET", base + route.replacingOccurrences(of: "ID", with: own), headers: token)
                let theirs = try await Self.request("GET", base + route.replacingOccurrences(of: "ID", with: other), headers: token)
                #expect(mine.status == 200 && theirs.status == 404, "\(route): own \(mine.status), other \(theirs.status)")
            }
            // Lists and searches, whatever mailbox the request names.
            #expect(try await Self.subjects(base, token: a.token) == ["mine"])
            #expect(try await Self.subjects(base, token: a.token, query: "?mailbox=job-a") == ["mine"])
            #expect(try await Self.request("GET", base + "/api/v1/messages?mailbox=job-b", headers: token).status == 404)
            let (_, search, _) = try await Self.request("GET", base + "/api/v1/search?query=subject:theirs", headers: token)
            #expect(try jsonObject(search)["messages_count"] as? Int == 0)
            let (_, mailHog, _) = try await Self.request("GET", base + "/api/v2/messages", headers: token)
            #expect(try jsonObject(mailHog)["total"] as? Int == 1)
            let (_, latest, _) = try await Self.request("GET", base + "/api/v1/message/latest", headers: token)
            #expect(try jsonObject(latest)["Subject"] as? String == "mine")
            let (waitStatus, wait, _) = try await Self.request("GET", base + "/api/v1/wait?count=%3D%3D1&timeout=1s", headers: token)
            let waited = try jsonObject(wait)["Count"] as? Int
            #expect(waitStatus == 200 && waited == 1, "\(wait)")
            let (_, stats, _) = try await Self.request("GET", base + "/api/v1/stats", headers: token)
            let statsObject = try jsonObject(stats)
            #expect(statsObject["mailbox"] as? String == "job-a" && statsObject["messages"] as? Int == 1 && statsObject["smtp"] == nil)
            // The event stream, replaying what it holds: only its own mailbox's messages.
            let events = try await run([
                "curl", "--silent", "--max-time", "2", "-H", "Authorization: Bearer \(a.token)",
                base + "/api/v1/events?lastEventId=0",
            ])
            #expect(events.stdout.contains("id: \(own)") && !events.stdout.contains(other), "\(events.stdout)")
            // Changes by id touch only its own.
            _ = try await Self.request("PUT", base + "/api/v1/messages", body: "{\"IDs\": [\"\(other)\"], \"Read\": true}", headers: token)
            _ = try await Self.request("DELETE", base + "/api/v1/messages", body: "{\"IDs\": [\"\(other)\"]}", headers: token)
            #expect(sink.store.listing(id: other)?.read == false)
            _ = try await Self.request("DELETE", base + "/api/v1/messages", headers: token)
            #expect(sink.store.listing(id: own) == nil && sink.store.listing(id: other) != nil)
            // Another mailbox, and what cannot be narrowed.
            #expect(try await Self.request("GET", base + "/api/v1/mailboxes/job-b", headers: token).status == 404)
            #expect(try await Self.request("GET", base + "/api/v1/mailboxes/job-a", headers: token).status == 200)
            for (method, route) in [
                ("GET", "/api/v1/mailboxes"), ("POST", "/api/v1/mailboxes"), ("GET", "/api/v1/tags"),
                ("GET", "/api/v1/info"), ("GET", "/metrics"), ("POST", "/api/v1/send"), ("PUT", "/api/v1/chaos"),
                ("DELETE", "/api/v1/messages/\(other)"),
            ] {
                #expect(try await Self.request(method, base + route, headers: token).status == 403, "\(method) \(route)")
            }
            // Credentials that do not parse or that nobody has.
            for header in ["Authorization: Bearer nope", "Authorization: Bearer", "Authorization: Basic !!!", "Authorization: Digest x"] {
                #expect(try await Self.request("GET", base + "/api/v1/messages", headers: [header]).status == 401, "\(header)")
            }
        }
    }

    @Test("with --data, created mailboxes and their tokens survive a restart")
    func registryPersists() async throws {
        let directory = try temporaryDirectory()
        let job = try await withSinkApplication({ $0.dataDirectory = directory }) { sink, base in
            let job = try await Self.create(base, #"{"Name": "kept", "Quota": 7}"#)
            try await Self.send(sink.smtpAddress.port, [("app+kept@example.com", "k")])
            return job
        }
        try await withSinkApplication({ $0.dataDirectory = directory }) { _, base in
            #expect(try await Self.subjects(base, token: job.token) == ["k"])
            let (_, shown, _) = try await Self.request("GET", base + "/api/v1/mailboxes/kept", headers: Self.bearer(job.token))
            #expect(try jsonObject(shown)["Quota"] as? Int == 7)
        }
    }

    @Test("a mailbox's own fault rules fail its RCPT while another job's pass; a token's PUT sets only its mailbox's rules")
    func faultsPerMailbox() async throws {
        try await withSinkApplication { sink, base in
            let a = try await Self.create(base, #"{"Name": "job-a"}"#)
            let port = sink.smtpAddress.port
            let rules = #"{"rules": [{"name": "down", "match": {"phase": "rcpt"}, "action": {"reply": "550 5.7.1 job-a is down"}}]}"#
            let (status, text, _) = try await Self.request("PUT", base + "/api/v1/faults", body: rules, headers: Self.bearer(a.token))
            let scope = try jsonObject(text)["mailbox"] as? String
            #expect(status == 200 && scope == "job-a", "\(text)")
            #expect(
                try await FaultAPITests.rcpt(port, ["app+job-a@example.com", "app+job-b@example.com", "plain@example.com"])
                    == [220, 250, 250, 550, 250, 250])
            // The global set is untouched; the mailbox's set counts what fired.
            let (_, global, _) = try await Self.request("GET", base + "/api/v1/faults")
            #expect((try jsonObject(global)["rules"] as? [Any])?.isEmpty == true)
            let (_, scoped, _) = try await Self.request("GET", base + "/api/v1/faults?mailbox=job-a")
            #expect((try jsonObject(scoped)["fired"] as? [String: Int]) == ["down": 1])
            // Next-N for a mailbox, by admin with ?mailbox=; unknown mailboxes are 404.
            #expect(try await Self.request("DELETE", base + "/api/v1/faults?mailbox=job-a").status == 200)
            let next = #"{"count": 1, "rule": {"match": {"phase": "rcpt"}, "action": {"reply": "451 4.3.0 later"}}}"#
            #expect(try await Self.request("POST", base + "/api/v1/faults/next?mailbox=job-a", body: next).status == 201)
            #expect(
                try await FaultAPITests.rcpt(port, ["app+job-b@example.com", "app+job-a@example.com", "app+job-a@example.com"])
                    == [220, 250, 250, 250, 451, 250])
            #expect(try await Self.request("PUT", base + "/api/v1/faults?mailbox=nobody", body: rules).status == 404)
        }
    }

    @Test("TTL removes a mailbox's old messages and no one else's; --max-age removes all old mail")
    func retention() async throws {
        try await withSinkApplication({ $0.maxAge = 3600 }) { sink, base in
            _ = try await Self.create(base, #"{"Name": "short", "TTL": "2s"}"#)
            try await Self.send(sink.smtpAddress.port, [("app+short@example.com", "s"), ("app+long@example.com", "l"), ("x@example.com", "x")])
            let now = WallClock.nanos()
            // The sink's own sweep runs every second on the real clock, and on a loaded machine
            // sending can take over 2 s: the 2 s message may be gone, or go in either call, but
            // only it, once.
            let early = sink.store.expire(nowNanos: now, maxAge: 3600)
            let due = sink.store.expire(nowNanos: now + 3_000_000_000, maxAge: 3600)
            #expect(early + due <= 1)
            #expect(try await Self.subjects(base).sorted() == ["l", "x"])
            #expect(sink.store.expire(nowNanos: now + 3_601_000_000_000, maxAge: 3600) == 2)
            #expect(sink.store.count == 0)
            let (_, stats, _) = try await Self.request("GET", base + "/api/v1/stats")
            #expect(try jsonObject(stats)["expired"] as? Int == 3)
        }
        // The sink's own sweep, every second.
        try await withSinkApplication({ $0.maxAge = 0.5 }) { sink, base in
            try await Self.send(sink.smtpAddress.port, [("x@example.com", "x")])
            let deadline = ContinuousClock.now + .seconds(20)
            while sink.store.count > 0, ContinuousClock.now < deadline { try await Task.sleep(for: .milliseconds(100)) }
            #expect(sink.store.count == 0)
        }
    }

    @Test("with --api-token and --api-auth every route but the health checks needs a credential")
    func adminAuthentication() async throws {
        let directory = try temporaryDirectory()
        try "admin:s3cret\n".write(toFile: directory + "/api-users", atomically: true, encoding: .utf8)
        guard case .credentials(let users) = try AuthPolicy.load(file: directory + "/api-users") else {
            Issue.record("no users")
            return
        }
        try await withSinkApplication({
            $0.apiTokens = ["admintoken"]
            $0.apiCredentials = users
        }) { sink, base in
            let (status, _, headers) = try await Self.request("GET", base + "/api/v1/messages")
            #expect(status == 401 && headers.lowercased().contains("www-authenticate: basic realm=\"swallow\""), "\(headers)")
            #expect(try await Self.request("GET", base + "/").status == 401)
            #expect(try await Self.request("GET", base + "/api/v1/messages", headers: Self.bearer("admintoken")).status == 200)
            #expect(try await Self.request("GET", base + "/api/v1/messages", extra: ["-u", "admin:s3cret"]).status == 200)
            #expect(try await Self.request("GET", base + "/api/v1/messages", extra: ["-u", "admin:wrong"]).status == 401)
            #expect(try await Self.request("GET", base + "/api/v1/messages", headers: Self.bearer("s3cret")).status == 401)
            for path in ["/healthz", "/livez", "/readyz"] { #expect(try await Self.request("GET", base + path).status == 200) }
            // A mailbox made by an admin; its token works as Bearer or as Basic's password.
            let job = try await Self.create(base, #"{"Name": "job"}"#, headers: Self.bearer("admintoken"))
            #expect(try await Self.request("GET", base + "/api/v1/messages", headers: Self.bearer(job.token)).status == 200)
            #expect(try await Self.request("GET", base + "/api/v1/messages", extra: ["-u", "ci:\(job.token)"]).status == 200)
            // SMTP AUTH users are not API users.
            #expect(try await Self.request("GET", base + "/api/v1/messages", extra: ["-u", "app:secret"]).status == 401)
        }
    }

    @Test("--http-tls serves the API over HTTPS with the given certificate (curl --cacert) or the self-signed one (curl -k)")
    func https() async throws {
        let directory = try temporaryDirectory()
        let made = try await run([
            "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes", "-days", "1",
            "-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
            "-keyout", directory + "/key.pem", "-out", directory + "/cert.pem",
        ])
        #expect(made.status == 0, "\(made.stderr)")
        try await withSinkApplication({
            $0.httpTLS = true
            $0.tls = .files(certificate: directory + "/cert.pem", key: directory + "/key.pem")
        }) { _, base in
            #expect(base.hasPrefix("https://"))
            let (status, body, _) = try await Self.request("GET", base + "/api/v1/messages", extra: ["--cacert", directory + "/cert.pem"])
            #expect(status == 200 && body.contains("\"messages\""), "\(status) \(body)")
            #expect(try await Self.request("GET", base.replacingOccurrences(of: "https:", with: "http:") + "/api/v1/messages").status != 200)
        }
        try await withSinkApplication({ $0.httpTLS = true }) { _, base in
            let insecure = try await Self.request("GET", base + "/readyz", extra: ["-k"]).status
            let verified = try await Self.request("GET", base + "/readyz").status
            #expect(insecure == 200 && verified == 0)  // the self-signed certificate is not trusted without -k
        }
    }

    @Test("swallow serve refuses a public --http without API auth (exit 2, saying why); loopback addresses are recognised")
    func publicAddressNeedsAuth() async throws {
        let binary = productsDirectory().appendingPathComponent("swallow").path
        let refused = try await run([binary, "serve", "--smtp", "127.0.0.1:0", "--http", "0.0.0.0:0"])
        #expect(refused.status == 2 && refused.stderr.contains("--api-token") && refused.stderr.contains("--api-insecure"), "\(refused.stderr)")
        for host in ["127.0.0.1", "127.1.2.3", "localhost", "::1"] { #expect(ListenAddress(host: host, port: 1).isLoopback, "\(host)") }
        for host in ["0.0.0.0", "::", "10.0.0.1", "192.168.1.1", "example.com"] { #expect(!ListenAddress(host: host, port: 1).isLoopback, "\(host)") }
    }

    @Test("swallow assert --mailbox new creates a mailbox; --token narrows its wait to that mailbox")
    func assertWithToken() async throws {
        try await withSinkApplication { sink, base in
            let port = try #require(URL(string: base)?.port)
            let created = try await AssertCommandTests.assert(["--mailbox", "new"], api: port)
            #expect(created.status == 0, "\(created.stderr)")
            let parts = created.stdout.trimmingCharacters(in: .whitespacesAndNewlines).split(separator: " ").map(String.init)
            #expect(parts.count == 2)
            let (name, token) = (parts[0], parts[1])
            try await Self.send(sink.smtpAddress.port, [("app+other@example.com", "code 111111"), ("app+\(name)@example.com", "code 222222")])
            let mine = try await AssertCommandTests.assert(
                ["--token", token, "--subject", "code", "--extract", "([0-9]{6})", "--count", "==1", "--within", "1s"], api: port)
            #expect(mine.status == 0 && mine.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "222222", "\(mine.stdout) \(mine.stderr)")
        }
    }
}
