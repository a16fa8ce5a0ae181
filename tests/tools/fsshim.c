/* SPDX-License-Identifier: MIT */
/*
 * fsshim - an LD_PRELOAD library for the crash tests, acting only on files below
 * $IMGD_SHIM_ROOT (an output tree; everything else, the ledger included, is untouched):
 *
 * Power-cut journal ($IMGD_SHIM_LOG, a directory): every fsync/fdatasync of a file below the
 * root copies the file's content as it is at that moment to a snapshot and appends
 * "F <inode> <snapshot>" to $IMGD_SHIM_LOG/journal; every fsync of a directory appends
 * "D <path>" and one "<type> <inode> <name>" line per entry, then "E". Replaying the journal
 * gives what would survive a power cut at any moment: each directory as of its last fsync,
 * each file's content as of its last fsync (tests/integration/test-crash.c does the replay).
 *
 * Disk full ($IMGD_SHIM_ENOSPC, a path): while that file exists, creating files or
 * directories below the root and writing to files below the root fail with ENOSPC.
 *
 * Read-only file system ($IMGD_SHIM_EROFS, a path): while that file exists, what a file system
 * remounted read-only refuses fails with EROFS below the root: creating, opening for writing,
 * writing, truncating, renaming and removing files and directories (descriptors opened
 * before stay open, as they do when the kernel remounts a file system read-only after an
 * error; only their writes fail).
 *
 * A failing fsync ($IMGD_SHIM_FSYNC_EIO, a path): the next fsync of a regular file below the
 * root removes that file and fails with EIO, without syncing.
 */
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define REAL(name)                                                                                 \
        static __typeof__(name) *real_##name;                                                      \
        if (!real_##name)                                                                          \
        real_##name = (__typeof__(name) *)dlsym(RTLD_NEXT, #name)

static bool below_root(const char *path)
{
        const char *root = getenv("IMGD_SHIM_ROOT");
        size_t n;

        if (!root || !path)
                return false;
        n = strlen(root);
        return strncmp(path, root, n) == 0 && (path[n] == '/' || path[n] == '\0');
}

static bool fd_path(int fd, char *buf, size_t len)
{
        char link[64];
        ssize_t k;

        snprintf(link, sizeof link, "/proc/self/fd/%d", fd);
        k = readlink(link, buf, len - 1);
        if (k <= 0)
                return false;
        buf[k] = '\0';
        return true;
}

static bool fd_below_root(int fd)
{
        char path[PATH_MAX];

        return fd_path(fd, path, sizeof path) && below_root(path);
}

static bool disk_full(void)
{
        const char *flag = getenv("IMGD_SHIM_ENOSPC");

        return flag && access(flag, F_OK) == 0;
}

/* The error a write below the root fails with now: ENOSPC, EROFS, or 0 (none). */
static int write_fault(void)
{
        const char *ro = getenv("IMGD_SHIM_EROFS");

        if (disk_full())
                return ENOSPC;
        if (ro && access(ro, F_OK) == 0)
                return EROFS;
        return 0;
}

static int fail_with(int e)
{
        errno = e;
        return -1;
}

static bool abs_below_root(int dirfd, const char *path)
{
        char dir[PATH_MAX], full[PATH_MAX * 2];

        if (path[0] == '/')
                return below_root(path);
        if (dirfd == AT_FDCWD) {
                if (!getcwd(dir, sizeof dir))
                        return false;
        } else if (!fd_path(dirfd, dir, sizeof dir)) {
                return false;
        }
        snprintf(full, sizeof full, "%s/%s", dir, path);
        return below_root(full);
}

/* Appends one record to the journal with a single write (O_APPEND keeps records whole). */
static void journal(const char *rec, size_t len)
{
        const char *log = getenv("IMGD_SHIM_LOG");
        char path[PATH_MAX];
        int fd;

        snprintf(path, sizeof path, "%s/journal", log);
        fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
        if (fd < 0)
                return;
        (void)!write(fd, rec, len);
        close(fd);
}

static void record_sync(int fd)
{
        const char *log = getenv("IMGD_SHIM_LOG");
        static unsigned counter;
        struct stat st;
        char *rec = NULL;
        size_t len = 0;
        FILE *f;

        if (!log || !fd_below_root(fd) || fstat(fd, &st) < 0)
                return;
        f = open_memstream(&rec, &len);
        if (!f)
                return;
        if (S_ISREG(st.st_mode)) {
                char snap[PATH_MAX], buf[65536];
                off_t off = 0;
                ssize_t k;
                int out;

                snprintf(snap, sizeof snap, "%s/snap-%d-%u", log, (int)getpid(), counter++);
                out = open(snap, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
                if (out < 0)
                        goto done;
                while ((k = pread(fd, buf, sizeof buf, off)) > 0) {
                        (void)!write(out, buf, (size_t)k);
                        off += k;
                }
                close(out);
                fprintf(f, "F %llu %s\n", (unsigned long long)st.st_ino, snap);
        } else if (S_ISDIR(st.st_mode)) {
                char path[PATH_MAX];
                int dfd = openat(fd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
                DIR *d = dfd >= 0 ? fdopendir(dfd) : NULL;
                struct dirent *de;

                if (!d || !fd_path(fd, path, sizeof path)) {
                        if (d)
                                closedir(d);
                        goto done;
                }
                fprintf(f, "D %s\n", path);
                while ((de = readdir(d))) {
                        struct stat es;
                        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, ".."))
                                continue;
                        if (fstatat(dirfd(d), de->d_name, &es, AT_SYMLINK_NOFOLLOW) < 0)
                                continue;
                        fprintf(f, "%c %llu %s\n", S_ISDIR(es.st_mode) ? 'd' : 'f',
                                (unsigned long long)es.st_ino, de->d_name);
                }
                closedir(d);
                fprintf(f, "E\n");
        }
done:
        fclose(f);
        if (len > 0)
                journal(rec, len);
        free(rec);
}

static bool fsync_fails(int fd)
{
        const char *flag = getenv("IMGD_SHIM_FSYNC_EIO");
        struct stat st;

        if (!flag || fstat(fd, &st) < 0 || !S_ISREG(st.st_mode) || !fd_below_root(fd))
                return false;
        return unlink(flag) == 0; /* once */
}

int fsync(int fd)
{
        REAL(fsync);
        if (fsync_fails(fd)) {
                errno = EIO;
                return -1;
        }
        record_sync(fd);
        return real_fsync(fd);
}

int fdatasync(int fd)
{
        REAL(fdatasync);
        record_sync(fd);
        return real_fdatasync(fd);
}

int open(const char *path, int flags, ...)
{
        mode_t mode = 0;
        va_list ap;
        REAL(open);

        if ((flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE) {
                va_start(ap, flags);
                mode = va_arg(ap, mode_t);
                va_end(ap);
                if (write_fault() && abs_below_root(AT_FDCWD, path))
                        return fail_with(write_fault());
        }
        if ((flags & O_ACCMODE) != O_RDONLY && write_fault() == EROFS &&
            abs_below_root(AT_FDCWD, path))
                return fail_with(EROFS);
        return real_open(path, flags, mode);
}

int open64(const char *path, int flags, ...) __attribute__((alias("open")));

int openat(int dirfd, const char *path, int flags, ...)
{
        mode_t mode = 0;
        va_list ap;
        REAL(openat);

        if ((flags & O_CREAT) || (flags & O_TMPFILE) == O_TMPFILE) {
                va_start(ap, flags);
                mode = va_arg(ap, mode_t);
                va_end(ap);
                if (write_fault() && abs_below_root(dirfd, path))
                        return fail_with(write_fault());
        }
        if ((flags & O_ACCMODE) != O_RDONLY && write_fault() == EROFS &&
            abs_below_root(dirfd, path))
                return fail_with(EROFS);
        return real_openat(dirfd, path, flags, mode);
}

int mkdir(const char *path, mode_t mode)
{
        REAL(mkdir);
        if (write_fault() && abs_below_root(AT_FDCWD, path))
                return fail_with(write_fault());
        return real_mkdir(path, mode);
}

ssize_t write(int fd, const void *buf, size_t n)
{
        REAL(write);
        if (n > 0 && write_fault() && fd_below_root(fd))
                return fail_with(write_fault());
        return real_write(fd, buf, n);
}

ssize_t pwrite(int fd, const void *buf, size_t n, off_t off)
{
        REAL(pwrite);
        if (n > 0 && write_fault() && fd_below_root(fd))
                return fail_with(write_fault());
        return real_pwrite(fd, buf, n, off);
}

ssize_t pwrite64(int fd, const void *buf, size_t n, off_t off) __attribute__((alias("pwrite")));

int ftruncate(int fd, off_t len)
{
        REAL(ftruncate);
        if (write_fault() == EROFS ? fd_below_root(fd)
                                   : len > 0 && disk_full() && fd_below_root(fd))
                return fail_with(write_fault());
        return real_ftruncate(fd, len);
}

int unlink(const char *path)
{
        REAL(unlink);
        if (write_fault() == EROFS && abs_below_root(AT_FDCWD, path))
                return fail_with(EROFS);
        return real_unlink(path);
}

int rename(const char *from, const char *to)
{
        REAL(rename);
        if (write_fault() == EROFS &&
            (abs_below_root(AT_FDCWD, from) || abs_below_root(AT_FDCWD, to)))
                return fail_with(EROFS);
        return real_rename(from, to);
}
