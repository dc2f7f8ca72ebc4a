extension MessageStore {
    /// The stored entries by message id: an open-addressing table of the entries alone, each
    /// found by its message's id (linear probing; deletion shifts the run back, no tombstones).
    ///
    /// A `[String: Entry]` holds the id again beside each entry (24 bytes a bucket) and keeps
    /// its load under 3/4: at 100 000 messages it had 2^18 buckets, 6.3 MB. Here a bucket is
    /// the entry's reference and 32 bits of its id's hash (compared before the entry is read),
    /// 12 bytes, filled to 7/8: 1.5 MB at 100 000.
    struct EntryTable {
        private var slots: [Entry?] = []
        private var hashes: [UInt32] = []
        private(set) var count = 0

        private var mask: Int { slots.count - 1 }

        private static func hash(_ id: String) -> Int { id.hashValue }

        /// Room for `capacity` entries without growing.
        mutating func reserveCapacity(_ capacity: Int) {
            var size = max(slots.count, 16)
            while capacity > size / 8 * 7 { size *= 2 }
            if size > slots.count { rehash(size) }
        }

        /// The slot holding `id`, if any.
        private func slot(of id: String) -> Int? {
            guard count > 0 else { return nil }
            let tag = UInt32(truncatingIfNeeded: Self.hash(id))
            var index = home(tag)
            while let entry = slots[index] {
                if hashes[index] == tag && entry.id == id { return index }
                index = (index + 1) & mask
            }
            return nil
        }

        subscript(id: String) -> Entry? {
            slot(of: id).flatMap { slots[$0] }
        }

        /// Adds an entry, or replaces the one with the same id.
        mutating func insert(_ entry: Entry) {
            if let index = slot(of: entry.id) {
                slots[index] = entry
                return
            }
            if count + 1 > slots.count / 8 * 7 { rehash(max(16, slots.count * 2)) }
            place(entry, tag: UInt32(truncatingIfNeeded: Self.hash(entry.id)))
            count += 1
        }

        /// Where a tag's run starts (tables are far smaller than 2^32 slots: the tag's bits
        /// are the hash's bits the mask keeps).
        private func home(_ tag: UInt32) -> Int { Int(tag) & mask }

        private mutating func place(_ entry: Entry, tag: UInt32) {
            var index = home(tag)
            while slots[index] != nil { index = (index + 1) & mask }
            slots[index] = entry
            hashes[index] = tag
        }

        private mutating func rehash(_ size: Int) {
            let (oldSlots, oldHashes) = (slots, hashes)
            slots = Array(repeating: nil, count: size)
            hashes = Array(repeating: 0, count: size)
            for (entry, tag) in zip(oldSlots, oldHashes) {
                if let entry { place(entry, tag: tag) }
            }
        }

        @discardableResult
        mutating func removeValue(forKey id: String) -> Entry? {
            guard var hole = slot(of: id) else { return nil }
            let removed = slots[hole]
            slots[hole] = nil
            count -= 1
            // Moves back every entry of the run after the hole that may sit there (its home
            // slot is not cyclically between the hole and where it is).
            var index = hole
            while true {
                index = (index + 1) & mask
                guard let entry = slots[index] else { break }
                let home = home(hashes[index])
                let stays = hole <= index ? (hole < home && home <= index) : (hole < home || home <= index)
                guard !stays else { continue }
                slots[hole] = entry
                hashes[hole] = hashes[index]
                slots[index] = nil
                hole = index
            }
            return removed
        }

        var values: LazyMapSequence<LazyFilterSequence<[Entry?]>, Entry> {
            slots.lazy.filter { $0 != nil }.map { $0! }
        }

        var keys: [String] { values.map(\.id) }
    }
}
