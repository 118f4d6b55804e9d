/* LD_PRELOAD shim for the I/O fault tests: the Nth write (or fsync) to a file whose path contains
 * FAULT_PATH fails once with EIO; every other call goes through to libc unchanged.
 *
 *   FAULT_PATH=faultlog FAULT_AT=7 FAULT_OP=write LD_PRELOAD=./fail_nth_io.so python ...
 *
 * FAULT_OP is "write" (pwrite, pwrite64, write) or "sync" (fsync, fdatasync). */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

static long calls = 0;

static int should_fail(int fd, const char *op) {
    const char *path = getenv("FAULT_PATH"), *at = getenv("FAULT_AT"), *kind = getenv("FAULT_OP");
    if (!path || !at || !kind || strcmp(kind, op) != 0) return 0;
    char link[64], target[4096];
    snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
    ssize_t n = readlink(link, target, sizeof target - 1);
    if (n <= 0) return 0;
    target[n] = 0;
    if (!strstr(target, path)) return 0;
    return __atomic_add_fetch(&calls, 1, __ATOMIC_SEQ_CST) == atol(at);
}

#define PASS(name, ret, ...) static ret (*real)(__VA_ARGS__); if (!real) real = dlsym(RTLD_NEXT, name)

ssize_t pwrite64(int fd, const void *buf, size_t count, off_t offset) {
    PASS("pwrite64", ssize_t, int, const void *, size_t, off_t);
    if (should_fail(fd, "write")) { errno = EIO; return -1; }
    return real(fd, buf, count, offset);
}

ssize_t pwrite(int fd, const void *buf, size_t count, off_t offset) {
    PASS("pwrite", ssize_t, int, const void *, size_t, off_t);
    if (should_fail(fd, "write")) { errno = EIO; return -1; }
    return real(fd, buf, count, offset);
}

int fsync(int fd) {
    PASS("fsync", int, int);
    if (should_fail(fd, "sync")) { errno = EIO; return -1; }
    return real(fd);
}

int fdatasync(int fd) {
    PASS("fdatasync", int, int);
    if (should_fail(fd, "sync")) { errno = EIO; return -1; }
    return real(fd);
}
