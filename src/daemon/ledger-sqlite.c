/* SPDX-License-Identifier: MIT */
/*
 * ledger-sqlite.c - the ledger's SQLite engine (struct ledger_engine ledger_engine_sqlite): a
 * connection and its settings, SQLite's errors turned into a negative errno and a message,
 * the statement primitives under ledger-stmt.c, transactions and group commits, and the watch
 * on the WAL files.
 *
 * Promises:
 * - Every transition is one transaction started with BEGIN IMMEDIATE (ledger_tx_begin()) and
 *   ended by ledger_tx_end(), which commits on success and rolls back on every failure.
 * - The database runs in WAL mode with synchronous=FULL: a transition that returned success
 *   survives a crash or a power loss. One exception, ledger_claim(), does not commit: its
 *   claim waits in an open transaction, and the next transition (or group commit) is a
 *   savepoint of that transaction, whose commit (one flush) then carries every claim made
 *   since the last one (issue 16: the claim was the supervisor's costliest step, nine WAL
 *   frames in a transaction of its own; a claim that rides writes its pages once with the
 *   commit that follows). Until then a crash of imgd or a power cut forgets the claim,
 *   which leaves the job queued as before it (to be claimed again, the attempt not counted),
 *   never a half of it; ledger_commit_claims() commits the claims alone. A transaction that
 *   fails to commit loses the claims it carried: their later transitions are refused with
 *   -ESTALE (the job is queued, not running), as for a claim taken over.
 * - Savepoints keep their journal in memory (temp_store = MEMORY): a group commit's
 *   savepoints would otherwise spill it to a file in /var/tmp.
 * - An SQLite failure becomes a negative errno and a message in l->errmsg; a failure of the
 *   file system names the ledger file and the system's error, and is remembered (for
 *   ledger_write_failure()) while write transactions fail.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "daemon/ledger-private.h"
#include "shared/time-util.h"

#define LEDGER_BUSY_TIMEOUT_MS 5000

/* Errors */

int ledger_errno_from_sqlite(sqlite3 *db, int rc)
{
        switch (rc & 0xff) {
        case SQLITE_BUSY:
        case SQLITE_LOCKED:
                return -EBUSY;
        case SQLITE_FULL:
                return -ENOSPC;
        case SQLITE_IOERR:
                return -EIO;
        case SQLITE_CORRUPT:
        case SQLITE_NOTADB:
                return -EBADMSG;
        case SQLITE_NOMEM:
                return -ENOMEM;
        case SQLITE_CONSTRAINT:
                return -EEXIST;
        case SQLITE_READONLY:
                return -EROFS;
        case SQLITE_CANTOPEN:
                return db && sqlite3_system_errno(db) == EACCES ? -EACCES : -ENOENT;
        default:
                return -EIO;
        }
}

/*
 * Records SQLite's message m (NULL: the text of rc) for rc; returns rc as a negative errno. A
 * failure of the file system (SQLite's "disk I/O error", "database or disk is full", ...)
 * names the ledger file and the system's error ("/var/lib/imgd/imgd.db: disk I/O error
 * (Read-only file system)"), and is returned as that errno.
 */
static int ledger_sqlite_error_msg(ledger *l, int rc, const char *m, int saved_errno)
{
        int primary = rc & 0xff, sys = l->db ? sqlite3_system_errno(l->db) : 0;

        /* SQLite records no errno for a failed write (SQLITE_IOERR_WRITE): the errno the
         * failing call left, saved by the caller right after it, is the system's answer. */
        if (sys == 0 && ledger_storage_errno(saved_errno))
                sys = saved_errno;

        if (primary == SQLITE_CORRUPT || primary == SQLITE_NOTADB)
                l->saw_corrupt = true;
        /* (corruption found by ledger_exec() is seen here too) */
        if ((primary == SQLITE_IOERR || primary == SQLITE_FULL || primary == SQLITE_READONLY ||
             primary == SQLITE_CANTOPEN) &&
            sys > 0)
                return ledger_error(
                        l, ledger_storage_errno(sys) ? -sys : ledger_errno_from_sqlite(l->db, rc),
                        "%s: %s (%s)", l->path, m ? m : sqlite3_errstr(rc), strerror(sys));
        return ledger_error(l, ledger_errno_from_sqlite(l->db, rc), "%s",
                            m ? m : sqlite3_errstr(rc));
}

/* As ledger_sqlite_error_msg() with SQLite's message; the first thing called after the
 * failing SQLite call (for its errno). */
int ledger_sqlite_error(ledger *l, int rc)
{
        int saved_errno = errno;

        return ledger_sqlite_error_msg(l, rc, l->db ? sqlite3_errmsg(l->db) : NULL, saved_errno);
}

/* Statements */

static int sqlite_exec(ledger *l, const char *sql)
{
        char *m = NULL;
        int rc, r, saved_errno;

        errno = 0;
        rc = sqlite3_exec(l->db, sql, NULL, NULL, &m);
        saved_errno = errno;
        if (rc == SQLITE_OK)
                return 0;
        r = ledger_sqlite_error_msg(l, rc, m, saved_errno);
        sqlite3_free(m);
        return r;
}

/* Runs transaction control statement `id`, prepared once by ledger_prepare() (parsed each
 * time before that: opening checks and migrations); as sqlite_exec(). */
static int sqlite_tx(ledger *l, enum ledger_tx_stmt id)
{
        sqlite3_stmt *st = l->stmts[id];
        int r, rc;

        if (!st)
                return sqlite_exec(l, ledger_tx_stmt_sql[id - _STMT_MAX]);
        errno = 0;
        rc = sqlite3_step(st);
        r = rc == SQLITE_DONE ? 0 : ledger_sqlite_error(l, rc);
        sqlite3_reset(st);
        return r;
}

static int sqlite_bind_text(ledger *l, struct ledger_cursor *c, int i, const char *s, int len)
{
        int rc = s ? sqlite3_bind_text(c->sq, i, s, len, SQLITE_STATIC)
                   : sqlite3_bind_null(c->sq, i);

        return rc == SQLITE_OK ? 0 : ledger_sqlite_error(l, rc);
}

static int sqlite_bind_int64(ledger *l, struct ledger_cursor *c, int i, int64_t v)
{
        int rc = sqlite3_bind_int64(c->sq, i, v);

        return rc == SQLITE_OK ? 0 : ledger_sqlite_error(l, rc);
}

/* Returns 1 for a row, 0 when done, or a negative errno. */
int ledger_sqlite_step(ledger *l, sqlite3_stmt *st)
{
        int rc;

        errno = 0;
        rc = sqlite3_step(st);

        if (rc == SQLITE_ROW)
                return 1;
        if (rc == SQLITE_DONE)
                return 0;
        return ledger_sqlite_error(l, rc);
}

static int sqlite_step(ledger *l, struct ledger_cursor *c)
{
        return ledger_sqlite_step(l, c->sq);
}

static int sqlite_changes(ledger *l, struct ledger_cursor *c)
{
        return sqlite3_changes(l->db);
}

static int64_t sqlite_last_insert_id(ledger *l)
{
        return sqlite3_last_insert_rowid(l->db);
}

static int sqlite_nparams(const struct ledger_cursor *c)
{
        return sqlite3_bind_parameter_count(c->sq);
}

static void sqlite_reset(struct ledger_cursor *c)
{
        if (!c->sq)
                return;
        if (c->once) {
                sqlite3_finalize(c->sq);
                c->sq = NULL;
                return;
        }
        sqlite3_reset(c->sq);
        sqlite3_clear_bindings(c->sq);
}

static int sqlite_prepare(ledger *l, const char *sql, struct ledger_cursor *ret)
{
        sqlite3_stmt *st = NULL;
        int rc;

        rc = sqlite3_prepare_v2(l->db, sql, -1, &st, NULL);
        if (rc != SQLITE_OK)
                return ledger_sqlite_error(l, rc);
        *ret = (struct ledger_cursor){ .l = l, .sq = st, .once = true };
        return 0;
}

/* Transactions */

/* The WAL files */

/*
 * The WAL and the WAL index (-shm) removed from under the connection (`rm imgd.db-wal`):
 * SQLite keeps writing to the file it has open, unlinked, so that every commit since the last
 * checkpoint lives only in a file nobody can open again, and is lost with the next crash. A
 * stat() of the path after each write transaction (a microsecond next to the fsync of the
 * commit) notices it; from then on every commit is checkpointed into the database file at
 * once (durable: synchronous=FULL syncs the database in a checkpoint), until
 * ledger_check_files() gives the connection a new WAL.
 */

/* Whether the file at `path` is missing or not the one recorded. */
bool ledger_aux_gone(const char *path, dev_t dev, ino_t ino)
{
        struct stat st;

        if (stat(path, &st) < 0)
                return errno == ENOENT;
        return st.st_dev != dev || st.st_ino != ino;
}

/* Records the identity of the WAL (when wal_too) and the -shm (when shm_too) the connection
 * uses, when they exist (SQLite makes the WAL at the first write after a checkpoint that
 * truncated it). */
void ledger_aux_note(ledger *l, bool wal_too, bool shm_too)
{
        struct stat st;

        if (wal_too && stat(l->wal_path, &st) == 0) {
                l->wal_dev = st.st_dev;
                l->wal_ino = st.st_ino;
                l->wal_known = true;
        }
        if (shm_too && stat(l->shm_path, &st) == 0) {
                l->shm_dev = st.st_dev;
                l->shm_ino = st.st_ino;
                l->shm_known = true;
        }
}

static int sqlite_claims_commit(ledger *l);

/* Checkpoints the whole WAL into the database file (after committing the claims that wait);
 * returns 0 or a negative errno. */
int ledger_wal_checkpoint(ledger *l, int mode)
{
        int log = 0, done = 0, rc;

        rc = sqlite_claims_commit(l);
        if (rc < 0)
                return rc;
        rc = sqlite3_wal_checkpoint_v2(l->db, NULL, mode, &log, &done);
        if (rc != SQLITE_OK)
                return ledger_sqlite_error(l, rc);
        if (log != done)
                return ledger_error(l, -EBUSY,
                                    "checkpoint copied %d of %d WAL frames (a reader holds an "
                                    "older snapshot)",
                                    done, log);
        return 0;
}

/* After a write transaction committed: when the WAL is gone from its path, checkpoint now.
 * (A WAL not seen yet, as after a reconnect, is recorded at the first commit that made it.) */
static void wal_commit_durable(ledger *l)
{
        if (!l->wal_known)
                ledger_aux_note(l, true, false);
        else if (!l->wal_lost && ledger_aux_gone(l->wal_path, l->wal_dev, l->wal_ino))
                l->wal_lost = true;
        if (l->wal_lost)
                (void)ledger_wal_checkpoint(l, SQLITE_CHECKPOINT_FULL);
}

/* Write transactions */

/*
 * Begins a write transaction whose commit is flushed to disk (flush: synchronous=FULL, every
 * transition) or not (synchronous=NORMAL, a claim; see the top of this file). The setting
 * stays until a transaction needs the other one (l->lazy_sync says which is in force), and
 * it can only change outside a transaction.
 */
/*
 * Inside a group commit (ledger_batch_begin()), a transition is a savepoint of the batch's
 * transaction: released when it succeeds, rolled back to when it fails, so that it is all or
 * nothing by itself and the others stand. SQLite abandons the whole transaction after some
 * errors (SQLITE_FULL, SQLITE_IOERR, ...): then the batch is lost, and the rest of it fails
 * with that error (batch_error), its commit too.
 */
static int savepoint_begin(ledger *l)
{
        if (l->batch_error < 0)
                return l->batch_error;
        return sqlite_tx(l, TX_SAVEPOINT);
}

/* Ends savepoint tx: released when r >= 0, rolled back to otherwise; returns r or the
 * release's error. The caller sees with sqlite3_get_autocommit() whether SQLite abandoned
 * the whole transaction, leaving nothing to roll back to. */
static int savepoint_finish(ledger *l, int r)
{
        if (r >= 0) {
                int k = sqlite_tx(l, TX_RELEASE);
                if (k >= 0)
                        return r;
                r = k;
        }
        if (!sqlite3_get_autocommit(l->db))
                (void)sqlite3_exec(l->db, "ROLLBACK TO tx; RELEASE tx", NULL, NULL, NULL);
        return r;
}

static int savepoint_end(ledger *l, int r)
{
        r = savepoint_finish(l, r);
        if (r < 0 && sqlite3_get_autocommit(l->db))
                l->batch_error = r;
        return r;
}

static int sqlite_tx_begin_sync(ledger *l, bool flush)
{
        int r;

        if (l->batch)
                return savepoint_begin(l);
        if (l->claims_open) {
                /* The claims' transaction becomes this transition's (synchronous=FULL: it
                 * began as one to be flushed), the transition a savepoint of it. */
                r = sqlite_tx(l, TX_SAVEPOINT);
                if (r >= 0)
                        l->adopted = true;
                return r;
        }
        if (l->lazy_sync == flush) {
                r = sqlite_exec(l, flush ? "PRAGMA synchronous = FULL"
                                         : "PRAGMA synchronous = NORMAL");
                if (r < 0)
                        return r;
                l->lazy_sync = !flush;
        }
        r = sqlite_tx(l, TX_BEGIN_IMMEDIATE);
        if (r >= 0) {
                l->in_write = true;
                l->changes_at_begin = sqlite3_total_changes64(l->db);
        }
        return r;
}

/*
 * Begins a read transaction for a group of reads that must see one snapshot; returns 1 when
 * an open group commit already provides one (the caller then must not call ledger_tx_end()), 0
 * when it began one for ledger_tx_end() to end.
 */
static int sqlite_tx_begin_read(ledger *l)
{
        int r;

        if (l->batch || l->claims_open)
                return 1; /* the open transaction is one snapshot, with its own writes */
        r = sqlite_tx(l, TX_BEGIN);
        return r < 0 ? r : 0;
}

/*
 * Ends the transaction begun by ledger_tx_begin(): commits when r >= 0 and returns r, or returns
 * the commit's error; rolls back when r < 0 or the commit failed. The one way out of every
 * transaction.
 */
static int sqlite_tx_end(ledger *l, int r)
{
        bool wrote = l->in_write;

        if (l->batch)
                return savepoint_end(l, r);
        if (l->adopted) {
                /* The transition, all or nothing, then the commit of it with the claims it
                 * rode on: a transition that failed by itself still commits them. */
                l->adopted = false;
                r = savepoint_finish(l, r);
                if (r < 0 && !sqlite3_get_autocommit(l->db)) {
                        (void)sqlite_tx_end(l, 0);
                        return r;
                }
        }
        l->claims_open = false;
        l->in_write = false;
        if (r >= 0) {
                int k = sqlite_tx(l, TX_COMMIT);
                if (k >= 0) {
                        if (wrote)
                                wal_commit_durable(l);
                        /* Only a commit that wrote something says the disk takes writes. */
                        if (wrote && sqlite3_total_changes64(l->db) != l->changes_at_begin)
                                l->write_failed_since_usec = 0;
                        return r;
                }
                r = k;
        }
        if (wrote && ledger_storage_errno(-r)) {
                snprintf(l->write_failure, sizeof l->write_failure, "%s", l->errmsg);
                if (l->write_failed_since_usec == 0)
                        l->write_failed_since_usec = wall_usec();
        }
        /* SQLite rolls back by itself after some errors (SQLITE_FULL, SQLITE_IOERR, ...). */
        if (!sqlite3_get_autocommit(l->db))
                (void)sqlite3_exec(l->db, "ROLLBACK", NULL, NULL, NULL);
        return r;
}

/* Claims: each a savepoint of the transaction they wait in (see the top of this file). */
static int sqlite_claim_begin(ledger *l)
{
        int r;

        if (l->batch)
                return savepoint_begin(l);
        if (!l->claims_open) {
                r = sqlite_tx_begin_sync(l, true);
                if (r < 0)
                        return r;
                l->claims_open = true;
        }
        r = sqlite_tx(l, TX_SAVEPOINT);
        if (r < 0 && sqlite3_get_autocommit(l->db))
                l->claims_open = l->in_write = false;
        return r;
}

static int sqlite_claim_end(ledger *l, int r)
{
        if (l->batch)
                return savepoint_end(l, r);
        r = savepoint_finish(l, r);
        /* SQLite abandoned the transaction: the claims before this one with it. */
        if (r < 0 && sqlite3_get_autocommit(l->db))
                l->claims_open = l->in_write = false;
        return r;
}

static int sqlite_claims_commit(ledger *l)
{
        if (!l->claims_open || l->batch || l->adopted)
                return 0;
        return sqlite_tx_end(l, 0);
}

/* The connection */

/* Opens a connection to l->path into l->db (extended result codes, the busy timeout). */
int ledger_connect(ledger *l)
{
        int rc;

        rc = sqlite3_open_v2(l->path, &l->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, NULL);
        if (rc != SQLITE_OK)
                return ledger_sqlite_error(l, rc);
        sqlite3_extended_result_codes(l->db, 1);
        rc = sqlite3_busy_timeout(l->db, LEDGER_BUSY_TIMEOUT_MS);
        if (rc != SQLITE_OK)
                return ledger_sqlite_error(l, rc);
        return 0;
}

/* The settings of every connection to the ledger: WAL, synchronous=FULL, foreign keys. */
int ledger_configure(ledger *l)
{
        _cleanup_(sqlite3_finalizep) sqlite3_stmt *st = NULL;
        const char *mode;
        int rc, r;

        rc = sqlite3_prepare_v2(l->db, "PRAGMA journal_mode = WAL", -1, &st, NULL);
        if (rc != SQLITE_OK)
                return ledger_sqlite_error(l, rc);
        r = ledger_sqlite_step(l, st);
        if (r < 0)
                return r;
        mode = (const char *)sqlite3_column_text(st, 0);
        if (r == 0 || !mode || strcmp(mode, "wal") != 0)
                return ledger_error(l, -EIO, "cannot switch to WAL mode (journal mode is %s)",
                                    mode ? mode : "unknown");
        sqlite3_finalize(TAKE_PTR(st));

        /*
         * FULL in WAL mode makes every committed transition durable across power loss, which
         * the crash-safety promise needs (NORMAL may lose the last commits); the cost is one
         * fsync of the WAL per commit.
         */
        r = sqlite_exec(l, "PRAGMA temp_store = MEMORY");
        if (r < 0)
                return r;
        r = sqlite_exec(l, "PRAGMA synchronous = FULL");
        if (r < 0)
                return r;
        l->lazy_sync = false;
        return sqlite_exec(l, "PRAGMA foreign_keys = ON");
}

/* Finalizes the statements and closes the connection; returns SQLite's rc of the close. */
int ledger_close_db(ledger *l)
{
        int rc;

        for (size_t i = 0; i < ELEMENTSOF(l->stmts); i++)
                l->stmts[i] = (sqlite3_finalize(l->stmts[i]), NULL);
        /* Every statement is finalized, so a failure here means the close did not happen:
         * then close_v2 closes once the stragglers are gone. */
        rc = sqlite3_close(l->db);
        if (rc != SQLITE_OK)
                sqlite3_close_v2(l->db);
        l->db = NULL;
        return rc;
}

const struct ledger_engine ledger_engine_sqlite = {
        .name = "sqlite",
        .param = '?',
        .bind_text = sqlite_bind_text,
        .bind_int64 = sqlite_bind_int64,
        .step = sqlite_step,
        .changes = sqlite_changes,
        .last_insert_id = sqlite_last_insert_id,
        .nparams = sqlite_nparams,
        .reset = sqlite_reset,
        .prepare = sqlite_prepare,
        .exec = sqlite_exec,
        .tx_begin_sync = sqlite_tx_begin_sync,
        .tx_begin_read = sqlite_tx_begin_read,
        .tx_end = sqlite_tx_end,
        .check_files = ledger_sqlite_check_files,
        .integrity_check = ledger_sqlite_integrity_check,
        .claim_begin = sqlite_claim_begin,
        .claim_end = sqlite_claim_end,
        .claims_commit = sqlite_claims_commit,
        .close = ledger_sqlite_close,
};
