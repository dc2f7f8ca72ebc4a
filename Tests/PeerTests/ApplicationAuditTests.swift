import Foundation
import SwallowTestSupport
import Testing

/// What the application did when mail failed: real clients (Python's smtplib with a retry loop
/// of its own, written here) against `swallow serve` with fault rules, read back through
/// `/api/v1/deliveries`, the timeline, the top tables and `swallow assert retries`.
@Suite(
    "Application audit: attempts, retries, bounces, volume", .timeLimit(.minutes(4)),
    .enabled(if: Peers.available("curl", "python3"), Comment(rawValue: Peers.reason("curl", "python3"))))
struct ApplicationAuditTests {
    /// An application's mail client: `deliver(to, subject, waits, stop_on_permanent)` sends one
    /// message, retrying after each refusal after the next of `waits` seconds (a new connection
    /// each time, the same message and Message-ID); prints and returns what became of it.
    static let client = """
        import smtplib, sys, time
        from email.message import EmailMessage

        def message(to, subject):
            m = EmailMessage()
            m['From'] = 'app@shop.example'
            m['To'] = to
            m['Subject'] = subject
            m['Message-ID'] = '<%s.%d@shop.example>' % (subject.replace(' ', '-'), time.time_ns())
            m.set_content('Your code is 123456')
            return m

        def deliver(to, subject, waits, stop_on_permanent=True):
            m = message(to, subject)
            for wait in [0] + waits:
                time.sleep(wait)
                try:
                    with smtplib.SMTP('127.0.0.1', PORT, timeout=10) as s:
                        s.send_message(m)
                    print('delivered', to)
                    return
                except smtplib.SMTPRecipientsRefused as e:
                    code = list(e.recipients.values())[0][0]
                except smtplib.SMTPResponseException as e:
                    code = e.smtp_code
                if code >= 500 and stop_on_permanent:
                    print('bounced', to)
                    return
            print('gave up', to)

        """

    static func swallow(_ arguments: [String], api: Int) async throws -> ProcessResult {
        try await run([productsDirectory().appendingPathComponent("swallow").path] + arguments + ["--api", "http://127.0.0.1:\(api)"], timeout: 60)
    }

    static func rules(_ yaml: String) throws -> String {
        let path = try temporaryDirectory() + "/rules.yaml"
        try yaml.write(toFile: path, atomically: true, encoding: .utf8)
        return path
    }

    static func deliveries(_ sink: SinkProcess, _ recipient: String, query: String = "") async throws -> [[String: Any]] {
        let answer = try jsonObject(try await curl(["http://127.0.0.1:\(sink.httpPort)/api/v1/deliveries/\(recipient)?\(query)"]))
        return answer["deliveries"] as? [[String: Any]] ?? []
    }

    /// The status and body of a GET that may fail.
    static func get(_ url: String) async throws -> (status: Int, body: String) {
        let result = try await run(["curl", "--silent", "--max-time", "10", "--write-out", "\n%{http_code}", url])
        let lines = result.stdout.split(separator: "\n", omittingEmptySubsequences: false)
        return (Int(lines.last ?? "") ?? 0, lines.dropLast().joined(separator: "\n"))
    }

    @Test("a client that backs off through a greylist and two tempfails: delivered, intervals recorded, no flags; the assert waits for it")
    func wellBehavedClient() async throws {
        let sink = try SinkProcess(arguments: [
            "--faults",
            try Self.rules(
                """
                rules:
                  - name: greylist
                    match: {phase: rcpt, recipient: "*@greylisted.example"}
                    action: {greylist: {retry_after: 1s}}
                """),
        ])
        defer {
            sink.signal(SIGTERM)
            _ = sink.wait()
        }
        // The next two messages' ends are deferred (after the greylist lets the retry through).
        _ = try await curl([
            "-X", "POST", "http://127.0.0.1:\(sink.httpPort)/api/v1/faults/next", "-d",
            #"{"count": 2, "rule": {"match": {"phase": "data-end"}, "action": {"reply": "451 4.3.0 Try later"}}}"#,
        ])
        // The assert starts first and waits on the sink for the expectation.
        async let asserted = Self.swallow(
            [
                "assert", "retries", "--to", "alice@greylisted.example", "--delivered", "--attempts", ">=3", "--backoff", "--no-flags",
                "--within", "40s",
            ], api: sink.httpPort)
        let sent = try await python(Self.client + "deliver('alice@greylisted.example', 'login code', [1.1, 1.6, 2.3])\n", port: sink.smtpPort)
        #expect(sent.stdout == "delivered alice@greylisted.example\n", "\(sent.stderr)")
        let result = try await asserted
        #expect(result.status == 0, "\(result.stdout) \(result.stderr)")
        #expect(result.stdout.contains("delivered  attempts=4"))

        let delivery = try #require(try await Self.deliveries(sink, "alice@greylisted.example").first)
        #expect(delivery["Outcome"] as? String == "delivered")
        #expect(delivery["Retries"] as? Int == 3)
        #expect(delivery["Flags"] as? [String] == [])
        let intervals = delivery["Intervals"] as? [Double] ?? []
        #expect(intervals.count == 3)
        for (measured, waited) in zip(intervals, [1.1, 1.6, 2.3]) { #expect(measured >= waited && measured < waited + 1) }
        let attempts = try #require(delivery["Attempts"] as? [[String: Any]])
        #expect(attempts.map { $0["Phase"] as? String } == ["rcpt", "data-end", "data-end", "data-end"])
        #expect(attempts.map { ($0["Reply"] as? [String: Any])?["Code"] as? Int } == [451, 451, 451, 250])
        #expect(attempts[0]["Rule"] as? String == "greylist")
        #expect(attempts[0]["RetryAfter"] as? Double == 1)
        #expect(attempts[0]["MessageID"] is NSNull)
        let messageID = try #require(attempts[3]["MessageID"] as? String)
        #expect(delivery["MessageID"] as? String == messageID && attempts[1]["MessageID"] as? String == messageID)
        #expect(attempts.allSatisfy { $0["Sender"] as? String == "app@shop.example" && $0["Client"] as? String == "127.0.0.1" })
    }

    @Test(
        "a client that retries at once, retries after a 550 and sends again to a bounced address: each flag raised; the assert exits 1 with the attempts"
    )
    func badlyBehavedClient() async throws {
        let sink = try SinkProcess(arguments: [
            "--give-up-after", "2s", "--faults",
            try Self.rules(
                """
                rules:
                  - name: busy
                    match: {phase: rcpt, recipient: "*@busy.example"}
                    action: {reply: "451 4.3.0 Mailbox busy"}
                  - name: gone
                    match: {phase: data-end, recipient: "*@gone.example"}
                    action: {reply: "550 5.1.1 No such user"}
                """),
        ])
        defer {
            sink.signal(SIGTERM)
            _ = sink.wait()
        }
        let sent = try await python(
            Self.client + """
                deliver('x@busy.example', 'reset', [0.05, 0.05, 0.05])
                deliver('y@gone.example', 'invoice', [0.05], stop_on_permanent=False)
                deliver('y@gone.example', 'receipt', [])
                """, port: sink.smtpPort)
        #expect(sent.stdout == "gave up x@busy.example\ngave up y@gone.example\nbounced y@gone.example\n", "\(sent.stderr)")

        let busy = try #require(try await Self.deliveries(sink, "x@busy.example").first)
        #expect(busy["Outcome"] as? String == "deferred")
        #expect((busy["Flags"] as? [String]).map { $0.contains("retry-too-soon") && $0.contains("no-backoff") } == true)
        let gone = try await Self.deliveries(sink, "y@gone.example")
        try #require(gone.count == 2)
        #expect(gone[0]["Flags"] as? [String] == ["sent-after-bounce"])
        #expect(gone[1]["Flags"] as? [String] == ["retry-after-permanent"])
        #expect(gone.allSatisfy { $0["Outcome"] as? String == "bounced" })

        let failed = try await Self.swallow(["assert", "retries", "--to", "x@busy.example", "--no-flags", "--within", "300ms"], api: sink.httpPort)
        #expect(failed.status == 1)
        #expect(failed.stderr.contains("retry-too-soon"))
        #expect(failed.stdout.components(separatedBy: "451 4.3.0 Mailbox busy").count == 5, "four attempts in the table: \(failed.stdout)")
        let permanent = try await Self.swallow(
            ["assert", "retries", "--to", "y@gone.example", "--no-flags", "--within", "200ms"], api: sink.httpPort)
        #expect(permanent.status == 1 && permanent.stdout.contains("550 5.1.1 No such user"))

        // gave-up: nothing more came for 2 s; waited for on the sink (wait=, after=), not slept.
        var wait = ""
        var flags: [String] = []
        let deadline = ContinuousClock.now + .seconds(60)
        while !flags.contains("gave-up"), ContinuousClock.now < deadline {
            let answer = try jsonObject(try await curl(["http://127.0.0.1:\(sink.httpPort)/api/v1/deliveries/x@busy.example\(wait)"]))
            wait = "?wait=5s&after=\(answer["version"] as? Int ?? 0)"
            flags = ((answer["deliveries"] as? [[String: Any]])?.first?["Flags"] as? [String]) ?? []
        }
        #expect(flags.contains("gave-up"))
        let stats = try jsonObject(try await curl(["http://127.0.0.1:\(sink.httpPort)/api/v1/stats"]))
        let counted = (stats["deliveries"] as? [String: Any])?["flags"] as? [String: Int] ?? [:]
        for flag in ["retry-too-soon", "no-backoff", "retry-after-permanent", "sent-after-bounce", "gave-up"] {
            #expect((counted[flag] ?? 0) >= 1, "\(flag) counted in /api/v1/stats")
        }
        let metrics = try await curl(["http://127.0.0.1:\(sink.httpPort)/metrics"])
        #expect(metrics.contains(#"swallow_delivery_flags_total{flag="gave-up"} 1"#))
        #expect(metrics.contains(#"swallow_attempts_total{phase="rcpt",class="4xx"} 4"#))
        #expect(metrics.contains(#"swallow_attempts_total{phase="data-end",class="5xx"} 3"#))

        // Options that make no sense together: 64, with the reason.
        let nonsense = try await Self.swallow(["assert", "retries", "--to", "x@busy.example", "--attempts", "1", "--backoff"], api: sink.httpPort)
        #expect(nonsense.status == 64 && nonsense.stderr.contains("--backoff"))
        let bad = try await Self.swallow(["assert", "retries", "--to", "x@busy.example", "--attempts", "many"], api: sink.httpPort)
        #expect(bad.status == 2)
    }

    @Test("deliveries, flags and the timeline survive a restart with --data")
    func persistence() async throws {
        let directory = try temporaryDirectory()
        let rules = try Self.rules(
            """
            rules:
              - name: gone
                match: {phase: rcpt, recipient: "*@gone.example"}
                action: {reply: "550 5.1.1 No such user"}
            """)
        let first = try SinkProcess(arguments: ["--data", directory, "--faults", rules])
        _ = try await python(
            Self.client + "deliver('z@gone.example', 'welcome', [0.05, 0.05, 0.05], stop_on_permanent=False)\ndeliver('ok@shop.example', 'hi', [])\n",
            port: first.smtpPort)
        let now = Int(Date().timeIntervalSince1970)
        let range = "from=\(now - 120)&to=\(now + 60)&step=10s"
        let before = try await curl(["http://127.0.0.1:\(first.httpPort)/api/v1/deliveries"])
        let timelineBefore = try await curl(["http://127.0.0.1:\(first.httpPort)/api/v1/stats/timeline?\(range)"])
        first.signal(SIGTERM)
        #expect(first.wait() == 0)
        let second = try SinkProcess(arguments: ["--data", directory, "--faults", rules])
        defer {
            second.signal(SIGTERM)
            _ = second.wait()
        }
        let after = try jsonObject(try await curl(["http://127.0.0.1:\(second.httpPort)/api/v1/deliveries"]))
        let expected = try jsonObject(before)
        #expect(after["total"] as? Int == 2)
        #expect(
            try JSONSerialization.data(withJSONObject: after["deliveries"] ?? [], options: .sortedKeys)
                == JSONSerialization.data(withJSONObject: expected["deliveries"] ?? [], options: .sortedKeys))
        let gone = try #require(try await Self.deliveries(second, "z@gone.example").first)
        #expect((gone["Flags"] as? [String])?.contains("retry-after-permanent") == true)
        let timelineAfter = try jsonObject(try await curl(["http://127.0.0.1:\(second.httpPort)/api/v1/stats/timeline?\(range)"]))
        #expect(
            try JSONSerialization.data(withJSONObject: timelineAfter["buckets"] ?? [], options: .sortedKeys)
                == JSONSerialization.data(withJSONObject: try jsonObject(timelineBefore)["buckets"] ?? [], options: .sortedKeys))
    }

    @Test("the timeline's counts equal what was sent in each bucket; bad parameters are 400 naming them")
    func timeline() async throws {
        let sink = try SinkProcess(arguments: [
            "--faults",
            try Self.rules(
                """
                rules:
                  - name: later
                    match: {phase: rcpt, recipient: "*@later.example"}
                    action: {reply: "451 4.3.0 Later"}
                  - name: never
                    match: {phase: rcpt, recipient: "*@never.example"}
                    action: {reply: "550 5.7.1 Never"}
                """),
        ])
        defer {
            sink.signal(SIGTERM)
            _ = sink.wait()
        }
        let api = "http://127.0.0.1:\(sink.httpPort)"
        let start = Int(Date().timeIntervalSince1970)
        _ = try await python(
            Self.client + """
                for i in range(5): deliver('a%d@shop.example' % i, 'ok', [])
                for i in range(3): deliver('b%d@later.example' % i, 'later', [])
                for i in range(2): deliver('c%d@never.example' % i, 'never', [])
                deliver('d+job7@shop.example', 'tagged', [])
                """, port: sink.smtpPort)
        let end = Int(Date().timeIntervalSince1970) + 1
        let answer = try jsonObject(try await curl(["\(api)/api/v1/stats/timeline?from=\(start - 20)&to=\(end + 20)&step=10s"]))
        let buckets = try #require(answer["buckets"] as? [[String: Any]])
        func sum(_ key: String) -> Int { buckets.reduce(0) { $0 + ($1[key] as? Int ?? 0) } }
        #expect(sum("Accepted") == 6 && sum("Refused4xx") == 3 && sum("Refused5xx") == 2 && sum("Sessions") == 11)
        // Each bucket holds exactly the attempts whose time falls in it.
        let all = try jsonObject(try await curl(["\(api)/api/v1/deliveries?limit=100"]))["deliveries"] as? [[String: Any]] ?? []
        let attempts = all.flatMap { $0["Attempts"] as? [[String: Any]] ?? [] }
        #expect(attempts.count == 11)
        let formatter = ISO8601DateFormatter()
        formatter.formatOptions = [.withInternetDateTime, .withFractionalSeconds]
        for bucket in buckets {
            let at = try #require(
                formatter.date(from: bucket["At"] as? String ?? "") ?? ISO8601DateFormatter().date(from: bucket["At"] as? String ?? ""))
            let inside = attempts.filter { attempt in
                guard let time = formatter.date(from: attempt["At"] as? String ?? "") else { return false }
                return time >= at && time < at.addingTimeInterval(10)
            }
            func count(_ code: Int) -> Int { inside.filter { (($0["Reply"] as? [String: Any])?["Code"] as? Int ?? 0) / 100 == code }.count }
            #expect(bucket["Accepted"] as? Int == count(2))
            #expect(bucket["Refused4xx"] as? Int == count(4))
            #expect(bucket["Refused5xx"] as? Int == count(5))
        }
        let hourly = try jsonObject(try await curl(["\(api)/api/v1/stats/timeline?from=\(start - 20)&to=\(end + 20)&step=1h"]))
        #expect((hourly["buckets"] as? [[String: Any]] ?? []).reduce(0) { $0 + ($1["Accepted"] as? Int ?? 0) } == 6)
        // A mailbox (here a plus tag) sees its own: timeline, deliveries, top tables, stats.
        let boxed = try jsonObject(try await curl(["\(api)/api/v1/stats/timeline?from=\(start - 20)&to=\(end + 20)&step=1m&mailbox=job7"]))
        let boxedBuckets = boxed["buckets"] as? [[String: Any]] ?? []
        #expect(boxedBuckets.reduce(0) { $0 + ($1["Accepted"] as? Int ?? 0) } == 1)
        #expect(boxedBuckets.reduce(0) { $0 + ($1["Refused4xx"] as? Int ?? 0) } == 0)
        #expect(try jsonObject(try await curl(["\(api)/api/v1/deliveries?mailbox=job7"]))["total"] as? Int == 1)
        let boxedTop = try jsonObject(try await curl(["\(api)/api/v1/stats/top?mailbox=job7"]))
        #expect((boxedTop["recipients"] as? [[String: Any]])?.map { $0["Value"] as? String } == ["d+job7@shop.example"])
        let boxedStats = try jsonObject(try await curl(["\(api)/api/v1/stats?mailbox=job7"]))
        #expect((boxedStats["deliveries"] as? [String: Int])?["deliveries"] == 1)
        let accepted = try #require(buckets.first { ($0["Accepted"] as? Int ?? 0) > 0 })
        #expect(((accepted["TransactionMs"] as? [String: Any])?["p99"] as? Double ?? 0) > 0)

        for (query, parameter) in [
            ("stats/timeline?step=7s", "step"), ("stats/timeline?step=soon", "step"), ("stats/timeline?from=yesterday", "from"),
            ("stats/timeline?from=0&step=10s", "step"), ("stats/timeline?from=\(end)&to=\(start)", "from"), ("stats/top?window=0", "window"),
            ("stats/top?window=x", "window"), ("deliveries?limit=0", "limit"), ("deliveries?start=-1", "start"),
        ] {
            let (status, body) = try await Self.get("\(api)/api/v1/\(query)")
            #expect(status == 400, "\(query)")
            #expect(body.contains(parameter), "\(query): \(body)")
        }
    }

    @Test("top tables and the burst indicator on a synthetic burst from swallow load")
    func topAndBurst() async throws {
        let sink = try SinkProcess(arguments: ["--no-magic-addresses"])
        defer {
            sink.signal(SIGTERM)
            _ = sink.wait()
        }
        let api = "http://127.0.0.1:\(sink.httpPort)"
        let quiet = try jsonObject(try await curl(["\(api)/api/v1/stats/top?window=10m"]))
        #expect(quiet["burst"] as? Bool == false)
        let directory = try temporaryDirectory()
        let scenario = "\(directory)/burst.yaml"
        try """
        name: burst
        count: 300
        arrival: {kind: constant, rate: 1000/s}
        connection: {pool: 4}
        mix: [{template: otp}]
        templates:
          otp: {from: noreply@abused.example, to: "user{seq}@example.com", subject: "Your code", text: "Code {otp:6}"}
        """.write(toFile: scenario, atomically: true, encoding: .utf8)
        let load = try await run(
            [productsDirectory().appendingPathComponent("swallow").path, "load", scenario, "--target", "127.0.0.1:\(sink.smtpPort)", "--quiet"],
            timeout: 60)
        #expect(load.status == 0, "\(load.stdout) \(load.stderr)")
        let top = try jsonObject(try await curl(["\(api)/api/v1/stats/top?window=10m"]))
        #expect(top["burst"] as? Bool == true)
        #expect(top["lastMinute"] as? Int == 300)
        let senders = try #require(top["senders"] as? [[String: Any]])
        #expect(senders.first?["Value"] as? String == "noreply@abused.example" && senders.first?["Count"] as? Int == 300)
        #expect((top["clients"] as? [[String: Any]])?.first?["Value"] as? String == "127.0.0.1")
        #expect((top["subjects"] as? [[String: Any]])?.first?["Count"] as? Int == 300)
        #expect((top["recipients"] as? [[String: Any]])?.count == 10)
    }
}
