import Foundation
import Logging
import MailMessage
import NIOCore
import Synchronization

/// Every captured message, newest last: metadata in memory, raw bytes in memory (no `--data`)
/// or on disk (`--data DIR`). Bounded by `maxMessages`: the oldest are evicted (from disk too).
public final class MessageStore: Sendable {
    /// One stored message, held by reference: the table of entries holds a reference per
    /// message, so the room the table keeps free (and reserves up to `--max-messages` at start)
    /// costs a reference a slot, not the few hundred bytes a message's metadata takes. Only
    /// touched under the store's lock, but for the raw bytes, which never change once made.
    ///
    /// The raw bytes (in memory without a disk store) are allocated with the entry, after its
    /// fields: exactly the message's bytes (a `ByteBuffer`'s capacity is a power of two, a 1.3
    /// KiB message in a 2 KiB buffer), and one allocation a message, not two (an array beside
    /// the entry was 54 bytes more each, 100 000 held 1 KiB messages measured). A large
    /// message's bytes go to the store's `MessageArena` instead (the entry's `arena` says where).
    ///
    /// A reference (`Storage`, a `ManagedBuffer`, which is not `Sendable`) in a `Sendable`
    /// wrapper: the store's lock guards its fields; its bytes never change.
    struct Entry: @unchecked Sendable {
        final class Storage: ManagedBuffer<EntryFields, UInt8> {}

        private let storage: Storage

        /// `raw`: kept in the entry, or in `arena` when it is a large message; nil with a disk
        /// store (the bytes are on disk).
        static func make(message: CapturedMessage, raw: ByteBuffer?, arena: MessageArena? = nil) -> Entry {
            let count = raw?.readableBytes ?? 0
            let placed = raw == nil ? nil : arena?.allocate(count)
            let made = Storage.create(minimumCapacity: placed == nil ? count : 0) { _ in
                EntryFields(
                    message: message, rawCount: raw == nil ? -1 : count, mailboxes: MailboxFiling.names(for: message), arena: placed)
            }
            let entry = Entry(storage: unsafeDowncast(made, to: Storage.self))
            if let raw, count > 0 {
                raw.withUnsafeReadableBytes { bytes in
                    if let placed {
                        placed.start.copyMemory(from: bytes.baseAddress!, byteCount: count)
                    } else {
                        entry.storage.withUnsafeMutablePointerToElements { elements in
                            elements.initialize(from: bytes.bindMemory(to: UInt8.self).baseAddress!, count: count)
                        }
                    }
                }
            }
            return entry
        }

        var id: String { storage.header.message.id }
        var message: CapturedMessage {
            get { storage.header.message }
            nonmutating set { storage.header.message = newValue }
        }
        /// Sets the message's `replySentNanos` in place (through `message`, the whole message
        /// was copied out and back, under the store's lock, for every message).
        func replySent(at nanos: Int64) {
            storage.header.message.timestamps.replySentNanos = nanos
        }
        var read: Bool {
            get { storage.header.read }
            nonmutating set { storage.header.read = newValue }
        }
        var tags: [String] {
            get { storage.header.extras?.tags ?? [] }
            nonmutating set {
                // Most messages get no tags: no box is made for none.
                guard !newValue.isEmpty || storage.header.extras != nil else { return }
                changeExtras { $0.tags = newValue }
            }
        }
        /// Mailbox names for parallel CI jobs: the AUTH user and recipients' plus tags.
        var mailboxes: [String] { storage.header.extras?.mailboxes ?? [] }
        /// The MIME parse's summary, made on first use.
        var summary: MessageSummary? {
            get { storage.header.extras?.summary }
            nonmutating set { changeExtras { $0.summary = newValue } }
        }

        private func changeExtras(_ change: (EntryExtras) -> Void) {
            let extras = storage.header.extras ?? EntryExtras(mailboxes: [])
            change(extras)
            storage.header.extras = extras.isEmpty ? nil : extras
        }

        /// The raw bytes' length, or nil when they are not held here. Read under the lock;
        /// the bytes themselves may then be read (`copyRaw`) out of it.
        var rawCount: Int? { storage.header.rawCount == UInt32.max ? nil : Int(storage.header.rawCount) }

        /// Whether the raw bytes are in the store's arena; the region they are in. For tests.
        var placedInArena: Bool { storage.header.arena != nil }
        var arenaRegion: MessageArena.Region? { storage.header.arena?.region }

        /// The first `count` raw bytes as a buffer. The bytes never change, so this needs no
        /// lock once `count` was read under it.
        func copyRaw(count: Int) -> ByteBuffer {
            if let placed = storage.header.arena {
                return ByteBuffer(bytes: UnsafeRawBufferPointer(start: placed.start, count: count))
            }
            return storage.withUnsafeMutablePointerToElements { ByteBuffer(bytes: UnsafeBufferPointer(start: $0, count: count)) }
        }
    }

    struct EntryFields {
        var message: CapturedMessage
        /// `UInt32.max`: no raw bytes held. (A message's bytes came in a `ByteBuffer`, whose
        /// indices are 32 bits.)
        let rawCount: UInt32
        var read = false
        /// Tags, mailbox names and the summary, which most entries have none of: boxed.
        var extras: EntryExtras?
        /// Where the raw bytes are when a large message's are in the store's arena rather than
        /// after these fields. Never changes, so the bytes are read without the lock.
        let arena: MessageArena.Bytes?

        init(message: CapturedMessage, rawCount: Int, mailboxes: [String], arena: MessageArena.Bytes? = nil) {
            self.message = message
            self.arena = arena
            precondition(rawCount < UInt32.max, "a message in memory is less than 4 GiB")
            self.rawCount = rawCount < 0 ? UInt32.max : UInt32(rawCount)
            if !mailboxes.isEmpty { extras = EntryExtras(mailboxes: mailboxes) }
        }
    }

    /// Only touched under the store's lock.
    final class EntryExtras: @unchecked Sendable {
        var tags: [String] = []
        let mailboxes: [String]
        var summary: MessageSummary?

        init(mailboxes: [String]) { self.mailboxes = mailboxes }

        var isEmpty: Bool { tags.isEmpty && mailboxes.isEmpty && summary == nil }
    }

    /// A stored message's state as the API sees it.
    public struct Listing: Sendable {
        public var message: CapturedMessage
        public var read: Bool
        public var tags: [String]
        public var mailboxes: [String]
    }

    struct State {
        var entries = EntryTable()
        /// Ids in arrival order; `order[head...]` are live.
        var order: [String] = []
        var head = 0
        /// Messages evicted by `maxMessages` and mailbox quotas, removed by age (TTL,
        /// `--max-age`), and deleted over the API, since the start: with the stored count they
        /// account for every accepted message.
        var evicted = 0
        var expired = 0
        var deleted = 0
        /// Per mailbox name with messages: their count and ids (see MessageStore+Mailboxes).
        var boxes: [String: Box] = [:]
        /// Per mailbox name: messages evicted by its quota since the start.
        var boxEvictions: [String: Int] = [:]

        /// Adds an entry as the newest.
        mutating func append(_ entry: Entry) {
            entries.insert(entry)
            order.append(entry.message.id)
            for name in entry.mailboxes { boxes[name, default: Box()].append(entry.message.id) }
        }

        /// Removes an entry, from its mailboxes too.
        @discardableResult
        mutating func remove(_ id: String) -> Entry? {
            guard let entry = entries.removeValue(forKey: id) else { return nil }
            for name in entry.mailboxes {
                guard var box = boxes[name] else { continue }
                box.count -= 1
                boxes[name] = box.count > 0 ? box : nil
            }
            return entry
        }

        mutating func evict(keeping limit: Int) -> [String] {
            guard limit > 0 else { return [] }
            var evicted: [String] = []
            while entries.count > limit, head < order.count {
                let id = order[head]
                head += 1
                if remove(id) != nil { evicted.append(id) }
            }
            self.evicted += evicted.count
            compactOrder()
            return evicted
        }

        mutating func compactOrder() {
            if head > 1024 && head * 2 > order.count {
                order.removeFirst(head)
                head = 0
            }
        }
    }

    /// 0 means no limit.
    public let maxMessages: Int
    /// How new messages get their tags.
    public let tagging: Tagging
    /// The mailboxes created over the API, with their quotas and TTLs.
    public let mailboxes: MailboxRegistry
    let state = Mutex(State())
    /// The files and the journal, with `--data`.
    let disk: DiskStore?
    /// The SQLite search index, with `--data`: fed by this store alone (messages as the disk
    /// writer finishes them, deletions as they happen).
    let index: MessageIndex?
    /// Every insert is announced here (the event stream, waiters).
    public let events = MessageEvents()
    /// Storage failures: logged, counted, shown as `degraded`.
    public let health: StorageHealth
    /// Large messages' raw bytes, in memory (see `MessageArena`).
    let arena = MessageArena()

    /// A memory store.
    public convenience init(maxMessages: Int, tagging: Tagging = Tagging(), mailboxQuota: Int = 0) {
        let registry = MailboxRegistry(defaultQuota: mailboxQuota, dataDirectory: nil, logger: Logger(label: "swallow.store"))
        self.init(maxMessages: maxMessages, tagging: tagging, mailboxes: registry, disk: nil, index: nil)
    }

    init(maxMessages: Int, tagging: Tagging, mailboxes: MailboxRegistry, disk: DiskStore?, index: MessageIndex?) {
        self.maxMessages = maxMessages
        self.tagging = tagging
        self.mailboxes = mailboxes
        self.disk = disk
        self.index = index
        self.health = index?.health ?? StorageHealth(logger: Logger(label: "swallow.store"))
        let room = min(maxMessages == 0 ? 10_000 : maxMessages, 100_000)
        state.withLock { state in
            state.entries.reserveCapacity(room)
            state.order.reserveCapacity(room)
        }
    }

    /// Opens the store under `--data DIR`, loading what an earlier run stored. The index
    /// (`DIR/index.sqlite`) is used when it holds every stored message; otherwise (missing,
    /// damaged, behind) it is rebuilt from the message files.
    static func open(
        dataDirectory: String?, policy: FsyncPolicy, maxMessages: Int, tagging: Tagging = Tagging(), mailboxQuota: Int = 0,
        logger: Logger
    ) throws -> MessageStore {
        guard let dataDirectory else { return MessageStore(maxMessages: maxMessages, tagging: tagging, mailboxQuota: mailboxQuota) }
        let health = StorageHealth(logger: logger)
        do {
            try FileManager.default.createDirectory(atPath: dataDirectory, withIntermediateDirectories: true)
        } catch {
            throw ConfigurationError(message: "cannot create data directory \(dataDirectory): \(error)")
        }
        let indexPath = (dataDirectory as NSString).appendingPathComponent("index.sqlite")
        let index: MessageIndex
        do {
            index = try MessageIndex(path: indexPath, health: health)
        } catch {
            logger.warning("search index unreadable, rebuilding it", metadata: ["path": "\(indexPath)", "error": "\(error)"])
            for suffix in ["", "-wal", "-shm"] { try? FileManager.default.removeItem(atPath: indexPath + suffix) }
            index = try MessageIndex(path: indexPath, health: health)
        }
        let disk = try DiskStore(root: dataDirectory, policy: policy, health: health) { index.enqueue($0, mayWait: $1) }
        let registry = MailboxRegistry(defaultQuota: mailboxQuota, dataDirectory: dataDirectory, logger: logger)
        let store = MessageStore(maxMessages: maxMessages, tagging: tagging, mailboxes: registry, disk: disk, index: index)

        var loaded: [(CapturedMessage, read: Bool, tags: [String])] = []
        if index.count == disk.storedCount(), let fromIndex = try? index.loadAll() {
            loaded = fromIndex
        } else {
            let messages = try disk.loadAll { path, error in
                logger.warning("skipping unreadable stored message", metadata: ["path": "\(path)", "error": "\(error)"])
            }
            logger.info("rebuilding the search index", metadata: ["messages": "\(messages.count)"])
            try index.deleteAll()
            for chunk in stride(from: 0, to: messages.count, by: 500) {
                var rows: [MessageIndex.Record] = []
                for message in messages[chunk..<min(chunk + 500, messages.count)] {
                    let raw = message.bodyStored ? (try? Data(contentsOf: URL(fileURLWithPath: disk.emlPath(message.id)))) : nil
                    // What the API set is lost with the index; the tags the message itself earns are not.
                    let tags = tagging.tags(for: message, raw: raw.map { ByteBuffer(bytes: $0) })
                    rows.append(MessageIndex.Record(message, raw: raw.map(Array.init), tags: tags))
                    loaded.append((message, read: false, tags: tags))
                }
                try index.insert(rows)
            }
        }
        let evicted = store.state.withLock { state in
            for (message, read, tags) in loaded {
                let entry = Entry.make(message: message, raw: nil)
                entry.read = read
                entry.tags = tags
                state.append(entry)
            }
            return state.evict(keeping: maxMessages) + store.enforceQuotas(&state)
        }
        store.forget(evicted)
        logger.info("opened data directory", metadata: ["path": "\(disk.directory)", "messages": "\(loaded.count - evicted.count)"])
        return store
    }

    /// True when an insert must wait for the disk before the `250` (`--data` with `--fsync`
    /// `always` or `batch`); otherwise `insertNow` stores at once.
    var insertWaitsForDisk: Bool { disk != nil && disk?.policy != .never }
    /// Whether `insertNow` is done with the raw bytes when it returns (it copies them, and no disk
    /// writer holds them): the caller may then reuse their buffer.
    var copiesRaw: Bool { disk == nil }

    /// Stores a message at once; with `--fsync never` its disk write is queued. It is announced
    /// (`announce`) once its reply is out.
    /// Use only when `insertWaitsForDisk` is false, or after the disk write.
    /// Returns the message's entry, for `announce` to find without a lookup.
    @discardableResult
    func insertNow(_ message: CapturedMessage, raw: ByteBuffer?) -> Entry {
        insertNow(message, raw: raw, tags: tagging.tags(for: message, raw: raw))
    }

    @discardableResult
    private func insertNow(_ message: CapturedMessage, raw: ByteBuffer?, tags: [String]) -> Entry {
        if let disk, disk.policy == .never {
            disk.enqueue(message, raw: raw, tags: tags)
        }
        let keepRaw = disk == nil || disk?.policy == .never
        let entry = Entry.make(message: message, raw: keepRaw ? raw : nil, arena: arena)
        entry.tags = tags
        let quotas = mailboxes.quotas(for: entry.mailboxes)
        let evicted = state.withLock { state in
            state.append(entry)
            return state.evict(keeping: maxMessages) + Self.enforce(quotas, names: entry.mailboxes, &state)
        }
        forget(evicted)
        return entry
    }

    /// Whether `insert(_:raw:on:completion:)` stores this message on its event loop
    /// (`DiskStore.takesInline`). Ask once per message.
    func takesInline(_ raw: ByteBuffer) -> Bool {
        disk?.takesInline(size: raw.readableBytes) ?? false
    }

    /// Stores the small messages of a burst that one event loop took in one pass together, on
    /// that loop; each `completion` runs there.
    /// With `--fsync always` they are answered once a sync covers them, back on `loop`.
    func insertInline(_ items: [InlineStoreBatch.Item], on loop: any EventLoop) {
        let tagged = items.map { (message: $0.message, raw: $0.raw, tags: tagging.tags(for: $0.message, raw: $0.raw)) }
        // `takesInline` said yes only with a disk store.
        guard let disk else { return finishInline(items, tagged, .failure(ConfigurationError(message: "no data directory"))) }
        guard disk.policy == .always else { return finishInline(items, tagged, disk.storeInline(tagged)) }
        let waiting = NIOLoopBound(items, eventLoop: loop)
        let appended = disk.storeInline(tagged) { result in
            loop.execute { self.finishInline(waiting.value, tagged, result) }
        }
        if case .failure = appended { finishInline(items, tagged, appended) }
    }

    private func finishInline(
        _ items: [InlineStoreBatch.Item], _ tagged: [(message: CapturedMessage, raw: ByteBuffer, tags: [String])],
        _ result: Result<Void, any Error>
    ) {
        for (item, tagged) in zip(items, tagged) {
            if case .success = result { insertNow(tagged.message, raw: tagged.raw, tags: tagged.tags) }
            item.completion(result)
        }
    }

    /// Stores a message with the disk write off the caller's thread; `completion` runs on the
    /// disk queue once the message is as durable as `--fsync` demands (or failed to be).
    func insert(_ message: CapturedMessage, raw: ByteBuffer?, completion: @escaping @Sendable (Result<Void, any Error>) -> Void) {
        guard let disk, disk.policy != .never else {
            insertNow(message, raw: raw)
            completion(.success(()))
            return
        }
        let tags = tagging.tags(for: message, raw: raw)
        disk.write(message, raw: raw, tags: tags) { result in
            if case .success = result { self.insertNow(message, raw: raw, tags: tags) }
            completion(result)
        }
    }

    /// Announces a stored message once its final reply went out: the time of the reply is set
    /// in memory (the disk copy was written before it) and the message, with it, goes to the
    /// event stream, waiters and webhooks. A message is published once, and never before its
    /// `250`.
    /// `entry`: the message's, when the caller has it (`insertNow`'s); else it is looked up.
    /// An entry evicted or deleted meanwhile is changed where nothing reads it any more.
    func announce(_ message: CapturedMessage, entry: Entry? = nil, replySentNanos: Int64) {
        state.withLock { state in
            if let entry { entry.replySent(at: replySentNanos) } else { state.entries[message.id]?.replySent(at: replySentNanos) }
        }
        events.publish(message, replySentNanos: replySentNanos)
    }

    public var count: Int { state.withLock { $0.entries.count } }

    /// Messages evicted (`maxMessages`, quotas), expired (TTL, `--max-age`) and deleted over the
    /// API, since the start.
    public var removedCounts: (evicted: Int, expired: Int, deleted: Int) { state.withLock { ($0.evicted, $0.expired, $0.deleted) } }

    /// All messages, oldest first.
    public func messages() -> [CapturedMessage] {
        state.withLock { state in
            state.order[state.head...].compactMap { state.entries[$0]?.message }
        }
    }

    public func message(id: String) -> CapturedMessage? {
        state.withLock { $0.entries[id]?.message }
    }

    /// The raw bytes as stored (the `Received:` header first), or nil for an unknown id or a
    /// message stored without its body (`--discard`).
    public func raw(id: String) async throws -> ByteBuffer? {
        // The entry is taken out of the lock; its bytes are copied into a buffer outside it.
        let held = state.withLock { state in state.entries[id].map { ($0, $0.rawCount) } }
        guard let (entry, count) = held else { return nil }
        if let count { return entry.copyRaw(count: count) }
        return try await disk?.readRaw(id: id)
    }

    /// The message bytes exactly as the client sent them (dot-unstuffed), without the
    /// `Received:` header the sink prepended.
    public func receivedBytes(id: String) async throws -> ByteBuffer? {
        guard let message = message(id: id), var raw = try await raw(id: id) else { return nil }
        raw.moveReaderIndex(forwardBy: min(message.receivedHeaderLength, raw.readableBytes))
        return raw
    }

    public func removeAll() {
        let ids = state.withLock { state in
            let ids = Array(state.entries.keys)
            state = State(evicted: state.evicted, expired: state.expired, deleted: state.deleted + ids.count, boxEvictions: state.boxEvictions)
            return ids
        }
        index?.later { try $0.deleteAll() }
        disk?.delete(ids: ids)
    }

    /// Deletes these messages; returns how many existed.
    @discardableResult
    public func delete(ids: [String]) -> Int {
        let removed = state.withLock { state in
            let removed = ids.filter { state.remove($0) != nil }
            state.deleted += removed.count
            return removed
        }
        forget(removed)
        return removed.count
    }

    /// Messages newest first, optionally only those filed under `mailbox`.
    public func listings(mailbox: String? = nil) -> [Listing] {
        state.withLock { state in
            var result: [Listing] = []
            for id in state.order[state.head...].reversed() {
                guard let entry = state.entries[id] else { continue }
                if let mailbox, !entry.mailboxes.contains(mailbox) { continue }
                result.append(Listing(message: entry.message, read: entry.read, tags: entry.tags, mailboxes: entry.mailboxes))
            }
            return result
        }
    }

    /// One page of the list, newest first, with the mailbox's counts: one pass under the lock
    /// that copies only the page (100 000 messages: a few ms, where copying every listing took
    /// hundreds).
    func listingPage(mailbox: String?, start: Int, limit: Int) -> (items: [Listing], total: Int, unread: Int, tags: [String]) {
        state.withLock { state in
            var items: [Listing] = []
            var total = 0, unread = 0
            var tags: [String] = []
            let end = limit == 0 ? Int.max : start + limit
            for id in state.order[state.head...].reversed() {
                guard let entry = state.entries[id] else { continue }
                if let mailbox, !entry.mailboxes.contains(mailbox) { continue }
                if total >= start && total < end {
                    items.append(Listing(message: entry.message, read: entry.read, tags: entry.tags, mailboxes: entry.mailboxes))
                }
                total += 1
                if !entry.read { unread += 1 }
                tags += entry.tags
            }
            return (items, total, unread, Tagging.normalized(tags))
        }
    }

    /// How many messages are stored, and how many of them are unread.
    public func counts() -> (total: Int, unread: Int) {
        state.withLock { state in
            var total = 0, unread = 0
            for id in state.order[state.head...] {
                guard let entry = state.entries[id] else { continue }
                total += 1
                if !entry.read { unread += 1 }
            }
            return (total, unread)
        }
    }

    public func listing(id: String) -> Listing? {
        state.withLock { state in
            state.entries[id].map { Listing(message: $0.message, read: $0.read, tags: $0.tags, mailboxes: $0.mailboxes) }
        }
    }

    /// Adds a hand-over to an upstream to a stored message's capture metadata (in the index
    /// too, with `--data`, so a restart keeps it) and announces it on the event stream.
    /// Returns false when the message is gone (evicted or deleted meanwhile).
    @discardableResult
    public func recordRelay(_ hop: RelayHop, id: String) -> Bool {
        let updated = state.withLock { state -> CapturedMessage? in
            guard state.entries[id] != nil else { return nil }
            state.entries[id]!.message.relay = (state.entries[id]!.message.relay ?? []) + [hop]
            return state.entries[id]!.message
        }
        guard let updated else { return false }
        updateIndex { try $0.setCaptured(updated) }
        events.publish(.relay(RelayEvent(id: id, hop: hop, mailboxes: MailboxFiling.names(for: updated))))
        return true
    }

    /// Marks messages read or unread.
    public func setRead(_ read: Bool, ids: [String]) {
        state.withLock { state in
            for id in ids { state.entries[id]?.read = read }
        }
        updateIndex { try $0.setRead(read, ids: ids) }
    }

    /// The message's summary, parsing it on first use (from memory or disk).
    public func summary(id: String) async -> MessageSummary? {
        let (message, cached) = state.withLock { state in (state.entries[id]?.message, state.entries[id]?.summary) }
        guard let message else { return nil }
        if let cached { return cached }
        let parsed = try? await parsed(id: id)
        let summary = MessageSummary(captured: message, parsed: parsed)
        state.withLock { $0.entries[id]?.summary = summary }
        return summary
    }

    /// The MIME parse of the stored message, without the sink's own `Received:` header.
    public func parsed(id: String) async throws -> ParsedMessage? {
        guard let bytes = try await raw(id: id) else { return nil }
        return ParsedMessage(bytes: Array(bytes.readableBytesView))
    }

    /// Runs a change to the index after every write queued so far has reached it (with
    /// `--fsync never` a message reaches the index through the disk writer's queue).
    func updateIndex(_ change: @escaping @Sendable (MessageIndex) throws -> Void) {
        guard let disk, let index else { return }
        disk.afterQueuedWrites { index.later(change) }
    }

    /// Removes messages already gone from memory from the index and the files.
    func forget(_ ids: [String]) {
        guard !ids.isEmpty else { return }
        index?.later { try $0.delete(ids: ids) }
        disk?.delete(ids: ids)
    }

    /// Waits for queued disk writes and indexing (graceful shutdown).
    public func drain() async {
        await disk?.drain()
        await index?.flush()
    }
}
