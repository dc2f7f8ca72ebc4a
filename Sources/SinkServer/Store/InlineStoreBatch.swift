import MailMessage
import NIOCore

/// The small messages of a burst that one event loop stores itself in one pass of its loop
/// (`DiskStore.storeInline`): gathered while the pass reads its connections, written together
/// by a task that runs right after that I/O, and answered from it (with `--fsync always`, once
/// the disk writer synced the spool and the journal). One append to the spool and
/// one to the journal per pass instead of two per message: two per message saturated the loop.
///
/// Confined to its event loop: only that loop's handlers add to it, and its task runs there.
final class InlineStoreBatch: @unchecked Sendable {
    struct Item {
        var message: CapturedMessage
        var raw: ByteBuffer
        /// Runs on the loop once the message is stored (or failed to be).
        var completion: (Result<Void, any Error>) -> Void
    }

    private let loop: any EventLoop
    private var items: [Item] = []
    private var scheduled = false

    init(loop: any EventLoop) {
        self.loop = loop
    }

    func add(_ item: Item, to store: MessageStore) {
        loop.assertInEventLoop()
        items.append(item)
        guard !scheduled else { return }
        scheduled = true
        loop.execute {
            // The pass's array is taken and, once stored, given back emptied: copied out and
            // emptied in place, it was a new array each pass, on fresh pages while the heap
            // grows (`perf record -e page-faults`, `--fsync batch`).
            var items: [Item] = []
            swap(&items, &self.items)
            self.scheduled = false
            store.insertInline(items, on: self.loop)
            items.removeAll(keepingCapacity: true)
            if self.items.isEmpty { self.items = items }
        }
    }
}
