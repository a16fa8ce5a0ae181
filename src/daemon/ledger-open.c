/* SPDX-License-Identifier: MIT */
/*
 * ledger-open.c - opening and closing the ledger: the check at open, a corrupt or foreign
 * file refused with a message that says how to recover it, the connection replaced when its
 * WAL was removed (ledger_reconnect()), and ledger_integrity_check().
 *
 * Promises: a database that is not one, or fails PRAGMA quick_check, is refused with
 * -EBADMSG and is never written, replaced or deleted. The check reads the whole file (a
 * million jobs take seconds warm, a minute cold), so it is skipped only where it cannot find
 * anything new: ledger_close() leaves a record of a clean stop next to the file (<path>.closed,
 * ledger-maint.c: its device, inode, size, mtime and ctime after the last checkpoint), and
 * ledger_open() checks only the schema when that record matches the file exactly, no WAL is
 * left over, and the file is larger than LEDGER_ALWAYS_CHECK_BYTES. A crash, a kill, a failed
 * close, or any write to the file by something else (which moves its ctime) leaves no
 * matching record, and the whole file is checked. The record is removed before the first
 * write of a run.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "daemon/ledger-private.h"

/* Ledgers up to this size are checked in full at every open: it takes milliseconds. */
#define LEDGER_ALWAYS_CHECK_BYTES (4u << 20)

/* Checks */

/*
 * Runs PRAGMA <name> (quick_check or integrity_check); returns 0 if it answered "ok", else
 * -EBADMSG with its first rows in the message.
 */
static int ledger_check_pragma(ledger *l, const char *name)
{
        _cleanup_(sqlite3_finalizep) sqlite3_stmt *st = NULL;
        char buf[sizeof l->errmsg] = "", sql[64];
        size_t n = 0;
        int rc, r;

        snprintf(sql, sizeof sql, "PRAGMA %s", name);
        rc = sqlite3_prepare_v2(l->db, sql, -1, &st, NULL);
        if (rc != SQLITE_OK) {
                r = ledger_sqlite_error(l, rc);
                goto could_not_run;
        }
        for (unsigned rows = 0;; rows++) {
                const char *s;

                r = ledger_sqlite_step(l, st);
                if (r < 0)
                        goto could_not_run;
                if (r == 0)
                        break;
                s = (const char *)sqlite3_column_text(st, 0);
                if (rows == 0 && s && strcmp(s, "ok") == 0)
                        return 0;
                if (n < sizeof buf - 1)
                        n += (size_t)snprintf(buf + n, sizeof buf - n, "%s%s", rows ? "; " : "",
                                              s ? s : "(null)");
        }
        /* One line for the log. */
        for (char *p = buf; *p; p++)
                if (*p == '\n')
                        *p = ' ';
        return ledger_error(l, -EBADMSG, "%s: %s", name, n ? buf : "no answer");

could_not_run:
        /* Corruption often stops the check itself; say which check and why. */
        snprintf(buf, sizeof buf, "%s", l->errmsg);
        return ledger_error(l, r, "%s: %s", name, buf);
}

/*
 * The check at open, read-only: PRAGMA quick_check of the whole file, or of the schema only
 * when ledger_closed_cleanly() and the file is larger than LEDGER_ALWAYS_CHECK_BYTES. Then the
 * clean-stop record is removed, durably, before anything is written: from here on only
 * ledger_close() may write a new one.
 */
static int ledger_check_at_open(ledger *l)
{
        struct stat st;
        bool whole = true;
        int r;

        if (stat(l->path, &st) < 0)
                return ledger_error(l, negative_errno(), "stat: %s", strerror(errno));
        if ((uint64_t)st.st_size <= LEDGER_ALWAYS_CHECK_BYTES) {
                l->open_check = "PRAGMA quick_check of the whole file (a small ledger is always "
                                "checked in full)";
        } else if (!ledger_closed_cleanly(l, &st)) {
                l->open_check = "PRAGMA quick_check of the whole file (imgd did not record a "
                                "clean stop of the file as it is now)";
        } else {
                l->open_check = "PRAGMA quick_check of the schema only (closed cleanly by imgd "
                                "and not changed since)";
                whole = false;
        }

        r = ledger_check_pragma(l, whole ? "quick_check" : "quick_check(sqlite_schema)");
        if (r < 0)
                return r;

        if (unlink(l->closed_path) < 0) {
                if (errno == ENOENT)
                        return 0;
                return ledger_error(l, negative_errno(), "cannot remove %s: %s", l->closed_path,
                                    strerror(errno));
        }
        r = ledger_fsync_parent(l->closed_path);
        if (r < 0)
                return ledger_error(l, r, "cannot sync the directory of %s: %s", l->closed_path,
                                    strerror(-r));
        return 0;
}

int ledger_sqlite_integrity_check(ledger *l)
{
        int r;

        assert(l);
        r = ledger_check_pragma(l, "integrity_check");
        if (r < 0)
                return r;
        return ledger_counts_check(l);
}

/* Opening and closing */

static int ledger_open_db(ledger *l)
{
        int fd, r;

        /* Create it ourselves so that it gets our mode; SQLite gives -wal and -shm the same. */
        fd = open(l->path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, LEDGER_FILE_MODE);
        if (fd >= 0)
                close(fd);
        else if (errno != EEXIST)
                return ledger_error(l, negative_errno(), "cannot create: %s", strerror(errno));

        r = ledger_connect(l);
        if (r < 0)
                return r;
        /* SQLite opens a file it may not write read-only, without a word: say why now, not
         * at the first transition. */
        if (sqlite3_db_readonly(l->db, "main") == 1) {
                int e = EROFS;

                fd = open(l->path, O_RDWR | O_CLOEXEC);
                if (fd < 0)
                        e = errno;
                else
                        close(fd);
                return ledger_error(l, -e,
                                    "%s: cannot be written: %s (imgd records every job in it "
                                    "and must write to it)",
                                    l->path, strerror(e));
        }

        /* Read-only checks first: nothing is written to a file that fails them. */
        r = ledger_check_at_open(l);
        if (r < 0)
                return r;

        r = ledger_configure(l);
        if (r < 0)
                return r;
        r = ledger_migrate(l);
        if (r < 0)
                return r;
        r = ledger_prepare(l);
        if (r < 0)
                return r;
        ledger_aux_note(l, true, true);
        return 0;
}

/* Checks that the directory holding path exists, for an error that names both. */
static int ledger_check_parent(const char *path, char **ret_error)
{
        _cleanup_free_ char *dir = strdup(path);
        char *slash;
        struct stat st;

        if (!dir)
                return -ENOMEM;
        slash = strrchr(dir, '/');
        if (!slash)
                return 0;
        if (slash == dir)
                slash[1] = '\0';
        else
                *slash = '\0';
        if (stat(dir, &st) < 0) {
                int r = negative_errno();
                if (asprintf(ret_error, "%s: cannot use directory %s: %s", path, dir,
                             strerror(-r)) < 0)
                        *ret_error = NULL;
                return r;
        }
        if (!S_ISDIR(st.st_mode)) {
                if (asprintf(ret_error, "%s: %s is not a directory", path, dir) < 0)
                        *ret_error = NULL;
                return -ENOTDIR;
        }
        return 0;
}

/* path followed by suffix (caller frees), or NULL when out of memory. */
static char *path_with(const char *path, const char *suffix)
{
        char *s;

        return asprintf(&s, "%s%s", path, suffix) < 0 ? NULL : s;
}

int ledger_sqlite_close(ledger *l, bool clean)
{
        int rc;

        /* A clean stop keeps the claims still waiting for a commit (ledger_free() is a crash:
         * it forgets them, as a crash would). */
        if (clean)
                (void)l->engine->claims_commit(l);
        rc = ledger_close_db(l);

        if (!clean)
                return 0;
        if (rc != SQLITE_OK)
                return ledger_error(l, ledger_errno_from_sqlite(NULL, rc), "close: %s",
                                    sqlite3_errstr(rc));
        if (!l->open_check)
                return ledger_error(l, -EINVAL, "the ledger was not opened");
        if (l->saw_corrupt)
                return ledger_error(l, -EBADMSG, "SQLite reported corruption while it was open");
        return ledger_closed_record_write(l);
}

/*
 * A second connection replaces l's, once the WAL was checkpointed with TRUNCATE: it opens a
 * new WAL at the path (the WAL index it shares with the old connection, which is the
 * process's own, says the WAL is empty). The old connection is closed after; it is not the
 * last one, so it neither checkpoints nor deletes anything. On failure l keeps the old one.
 */
int ledger_reconnect(ledger *l)
{
        sqlite3 *old_db = l->db;
        sqlite3_stmt *old_stmts[ELEMENTSOF(l->stmts)];
        bool old_lazy_sync = l->lazy_sync;
        int r;

        memcpy(old_stmts, l->stmts, sizeof old_stmts);
        memset(l->stmts, 0, sizeof l->stmts);
        l->db = NULL;
        r = ledger_connect(l);
        if (r >= 0)
                r = ledger_configure(l);
        if (r >= 0)
                r = ledger_prepare(l);
        if (r < 0) {
                char msg[sizeof l->errmsg];

                snprintf(msg, sizeof msg, "%s", l->errmsg);
                for (size_t i = 0; i < ELEMENTSOF(l->stmts); i++)
                        l->stmts[i] = (sqlite3_finalize(l->stmts[i]), NULL);
                sqlite3_close_v2(l->db);
                l->db = old_db;
                l->lazy_sync = old_lazy_sync;
                memcpy(l->stmts, old_stmts, sizeof old_stmts);
                return ledger_error(l, r, "%s", msg);
        }
        for (size_t i = 0; i < ELEMENTSOF(l->stmts); i++)
                sqlite3_finalize(old_stmts[i]);
        if (sqlite3_close(old_db) != SQLITE_OK)
                sqlite3_close_v2(old_db);
        return 0;
}

/* Not named ledger_freep: that name is left free for ledger.h. */
static void free_ledgerp(ledger **l)
{
        ledger_free(*l);
}

int ledger_sqlite_open(const char *path, ledger **ret, char **ret_error)
{
        _cleanup_(free_ledgerp) ledger *l = NULL;
        _cleanup_free_ char *msg = NULL;
        int r;

        assert(path);
        assert(ret);

        r = ledger_check_parent(path, &msg);
        if (r < 0)
                goto fail;

        l = calloc(1, sizeof *l);
        if (l)
                l->engine = &ledger_engine_sqlite;
        if (!l || !(l->path = strdup(path)) || !(l->closed_path = path_with(path, ".closed")) ||
            !(l->wal_path = path_with(path, "-wal")) || !(l->shm_path = path_with(path, "-shm"))) {
                r = -ENOMEM;
                goto fail;
        }

        r = ledger_open_db(l);
        if (r == -EBADMSG) {
                if (asprintf(&msg,
                             "%s: ledger is corrupt (%s); imgd will not start over it. Stop imgd, "
                             "move the file aside (keep it for recovery with `sqlite3 %s "
                             ".recover`), and start imgd again to begin a new ledger.",
                             path, l->errmsg, path) < 0)
                        msg = NULL;
                goto fail;
        }
        if (r < 0) {
                /* Failures of the file system name the file already. */
                if (strncmp(l->errmsg, path, strlen(path)) == 0)
                        msg = strdup(l->errmsg);
                else if (asprintf(&msg, "%s: %s", path, l->errmsg) < 0)
                        msg = NULL;
                goto fail;
        }

        *ret = TAKE_PTR(l);
        return 0;
fail:
        /* The one out-parameter written on failure; NULL only when out of memory. */
        if (ret_error)
                *ret_error = TAKE_PTR(msg);
        return r;
}
