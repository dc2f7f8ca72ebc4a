import Foundation
import SwallowTestSupport
import Testing

/// The SMTP clients (`swallow load`, and the sink's release to a relay) run by a user who may
/// not set privileged socket options: as root, the processes run under `setpriv` without
/// CAP_NET_ADMIN. A client that asked for TCP_NODELAY at the socket level set SO_DEBUG instead,
/// which only CAP_NET_ADMIN may: every connection failed with "Permission denied".
@Suite(
    "SMTP clients without privileges", .timeLimit(.minutes(2)),
    .enabled(
        if: getuid() != 0 || Peers.available("setpriv", "curl"), Comment(rawValue: Peers.reason("setpriv", "curl"))))
struct UnprivilegedClientTests {
    static var launcher: [String] {
        getuid() == 0 ? ["setpriv", "--bounding-set=-net_admin", "--inh-caps=-net_admin", "--"] : []
    }

    @Test("swallow load connects and sends, and a release reaches the relay, without CAP_NET_ADMIN")
    func withoutNetAdmin() async throws {
        let upstream = try SinkProcess()
        let relaying = try SinkProcess(arguments: ["--relay", "smtp://127.0.0.1:\(upstream.smtpPort)?tls=none"], launcher: Self.launcher)
        let directory = try temporaryDirectory()
        let scenario = "\(directory)/unprivileged.yaml"
        try """
        count: 6
        arrival: {kind: closed, senders: 2}
        connection: {pool: 2, per_connection: 1}
        templates:
          note: {from: app@shop.example, to: jane@example.com, subject: "Unprivileged {seq}", text: "hello"}
        """.write(toFile: scenario, atomically: true, encoding: .utf8)
        let binary = productsDirectory().appendingPathComponent("swallow").path
        let load = try await run(
            Self.launcher + [binary, "load", scenario, "--target", "127.0.0.1:\(relaying.smtpPort)", "--seed", "1"], timeout: 60)
        #expect(load.status == 0, "\(load.stdout)\(load.stderr)")
        #expect(load.stdout.contains("accepted 6  rejected 0  failed 0"), "\(load.stdout)")

        let base = "http://127.0.0.1:\(relaying.httpPort)"
        let listing = try jsonObject(try await curl(["\(base)/api/v1/messages"]))
        let id = try #require((listing["messages"] as? [[String: Any]])?.first?["ID"] as? String)
        let release = try await run(
            [
                "curl", "-s", "-w", "\n%{http_code}", "-H", "Content-Type: application/json", "--data-binary", #"{"To": ["boss@example.com"]}"#,
                "\(base)/api/v1/message/\(id)/release",
            ])
        #expect(release.stdout.hasSuffix("\n200"), "\(release.stdout)")
        let upstreamList = try jsonObject(try await curl(["http://127.0.0.1:\(upstream.httpPort)/api/v1/messages"]))
        #expect(upstreamList["total"] as? Int == 1, "the upstream has the released message")
    }
}
