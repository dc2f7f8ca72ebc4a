import Foundation
import Synchronization

#if canImport(Glibc)
    import Glibc
#elseif canImport(Musl)
    import Musl
#elseif canImport(Darwin)
    import Darwin
#endif

/// Where the in-memory store keeps the raw bytes of large messages: packed one after another
/// into regions of `regionSize`, which a helper thread maps and touches page by page before
/// they are needed.
///
/// Why: holding every message means writing each one into memory the process never used.
/// The kernel must fault and zero every fresh page, and on this project's machine (a VM)
/// that first touch costs ~1.3 GB/s: at 200 KiB it was 51 faults and ~60% of the event
/// loop's time per message (`perf record -g`: `clear_page_erms`, `exc_page_fault` under
/// `insertNow`), against half that CPU when the same sink reused freed memory. Here the
/// faults happen on the helper thread, ahead of the messages, so the loop that received the
/// message only copies it; the CPU is the same, taken off the thread that answers clients.
///
/// Small messages (under `smallest`) stay in their entry's own allocation (one allocation a
/// message, exact size: the 1 KiB footprint), the largest (over `largest`) too. A region is
/// unmapped when the last message in it is gone; a message kept long pins its region, the
/// price of packing. At most `readyAhead` prepared regions wait unused (16 MiB resident, made
/// only after a first large message arrived).
final class MessageArena: Sendable {
    /// A mapped region; unmapped when the arena and every message in it let go of it.
    final class Region: @unchecked Sendable {
        let base: UnsafeMutableRawPointer
        let size: Int

        init?(size: Int) {
            #if canImport(Darwin)
                let flags = MAP_PRIVATE | MAP_ANON
            #else
                let flags = MAP_PRIVATE | MAP_ANONYMOUS
            #endif
            guard let mapped = mmap(nil, size, PROT_READ | PROT_WRITE, flags, -1, 0), mapped != MAP_FAILED else { return nil }
            base = mapped
            self.size = size
        }

        /// Faults every page in now (a write per page), so later writes find them mapped.
        func touchEveryPage() {
            var offset = 0
            while offset < size {
                base.storeBytes(of: 0, toByteOffset: offset, as: UInt8.self)
                offset += MessageArena.pageSize
            }
        }

        deinit { munmap(base, size) }
    }

    /// A message's bytes in a region (the entry holds the region alive).
    final class Bytes: @unchecked Sendable {
        let region: Region
        let offset: Int

        init(region: Region, offset: Int) {
            self.region = region
            self.offset = offset
        }

        var start: UnsafeMutableRawPointer { region.base + offset }
    }

    static let regionSize = 8 << 20
    static let smallest = 16 << 10
    static let largest = regionSize / 4
    static let readyAhead = 2
    static let pageSize = Int(sysconf(Int32(_SC_PAGESIZE)))

    private struct State {
        var current: Region?
        var used = 0
        var ready: [Region] = []
        var preparing = false
    }

    private let state = Mutex(State())

    init() {}

    /// Room for `count` bytes, or nil when the message is not one the arena keeps (too small,
    /// too large) or no region could be mapped: the caller then allocates the bytes itself.
    func allocate(_ count: Int) -> Bytes? {
        guard count >= Self.smallest, count <= Self.largest else { return nil }
        let footprint = (count + 7) & ~7
        let (bytes, prepare) = state.withLock { state -> (Bytes?, Bool) in
            if let current = state.current, state.used + count <= current.size {
                defer { state.used += footprint }
                return (Bytes(region: current, offset: state.used), false)
            }
            // The current region is full (its unused end stays unused): the next one is a
            // prepared region, or, when the helper is behind, one mapped here and faulted as
            // it is written.
            guard let next = state.ready.isEmpty ? Region(size: Self.regionSize) : state.ready.removeFirst() else {
                return (nil, false)
            }
            state.current = next
            state.used = footprint
            let prepare = !state.preparing && state.ready.count < Self.readyAhead
            if prepare { state.preparing = true }
            return (Bytes(region: next, offset: 0), prepare)
        }
        if prepare {
            let thread = Thread { self.prepareAhead() }
            thread.name = "swallow-arena"
            thread.start()
        }
        return bytes
    }

    /// Maps and faults regions until `readyAhead` wait (or mapping fails).
    private func prepareAhead() {
        while let region = Region(size: Self.regionSize) {
            region.touchEveryPage()
            let more = state.withLock { state in
                state.ready.append(region)
                return state.ready.count < Self.readyAhead
            }
            if !more { break }
        }
        state.withLock { $0.preparing = false }
    }
}
