#define _GNU_SOURCE
#include "CSwallowSystem.h"

#include <fcntl.h>
#include <pthread.h>
#include <time.h>
#include <stdlib.h>
#include <unistd.h>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

#if defined(__linux__)
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#endif

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

int swallow_syncfs(int fd) {
#if defined(__linux__)
    return syncfs(fd);
#elif defined(F_FULLFSYNC)
    return fcntl(fd, F_FULLFSYNC) == -1 ? fsync(fd) : 0;
#else
    return fsync(fd);
#endif
}

int swallow_enter_idle_scheduling(void) {
#if defined(__linux__)
    // Linux schedules threads: the policy is set on this thread alone.
    pid_t thread = (pid_t)syscall(SYS_gettid);
    int previous = sched_getscheduler(thread);
    if (previous < 0) return -1;
    struct sched_param idle = { .sched_priority = 0 };
    if (sched_setscheduler(thread, SCHED_IDLE, &idle) != 0) return -1;
    return previous;
#else
    return -1;
#endif
}

void swallow_restore_scheduling(int token) {
#if defined(__linux__)
    if (token < 0) return;
    pid_t thread = (pid_t)syscall(SYS_gettid);
    struct sched_param parameters = { .sched_priority = 0 };
    sched_setscheduler(thread, token, &parameters);
#else
    (void)token;
#endif
}

void swallow_keep_large_allocations(unsigned long mmap_threshold, unsigned long trim_threshold) {
#if defined(__GLIBC__)
    mallopt(M_MMAP_THRESHOLD, (int)mmap_threshold);
    mallopt(M_TRIM_THRESHOLD, (int)trim_threshold);
#else
    (void)mmap_threshold;
    (void)trim_threshold;
#endif
}

void swallow_limit_malloc_arenas(int count) {
#if defined(__GLIBC__)
    if (getenv("MALLOC_ARENA_MAX") != NULL) return;
    mallopt(M_ARENA_MAX, count);
#else
    (void)count;
#endif
}

long long swallow_realtime_nanos(void) {
    struct timespec spec;
    clock_gettime(CLOCK_REALTIME, &spec);
    return (long long)spec.tv_sec * 1000000000LL + (long long)spec.tv_nsec;
}

long long swallow_process_cpu_nanos(void) {
    struct timespec spec;
    if (clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &spec) != 0) return -1;
    return (long long)spec.tv_sec * 1000000000LL + (long long)spec.tv_nsec;
}

long long swallow_resident_bytes(void) {
#if defined(__linux__)
    FILE *statm = fopen("/proc/self/statm", "r");
    if (statm == NULL) return -1;
    long long size = 0, resident = -1;
    if (fscanf(statm, "%lld %lld", &size, &resident) != 2) resident = -1;
    fclose(statm);
    return resident < 0 ? -1 : resident * (long long)sysconf(_SC_PAGESIZE);
#else
    return -1;
#endif
}

long swallow_release_code_pages(void) {
#if defined(__linux__)
    FILE *smaps = fopen("/proc/self/smaps", "r");
    if (smaps == NULL) return -1;
    // Collected first and advised after reading: smaps describes the mappings as they are.
    enum { most = 512 };
    unsigned long starts[most], ends[most];
    int count = 0, candidate = 0;
    unsigned long start = 0, end = 0;
    char line[1024];
    while (fgets(line, sizeof line, smaps) != NULL) {
        unsigned long low, high;
        char permissions[8], path[8];
        int fields = sscanf(line, "%lx-%lx %7s %*s %*s %*s %7s", &low, &high, permissions, path);
        if (fields >= 3 && strchr(line, '-') < strchr(line, ' ')) {
            // A mapping's header: code is "r-xp" with a file's path; read-only data "r--p".
            candidate = fields == 4 && (strcmp(permissions, "r-xp") == 0 || strcmp(permissions, "r--p") == 0) && path[0] == '/';
            start = low;
            end = high;
        } else if (candidate && strncmp(line, "Anonymous:", 10) == 0) {
            // A page written in a code mapping (a text relocation) exists nowhere else: keep it.
            if (strtoul(line + 10, NULL, 10) == 0 && count < most) {
                starts[count] = start;
                ends[count] = end;
                count += 1;
            }
            candidate = 0;
        }
    }
    fclose(smaps);
    long advised = 0;
    for (int i = 0; i < count; i++) {
        if (madvise((void *)starts[i], ends[i] - starts[i], MADV_DONTNEED) == 0) advised += (long)(ends[i] - starts[i]);
    }
    return advised;
#else
    return -1;
#endif
}

#if defined(__linux__)

int swallow_poller_create(int *waker) {
    int poller = epoll_create1(EPOLL_CLOEXEC);
    if (poller == -1) return -1;
    int wake = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (wake == -1) {
        int saved = errno;
        close(poller);
        errno = saved;
        return -1;
    }
    struct epoll_event event = {.events = EPOLLIN, .data.u64 = 0};
    if (epoll_ctl(poller, EPOLL_CTL_ADD, wake, &event) == -1) {
        int saved = errno;
        close(wake);
        close(poller);
        errno = saved;
        return -1;
    }
    *waker = wake;
    return poller;
}

int swallow_poller_add(int poller, int fd, unsigned long long token) {
    struct epoll_event event = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.u64 = token};
    return epoll_ctl(poller, EPOLL_CTL_ADD, fd, &event);
}

int swallow_poller_wait(int poller, int waker, struct swallow_poll_event *events, int capacity, long long timeout_ns) {
    struct epoll_event raw[64];
    if (capacity > 64) capacity = 64;
    int count;
    static volatile int no_pwait2 = 0;
    if (!no_pwait2) {
        struct timespec limit = {.tv_sec = timeout_ns / 1000000000LL, .tv_nsec = timeout_ns % 1000000000LL};
        count = epoll_pwait2(poller, raw, capacity, timeout_ns < 0 ? NULL : &limit, NULL);
        if (count == -1 && errno == ENOSYS) no_pwait2 = 1;
    }
    if (no_pwait2) {
        int ms = timeout_ns < 0 ? -1 : (int)((timeout_ns + 999999) / 1000000);
        count = epoll_wait(poller, raw, capacity, ms);
    }
    if (count == -1) return errno == EINTR ? 0 : -1;
    for (int i = 0; i < count; i++) {
        unsigned int flags = 0;
        if (raw[i].events & EPOLLIN) flags |= SWALLOW_POLL_READABLE;
        if (raw[i].events & EPOLLOUT) flags |= SWALLOW_POLL_WRITABLE;
        if (raw[i].events & (EPOLLHUP | EPOLLRDHUP | EPOLLERR)) flags |= SWALLOW_POLL_HANGUP;
        events[i].token = raw[i].data.u64;
        events[i].flags = flags;
        if (raw[i].data.u64 == 0) {
            unsigned long long drained;
            while (read(waker, &drained, sizeof drained) > 0) {
            }
        }
    }
    return count;
}

void swallow_poller_wake(int waker) {
    unsigned long long one = 1;
    ssize_t written = write(waker, &one, sizeof one);
    (void)written;
}

#else

int swallow_poller_create(int *waker) {
    (void)waker;
    errno = ENOSYS;
    return -1;
}

int swallow_poller_add(int poller, int fd, unsigned long long token) {
    (void)poller, (void)fd, (void)token;
    errno = ENOSYS;
    return -1;
}

int swallow_poller_wait(int poller, int waker, struct swallow_poll_event *events, int capacity, long long timeout_ns) {
    (void)poller, (void)waker, (void)events, (void)capacity, (void)timeout_ns;
    errno = ENOSYS;
    return -1;
}

void swallow_poller_wake(int waker) { (void)waker; }

#endif

int swallow_tcp_connect(const void *address, unsigned int address_length, const void *bind_address, unsigned int bind_length) {
    const struct sockaddr *target = address;
#if defined(__linux__)
    int fd = socket(target->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd == -1) return -1;
#else
    int fd = socket(target->sa_family, SOCK_STREAM, 0);
    if (fd == -1) return -1;
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    fcntl(fd, F_SETFD, FD_CLOEXEC);
#endif
    int one = 1;
    if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) == -1) goto fail;
    if (bind_address != NULL && bind(fd, bind_address, bind_length) == -1) goto fail;
    if (connect(fd, target, address_length) == -1 && errno != EINPROGRESS) goto fail;
    return fd;
fail:;
    int saved = errno;
    close(fd);
    errno = saved;
    return -1;
}

int swallow_socket_error(int fd) {
    int error = 0;
    socklen_t length = sizeof error;
    if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &error, &length) == -1) return errno;
    return error;
}

void swallow_name_thread(const char *name) {
#if defined(__linux__)
    char shortened[16];
    strncpy(shortened, name, sizeof shortened - 1);
    shortened[sizeof shortened - 1] = 0;
    pthread_setname_np(pthread_self(), shortened);
#else
    (void)name;
#endif
}

int swallow_tcp_listen(const void *address, unsigned int address_length, int backlog) {
    const struct sockaddr *local = address;
#if defined(__linux__)
    int fd = socket(local->sa_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd == -1) return -1;
#else
    int fd = socket(local->sa_family, SOCK_STREAM, 0);
    if (fd == -1) return -1;
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
#endif
    int one = 1;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one) == -1
        || setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one) == -1
        || bind(fd, local, address_length) == -1 || listen(fd, backlog) == -1) {
        int saved = errno;
        close(fd);
        errno = saved;
        return -1;
    }
    return fd;
}

int swallow_tcp_accept(int listener, void *address, unsigned int *address_length) {
    socklen_t length = *address_length;
#if defined(__linux__)
    int fd = accept4(listener, address, &length, SOCK_NONBLOCK | SOCK_CLOEXEC);
#else
    int fd = accept(listener, address, &length);
    if (fd != -1) fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
#endif
    if (fd != -1) *address_length = length;
    return fd;
}

long swallow_send(int fd, const void *bytes, unsigned long count) {
#if defined(MSG_NOSIGNAL)
    return send(fd, bytes, count, MSG_NOSIGNAL);
#else
    return send(fd, bytes, count, 0);
#endif
}
