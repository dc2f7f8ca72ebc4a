import Foundation
import MailMessage
import NIOCore
import SinkServer
import SwallowTestSupport
import Testing

/// Captured mail served over HTTP is data, never a page of ours; names from mail are
/// sanitised where they enter a header; the live rule set round-trips; MailHog's v1 message
/// routes answer; storage failures are reported, not hidden. Real HTTP on loopback.
@Suite(
    "Hostile content over HTTP", .timeLimit(.minutes(4)),
    .enabled(if: Peers.available("curl", "python3"), Comment(rawValue: Peers.reason("curl", "python3"))))
struct HostileContentTests {
    /// A message built to attack whoever opens it: script in its HTML, an HTML attachment,
    /// and attachment names that try path traversal, header injection and control characters.
    static let hostileMessage = [
        "From: attacker@evil.example", "To: victim@x.example", "Subject: hostile", "MIME-Version: 1.0",
        "Content-Type: multipart/mixed; boundary=\"B\"", "",
        "--B", "Content-Type: text/html; charset=utf-8", "",
        "<p>hi</p><script>fetch('/api/v1/messages',{method:'DELETE'})</script><img src=x onerror=\"alert(1)\">",
        "--B", "Content-Type: text/html; name=\"page.html\"", "Content-Disposition: attachment; filename=\"page.html\"", "",
        "<script>alert(document.domain)</script>",
        "--B", "Content-Type: application/octet-stream", "Content-Disposition: attachment; filename=\"../../.ssh/authorized_keys\"", "",
        "ssh-rsa AAAA",
        "--B", "Content-Type: application/octet-stream", "Content-Disposition: attachment; filename=\"/etc/shadow\"", "",
        "root:x",
        "--B", "Content-Type: application/octet-stream", "Content-Disposition: attachment; filename=\"..\\\\..\\\\win.ini\"", "",
        "[x]",
        "--B", "Content-Type: text/plain", "Content-Disposition: attachment; filename*=UTF-8''a%0D%0AX-Injected%3A%20yes", "",
        "crlf",
        "--B", "Content-Type: text/plain", "Content-Disposition: attachment; filename*=UTF-8''nul%00name%07.txt", "",
        "nul",
        "--B", "Content-Type: application/pdf", "Content-Disposition: attachment; filename*=UTF-8''r%C3%A9sum%C3%A9%22.pdf", "",
        "%PDF-1.4",
        "--B", "Content-Type: text/plain",
        "Content-Disposition: attachment; filename*0*=UTF-8''..%2F..%2F; filename*1=\"etc/passwd\"", "",
        "continued",
        "--B--", "",
    ].joined(separator: "\r\n")

    static func sendHostile(port: Int) async throws {
        let result = try await python(
            "import smtplib\nwith smtplib.SMTP('127.0.0.1', PORT, timeout=10) as s:\n    s.sendmail('attacker@evil.example', ['victim@x.example'], MESSAGE.encode())\n",
            port: port, env: ["MESSAGE": hostileMessage]
        )
        #expect(result.status == 0, "\(result.stderr)")
    }

    /// Runs a Python check with `BASE` (the HTTP base URL) and a `get(path)` helper returning
    /// (status, headers as a dict of lower-case names to lists, body bytes).
    static func check(_ script: String, base: String) async throws {
        let prelude = """
            import json, urllib.request, urllib.error
            def get(path, method='GET', body=None):
                request = urllib.request.Request(BASE + path, method=method, data=body)
                try:
                    response = urllib.request.urlopen(request, timeout=10)
                except urllib.error.HTTPError as error:
                    response = error
                headers = {}
                for name, value in response.headers.items():
                    headers.setdefault(name.lower(), []).append(value)
                return response.status, headers, response.read()

            """
        let result = try await run(["python3", "-c", "BASE = '\(base)'\n" + prelude + script])
        #expect(result.status == 0, "\(result.stdout)\(result.stderr)")
    }

    @Test("every response carrying captured content is sandboxed by CSP and nosniff; raw is text, parts are downloads")
    func sandboxed() async throws {
        try await withSinkApplication { sink, base in
            try await Self.sendHostile(port: sink.smtpAddress.port)
            let id = try #require(sink.store.messages().last?.id)
            try await Self.check(
                """
                ID = '\(id)'
                message = json.loads(get('/api/v1/message/' + ID)[2])
                html_part = [a for a in message['Attachments'] if a['FileName'] == 'page.html'][0]['PartID']
                paths = ['/view/' + ID + '.html', '/view/' + ID + '.txt', '/view/latest', '/api/v1/message/' + ID + '/raw',
                         '/api/v1/message/' + ID + '/raw?dl=1', '/api/v1/message/' + ID + '/part/' + html_part,
                         '/api/v1/messages/' + ID + '/download', '/api/v1/messages/' + ID + '/mime/part/1/download']
                for path in paths:
                    status, headers, body = get(path)
                    assert status == 200, (path, status)
                    csp = headers.get('content-security-policy', [''])[0]
                    for directive in ['sandbox', "default-src 'none'"]:
                        assert directive in csp, (path, csp)
                    assert 'allow-scripts' not in csp and 'allow-same-origin' not in csp, (path, csp)
                    assert headers.get('x-content-type-options') == ['nosniff'], (path, headers)
                # The mail's own script is in the HTML view: the policy is what stops it.
                assert b'<script>' in get('/view/' + ID + '.html')[2]
                status, headers, _ = get('/api/v1/message/' + ID + '/raw')
                assert headers['content-type'][0].startswith('text/plain'), headers
                status, headers, body = get('/api/v1/message/' + ID + '/part/' + html_part)
                assert headers['content-disposition'][0].startswith('attachment'), headers
                assert body == b'<script>alert(document.domain)</script>', body
                status, headers, _ = get('/api/v1/messages/' + ID + '/download')
                assert headers['content-disposition'][0].startswith('attachment'), headers
                """, base: base)
        }
    }

    @Test("attachment names enter Content-Disposition without separators, control characters or leading dots; JSON keeps them")
    func attachmentNames() async throws {
        try await withSinkApplication { sink, base in
            try await Self.sendHostile(port: sink.smtpAddress.port)
            let id = try #require(sink.store.messages().last?.id)
            try await Self.check(
                """
                import re, urllib.parse
                ID = '\(id)'
                message = json.loads(get('/api/v1/message/' + ID)[2])
                names = {a['FileName']: a['PartID'] for a in message['Attachments']}
                # The JSON keeps the names as the mail gave them.
                for original in ['../../.ssh/authorized_keys', '/etc/shadow', 'a\\r\\nX-Injected: yes', 'résumé".pdf', '../../etc/passwd']:
                    assert original in names, (original, list(names))
                assert any(name.startswith('nul\\x00name') for name in names), list(names)
                for original, part in names.items():
                    status, headers, _ = get('/api/v1/message/' + ID + '/part/' + part)
                    assert status == 200, (original, status)
                    assert 'x-injected' not in headers, (original, headers)
                    values = headers['content-disposition']
                    assert len(values) == 1, values
                    value = values[0]
                    assert value.startswith('attachment; filename="'), value
                    fallback = re.match(r'attachment; filename="([^"]*)"', value).group(1)
                    star = re.search(r"filename\\*=UTF-8''([^;]*)", value)
                    candidates = [fallback] + ([urllib.parse.unquote(star.group(1))] if star else [])
                    for name in candidates:
                        assert name, value
                        assert '/' not in name and '\\\\' not in name, (original, value)
                        assert not name.startswith('.'), (original, value)
                        assert not any(ord(c) < 32 or 127 <= ord(c) < 160 for c in name), (original, value)
                    assert all(32 <= ord(c) < 127 for c in fallback), value
                    if original.startswith('résumé'):
                        assert star and urllib.parse.unquote(star.group(1)) == 'résumé".pdf', value
                """, base: base)
        }
    }

    @Test("what GET /api/v1/faults returns, PUT accepts unchanged")
    func faultsRoundTrip() async throws {
        try await withSinkApplication { _, base in
            try await Self.check(
                """
                rules = {'seed': 7, 'rules': [
                    {'name': 'slow', 'match': {'phase': 'rcpt', 'recipient': '*@slow.example'}, 'action': {'delay': '10ms'}, 'times': 5},
                    {'name': 'flaky', 'match': {'phase': 'data-end'}, 'probability': 0.5, 'action': {'reply': {'code': 451, 'enhanced': '4.3.0', 'text': 'Later'}}}]}
                assert get('/api/v1/faults', 'PUT', json.dumps(rules).encode())[0] == 200
                assert get('/api/v1/faults/next', 'POST', json.dumps({'count': 2, 'rule': {'match': {'phase': 'mail'}, 'action': {'reply': '451 4.3.0 Next'}}}).encode())[0] == 201
                before = get('/api/v1/faults')[2]
                document = json.loads(before)
                for key in ['next', 'compat', 'fired']:
                    assert key in document, document
                assert 'fired' in document['rules'][0], document
                status, _, body = get('/api/v1/faults', 'PUT', before)
                assert status == 200, (status, body)
                after = json.loads(get('/api/v1/faults')[2])
                assert after['seed'] == document['seed']
                assert [r['name'] for r in after['rules']] == ['slow', 'flaky'], after
                assert after['rules'][0]['match'] == document['rules'][0]['match']
                # A negative seed (as a 64-bit pattern) is taken, not a crash.
                assert get('/api/v1/faults', 'PUT', b'{"seed": -1, "rules": []}')[0] == 200
                assert json.loads(get('/api/v1/faults')[2])['seed'] == -1
                # Unknown keys are still refused.
                status, _, body = get('/api/v1/faults', 'PUT', b'{"rules": [], "bogus": 1}')
                assert status == 400 and b'bogus' in body, (status, body)
                """, base: base)
        }
    }

    @Test("MailHog's v1 message routes: get, download, delete")
    func mailHogV1() async throws {
        try await withSinkApplication { sink, base in
            try await HTTPAPITests.send(["03-invoice-pdf.eml"], port: sink.smtpAddress.port)
            let id = try #require(sink.store.messages().last?.id)
            let raw = String(buffer: try #require(try await sink.store.raw(id: id)))
            try await Self.check(
                """
                ID = '\(id)'
                status, headers, body = get('/api/v1/messages/' + ID)
                assert status == 200, status
                message = json.loads(body)
                assert message['ID'] == ID
                assert message['From']['Domain'] == 'bank.example', message['From']
                assert message['Content']['Headers']['Subject'] == ['Invoice INV-2026-0042'], message['Content']['Headers']
                assert message['Raw']['From'] == 'app@bank.example'
                assert message['MIME'] and len(message['MIME']['Parts']) >= 2
                status, headers, body = get('/api/v1/messages/' + ID + '/download')
                assert status == 200 and headers['content-type'][0].startswith('message/rfc822'), headers
                assert body == RAW.encode(), 'download is the stored message'
                assert get('/api/v1/messages/' + ID, 'DELETE')[0] == 200
                assert get('/api/v1/messages/' + ID)[0] == 404
                assert get('/api/v1/messages/nope', 'DELETE')[0] == 404
                """.replacingOccurrences(of: "RAW.encode()", with: "bytes.fromhex('\(Data(raw.utf8).map { String(format: "%02x", $0) }.joined())')"),
                base: base)
            #expect(sink.store.count == 0)
        }
    }

    @Test("a failing index is logged, answered 500 naming it, and shown as degraded in stats and metrics")
    func storageErrors() async throws {
        let directory = try temporaryDirectory()
        try await withSinkApplication({ $0.dataDirectory = directory }) { sink, base in
            try await HTTPAPITests.send(["01-otp-plain.eml"], port: sink.smtpAddress.port)
            try await Self.check(
                """
                assert get('/api/v1/messages')[0] == 200
                stats = json.loads(get('/api/v1/stats')[2])
                assert stats['degraded'] is None, stats
                import sqlite3
                db = sqlite3.connect('\(directory)/index.sqlite')
                db.execute('DROP TABLE message')
                db.commit()
                status, _, body = get('/api/v1/messages')
                assert status == 500, (status, body)
                assert b'index' in body, body
                status, _, body = get('/api/v1/search?query=subject:code')
                assert status == 500, (status, body)
                stats = json.loads(get('/api/v1/stats')[2])
                assert stats['degraded'] and 'index' in stats['degraded'], stats
                assert stats['storageErrors']['index'] >= 2, stats
                metrics = get('/metrics')[2].decode()
                assert 'swallow_storage_degraded 1' in metrics, metrics
                assert 'swallow_storage_errors_total{component="index"}' in metrics
                """, base: base)
        }
    }
}
