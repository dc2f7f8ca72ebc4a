import MailMessage
import Synchronization

/// Quotas and retention per mailbox: a mailbox's quota evicts only its own oldest messages,
/// its TTL (and `--max-age` for all mail) removes what is older.
extension MessageStore {
    /// One mailbox's messages: how many are stored, and their ids oldest first (ids removed
    /// since are skipped when met, and compacted away).
    struct Box {
        var count = 0
        var order: [String] = []
        var head = 0

        mutating func append(_ id: String) {
            count += 1
            order.append(id)
        }

        /// Drops ids at the front that `isLive` says are gone, and compacts when most of the
        /// list is.
        mutating func compact(isLive: (String) -> Bool) {
            while head < order.count, !isLive(order[head]) { head += 1 }
            if order.count > 64, order.count - head > 2 * count + 64 {
                order = order[head...].filter(isLive)
                head = 0
            } else if head > 1024, head * 2 > order.count {
                order.removeFirst(head)
                head = 0
            }
        }
    }

    /// Evicts, in each of `names` with a quota, its own oldest messages past the quota.
    static func enforce(_ quotas: [Int], names: [String], _ state: inout State) -> [String] {
        var evicted: [String] = []
        for (name, quota) in zip(names, quotas) where quota > 0 {
            while let box = state.boxes[name], box.count > quota {
                var box = box
                box.compact { state.entries[$0] != nil }
                guard box.head < box.order.count else { break }
                let id = box.order[box.head]
                box.head += 1
                state.boxes[name] = box
                guard state.remove(id) != nil else { continue }
                evicted.append(id)
                state.evicted += 1
                // Bounded: names past 10 000 are counted under "other".
                let key = state.boxEvictions.count < 10_000 || state.boxEvictions[name] != nil ? name : "other"
                state.boxEvictions[key, default: 0] += 1
            }
        }
        return evicted
    }

    /// Every mailbox's quota, after loading a data directory.
    func enforceQuotas(_ state: inout State) -> [String] {
        let names = Array(state.boxes.keys)
        return Self.enforce(mailboxes.quotas(for: names), names: names, &state)
    }

    /// Removes messages older than their mailbox's TTL or than `maxAge` seconds (nil: no
    /// global limit), by the time their data ended; returns how many went.
    @discardableResult
    public func expire(nowNanos: Int64, maxAge: Double?) -> Int {
        let retentions = mailboxes.retentions
        guard maxAge != nil || !retentions.isEmpty else { return 0 }
        let removed: [String] = state.withLock { state in
            var removed: [String] = []
            if let maxAge {
                let cutoff = nowNanos - Int64(maxAge * 1e9)
                while state.head < state.order.count {
                    let id = state.order[state.head]
                    if let entry = state.entries[id] {
                        guard entry.message.timestamps.dataEndNanos < cutoff else { break }
                        state.remove(id)
                        removed.append(id)
                    }
                    state.head += 1
                }
                state.compactOrder()
            }
            for (name, seconds) in retentions {
                let cutoff = nowNanos - Int64(seconds * 1e9)
                while var box = state.boxes[name] {
                    box.compact { state.entries[$0] != nil }
                    state.boxes[name] = box
                    guard box.head < box.order.count, let entry = state.entries[box.order[box.head]],
                        entry.message.timestamps.dataEndNanos < cutoff
                    else { break }
                    state.remove(entry.message.id)
                    removed.append(entry.message.id)
                }
            }
            state.expired += removed.count
            return removed
        }
        forget(removed)
        return removed.count
    }

    /// The ids filed under `name`, oldest first.
    func ids(inMailbox name: String) -> [String] {
        state.withLock { state in
            guard let box = state.boxes[name] else { return [] }
            return box.order[box.head...].filter { state.entries[$0]?.mailboxes.contains(name) ?? false }
        }
    }

    /// Per mailbox with messages or evictions: stored messages and quota evictions since the start.
    public func mailboxCounts() -> [String: (messages: Int, evicted: Int)] {
        state.withLock { state in
            var counts: [String: (messages: Int, evicted: Int)] = [:]
            for (name, box) in state.boxes { counts[name] = (box.count, 0) }
            for (name, evicted) in state.boxEvictions { counts[name, default: (0, 0)].evicted = evicted }
            return counts
        }
    }

    /// How many messages `name` holds now.
    public func messageCount(mailbox name: String) -> Int {
        state.withLock { $0.boxes[name]?.count ?? 0 }
    }

    /// `mailboxCounts` with at most `limit` names (the largest by messages, then evictions);
    /// the rest summed under `other`, so a label set stays bounded.
    public func mailboxCounts(limit: Int) -> [(name: String, messages: Int, evicted: Int)] {
        let all = mailboxCounts().map { (name: $0.key, messages: $0.value.messages, evicted: $0.value.evicted) }
            .sorted { ($0.messages, $0.evicted, $1.name) > ($1.messages, $1.evicted, $0.name) }
        guard all.count > limit else { return all.sorted { $0.name < $1.name } }
        let rest = all[limit...]
        let other = (name: "other", messages: rest.reduce(0) { $0 + $1.messages }, evicted: rest.reduce(0) { $0 + $1.evicted })
        return all[..<limit].sorted { $0.name < $1.name } + [other]
    }
}
