import MailMessage

extension MessageStore {
    /// One page of a list or a search, with the counts Mailpit's `MessagesSummary` reports.
    public struct Page: Sendable {
        public struct Item: Sendable {
            public var listing: Listing
            public var summary: MessageSummary
        }

        public var items: [Item]
        /// Messages in the mailbox (or the store), and how many are unread.
        public var total: Int
        public var unread: Int
        /// Messages matching the search (all of the mailbox for a list), and how many are unread.
        public var matches: Int
        public var matchesUnread: Int
        public var tags: [String]
    }

    /// Newest first, `limit` 0 meaning all. With a disk index (`--data`) the database answers;
    /// otherwise summaries are made on first use and kept in memory.
    func page(mailbox: String?, search: SearchQuery?, start: Int, limit: Int) async throws(StorageFailure) -> Page {
        if let index {
            // Read-your-writes: a change to tags or read flags reaches the index through the
            // disk writer's queue (after the writes queued before it), then the index's.
            await disk?.passQueuedWrites()
            await index.flush()
            do {
                let page = try index.page(mailbox: mailbox, search: search, start: start, limit: limit)
                health.succeeded(.index)
                return page
            } catch {
                health.failed(.index, "list or search messages", error)
                throw StorageFailure(component: .index, operation: "list or search messages", underlying: "\(error)")
            }
        }
        guard let search else {
            let page = listingPage(mailbox: mailbox, start: start, limit: limit)
            var items: [Page.Item] = []
            for listing in page.items {
                guard let summary = await summary(id: listing.message.id) else { continue }
                items.append(Page.Item(listing: listing, summary: summary))
            }
            return Page(items: items, total: page.total, unread: page.unread, matches: page.total, matchesUnread: page.unread, tags: page.tags)
        }
        let all = listings(mailbox: mailbox)
        var matching: [(Listing, MessageSummary?)] = []
        for listing in all {
            guard let summary = await summary(id: listing.message.id) else { continue }
            if search.matches(summary, read: listing.read, tags: listing.tags) { matching.append((listing, summary)) }
        }
        var items: [Page.Item] = []
        if start < matching.count {
            let end = limit == 0 ? matching.count : min(matching.count, start + limit)
            for (listing, known) in matching[start..<end] {
                var made = known
                if made == nil { made = await summary(id: listing.message.id) }
                guard let summary = made else { continue }
                items.append(Page.Item(listing: listing, summary: summary))
            }
        }
        return Page(
            items: items,
            total: all.count,
            unread: all.filter { !$0.read }.count,
            matches: matching.count,
            matchesUnread: matching.filter { !$0.0.read }.count,
            tags: Tagging.normalized(all.flatMap(\.tags))
        )
    }

    /// Ids of every message of the mailbox matching `search` (all of them without one), newest first.
    func matchingIDs(mailbox: String?, search: SearchQuery?) async throws(StorageFailure) -> [String] {
        try await page(mailbox: mailbox, search: search, start: 0, limit: 0).items.map(\.listing.message.id)
    }
}
