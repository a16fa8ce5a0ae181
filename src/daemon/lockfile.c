/* SPDX-License-Identifier: MIT */
/*
 * lockfile.c - exclusive lock files (see lockfile.h): flock(LOCK_EX | LOCK_NB) on a file
 * opened O_CLOEXEC, the holder's pid written into it once the lock is held. States:
 *
 *   (none) --- lockfile_take(): flock succeeded, pid written ---> HELD
 *   HELD   --- lockfile_free(): truncated, closed (the kernel drops the lock) ---> (none)
 *
 * A process that finds the lock held reads the pid from the file; the holder writes it only
 * after taking the lock, so a reader racing a starting holder may see an empty file (the
 * holder is then reported as pid 0, unknown). A lock held while the pid it names is dead is
 * held by a process the dead holder left (a child it forked, between fork and exec, when it
 * was killed): lockfile_take() waits up to LOCKFILE_ORPHAN_WAIT_MS for it to let go.
 */
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include "daemon/lockfile.h"
#include "shared/macro.h"

#define LOCKFILE_ORPHAN_WAIT_MS 2000
#define LOCKFILE_ORPHAN_POLL_MS 10

struct lockfile {
        int fd; /* open on the file, holding the flock() */
};

/* The pid written in the lock file open on fd, or 0 when there is none (yet). */
static pid_t lockfile_read_holder(int fd)
{
        char buf[32];
        ssize_t n = pread(fd, buf, sizeof buf - 1, 0);
        char *end;
        long pid;

        if (n <= 0)
                return 0;
        buf[n] = '\0';
        errno = 0;
        pid = strtol(buf, &end, 10);
        if (errno != 0 || end == buf || (*end != '\n' && *end != '\0') || pid <= 0 ||
            pid != (long)(pid_t)pid)
                return 0;
        return (pid_t)pid;
}

/* Replaces the file's contents with "<pid>\n". Returns 0 or a negative errno. */
static int lockfile_write_pid(int fd)
{
        char buf[32];
        int n = snprintf(buf, sizeof buf, "%ld\n", (long)getpid());

        if (ftruncate(fd, 0) < 0)
                return negative_errno();
        if (pwrite(fd, buf, (size_t)n, 0) != n)
                return errno ? negative_errno() : -EIO;
        return 0;
}

int lockfile_take(const char *path, lockfile **ret, pid_t *ret_holder)
{
        _cleanup_close_ int fd = -1;
        lockfile *l;
        int r;

        assert(path);
        assert(ret);

        fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW | O_NOCTTY, 0644);
        if (fd < 0)
                return negative_errno();
        for (unsigned waited = 0;; waited += LOCKFILE_ORPHAN_POLL_MS) {
                pid_t holder;

                if (flock(fd, LOCK_EX | LOCK_NB) == 0)
                        break;
                r = negative_errno();
                if (r != -EWOULDBLOCK)
                        return r;
                holder = lockfile_read_holder(fd);
                /* The holder it names is dead: what holds the lock is a process it left,
                 * which inherited the descriptor (a child between fork and exec when it was
                 * killed) and lets go of it when it execs or exits, within moments. */
                if (holder > 0 && kill(holder, 0) < 0 && errno == ESRCH &&
                    waited < LOCKFILE_ORPHAN_WAIT_MS) {
                        usleep(LOCKFILE_ORPHAN_POLL_MS * 1000);
                        continue;
                }
                if (ret_holder)
                        *ret_holder = holder;
                return r;
        }
        r = lockfile_write_pid(fd);
        if (r < 0)
                return r;

        l = calloc(1, sizeof *l);
        if (!l)
                return -ENOMEM;
        l->fd = TAKE_FD(fd);
        *ret = l;
        return 0;
}

bool lockfile_same_file(const lockfile *l, const char *path)
{
        struct stat held, st;

        assert(l);
        assert(path);
        return fstat(l->fd, &held) == 0 && stat(path, &st) == 0 && held.st_dev == st.st_dev &&
               held.st_ino == st.st_ino;
}

lockfile *lockfile_free(lockfile *l)
{
        if (!l)
                return NULL;
        if (ftruncate(l->fd, 0) < 0) {
                /* Best effort: a pid left behind is only a hint; the flock is the lock. */
        }
        close(l->fd);
        free(l);
        return NULL;
}
