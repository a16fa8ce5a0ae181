/* SPDX-License-Identifier: MIT */
/*
 * ledger-maint.c - the ledger's maintenance: pruning finished jobs in batches, the record of
 * a clean stop (<path>.closed) that spares the next open a check of the whole file, and the
 * periodic check of the WAL files (ledger_check_files()) with its checkpoint and probe of a
 * file system that refused writes.
 *
 * The clean-stop record holds the device, inode, size, mtime and ctime of the file after the
 * last checkpoint; ledger_open() trusts it only when it matches the file exactly and no WAL
 * is left beside it (ledger-open.c). It is written by ledger_close() and removed, durably,
 * before the first write of a run.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "daemon/ledger-private.h"

/* The first word of a clean-stop record, and the longest record read. */
#define LEDGER_CLOSED_MAGIC "imgd-ledger-closed-v1"
#define LEDGER_CLOSED_MAX 256

/* What to do about a removed WAL index: only closing every connection makes a new one. */
#define SHM_LOST_ADVICE                                                                            \
        "until imgd is restarted, other programs that open the ledger (sqlite3) may see an "       \
        "older state and must not write to it"

/* Clean-stop records */

/* Fsyncs the directory holding path, so that a rename or unlink in it is durable. */
int ledger_fsync_parent(const char *path)
{
        _cleanup_free_ char *dir = strdup(path);
        _cleanup_close_ int fd = -1;
        char *slash;

        if (!dir)
                return -ENOMEM;
        slash = strrchr(dir, '/');
        if (!slash)
                strcpy(dir, ".");
        else if (slash == dir)
                slash[1] = '\0';
        else
                *slash = '\0';
        fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd < 0 || fsync(fd) < 0)
                return negative_errno();
        return 0;
}

/* The text of a clean-stop record for the file as st describes it. */
static void closed_record(const struct stat *st, char *buf, size_t size)
{
        snprintf(buf, size,
                 LEDGER_CLOSED_MAGIC " dev=%ju ino=%ju size=%jd mtime=%jd.%09ld ctime=%jd.%09ld\n",
                 (uintmax_t)st->st_dev, (uintmax_t)st->st_ino, (intmax_t)st->st_size,
                 (intmax_t)st->st_mtim.tv_sec, st->st_mtim.tv_nsec, (intmax_t)st->st_ctim.tv_sec,
                 st->st_ctim.tv_nsec);
}

/* Whether a WAL with content lies next to the ledger (or cannot be ruled out). */
static bool wal_left(const ledger *l)
{
        _cleanup_free_ char *wal = NULL;
        struct stat st;

        if (asprintf(&wal, "%s-wal", l->path) < 0)
                return true;
        if (stat(wal, &st) < 0)
                return errno != ENOENT;
        return st.st_size > 0;
}

/*
 * Whether <path>.closed records a clean stop of the file exactly as st describes it, with no
 * WAL left beside it. Anything unexpected (no record, unreadable, another file) is false.
 */
bool ledger_closed_cleanly(const ledger *l, const struct stat *st)
{
        char have[LEDGER_CLOSED_MAX + 1], want[LEDGER_CLOSED_MAX];
        _cleanup_close_ int fd = -1;
        ssize_t n;

        fd = open(l->closed_path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
        if (fd < 0)
                return false;
        n = read(fd, have, LEDGER_CLOSED_MAX);
        if (n <= 0)
                return false;
        have[n] = '\0';
        closed_record(st, want, sizeof want);
        return strcmp(have, want) == 0 && !wal_left(l);
}

/*
 * Writes <path>.closed for the ledger file as it is now (after the last connection closed
 * it: checkpointed, WAL removed). Returns 0, or a negative errno with the cause in l->errmsg.
 * Not fsynced: a record lost in a power cut only costs a full check at the next open.
 */
int ledger_closed_record_write(ledger *l)
{
        char rec[LEDGER_CLOSED_MAX];
        _cleanup_free_ char *tmp = NULL;
        _cleanup_close_ int fd = -1;
        struct stat st;
        size_t len;
        int r;

        if (wal_left(l))
                return ledger_error(l, -EBUSY,
                                    "the WAL is still there (is another program "
                                    "holding the ledger open?)");
        if (stat(l->path, &st) < 0)
                return ledger_error(l, negative_errno(), "stat: %s", strerror(errno));
        closed_record(&st, rec, sizeof rec);
        len = strlen(rec);
        if (asprintf(&tmp, "%s.tmp", l->closed_path) < 0)
                return ledger_error(l, -ENOMEM, "out of memory");
        fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, LEDGER_FILE_MODE);
        if (fd < 0)
                return ledger_error(l, negative_errno(), "%s: %s", tmp, strerror(errno));
        if (write(fd, rec, len) != (ssize_t)len) {
                r = errno ? negative_errno() : -EIO;
                (void)unlink(tmp);
                return ledger_error(l, r, "%s: %s", tmp, strerror(-r));
        }
        if (rename(tmp, l->closed_path) < 0) {
                r = negative_errno();
                (void)unlink(tmp);
                return ledger_error(l, r, "%s: %s", l->closed_path, strerror(-r));
        }
        return 0;
}

/* The WAL files */

/* While writes fail: one small write to learn whether the file system takes them again (a
 * row of job_counts changed and changed back: the page is written, its content the same). */
static void write_probe(ledger *l)
{
        (void)LEDGER_WRITE(
                l, ledger_exec(l, "UPDATE job_counts SET n = n + 1 WHERE state = 'queued';"
                                  "UPDATE job_counts SET n = n - 1 WHERE state = 'queued'"));
}

int ledger_sqlite_check_files(ledger *l)
{
        bool wal, shm;
        int r, found = 0;

        assert(l);
        /* Only between transactions (the event loop's top level). */
        if (l->in_write || !sqlite3_get_autocommit(l->db))
                return 0;
        if (l->write_failed_since_usec != 0)
                write_probe(l);
        wal = l->wal_lost || (l->wal_known && ledger_aux_gone(l->wal_path, l->wal_dev, l->wal_ino));
        shm = !l->shm_lost && l->shm_known && ledger_aux_gone(l->shm_path, l->shm_dev, l->shm_ino);
        if (shm) {
                l->shm_lost = true;
                found |= LEDGER_SHM_LOST;
        }
        if (wal) {
                l->wal_lost = true;
                r = ledger_wal_checkpoint(l, SQLITE_CHECKPOINT_TRUNCATE);
                if (r < 0) {
                        char msg[sizeof l->errmsg];

                        snprintf(msg, sizeof msg, "%s", l->errmsg);
                        return ledger_error(l, r,
                                            "%s-wal was removed while imgd had it open; its "
                                            "content cannot be checkpointed into %s: %s (each "
                                            "commit is checkpointed at once meanwhile)",
                                            l->path, l->path, msg);
                }
                r = ledger_reconnect(l);
                if (r < 0) {
                        char msg[sizeof l->errmsg];

                        snprintf(msg, sizeof msg, "%s", l->errmsg);
                        return ledger_error(l, r,
                                            "%s-wal was removed while imgd had it open; its "
                                            "content is checkpointed into %s, but no new WAL "
                                            "could be started: %s (each commit is checkpointed "
                                            "at once meanwhile)",
                                            l->path, l->path, msg);
                }
                l->wal_lost = false;
                ledger_aux_note(l, true, false);
                found |= LEDGER_WAL_RESTORED;
        }
        if (found == (LEDGER_WAL_RESTORED | LEDGER_SHM_LOST))
                ledger_error(l, found,
                             "%s-wal and %s-shm were removed while imgd had them open: "
                             "the commits of the removed WAL are checkpointed into %s "
                             "and a new WAL is started; " SHM_LOST_ADVICE,
                             l->path, l->path, l->path);
        else if (found == LEDGER_WAL_RESTORED)
                ledger_error(l, found,
                             "%s-wal was removed while imgd had it open: the commits it "
                             "held are checkpointed into %s and a new WAL is started",
                             l->path, l->path);
        else if (found == LEDGER_SHM_LOST)
                ledger_error(l, found,
                             "%s-shm was removed while imgd had it open: the ledger "
                             "stays durable; " SHM_LOST_ADVICE,
                             l->path);
        return found;
}

/* Pruning */

int ledger_prune(ledger *l, int64_t cutoff_usec, int64_t *cursor, unsigned batch)
{
        int64_t from = *cursor, to, min_id = 0, max_id = 0;
        int r;

        assert(batch > 0);
        {
                _cleanup_cursor_ struct ledger_cursor st = ledger_stmt_get(l, STMT_ID_RANGE);

                r = ledger_stmt_step(l, &st);
                if (r < 0)
                        return r;
                if (r > 0) {
                        min_id = ledger_column_int64(&st, 0);
                        max_id = ledger_column_int64(&st, 1);
                }
        }
        /* A pass starts at the oldest job, not at id 1: years of pruning leave no gap to walk. */
        if (from == 0)
                from = min_id > 0 ? min_id - 1 : 0;
        to = from + (int64_t)batch;
        r = LEDGER_WRITE(l, ledger_stmt_changes(l, STMT_PRUNE, "iii", cutoff_usec, from, to));
        if (r >= 0)
                *cursor = to >= max_id ? 0 : to;
        return r;
}
