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
        var lineStart = 0
        var index = 0
        while index <= count {
            if index < count, bytes[index] == UInt8(ascii: "."), index == lineStart {
                writeInteger(UInt8(ascii: "."))
            }
            guard let cr = SMTPFrameDecoder.find(UInt8(ascii: "\r"), in: bytes, from: index) else {
                writeBytes(UnsafeRawBufferPointer(rebasing: bytes[lineStart..<count]))
                break
            }
            if cr + 1 < count, bytes[cr + 1] == UInt8(ascii: "\n") {
                writeBytes(UnsafeRawBufferPointer(rebasing: bytes[lineStart..<(cr + 2)]))
                lineStart = cr + 2
                index = cr + 2
            } else {
                index = cr + 1
            }
        }
        let endsWithCRLF = count >= 2 && bytes[count - 2] == UInt8(ascii: "\r") && bytes[count - 1] == UInt8(ascii: "\n")
        if !endsWithCRLF && count > 0 {
            writeStaticString("\r\n")
        }
        writeStaticString(".\r\n")
        return writerIndex - start
    }
}
