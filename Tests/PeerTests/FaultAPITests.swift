import Foundation
import SwallowTestSupport
import Testing

@testable import SinkServer

/// The live rule set over HTTP (curl), Mailpit's chaos and MailHog's Jim, and `--faults`.
@Suite(
    "Fault rules over the API", .timeLimit(.minutes(4)),
    .enabled(if: Peers.available("curl", "python3"), Comment(rawValue: Peers.reason("curl", "python3"))))
struct FaultAPITests {
    static func rcpt(_ port: Int, _ recipients: [String]) async throws -> [Int] {
        try await onThread { try FaultInjectionTests.codes(port, ["EHLO c", "MAIL FROM:<a@x>"] + recipients.map { "RCPT TO:<\($0)>" }) }
    }

    /// curl, returning the HTTP status and the body.
    static func request(_ method: String, _ url: String, body: String? = nil) async throws -> (Int, String) {
        var arguments = ["curl", "--silent", "--max-time", "10", "-X", method, "-w", "\n%{http_code}", url]
        if let body { arguments += ["--data-binary", body, "-H", "Content-Type: application/json"] }
        let result = try await run(arguments)
        let lines = result.stdout.split(separator: "\n", omittingEmptySubsequences: false)
        return (Int(lines.last ?? "") ?? 0, lines.dropLast().joined(separator: "\n"))
    }

    @Test("PUT replaces the rules (400 naming the rule and field, nothing changed), GET shows them, DELETE clears")
    func liveRuleSet() async throws {
        try await withSinkApplication { sink, base in
            let port = sink.smtpAddress.port
            let yaml = "rules:\n  - name: flaky\n    match: {phase: rcpt, recipient: \"*@flaky.example\"}\n    action: {reply: \"451 4.3.0 Later\"}\n"
            let (status, body) = try await Self.request("PUT", base + "/api/v1/faults", body: yaml)
            #expect(status == 200)
            let shown = try jsonObject(body)
            let rules = try #require(shown["rules"] as? [[String: Any]])
            #expect(rules.first?["name"] as? String == "flaky" && rules.first?["fired"] as? Int == 0)
            #expect(((rules.first?["match"] as? [String: Any])?["recipient"] as? String) == "*@flaky.example")
            #expect(try await Self.rcpt(port, ["a@flaky.example", "a@ok.example"]) == [220, 250, 250, 451, 250])

            let (badStatus, badBody) = try await Self.request(
                "PUT", base + "/api/v1/faults", body: #"{"rules": [{"name": "x", "match": {"phase": "rcpt"}, "action": {"reply": {"code": 200}}}]}"#)
            #expect(badStatus == 400)
            #expect(badBody.contains("rules[0].action.reply.code: must be between 400 and 599"), "\(badBody)")
            #expect(try await Self.rcpt(port, ["a@flaky.example"]) == [220, 250, 250, 451])

            let (_, after) = try await Self.request("GET", base + "/api/v1/faults")
            #expect(((try jsonObject(after)["rules"] as? [[String: Any]])?.first?["fired"] as? Int) == 2)
            let (deleted, _) = try await Self.request("DELETE", base + "/api/v1/faults")
            #expect(deleted == 200)
            #expect(try await Self.rcpt(port, ["a@flaky.example"]) == [220, 250, 250, 250])

            let stats = try jsonObject(try await curl([base + "/api/v1/stats"]))
            #expect((stats["faults"] as? [String: Int]) == ["flaky": 2])
            let metrics = try await curl([base + "/metrics"])
            #expect(metrics.contains(#"swallow_faults_total{rule="flaky"} 2"#))
        }
    }

    @Test("POST /api/v1/faults/next fails exactly the next N matching events, then the rule retires")
    func nextN() async throws {
        try await withSinkApplication { sink, base in
            let (status, body) = try await Self.request(
                "POST", base + "/api/v1/faults/next",
                body: #"{"count": 2, "rule": {"match": {"phase": "rcpt", "recipient": "*@x"}, "action": {"reply": "452 4.2.2 Full"}}}"#)
            #expect(status == 201)
            #expect(try jsonObject(body)["name"] as? String == "next-1")
            #expect(try await Self.rcpt(sink.smtpAddress.port, ["a@y", "a@x", "b@x", "c@x"]) == [220, 250, 250, 250, 452, 452, 250])
            let shown = try jsonObject(try await curl([base + "/api/v1/faults"]))
            #expect((shown["next"] as? [Any])?.isEmpty == true)
            #expect((shown["fired"] as? [String: Int]) == ["next-1": 2])
            let (bad, message) = try await Self.request("POST", base + "/api/v1/faults/next", body: #"{"count": 0, "rule": {}}"#)
            #expect(bad == 400 && message.contains("count"))
        }
    }

    @Test("Mailpit's /api/v1/chaos and MailHog's /api/v2/jim drive the same engine, in their own shapes")
    func compatibility() async throws {
        try await withSinkApplication { sink, base in
            let port = sink.smtpAddress.port
            let initial = try jsonObject(try await curl([base + "/api/v1/chaos"]))
            #expect((initial["Recipient"] as? [String: Int]) == ["ErrorCode": 451, "Probability": 0])
            let (status, body) = try await Self.request(
                "PUT", base + "/api/v1/chaos", body: #"{"Recipient": {"ErrorCode": 452, "Probability": 100}}"#)
            #expect(status == 200)
            #expect(((try jsonObject(body))["Recipient"] as? [String: Int]) == ["ErrorCode": 452, "Probability": 100])
            #expect(try await Self.rcpt(port, ["a@x"]) == [220, 250, 250, 452])
            let (bad, _) = try await Self.request("PUT", base + "/api/v1/chaos", body: #"{"Recipient": {"ErrorCode": 200}}"#)
            #expect(bad == 400)
            _ = try await Self.request("PUT", base + "/api/v1/chaos", body: "{}")
            #expect(try await Self.rcpt(port, ["a@x"]) == [220, 250, 250, 250])

            #expect(try await Self.request("GET", base + "/api/v2/jim").0 == 404)
            let jim =
                #"{"AcceptChance": 1, "DisconnectChance": 0, "LinkSpeedAffect": 0, "RejectSenderChance": 0, "RejectAuthChance": 0, "RejectRecipientChance": 1}"#
            #expect(try await Self.request("POST", base + "/api/v2/jim", body: jim).0 == 201)
            let shown = try jsonObject(try await curl([base + "/api/v2/jim"]))
            #expect(shown["RejectRecipientChance"] as? Double == 1 && shown["LinkSpeedMin"] as? Double == 1024)
            #expect(try await Self.rcpt(port, ["a@x"]) == [220, 250, 250, 550])
            #expect(try await Self.request("DELETE", base + "/api/v2/jim").0 == 200)
            #expect(try await Self.request("DELETE", base + "/api/v2/jim").0 == 404)
            #expect(try await Self.rcpt(port, ["a@x"]) == [220, 250, 250, 250])
        }
    }

    @Test("swallow serve --faults: a bad file stops the start naming file, line and field; a good one acts")
    func serveWithFaults() async throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("swallow-faults-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: directory, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: directory) }
        let bad = directory.appendingPathComponent("bad.yaml").path
        try "rules:\n  - name: x\n    match: {phase: rcpt}\n    action: {delay: soon}\n".write(toFile: bad, atomically: true, encoding: .utf8)
        let binary = productsDirectory().appendingPathComponent("swallow").path
        let result = try await run([binary, "serve", "--smtp", "127.0.0.1:0", "--http", "127.0.0.1:0", "--faults", bad])
        #expect(result.status == 2)
        #expect(result.stderr.contains("\(bad):4: rules[0].action.delay: expected a duration"), "\(result.stderr)")

        let good = directory.appendingPathComponent("good.yaml").path
        try "seed: 5\nrules:\n  - {name: t, match: {phase: rcpt, recipient: \"t@*\"}, action: {reply: \"451 4.3.0 No\"}}\n"
            .write(toFile: good, atomically: true, encoding: .utf8)
        let process = try SinkProcess(arguments: ["--faults", good, "--seed", "9"])
        defer {
            process.signal(SIGTERM)
            _ = process.wait()
        }
        #expect(try await Self.rcpt(process.smtpPort, ["t@x", "u@x"]) == [220, 250, 250, 451, 250])
        let shown = try jsonObject(try await curl(["http://127.0.0.1:\(process.httpPort)/api/v1/faults"]))
        #expect(shown["seed"] as? Int == 9)
    }
}
