#define _GNU_SOURCE
#include "CSwallowSystem.h"

#include <fcntl.h>
#include <time.h>
#include <stdlib.h>
#include <unistd.h>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

#if defined(__linux__)
#include <sched.h>
#include <sys/syscall.h>
#endif

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
