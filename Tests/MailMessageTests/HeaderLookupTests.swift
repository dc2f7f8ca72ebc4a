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

    @Test("the callback form: the first value of each name once, in the order the fields come; one-line values trimmed")
    func callback() {
        let message = "Subject: \t one \t\r\nMessage-ID: <a@b>\r\nSubject: two\r\nX-Empty:\r\n\r\nX-Late: body\r\n"
        var seen: [(Int, String)] = []
        let names = ["message-id", "subject", "x-empty", "x-late"].map { Array($0.utf8) }
        Array(message.utf8).withUnsafeBytes { bytes in
            HeaderLookup.firstValues(named: names, in: bytes) { seen.append(($0, $1)) }
        }
        #expect(seen.map(\.0) == [1, 0, 2])
        #expect(seen.map(\.1) == ["one", "<a@b>", ""])
        let value = Array(message.utf8).withUnsafeBytes { HeaderLookup.firstValue(named: Array("message-id".utf8), in: $0) }
        #expect(value == "<a@b>")
    }
}
