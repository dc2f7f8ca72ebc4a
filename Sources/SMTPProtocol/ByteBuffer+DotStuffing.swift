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
