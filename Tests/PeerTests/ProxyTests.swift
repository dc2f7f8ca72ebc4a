import Foundation
import MailMessage
import SinkServer
import SwallowTestSupport
import Testing

/// Proxy mode (`--upstream`): a sink in front of a second `swallow serve`, whose magic
/// addresses are its fault rules (`tempfail@` 451 and `bounce@` 550 at RCPT, `reject@` 554 after
/// the data). The client is Python's smtplib.
@Suite(
    "Proxy mode: the upstream's answers reach the client", .timeLimit(.minutes(4)),
    .enabled(if: Peers.available("curl", "python3"), Comment(rawValue: Peers.reason("curl", "python3"))))
struct ProxyTests {
    /// One transaction with smtplib's low-level commands; prints a JSON object of every reply
    /// (`[code, text]`) and the milliseconds the RCPTs took.
    static let transaction = """
        import json, smtplib, time
        s = smtplib.SMTP("127.0.0.1", PORT)
        s.ehlo("client.example")
        out = {"mail": s.mail(SENDER), "rcpt": []}
        started = time.monotonic()
        for r in RECIPIENTS.split(","):
            out["rcpt"].append(s.rcpt(r))
        out["rcptMs"] = (time.monotonic() - started) * 1000
        if any(code == 250 for code, _ in out["rcpt"]):
            code, text = s.docmd("DATA")
            out["data"] = [code, text]
            if code == 354:
                s.send(b"From: app@shop.example\\r\\nSubject: " + SUBJECT.encode() + b"\\r\\n\\r\\nHello\\r\\n.\\r\\n")
                out["final"] = s.getreply()
        s.quit()
        print(json.dumps(out, default=lambda b: b.decode()))
        """

    struct Replies {
        var mail: (Int, String)
        var rcpt: [(Int, String)]
        var rcptMs: Double
        var final: (Int, String)?
    }

    static func send(_ port: Int, to recipients: [String], subject: String = "proxied", from: String = "app@shop.example") async throws -> Replies {
        let result = try await python(
            transaction, port: port, env: ["SENDER": from, "RECIPIENTS": recipients.joined(separator: ","), "SUBJECT": subject])
        #expect(result.status == 0, "\(result.stderr)")
        let object = try jsonObject(result.stdout)
        func pair(_ value: Any?) -> (Int, String)? {
            guard let list = value as? [Any], list.count == 2, let code = list[0] as? Int, let text = list[1] as? String else { return nil }
            return (code, text)
        }
        return Replies(
            mail: try #require(pair(object["mail"])), rcpt: (object["rcpt"] as? [Any] ?? []).compactMap(pair),
            rcptMs: object["rcptMs"] as? Double ?? 0, final: pair(object["final"]))
    }

    /// A front sink proxying to `upstream`, without magic addresses of its own (so the
    /// upstream's answer them), with `rules` as its fault rules.
    static func withProxy(
        to upstream: String, rules: String? = nil, _ body: @Sendable (Sink, String) async throws -> Void
    ) async throws {
        let ruleSet = try rules.map { try FaultRuleSet.parse($0) }
        try await withSinkApplication(
            {
                $0.upstream = try! Upstream(url: upstream)
                $0.magicAddresses = false
                if let ruleSet { $0.faultRules = ruleSet }
            }, body)
    }

    @Test(
        "250, 451 and 550 at RCPT and 554 after the data reach the client exactly as the upstream sent them; every message is captured with its hop")
    func repliesPassThrough() async throws {
        // The upstream's own fault rule, beside its magic addresses.
        let rules = try temporaryDirectory() + "/upstream-faults.yaml"
        try """
        rules:
          - name: upstream-full
            match: {phase: rcpt, recipient: "full-box@example.com"}
            action: {reply: "452 4.2.2 Mailbox full (upstream rule)"}
        """.write(toFile: rules, atomically: true, encoding: .utf8)
        let upstream = try SinkProcess(arguments: ["--faults", rules])
        try await Self.withProxy(to: "smtp://127.0.0.1:\(upstream.smtpPort)?tls=none") { sink, base in
            let accepted = try await Self.send(
                sink.smtpAddress.port, to: ["ok@example.com", "tempfail@example.com", "bounce@example.com", "full-box@example.com"])
            #expect(accepted.mail.0 == 250 && accepted.mail.1 == "2.1.0 Sender ok")
            #expect(accepted.rcpt.map(\.0) == [250, 451, 550, 452])
            #expect(accepted.rcpt[1].1 == "4.3.0 Temporary failure, try again later (magic address tempfail@)")
            #expect(accepted.rcpt[2].1 == "5.1.1 Recipient address rejected (magic address bounce@)")
            #expect(accepted.rcpt[3].1 == "4.2.2 Mailbox full (upstream rule)")
            let final = try #require(accepted.final)
            #expect(final.0 == 250)
            // The upstream's own 250: its queue id is the id it stored the message under.
            let upstreamID = try #require(final.1.split(separator: " ").last.map(String.init))
            let upstreamCapture = try jsonObject(try await curl(["http://127.0.0.1:\(upstream.httpPort)/api/v1/message/\(upstreamID)/capture"]))
            let upstreamRecipients = ((upstreamCapture["envelope"] as? [String: Any])?["recipients"] as? [[String: Any]])?.compactMap {
                $0["address"] as? String
            }
            #expect(upstreamRecipients == ["ok@example.com"])

            let refused = try await Self.send(sink.smtpAddress.port, to: ["reject@example.com"], subject: "refused upstream")
            #expect(refused.final?.0 == 554)
            #expect(refused.final?.1 == "5.6.0 Message rejected (magic address reject@)")

            // Both are captured here, whatever the upstream said, with the hop.
            let listings = sink.store.listings()
            #expect(listings.count == 2)
            let hops = listings.compactMap { $0.message.relay?.first }
            #expect(hops.count == 2)
            let refusedHop = try #require(hops.first { $0.to == ["reject@example.com"] })
            #expect(refusedHop.kind == "proxy" && refusedHop.outcome == "refused" && refusedHop.reply.hasPrefix("554 5.6.0"))
            let acceptedHop = try #require(hops.first { $0.to == ["ok@example.com"] })
            #expect(acceptedHop.outcome == "delivered" && acceptedHop.reply.hasSuffix(upstreamID))
            #expect(acceptedHop.refused?["bounce@example.com"]?.hasPrefix("550 5.1.1") == true)
            #expect(acceptedHop.latencyMs > 0)
            let metrics = try await curl(["\(base)/metrics"])
            #expect(metrics.contains(#"swallow_relay_total{outcome="delivered"} 1"#))
            #expect(metrics.contains(#"swallow_relay_total{outcome="refused"} 1"#))
        }
        upstream.signal(SIGTERM)
        _ = upstream.wait()
    }

    @Test("Fault rules act in front: a delay delays the forwarding (the client measures it), a reply answers without asking the upstream")
    func faultsInFront() async throws {
        let upstream = try SinkProcess()
        let rules = """
            rules:
              - name: slow-rcpt
                match: {phase: rcpt, recipient: "slow@*"}
                action: {delay: 300ms}
              - name: refuse-here
                match: {phase: rcpt, recipient: "local@*"}
                action: {reply: "550 5.7.1 Refused by the proxy"}
            """
        try await Self.withProxy(to: "smtp://127.0.0.1:\(upstream.smtpPort)?tls=none", rules: rules) { sink, _ in
            let slow = try await Self.send(sink.smtpAddress.port, to: ["slow@example.com"], subject: "slow one")
            #expect(slow.rcpt.map(\.0) == [250])
            #expect(slow.rcptMs >= 300, "the delay rule held the RCPT: \(slow.rcptMs) ms")
            #expect(slow.final?.0 == 250)
            let local = try await Self.send(sink.smtpAddress.port, to: ["local@example.com", "tempfail@example.com"], subject: "local")
            #expect(local.rcpt.map(\.0) == [550, 451])
            #expect(local.rcpt[0].1 == "5.7.1 Refused by the proxy")
            #expect(local.final == nil)
        }
        // The upstream saw only the slow one's message: the refused RCPT never reached it.
        let count = try jsonObject(try await curl(["http://127.0.0.1:\(upstream.httpPort)/api/v1/messages"]))["total"] as? Int
        #expect(count == 1)
        upstream.signal(SIGTERM)
        _ = upstream.wait()
    }

    @Test("An unreachable upstream is answered 451 4.4.1 (or what a rule at the upstream phase says) and counted; STARTTLS with verify=false")
    func unreachableAndTLS() async throws {
        let closed = try freePort()
        try await Self.withProxy(to: "smtp://127.0.0.1:\(closed)?tls=none") { sink, base in
            let replies = try await Self.send(sink.smtpAddress.port, to: ["ok@example.com"])
            #expect(replies.mail.0 == 451 && replies.mail.1.hasPrefix("4.4.1 "), "\(replies.mail)")
            #expect(sink.store.count == 0)
            let metrics = try await curl(["\(base)/metrics"])
            #expect(metrics.contains(#"swallow_relay_total{outcome="failed"} 1"#))
        }
        let rule = """
            rules:
              - name: provider-down
                match: {phase: upstream, sender: "*@shop.example"}
                action: {reply: "450 4.3.0 Provider down"}
            """
        try await Self.withProxy(to: "smtp://127.0.0.1:\(closed)?tls=none", rules: rule) { sink, _ in
            let replies = try await Self.send(sink.smtpAddress.port, to: ["ok@example.com"])
            #expect(replies.mail.0 == 450 && replies.mail.1 == "4.3.0 Provider down", "a rule at the upstream phase answers: \(replies.mail)")
        }
        let upstream = try SinkProcess()
        try await Self.withProxy(to: "smtp://127.0.0.1:\(upstream.smtpPort)?tls=starttls&verify=false") { sink, _ in
            let replies = try await Self.send(sink.smtpAddress.port, to: ["ok@example.com"], subject: "over TLS")
            #expect(replies.final?.0 == 250)
            let id = try #require(replies.final?.1.split(separator: " ").last.map(String.init))
            let capture = try jsonObject(try await curl(["http://127.0.0.1:\(upstream.httpPort)/api/v1/message/\(id)/capture"]))
            #expect((capture["session"] as? [String: Any])?["tls"] as? [String: Any] != nil)
        }
        upstream.signal(SIGTERM)
        _ = upstream.wait()
    }

    @Test("swallow load through the proxy reports the upstream's share (relay_latency_ms) beside the delivery latency")
    func loadThroughProxy() async throws {
        let upstream = try SinkProcess()
        let proxy = try SinkProcess(arguments: ["--upstream", "smtp://127.0.0.1:\(upstream.smtpPort)?tls=none", "--no-magic-addresses"])
        let directory = try temporaryDirectory()
        let scenario = "\(directory)/steady.yaml"
        try """
        name: through-proxy
        count: 40
        arrival: {kind: constant, rate: 200/s}
        connection: {pool: 2}
        mix: [{template: otp}]
        templates:
          otp: {from: app@bank.example, to: "user{seq}@example.com", subject: "Code {otp:6}", text: "Code {otp}"}
        """.write(toFile: scenario, atomically: true, encoding: .utf8)
        let binary = productsDirectory().appendingPathComponent("swallow").path
        let result = try await run(
            [
                binary, "load", scenario, "--target", "127.0.0.1:\(proxy.smtpPort)", "--sink", "http://127.0.0.1:\(proxy.httpPort)",
                "--grace", "10s", "--report", "\(directory)/report.json", "--quiet",
            ], timeout: 60)
        #expect(result.status == 0, "\(result.stdout) \(result.stderr)")
        let report = try jsonObject(try String(contentsOfFile: "\(directory)/report.json", encoding: .utf8))
        #expect(report["delivered"] as? Int == 40)
        let relay = try #require(report["relay_latency_ms"] as? [String: Any], "relay_latency_ms is measured")
        let delivery = try #require(report["delivery_latency_ms"] as? [String: Any])
        let relayP50 = try #require(relay["p50"] as? Double)
        #expect(relayP50 > 0)
        #expect(relayP50 <= (delivery["max"] as? Double ?? 0))
        // The upstream got every message through the proxy.
        let total = try jsonObject(try await curl(["http://127.0.0.1:\(upstream.httpPort)/api/v1/messages"]))["total"] as? Int
        #expect(total == 40)
        for process in [proxy, upstream] {
            process.signal(SIGTERM)
            _ = process.wait()
        }
    }

    @Test(
        "Through a real Postfix: the client gets Postfix's own 250 (its queue id), and Postfix forwards to a sink behind it",
        .enabled(
            if: PostfixRelay.usable,
            "needs root and Debian's postfix (scripts/test installs it)"))
    func throughPostfix() async throws {
        let final = try SinkProcess()
        let postfix = try PostfixRelay(relayTo: final.smtpPort)
        defer { postfix.stop() }
        try await waitUntilListening(port: postfix.port)
        try await Self.withProxy(to: "smtp://127.0.0.1:\(postfix.port)?tls=none") { sink, _ in
            let replies = try await Self.send(sink.smtpAddress.port, to: ["far@example.com"], subject: "via Postfix")
            let answer = try #require(replies.final)
            #expect(answer.0 == 250 && answer.1.contains("queued as"), "\(answer)")
            let hop = try #require(sink.store.listings().first?.message.relay?.first)
            #expect(hop.outcome == "delivered" && hop.reply.contains("queued as"))
        }
        let result = try await run([
            "curl", "-s", "--max-time", "70", "http://127.0.0.1:\(final.httpPort)/api/v1/wait?query=subject%3A%22via%20Postfix%22&timeout=60s",
        ])
        #expect(try jsonObject(result.stdout)["Holds"] as? Bool == true, "Postfix forwarded the message")
        final.signal(SIGTERM)
        _ = final.wait()
    }

    @Test("An upstream whose replies do not parse: the client is answered 451 4.4.2")
    func garbledUpstream() async throws {
        // A server that greets and answers EHLO properly, then answers MAIL with garbage.
        let port = try freePort()
        let server = Process()
        server.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        server.arguments = [
            "python3", "-c",
            """
            import socket
            s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("127.0.0.1", \(port))); s.listen(1); s.settimeout(30)
            # Two connections (the readiness probe, the proxy's), then it ends by itself.
            for _ in range(2):
                c, _ = s.accept(); c.settimeout(30); f = c.makefile("rb")
                try:
                    c.sendall(b"220 garbled.example ESMTP\\r\\n")
                    if f.readline(): c.sendall(b"250 garbled.example\\r\\n")
                    if f.readline(): c.sendall(b"this is not SMTP\\r\\n")
                    f.readline()
                except OSError:
                    pass
                c.close()
            """,
        ]
        // Its output away from the test's: a pipe held open would keep `swift test` waiting.
        server.standardOutput = FileHandle.nullDevice
        server.standardError = FileHandle.nullDevice
        try server.run()
        defer { server.terminate() }
        try await waitUntilListening(port: port)
        try await Self.withProxy(to: "smtp://127.0.0.1:\(port)?tls=none") { sink, _ in
            let replies = try await Self.send(sink.smtpAddress.port, to: ["ok@example.com"])
            #expect(replies.mail.0 == 451 && replies.mail.1.hasPrefix("4.4.2 "), "\(replies.mail)")
        }
    }
}
