import Foundation
import SwallowTestSupport
import Testing

@testable import SinkServer

@Suite("GET /api/v1/wait", .enabled(if: Peers.available("curl"), Comment(rawValue: Peers.reason("curl"))))
struct WaitRouteTests {
    @Test("waits for a matching message, then answers with it, its links and its code")
    func waitsThenAnswers() async throws {
        try await withSinkApplication { sink, base in
            let waiting = Task {
                // Generous bounds: three smtplib processes start before it answers, and a loaded
                // CI machine running every peer suite at once took more than 10 s for them.
                try await curl(["--max-time", "90", "\(base)/api/v1/wait?query=subject:code&timeout=80s&mailbox=ci"])
            }
            // The request is waiting once it has subscribed to the events (a readiness check).
            for _ in 0..<1000 where !sink.store.events.hasSubscribers {
                try await Task.sleep(for: .milliseconds(5))
            }
            #expect(sink.store.events.hasSubscribers)
            // Mail that does not match, or is in another mailbox, does not answer it.
            try await HTTPAPITests.send(["03-invoice-pdf.eml"], port: sink.smtpAddress.port)
            try await HTTPAPITests.send(["02-otp-alternative.eml"], port: sink.smtpAddress.port, mailbox: "other")
            try await HTTPAPITests.send(["02-otp-alternative.eml"], port: sink.smtpAddress.port)
            let answer = try jsonObject(try await waiting.value)
            let message = try #require(answer["Message"] as? [String: Any])
            #expect(message["Subject"] as? String == "Your login code is 731264")
            #expect((answer["Extracted"] as? [String])?.first == "731264")
            #expect((answer["Links"] as? [String])?.contains { $0.hasPrefix("https://bank.example") } == true)
            #expect(sink.store.count == 3)
        }
    }

    @Test("answers at once when a message already matches; 408 when none comes; 400 for bad input")
    func presentTimeoutAndErrors() async throws {
        try await withSinkApplication { sink, base in
            try await HTTPAPITests.send(["02-otp-alternative.eml"], port: sink.smtpAddress.port)
            let present = try jsonObject(try await curl(["\(base)/api/v1/wait?query=subject:code&timeout=0s&extract=is%20(%5Cd%2B)"]))
            #expect((present["Extracted"] as? [String])?.first == "731264")
            let missing = try await run([
                "curl", "--silent", "--max-time", "10", "--write-out", "\n%{http_code}",
                "\(base)/api/v1/wait?query=subject:nothing-like-this&timeout=200ms",
            ])
            #expect(missing.stdout.hasSuffix("\n408"))
            #expect(missing.stdout.contains("expected >=1 messages matching subject:nothing-like-this within 200ms, found 0"))
            // Upper bounds are judged when the window ends.
            let none = try jsonObject(try await curl(["\(base)/api/v1/wait?query=subject:nothing-like-this&count=%3D%3D0&timeout=100ms"]))
            #expect(none["Holds"] as? Bool == true && none["Count"] as? Int == 0)
            let two = try await run([
                "curl", "--silent", "--max-time", "10", "--write-out", "\n%{http_code}",
                "\(base)/api/v1/wait?query=subject:code&count=%3E%3D2&timeout=100ms",
            ])
            #expect(two.stdout.hasSuffix("\n408") && two.stdout.contains("\"Count\":1"))
            for bad in ["timeout=forever", "timeout=301s", "extract=(", "query=is:bogus", "count=lots"] {
                let result = try await run([
                    "curl", "--silent", "--max-time", "10", "--output", "/dev/null", "--write-out", "%{http_code}",
                    "\(base)/api/v1/wait?\(bad)",
                ])
                #expect(result.stdout == "400", "\(bad)")
            }
        }
    }
}
