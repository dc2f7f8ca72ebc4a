import Foundation
import SinkServer
import SwallowTestSupport
import Testing

@testable import LoadGen

/// A private Postfix instance (its own configuration and queue under a temporary directory,
/// listening on 127.0.0.1 only) relaying every message to an in-process Swallow sink.
/// `lost.example` goes to Postfix's `discard` transport: accepted, never forwarded.
final class PostfixRelay {
    let directory: String
    let port: Int

    init(relayTo sinkPort: Int) throws {
        directory = NSTemporaryDirectory() + "swallow-relay-\(UUID().uuidString.prefix(8))"
        for sub in ["etc", "spool", "data"] {
            try FileManager.default.createDirectory(atPath: "\(directory)/\(sub)", withIntermediateDirectories: true)
        }
        guard let account = getpwnam("postfix") else { throw CocoaError(.featureUnsupported) }
        chown("\(directory)/data", account.pointee.pw_uid, account.pointee.pw_gid)
        try """
        compatibility_level = 3.6
        queue_directory = \(directory)/spool
        data_directory = \(directory)/data
        mail_owner = postfix
        inet_interfaces = 127.0.0.1
        inet_protocols = ipv4
        myhostname = relay.swallow.test
        mydestination =
        relayhost = [127.0.0.1]:\(sinkPort)
        mynetworks = 127.0.0.0/8
        smtpd_relay_restrictions = permit_mynetworks, reject
        transport_maps = inline:{lost.example=discard:}
        maillog_file = \(directory)/postfix.log
        maillog_file_prefixes = \(directory)
        smtp_tls_security_level = none
        smtputf8_enable = no
        biff = no
        """.write(toFile: "\(directory)/etc/main.cf", atomically: true, encoding: .utf8)
        // A free port can be taken by a test running alongside before Postfix binds it (the
        // start then fails): a few tries, each with another port.
        var attempt = 0
        while true {
            let port = try freePort()
            do {
                try Self.writeMasterConfiguration(directory: directory, port: port)
                try Self.postfix(["start"], directory: directory)
                self.port = port
                return
            } catch {
                try? Self.postfix(["stop"], directory: directory)
                attempt += 1
                if attempt == 3 { throw error }
            }
        }
    }

    private static func writeMasterConfiguration(directory: String, port: Int) throws {
        let services = [
            "127.0.0.1:\(port) inet n - n - - smtpd", "cleanup unix n - n - 0 cleanup", "qmgr unix n - n 300 1 qmgr",
            "rewrite unix - - n - - trivial-rewrite", "bounce unix - - n - 0 bounce", "defer unix - - n - 0 bounce",
            "trace unix - - n - 0 bounce", "verify unix - - n - 1 verify", "flush unix n - n 1000? 0 flush",
            "proxymap unix - - n - - proxymap", "smtp unix - - n - - smtp", "relay unix - - n - - smtp",
            "showq unix n - n - - showq", "error unix - - n - - error", "retry unix - - n - - error",
            "discard unix - - n - - discard", "anvil unix - - n - 1 anvil", "scache unix - - n - 1 scache",
            "postlog unix-dgram n - n - 1 postlogd",
        ]
        try (services.joined(separator: "\n") + "\n").write(toFile: "\(directory)/etc/master.cf", atomically: true, encoding: .utf8)
    }

    private func postfix(_ arguments: [String]) throws {
        try Self.postfix(arguments, directory: directory)
    }

    private static func postfix(_ arguments: [String], directory: String) throws {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/sbin/postfix")
        process.arguments = ["-c", "\(directory)/etc"] + arguments
        try process.run()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else {
            let log = (try? String(contentsOfFile: "\(directory)/postfix.log", encoding: .utf8)) ?? ""
            throw PostfixFailure(description: "postfix \(arguments): status \(process.terminationStatus)\n\(log)")
        }
    }

    /// Whether a private Postfix can run here: it needs root and Debian's postfix.
    static let usable = getuid() == 0 && FileManager.default.isExecutableFile(atPath: "/usr/sbin/postfix")

    struct PostfixFailure: Error, CustomStringConvertible { var description: String }

    func stop() {
        try? postfix(["stop"])
        try? FileManager.default.removeItem(atPath: directory)
    }
}

@Suite(
    "Delivery timing through a real relay", .enabled(if: Peers.available("postfix", "python3"), Comment(rawValue: Peers.reason("postfix", "python3")))
)
struct RelayTests {
    @Test(
        "Postfix relays to the sink: every forwarded message is matched, discarded ones are lost",
        .enabled(
            if: PostfixRelay.usable,
            "needs root and Debian's postfix (scripts/test installs it)"))
    func throughPostfix() async throws {
        var configuration = SinkConfiguration()
        configuration.smtp = ListenAddress(host: "127.0.0.1", port: 0)
        let sink = try await Sink.bind(configuration)
        let serving = Task { try await sink.run() }
        let relay = try PostfixRelay(relayTo: sink.smtpAddress.port)
        defer {
            relay.stop()
            sink.shutdown()
        }
        try await waitUntilListening(port: relay.port)
        let scenario = try Scenario.parse(
            """
            count: 60
            arrival: {kind: constant, rate: 60/s}
            connection: {pool: 4}
            mix: [{template: otp, weight: 9}, {template: lost, weight: 1}]
            templates:
              otp: {from: app@bank.example, to: "user{seq}@example.com", subject: "Code {otp:6}", text: "Code {otp}"}
              lost: {from: app@bank.example, to: "user{seq}@lost.example", subject: "Lost {seq}", text: "never forwarded"}
            expect: {lost: "== 0"}
            """)
        var runner = LoadRunner(scenario: scenario, host: "127.0.0.1", port: relay.port, seed: 8, runID: "relay")
        runner.deliveries = StoreDeliveries(store: sink.store, lossy: false)
        runner.grace = 3
        let report = try await runner.run()
        let forwarded = report.perTemplate["otp"]?.accepted ?? 0
        let discarded = report.perTemplate["lost"]?.accepted ?? 0
        #expect(report.accepted == 60 && forwarded + discarded == 60 && discarded > 0)
        #expect(report.delivered == forwarded)
        #expect(report.lost == discarded)
        #expect(report.duplicates == 0)
        #expect(sink.store.count == forwarded)
        let latency = try #require(report.deliveryLatencyMs)
        // Measured from the schedule through the relay: positive and ordered. No upper bound:
        // on a loaded 2-core machine the schedule lag alone has passed 10 s.
        #expect(latency.p50 > 0 && latency.max >= latency.p50)
        #expect(latency.p50 >= report.submitLatencyMs.p50 * 0.5)
        #expect(report.expectations.first?.passed == false)
        sink.shutdown()
        _ = await serving.result
    }
}
