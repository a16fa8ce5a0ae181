/* SPDX-License-Identifier: MIT */
/*
 * ledger-private.h - what the files of the ledger share and nothing outside src/daemon/ledger*.c
 * may include (as SQLite's btreeInt.h): the struct ledger, the prepared statements, and the
 * helpers every transition and query is written with. ledger.h stays the public contract.
 *
 *   ledger.c         engine-independent: state names, job_free(), the message of the last
 *                    failure, the file system's failures
 *   ledger-sqlite.c  the SQLite engine: errors -> negative errno + message, statements,
 *                    transactions and group commits, the WAL and synchronous settings, rows
 *   ledger-schema.c  the schema, its migrations, and the SQL of every prepared statement
 *   ledger-open.c    open (the check at open, a corrupt file refused), close, reconnect,
 *                    ledger_integrity_check()
 *   ledger-jobs.c    the state machine: enqueue, claim, stage, complete, fail, release,
 *                    cancel, retry, hold, recover, re-render
 *   ledger-query.c   read-only queries: lookups, lists, counts, a job's detail
 *   ledger-retract.c retraction: retract, drop and move jobs queued and completed
 *   ledger-maint.c   maintenance: pruning, the clean-stop record, the check of the WAL files
 *
 * The engine: the contract of ledger.h (states, checkpoints, recovery) is written once in
 * ledger-jobs.c and ledger-query.c as *_locked() helpers over the statement layer below;
 * SQLite is the one engine today. A second engine (PostgreSQL, issue 18) implements the
 * statement and transaction layer of its own (ledger-sqlite.c's counterpart) and its own
 * schema; the fields of struct ledger are grouped by which side they belong to.
 *
 * Transactions: every write transition is LEDGER_WRITE(l, x_locked(...)): one transaction
 * begun by ledger_tx_begin() (BEGIN IMMEDIATE, flushed) and ended by ledger_tx_end(), which
 * commits on success and rolls back on every failure, so that a failed call leaves the
 * database as it was. That pair is the one place where transitions begin and commit; inside a
 * group commit (ledger_batch_begin()) the same pair makes a savepoint of the batch's
 * transaction instead, released on success and rolled back to on failure. The work inside is
 * done by *_locked() helpers whose statements are reset (by their cleanup attribute) before
 * the commit.
 *
 * Statements are prepared once when the connection is made (ledger_prepare(), from the SQL
 * of ledger-schema.c) and kept in the struct; a user takes one with ledger_stmt_get() into a
 * variable declared _cleanup_stmt_reset_, which resets it and clears its bindings when it
 * goes out of scope, or runs a whole statement with ledger_stmt_exec().
 */
#pragma once

#include <assert.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/stat.h>
#include <sys/types.h>

#include <sqlite3.h>

#include "daemon/ledger.h"
#include "shared/macro.h"

/* The mode of the files the ledger creates (the database, its clean-stop record). */
#define LEDGER_FILE_MODE 0640

/* The columns ledger_read_job() expects, in this order. */
#define JOB_COLUMNS                                                                                \
        "id, watch, source_path, output_key, pipeline, source_sha256, source_size, "               \
        "source_mtime_ns, source_ino, state, attempts, created_us, updated_us, next_at_us, "       \
        "last_error, degraded, info, priority, redo, kind, origin"

/* The prepared statements; their SQL is ledger_stmt_sql[] (ledger-schema.c). */
enum ledger_stmt {
        STMT_KNOWN_STAT,
        STMT_FIND_SOURCE,
        STMT_REFRESH_STAT,
        STMT_INSERT_JOB,
        STMT_SUPERSEDE,
        STMT_CLAIM,
        STMT_NEXT_DUE,
        STMT_JOB_STATE,
        STMT_SET_DONE,
        STMT_INSERT_OUTPUT,
        STMT_INSERT_ERROR,
        STMT_SET_FAILED,
        STMT_SET_RELEASED,
        STMT_SET_CANCELLED,
        STMT_SET_REQUEUED,
        STMT_RECOVER,
        STMT_SUPERSEDED,
        STMT_OUTPUT_OWNER,
        STMT_COUNTS,
        STMT_COUNTS_SCAN,
        STMT_GET_JOB,
        STMT_GET_OUTPUTS,
        STMT_GET_ERRORS,
        STMT_SET_STAGED,
        STMT_DROP_STAGED,
        STMT_PUBLISHED,
        STMT_LIST_STAGED,
        STMT_EXPIRED,
        STMT_OLDEST_QUEUED,
        STMT_RERENDER,
        STMT_PRUNE,
        STMT_ID_RANGE,
        STMT_SET_HELD,
        STMT_IS_HELD,
        STMT_UNHOLD,
        STMT_COUNT_HELD,
        STMT_RELOCATE,
        STMT_SCAN_DONE,
        STMT_ADOPT_RECIPE,
        STMT_RECONCILE,
        STMT_CARRY,
        STMT_CARRIED,
        STMT_COUNT_BACKGROUND,
        STMT_ORIGIN,
        STMT_INSERT_RETRACT,
        STMT_INSERT_MOVE,
        STMT_NEWEST_OF_PATH,
        STMT_PUBLISHED_OF_PATH,
        STMT_PATHS_BELOW,
        STMT_MOVE_TO_RENDER,
        STMT_COPY_RENDER_INFO,
        STMT_IS_CURRENT_DONE,
        _STMT_MAX,
};

extern const char *const ledger_stmt_sql[_STMT_MAX];

struct ledger {
        /* Engine-independent: the file, the last failure, what the open checked. */
        char *path;
        char *closed_path;      /* <path>.closed, the clean-stop record */
        const char *open_check; /* what ledger_open() checked, for ledger_open_check() */
        char errmsg[512];
        /* The file system refused the last write transaction (ledger_storage_errno()): its
         * message and since when (wall clock), until a write transaction commits again. */
        char write_failure[512];
        int64_t write_failed_since_usec;

        /* The SQLite engine: the connection and its statements. */
        sqlite3 *db;
        sqlite3_stmt *stmts[_STMT_MAX];
        char *wal_path; /* <path>-wal, the WAL, and <path>-shm, its index */
        char *shm_path;
        bool saw_corrupt; /* SQLite reported corruption: the next open checks everything */
        bool lazy_sync;   /* synchronous=NORMAL (set by ledger_claim()) is in force */
        bool in_write;    /* between ledger_tx_begin_sync() and ledger_tx_end() */
        /* Between ledger_batch_begin() and ledger_batch_commit(): each transition is a
         * savepoint of the batch's transaction; batch_error is the error that made SQLite
         * abandon it (then the rest of the batch fails with it). */
        bool batch;
        int batch_error;
        sqlite3_int64 changes_at_begin; /* sqlite3_total_changes64() at the write's BEGIN */
        /* The WAL this connection writes to (dev, ino: ledger_aux_note()), and whether it was
         * seen gone from its path: then every commit is checkpointed at once, until
         * ledger_check_files() gives the connection a new WAL. */
        dev_t wal_dev;
        ino_t wal_ino;
        bool wal_known, wal_lost;
        /* The same for the -shm (the WAL index), which only a restart can give back. */
        dev_t shm_dev;
        ino_t shm_ino;
        bool shm_known, shm_lost;
};

/* ledger.c */

/* Records a message of our own for ledger_errmsg(); returns r. */
int ledger_error(ledger *l, int r, const char *fmt, ...) _printf_(3, 4);

/* Whether errno e is a failure of the file system under the ledger rather than of the ledger
 * (EROFS, ENOSPC, EDQUOT, EIO, EACCES, EPERM). */
bool ledger_storage_errno(int e);

/* ledger-sqlite.c: errors */

/* SQLite's rc as a negative errno (db, may be NULL, tells EACCES from ENOENT for CANTOPEN). */
int ledger_errno_from_sqlite(sqlite3 *db, int rc);

/* Records SQLite's message for rc (see ledger-sqlite.c) and returns rc as a negative errno;
 * the first thing called after the failing SQLite call (for its errno). */
int ledger_sqlite_error(ledger *l, int rc);

/* ledger-sqlite.c: statements */

/* Runs SQL text (several statements, no parameters); returns 0 or a negative errno. */
int ledger_exec(ledger *l, const char *sql);

static inline sqlite3_stmt *ledger_stmt_get(ledger *l, enum ledger_stmt id)
{
        assert(id < _STMT_MAX && l->stmts[id]);
        return l->stmts[id];
}

/* Resets a cached statement and clears its bindings; it stays prepared. */
static inline void ledger_stmt_resetp(sqlite3_stmt **p)
{
        if (*p) {
                sqlite3_reset(*p);
                sqlite3_clear_bindings(*p);
        }
}
#define _cleanup_stmt_reset_ _cleanup_(ledger_stmt_resetp)

DEFINE_TRIVIAL_CLEANUP_FUNC(sqlite3_stmt *, sqlite3_finalize)

/*
 * Binds the arguments to parameters 1, 2, ... by the letters of `types`:
 *   't' const char * (NULL binds NULL), 'm' const char * message (cut to LEDGER_MESSAGE_MAX
 *   at a UTF-8 boundary), 'i' int64_t.
 * Strings are bound without copying: they must outlive the use of the statement.
 */
int ledger_stmt_bind(ledger *l, sqlite3_stmt *st, const char *types, ...);

/* Steps st: returns 1 for a row, 0 when done, or a negative errno. */
int ledger_stmt_step(ledger *l, sqlite3_stmt *st);

/* Steps a statement that returns no rows: 0 or a negative errno. */
int ledger_stmt_run(ledger *l, sqlite3_stmt *st);

/* ledger_stmt_bind() then ledger_stmt_step(): 1 for a row (read it from st), 0, or a
 * negative errno. The caller's _cleanup_stmt_reset_ variable resets st. */
int ledger_bind_step(ledger *l, sqlite3_stmt *st, const char *types, ...);

/* Takes statement `id`, binds the arguments (as ledger_stmt_bind()), runs it (no rows) and
 * resets it: 0 or a negative errno. */
int ledger_stmt_exec(ledger *l, enum ledger_stmt id, const char *types, ...);

/* As ledger_stmt_exec(), returning the number of rows the statement changed. */
int ledger_stmt_changes(ledger *l, enum ledger_stmt id, const char *types, ...);

/* ledger-sqlite.c: transactions */

/* Begins a write transaction whose commit is flushed to disk (flush: synchronous=FULL, every
 * transition) or not (synchronous=NORMAL: a claim). */
int ledger_tx_begin_sync(ledger *l, bool flush);
static inline int ledger_tx_begin(ledger *l)
{
        return ledger_tx_begin_sync(l, true);
}

/* Begins a read transaction for reads that must see one snapshot: 1 when the open read
 * batch already provides one (then no ledger_tx_end()), 0 when one began for ledger_tx_end(). */
int ledger_tx_begin_read(ledger *l);

/* Ends the transaction: commits when r >= 0 and returns r (or the commit's error); rolls back
 * when r < 0 or the commit failed. The one way out of every transaction. */
int ledger_tx_end(ledger *l, int r);

/*
 * LEDGER_WRITE(l, expr): evaluates expr (a *_locked() call: >= 0 or a negative errno) inside
 * one flushed write transaction and returns its value, or the error of the begin or the
 * commit; rolled back on every failure. expr is not evaluated when the begin fails.
 */
#define LEDGER_WRITE(l, expr)                                                                      \
        ({                                                                                         \
                ledger *_l_ = (l);                                                                 \
                int _r_ = ledger_tx_begin(_l_);                                                    \
                _r_ < 0 ? _r_ : ledger_tx_end(_l_, (expr));                                        \
        })

/* ledger-sqlite.c: the connection and its WAL */

/* Opens a connection to l->path into l->db (extended result codes, the busy timeout). */
int ledger_connect(ledger *l);

/* The settings of every connection to the ledger: WAL, synchronous=FULL, foreign keys. */
int ledger_configure(ledger *l);

/* Finalizes the statements and closes the connection; returns SQLite's rc of the close. */
int ledger_close_db(ledger *l);

/* Whether the file at `path` is missing or not the one recorded. */
bool ledger_aux_gone(const char *path, dev_t dev, ino_t ino);

/* Records the identity of the WAL (when wal_too) and the -shm (when shm_too) in use. */
void ledger_aux_note(ledger *l, bool wal_too, bool shm_too);

/* Checkpoints the whole WAL into the database file (mode: SQLITE_CHECKPOINT_*). */
int ledger_wal_checkpoint(ledger *l, int mode);

/* ledger-sqlite.c: rows */

/* Copies a text column; a NULL column gives NULL. */
int ledger_column_strdup(ledger *l, sqlite3_stmt *st, int col, char **ret);
int ledger_column_sha256(ledger *l, sqlite3_stmt *st, int col, char ret[static HASH_HEX_SIZE]);
int ledger_column_state(ledger *l, sqlite3_stmt *st, int col, enum job_state *ret);
/* An output's recipe; "" for NULL (recorded before recipes were kept) or one too long. */
void ledger_column_recipe(sqlite3_stmt *st, int col, char ret[static VARIANT_RECIPE_SIZE]);

/* Appends the rows of st (the columns of STMT_GET_OUTPUTS) to d's outputs: 0 or a negative
 * errno (what was read stays in d for job_detail_free()). */
int ledger_read_outputs(ledger *l, sqlite3_stmt *st, struct job_detail *d);

/* ledger-jobs.c: ledger_complete() inside a transaction. */
int ledger_complete_locked(ledger *l, int64_t id, const struct job_output *outs, size_t n_outs,
                           int64_t now_usec);

/* ledger-reconcile.c: a reconciliation job done, the outputs it carries over recorded. */
int ledger_carry_locked(ledger *l, int64_t id);

/* Reads a row of JOB_COLUMNS into *ret (whose members are overwritten, not freed). */
int ledger_read_job(ledger *l, sqlite3_stmt *st, struct job *ret);

/* ledger-schema.c */

/* Applies the missing migration steps, one transaction each; refuses a newer schema. */
int ledger_migrate(ledger *l);

/* Prepares every statement of ledger_stmt_sql[] on l->db into l->stmts. */
int ledger_prepare(ledger *l);

/* ledger-open.c */

/* Replaces l's connection by a new one (a new WAL); on failure l keeps the old one. */
int ledger_reconnect(ledger *l);

/* ledger-maint.c: the clean-stop record */

/* Whether <path>.closed records a clean stop of the file exactly as st describes it, with
 * no WAL left beside it. */
bool ledger_closed_cleanly(const ledger *l, const struct stat *st);

/* Writes <path>.closed for the ledger file as it is now; 0 or a negative errno (message in
 * l->errmsg). */
int ledger_closed_record_write(ledger *l);

/* Fsyncs the directory holding path, so that a rename or unlink in it is durable. */
int ledger_fsync_parent(const char *path);
