import MailMessage
import Testing

@Suite("HeaderLookup: header fields at capture time")
struct HeaderLookupTests {
    static func lookup(_ name: String, _ message: String) -> String? {
        Array(message.utf8).withUnsafeBytes { HeaderLookup.firstValue(named: name, in: $0) }
    }

    @Test("finds a field case-insensitively, unfolded and trimmed")
    func found() {
        let message = "Subject: hi\r\nx-swallow-trace:  run-1/\r\n 42 \r\nFrom: a@b\r\n\r\nX-Swallow-Trace: body\r\n"
        #expect(Self.lookup("X-Swallow-Trace", message) == "run-1/ 42")
        #expect(Self.lookup("subject", message) == "hi")
    }

    @Test("stops at the end of the header section")
    func bodyIgnored() {
        #expect(Self.lookup("X-Swallow-Trace", "Subject: hi\r\n\r\nX-Swallow-Trace: body\r\n") == nil)
        #expect(Self.lookup("Subject", "") == nil)
    }

    @Test("a longer field name with the same prefix does not match")
    func prefix() {
        #expect(Self.lookup("X-Swallow-Trace", "X-Swallow-Trace-Id: 1\r\n\r\n") == nil)
    }

    @Test("every field of a name, in order, unfolded and trimmed; not past the header section, not a longer name")
    func allValues() {
        let message = "X-Tags: a, b\r\nSubject: s\r\nx-tags:c\r\n\td \r\nX-Tags-More: no\r\nX-Tags : no\r\nX-TAGS:\r\n\r\nX-Tags: body\r\n"
        let values = Array(message.utf8).withUnsafeBytes { HeaderLookup.allValues(named: Array("x-tags".utf8), in: $0) }
        #expect(values == ["a, b", "c\td", ""])
        let none = Array("Subject: s\n\nX-Tags: body\n".utf8).withUnsafeBytes { HeaderLookup.allValues(named: Array("x-tags".utf8), in: $0) }
        #expect(none.isEmpty)
    }
}
