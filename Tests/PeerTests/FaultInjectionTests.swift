import Foundation
import MailMessage
import SwallowConfig
import SwallowTestSupport
import Synchronization
import Testing

@testable import SinkServer

/// Fault rules acting on real connections on loopback: every phase and every action.
@Suite("Fault injection over SMTP", .timeLimit(.minutes(4)), .enabled(if: Peers.available("python3"), Comment(rawValue: Peers.reason("python3"))))
struct FaultInjectionTests {
    static func withRules<T: Sendable>(
        _ yaml: String, seed: UInt64 = 1, _ body: @Sendable (Sink) async throws -> T
    ) async throws -> T {
        let rules = try FaultRuleSet.parse(yaml)
        return try await withSink(
            {
                $0.faultRules = rules
                $0.faultSeed = seed
            }, body)
    }

    /// Sends each line as a command and collects the reply codes; -1 once the server has
    /// closed the connection (or said nothing within the client's timeout).
    static func codes(_ port: Int, _ lines: [String], timeout: Int = 10) throws -> [Int] {
        let client = try RawSMTPClient(port: port, timeoutSeconds: timeout)
        var codes: [Int] = []
        guard let banner = try? client.readReply() else { return [-1] }
        codes.append(banner.code)
        for line in lines {
            guard (try? client.send(line + "\r\n")) != nil, let reply = try? client.readReply() else {
                codes.append(-1)
                return codes
            }
            codes.append(reply.code)
        }
        return codes
    }

    static let transaction = ["EHLO c", "MAIL FROM:<app@x.example>", "RCPT TO:<bob@x.example>", "DATA", "Subject: t\r\n\r\nbody\r\n."]

    @Test("connect: disconnect before the banner; greeting: a delay, or a 554 banner and a close")
    func connectAndGreeting() async throws {
        try await Self.withRules(
            "rules:\n  - {name: gone, match: {phase: connect}, every: 2, action: {disconnect: true}}\n"
                + "  - {name: slow-banner, match: {phase: greeting}, times: 1, action: {delay: 150ms}}\n"
                + "  - {name: closed, match: {phase: greeting}, action: {reply: \"554 5.3.2 Not today\"}}\n"
        ) { sink in
            let port = sink.smtpAddress.port
            let (first, bannerAfter) = try await onThread { () -> ([Int], Duration) in
                let started = ContinuousClock.now
                let codes = try Self.codes(port, ["QUIT"])
                return (codes, ContinuousClock.now - started)
            }
            #expect(first == [220, 221])
            #expect(bannerAfter >= .milliseconds(150))
            #expect(try await onThread { try Self.codes(port, ["EHLO c"]) } == [-1])
            #expect(try await onThread { try Self.codes(port, ["EHLO c"]) } == [554, -1])
            #expect(sink.faults.firedCounts == ["gone": 1, "slow-banner": 1, "closed": 1])
        }
    }

    @Test("ehlo, starttls, auth, mail, rcpt, data, quit: a reply in place of the session's, matched by pattern")
    func commandPhases() async throws {
        try await Self.withRules(
            """
            rules:
              - {name: no-tls, match: {phase: starttls}, action: {reply: "454 4.7.0 TLS not available today"}}
              - {name: no-auth, match: {phase: auth}, action: {reply: "454 4.7.0 Try later"}}
              - {name: bulk-sender, match: {phase: mail, sender: "bulk*@*"}, action: {reply: "550 5.7.1 No bulk"}}
              - {name: flaky, match: {phase: rcpt, recipient: "*@flaky.example"}, action: {reply: {code: 451, enhanced: "4.3.0", text: [Busy, try later]}}}
              - {name: big-data, match: {phase: data, recipient: "big@*"}, action: {reply: "452 4.3.1 Out of space"}}
              - {name: bye, match: {phase: quit, helo: "bye*"}, action: {reply: "421 4.3.2 Going down"}}
              - {name: no-ehlo, match: {phase: ehlo, client: "127.0.0.*"}, every: 2, action: {reply: "421 4.7.0 Busy"}}
            """
        ) { sink in
            let port = sink.smtpAddress.port
            let codes = try await onThread {
                try Self.codes(
                    port,
                    [
                        "EHLO bye.example", "STARTTLS", "AUTH PLAIN AGFwcABzZWNyZXQ=", "MAIL FROM:<bulk1@x.example>",
                        "MAIL FROM:<app@x.example>", "RCPT TO:<a@flaky.example>", "RCPT TO:<big@x.example>", "DATA", "RSET",
                        "MAIL FROM:<app@x.example>", "RCPT TO:<a@ok.example>", "DATA", "Subject: ok\r\n\r\nbody\r\n.", "QUIT",
                    ])
            }
            #expect(codes == [220, 250, 454, 454, 550, 250, 451, 250, 452, 250, 250, 250, 354, 250, 421])
            // The second connection's EHLO is the rule's second event.
            #expect(try await onThread { try Self.codes(port, ["EHLO c", "NOOP"]) } == [220, 421, -1])
            let message = try #require(sink.store.messages().first)
            #expect(message.envelope.recipients.map(\.address) == ["a@ok.example"])
            #expect(sink.store.messages().count == 1)
        }
    }

    @Test("a multi-line reply from a rule reaches the client whole")
    func multiLineReply() async throws {
        try await Self.withRules("rules:\n  - {match: {phase: rcpt}, action: {reply: {code: 451, text: [Busy, try later]}}}\n") { sink in
            let text = try await onThread { () -> String in
                let client = try RawSMTPClient(port: sink.smtpAddress.port)
                _ = try client.readReply()
                _ = try client.command("EHLO c")
                _ = try client.command("MAIL FROM:<a@x>")
                return try client.command("RCPT TO:<b@x>").text
            }
            #expect(text == "451-4.0.0 Busy\n451 4.0.0 try later")
        }
    }

    @Test("BDAT refused at data: the chunk is read and thrown away, the connection goes on")
    func bdatRefused() async throws {
        try await Self.withRules("rules:\n  - {match: {phase: data}, times: 1, action: {reply: \"451 4.3.0 Not now\"}}\n") { sink in
            let codes = try await onThread { () -> [Int] in
                let client = try RawSMTPClient(port: sink.smtpAddress.port)
                var codes = [try client.readReply().code, try client.command("EHLO c").code]
                for _ in 0..<2 {
                    codes.append(try client.command("MAIL FROM:<a@x>").code)
                    codes.append(try client.command("RCPT TO:<b@x>").code)
                    let chunk = "Subject: t\r\n\r\nbody\r\n"
                    try client.send("BDAT \(chunk.utf8.count) LAST\r\n" + chunk)
                    codes.append(try client.readReply().code)
                    codes.append(try client.command("RSET").code)
                }
                return codes
            }
            #expect(codes == [220, 250, 250, 250, 451, 250, 250, 250, 250, 250])
            #expect(sink.store.messages().count == 1)
        }
    }

    @Test("data-end: reply refuses, disconnect loses, drop answers 250 and keeps nothing, delay postpones the 250")
    func dataEnd() async throws {
        try await Self.withRules(
            """
            rules:
              - {name: refuse, match: {phase: data-end, header: {Subject: "refuse*"}}, action: {reply: "554 5.7.1 Spam"}}
              - {name: cut, match: {phase: data-end, header: {Subject: cut}}, action: {disconnect: {partial: "250 2.0.0 Ok: que"}}}
              - {name: lose, match: {phase: data-end, recipient: "lost@*"}, action: {delay: 50ms, drop: true}}
              - {name: slow, match: {phase: data-end, sender: "slow@*"}, action: {delay: 200ms}}
            """
        ) { sink in
            let port = sink.smtpAddress.port
            let events = sink.store.events.subscribeAll()
            @Sendable func send(from: String = "a@x", to: String = "b@x", subject: String) throws -> ([Int], Duration) {
                let started = ContinuousClock.now
                let codes = try Self.codes(port, ["EHLO c", "MAIL FROM:<\(from)>", "RCPT TO:<\(to)>", "DATA", "Subject: \(subject)\r\n\r\nx\r\n."])
                return (codes, ContinuousClock.now - started)
            }
            #expect(try await onThread { try send(subject: "refuse me").0 } == [220, 250, 250, 250, 354, 554])
            let partial = try await onThread { () -> String in
                let client = try RawSMTPClient(port: port)
                _ = try client.readReply()
                _ = try client.command("EHLO c")
                _ = try client.command("MAIL FROM:<a@x>")
                _ = try client.command("RCPT TO:<b@x>")
                _ = try client.command("DATA")
                try client.send("Subject: cut\r\n\r\nx\r\n.\r\n")
                return (try? client.readLine()) ?? "nothing"
            }
            #expect(partial == "nothing")
            #expect(try await onThread { try send(to: "lost@x", subject: "lost").0 } == [220, 250, 250, 250, 354, 250])
            let (slowCodes, slowTime) = try await onThread { try send(from: "slow@x", subject: "slow") }
            #expect(slowCodes == [220, 250, 250, 250, 354, 250])
            #expect(slowTime >= .milliseconds(200))
            let stored = sink.store.messages()
            #expect(stored.count == 1)
            #expect(stored.first?.faults == ["slow"])
            let counts = sink.metrics.counts.withLock { $0 }
            #expect(counts.dropped == 1)
            var kinds: [String] = []
            for await event in events {
                switch event {
                case .fault(let firing): kinds.append("fault:\(firing.rule)@\(firing.phase)")
                case .dropped(let message): kinds.append("drop:\(message.envelope.recipients[0].address)")
                case .message(let message): kinds.append("message:\(message.faults.joined())")
                case .relay(let relay): kinds.append("relay:\(relay.id)")
                }
                if kinds.count == 6 { break }
            }
            #expect(
                kinds == ["fault:refuse@data-end", "fault:cut@data-end", "fault:lose@data-end", "drop:lost@x", "fault:slow@data-end", "message:slow"])
        }
    }

    @Test("a 421 from X-Swallow-Fault refuses the message and closes, as a 421 from a rule does")
    func headerFault421() async throws {
        try await withSink { sink in
            let codes = try await onThread {
                try Self.codes(
                    sink.smtpAddress.port,
                    [
                        "EHLO c", "MAIL FROM:<a@x>", "RCPT TO:<b@x>", "DATA",
                        "X-Swallow-Fault: data-end: 421 4.7.0 Closing\r\n\r\nx\r\n.", "NOOP",
                    ])
            }
            #expect(codes == [220, 250, 250, 250, 354, 421, -1])
            #expect(sink.store.messages().isEmpty)
        }
    }

    @Test("hang: the server reads but never answers, until the client gives up")
    func hang() async throws {
        try await Self.withRules("rules:\n  - {match: {phase: rcpt, recipient: \"wait@*\"}, action: {hang: true}}\n") { sink in
            let codes = try await onThread {
                try Self.codes(sink.smtpAddress.port, ["EHLO c", "MAIL FROM:<a@x>", "RCPT TO:<wait@x>", "NOOP"], timeout: 1)
            }
            #expect(codes == [220, 250, 250, -1])
        }
    }

    @Test("throttle: a connection moves no faster than its byte rate")
    func throttle() async throws {
        try await Self.withRules("rules:\n  - {match: {phase: mail}, action: {throttle: 8KiB/s}}\n") { sink in
            let body = String(repeating: "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\r\n", count: 192)
            let (codes, elapsed) = try await onThread { () -> ([Int], Duration) in
                let started = ContinuousClock.now
                let codes = try Self.codes(
                    sink.smtpAddress.port, ["EHLO c", "MAIL FROM:<a@x>", "RCPT TO:<b@x>", "DATA", "Subject: big\r\n\r\n" + body + "."])
                return (codes, ContinuousClock.now - started)
            }
            #expect(codes == [220, 250, 250, 250, 354, 250])
            // 12 KiB at 8 KiB/s: at least a second.
            #expect(elapsed >= .milliseconds(1200), "took \(elapsed)")
            #expect(sink.store.messages().first?.size ?? 0 > 12 * 1024)
        }
    }

    @Test("throttle: holds on a connection whose earlier message was read in large reads")
    func throttleAfterLargeMessage() async throws {
        try await Self.withRules("rules:\n  - {match: {phase: rcpt, recipient: \"slow@*\"}, action: {throttle: 8KiB/s}}\n") { sink in
            let line = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcde\r\n"
            let large = String(repeating: line, count: 3_200)
            let body = String(repeating: line, count: 192)
            let (codes, elapsed) = try await onThread { () -> ([Int], Duration) in
                let client = try RawSMTPClient(port: sink.smtpAddress.port, timeoutSeconds: 10)
                var codes = [try client.readReply().code]
                for command in ["EHLO c", "MAIL FROM:<a@x>", "RCPT TO:<b@x>", "DATA", "Subject: large\r\n\r\n" + large + "."] {
                    codes.append(try client.command(command).code)
                }
                let started = ContinuousClock.now
                for command in ["MAIL FROM:<a@x>", "RCPT TO:<slow@x>", "DATA", "Subject: throttled\r\n\r\n" + body + "."] {
                    codes.append(try client.command(command).code)
                }
                return (codes, ContinuousClock.now - started)
            }
            #expect(codes == [220, 250, 250, 250, 354, 250, 250, 250, 354, 250])
            // 12 KiB at 8 KiB/s: at least a second, though the connection's reads had grown.
            #expect(elapsed >= .milliseconds(1200), "took \(elapsed)")
            #expect(sink.store.messages().count == 2)
        }
    }

    @Test("greylisting: 451 until the retry comes late enough, then accepted")
    func greylisting() async throws {
        try await Self.withRules("rules:\n  - {name: grey, match: {phase: rcpt}, action: {greylist: {retry_after: 300ms}}}\n") { sink in
            let (refusals, waited) = try await onThread { () -> (Int, Duration) in
                let client = try RawSMTPClient(port: sink.smtpAddress.port)
                _ = try client.readReply()
                _ = try client.command("EHLO c")
                _ = try client.command("MAIL FROM:<a@x>")
                let started = ContinuousClock.now
                var refusals = 0
                while try client.command("RCPT TO:<b@x>").code == 451, refusals < 100 {
                    refusals += 1
                    Thread.sleep(forTimeInterval: 0.05)  // a client's retry interval, not synchronisation
                }
                return (refusals, ContinuousClock.now - started)
            }
            #expect(refusals >= 2 && refusals < 100)
            #expect(waited >= .milliseconds(300))
        }
    }

    @Test("the same seed and traffic fire the same rules; another seed differs")
    func seeds() async throws {
        let yaml = "rules:\n  - {name: coin, match: {phase: rcpt}, probability: 0.5, action: {reply: \"451 4.3.0 Coin\"}}\n"
        func run(seed: UInt64) async throws -> [Int] {
            try await Self.withRules(yaml, seed: seed) { sink in
                try await onThread {
                    try Self.codes(sink.smtpAddress.port, ["EHLO c", "MAIL FROM:<a@x>"] + (0..<40).map { "RCPT TO:<u\($0)@x>" })
                }
            }
        }
        let first = try await run(seed: 7)
        #expect(first.contains(451) && first.dropFirst(3).contains(250))
        #expect(try await run(seed: 7) == first)
        #expect(try await run(seed: 8) != first)
    }

    @Test("smtplib sees a rule's refusal as the exception it raises for a real server")
    func smtplib() async throws {
        try await Self.withRules(
            "rules:\n  - {match: {phase: rcpt, recipient: \"*@flaky.example\"}, action: {reply: \"451 4.3.0 Try again later\"}}\n"
        ) { sink in
            let result = try await python(
                """
                import smtplib
                try:
                    with smtplib.SMTP('127.0.0.1', PORT, timeout=10) as s:
                        s.sendmail('app@x.example', ['a@flaky.example'], b'Subject: x\\r\\n\\r\\nbody\\r\\n')
                    print('sent')
                except smtplib.SMTPRecipientsRefused as e:
                    print('refused', e.recipients['a@flaky.example'][0])
                """, port: sink.smtpAddress.port)
            #expect(result.stdout.trimmingCharacters(in: .whitespacesAndNewlines) == "refused 451", "\(result.stderr)")
        }
    }
}
