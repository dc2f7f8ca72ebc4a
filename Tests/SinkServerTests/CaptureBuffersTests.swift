import NIOCore
import NIOEmbedded
import Testing

@testable import SinkServer

@Suite struct CaptureBuffersTests {
    static func address(_ buffer: ByteBuffer) -> UnsafeRawPointer? {
        buffer.withVeryUnsafeBytes { UnsafeRawPointer($0.baseAddress) }
    }

    @Test("a buffer given back is taken again, empty, with its memory; small and oversized ones are not kept")
    func keepsLargeBuffers() {
        let buffers = CaptureBuffers(loop: EmbeddedEventLoop())
        #expect(buffers.take(capacity: 1) == nil)
        var large = ByteBufferAllocator().buffer(capacity: 64 << 10)
        large.writeString("first message")
        let memory = Self.address(large)
        buffers.give(large)
        large = ByteBuffer()
        buffers.give(ByteBufferAllocator().buffer(capacity: 1024))
        buffers.give(ByteBufferAllocator().buffer(capacity: CaptureBuffers.maximumCapacity + 1))
        let taken = buffers.take(capacity: 1000)
        #expect(taken?.readableBytes == 0)
        #expect(taken.map(Self.address) == memory)
        #expect(buffers.take(capacity: 1) == nil)
    }

    @Test("at most maximumCount buffers and maximumBytes are kept")
    func bounded() {
        let buffers = CaptureBuffers(loop: EmbeddedEventLoop())
        for _ in 0..<(CaptureBuffers.maximumCount + 5) {
            buffers.give(ByteBufferAllocator().buffer(capacity: CaptureBuffers.minimumCapacity))
        }
        var count = 0
        while buffers.take(capacity: 1) != nil { count += 1 }
        #expect(count == CaptureBuffers.maximumCount)
        for _ in 0..<20 { buffers.give(ByteBufferAllocator().buffer(capacity: CaptureBuffers.maximumCapacity)) }
        count = 0
        while buffers.take(capacity: 1) != nil { count += 1 }
        #expect(count == CaptureBuffers.maximumBytes / CaptureBuffers.maximumCapacity)
    }

    @Test("a buffer still shared when given back is copied on its first write: its other holder keeps its bytes")
    func sharedBufferIsNotOverwritten() {
        let buffers = CaptureBuffers(loop: EmbeddedEventLoop())
        var original = ByteBufferAllocator().buffer(capacity: 32 << 10)
        original.writeString("stored bytes")
        let holder = original
        buffers.give(original)
        original = ByteBuffer()
        var taken = buffers.take(capacity: 16)!
        taken.writeString("next message")
        #expect(String(buffer: holder) == "stored bytes")
        #expect(String(buffer: taken) == "next message")
    }
}
