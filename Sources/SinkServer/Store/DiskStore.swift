import Dispatch
import Foundation
import MailMessage
import NIOCore
import Synchronization

#if canImport(Glibc)
import Glibc
#elseif canImport(Darwin)
import Darwin
#endif

/// Messages on disk: `DIR/messages/<id>.eml` (the raw bytes as stored) with `<id>.json` (the
/// `CapturedMessage` metadata) beside it. A message counts as stored when its `.json` decodes:
/// the `.eml` is written first, so a metadata file never points at a missing body.
final class DiskStore: Sendable {
    let directory: String
    let policy: FsyncPolicy
    /// The search index, kept in step with the files (nil in tests of the files alone).
    let index: MessageIndex?
    private let queue = DispatchQueue(label: "swallow.disk", qos: .utility, attributes: .concurrent)
    private let directoryDescriptor: Int32
    /// Batch mode: files written but not yet fsynced.
    private let unsynced = Mutex<[String]>([])

    init(root: String, policy: FsyncPolicy, index: MessageIndex?) throws {
        self.directory = (root as NSString).appendingPathComponent("messages")
        self.policy = policy
        self.index = index
        do {
            try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
        } catch {
            throw ConfigurationError(message: "cannot create data directory \(directory): \(error.localizedDescription)")
        }
        let fd = open(directory, O_RDONLY | O_DIRECTORY)
        guard fd >= 0 else { throw ConfigurationError(message: "cannot open data directory \(directory): errno \(errno)") }
        self.directoryDescriptor = fd
    }

    deinit {
        close(directoryDescriptor)
    }

    /// Every stored message's metadata, oldest first. Unreadable metadata (a write cut short
    /// by a crash, before its `250`) is skipped and reported.
    func loadAll(onSkipped: (String, any Error) -> Void) throws -> [CapturedMessage] {
        let names = try FileManager.default.contentsOfDirectory(atPath: directory).filter { $0.hasSuffix(".json") }
        let decoder = JSONDecoder()
        var messages: [CapturedMessage] = []
        messages.reserveCapacity(names.count)
        for name in names {
            let path = (directory as NSString).appendingPathComponent(name)
            do {
                let data = try Data(contentsOf: URL(fileURLWithPath: path))
                let message = try decoder.decode(CapturedMessage.self, from: data)
                guard FileManager.default.fileExists(atPath: emlPath(message.id)) || !message.bodyStored else {
                    throw ConfigurationError(message: "missing \(message.id).eml")
                }
                messages.append(message)
            } catch {
                onSkipped(path, error)
            }
        }
        return messages.sorted { $0.id < $1.id }
    }

    /// Writes one message (`always`, `batch`): `completion` runs on the disk queue after the
    /// fsync (`always`) or the write (`batch`).
    func write(_ message: CapturedMessage, raw: ByteBuffer?, completion: @escaping @Sendable (Result<Void, any Error>) -> Void) {
        let metadata: Data
        do {
            metadata = try JSONEncoder().encode(message)
        } catch {
            completion(.failure(error))
            return
        }
        queue.async {
            let result = Result { try self.writeFiles(message, raw: raw, metadata: metadata, sync: self.policy == .always) }
            if case .success = result, self.policy == .batch { self.scheduleFlush(message.id) }
            completion(result)
        }
    }

    func write(_ message: CapturedMessage, raw: ByteBuffer?) async throws {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<Void, any Error>) in
            write(message, raw: raw) { continuation.resume(with: $0) }
        }
    }

    /// `never`: queues the write and returns at once.
    func enqueue(_ message: CapturedMessage, raw: ByteBuffer?) {
        queue.async {
            guard let metadata = try? JSONEncoder().encode(message) else { return }
            try? self.writeFiles(message, raw: raw, metadata: metadata, sync: false)
        }
    }

    /// Reads a message's raw bytes.
    func readRaw(id: String) async throws -> ByteBuffer? {
        try await withCheckedThrowingContinuation { (continuation: CheckedContinuation<ByteBuffer?, any Error>) in
            queue.async {
                let path = self.emlPath(id)
                guard FileManager.default.fileExists(atPath: path) else { return continuation.resume(returning: nil) }
                do {
                    let data = try Data(contentsOf: URL(fileURLWithPath: path))
                    continuation.resume(returning: ByteBuffer(bytes: data))
                } catch {
                    continuation.resume(throwing: error)
                }
            }
        }
    }

    func delete(ids: [String]) {
        guard !ids.isEmpty else { return }
        index?.later { try $0.delete(ids: ids) }
        queue.async(flags: .barrier) {
            for id in ids {
                unlink(self.emlPath(id))
                unlink(self.jsonPath(id))
            }
        }
    }

    /// Waits until every queued write has reached the files, then fsyncs (unless `never`).
    func drain() async {
        await withCheckedContinuation { (continuation: CheckedContinuation<Void, Never>) in
            queue.async(flags: .barrier) {
                if self.policy == .batch { self.flush() }
                continuation.resume()
            }
        }
    }

    // MARK: Files

    func emlPath(_ id: String) -> String { "\(directory)/\(id).eml" }
    private func jsonPath(_ id: String) -> String { "\(directory)/\(id).json" }

    private func writeFiles(_ message: CapturedMessage, raw: ByteBuffer?, metadata: Data, sync: Bool) throws {
        let id = message.id
        if let raw {
            try raw.withUnsafeReadableBytes { try writeFile(emlPath(id), $0, sync: sync) }
        }
        try metadata.withUnsafeBytes { try writeFile(jsonPath(id), $0, sync: sync) }
        if sync { fsync(directoryDescriptor) }
        // Indexed behind the 250; the index is rebuildable from the files.
        index?.enqueue(message, raw: raw, metadata: metadata)
    }

    /// Names of the stored metadata files (cheap: no file is read).
    func storedCount() -> Int {
        ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []).filter { $0.hasSuffix(".json") }.count
    }

    private func writeFile(_ path: String, _ bytes: UnsafeRawBufferPointer, sync: Bool) throws {
        let fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0o644)
        guard fd >= 0 else { throw DiskError(path: path, operation: "open", code: errno) }
        defer { close(fd) }
        var offset = 0
        while offset < bytes.count {
            let written = Glibc.write(fd, bytes.baseAddress! + offset, bytes.count - offset)
            if written < 0 {
                if errno == EINTR { continue }
                throw DiskError(path: path, operation: "write", code: errno)
            }
            offset += written
        }
        if sync && fsync(fd) != 0 { throw DiskError(path: path, operation: "fsync", code: errno) }
    }

    /// Batch mode: the file system is synced about 100 ms after a write, covering every
    /// message written meanwhile.
    private func scheduleFlush(_ id: String) {
        let first = unsynced.withLock { pending in
            pending.append(id)
            return pending.count == 1
        }
        guard first else { return }
        queue.asyncAfter(deadline: .now() + .milliseconds(100)) { self.flush() }
    }

    private func flush() {
        let ids = unsynced.withLock { pending in
            defer { pending.removeAll() }
            return pending
        }
        guard !ids.isEmpty else { return }
        // One syncfs for the whole batch: opening and fsyncing each file costs far more, and
        // on ext4 it stalls the creation of the next files.
        systemSyncfs(directoryDescriptor)
    }
}

/// `syncfs(2)` (Linux): Glibc's module does not export it, since it needs `_GNU_SOURCE`.
@_silgen_name("syncfs")
private func systemSyncfs(_ fd: Int32) -> Int32

struct DiskError: Error, CustomStringConvertible {
    var path: String
    var operation: String
    var code: Int32
    var description: String { "\(operation) \(path): \(String(cString: strerror(code)))" }
}
