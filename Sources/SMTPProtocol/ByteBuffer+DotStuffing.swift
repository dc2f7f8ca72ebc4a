import NIOCore

extension ByteBuffer {
    /// Writes `message` as the body of DATA: a `.` doubled at the start of every line, a CRLF
    /// added when the message does not end with one, then the `.CRLF` terminator (RFC 5321 §4.5.2).
    /// Returns the number of bytes written.
    @discardableResult
    public mutating func writeDotStuffedMessage(_ message: ByteBuffer) -> Int {
        message.withUnsafeReadableBytes { writeDotStuffedMessage(bytes: $0) }
    }

    /// `writeDotStuffedMessage` from bytes in memory (no buffer made around them first).
    @discardableResult
    public mutating func writeDotStuffedMessage(bytes: UnsafeRawBufferPointer) -> Int {
        let start = writerIndex
        let count = bytes.count
        reserveCapacity(minimumWritableBytes: count + count / 64 + 5)
        // Only a `.` that begins a line (at the start, or after a CRLF) is doubled: the bytes
        // between such dots go out in one write (by lines, a 200 KiB message was 2 700 writes).
        var written = 0
        var index = 0
        while let dot = SMTPFrameDecoder.find(UInt8(ascii: "."), in: bytes, from: index) {
            if dot == 0 || (dot >= 2 && bytes[dot - 2] == UInt8(ascii: "\r") && bytes[dot - 1] == UInt8(ascii: "\n")) {
                writeBytes(UnsafeRawBufferPointer(rebasing: bytes[written..<dot]))
                writeInteger(UInt8(ascii: "."))
                written = dot
            }
            index = dot + 1
        }
        writeBytes(UnsafeRawBufferPointer(rebasing: bytes[written..<count]))
        let endsWithCRLF = count >= 2 && bytes[count - 2] == UInt8(ascii: "\r") && bytes[count - 1] == UInt8(ascii: "\n")
        if !endsWithCRLF && count > 0 {
            writeStaticString("\r\n")
        }
        writeStaticString(".\r\n")
        return writerIndex - start
    }
}

/// `writeDotStuffedMessage` for a message written in pieces, straight into the buffer that
/// goes out: a `.` that begins a line is doubled wherever the pieces were cut, so a message
/// laid out from shared bytes and holes is copied once (not assembled, then copied again).
public struct DotStuffer {
    /// The last two bytes written, the later in the low byte; `0x0D0A` also before the first.
    private var tail: UInt16 = 0x0D0A
    private var empty = true

    public init() {}

    /// Writes the next piece of the message.
    public mutating func write(_ bytes: UnsafeRawBufferPointer, to buffer: inout ByteBuffer) {
        let count = bytes.count
        guard count > 0 else { return }
        var written = 0
        var index = 0
        while let dot = SMTPFrameDecoder.find(UInt8(ascii: "."), in: bytes, from: index) {
            let before: UInt16 =
                switch dot {
                case 0: tail
                case 1: (tail << 8) | UInt16(bytes[0])
                default: UInt16(bytes[dot - 2]) << 8 | UInt16(bytes[dot - 1])
                }
            if before == 0x0D0A {
                buffer.writeBytes(UnsafeRawBufferPointer(rebasing: bytes[written..<dot]))
                buffer.writeInteger(UInt8(ascii: "."))
                written = dot
            }
            index = dot + 1
        }
        buffer.writeBytes(UnsafeRawBufferPointer(rebasing: bytes[written..<count]))
        tail = count >= 2 ? UInt16(bytes[count - 2]) << 8 | UInt16(bytes[count - 1]) : (tail << 8) | UInt16(bytes[0])
        empty = false
    }

    public mutating func write(_ bytes: [UInt8], to buffer: inout ByteBuffer) {
        bytes.withUnsafeBytes { write($0, to: &buffer) }
    }

    public mutating func write(_ bytes: ArraySlice<UInt8>, to buffer: inout ByteBuffer) {
        bytes.withUnsafeBytes { write($0, to: &buffer) }
    }

    public mutating func write(_ text: String, to buffer: inout ByteBuffer) {
        var text = text
        text.withUTF8 { write(UnsafeRawBufferPointer($0), to: &buffer) }
    }

    /// Ends the message: a CRLF if it did not end with one, then `.CRLF`.
    public mutating func finish(_ buffer: inout ByteBuffer) {
        if !empty && tail != 0x0D0A { buffer.writeStaticString("\r\n") }
        buffer.writeStaticString(".\r\n")
        tail = 0x0D0A
        empty = true
    }
}
