import Foundation
import SinkServer
import SwallowTestSupport
import Testing

/// The web inbox in headless Chromium (Tests/web/inbox_check.py over the DevTools protocol),
/// against the whole sink application on loopback. The script's checks: mail appears without
/// a reload, a message opens in a sandboxed frame, an attachment downloads byte-exact, search
/// narrows the list, j/Enter/Delete work, a fault profile changes the SMTP answers, 360 px fits.
/// Its screenshots go to a temporary directory: a test run changes no tracked file. The
/// README's screenshots are made on purpose with
/// `python3 Tests/web/inbox_check.py --base URL --smtp PORT --corpus ../shared/corpus --docs docs`.
@Suite(
    "Web inbox in Chromium", .timeLimit(.minutes(3)),
    .enabled(if: Peers.available("chromium", "python3"), Comment(rawValue: Peers.reason("chromium", "python3"))))
struct WebInboxTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    @Test("a person's path through the inbox, checked in headless Chromium")
    func inbox() async throws {
        let index = try await withSinkApplication { _, base in try await curl([base + "/"]) }
        #expect(index.contains("<script src=\"/ui/app.js\""), "the page is served from the package's resources")
        let screenshots = try temporaryDirectory()
        try await withSinkApplication { sink, base in
            let result = try await run(
                [
                    "python3", Self.root.appendingPathComponent("Tests/web/inbox_check.py").path,
                    "--base", base, "--smtp", String(sink.smtpAddress.port),
                    "--corpus", Self.root.deletingLastPathComponent().appendingPathComponent("shared/corpus").path,
                    "--docs", screenshots,
                ], timeout: 150)
            #expect(result.status == 0, "inbox_check.py failed:\n\(result.stdout)\n\(result.stderr)")
            #expect(result.stdout.contains("all checks passed"))
        }
    }

    @Test("the Deliveries and Stats panels: a misbehaving client's attempts and flags, the charts and the top tables, live")
    func deliveriesAndStats() async throws {
        let screenshots = try temporaryDirectory()
        try await withSinkApplication { sink, base in
            let result = try await run(
                [
                    "python3", Self.root.appendingPathComponent("Tests/web/inbox_check.py").path,
                    "--base", base, "--smtp", String(sink.smtpAddress.port), "--corpus", screenshots, "--docs", screenshots, "--audit",
                ], timeout: 100)
            #expect(result.status == 0, "inbox_check.py --audit failed:\n\(result.stdout)\n\(result.stderr)")
            #expect(result.stdout.contains("all checks passed"))
        }
    }

    @Test("with --relay: the Release button releases the open message and the message shows the hop")
    func release() async throws {
        let upstream = try SinkProcess()
        let screenshots = try temporaryDirectory()
        try await withSinkApplication({ $0.relay.upstream = try! Upstream(url: "smtp://127.0.0.1:\(upstream.smtpPort)?tls=none") }) {
            sink, base in
            let result = try await run(
                [
                    "python3", Self.root.appendingPathComponent("Tests/web/inbox_check.py").path,
                    "--base", base, "--smtp", String(sink.smtpAddress.port), "--corpus", screenshots, "--docs", screenshots, "--release",
                ], timeout: 100)
            #expect(result.status == 0, "inbox_check.py --release failed:\n\(result.stdout)\n\(result.stderr)")
            #expect(result.stdout.contains("all checks passed"))
        }
        let total = try jsonObject(try await curl(["http://127.0.0.1:\(upstream.httpPort)/api/v1/messages"]))["total"] as? Int
        #expect(total == 1, "the upstream got the released message")
        upstream.signal(SIGTERM)
        _ = upstream.wait()
    }
}
