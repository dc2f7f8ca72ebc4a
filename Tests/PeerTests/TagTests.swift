import Foundation
import MailMessage
import SinkServer
import SwallowTestSupport
import Testing

/// Mailpit's tags: set by `X-Tags:`, `--tag NAME=SEARCH` and `--tags-from-plus`, changed over
/// the API, searched with `tag:`, kept across a restart with `--data`.
@Suite("Tags", .timeLimit(.minutes(4)), .enabled(if: Peers.available("curl", "python3"), Comment(rawValue: Peers.reason("curl", "python3"))))
struct TagTests {
    /// Sends (subject, recipient, extra header lines) messages with smtplib.
    static func send(_ messages: [(subject: String, to: String, headers: String)], port: Int) async throws {
        let encoded = messages.map { "\($0.subject)\t\($0.to)\t\($0.headers)" }.joined(separator: "\n")
        let result = try await python(
            """
            import smtplib
            with smtplib.SMTP('127.0.0.1', PORT, timeout=10) as s:
                for line in MESSAGES.split('\\n'):
                    subject, to, headers = line.split('\\t')
                    extra = ''.join(h + '\\r\\n' for h in headers.split('|') if h)
                    body = 'From: app@shop.example\\r\\nTo: ' + to + '\\r\\nSubject: ' + subject + '\\r\\n' + extra + '\\r\\nHello\\r\\n'
                    s.sendmail('app@shop.example', [to], body.encode())
            """, port: port, env: ["MESSAGES": encoded])
        #expect(result.status == 0, "\(result.stderr)")
    }

    /// The tags of each message by subject, from the list route (or a search).
    static func tagsBySubject(_ base: String, search: String? = nil) async throws -> (bySubject: [String: [String]], all: [String]) {
        let url =
            search.map { "\(base)/api/v1/search?query=\($0.addingPercentEncoding(withAllowedCharacters: .alphanumerics) ?? $0)" }
            ?? "\(base)/api/v1/messages"
        let list = try jsonObject(try await curl([url]))
        var result: [String: [String]] = [:]
        for message in list["messages"] as? [[String: Any]] ?? [] {
            result[message["Subject"] as? String ?? ""] = message["Tags"] as? [String]
        }
        return (result, list["tags"] as? [String] ?? [])
    }

    @Test("X-Tags, --tag rules and plus tags tag new mail; tag: finds it")
    func automaticTags() async throws {
        try await withSinkApplication({ configuration in
            configuration.tagging = Tagging(
                rules: [try! Tagging.parseRule("invoices=subject:invoice"), try! Tagging.parseRule("VIP=to:ceo@")],
                fromPlus: true
            )
        }) { sink, base in
            try await Self.send(
                [
                    ("Your invoice 7", "ann@example.com", "X-Tags: billing, Urgent"),
                    ("Login code", "app+signup@example.com", "X-Tags: auth,|X-Tags: =?utf-8?q?s=C3=A9curit=C3=A9?="),
                    ("Hello", "ceo@example.com", ""),
                    ("Plain", "bob@example.com", "X-Other: x"),
                ], port: sink.smtpAddress.port)
            let (tags, all) = try await Self.tagsBySubject(base)
            #expect(tags["Your invoice 7"] == ["billing", "invoices", "Urgent"])
            #expect(tags["Login code"] == ["auth", "signup", "sécurité"])
            #expect(tags["Hello"] == ["VIP"])
            #expect(tags["Plain"] == [])
            #expect(all == ["auth", "billing", "invoices", "signup", "sécurité", "Urgent", "VIP"])
            let found = try await Self.tagsBySubject(base, search: "tag:urgent")
            #expect(Array(found.bySubject.keys) == ["Your invoice 7"])
            let tagged = try await Self.tagsBySubject(base, search: "is:tagged")
            #expect(tagged.bySubject.count == 3)
            let one = try jsonObject(try await curl(["\(base)/api/v1/message/latest"]))
            #expect(one["Tags"] as? [String] == [])
        }
    }

    @Test("PUT /api/v1/tags sets, PUT /api/v1/tags/{tag} renames, DELETE removes; bad input is a 400")
    func tagAPI() async throws {
        try await withSinkApplication { sink, base in
            try await Self.send([("one", "a@example.com", ""), ("two", "b@example.com", "X-Tags: old")], port: sink.smtpAddress.port)
            let ids = sink.store.messages().map(\.id)
            _ = try await curl(["-X", "PUT", "-d", #"{"Tags": ["red", "blue", "Red"], "IDs": ["\#(ids[0])"]}"#, "\(base)/api/v1/tags"])
            #expect(try await Self.tagsBySubject(base).bySubject["one"] == ["blue", "red"])
            #expect(try await curl(["\(base)/api/v1/tags"]) == #"["blue","old","red"]"#)
            let info = try jsonObject(try await curl(["\(base)/api/v1/info"]))
            #expect(info["Tags"] as? [String: Int] == ["blue": 1, "old": 1, "red": 1])

            _ = try await curl(["-X", "PUT", "-d", #"{"Name": "blue"}"#, "\(base)/api/v1/tags/old"])
            var tags = try await Self.tagsBySubject(base).bySubject
            #expect(tags["two"] == ["blue"])
            _ = try await curl(["-X", "DELETE", "\(base)/api/v1/tags/blue"])
            tags = try await Self.tagsBySubject(base).bySubject
            #expect(tags["one"] == ["red"])
            #expect(tags["two"] == [])
            _ = try await curl(["-X", "PUT", "-d", #"{"Tags": [], "IDs": ["\#(ids[0])"]}"#, "\(base)/api/v1/tags"])
            #expect(try await curl(["\(base)/api/v1/tags"]) == "[]")

            func status(_ arguments: [String]) async throws -> String {
                try await run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}"] + arguments).stdout
            }
            #expect(try await status(["-X", "PUT", "-d", #"{"Tags": ["a\u0007b"], "IDs": ["\#(ids[0])"]}"#, "\(base)/api/v1/tags"]) == "400")
            #expect(try await status(["-X", "PUT", "-d", #"{"Tags": ["a"]}"#, "\(base)/api/v1/tags"]) == "400")
            #expect(try await status(["-X", "PUT", "-d", #"{"Name": "x,y"}"#, "\(base)/api/v1/tags/red"]) == "400")
            #expect(try await status(["-X", "PUT", "-d", #"{"Name": "new"}"#, "\(base)/api/v1/tags/nothing"]) == "404")
        }
    }

    @Test("tags persist with --data, and the index's tag: search agrees with memory")
    func persisted() async throws {
        let directory = try temporaryDirectory()
        var sink = try SinkProcess(arguments: ["--data", directory, "--tag", "codes=subject:code"])
        try await Self.send([("Login code", "a@example.com", "X-Tags: auth"), ("Other", "b@example.com", "")], port: sink.smtpPort)
        var base = "http://127.0.0.1:\(sink.httpPort)"
        let before = try await Self.tagsBySubject(base)
        #expect(before.bySubject["Login code"] == ["auth", "codes"])
        let other = try #require(try jsonObject(try await curl(["\(base)/api/v1/search?query=subject:other"]))["messages"] as? [[String: Any]])
        let otherID = try #require(other.first?["ID"] as? String)
        _ = try await curl(["-X", "PUT", "-d", #"{"Tags": ["kept"], "IDs": ["\#(otherID)"]}"#, "\(base)/api/v1/tags"])
        sink.signal(SIGTERM)
        #expect(sink.wait() == 0)

        sink = try SinkProcess(arguments: ["--data", directory])
        defer {
            sink.signal(SIGTERM)
            _ = sink.wait()
        }
        base = "http://127.0.0.1:\(sink.httpPort)"
        let after = try await Self.tagsBySubject(base)
        #expect(after.bySubject == ["Login code": ["auth", "codes"], "Other": ["kept"]])
        #expect(after.all == ["auth", "codes", "kept"])
        #expect(Array(try await Self.tagsBySubject(base, search: "tag:kept").bySubject.keys) == ["Other"])
        #expect(Array(try await Self.tagsBySubject(base, search: "tag:codes").bySubject.keys) == ["Login code"])
    }
}
