import ArgumentParser
import Assertions
import Foundation

/// `swallow assert`: CI checks against a running sink's API. Without a subcommand (or with
/// `mail`), that the right mail arrived; `retries`, what the application did when mail failed.
struct Assert: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Check that the right mail arrived at a running sink (and, with 'retries', what the application did when it failed).",
        subcommands: [AssertMail.self, AssertRetries.self],
        defaultSubcommand: AssertMail.self
    )
}

/// `swallow assert [mail]`: one CI check against a running sink's API. The sink waits on its
/// event stream (`GET /api/v1/wait`) until the query's count holds or the time runs out; this
/// command makes that one request.
struct AssertMail: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "mail",
        abstract: "Check that the right mail arrived at a running sink, waiting for it (the default).",
        discussion: """
            Exit status: 0 the expectation holds (the matched messages are printed, or with \
            --extract the first extracted value alone, for a shell to read); 1 it does not (what \
            was found instead is printed); 2 bad input or an unreachable API.

              code=$(swallow assert --to alice@example.com --subject code --within 10s --extract '([0-9]{6})')
              swallow assert --to bob@example.com --count '==0' --within 5s
              read -r box token < <(swallow assert --mailbox new)    # a mailbox of one's own
              swallow assert retries --to alice@example.com --delivered --attempts '>=3' --backoff --within 60s
            """
    )

    @Option(help: "The sink's HTTP address.")
    var api = "http://127.0.0.1:8025"

    @Option(help: "Recipient (To, Cc or Bcc) contains this.")
    var to: String?

    @Option(help: "Sender contains this.")
    var from: String?

    @Option(help: "Subject contains this.")
    var subject: String?

    @Option(help: "The message text contains this.")
    var contains: String?

    @Option(help: "More Mailpit search syntax, added as is (e.g. 'has:attachment').")
    var query: String?

    @Option(
        help:
            "Only this mailbox (an AUTH user, a recipient's plus tag or an X-Swallow-Mailbox header); 'new' creates a mailbox, prints 'NAME TOKEN' and exits."
    )
    var mailbox: String?

    @Option(help: "An API token (a mailbox's, or an admin --api-token), sent as Authorization: Bearer.")
    var token: String?

    @Option(help: "How many messages must match: N, >=N, >N, ==N, <=N, <N.")
    var count = ">=1"

    @Option(help: "How long to wait (5s, 500ms, 1m; at most 300s).")
    var within = "10s"

    @Option(help: "A regular expression; its first group (or match) in the newest match's subject and text is printed.")
    var extract: String?

    @Flag(help: "Check that every link of the newest match is a well-formed absolute URL (http, https or mailto; nothing is fetched).")
    var linksValid = false

    @Flag(help: "Print the sink's JSON answer.")
    var json = false

    func run() async throws {
        var search = MailQuery()
        if let to { search = search.to(to) }
        if let from { search = search.from(from) }
        if let subject { search = search.subject(containing: subject) }
        if let contains { search = search.text(containing: contains) }
        let terms = [search.mailpitSearch, query ?? ""].filter { !$0.isEmpty }
        guard let components = URLComponents(string: api), components.host != nil, ["http", "https"].contains(components.scheme ?? "") else {
            throw fail(2, "--api: not a URL: \(api)")
        }
        if mailbox == "new" { return try await createMailbox() }
        var items = [("query", terms.joined(separator: " ")), ("count", count), ("timeout", within)]
        if let mailbox { items.append(("mailbox", mailbox)) }
        if let extract { items.append(("extract", extract)) }
        let data: Data
        let status: Int
        do {
            let answer = try await SinkHTTP.get(SinkHTTP.url(api, "/api/v1/wait", items), token: token)
            (data, status) = (Data(answer.body), answer.status)
        } catch {
            throw fail(2, "cannot reach the sink's API at \(api): \(error)")
        }
        guard status == 200 || status == 408 else {
            throw fail(2, "the sink answered \(status): \(String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines))")
        }
        guard let answer = try? JSONSerialization.jsonObject(with: data) as? [String: Any] else {
            throw fail(2, "the sink's answer is not JSON")
        }
        if json { print(String(decoding: data, as: UTF8.self)) }
        let messages = answer["Messages"] as? [[String: Any]] ?? []
        if status == 200 {
            if linksValid {
                let links = answer["Links"] as? [String] ?? []
                let invalid = links.filter { !Self.isValidLink($0) }
                guard invalid.isEmpty else {
                    throw fail(1, "links that are not well-formed absolute URLs:\n" + invalid.map { "  \($0)" }.joined(separator: "\n"))
                }
            }
            guard !json else { return }
            if extract != nil {
                guard let value = (answer["Extracted"] as? [String])?.first else {
                    throw fail(1, "\(answer["Count"] ?? 0) messages matched, but --extract found nothing in the newest")
                }
                print(value)
            } else {
                for message in messages { print(Self.line(message)) }
            }
            return
        }
        var account = (answer["Error"] as? String) ?? "the expectation does not hold"
        for message in messages.prefix(5) { account += "\n  " + Self.line(message) }
        throw fail(1, account)
    }

    /// `--mailbox new`: `POST /api/v1/mailboxes`; prints `NAME TOKEN` (the sink's JSON with `--json`).
    private func createMailbox() async throws {
        let answer: (status: Int, body: [UInt8])
        do {
            answer = try await SinkHTTP.post(SinkHTTP.url(api, "/api/v1/mailboxes"), json: "{}", token: token)
        } catch {
            throw fail(2, "cannot reach the sink's API at \(api): \(error)")
        }
        let text = String(decoding: answer.body, as: UTF8.self)
        guard answer.status == 201,
            let object = try? JSONSerialization.jsonObject(with: Data(answer.body)) as? [String: Any],
            let name = object["Name"] as? String, let token = object["Token"] as? String
        else { throw fail(2, "the sink answered \(answer.status): \(text.trimmingCharacters(in: .whitespacesAndNewlines))") }
        print(json ? text : "\(name) \(token)")
    }

    /// `http(s)://host/...` with a host, or `mailto:address`.
    static func isValidLink(_ link: String) -> Bool {
        guard let components = URLComponents(string: link), let scheme = components.scheme?.lowercased() else { return false }
        switch scheme {
        case "http", "https": return !(components.host ?? "").isEmpty && !link.contains(" ")
        case "mailto": return components.path.contains("@")
        default: return false
        }
    }

    private static func line(_ message: [String: Any]) -> String {
        let from = (message["From"] as? [String: Any])?["Address"] as? String ?? ""
        let to = (message["To"] as? [[String: Any]] ?? []).compactMap { $0["Address"] as? String }.joined(separator: ",")
        return "\(message["ID"] as? String ?? "")  \(from) -> \(to)  \(message["Subject"] as? String ?? "")"
    }

    private func fail(_ code: Int32, _ message: String) -> ExitCode {
        FileHandle.standardError.write(Data("swallow assert: \(message)\n".utf8))
        return ExitCode(code)
    }
}
