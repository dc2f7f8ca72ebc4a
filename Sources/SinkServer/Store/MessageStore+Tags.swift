import MailMessage
import Synchronization

// The API's side of tags: list, set, rename, remove. Memory is changed at once; the index
// (with `--data`) after the writes queued before the change, so a restart keeps them.
extension MessageStore {
    /// Every tag in use with its message count, sorted as Mailpit lists them.
    public func tagCounts() -> [(tag: String, count: Int)] {
        let counts = state.withLock { state in
            var counts: [String: (name: String, count: Int)] = [:]
            for entry in state.entries.values {
                for tag in entry.tags { counts[tag.lowercased(), default: (tag, 0)].count += 1 }
            }
            return counts
        }
        return counts.values.map { (tag: $0.name, count: $0.count) }.sorted { $0.tag.lowercased() < $1.tag.lowercased() }
    }

    /// Replaces the tags of these messages (an empty list removes them all); returns how many
    /// of the ids were known.
    @discardableResult
    public func setTags(_ tags: [String], ids: [String]) -> Int {
        let tags = Tagging.normalized(tags)
        let changed = state.withLock { state -> [String] in
            ids.filter { id in
                guard state.entries[id] != nil else { return false }
                state.entries[id]!.tags = tags
                return true
            }
        }
        updateIndex { try $0.setTags(changed.map { ($0, tags) }) }
        return changed.count
    }

    /// Renames a tag on every message (merging with a tag of the new name); returns how many
    /// messages carried it.
    @discardableResult
    public func renameTag(_ old: String, to new: String) -> Int {
        retag { tags in
            guard tags.contains(where: { $0.lowercased() == old.lowercased() }) else { return nil }
            return Tagging.normalized(tags.map { $0.lowercased() == old.lowercased() ? new : $0 })
        }
    }

    /// Removes a tag from every message; returns how many carried it.
    @discardableResult
    public func removeTag(_ tag: String) -> Int {
        retag { tags in
            guard tags.contains(where: { $0.lowercased() == tag.lowercased() }) else { return nil }
            return tags.filter { $0.lowercased() != tag.lowercased() }
        }
    }

    /// Applies `change` to every message's tags (nil: unchanged) and records what changed.
    private func retag(_ change: ([String]) -> [String]?) -> Int {
        let changed = state.withLock { state -> [(String, [String])] in
            var changed: [(String, [String])] = []
            for id in Array(state.entries.keys) {
                guard let tags = change(state.entries[id]!.tags) else { continue }
                state.entries[id]!.tags = tags
                changed.append((id, tags))
            }
            return changed
        }
        if !changed.isEmpty { updateIndex { try $0.setTags(changed) } }
        return changed.count
    }
}
