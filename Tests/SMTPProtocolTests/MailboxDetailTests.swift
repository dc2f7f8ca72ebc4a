import SMTPProtocol
import Testing

/// The one plus-tag parser (RFC 5233 subaddresses): mailboxes, tags and plus-tag faults read it.
@Suite("Mailbox subaddress")
struct MailboxDetailTests {
    @Test(
        "the detail is what follows the first + of the local part",
        arguments: [
            ("app+job42@example.com", "job42"),
            ("app+job42+fail-451@example.com", "job42+fail-451"),
            ("app@example.com", nil),
            ("app+@example.com", nil),
            ("a+b@c+d.example", "b"),
            ("\"a+b\"@example.com", "b\""),
        ] as [(String, String?)])
    func detail(address: String, expected: String?) throws {
        #expect(Mailbox.detail(ofAddress: address).map(String.init) == expected)
    }

    @Test("a parsed mailbox gives the same detail")
    func parsed() throws {
        let mailbox = try Mailbox.parse("app+signup@example.com")
        #expect(mailbox.detail == "signup")
        #expect(try Mailbox.parse("app@example.com").detail == nil)
    }
}
