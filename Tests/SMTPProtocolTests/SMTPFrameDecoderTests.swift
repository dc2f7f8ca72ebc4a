import NIOCore
import NIOTestUtils
import SMTPProtocol
import Testing

@Suite("Framing: command lines, DATA, BDAT")
struct SMTPFrameDecoderTests {
    // MARK: Command mode

    @Test("command lines are cut at CRLF however the bytes arrive")
    func verifier() throws {
        func line(_ text: String) -> SMTPFrame { .line(ByteBuffer(string: text)) }
        try ByteToMessageDecoderVerifier.verifyDecoder(
            stringInputOutputPairs: [
                ("EHLO a.example\r\n", [line("EHLO a.example")]),
                (
                    "MAIL FROM:<a@b.example>\r\nRCPT TO:<c@d.example>\r\nDATA\r\n",
                    [
                        line("MAIL FROM:<a@b.example>"), line("RCPT TO:<c@d.example>"), line("DATA"),
                    ]
                ),
                ("\r\n", [line("")]),
                ("NOOP\n", [.invalidLine(.bareLineEnding)]),
            ],
            decoderFactory: { SMTPFrameDecoder() }
        )
    }

    @Test("a line without CRLF is reported once past the limit and discarded, memory bounded")
    func hugeLine() {
        var decoder = SMTPFrameDecoder(maxLineBytes: 512)
        var buffer = ByteBuffer()
        var frames: [SMTPFrame] = []
        // 2 MB in 64 KiB pieces, never a CRLF.
        for _ in 0..<32 {
            buffer.writeRepeatingByte(UInt8(ascii: "x"), count: 64 * 1024)
            while let frame = decoder.next(&buffer) { frames.append(frame) }
            #expect(buffer.readableBytes <= 512, "the decoder must not keep the oversized line")
        }
        #expect(frames == [.invalidLine(.lineTooLong(limit: 512))])
        buffer.writeString("xxx\r\nNOOP\r\n")
        while let frame = decoder.next(&buffer) { frames.append(frame) }
        #expect(frames == [.invalidLine(.lineTooLong(limit: 512)), .line(ByteBuffer(string: "NOOP"))])
    }

    @Test("a complete line over the limit is rejected")
    func completeLongLine() {
        var decoder = SMTPFrameDecoder(maxLineBytes: 16)
        var buffer = ByteBuffer(string: "NOOP 0123456789012\r\nQUIT\r\n")
        #expect(decoder.next(&buffer) == .invalidLine(.lineTooLong(limit: 16)))
        #expect(decoder.next(&buffer) == .line(ByteBuffer(string: "QUIT")))
    }

    // MARK: DATA

    /// Feeds `input` to a decoder in message mode, split into pieces at `splits`, and returns
    /// the joined message bytes, whether the end was seen, and what is left for command mode.
    static func decodeMessage(_ input: [UInt8], splits: [Int]) -> (body: [UInt8], ended: Bool, rest: [UInt8]) {
        var decoder = SMTPFrameDecoder(mode: .message)
        var buffer = ByteBuffer()
        var body: [UInt8] = []
        var ended = false
        var start = 0
        for end in splits + [input.count] where end >= start {
            buffer.writeBytes(input[start..<end])
            start = end
            while !ended, let frame = decoder.next(&buffer) {
                switch frame {
                case .messageChunk(let chunk): body += chunk.readableBytesView
                case .messageEnd: ended = true
                default: Issue.record("unexpected frame \(frame)")
                }
            }
        }
        return (body, ended, Array(buffer.readableBytesView))
    }

    @Test(
        "DATA is unstuffed and ended by CRLF.CRLF at every split point",
        arguments: [
            ("Subject: x\r\n\r\nHello\r\n.\r\nQUIT\r\n", "Subject: x\r\n\r\nHello\r\n", "QUIT\r\n"),
            ("..leading dot\r\n...two\r\n.\r\n", ".leading dot\r\n..two\r\n", ""),
            (".\r\n", "", ""),
            ("a\r\n.b\r\n.\r\n", "a\r\nb\r\n", ""),
            ("bare\nLF.\n.\nstill data\r\n.\r\n", "bare\nLF.\n.\nstill data\r\n", ""),
            ("bare\r.\r\nCR\r\n.\r\n", "bare\r.\r\nCR\r\n", ""),
            ("smuggle\r\n.\nMAIL FROM:<x@y>\r\n.\r\n", "smuggle\r\n\nMAIL FROM:<x@y>\r\n", ""),
            ("end.\r\n\r\n.\r\n", "end.\r\n\r\n", ""),
        ])
    func messageMode(_ input: String, _ expected: String, _ rest: String) {
        let bytes = Array(input.utf8)
        for split in 0...bytes.count {
            let result = Self.decodeMessage(bytes, splits: [split])
            #expect(result.ended, "split at \(split)")
            #expect(String(decoding: result.body, as: UTF8.self) == expected, "split at \(split)")
            #expect(String(decoding: result.rest, as: UTF8.self) == rest, "split at \(split)")
        }
        let byteByByte = Self.decodeMessage(bytes, splits: Array(0...bytes.count))
        #expect(String(decoding: byteByByte.body, as: UTF8.self) == expected)
    }

    /// The data of `input` read a byte at a time by RFC 5321 §4.5.2: a line begins after CRLF
    /// only; a dot beginning a line is removed, and `.` CRLF alone ends the data.
    static func unstuffed(_ input: [UInt8]) -> (body: [UInt8], ended: Bool, rest: [UInt8]) {
        var body: [UInt8] = []
        var lineStart = true
        var index = 0
        while index < input.count {
            if lineStart && input[index] == UInt8(ascii: ".") {
                if index + 2 < input.count && input[index + 1] == 13 && input[index + 2] == 10 {
                    return (body, true, Array(input[(index + 3)...]))
                }
                index += 1
                lineStart = false
                continue
            }
            body.append(input[index])
            lineStart = input[index] == 10 && index > 0 && input[index - 1] == 13
            index += 1
        }
        return (body, false, [])
    }

    @Test("the data read in pieces cut anywhere is the data read a byte at a time, on random messages with dots, CRs and LFs")
    func messageModeAgreesWithByteReading() {
        var random = SystemRandomNumberGenerator()
        let alphabet = Array("...\r\n\nab".utf8)
        for round in 0..<3000 {
            let length = round % 10 == 0 ? Int.random(in: 0..<2000, using: &random) : Int.random(in: 0..<60, using: &random)
            let input = (0..<length).map { _ in alphabet.randomElement(using: &random)! } + Array("\r\n.\r\nQUIT\r\n".utf8)
            let cuts = (0..<Int.random(in: 0..<6, using: &random)).map { _ in Int.random(in: 0...input.count, using: &random) }.sorted()
            let expected = Self.unstuffed(input)
            let result = Self.decodeMessage(input, splits: cuts)
            #expect(result.ended == expected.ended && result.body == expected.body && result.rest == expected.rest, "\(input) cut at \(cuts)")
        }
    }

    @Test("without CRLF.CRLF the message never ends, and the decoder holds back at most four bytes")
    func endlessData() {
        var decoder = SMTPFrameDecoder(mode: .message)
        var buffer = ByteBuffer()
        var total = 0
        for _ in 0..<100 {
            buffer.writeString(String(repeating: "line\r\n.x\n.\r.", count: 100) + "\r\n.")
            while let frame = decoder.next(&buffer) {
                guard case .messageChunk(let chunk) = frame else {
                    Issue.record("unexpected \(frame)")
                    return
                }
                total += chunk.readableBytes
            }
            #expect(buffer.readableBytes <= 4)
        }
        #expect(total > 100_000)
    }

    // MARK: BDAT

    @Test("a BDAT chunk is the next n bytes, raw, then command mode again")
    func chunkMode() {
        var decoder = SMTPFrameDecoder()
        decoder.mode = .chunk(remaining: 10)
        var buffer = ByteBuffer(string: "0123.\r\n")
        #expect(decoder.next(&buffer) == .chunkData(ByteBuffer(string: "0123.\r\n"), complete: false))
        #expect(decoder.next(&buffer) == nil)
        buffer.writeString("789QUIT\r\n")
        #expect(decoder.next(&buffer) == .chunkData(ByteBuffer(string: "789"), complete: true))
        #expect(decoder.mode == .command)
        #expect(decoder.next(&buffer) == .line(ByteBuffer(string: "QUIT")))
    }

    // MARK: Dot-stuffing on send

    @Test(
        "dot-stuffing then decoding gives back the message",
        arguments: [
            "Subject: a\r\n\r\n.hidden\r\n..two\r\n.\r\nend\r\n",
            "no final newline.",
            ".",
            "",
            "bare\n.lf and\r.cr\r\n",
        ])
    func stuffingRoundTrip(_ message: String) {
        var wire = ByteBuffer()
        wire.writeDotStuffedMessage(ByteBuffer(string: message))
        let result = Self.decodeMessage(Array(wire.readableBytesView), splits: [])
        #expect(result.ended)
        var expected = message
        if !expected.isEmpty && !expected.hasSuffix("\r\n") { expected += "\r\n" }
        #expect(String(decoding: result.body, as: UTF8.self) == expected)
        #expect(result.rest.isEmpty)
    }

    @Test("dot-stuffing doubles exactly the dots that begin a line, in random messages too")
    func stuffingExact() {
        var wire = ByteBuffer()
        wire.writeDotStuffedMessage(ByteBuffer(string: ".a\r\nb.c\r\n.\r\n\r\n..d\r.e\n.f"))
        #expect(String(buffer: wire) == "..a\r\nb.c\r\n..\r\n\r\n...d\r.e\n.f\r\n.\r\n")
        var random = SystemRandomNumberGenerator()
        let alphabet = Array("..\r\nab".utf8)
        for _ in 0..<500 {
            let message = (0..<Int.random(in: 0..<40, using: &random)).map { _ in alphabet.randomElement(using: &random)! }
            var wire = ByteBuffer()
            wire.writeDotStuffedMessage(ByteBuffer(bytes: message))
            let result = Self.decodeMessage(Array(wire.readableBytesView), splits: [])
            var expected = message
            if !expected.isEmpty && !expected.suffix(2).elementsEqual([13, 10]) { expected += [13, 10] }
            #expect(result.ended && result.body == expected && result.rest.isEmpty, "\(message)")
        }
    }

    @Test("a message dot-stuffed in pieces, cut anywhere, is the message dot-stuffed whole")
    func stuffingInPieces() {
        var random = SystemRandomNumberGenerator()
        let alphabet = Array("..\r\nab".utf8)
        for _ in 0..<1000 {
            let message = (0..<Int.random(in: 0..<40, using: &random)).map { _ in alphabet.randomElement(using: &random)! }
            var whole = ByteBuffer()
            whole.writeDotStuffedMessage(ByteBuffer(bytes: message))
            var cuts = (0..<Int.random(in: 0..<6, using: &random)).map { _ in Int.random(in: 0...message.count, using: &random) }
            cuts = ([0] + cuts.sorted() + [message.count])
            var pieces = ByteBuffer()
            var stuffer = DotStuffer()
            for (start, end) in zip(cuts, cuts.dropFirst()) { stuffer.write(message[start..<end], to: &pieces) }
            stuffer.finish(&pieces)
            #expect(pieces == whole, "\(message) cut at \(cuts)")
        }
    }

    // MARK: Anomalies

    @Test(
        "anomalies in message bytes are found",
        arguments: [
            ("plain\r\nmail\r\n", [String]()),
            ("bare\nlf\r\n", ["bare-lf"]),
            ("bare\rcr\r\n", ["bare-cr"]),
            (String(repeating: "x", count: 999) + "\r\n", ["long-line"]),
            (String(repeating: "x", count: 998) + "\r\n", []),
            ("caf\u{e9}\r\n", ["8bit-without-8bitmime"]),
            ("nul\0\r\n", ["nul"]),
        ])
    func anomalies(_ message: String, _ names: [String]) {
        #expect(MessageAnomalies.scan(ByteBuffer(string: message), eightBitDeclared: false).names == names)
    }

    @Test("the scan agrees with a byte-by-byte reading on random messages, short and past the block counters' flush")
    func anomaliesMatchReference() {
        var generator = SystemRandomNumberGenerator()
        let alphabet: [UInt8] = [UInt8(ascii: "a"), UInt8(ascii: "a"), UInt8(ascii: "a"), 13, 10, 0, 0xE9, 0x7F]
        for round in 0..<400 {
            let length = round < 200 ? Int.random(in: 0...80, using: &generator) : Int.random(in: 4_000...9_000, using: &generator)
            // Some messages with lines near and over the limit, for the exact line pass.
            let lineOdds = round % 3 == 0 ? 300 : 30
            // Mostly clean lines, so each anomaly is also seen alone.
            var bytes: [UInt8] = []
            while bytes.count < length {
                if Int.random(in: 0..<40, using: &generator) == 0 {
                    bytes.append(alphabet.randomElement(using: &generator)!)
                } else if Int.random(in: 0..<lineOdds, using: &generator) == 0 {
                    bytes += [13, 10]
                } else {
                    bytes.append(UInt8(ascii: "x"))
                }
            }
            let maxLine = Int.random(in: 20...400, using: &generator)
            let found = MessageAnomalies.scan(ByteBuffer(bytes: bytes), maxLineBytes: maxLine, eightBitDeclared: false)
            #expect(found == Self.referenceAnomalies(bytes, maxLineBytes: maxLine), "\(bytes)")
        }
    }

    @Test("a long line is found wherever it lies: at the start, in the middle, running into the last bytes", arguments: [0, 1, 7, 15, 16, 17, 31])
    func longLineAtEveryOffset(_ tail: Int) {
        for length in [998, 999] {
            for lead in [0, 5, 37] {
                var bytes = [UInt8](repeating: UInt8(ascii: "x"), count: lead)
                if lead > 0 { bytes += [13, 10] }
                bytes += [UInt8](repeating: UInt8(ascii: "y"), count: length) + [13, 10]
                bytes += [UInt8](repeating: UInt8(ascii: "z"), count: tail)
                let found = MessageAnomalies.scan(ByteBuffer(bytes: bytes), eightBitDeclared: false)
                #expect(found.contains(.longLine) == (length > 998), "lead \(lead), length \(length), tail \(tail)")
                // Unterminated: the long line is the message's end.
                let open = [UInt8](repeating: UInt8(ascii: "x"), count: lead) + [13, 10] + [UInt8](repeating: UInt8(ascii: "y"), count: length)
                let openFound = MessageAnomalies.scan(ByteBuffer(bytes: open), eightBitDeclared: false)
                #expect(openFound.contains(.longLine) == (length > 998), "unterminated, lead \(lead), length \(length)")
            }
        }
    }

    /// Anomalies read one byte at a time, the way the definitions say it.
    static func referenceAnomalies(_ bytes: [UInt8], maxLineBytes: Int) -> MessageAnomalies {
        var found: MessageAnomalies = []
        var lineLength = 0
        for (index, byte) in bytes.enumerated() {
            switch byte {
            case 10:
                let crlf = index > 0 && bytes[index - 1] == 13
                if !crlf { found.insert(.bareLF) }
                if lineLength - (crlf ? 1 : 0) > maxLineBytes { found.insert(.longLine) }
                lineLength = 0
                continue
            case 13:
                if index + 1 == bytes.count || bytes[index + 1] != 10 { found.insert(.bareCR) }
            case 0:
                found.insert(.nul)
            case 0x80...:
                found.insert(.eightBitWithoutDeclaration)
            default:
                break
            }
            lineLength += 1
        }
        if lineLength > maxLineBytes { found.insert(.longLine) }
        return found
    }

    @Test("8-bit bytes are fine when BODY=8BITMIME was declared")
    func eightBitDeclared() {
        #expect(MessageAnomalies.scan(ByteBuffer(string: "caf\u{e9}\r\n"), eightBitDeclared: true).isEmpty)
    }
}
