import MailMessage
import NIOCore
import Synchronization

#if canImport(Glibc)
    import Glibc
#elseif canImport(Darwin)
    import Darwin
#endif

/// `DIR/messages/spool`: where the bodies of small messages that arrive together wait for their
/// `.eml` files. Creating a file costs the file system far more than appending the same bytes
/// (on this project's ext4 it was most of a 1 KiB message's cost with `--data`; inode
/// allocation and the directory insert, `perf record`), so in a burst the disk writer appends a
/// batch's bodies here in one `write`, then their metadata lines, and answers `250`; the
/// `.eml` files are written behind, once arrivals pause (`quietGap`), or earlier when
/// `maxPendingBytes` wait or the oldest has waited `maxDeferral`. A spooled message is as
/// durable as a filed one (the same `--fsync` applies to the spool), is read back from the spool
/// (`pread`, the page cache) until its file exists, and a start after a crash writes the files
/// the spool still holds.
///
/// The spool keeps where each waiting body is in its file, not the body: a burst's capture
/// buffers are freed by the event loop that made them, right after the append, and their memory
/// serves the next messages. Held until filed, 20 000 1 KiB bodies were 20 000 buffers on
/// fresh pages: 16 900 page faults on the loop against 6 400 (`perf stat -e page-faults`,
/// `--fsync batch`, 20 sessions).
///
/// A record is `ID SIZE\n`, the bytes, `\n`. The file is emptied (`ftruncate`) once every body
/// in it has its file and the file system was synced.
///
/// Event loops and the disk writer store; any thread may read a body (`body(_:)`) or `count`.
final class BodySpool: Sendable {
    /// Larger messages get their file at once: the file's cost is small beside their bytes,
    /// which the spool would write twice.
    static let maxMessageBytes = 64 * 1024
    /// Bytes of bodies waiting for their files.
    static let maxPendingBytes = 32 * 1024 * 1024
    /// Past this size the spool takes nothing more until it is emptied.
    static let maxFileBytes = 64 * 1024 * 1024
    /// Files are written once no message arrived for this long…
    static let quietGap: UInt64 = 20_000_000
    /// …or the oldest waiting body has waited this long.
    static let maxDeferral: UInt64 = 5_000_000_000

    let path: String
    /// Open for appending; the disk writer syncs it (`fdatasync`) with `--fsync always`.
    let descriptor: Int32
    /// Open for reading the bodies back.
    private let reader: Int32

    /// Where a waiting body's bytes are in the file.
    struct Location: Equatable {
        var offset: Int
        var length: Int
    }

    private struct State {
        var bodies: [String: Location] = [:]
        var order = CircularBuffer<String>()
        var bytes = 0
        var oldestArrival: UInt64 = 0
        var lastArrival: UInt64 = 0
        /// Counts the times the file was emptied: a location read from an earlier one is stale.
        var emptied = 0
    }

    private let state = Mutex(State())
    /// Bytes in the file.
    private let fileBytes = Atomic<Int>(0)
    /// Held from a body's append until it is held in memory (`store`), and to empty the file:
    /// the file is never emptied under a body that has no `.eml` yet. Event loops and the
    /// disk writer both append.
    private let file = Mutex(())

    init(directory: String) throws {
        path = "\(directory)/spool"
        let fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw DiskError(path: path, operation: "open", code: errno) }
        let reader = open(path, O_RDONLY | O_CLOEXEC)
        guard reader >= 0 else {
            let code = errno
            close(fd)
            throw DiskError(path: path, operation: "open", code: code)
        }
        descriptor = fd
        self.reader = reader
        // Appends start at the file's end (a spool left by a crash is recovered, then emptied).
        fileBytes.store(Int(lseek(fd, 0, SEEK_END)), ordering: .relaxed)
    }

    deinit {
        close(descriptor)
        close(reader)
    }

    /// Bodies waiting for their files.
    var count: Int { state.withLock { $0.bodies.count } }
    var isEmpty: Bool { count == 0 }

    /// A waiting body, if `id`'s is one: read back from the file. Nil when it is not waiting
    /// (any more): its `.eml` then has it, or it was deleted.
    func body(_ id: String) throws -> ByteBuffer? {
        guard let (location, emptied) = state.withLock({ state in state.bodies[id].map { ($0, state.emptied) } }) else { return nil }
        var body = ByteBuffer()
        try read(location, into: &body)
        // Filed and the file emptied while it was read: the bytes may be another body's.
        return state.withLock { $0.emptied == emptied } ? body : nil
    }

    /// Reads the bytes at `location` into `buffer` (emptied first).
    func read(_ location: Location, into buffer: inout ByteBuffer) throws {
        buffer.clear()
        buffer.reserveCapacity(location.length)
        var done = 0
        while done < location.length {
            let count = buffer.writeWithUnsafeMutableBytes(minimumWritableBytes: location.length - done) { pointer in
                pread(reader, pointer.baseAddress!, location.length - done, off_t(location.offset + done))
            }
            if count < 0, errno == EINTR { continue }
            guard count > 0 else { throw DiskError(path: path, operation: "read", code: count < 0 ? errno : EIO) }
            done += count
        }
    }

    /// Whether a body of `size` bytes may join `alreadyTaken` bytes in this batch.
    func admits(size: Int, alreadyTaken: Int) -> Bool {
        size <= Self.maxMessageBytes && fileBytes.load(ordering: .relaxed) + alreadyTaken + size + 64 <= Self.maxFileBytes
    }

    /// Appends the bodies in one `write`, then (`describe`) their metadata lines; once both
    /// are written the bodies wait in memory for their files. Throws what either write threw
    /// (the spool's records are then dead: no metadata line describes them).
    func store(_ bodies: [(id: String, raw: ByteBuffer)], now: UInt64, describe: () throws -> Void) throws {
        try file.withLock { _ in
            let locations = try append(bodies)
            try describe()
            hold(bodies, at: locations, now: now)
        }
    }

    /// Under `file`: the records of one append are gathered here, its memory kept from one
    /// append to the next (a new buffer each time was fresh pages each time: page faults were
    /// ~3% of the loop's time with `--fsync batch`, `perf record`).
    private nonisolated(unsafe) var scratch = ByteBuffer()

    /// Under `file`: returns where each body went.
    private func append(_ bodies: [(id: String, raw: ByteBuffer)]) throws -> [Location] {
        let start = fileBytes.load(ordering: .relaxed)
        var locations: [Location] = []
        locations.reserveCapacity(bodies.count)
        scratch.clear()
        scratch.reserveCapacity(bodies.reduce(0) { $0 + $1.raw.readableBytes + $1.id.utf8.count + 24 })
        for (id, raw) in bodies {
            scratch.writeString(id)
            scratch.writeInteger(UInt8(ascii: " "))
            scratch.writeDecimal(raw.readableBytes)
            scratch.writeInteger(UInt8(ascii: "\n"))
            locations.append(Location(offset: start + scratch.readableBytes, length: raw.readableBytes))
            scratch.writeImmutableBuffer(raw)
            scratch.writeInteger(UInt8(ascii: "\n"))
        }
        do {
            try scratch.withUnsafeReadableBytes { try writeFully(descriptor, $0, path: path) }
        } catch {
            // Part of it may be in the file: later appends go after whatever is there.
            fileBytes.store(Int(lseek(descriptor, 0, SEEK_END)), ordering: .relaxed)
            throw error
        }
        fileBytes.add(scratch.readableBytes, ordering: .relaxed)
        // A burst of large bodies is not kept for ever.
        if scratch.capacity > 4 * 1024 * 1024 { scratch = ByteBuffer() }
        return locations
    }

    private func hold(_ bodies: [(id: String, raw: ByteBuffer)], at locations: [Location], now: UInt64) {
        state.withLock { state in
            if state.bodies.isEmpty { state.oldestArrival = now }
            state.lastArrival = now
            for ((id, _), location) in zip(bodies, locations) where state.bodies.updateValue(location, forKey: id) == nil {
                state.order.append(id)
                state.bytes += location.length
            }
        }
    }

    /// Bodies that now have their files, or whose messages were deleted (theirs are not to be
    /// written). Returns the ids whose bodies it did not hold: those may have files.
    @discardableResult
    func discard(_ ids: [String]) -> [String] {
        state.withLock { state in
            var notHeld: [String] = []
            for id in ids {
                if let location = state.bodies.removeValue(forKey: id) {
                    state.bytes -= location.length
                } else {
                    notHeld.append(id)
                }
            }
            return notHeld
        }
    }

    /// What to do now: file up to `limit` bodies (empty when none wait), or wait so long (ns).
    enum Due {
        case file([(id: String, location: Location)])
        case wait(UInt64)
    }

    func due(now: UInt64, force: Bool, limit: Int) -> Due {
        state.withLock { state in
            let pressed = force || state.bytes >= Self.maxPendingBytes || now &- state.oldestArrival >= Self.maxDeferral
            let quiet = now &- state.lastArrival
            if !pressed, quiet < Self.quietGap, !state.bodies.isEmpty { return .wait(Self.quietGap - quiet) }
            var chunk: [(id: String, location: Location)] = []
            while chunk.count < limit, let id = state.order.first {
                if let location = state.bodies[id] { chunk.append((id, location)) }
                state.order.removeFirst()
            }
            return .file(chunk)
        }
    }

    /// Puts back bodies whose files could not be written, to try again later.
    func requeue(_ ids: [String]) {
        state.withLock { state in
            for id in ids where state.bodies[id] != nil { state.order.append(id) }
        }
    }

    /// Whether the file holds records no body waits on any more.
    var holdsOnlyFiled: Bool { fileBytes.load(ordering: .relaxed) > 0 && isEmpty }

    /// Empties the file if no body waits (one may have arrived since the caller synced the
    /// files of the others).
    func truncateIfFiled() throws {
        try file.withLock { _ in
            guard isEmpty else { return }
            guard ftruncate(descriptor, 0) == 0 else { throw DiskError(path: path, operation: "ftruncate", code: errno) }
            state.withLock { $0.emptied += 1 }
            fileBytes.store(0, ordering: .relaxed)
        }
    }

    /// The records of a spool file, in order; a record cut short (a crash mid-append, before any
    /// `250` for it) ends the list.
    static func records(in bytes: [UInt8]) -> [(id: String, body: ArraySlice<UInt8>)] {
        var records: [(id: String, body: ArraySlice<UInt8>)] = []
        var index = 0
        while index < bytes.count {
            guard let newline = bytes[index...].firstIndex(of: UInt8(ascii: "\n")) else { break }
            let header = bytes[index..<newline].split(separator: UInt8(ascii: " "))
            guard header.count == 2, let size = Int(String(decoding: header[1], as: UTF8.self)), size >= 0,
                newline + 1 + size < bytes.count, bytes[newline + 1 + size] == UInt8(ascii: "\n")
            else { break }
            records.append((String(decoding: header[0], as: UTF8.self), bytes[(newline + 1)..<(newline + 1 + size)]))
            index = newline + 2 + size
        }
        return records
    }
}

extension ByteBuffer {
    /// Writes a non-negative integer in decimal, without building a `String`.
    mutating func writeDecimal(_ value: Int) {
        precondition(value >= 0)
        withDecimalDigits(of: UInt64(value)) { writeBytes($0) }
    }
}

/// `write(2)` until every byte is out, retrying on EINTR.
func writeFully(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, path: String) throws {
    var offset = 0
    while offset < bytes.count {
        #if canImport(Glibc)
            let written = Glibc.write(fd, bytes.baseAddress! + offset, bytes.count - offset)
        #else
            let written = Darwin.write(fd, bytes.baseAddress! + offset, bytes.count - offset)
        #endif
        if written < 0 {
            if errno == EINTR { continue }
            throw DiskError(path: path, operation: "write", code: errno)
        }
        offset += written
    }
}
