import SMTPClient
import Testing

@testable import SinkServer

/// `--relay` / `--upstream` URLs: what they mean, and what a bad one is told.
@Suite("Upstream URLs")
struct UpstreamTests {
    @Test("Defaults: STARTTLS when offered, certificates verified, no credentials")
    func defaults() throws {
        let upstream = try Upstream(url: "smtp://mail.example.com:587")
        #expect(upstream.host == "mail.example.com" && upstream.port == 587)
        #expect(upstream.tls == .starttls && upstream.tlsOptional && upstream.verify)
        #expect(upstream.user == nil && upstream.password == nil)
        let settings = upstream.clientSettings(helo: "sink.example", timeout: 30)
        #expect(settings.tls == .starttls && settings.tlsOptional && settings.verifyCertificate && settings.auth == nil)
    }

    @Test("Credentials (percent-decoded), tls and verify, IPv6 literals; the description never shows the password")
    func parts() throws {
        let upstream = try Upstream(url: "smtp://relay%40corp:p%3Ass@[::1]:2525?tls=implicit&verify=false")
        #expect(upstream.host == "::1" && upstream.port == 2525)
        #expect(upstream.user == "relay@corp" && upstream.password == "p:ss")
        #expect(upstream.tls == .implicit && !upstream.tlsOptional && !upstream.verify)
        #expect(upstream.description == "smtp://relay@corp@[::1]:2525")
        #expect(upstream.clientSettings(helo: "h", timeout: 5).auth?.password == "p:ss")
        #expect(try Upstream(url: "SMTP://h:25/?tls=none").tls == .none)
    }

    @Test(
        "A bad URL names the part at fault and never echoes the password",
        arguments: [
            ("smtp://h", "port"), ("smtp://h:0", "port"), ("smtp://h:70000", "port"), ("smtp://h:x", "port"),
            ("https://h:25", "scheme"), ("h:25", "smtp://"), ("smtp://:25", "host"), ("smtp://h:25?tls=maybe", "tls"),
            ("smtp://h:25?verify=no", "verify"), ("smtp://h:25?mode=x", "unknown parameter"), ("smtp://h:25/path", "path"),
            ("smtp://user@h:25", "user"), ("smtp://[::1:25", "IPv6"), ("smtp://u:secret%zz@h:25", "password"),
        ])
    func invalid(url: String, part: String) {
        #expect {
            try Upstream(url: url)
        } throws: { error in
            let text = "\(error)"
            return text.contains(part) && !text.contains("secret")
        }
    }

    @Test("Allow and deny lists: deny wins, an empty allow list allows all; auto-relay's recipients")
    func permits() throws {
        var settings = RelaySettings()
        settings.upstream = try Upstream(url: "smtp://h:25")
        settings.allow = [try FaultPattern("*@example.com"), try FaultPattern("~^ops@")]
        settings.deny = [try FaultPattern("ceo@example.com")]
        #expect(settings.permits("jane@example.com"))
        #expect(settings.permits("ops@partner.example"))
        #expect(!settings.permits("ceo@example.com"))
        #expect(!settings.permits("jane@other.example"))
        #expect(settings.autoRecipients(["jane@example.com"]).isEmpty, "no auto-relay without --relay-all or --relay-matching")
        settings.all = true
        #expect(settings.autoRecipients(["jane@example.com", "ceo@example.com", "x@y.example"]) == ["jane@example.com"])
        settings.all = false
        settings.matching = try FaultPattern("~^jane@")
        #expect(settings.autoRecipients(["jane@example.com", "joe@example.com"]) == ["jane@example.com"])
    }
}
