import Foundation
import MailMessage
import Testing

@Suite("Captured metadata as JSON")
struct CapturedMessageJSONTests {
    static func message(tls: TLSInfo?, authUser: String?, traceID: String?, replySent: Int64?) -> CapturedMessage {
        CapturedMessage(
            id: "01J0000000000000000000001",
            envelope: Envelope(
                mailFrom: "a\"quote\\back@x.example",
                mailParameters: ["SIZE": "123", "BODY": "8BITMIME"],
                recipients: [.init(address: "ü@例え.jp", parameters: ["NOTIFY": "NEVER"]), .init(address: "b@x.example")]
            ),
            session: SessionInfo(
                id: "s1", remoteAddress: "127.0.0.1:5000", localAddress: "127.0.0.1:1025",
                helo: "tab\there\u{1}ctl\nnewline", esmtp: true, tls: tls, authUser: authUser),
            timestamps: CaptureTimestamps(connectedNanos: 1, mailNanos: -2, dataStartNanos: Int64.max, dataEndNanos: 4, replySentNanos: replySent),
            size: 4096, receivedHeaderLength: 120, anomalies: ["bare-lf"], faults: [], traceID: traceID, bodyStored: false
        )
    }

    @Test("the direct writer's JSON decodes to the same message as JSONEncoder's", arguments: [false, true])
    func roundTrip(optionals: Bool) throws {
        let message = Self.message(
            tls: optionals ? TLSInfo(version: "TLSv1.3", cipher: nil, implicit: true) : nil,
            authUser: optionals ? "job\"42" : nil, traceID: optionals ? "run/1" : nil, replySent: optionals ? 99 : nil
        )
        let direct = try JSONDecoder().decode(CapturedMessage.self, from: message.jsonData())
        #expect(direct == message)
        let viaFoundation = try JSONDecoder().decode(CapturedMessage.self, from: JSONEncoder().encode(message))
        #expect(direct == viaFoundation)
        #expect(!String(decoding: try message.jsonData(), as: UTF8.self).contains("\n"))
    }

    @Test("a message with a transcript still encodes (through JSONEncoder)")
    func transcript() throws {
        var message = Self.message(tls: nil, authUser: nil, traceID: nil, replySent: nil)
        message.transcript = [TranscriptEntry(nanos: 5, direction: .client, text: "EHLO x")]
        #expect(try JSONDecoder().decode(CapturedMessage.self, from: message.jsonData()) == message)
    }

    @Test("JSONWriter escapes quotes, backslashes and control characters wherever they fall, and keeps the rest byte for byte")
    func writerEscapes() throws {
        let samples = [
            "", "plain", "\"", "\\", "a\"b\\c", "\u{0}\u{1f}\t\r\n", "end\n", "\nstart", "héllo ✉︎ 日本",
            String(repeating: "x", count: 300) + "\"" + String(repeating: "y", count: 300),
        ]
        for sample in samples {
            var writer = JSONWriter()
            writer.array([sample]) { $0.string($1) }
            let decoded = try JSONSerialization.jsonObject(with: Data(writer.bytes)) as? [String]
            #expect(decoded == [sample])
            #expect(!writer.bytes.contains { $0 < 0x20 })
        }
    }

    @Test("JSONWriter writes integers as Foundation reads them, from Int64.min to Int64.max")
    func writerNumbers() throws {
        let samples: [Int64] = [0, 1, 9, 10, 99, 100, -1, -10, 1_733_580_000_123_456_789, .max, .min, .min + 1]
        var writer = JSONWriter()
        writer.array(samples) { $0.number($1) }
        #expect(String(decoding: writer.bytes, as: UTF8.self) == "[" + samples.map(String.init).joined(separator: ",") + "]")
    }

    @Test("messages written into one buffer make the lines jsonData() makes, one after another")
    func sharedBuffer() throws {
        var first = Self.message(tls: nil, authUser: nil, traceID: nil, replySent: nil)
        let second = Self.message(tls: TLSInfo(version: "TLSv1.3", cipher: "x", implicit: false), authUser: "u", traceID: "t", replySent: 5)
        var lines = JSONWriter(capacity: 16)
        for message in [first, second] {
            #expect(message.writeJSON(into: &lines))
            lines.newline()
        }
        let expected = try [first, second].map { String(decoding: try $0.jsonData(), as: UTF8.self) + "\n" }.joined()
        #expect(String(decoding: lines.bytes, as: UTF8.self) == expected)
        first.transcript = [TranscriptEntry(nanos: 5, direction: .client, text: "EHLO x")]
        let before = lines.bytes.count
        #expect(!first.writeJSON(into: &lines))
        #expect(lines.bytes.count == before)
    }
}
