import Foundation
import MailMessage
import NIOCore
import SinkServer
import SwallowTestSupport
import Testing

/// Real SMTP clients against the sink on loopback: Python's smtplib, swaks and curl.
/// `scripts/test` installs them; a missing client fails the test rather than skipping it.
@Suite(
    "Real clients: smtplib, swaks, curl", .timeLimit(.minutes(4)),
    .enabled(if: Peers.available("curl", "swaks", "python3"), Comment(rawValue: Peers.reason("curl", "swaks", "python3"))))
struct RealClientTests {
    static let message =
        "From: Bank <no-reply@bank.example>\r\nTo: alice@example.com\r\nSubject: Your code\r\n\r\n"
        + "Your code is 123456.\r\n.leading dot line\r\n..two dots\r\nend\r\n"

    static func onlyMessage(_ sink: Sink) async throws -> (CapturedMessage, String) {
        let messages = sink.store.messages()
        try #require(messages.count == 1, "expected one stored message, found \(messages.count)")
        let bytes = try #require(try await sink.store.receivedBytes(id: messages[0].id))
        return (messages[0], String(buffer: bytes))
    }

    static func expectSuccess(_ result: ProcessResult, sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(result.status == 0, "exit \(result.status)\nstdout: \(result.stdout)\nstderr: \(result.stderr)", sourceLocation: sourceLocation)
    }

    @Test("smtplib, plain: the message is stored byte-exact after dot-unstuffing")
    func smtplibPlain() async throws {
        try await withSink { sink in
            let result = try await python(
                """
                import smtplib
                with smtplib.SMTP('127.0.0.1', PORT, timeout=10) as s:
                    s.sendmail('no-reply@bank.example', ['alice@example.com', 'bob@example.com'], MESSAGE.encode())
                """, port: sink.smtpAddress.port, env: ["MESSAGE": Self.message])
            Self.expectSuccess(result)
            let (captured, body) = try await Self.onlyMessage(sink)
            #expect(body == Self.message)
            #expect(captured.envelope.recipients.map(\.address) == ["alice@example.com", "bob@example.com"])
            #expect(captured.session.tls == nil)
        }
    }

    @Test("smtplib with STARTTLS: TLS is recorded with its version")
    func smtplibStartTLS() async throws {
        try await withSink { sink in
            let result = try await python(
                """
                import smtplib, ssl
                context = ssl.create_default_context()
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
                with smtplib.SMTP('127.0.0.1', PORT, timeout=10) as s:
                    s.starttls(context=context)
                    s.sendmail('no-reply@bank.example', ['alice@example.com'], MESSAGE.encode())
                """, port: sink.smtpAddress.port, env: ["MESSAGE": Self.message])
            Self.expectSuccess(result)
            let (captured, body) = try await Self.onlyMessage(sink)
            #expect(body == Self.message)
            #expect(captured.session.tls?.version.hasPrefix("TLSv1.") == true)
            #expect(captured.session.tls?.implicit == false)
        }
    }

    @Test("smtplib over implicit TLS (--smtps)")
    func smtplibImplicitTLS() async throws {
        try await withSink({ $0.smtps = ListenAddress(host: "127.0.0.1", port: 0) }) { sink in
            let smtps = try #require(sink.smtpsAddress)
            let result = try await python(
                """
                import smtplib, ssl
                context = ssl.create_default_context()
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
                with smtplib.SMTP_SSL('127.0.0.1', PORT, context=context, timeout=10) as s:
                    s.sendmail('no-reply@bank.example', ['alice@example.com'], MESSAGE.encode())
                """, port: smtps.port, env: ["MESSAGE": Self.message])
            Self.expectSuccess(result)
            let (captured, body) = try await Self.onlyMessage(sink)
            #expect(body == Self.message)
            #expect(captured.session.tls?.implicit == true)
        }
    }

    @Test("smtplib AUTH with each mechanism against a credentials list", arguments: ["PLAIN", "LOGIN", "CRAM-MD5"])
    func smtplibAuth(mechanism: String) async throws {
        try await withSink({
            $0.auth = .credentials(["alice": "s3cret"])
            $0.requireAuth = true
        }) { sink in
            let result = try await python(
                """
                import smtplib
                with smtplib.SMTP('127.0.0.1', PORT, timeout=10) as s:
                    s.ehlo()
                    s.user, s.password = 'alice', 'wrong'
                    method = {'PLAIN': s.auth_plain, 'LOGIN': s.auth_login, 'CRAM-MD5': s.auth_cram_md5}[MECH]
                    try:
                        s.auth(MECH, method)
                        raise SystemExit('a wrong password was accepted')
                    except smtplib.SMTPAuthenticationError as e:
                        assert e.smtp_code == 535, e
                    try:
                        s.sendmail('a@b.example', ['c@d.example'], b'Subject: x\\r\\n\\r\\nx\\r\\n')
                        raise SystemExit('MAIL accepted without AUTH')
                    except smtplib.SMTPSenderRefused as e:
                        assert e.smtp_code == 530, e
                    s.user, s.password = 'alice', 's3cret'
                    code, _ = s.auth(MECH, method)
                    assert code == 235, code
                    s.sendmail('no-reply@bank.example', ['alice@example.com'], MESSAGE.encode())
                """, port: sink.smtpAddress.port, env: ["MESSAGE": Self.message, "MECH": mechanism])
            Self.expectSuccess(result)
            let (captured, body) = try await Self.onlyMessage(sink)
            #expect(body == Self.message)
            #expect(captured.session.authUser == "alice")
        }
    }

    @Test("smtplib with an SMTPUTF8 address")
    func smtplibSMTPUTF8() async throws {
        try await withSink { sink in
            let result = try await python(
                """
                import smtplib
                msg = 'From: 用户@例子.广告\\r\\nSubject: héllo\\r\\n\\r\\nçava\\r\\n'.encode('utf-8')
                with smtplib.SMTP('127.0.0.1', PORT, timeout=10) as s:
                    s.sendmail('用户@例子.广告', ['收件人@例子.广告'], msg, mail_options=['SMTPUTF8', 'BODY=8BITMIME'])
                """, port: sink.smtpAddress.port)
            Self.expectSuccess(result)
            let (captured, body) = try await Self.onlyMessage(sink)
            #expect(captured.envelope.mailFrom == "用户@例子.广告")
            #expect(captured.envelope.recipients.map(\.address) == ["收件人@例子.广告"])
            #expect(body == "From: 用户@例子.广告\r\nSubject: héllo\r\n\r\nçava\r\n")
            #expect(captured.anomalies.isEmpty)
        }
    }

    @Test("a non-ASCII address without SMTPUTF8 is refused with 553 5.6.7")
    func utf8WithoutSMTPUTF8() async throws {
        try await withSink { sink in
            let code = try await onThread {
                let client = try RawSMTPClient(port: sink.smtpAddress.port)
                _ = try client.readReply()
                _ = try client.command("EHLO x")
                return try client.command("MAIL FROM:<用户@例子.广告>").code
            }
            #expect(code == 553)
        }
    }

    @Test("swaks delivers a message file byte-exact, over STARTTLS with AUTH")
    func swaks() async throws {
        let directory = try temporaryDirectory()
        let file = directory + "/message.eml"
        try Self.message.write(toFile: file, atomically: true, encoding: .utf8)
        try await withSink { sink in
            let result = try await run([
                "swaks", "--server", "127.0.0.1:\(sink.smtpAddress.port)", "--from", "no-reply@bank.example",
                "--to", "alice@example.com", "--tls", "--auth", "LOGIN", "--auth-user", "app", "--auth-password", "pw",
                "--data", file, "--timeout", "10",
            ])
            Self.expectSuccess(result)
            let (captured, body) = try await Self.onlyMessage(sink)
            // swaks always sends CRLF before the final ".", even after data that ends with one,
            // so the sink (storing what was sent) has one more empty line.
            #expect(body == Self.message + "\r\n")
            #expect(captured.session.authUser == "app")
            #expect(captured.session.tls != nil)
        }
    }

    @Test("curl smtp:// uploads a message byte-exact")
    func curl() async throws {
        let directory = try temporaryDirectory()
        let file = directory + "/message.eml"
        try Self.message.write(toFile: file, atomically: true, encoding: .utf8)
        try await withSink { sink in
            let result = try await run([
                "curl", "--silent", "--show-error", "--max-time", "10", "smtp://127.0.0.1:\(sink.smtpAddress.port)",
                "--mail-from", "no-reply@bank.example", "--mail-rcpt", "alice@example.com", "--upload-file", file,
            ])
            Self.expectSuccess(result)
            let (captured, body) = try await Self.onlyMessage(sink)
            #expect(body == Self.message)
            #expect(captured.envelope.mailFrom == "no-reply@bank.example")
        }
    }

    @Test("--transcripts keeps the session transcript with AUTH secrets redacted")
    func transcripts() async throws {
        try await withSink({ $0.transcripts = true }) { sink in
            let result = try await python(
                """
                import smtplib
                with smtplib.SMTP('127.0.0.1', PORT, timeout=10) as s:
                    s.login('alice', 'topsecret')
                    s.sendmail('a@b.example', ['c@d.example'], b'Subject: t\\r\\n\\r\\nhi\\r\\n')
                """, port: sink.smtpAddress.port)
            Self.expectSuccess(result)
            let (captured, _) = try await Self.onlyMessage(sink)
            let transcript = try #require(captured.transcript)
            let text = transcript.map { "\($0.direction.rawValue): \($0.text)" }.joined(separator: "\n")
            #expect(text.contains("C: MAIL FROM:<a@b.example>"))
            #expect(text.contains("S: 235 2.7.0"))
            #expect(!text.contains("topsecret"))
            #expect(!text.contains(Data("\0alice\0topsecret".utf8).base64EncodedString()))
            #expect(!text.contains(Data("topsecret".utf8).base64EncodedString()))
        }
    }

    @Test("--discard keeps metadata but no body")
    func discard() async throws {
        try await withSink({ $0.discardBodies = true }) { sink in
            let result = try await python(
                """
                import smtplib
                with smtplib.SMTP('127.0.0.1', PORT, timeout=10) as s:
                    s.sendmail('a@b.example', ['c@d.example'], MESSAGE.encode())
                """, port: sink.smtpAddress.port, env: ["MESSAGE": Self.message])
            Self.expectSuccess(result)
            let messages = sink.store.messages()
            try #require(messages.count == 1)
            #expect(messages[0].bodyStored == false)
            #expect(messages[0].size == Self.message.utf8.count)
            #expect(try await sink.store.raw(id: messages[0].id) == nil)
        }
    }
}
