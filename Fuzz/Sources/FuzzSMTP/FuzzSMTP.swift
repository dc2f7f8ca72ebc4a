import CFuzzDriver
import NIOCore
import SMTPProtocol

/// An SMTP session's client bytes: framed as the server frames them (command lines, DATA after
/// a `DATA` command, `BDAT n` chunks), every line parsed as a command. The first byte picks how
/// the input is cut into reads, so partial lines and split terminators are exercised too.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzSMTP(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = UnsafeBufferPointer(start: data, count: size)
    guard let first = bytes.first else { return 0 }
    let readSize = Int(first % 64) + 1
    var limits = SMTPLimits()
    limits.maxMessageBytes = 64 * 1024
    var decoder = SMTPFrameDecoder(maxLineBytes: limits.maxFrameLineBytes)
    var buffer = ByteBuffer()
    var offset = 1
    var received = 0
    while offset < bytes.count {
        let end = min(bytes.count, offset + readSize)
        buffer.writeBytes(UnsafeBufferPointer(rebasing: bytes[offset..<end]))
        offset = end
        while let frame = decoder.next(&buffer) {
            switch frame {
            case .line(let line):
                guard let command = try? SMTPCommand.parse(line, limits: limits) else { continue }
                switch command {
                case .data: decoder.mode = .message
                case .bdat(let size, _) where size > 0: decoder.mode = .chunk(remaining: size)
                default: break
                }
            case .messageChunk(let chunk), .chunkData(let chunk, _):
                received += chunk.readableBytes
                precondition(received <= bytes.count, "more message bytes out than in")
            case .messageEnd, .invalidLine:
                received = 0
            }
        }
        precondition(buffer.readableBytes <= limits.maxFrameLineBytes + readSize + 8, "the framer buffered without bound")
        buffer.discardReadBytes()
    }
    return 0
}

/// The executable's entry point (SwiftPM names it `FuzzSMTP_main`): libFuzzer's driver.
@_cdecl("FuzzSMTP_main")
public func main(_ argc: CInt, _ argv: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?) -> CInt {
    var argc = argc
    var argv = argv
    return LLVMFuzzerRunDriver(&argc, &argv) { data, size in
        guard let data else { return 0 }
        return fuzzSMTP(data, size)
    }
}
