// The README's example, as an app's test target would hold it. Only `sendLoginCode` stands in
// for the application (it mails a code with Python's smtplib).
import Assertions
import Foundation
import SwallowTestSupport
import SwallowTesting
import Testing

// (The trait skips it where python3 is missing; the README's copy has none.)
@Test(.enabled(if: Peers.available("python3"), Comment(rawValue: Peers.reason("python3"))))
func loginCodeArrives() async throws {
    let sink = try await TestSink.start()
    defer { sink.stop() }
    try await sendLoginCode(to: "alice@example.com", smtpPort: sink.smtpPort)  // your app
    let mail = try await sink.waitFor(.to("alice@example.com").subject(containing: "code"), within: .seconds(5))
    let code = try #require(try mail.extract(#"(\d{6})"#))
    #expect(code.count == 6)
    try await sink.expectNone(.to("mallory@example.com"), within: .milliseconds(100))
}

/// The application under test, here: mails a login code.
func sendLoginCode(to address: String, smtpPort: Int) async throws {
    let script = """
        import smtplib, random
        from email.message import EmailMessage
        m = EmailMessage()
        m['From'], m['To'], m['Subject'] = 'app@example.com', '\(address)', 'Your login code'
        m.set_content('Your code is %06d.' % random.randrange(10**6))
        with smtplib.SMTP('127.0.0.1', \(smtpPort), timeout=10) as s:
            s.send_message(m)
        """
    try await Task.detached {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
        process.arguments = ["python3", "-c", script]
        try process.run()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else { throw CocoaError(.fileWriteUnknown) }
    }.value
}
