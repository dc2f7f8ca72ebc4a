import Foundation
import MailMessage
import SinkServer
import SwallowTestSupport
import Testing

/// Release and auto-relay (`--relay`) against real upstreams on loopback: a second
/// `swallow serve` (its magic addresses are fault rules: `bounce@` is answered 550 at RCPT,
/// `reject@` 554 after the data) and a private Postfix.
@Suite(
    "Release and auto-relay to a real upstream", .timeLimit(.minutes(4)),
    .enabled(if: Peers.available("curl", "python3"), Comment(rawValue: Peers.reason("curl", "python3"))))
struct ReleaseTests {
    static func message(subject: String) -> String {
        "From: app@shop.example\r\nTo: jane@example.com\r\nSubject: \(subject)\r\n\r\nTotal: 12.00 EUR\r\n"
    }

    /// Sends one message to the sink over SMTP (smtplib) and returns its id.
    static func capture(
        _ sink: Sink, from: String = "app@shop.example", to recipients: [String] = ["jane@example.com"], subject: String = "Your invoice 42"
    ) async throws -> String {
        let before = Set(sink.store.listings().map(\.message.id))
        let script = """
            import smtplib
            with smtplib.SMTP("127.0.0.1", PORT) as s:
                s.sendmail("\(from)", \(pythonList(recipients)), \(pythonBytes(message(subject: subject))))
            """
        let result = try await python(script, port: sink.smtpAddress.port)
        #expect(result.status == 0, "\(result.stderr)")
        return try #require(sink.store.listings().map(\.message.id).first { !before.contains($0) })
    }

    static func pythonList(_ items: [String]) -> String { "[" + items.map { "\"\($0)\"" }.joined(separator: ", ") + "]" }
    static func pythonBytes(_ text: String) -> String {
        "b\"" + text.replacingOccurrences(of: "\r", with: "\\r").replacingOccurrences(of: "\n", with: "\\n") + "\""
    }

    /// POSTs a release; returns the status and the body.
    static func release(_ base: String, _ id: String, _ body: String) async throws -> (status: Int, text: String) {
        let result = try await run(
            [
                "curl", "-s", "-w", "\n%{http_code}", "-H", "Content-Type: application/json", "--data-binary", "@-",
                "\(base)/api/v1/message/\(id)/release",
            ],
            stdin: body)
        let lines = result.stdout.split(separator: "\n", omittingEmptySubsequences: false)
        return (Int(lines.last ?? "") ?? 0, lines.dropLast().joined(separator: "\n"))
    }

    /// Waits on the upstream's `/api/v1/wait` for `count` messages matching `query`.
    static func upstreamHas(_ upstream: SinkProcess, _ query: String, count: String = ">=1", timeout: String = "10s") async throws -> [String: Any] {
        let encoded = query.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? query
        let countEncoded = count.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? count
        let result = try await run([
            "curl", "-s", "--max-time", "20",
            "http://127.0.0.1:\(upstream.httpPort)/api/v1/wait?query=\(encoded)&count=\(countEncoded)&timeout=\(timeout)",
        ])
        return try jsonObject(result.stdout)
    }

    static func capture(of id: String, base: String) async throws -> [String: Any] {
        try jsonObject(try await curl(["\(base)/api/v1/message/\(id)/capture"]))
    }

    @Test("Release: 200 and the upstream has the stored bytes, from the original sender to the given recipient; the hop is recorded")
    func releaseDelivered() async throws {
        let upstream = try SinkProcess()
        try await withSinkApplication({ $0.relay.upstream = try! Upstream(url: "smtp://127.0.0.1:\(upstream.smtpPort)?tls=none") }) { sink, base in
            let id = try await Self.capture(sink)
            let capture = try await Self.capture(of: id, base: base)
            #expect((capture["relay"] as? [Any])?.isEmpty == true, "relay is [] before any hand-over")
            let events = sink.store.events.subscribeAll()
            let (status, text) = try await Self.release(base, id, #"{"To": ["boss@example.com"]}"#)
            #expect(status == 200 && text == "ok", "\(text)")

            let waited = try await Self.upstreamHas(upstream, "subject:\"Your invoice 42\"")
            #expect(waited["Holds"] as? Bool == true)
            let upstreamID = try #require((waited["Message"] as? [String: Any])?["ID"] as? String)
            let relayed = try jsonObject(try await curl(["http://127.0.0.1:\(upstream.httpPort)/api/v1/message/\(upstreamID)/capture"]))
            let envelope = try #require(relayed["envelope"] as? [String: Any])
            #expect(envelope["mailFrom"] as? String == "app@shop.example")
            #expect((envelope["recipients"] as? [[String: Any]])?.compactMap { $0["address"] as? String } == ["boss@example.com"])
            // The upstream's copy is the stored message byte for byte, after its own Received header.
            let original = try await curl(["\(base)/api/v1/message/\(id)/raw"])
            let copy = try await curl(["http://127.0.0.1:\(upstream.httpPort)/api/v1/message/\(upstreamID)/raw"])
            #expect(copy.hasSuffix(original))
            #expect(copy.count > original.count)

            let hops = try #require((try await Self.capture(of: id, base: base))["relay"] as? [[String: Any]])
            #expect(hops.count == 1)
            #expect(hops.first?["kind"] as? String == "release")
            #expect(hops.first?["outcome"] as? String == "delivered")
            #expect(hops.first?["to"] as? [String] == ["boss@example.com"])
            #expect(hops.first?["upstream"] as? String == "smtp://127.0.0.1:\(upstream.smtpPort)")
            #expect((hops.first?["reply"] as? String)?.hasPrefix("250") == true)
            #expect((hops.first?["latencyMs"] as? Double ?? 0) > 0)
            #expect(hops.first?["at"] as? String != nil)
            for await event in events {
                if case .relay(let relay) = event {
                    #expect(relay.id == id && relay.hop.outcome == "delivered")
                    break
                }
            }
            let metrics = try await curl(["\(base)/metrics"])
            #expect(metrics.contains(#"swallow_relay_total{outcome="delivered"} 1"#))
            #expect(metrics.contains(#"swallow_relay_seconds_count{outcome="delivered"} 1"#))
            let webui = try jsonObject(try await curl(["\(base)/api/v1/webui"]))
            #expect((webui["MessageRelay"] as? [String: Any])?["Enabled"] as? Bool == true)
        }
        upstream.signal(SIGTERM)
        _ = upstream.wait()
    }

    @Test("Release: 502 with the upstream's reply (550 at RCPT, 554 after the data), 403, 400, 404; 503 without --relay")
    func releaseRefusals() async throws {
        let upstream = try SinkProcess()
        try await withSinkApplication({
            $0.relay.upstream = try! Upstream(url: "smtp://127.0.0.1:\(upstream.smtpPort)?tls=none")
            $0.relay.deny = [try! FaultPattern("*@blocked.example")]
        }) { sink, base in
            let id = try await Self.capture(sink)
            var (status, text) = try await Self.release(base, id, #"{"To": ["bounce@example.com"]}"#)
            #expect(status == 502 && text.contains("550"), "\(status) \(text)")
            (status, text) = try await Self.release(base, id, #"{"To": ["reject@example.com"]}"#)
            #expect(status == 502 && text.contains("554"), "\(status) \(text)")
            (status, text) = try await Self.release(base, id, #"{"To": ["tempfail@example.com"]}"#)
            #expect(status == 502 && text.contains("451"), "\(status) \(text)")
            (status, text) = try await Self.release(base, id, #"{"To": ["ceo@blocked.example"]}"#)
            #expect(status == 403 && text.contains("ceo@blocked.example"), "\(status) \(text)")
            (status, text) = try await Self.release(base, id, #"{"To": []}"#)
            #expect(status == 400, "\(status) \(text)")
            (status, text) = try await Self.release(base, id, #"{"To": ["not an address"]}"#)
            #expect(status == 400 && text.contains("not an address"), "\(status) \(text)")
            (status, text) = try await Self.release(base, "no-such-id", #"{"To": ["a@example.com"]}"#)
            #expect(status == 404, "\(status) \(text)")
            let hops = try #require((try await Self.capture(of: id, base: base))["relay"] as? [[String: Any]])
            #expect(hops.compactMap { $0["outcome"] as? String } == ["refused", "refused", "deferred"])
        }
        try await withSinkApplication { sink, base in
            let id = try await Self.capture(sink)
            let (status, text) = try await Self.release(base, id, #"{"To": ["a@example.com"]}"#)
            #expect(status == 503 && text.contains("--relay"), "\(status) \(text)")
        }
        upstream.signal(SIGTERM)
        _ = upstream.wait()
    }

    @Test("STARTTLS to the upstream: verify=false goes through encrypted; the default verification refuses a self-signed certificate")
    func startTLS() async throws {
        let upstream = try SinkProcess()
        try await withSinkApplication({ $0.relay.upstream = try! Upstream(url: "smtp://127.0.0.1:\(upstream.smtpPort)?tls=starttls&verify=false") }) {
            sink, base in
            let id = try await Self.capture(sink, subject: "over TLS")
            let (status, text) = try await Self.release(base, id, #"{"To": ["tls@example.com"]}"#)
            #expect(status == 200, "\(text)")
            let waited = try await Self.upstreamHas(upstream, "subject:\"over TLS\"")
            let upstreamID = try #require((waited["Message"] as? [String: Any])?["ID"] as? String)
            let relayed = try jsonObject(try await curl(["http://127.0.0.1:\(upstream.httpPort)/api/v1/message/\(upstreamID)/capture"]))
            #expect((relayed["session"] as? [String: Any])?["tls"] as? [String: Any] != nil, "the upstream saw a TLS session")
        }
        try await withSinkApplication({ $0.relay.upstream = try! Upstream(url: "smtp://localhost:\(upstream.smtpPort)") }) { sink, base in
            let id = try await Self.capture(sink)
            let (status, text) = try await Self.release(base, id, #"{"To": ["tls@example.com"]}"#)
            #expect(status == 502, "\(status) \(text)")
            let hops = try #require((try await Self.capture(of: id, base: base))["relay"] as? [[String: Any]])
            #expect(hops.first?["outcome"] as? String == "failed")
        }
        upstream.signal(SIGTERM)
        _ = upstream.wait()
    }

    @Test("Auto-relay: --relay-all hands every message to its own recipients; --relay-matching only the matching recipients")
    func autoRelay() async throws {
        let upstream = try SinkProcess()
        try await withSinkApplication({
            $0.relay.upstream = try! Upstream(url: "smtp://127.0.0.1:\(upstream.smtpPort)?tls=none")
            $0.relay.all = true
        }) { sink, base in
            let events = sink.store.events.subscribeAll()
            let id = try await Self.capture(sink, to: ["all-1@example.com", "all-2@example.com"], subject: "all of them")
            let waited = try await Self.upstreamHas(upstream, "subject:\"all of them\"")
            let upstreamID = try #require((waited["Message"] as? [String: Any])?["ID"] as? String)
            let relayed = try jsonObject(try await curl(["http://127.0.0.1:\(upstream.httpPort)/api/v1/message/\(upstreamID)/capture"]))
            let recipients = ((relayed["envelope"] as? [String: Any])?["recipients"] as? [[String: Any]])?.compactMap { $0["address"] as? String }
            #expect(recipients == ["all-1@example.com", "all-2@example.com"])
            for await event in events {
                if case .relay(let relay) = event, relay.id == id { break }
            }
            let hops = try #require((try await Self.capture(of: id, base: base))["relay"] as? [[String: Any]])
            #expect(hops.first?["kind"] as? String == "auto" && hops.first?["outcome"] as? String == "delivered")
        }
        try await withSinkApplication({
            $0.relay.upstream = try! Upstream(url: "smtp://127.0.0.1:\(upstream.smtpPort)?tls=none")
            $0.relay.matching = try! FaultPattern("~@partner\\.example$")
        }) { sink, base in
            let events = sink.store.events.subscribeAll()
            let skipped = try await Self.capture(sink, to: ["someone@else.example"], subject: "not matching")
            let id = try await Self.capture(sink, to: ["ops@partner.example", "other@else.example"], subject: "partner mail")
            let waited = try await Self.upstreamHas(upstream, "subject:\"partner mail\"")
            let upstreamID = try #require((waited["Message"] as? [String: Any])?["ID"] as? String)
            let relayed = try jsonObject(try await curl(["http://127.0.0.1:\(upstream.httpPort)/api/v1/message/\(upstreamID)/capture"]))
            let recipients = ((relayed["envelope"] as? [String: Any])?["recipients"] as? [[String: Any]])?.compactMap { $0["address"] as? String }
            #expect(recipients == ["ops@partner.example"])
            for await event in events {
                if case .relay(let relay) = event {
                    #expect(relay.id == id, "only the message with a matching recipient is relayed")
                    break
                }
            }
            #expect(((try await Self.capture(of: skipped, base: base))["relay"] as? [Any])?.isEmpty == true)
            let none = try await Self.upstreamHas(upstream, "subject:\"not matching\"", count: "==0", timeout: "1s")
            #expect(none["Holds"] as? Bool == true)
        }
        upstream.signal(SIGTERM)
        _ = upstream.wait()
    }

    @Test(
        "Release through a real Postfix: it accepts, queues and forwards to a sink behind it",
        .enabled(
            if: PostfixRelay.usable,
            "needs root and Debian's postfix (scripts/test installs it)"))
    func throughPostfix() async throws {
        let final = try SinkProcess()
        let postfix = try PostfixRelay(relayTo: final.smtpPort)
        defer { postfix.stop() }
        try await waitUntilListening(port: postfix.port)
        try await withSinkApplication({ $0.relay.upstream = try! Upstream(url: "smtp://127.0.0.1:\(postfix.port)?tls=none") }) { sink, base in
            let id = try await Self.capture(sink, subject: "through Postfix")
            let (status, text) = try await Self.release(base, id, #"{"To": ["through@example.com"]}"#)
            #expect(status == 200, "\(text)")
            let hops = try #require((try await Self.capture(of: id, base: base))["relay"] as? [[String: Any]])
            #expect((hops.first?["reply"] as? String)?.contains("queued") == true, "Postfix's 250 names its queue id")
            let waited = try await Self.upstreamHas(final, "subject:\"through Postfix\"")
            #expect(waited["Holds"] as? Bool == true)
        }
        final.signal(SIGTERM)
        _ = final.wait()
    }

    @Test("A malformed --relay stops the start with exit 2, naming the part")
    func badURL() async throws {
        let binary = productsDirectory().appendingPathComponent("swallow").path
        for (url, part) in [
            ("smtp://127.0.0.1", "port"), ("http://127.0.0.1:25", "scheme"), ("smtp://h:25?tls=maybe", "tls"), ("smtp://h:99999", "port"),
        ] {
            let result = try await run([binary, "serve", "--smtp", "127.0.0.1:0", "--http", "127.0.0.1:0", "--relay", url])
            #expect(result.status == 2, "\(url): \(result.status)")
            #expect(result.stderr.contains("--relay") && result.stderr.contains(part), "\(url): \(result.stderr)")
        }
    }
}
