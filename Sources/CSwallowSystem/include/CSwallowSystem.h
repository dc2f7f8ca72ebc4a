#ifndef CSWALLOW_SYSTEM_H
#define CSWALLOW_SYSTEM_H

/// System calls Swift's Glibc module leaves out (they need _GNU_SOURCE), with a fallback on
/// other systems, so the Swift code calls them without `@_silgen_name`.

/// Makes every file of the file system holding `fd` durable: `syncfs(2)` on Linux; elsewhere
/// `fcntl(F_FULLFSYNC)` where it exists, else `fsync(fd)`. 0 or -1 with errno.
int swallow_syncfs(int fd);

/// Lowers the calling thread to the idle scheduling class (`SCHED_IDLE` on Linux: it runs only
/// when nothing else wants the CPU); returns a token for `swallow_restore_scheduling`, or -1
/// when the system has no such class (nothing changed).
int swallow_enter_idle_scheduling(void);

/// Undoes `swallow_enter_idle_scheduling` with its token.
void swallow_restore_scheduling(int token);

/// Keeps allocations up to `mmap_threshold` bytes on the heap and lets the heap keep up to
/// `trim_threshold` free bytes (glibc's `mallopt`; nothing elsewhere). With glibc's defaults a
/// process that allocates and frees 200 KiB buffers at a high rate maps, faults in and
/// unmaps fresh pages for each one.
void swallow_keep_large_allocations(unsigned long mmap_threshold, unsigned long trim_threshold);

/// Caps the number of malloc arenas at `count` (glibc's `M_ARENA_MAX`; nothing elsewhere), unless
/// the environment already sets `MALLOC_ARENA_MAX`. Only threads that have not allocated yet
/// are bound by it: call it before the process starts any thread.
void swallow_limit_malloc_arenas(int count);

/// Drops this process's page-table entries for code and read-only data: every private,
/// executable or read-only, file-backed mapping that holds no page of its own (`Anonymous: 0`
/// in `/proc/self/smaps`: no relocated page, which exists nowhere else) gets
/// `madvise(MADV_DONTNEED)`. Nothing is lost: the pages stay in the page cache and what runs
/// later is mapped again on its first use (a minor fault). What goes is the resident-set count
/// of code only start-up ran, and of code the kernel mapped around it (fault-around maps whole
/// page-cache folios, many times what was executed). Returns the bytes advised, or -1 where
/// there is no such interface (nothing changed).
long swallow_release_code_pages(void);

/// The CPU time this process's threads used (`CLOCK_PROCESS_CPUTIME_ID`), in nanoseconds.
long long swallow_process_cpu_nanos(void);

/// This process's resident set (`/proc/self/statm`) in bytes, or -1 where unknown.
long long swallow_resident_bytes(void);

/// The wall clock (`CLOCK_REALTIME`) in nanoseconds since the Unix epoch.
long long swallow_realtime_nanos(void);

/// A readiness poller for Swallow's own socket loops (the load generator's, the sink's): epoll on Linux (edge-triggered,
/// each descriptor registered once for reading, writing and hang-up), nothing elsewhere (the
/// functions return -1 with `errno` ENOSYS and the caller uses SwiftNIO's channels instead).
struct swallow_poll_event {
    unsigned long long token;
    /// `SWALLOW_POLL_*` bits.
    unsigned int flags;
};

enum {
    SWALLOW_POLL_READABLE = 1,
    SWALLOW_POLL_WRITABLE = 2,
    /// The peer hung up or the socket has an error: read (or take `SO_ERROR`) to learn which.
    SWALLOW_POLL_HANGUP = 4,
};

/// A new poller with a wake-up descriptor registered under token 0; -1 with errno.
int swallow_poller_create(int *waker);

/// Registers `fd` under `token` for readable, writable and hang-up edges. 0 or -1 with errno.
int swallow_poller_add(int poller, int fd, unsigned long long token);

/// Waits up to `timeout_ns` (-1: without limit) for events; returns how many were written to
/// `events` (0 on time-out or an interrupt), or -1 with errno. The wake-up descriptor's event is
/// drained here and reported under token 0.
int swallow_poller_wait(int poller, int waker, struct swallow_poll_event *events, int capacity, long long timeout_ns);

/// Names the calling thread (at most 15 bytes are kept) for `top -H`, `perf` and `/proc`.
void swallow_name_thread(const char *name);

/// A listening TCP socket, non-blocking, bound to `address` with `SO_REUSEADDR` and
/// `TCP_NODELAY` (which accepted sockets inherit); -1 with errno.
int swallow_tcp_listen(const void *address, unsigned int address_length, int backlog);

/// Accepts a connection from a non-blocking listening socket: a non-blocking descriptor, its
/// peer's address in `address` (up to `*address_length` bytes; the length written back); -1
/// with errno (`EAGAIN` when none waits).
int swallow_tcp_accept(int listener, void *address, unsigned int *address_length);

/// Makes the poller's wait return (from any thread).
void swallow_poller_wake(int waker);

/// A non-blocking TCP socket with `TCP_NODELAY`, bound to `bind_address` when it is not NULL,
/// connecting to `address`. Returns the descriptor (the connection completes when it turns
/// writable; `swallow_socket_error` says how), or -1 with errno.
int swallow_tcp_connect(const void *address, unsigned int address_length, const void *bind_address, unsigned int bind_length);

/// The socket's pending error (`SO_ERROR`): 0 when it connected.
int swallow_socket_error(int fd);

/// `send` without SIGPIPE; -1 with errno.
long swallow_send(int fd, const void *bytes, unsigned long count);

#endif
