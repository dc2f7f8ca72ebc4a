import Benchmark
import Foundation
import MailMessage
import NIOCore
import SMTPProtocol

// The per-message work on the sink's event loop, one message (or one command) per iteration:
// what `Benchmarks/peer-compare.py` measures as a whole, taken apart. Malloc counts are the
// figures to watch: they do not move with the machine.

let commands = [
    "EHLO client.example", "MAIL FROM:<no-reply@bank.example> SIZE=1024 BODY=8BITMIME",
    "RCPT TO:<alice+job42@example.com>", "DATA", "RSET", "QUIT",
]
let commandBuffers = commands.map { ByteBuffer(string: $0) }

/// A 1 KiB OTP mail as it arrives after `354`, dot-stuffed, with the final dot.
let message: ByteBuffer = {
    var text = "From: Bank <no-reply@bank.example>\r\nTo: alice@example.com\r\nSubject: Your login code is 482913\r\n"
    text += "Message-ID: <run.1@swallow.load>\r\nX-Swallow-Trace: run/1\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n"
    while text.utf8.count < 1000 { text += "Your code is 482913. It expires in 5 minutes.\r\n..a dot-stuffed line\r\n" }
    return ByteBuffer(string: text + ".\r\n")
}()

/// 200 KiB after `354`, with the final dot: lines of `line` repeated (the scan for line-start
/// dots meets no dot in base64 lines, one or more in every line of prose).
func largeMessage(_ line: String) -> ByteBuffer {
    var buffer = ByteBuffer()
    while buffer.readableBytes < 200 * 1024 { buffer.writeString(line + "\r\n") }
    buffer.writeString(".\r\n")
    return buffer
}
let base64Message = largeMessage("JVBERi0xLjQKJcfsj6IKNSAwIG9iago8PC9MZW5ndGggNiAwIFIvRmlsdGVyIC9GbGF0ZURlY29kZT4+")
let proseMessage = largeMessage("The invoice for March is attached. Please pay it by the 31st. Thanks, example.com.")

let corpusInvoice: [UInt8] = {
    let path = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent().deletingLastPathComponent().appendingPathComponent("shared/corpus/03-invoice-pdf.eml").path
    return (FileManager.default.contents(atPath: path).map(Array.init)) ?? Array(message.readableBytesView)
}()

let benchmarks: @Sendable () -> Void = {
    Benchmark.defaultConfiguration = .init(metrics: [.wallClock, .mallocCountTotal, .instructions], maxDuration: .seconds(2))

    Benchmark("nothing (the harness's own cost per iteration)") { benchmark in
        for _ in benchmark.scaledIterations { blackHole(0) }
    }

    Benchmark("parse six commands") { benchmark in
        for _ in benchmark.scaledIterations {
            for line in commandBuffers { blackHole(try? SMTPCommand.parse(line)) }
        }
    }

    Benchmark("frame a 1 KiB message (DATA, unstuffing)") { benchmark in
        for _ in benchmark.scaledIterations {
            var decoder = SMTPFrameDecoder(mode: .message)
            var buffer = message
            while let frame = decoder.next(&buffer) { blackHole(frame) }
        }
    }

    Benchmark("frame a 200 KiB message of base64 lines") { benchmark in
        for _ in benchmark.scaledIterations {
            var decoder = SMTPFrameDecoder(mode: .message)
            var buffer = base64Message
            while let frame = decoder.next(&buffer) { blackHole(frame) }
        }
    }

    Benchmark("frame a 200 KiB message of prose") { benchmark in
        for _ in benchmark.scaledIterations {
            var decoder = SMTPFrameDecoder(mode: .message)
            var buffer = proseMessage
            while let frame = decoder.next(&buffer) { blackHole(frame) }
        }
    }

    Benchmark("encode the replies of one transaction") { benchmark in
        let replies = [
            SMTPReply(250, "2.1.0", "Sender ok"), SMTPReply(250, "2.1.5", "Recipient ok"),
            SMTPReply(354, nil, "End data with <CR><LF>.<CR><LF>"), SMTPReply(250, "2.0.0", "Ok: queued as 01J0000000000000"),
        ]
        var buffer = ByteBufferAllocator().buffer(capacity: 256)
        for _ in benchmark.scaledIterations {
            buffer.clear()
            for reply in replies { blackHole(buffer.writeSMTPReply(reply)) }
        }
    }

    Benchmark("anomaly scan and trace header of a 1 KiB message") { benchmark in
        for _ in benchmark.scaledIterations {
            blackHole(MessageAnomalies.scan(message, eightBitDeclared: false))
            message.withUnsafeReadableBytes { blackHole(HeaderLookup.firstValue(named: "X-Swallow-Trace", in: $0)) }
        }
    }

    Benchmark("parse the invoice (MIME, PDF attachment) and summarise it") { benchmark in
        let captured = CapturedMessage(
            id: "01J0000000000000", envelope: Envelope(mailFrom: "billing@shop.example", recipients: [.init(address: "carol@example.com")]),
            session: SessionInfo(
                id: "s1", remoteAddress: "127.0.0.1:5000", localAddress: "127.0.0.1:1025", helo: "c", esmtp: true, tls: nil, authUser: nil),
            timestamps: CaptureTimestamps(connectedNanos: 1, mailNanos: 2, dataStartNanos: 3, dataEndNanos: 4), size: corpusInvoice.count,
            receivedHeaderLength: 0
        )
        for _ in benchmark.scaledIterations {
            let summary = MessageSummary(captured: captured, parsed: ParsedMessage(bytes: corpusInvoice))
            blackHole(summary.jsonData())
        }
    }

    Benchmark("capture metadata as JSON") { benchmark in
        let captured = CapturedMessage(
            id: "01J0000000000000",
            envelope: Envelope(
                mailFrom: "no-reply@bank.example", mailParameters: ["SIZE": "1024"],
                recipients: [.init(address: "alice@example.com")]),
            session: SessionInfo(
                id: "s1", remoteAddress: "127.0.0.1:5000", localAddress: "127.0.0.1:1025", helo: "c", esmtp: true, tls: nil, authUser: nil),
            timestamps: CaptureTimestamps(connectedNanos: 1, mailNanos: 2, dataStartNanos: 3, dataEndNanos: 4), size: 1024,
            receivedHeaderLength: 120, traceID: "run/1"
        )
        for _ in benchmark.scaledIterations { blackHole(try? captured.jsonData()) }
    }
}
