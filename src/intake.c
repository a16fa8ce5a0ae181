/* SPDX-License-Identifier: MIT */
/*
 * intake.c - a file in an upload folder becomes a job; see intake.h.
 *
 * Anything but a regular file is refused with a reason, before it is opened (a device is
 * never opened at all): symlinks (imgd does not follow links out of the upload tree), FIFOs,
 * devices, sockets. A regular file that the ledger already knows by its size, mtime and
 * inode (from lstat(), after the hard-link and size limits) needs nothing more and is not
 * opened: that is most files of a start-up scan. Otherwise it is opened O_NOFOLLOW|O_NONBLOCK
 * (a symlink swapped in fails, a FIFO swapped in opens without waiting for a writer) and
 * everything is decided again on the descriptor: a regular file, not hard-linked elsewhere
 * unless allowed, within the size limit. Its content is hashed from that descriptor, so the
 * recorded SHA-256 is that of one file even if the name is replaced meanwhile.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "imgd/intake.h"
#include "imgd/macro.h"
#include "imgd/pathmap.h"

static int fail(char **ret_error, int r, const char *path, const char *why)
{
        if (asprintf(ret_error, "%s: %s", path, why) < 0)
                *ret_error = NULL;
        return r;
}

static const char *file_type_refusal(mode_t mode)
{
        if (S_ISFIFO(mode))
                return "refused: a FIFO, not a regular file";
        if (S_ISCHR(mode) || S_ISBLK(mode))
                return "refused: a device, not a regular file";
        if (S_ISSOCK(mode))
                return "refused: a socket, not a regular file";
        if (S_ISDIR(mode))
                return "refused: a directory, not a regular file";
        return "refused: not a regular file";
}

/* Refuses a regular file that is hard-linked (unless allowed) or over the size limit. */
static int check_limits(const struct config *cfg, const char *path, const struct stat *st,
                        char **ret_error)
{
        if (st->st_nlink > 1 && !cfg->limits.allow_hardlinks) {
                char why[200];
                snprintf(why, sizeof why,
                         "refused: it has %lu hard links, and a hard link can expose a file from "
                         "outside the upload folder (limits.allow_hardlinks = false)",
                         (unsigned long)st->st_nlink);
                return fail(ret_error, -EMLINK, path, why);
        }
        if ((uint64_t)st->st_size > cfg->limits.max_file_bytes) {
                char why[128];
                snprintf(why, sizeof why, "%" PRIu64 " bytes, over limits.max_file_bytes (%" PRIu64 ")",
                         (uint64_t)st->st_size, cfg->limits.max_file_bytes);
                return fail(ret_error, -EFBIG, path, why);
        }
        return 0;
}

static int64_t mtime_ns_of(const struct stat *st)
{
        return (int64_t)st->st_mtim.tv_sec * 1000000000 + st->st_mtim.tv_nsec;
}

/* What ledger_known_stat() compares. */
static bool same_stat(const struct stat *a, const struct stat *b)
{
        return a->st_size == b->st_size && a->st_ino == b->st_ino &&
               mtime_ns_of(a) == mtime_ns_of(b);
}

/* 1 if the ledger has a job for path with st's size, mtime and inode, 0 if not. */
static int known(ledger *l, const char *path, const struct stat *st, char **ret_error)
{
        int r = ledger_known_stat(l, path, (uint64_t)st->st_size, mtime_ns_of(st),
                                  (uint64_t)st->st_ino);

        return r < 0 ? fail(ret_error, r, path, ledger_errmsg(l)) : r;
}

int intake_file(ledger *l, const struct config *cfg, const struct watch_config *w,
                const char *path, int64_t now_us, int64_t *ret_id, char **ret_error)
{
        _cleanup_free_ char *key = NULL;
        _cleanup_close_ int fd = -1;
        struct source_info src;
        const char *name = strrchr(path, '/');
        int64_t mtime_ns, id = 0;
        struct stat lst, st;
        int r;

        if (pathmap_is_ignored(name ? name + 1 : path))
                return 0;
        if (lstat(path, &lst) < 0)
                return errno == ENOENT ? 0 : fail(ret_error, negative_errno(), path, strerror(errno));
        if (!S_ISREG(lst.st_mode))
                return fail(ret_error, S_ISLNK(lst.st_mode) ? -ELOOP : -EINVAL, path,
                            S_ISLNK(lst.st_mode) ? "refused: a symbolic link (imgd does not follow "
                                                   "links out of the upload folder)"
                                                 : file_type_refusal(lst.st_mode));
        r = pathmap_output_key(w->path, w->output, path, &key);
        if (r < 0)
                return fail(ret_error, r, path, "not below its watched folder");
        r = check_limits(cfg, path, &lst, ret_error);
        if (r < 0)
                return r;
        /* Known by its stat: nothing to do, and no need to open it (the start-up scan of a
         * tree that is all done costs one lstat() and one index lookup per file). */
        r = known(l, path, &lst, ret_error);
        if (r != 0)
                return r < 0 ? r : 0;

        fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
        if (fd < 0) {
                if (errno == ENOENT)
                        return 0; /* gone again before we looked: nothing to do */
                r = negative_errno();
                return fail(ret_error, r, path,
                            errno == ELOOP ? "refused: a symbolic link" : strerror(errno));
        }
        if (fstat(fd, &st) < 0) {
                r = negative_errno();
                return fail(ret_error, r, path, strerror(-r));
        }
        if (!S_ISREG(st.st_mode))
                return fail(ret_error, -EINVAL, path, file_type_refusal(st.st_mode));
        r = check_limits(cfg, path, &st, ret_error);
        if (r < 0)
                return r;
        if (!same_stat(&st, &lst)) {
                /* Replaced since lstat(): what was looked up is not this file. */
                r = known(l, path, &st, ret_error);
                if (r != 0)
                        return r < 0 ? r : 0;
        }

        mtime_ns = mtime_ns_of(&st);

        src = (struct source_info){
                .watch = w->path,
                .path = path,
                .output_key = key,
                .pipeline = w->pipeline_name,
                .size = (uint64_t)st.st_size,
                .mtime_ns = mtime_ns,
                .ino = (uint64_t)st.st_ino,
        };
        r = hash_sha256_fd(fd, cfg->limits.max_file_bytes, src.sha256);
        if (r < 0)
                return fail(ret_error, r, path, r == -EFBIG ? "grew over limits.max_file_bytes"
                                                             : strerror(-r));
        r = ledger_enqueue(l, &src, now_us, &id);
        if (r < 0)
                return fail(ret_error, r, path, ledger_errmsg(l));
        if (r > 0 && ret_id)
                *ret_id = id;
        return r;
}
