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
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
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
            // A mapping's header: code is "r-xp" with a file's path.
            candidate = fields == 4 && strcmp(permissions, "r-xp") == 0 && path[0] == '/';
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
