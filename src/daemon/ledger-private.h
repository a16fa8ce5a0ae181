/* SPDX-License-Identifier: MIT */
/*
 * ledger-private.h - what the files of the ledger share and nothing outside src/daemon/ledger*.c
 * may include (as SQLite's btreeInt.h): the struct ledger, the engines' interface, the
 * prepared statements, and the helpers every transition and query is written with. ledger.h
 * stays the public contract.
 *
 *   ledger.c            engine-independent: state names, job_free(), the message of the last
 *                       failure, the file system's failures, ledger_open_params() and the
 *                       public functions that are the engine's alone (close, checks)
 *   ledger-stmt.c       the engine-neutral statement layer: a cursor over one engine's
 *                       statement (bind, step, read), transactions and group commits, rows
 *                       read into struct job
 *   ledger-jobs.c       the state machine: enqueue, claim, stage, complete, fail, release,
 *                       cancel, retry, hold, recover, re-render
 *   ledger-query.c      read-only queries: lookups, lists, counts, a job's detail
 *   ledger-reconcile.c  what reconciliation asks of the ledger (issue 17)
 *   ledger-retract.c    retraction: retract, drop and move jobs queued and completed
 *   ledger-maint.c      pruning; SQLite's clean-stop record and check of the WAL files
 *   ledger-lease.c      leases across nodes: heartbeats, renewals before publication, lapsed
 *                       leases listed and rescued
 *
 *   ledger-sqlite.c     the SQLite engine: errors -> negative errno + message, statements,
 *                       transactions and group commits, the WAL and synchronous settings
 *   ledger-schema.c     SQLite's schema, its migrations, and the SQL of every statement
 *   ledger-open.c       SQLite's open (the check at open, a corrupt file refused), close,
 *                       reconnect, integrity check
 *   ledger-pg.c         the PostgreSQL engine (libpq): the connection, errors, statements
 *                       prepared per connection, transactions and group commits
 *   ledger-pg-schema.c  PostgreSQL's schema, its migrations, and the SQL of every statement
 *   ledger-notify.c     PostgreSQL's LISTEN/NOTIFY: the channels listened on (again after each
 *                       reconnect), the notifications read, events sent to the other nodes
 *
 * The engines: the contract of ledger.h (states, checkpoints, recovery, reconciliation, group
 * commit) is written once, in ledger-jobs.c, ledger-query.c and ledger-reconcile.c, as
 * *_locked() helpers over the statement layer below. Each engine supplies the SQL text of
 * every statement of enum ledger_stmt (same parameters, same columns, in its own dialect), its
 * schema and migrations, and a struct ledger_engine: the primitives of statements and
 * transactions, and what only it has (SQLite's WAL files and clean-stop record). The fields of
 * struct ledger are grouped by which side they belong to.
 *
 * Transactions: every write transition is LEDGER_WRITE(l, x_locked(...)): one transaction
 * begun by ledger_tx_begin() (SQLite: BEGIN IMMEDIATE; PostgreSQL: BEGIN, rows locked with
 * FOR UPDATE where the transition reads before it writes) and ended by ledger_tx_end(), which
 * commits on success and rolls back on every failure, so that a failed call leaves the
 * database as it was. That pair is the one place where transitions begin and commit; inside a
 * group commit (ledger_batch_begin()) the same pair makes a savepoint of the batch's
 * transaction instead, released on success and rolled back to on failure. The work inside is
 * done by *_locked() helpers whose statements are reset (by their cleanup attribute) before
 * the commit.
 *
 * Statements are prepared once per connection (SQLite: all when the connection is made;
 * PostgreSQL: each at its first use on the connection) and kept by the engine; a user takes
 * one with ledger_stmt_get() into a struct ledger_cursor declared _cleanup_cursor_, which
 * resets it and clears its bindings when it goes out of scope, or runs a whole statement with
 * ledger_stmt_exec(). A cursor is two pointers on the stack: taking one allocates nothing.
 */
#pragma once

#include <assert.h>
#include <stdarg.h>
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

/* Longest error message or cancel reason stored; longer ones are cut at a UTF-8 boundary. */
#define LEDGER_MESSAGE_MAX 4096

/* The columns ledger_read_job() expects, in this order. */
#define JOB_COLUMNS                                                                                \
        "id, watch, source_path, output_key, pipeline, source_sha256, source_size, "               \
        "source_mtime_ns, source_ino, state, attempts, created_us, updated_us, next_at_us, "       \
        "last_error, degraded, info, priority, redo, fence, kind, origin"

/* The prepared statements; each engine's SQL for them is its ledger_*_stmt_sql[]. Their
 * parameters and columns are the same in every engine (ledger-schema.c says what they are). */
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
        STMT_COUNT_BACKGROUND_WAITING,
        STMT_ORIGIN,
        STMT_INSERT_RETRACT,
        STMT_INSERT_MOVE,
        STMT_NEWEST_OF_PATH,
        STMT_PUBLISHED_OF_PATH,
        STMT_PATHS_BELOW,
        STMT_MOVE_TO_RENDER,
        STMT_COPY_RENDER_INFO,
        STMT_IS_CURRENT_DONE,
        /* Leases across nodes (ledger-lease.c) and intake from several nodes. */
        STMT_RECOVER_NODE,
        STMT_LIST_STAGED_NODE,
        STMT_LOCK_SOURCE,
        STMT_NODE_BEAT,
        STMT_RENEW_OWNED,
        STMT_RENEW_ONE,
        STMT_LEASE_OF,
        STMT_LAPSED,
        STMT_LAPSED_LOCK,
        /* Serialisations across nodes (ledger-jobs.c, ledger-reconcile.c, ledger-retract.c)
         * and the nodes of a cluster (ledger-lease.c). */
        STMT_CLAIM_PICK,
        STMT_LOCK_SOURCE_OF,
        STMT_LOCK_OUTPUT,
        STMT_NODES,
        _STMT_MAX,
};

/* SQLite's SQL of every statement (ledger-schema.c). */
extern const char *const ledger_stmt_sql[_STMT_MAX];

/* The SQLite engine's transaction control, prepared once with the statements above (after
 * them in ledger.stmts[]) instead of parsed at every transition by sqlite3_exec(). Pragmas
 * are not among them: SQLite applies a pragma's value when it compiles the statement. */
enum ledger_tx_stmt {
        TX_BEGIN = _STMT_MAX,
        TX_BEGIN_IMMEDIATE,
        TX_COMMIT,
        TX_SAVEPOINT,
        TX_RELEASE,
        _TX_STMT_END,
};
extern const char *const ledger_tx_stmt_sql[_TX_STMT_END - _STMT_MAX];

struct ledger_pg;      /* the PostgreSQL engine's state (ledger-pg.c) */
struct ledger_pg_stmt; /* one of its statements */

/*
 * A statement in use: taken with ledger_stmt_get() (or prepared for one use with
 * ledger_stmt_prepare()), bound, stepped, its columns read, and reset by its cleanup
 * attribute. Exactly one of sq and pg is set, by the engine of l.
 */
struct ledger_cursor {
        ledger *l;
        sqlite3_stmt *sq;
        struct ledger_pg_stmt *pg;
        bool once; /* prepared for this use only: the reset finalizes it */
};

/*
 * An engine: the primitives the statement layer (ledger-stmt.c) and the public functions
 * that are the engine's own call. Statements: bind one parameter (1-based; text NULL binds
 * NULL; len -1 for the whole string, else its first len bytes), step (1 for a row, 0 done, or
 * a negative errno), the rows the statement just run changed, the id of the row the last
 * INSERT made (used when the INSERT returned no row of its own), the number of parameters,
 * reset (finalizing a statement prepared for one use), prepare SQL for one use. Transactions:
 * see ledger_tx_begin_sync(), ledger_tx_begin_read() and ledger_tx_end().
 */
struct ledger_engine {
        const char *name;
        char param; /* the parameter mark before a number: '?' (?1) or '$' ($1) */
        int (*bind_text)(ledger *l, struct ledger_cursor *c, int i, const char *s, int len);
        int (*bind_int64)(ledger *l, struct ledger_cursor *c, int i, int64_t v);
        int (*step)(ledger *l, struct ledger_cursor *c);
        int (*changes)(ledger *l, struct ledger_cursor *c);
        int64_t (*last_insert_id)(ledger *l);
        int (*nparams)(const struct ledger_cursor *c);
        void (*reset)(struct ledger_cursor *c);
        int (*prepare)(ledger *l, const char *sql, struct ledger_cursor *ret);
        int (*exec)(ledger *l, const char *sql);

        int (*tx_begin_sync)(ledger *l, bool flush);
        int (*tx_begin_read)(ledger *l);
        int (*tx_end)(ledger *l, int r);
        /* A claim's transaction, when the engine lets claims ride on the next commit (NULL:
         * a claim is a transaction of its own, ledger_tx_begin_sync(l, false)): claim_begin
         * opens (or joins) the transaction the claims wait in, claim_end ends the claim's part
         * of it (all or nothing) and leaves it open; claims_commit commits what waits. */
        int (*claim_begin)(ledger *l);
        int (*claim_end)(ledger *l, int r);
        int (*claims_commit)(ledger *l);

        /* ledger.h's functions of the same names; check_files may be NULL (nothing to do). */
        int (*check_files)(ledger *l);
        int (*integrity_check)(ledger *l);
        /* Closes the connection and frees the engine's state (not l): clean (ledger_close(),
         * which may record a clean stop) or not (ledger_free()). 0 or a negative errno with
         * the message in l->errmsg. */
        int (*close)(ledger *l, bool clean);
};

extern const struct ledger_engine ledger_engine_sqlite;
extern const struct ledger_engine ledger_engine_pg;

struct ledger {
        /* Engine-independent: the engine, what the ledger is (a file, a database), the last
         * failure, what the open checked. */
        const struct ledger_engine *engine;
        char *path;             /* SQLite: the file; PostgreSQL: a description of the database */
        const char *open_check; /* what ledger_open() checked, for ledger_open_check() */
        char errmsg[512];
        /* The file system (or the database server) refused the last write transaction
         * (ledger_storage_errno()): its message and since when (wall clock), until a write
         * transaction commits again. */
        char write_failure[512];
        int64_t write_failed_since_usec;
        /* The server could not be reached (PostgreSQL: the last command failed with
         * -ENOTCONN): its message and since when (wall clock), until it answers again. */
        char unreachable[512];
        int64_t unreachable_since_usec;
        /* Between ledger_batch_begin() and ledger_batch_commit(): each transition is a
         * savepoint of the batch's transaction; batch_error is the error that made the engine
         * abandon it (then the rest of the batch fails with it). */
        bool batch;
        int batch_error;
        bool in_write; /* between ledger_tx_begin_sync() and ledger_tx_end() */

        /* The SQLite engine: the connection and its statements. */
        sqlite3 *db;
        sqlite3_stmt *stmts[_TX_STMT_END]; /* enum ledger_stmt, then enum ledger_tx_stmt */
        char *closed_path;                 /* <path>.closed, the clean-stop record */
        char *wal_path;                    /* <path>-wal, the WAL, and <path>-shm, its index */
        char *shm_path;
        bool saw_corrupt; /* SQLite reported corruption: the next open checks everything */
        bool lazy_sync;   /* synchronous=NORMAL (set by a transaction not flushed) is in force */
        /* Claims ride on the next commit (ledger_claim()): claims_open while a write
         * transaction holding only claims is open; adopted while the transition in progress
         * (or group commit) is a savepoint of that transaction, which its end commits. */
        bool claims_open;
        bool adopted;
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

        /* The PostgreSQL engine. */
        struct ledger_pg *pg;
        /* LISTEN/NOTIFY (ledger-notify.c): the channels listened on (bits of enum
         * ledger_channel), LISTENed again on every new connection, whose number is
         * `generation`; whether the transaction (wake) or the savepoint of a group commit
         * (wake_sp) made a job claimable: its commit then notifies LEDGER_CHANNEL_JOBS. */
        unsigned listening;
        uint64_t generation;
        /* The channels' names in this ledger's schema ("imgd_jobs:<schema>"; notifications
         * are per database) and the NOTIFY of the jobs channel, set by ledger_notify_init(). */
        char channels[_LEDGER_CHANNEL_MAX][64];
        char notify_jobs_sql[96];
        bool wake, wake_sp;
};

/* ledger.c */

/* Records a message of our own for ledger_errmsg(); returns r. */
int ledger_error(ledger *l, int r, const char *fmt, ...) _printf_(3, 4);

/* Whether errno e is a failure of the file system under the ledger rather than of the ledger
 * (EROFS, ENOSPC, EDQUOT, EIO, EACCES, EPERM). */
bool ledger_storage_errno(int e);

/* Length of s cut to at most max bytes without splitting a UTF-8 sequence. */
int ledger_message_len(const char *s, size_t max);

/* ledger-stmt.c: statements */

/* Takes prepared statement id of l's engine. */
struct ledger_cursor ledger_stmt_get(ledger *l, enum ledger_stmt id);

/* Prepares SQL (parameters written with l->engine->param) for one use into *ret. */
int ledger_stmt_prepare(ledger *l, const char *sql, struct ledger_cursor *ret);

/* Resets a statement and clears its bindings (a prepared one stays prepared; one prepared
 * for one use is finalized). */
void ledger_cursor_reset(struct ledger_cursor *c);
#define _cleanup_cursor_ _cleanup_(ledger_cursor_reset)

/* Runs SQL text (several statements, no parameters); returns 0 or a negative errno. */
int ledger_exec(ledger *l, const char *sql);

/*
 * Binds the arguments to parameters 1, 2, ... by the letters of `types`:
 *   't' const char * (NULL binds NULL), 'm' const char * message (cut to LEDGER_MESSAGE_MAX
 *   at a UTF-8 boundary), 'i' int64_t.
 * Strings are bound without copying: they must outlive the use of the statement.
 */
int ledger_stmt_bind(ledger *l, struct ledger_cursor *c, const char *types, ...);

/* Steps c: returns 1 for a row, 0 when done, or a negative errno. */
int ledger_stmt_step(ledger *l, struct ledger_cursor *c);

/* Steps a statement that returns no rows: 0 or a negative errno. */
int ledger_stmt_run(ledger *l, struct ledger_cursor *c);

/* ledger_stmt_bind() then ledger_stmt_step(): 1 for a row (read it from c), 0, or a
 * negative errno. The caller's _cleanup_cursor_ variable resets c. */
int ledger_bind_step(ledger *l, struct ledger_cursor *c, const char *types, ...);

/* Takes statement `id`, binds the arguments (as ledger_stmt_bind()), runs it (no rows) and
 * resets it: 0 or a negative errno. */
int ledger_stmt_exec(ledger *l, enum ledger_stmt id, const char *types, ...);

/* As ledger_stmt_exec(), returning the number of rows the statement changed. */
int ledger_stmt_changes(ledger *l, enum ledger_stmt id, const char *types, ...);

/* As ledger_stmt_changes() for an INSERT of at most one row: 1 and its id in *ret_id, or 0
 * when it inserted nothing (*ret_id unchanged). An engine's SQL may return the id as its one
 * column (PostgreSQL: RETURNING id); otherwise the engine's last insert id is taken. */
int ledger_stmt_insert(ledger *l, enum ledger_stmt id, int64_t *ret_id, const char *types, ...);

/* The columns of the current row (0-based). Inline: a row of a job reads twenty of them, and
 * SQLite's, the hot path, go straight to SQLite. */
int64_t ledger_pg_column_int64(const struct ledger_pg_stmt *st, int col);
const char *ledger_pg_column_text(const struct ledger_pg_stmt *st, int col);
int ledger_pg_column_bytes(const struct ledger_pg_stmt *st, int col);

static inline int64_t ledger_column_int64(const struct ledger_cursor *c, int col)
{
        return c->sq ? sqlite3_column_int64(c->sq, col) : ledger_pg_column_int64(c->pg, col);
}

/* The text of a column, NULL for NULL (valid until the next step or reset). */
static inline const char *ledger_column_text(const struct ledger_cursor *c, int col)
{
        return c->sq ? (const char *)sqlite3_column_text(c->sq, col)
                     : ledger_pg_column_text(c->pg, col);
}

static inline bool ledger_column_null(const struct ledger_cursor *c, int col)
{
        return c->sq ? sqlite3_column_type(c->sq, col) == SQLITE_NULL
                     : ledger_pg_column_text(c->pg, col) == NULL;
}

/* The length of a text column in bytes. */
static inline int ledger_column_bytes(const struct ledger_cursor *c, int col)
{
        return c->sq ? sqlite3_column_bytes(c->sq, col) : ledger_pg_column_bytes(c->pg, col);
}

/* ledger-stmt.c: transactions */

/* Begins a write transaction whose commit is flushed to disk (flush: every transition) or
 * not (a claim: SQLite synchronous=NORMAL, PostgreSQL synchronous_commit=off). Inside a
 * group commit: a savepoint. */
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

/* ledger-stmt.c: rows */

/* Copies a text column; a NULL column gives NULL. */
int ledger_column_strdup(ledger *l, const struct ledger_cursor *c, int col, char **ret);
int ledger_column_sha256(ledger *l, const struct ledger_cursor *c, int col,
                         char ret[static HASH_HEX_SIZE]);
int ledger_column_state(ledger *l, const struct ledger_cursor *c, int col, enum job_state *ret);
/* An output's recipe; "" for NULL (recorded before recipes were kept) or one too long. */
void ledger_column_recipe(const struct ledger_cursor *c, int col,
                          char ret[static VARIANT_RECIPE_SIZE]);

/* Reads a row of JOB_COLUMNS into *ret (whose members are overwritten, not freed). */
int ledger_read_job(ledger *l, const struct ledger_cursor *c, struct job *ret);

/* Appends the rows of c (the columns of STMT_GET_OUTPUTS) to d's outputs: 0 or a negative
 * errno (what was read stays in d for job_detail_free()). */
int ledger_read_outputs(ledger *l, struct ledger_cursor *c, struct job_detail *d);

/* ledger-reconcile.c: a reconciliation job done, the outputs it carries over recorded. */
int ledger_carry_locked(ledger *l, int64_t id);

/* ledger-sqlite.c: errors */

/* SQLite's rc as a negative errno (db, may be NULL, tells EACCES from ENOENT for CANTOPEN). */
int ledger_errno_from_sqlite(sqlite3 *db, int rc);

/* Records SQLite's message for rc (see ledger-sqlite.c) and returns rc as a negative errno;
 * the first thing called after the failing SQLite call (for its errno). */
int ledger_sqlite_error(ledger *l, int rc);

/* Steps a statement of SQLite's own (a PRAGMA): 1 for a row, 0 when done, or a negative
 * errno. */
int ledger_sqlite_step(ledger *l, sqlite3_stmt *st);

DEFINE_TRIVIAL_CLEANUP_FUNC(sqlite3_stmt *, sqlite3_finalize)

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

/* ledger-jobs.c: ledger_complete() and ledger_release() inside a transaction. */
int ledger_complete_locked(ledger *l, int64_t id, int64_t fence, const struct job_output *outs,
                           size_t n_outs, int64_t now_usec);
int ledger_release_locked(ledger *l, int64_t id, int64_t fence, int64_t next_at_usec,
                          int64_t now_usec);
/* ledger-jobs.c: ledger_fail() inside a transaction. */
int ledger_fail_locked(ledger *l, int64_t id, int64_t fence, const char *error, bool retry,
                       int64_t next_at_usec, int64_t now_usec);
/* ledger-jobs.c: serializes the transitions of one source path among nodes until the
 * transaction ends (PostgreSQL: an advisory lock of the path; SQLite: BEGIN IMMEDIATE already
 * does). */
int ledger_lock_source_locked(ledger *l, const char *path);
/* The same for the source path of job id (nothing when there is no such job): what the
 * transitions that start from a job take (ledger_reconcile(), ledger_drop()), before they
 * read what they check, each read a statement of its own after the lock. */
int ledger_lock_source_of_locked(ledger *l, int64_t id);

/* ledger-schema.c */

/* Applies the missing migration steps, one transaction each; refuses a newer schema. */
int ledger_migrate(ledger *l);

/* Prepares every statement of ledger_stmt_sql[], then of ledger_tx_stmt_sql[], on l->db into
 * l->stmts. */
int ledger_prepare(ledger *l);

/* ledger-open.c */

/* Opens the SQLite ledger at path (ledger_open()). */
int ledger_sqlite_open(const char *path, ledger **ret, char **ret_error);

/* Replaces l's connection by a new one (a new WAL); on failure l keeps the old one. */
int ledger_reconnect(ledger *l);

/* SQLite's ledger_integrity_check(): PRAGMA integrity_check, then the counts. */
int ledger_sqlite_integrity_check(ledger *l);

/* SQLite's close: finalizes, closes, and (clean) records the clean stop. */
int ledger_sqlite_close(ledger *l, bool clean);

/* -EBADMSG unless every row of job_counts equals a count of the jobs table (both engines). */
int ledger_counts_check(ledger *l);

/* ledger-maint.c: the clean-stop record and the WAL files */

/* Whether <path>.closed records a clean stop of the file exactly as st describes it, with
 * no WAL left beside it. */
bool ledger_closed_cleanly(const ledger *l, const struct stat *st);

/* Writes <path>.closed for the ledger file as it is now; 0 or a negative errno (message in
 * l->errmsg). */
int ledger_closed_record_write(ledger *l);

/* Fsyncs the directory holding path, so that a rename or unlink in it is durable. */
int ledger_fsync_parent(const char *path);

/* SQLite's ledger_check_files(). */
int ledger_sqlite_check_files(ledger *l);

/* ledger-pg.c */

/* Takes prepared statement id of l's PostgreSQL engine. */
struct ledger_cursor ledger_pg_stmt_get(ledger *l, enum ledger_stmt id);

/* Opens the PostgreSQL ledger that conninfo names (ledger_open_params()). */
int ledger_pg_open(const char *conninfo, int64_t stall_usec, ledger **ret, char **ret_error);

/* ledger-notify.c */

/* The transition in progress made a job claimable (queued, a retry scheduled, handed back):
 * PostgreSQL notifies LEDGER_CHANNEL_JOBS in the same transaction, as it commits (nothing on
 * SQLite, where one node claims). */
static inline void ledger_wake_locked(ledger *l)
{
        if (l->pg) {
                if (l->batch)
                        l->wake_sp = true;
                else
                        l->wake = true;
        }
}

/* ledger_wake_locked() when r (a count of rows changed) is positive; returns r. */
static inline int ledger_wake_if(ledger *l, int r)
{
        if (r > 0)
                ledger_wake_locked(l);
        return r;
}

/* A new connection (ledger-pg.c, once its session is set): LISTENs on the channels of
 * l->listening and counts the generation up. 0 or a negative errno. */
int ledger_notify_session(ledger *l);

/* The SQL to run before COMMIT when the transaction made a job claimable ("" when not), and
 * the savepoint's flag folded into the transaction's (released: kept; rolled back:
 * forgotten, as the server forgets a NOTIFY rolled back to its savepoint). */
const char *ledger_notify_commit_sql(ledger *l, bool wake);

/* Names the channels after the connection's schema (ledger-pg.c, once it is migrated). */
int ledger_notify_init(ledger *l);
void ledger_notify_savepoint_end(ledger *l, bool released);

/* ledger-pg.c: the connection, for ledger-notify.c (NULL on SQLite or while there is none). */
struct pg_conn; /* libpq's PGconn */
struct pg_conn *ledger_pg_conn(ledger *l);

/* ledger-pg-schema.c */

/* PostgreSQL's SQL of every statement. */
extern const char *const ledger_pg_stmt_sql[_STMT_MAX];

/* Applies the missing migration steps of the PostgreSQL schema (each one transaction, under
 * an advisory lock so that nodes starting together migrate once); refuses a newer schema. */
int ledger_pg_migrate(ledger *l);

/* Reads the schema's version into *ret (0: no schema yet). */
int ledger_pg_schema_version(ledger *l, int64_t *ret);

/* The version this imgd creates and migrates to. */
int64_t ledger_pg_schema_latest(void);
