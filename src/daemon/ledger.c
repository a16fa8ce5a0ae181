/* SPDX-License-Identifier: MIT */
/*
 * ledger.c - the durable job ledger in one SQLite database; see ledger.h for the contract and
 * the state diagram.
 *
 * Promises:
 * - Every transition is one transaction started with BEGIN IMMEDIATE (tx_begin()) and ended
 *   by tx_end(), which commits on success and rolls back on every failure, so a failed call
 *   leaves the database as it was. The work inside a transaction is done by a *_locked()
 *   helper whose statements are reset (by their cleanup attribute) before the commit.
 * - The database runs in WAL mode with synchronous=FULL: a transition that returned success
 *   survives a crash or a power loss. One exception, ledger_claim(), commits without waiting
 *   for the disk (synchronous=NORMAL for that transaction): it survives a crash of imgd, and
 *   the next transition's sync makes it durable; a power cut before that can only lose the
 *   claim, which leaves the job queued as before it (to be claimed again), never a half of
 *   it. It saves a disk flush in front of every job a worker waits for.
 * - A database that is not one, or fails PRAGMA quick_check, is refused with -EBADMSG and is
 *   never written, replaced or deleted. The check reads the whole file (a million jobs take
 *   seconds warm, a minute cold), so it is skipped only where it cannot find anything new:
 *   ledger_close() leaves a record of a clean stop next to the file (<path>.closed: its
 *   device, inode, size, mtime and ctime after the last checkpoint), and ledger_open() checks
 *   only the schema when that record matches the file exactly, no WAL is left over, and the
 *   file is larger than LEDGER_ALWAYS_CHECK_BYTES. A crash, a kill, a failed close, or any
 *   write to the file by something else (which moves its ctime) leaves no matching record,
 *   and the whole file is checked. The record is removed before the first write of a run.
 * - The schema is versioned (table schema_version). ledger_open() applies the missing steps
 *   of `migrations` one transaction each and refuses a schema newer than it knows.
 *
 * Statements are prepared once in ledger_open() (stmt_sql[], SQLITE_PREPARE_PERSISTENT) and
 * kept in the struct; a user takes one with stmt_get() into a variable declared
 * _cleanup_stmt_reset_, which resets it and clears its bindings when it goes out of scope.
 *
 * Scale: claiming walks the partial index jobs_due, which holds only queued and retry jobs in
 * (next_at_us, id) order, and stops at the first one whose output_key is free; so the cost of
 * ledger_claim() and ledger_next_due() does not grow with finished jobs, nor with a long
 * queue. The statements name it with INDEXED BY: without statistics the planner would pick
 * another index and sort every due job on each claim. Counting jobs by state reads the six
 * rows of job_counts (kept by triggers); listing the newest jobs of a state walks
 * jobs_state_updated; ledger_known_stat() is answered by jobs_path alone. A caller that
 * makes many lookups in a row (the start-up scan) wraps them in ledger_read_begin() and
 * ledger_read_end(): one read transaction instead of one per lookup.
 */
#include <assert.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "daemon/ledger.h"
#include "shared/macro.h"
#include "shared/string-table.h"

#define LEDGER_BUSY_TIMEOUT_MS 5000
#define LEDGER_FILE_MODE 0640
#define LEDGER_LIST_DEFAULT 50u
#define LEDGER_LIST_MAX 10000u
/* Longest error message or cancel reason stored; longer ones are cut at a UTF-8 boundary. */
#define LEDGER_MESSAGE_MAX 4096
/* Ledgers up to this size are checked in full at every open: it takes milliseconds. */
#define LEDGER_ALWAYS_CHECK_BYTES (4u << 20)
/* The first word of a clean-stop record, and the longest record read. */
#define LEDGER_CLOSED_MAGIC "imgd-ledger-closed-v1"
#define LEDGER_CLOSED_MAX 256

DEFINE_TRIVIAL_CLEANUP_FUNC(sqlite3_stmt *, sqlite3_finalize)

/* Resets a cached statement and clears its bindings; it stays prepared. */
static inline void stmt_resetp(sqlite3_stmt **p)
{
        if (*p) {
                sqlite3_reset(*p);
                sqlite3_clear_bindings(*p);
        }
}
#define _cleanup_stmt_reset_ _cleanup_(stmt_resetp)

/*
 * Schema steps. Entry i turns a schema of version i into version i + 1 and is applied in one
 * transaction together with the update of schema_version. Add a version 2 by appending an
 * entry; never edit an entry that has been released.
 */
static const char *const migrations[] = {
        /* 0 -> 1 */
        "CREATE TABLE schema_version (version INTEGER NOT NULL);"
        "CREATE TABLE jobs ("
        "  id INTEGER PRIMARY KEY,"
        "  watch TEXT NOT NULL,"
        "  source_path TEXT NOT NULL,"
        "  source_sha256 TEXT NOT NULL,"
        "  source_size INTEGER NOT NULL,"
        "  source_mtime_ns INTEGER NOT NULL,"
        "  source_ino INTEGER NOT NULL,"
        "  output_key TEXT NOT NULL,"
        "  pipeline TEXT NOT NULL,"
        "  state TEXT NOT NULL CHECK (state IN"
        "    ('queued', 'running', 'retry', 'done', 'dead', 'cancelled')),"
        "  attempts INTEGER NOT NULL DEFAULT 0 CHECK (attempts >= 0),"
        "  created_us INTEGER NOT NULL,"
        "  updated_us INTEGER NOT NULL,"
        "  next_at_us INTEGER NOT NULL,"
        "  finished_us INTEGER,"
        "  lease_owner TEXT,"
        "  lease_expires_us INTEGER,"
        "  last_error TEXT,"
        /* For a running job: NULL (claimed) or 'verified' (outputs staged, see ledger.h). */
        "  stage TEXT CHECK (stage IS NULL OR stage = 'verified'),"
        /* Rendered below full quality (graceful degradation): to be rendered again. */
        "  degraded INTEGER NOT NULL DEFAULT 0,"
        /* What the render reported beyond its outputs (JSON: placeholder, warnings). */
        "  info TEXT,"
        "  CHECK (length(source_sha256) = 64));"
        "CREATE INDEX jobs_state_next ON jobs (state, next_at_us);"
        /* Only the claimable states, ordered by (next_at_us, id): what ledger_claim() walks. */
        "CREATE INDEX jobs_due ON jobs (next_at_us) WHERE state IN ('queued', 'retry');"
        "CREATE INDEX jobs_path ON jobs (source_path, id);"
        "CREATE INDEX jobs_output_key ON jobs (output_key, state);"
        "CREATE INDEX jobs_updated ON jobs (updated_us, id);"
        "CREATE INDEX jobs_degraded ON jobs (id) WHERE state = 'done' AND degraded = 1;"
        "CREATE TABLE job_errors ("
        "  job_id INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,"
        "  attempt INTEGER NOT NULL,"
        "  at_us INTEGER NOT NULL,"
        "  message TEXT NOT NULL);"
        "CREATE INDEX job_errors_job ON job_errors (job_id);"
        "CREATE TABLE outputs ("
        "  job_id INTEGER NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,"
        "  variant TEXT NOT NULL,"
        "  path TEXT NOT NULL,"
        "  format TEXT NOT NULL,"
        "  width INTEGER NOT NULL,"
        "  height INTEGER NOT NULL,"
        "  bytes INTEGER NOT NULL,"
        "  sha256 TEXT NOT NULL,"
        /* Set while the output waits in its temporary file (stage 'verified'). */
        "  tmp_path TEXT,"
        "  PRIMARY KEY (job_id, variant));"
        "CREATE INDEX outputs_path ON outputs (path);",
        /*
         * 1 -> 2: sizes of a million jobs (issue 7).
         * - jobs_state_updated (state, updated_us; the rowid id follows) answers "the newest
         *   jobs in a state" from the index in order, and finds running jobs; it replaces
         *   jobs_state_next, which nothing needed next_at_us in.
         * - jobs_path carries the stat columns and the state, so that a start-up scan learns
         *   whether a file is known from the index alone, without reading the table's rows.
         * - job_counts holds the number of jobs in each state, kept by triggers in the same
         *   transaction as every insert, delete and change of state (whoever makes it), so
         *   that counting does not read a million rows.
         */
        "DROP INDEX jobs_state_next;"
        "CREATE INDEX jobs_state_updated ON jobs (state, updated_us);"
        "DROP INDEX jobs_path;"
        "CREATE INDEX jobs_path ON jobs (source_path, id, source_size, source_mtime_ns, "
        "  source_ino, state);"
        "CREATE TABLE job_counts ("
        "  state TEXT PRIMARY KEY,"
        "  n INTEGER NOT NULL) WITHOUT ROWID;"
        "INSERT INTO job_counts (state, n) VALUES ('queued', 0), ('running', 0), ('retry', 0),"
        "  ('done', 0), ('dead', 0), ('cancelled', 0);"
        "UPDATE job_counts SET n = (SELECT count(*) FROM jobs WHERE jobs.state = job_counts.state);"
        "CREATE TRIGGER jobs_count_insert AFTER INSERT ON jobs BEGIN"
        "  UPDATE job_counts SET n = n + 1 WHERE state = NEW.state;"
        "END;"
        "CREATE TRIGGER jobs_count_delete AFTER DELETE ON jobs BEGIN"
        "  UPDATE job_counts SET n = n - 1 WHERE state = OLD.state;"
        "END;"
        "CREATE TRIGGER jobs_count_update AFTER UPDATE OF state ON jobs"
        "  WHEN OLD.state IS NOT NEW.state BEGIN"
        "  UPDATE job_counts SET n = n - 1 WHERE state = OLD.state;"
        "  UPDATE job_counts SET n = n + 1 WHERE state = NEW.state;"
        "END;",
};
#define LEDGER_SCHEMA_VERSION ((int64_t)ELEMENTSOF(migrations))

/* The columns read_job() expects, in this order. */
#define JOB_COLUMNS                                                                                \
        "id, watch, source_path, output_key, pipeline, source_sha256, source_size, "               \
        "source_mtime_ns, source_ino, state, attempts, created_us, updated_us, next_at_us, "       \
        "last_error, degraded, info"

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
        _STMT_MAX,
};

/* LEDGER_HELD in SQL. */
#define HELD_SQL "9223372036854775807"
static_assert(LEDGER_HELD == 9223372036854775807, "HELD_SQL is LEDGER_HELD");

static const char *const stmt_sql[_STMT_MAX] = {
        [STMT_KNOWN_STAT] = "SELECT 1 FROM jobs WHERE source_path = ?1 AND source_size = ?2 "
                            "AND source_mtime_ns = ?3 AND source_ino = ?4 "
                            "AND state <> 'cancelled' LIMIT 1",
        /* The newest job of the path: content is "known" only if it is that job's, and that
         * job was not cancelled (the content coming back after its file went away, or after
         * an operator's cancel, is work to do again). */
        [STMT_FIND_SOURCE] = "SELECT id, source_sha256 = ?2 AND state <> 'cancelled' FROM jobs "
                             "WHERE source_path = ?1 ORDER BY id DESC LIMIT 1",
        [STMT_REFRESH_STAT] = "UPDATE jobs SET source_size = ?2, source_mtime_ns = ?3, "
                              "source_ino = ?4 WHERE id = ?1",
        [STMT_INSERT_JOB] = "INSERT INTO jobs (watch, source_path, source_sha256, source_size, "
                            "source_mtime_ns, source_ino, output_key, pipeline, state, attempts, "
                            "created_us, updated_us, next_at_us) "
                            "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, 'queued', 0, ?9, ?9, ?9)",
        [STMT_SUPERSEDE] = "UPDATE jobs SET state = 'cancelled', last_error = ?3, "
                           "updated_us = ?4, finished_us = ?4 "
                           "WHERE source_path = ?1 AND id < ?2 AND state IN ('queued', 'retry')",
        [STMT_CLAIM] = "UPDATE jobs SET state = 'running', attempts = attempts + 1, degraded = 0, "
                       "lease_owner = ?2, lease_expires_us = ?3, updated_us = ?1 "
                       "WHERE id = (SELECT j.id FROM jobs AS j INDEXED BY jobs_due "
                       "            WHERE j.state IN ('queued', 'retry') AND j.next_at_us <= ?1 "
                       "              AND NOT EXISTS (SELECT 1 FROM jobs AS r "
                       "                              WHERE r.output_key = j.output_key "
                       "                                AND r.state = 'running') "
                       "            ORDER BY j.next_at_us, j.id LIMIT 1) "
                       "RETURNING " JOB_COLUMNS,
        [STMT_NEXT_DUE] = "SELECT next_at_us FROM jobs INDEXED BY jobs_due "
                          "WHERE state IN ('queued', 'retry') AND next_at_us < " HELD_SQL " "
                          "ORDER BY next_at_us LIMIT 1",
        [STMT_JOB_STATE] = "SELECT state FROM jobs WHERE id = ?1",
        [STMT_SET_DONE] = "UPDATE jobs SET state = 'done', updated_us = ?2, finished_us = ?2, "
                          "stage = NULL, lease_owner = NULL, lease_expires_us = NULL "
                          "WHERE id = ?1",
        [STMT_INSERT_OUTPUT] = "INSERT INTO outputs (job_id, variant, path, format, width, "
                               "height, bytes, sha256, tmp_path) "
                               "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
        [STMT_INSERT_ERROR] = "INSERT INTO job_errors (job_id, attempt, at_us, message) "
                              "SELECT id, attempts, ?2, ?3 FROM jobs WHERE id = ?1",
        [STMT_SET_FAILED] = "UPDATE jobs SET state = ?2, last_error = ?3, "
                            "next_at_us = CASE WHEN ?2 = 'retry' THEN ?4 ELSE next_at_us END, "
                            "finished_us = CASE WHEN ?2 = 'dead' THEN ?5 END, "
                            "updated_us = ?5, stage = NULL, lease_owner = NULL, "
                            "lease_expires_us = NULL WHERE id = ?1",
        [STMT_SET_RELEASED] = "UPDATE jobs SET state = 'queued', attempts = max(attempts - 1, 0), "
                              "next_at_us = ?2, updated_us = ?3, stage = NULL, lease_owner = NULL, "
                              "lease_expires_us = NULL WHERE id = ?1",
        [STMT_SET_CANCELLED] = "UPDATE jobs SET state = 'cancelled', last_error = ?2, "
                               "updated_us = ?3, finished_us = ?3, stage = NULL, "
                               "lease_owner = NULL, lease_expires_us = NULL WHERE id = ?1",
        [STMT_SET_REQUEUED] = "UPDATE jobs SET state = 'queued', attempts = 0, next_at_us = ?2, "
                              "updated_us = ?2, finished_us = NULL WHERE id = ?1",
        [STMT_RECOVER] = "UPDATE jobs SET state = 'queued', updated_us = ?1, lease_owner = NULL, "
                         "lease_expires_us = NULL WHERE state = 'running' AND stage IS NULL",
        [STMT_SUPERSEDED] = "SELECT EXISTS (SELECT 1 FROM jobs AS n "
                            "               WHERE n.source_path = j.source_path AND n.id > j.id) "
                            "FROM jobs AS j WHERE j.id = ?1",
        [STMT_OUTPUT_OWNER] = "SELECT source_path FROM jobs WHERE output_key = ?1 "
                              "AND state = 'done' AND source_path <> ?2 "
                              "ORDER BY finished_us DESC, id DESC LIMIT 1",
        [STMT_COUNTS] = "SELECT state, n FROM job_counts",
        /* What ledger_integrity_check() compares job_counts with. */
        [STMT_COUNTS_SCAN] = "SELECT c.state, c.n, (SELECT count(*) FROM jobs "
                             "                     WHERE jobs.state = c.state) "
                             "FROM job_counts AS c",
        [STMT_GET_JOB] = "SELECT " JOB_COLUMNS " FROM jobs WHERE id = ?1",
        [STMT_GET_OUTPUTS] = "SELECT variant, path, format, width, height, bytes, sha256, "
                             "tmp_path FROM outputs WHERE job_id = ?1 ORDER BY rowid",
        [STMT_GET_ERRORS] = "SELECT attempt, at_us, message FROM job_errors WHERE job_id = ?1 "
                            "ORDER BY rowid",
        [STMT_SET_STAGED] = "UPDATE jobs SET stage = 'verified', updated_us = ?2, degraded = ?3, "
                            "info = ?4 WHERE id = ?1",
        /* Outputs of a job that were staged and not published: forgotten with the stage. */
        [STMT_DROP_STAGED] = "DELETE FROM outputs WHERE job_id = ?1",
        [STMT_PUBLISHED] = "UPDATE outputs SET tmp_path = NULL WHERE job_id = ?1",
        [STMT_LIST_STAGED] = "SELECT id FROM jobs INDEXED BY jobs_state_updated "
                             "WHERE state = 'running' AND stage = 'verified' ORDER BY id",
        [STMT_EXPIRED] = "SELECT id FROM jobs INDEXED BY jobs_state_updated "
                         "WHERE state = 'running' AND stage IS NULL AND lease_expires_us < ?1 "
                         "ORDER BY id",
        [STMT_OLDEST_QUEUED] = "SELECT min(created_us) FROM jobs INDEXED BY jobs_due "
                               "WHERE state IN ('queued', 'retry') AND next_at_us < " HELD_SQL,
        /* Held (ledger_hold()): queued, the attempt given back, not claimable until woken. */
        [STMT_SET_HELD] = "UPDATE jobs SET state = 'queued', attempts = max(attempts - 1, 0), "
                          "next_at_us = " HELD_SQL ", last_error = ?2, updated_us = ?3, "
                          "stage = NULL, lease_owner = NULL, lease_expires_us = NULL "
                          "WHERE id = ?1",
        [STMT_IS_HELD] = "SELECT state = 'queued' AND next_at_us = " HELD_SQL " FROM jobs "
                         "WHERE id = ?1",
        [STMT_UNHOLD] = "UPDATE jobs SET next_at_us = ?1, updated_us = ?1 "
                        "WHERE state = 'queued' AND next_at_us = " HELD_SQL,
        [STMT_COUNT_HELD] = "SELECT count(*) FROM jobs INDEXED BY jobs_due "
                            "WHERE state IN ('queued', 'retry') AND next_at_us = " HELD_SQL,
        [STMT_RELOCATE] = "UPDATE jobs SET pipeline = ?2, output_key = ?3 "
                          "WHERE id = ?1 AND state = 'running'",
        /* Degraded done jobs that are still their source's newest go back to the queue. */
        [STMT_RERENDER] = "UPDATE jobs SET state = 'queued', attempts = 0, next_at_us = ?1, "
                          "updated_us = ?1, finished_us = NULL "
                          "WHERE id IN (SELECT j.id FROM jobs AS j INDEXED BY jobs_degraded "
                          "             WHERE j.state = 'done' AND j.degraded = 1 "
                          "               AND NOT EXISTS (SELECT 1 FROM jobs AS n "
                          "                               WHERE n.source_path = j.source_path "
                          "                                 AND n.id > j.id) "
                          "             ORDER BY j.id LIMIT ?2)",
        /* Finished jobs older than the cut-off that are not their source's newest job (the
         * newest is what tells a start-up scan that a file is done). Dead jobs stay. A done or
         * cancelled job's updated_us is its finished_us (every statement sets both): the
         * bound on it lets jobs_state_updated skip the jobs finished since the cut-off. */
        /* One batch of ids (?2, ?3]: the rowid range, never an index over all the old jobs
         * (the unary + keeps the planner off jobs_state_updated). */
        [STMT_PRUNE] = "DELETE FROM jobs WHERE id > ?2 AND id <= ?3 "
                       "AND +state IN ('done', 'cancelled') "
                       "AND +updated_us < ?1 AND finished_us < ?1 "
                       "AND EXISTS (SELECT 1 FROM jobs AS n WHERE n.source_path = jobs.source_path "
                       "            AND n.id > jobs.id)",
        [STMT_ID_RANGE] = "SELECT min(id), max(id) FROM jobs",
};

struct ledger {
        sqlite3 *db;
        char *path;
        char *closed_path; /* <path>.closed, the clean-stop record */
        char *wal_path;    /* <path>-wal, the WAL, and <path>-shm, its index */
        char *shm_path;
        sqlite3_stmt *stmts[_STMT_MAX];
        bool read_batch;        /* between ledger_read_begin() and ledger_read_end() */
        bool read_open;         /* ... and its read transaction is open */
        bool saw_corrupt;       /* SQLite reported corruption: the next open checks everything */
        const char *open_check; /* what ledger_open() checked, for ledger_open_check() */
        char errmsg[512];
        bool lazy_sync; /* synchronous=NORMAL (set by ledger_claim()) is in force */
        bool in_write;  /* between tx_begin_sync() and tx_end() */
        /* The file system refused the last write transaction (storage_errno()): its message
         * and since when (wall clock), until a write transaction commits again. */
        char write_failure[512];
        int64_t write_failed_since_us;
        sqlite3_int64 changes_at_begin; /* sqlite3_total_changes64() at the write's BEGIN */
        /* The WAL this connection writes to (dev, ino: wal_files_note()), and whether it was
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

static const char *const job_state_table[_JOB_STATE_MAX] = {
        [JOB_QUEUED] = "queued", [JOB_RUNNING] = "running", [JOB_RETRY] = "retry",
        [JOB_DONE] = "done",     [JOB_DEAD] = "dead",       [JOB_CANCELLED] = "cancelled",
};

DEFINE_STRING_TABLE_LOOKUP(job_state, enum job_state, NULL)

void job_clear(struct job *j)
{
        if (!j)
                return;
        free(j->watch);
        free(j->source_path);
        free(j->output_key);
        free(j->pipeline);
        free(j->last_error);
        free(j->info);
        j->watch = j->source_path = j->output_key = j->pipeline = j->last_error = j->info = NULL;
}

struct job *job_free(struct job *j)
{
        if (!j)
                return NULL;
        job_clear(j);
        free(j);
        return NULL;
}

static void job_output_clear(struct job_output *o)
{
        free(o->variant);
        free(o->path);
        free(o->format);
        free(o->tmp_path);
        o->variant = o->path = o->format = o->tmp_path = NULL;
}

struct job_detail *job_detail_free(struct job_detail *d)
{
        if (!d)
                return NULL;
        job_clear(&d->job);
        for (size_t i = 0; i < d->n_outputs; i++)
                job_output_clear(&d->outputs[i]);
        free(d->outputs);
        for (size_t i = 0; i < d->n_errors; i++)
                free(d->errors[i].message);
        free(d->errors);
        free(d);
        return NULL;
}
/* Not named job_detail_freep: that name is left free for ledger.h. */
static void free_detailp(struct job_detail **d)
{
        job_detail_free(*d);
}

/* Errors */

static int errno_from_sqlite(sqlite3 *db, int rc)
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

static int ledger_error(ledger *l, int r, const char *fmt, ...) _printf_(3, 4);
/* Records a message of our own for ledger_errmsg(); returns r. */
static int ledger_error(ledger *l, int r, const char *fmt, ...)
{
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(l->errmsg, sizeof l->errmsg, fmt, ap);
        va_end(ap);
        return r;
}

/* Failures of the file system under the ledger rather than of the ledger. */
static bool storage_errno(int e)
{
        return e == EROFS || e == ENOSPC || e == EDQUOT || e == EIO || e == EACCES || e == EPERM;
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
        if (sys == 0 && storage_errno(saved_errno))
                sys = saved_errno;

        if (primary == SQLITE_CORRUPT || primary == SQLITE_NOTADB)
                l->saw_corrupt = true;
        /* (corruption found by ledger_exec() is seen here too) */
        if ((primary == SQLITE_IOERR || primary == SQLITE_FULL || primary == SQLITE_READONLY ||
             primary == SQLITE_CANTOPEN) &&
            sys > 0)
                return ledger_error(l, storage_errno(sys) ? -sys : errno_from_sqlite(l->db, rc),
                                    "%s: %s (%s)", l->path, m ? m : sqlite3_errstr(rc),
                                    strerror(sys));
        return ledger_error(l, errno_from_sqlite(l->db, rc), "%s", m ? m : sqlite3_errstr(rc));
}

/* As ledger_sqlite_error_msg() with SQLite's message; the first thing called after the
 * failing SQLite call (for its errno). */
static int ledger_sqlite_error(ledger *l, int rc)
{
        int saved_errno = errno;

        return ledger_sqlite_error_msg(l, rc, l->db ? sqlite3_errmsg(l->db) : NULL, saved_errno);
}

const char *ledger_errmsg(ledger *l)
{
        if (!l)
                return "no ledger";
        return l->errmsg;
}

/* Statements */

static int ledger_exec(ledger *l, const char *sql)
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

static sqlite3_stmt *stmt_get(ledger *l, enum ledger_stmt id)
{
        assert(id < _STMT_MAX && l->stmts[id]);
        return l->stmts[id];
}

/* Length of s cut to at most max bytes without splitting a UTF-8 sequence. */
static int message_len(const char *s, size_t max)
{
        size_t n = strlen(s);

        if (n <= max)
                return (int)n;
        n = max;
        while (n > 0 && ((unsigned char)s[n] & 0xc0) == 0x80)
                n--;
        return (int)n;
}

/*
 * Binds the arguments to parameters 1, 2, ... by the letters of `types`:
 *   't' const char * (NULL binds NULL), 'm' const char * message (cut to LEDGER_MESSAGE_MAX),
 *   'i' int64_t.
 * Strings are bound without copying: they must outlive the use of the statement.
 */
static int stmt_bind(ledger *l, sqlite3_stmt *st, const char *types, ...)
{
        va_list ap;
        int rc = SQLITE_OK;

        assert(strlen(types) == (size_t)sqlite3_bind_parameter_count(st));
        va_start(ap, types);
        for (int i = 1; *types && rc == SQLITE_OK; types++, i++) {
                switch (*types) {
                case 't': {
                        const char *s = va_arg(ap, const char *);
                        rc = s ? sqlite3_bind_text(st, i, s, -1, SQLITE_STATIC)
                               : sqlite3_bind_null(st, i);
                        break;
                }
                case 'm': {
                        const char *s = va_arg(ap, const char *);
                        rc = sqlite3_bind_text(st, i, s, message_len(s, LEDGER_MESSAGE_MAX),
                                               SQLITE_STATIC);
                        break;
                }
                case 'i':
                        rc = sqlite3_bind_int64(st, i, va_arg(ap, int64_t));
                        break;
                default:
                        assert(!"bad stmt_bind type");
                        rc = SQLITE_MISUSE;
                }
        }
        va_end(ap);
        if (rc != SQLITE_OK)
                return ledger_sqlite_error(l, rc);
        return 0;
}

/* Returns 1 for a row, 0 when done, or a negative errno. */
static int stmt_step(ledger *l, sqlite3_stmt *st)
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

/* Steps a statement that returns no rows. */
static int stmt_run(ledger *l, sqlite3_stmt *st)
{
        int r = stmt_step(l, st);

        if (r > 0)
                return ledger_error(l, -EIO, "statement returned a row unexpectedly");
        return r;
}

/* Transactions */

/*
 * Read batches (ledger_read_begin()): while one is open, l->read_open says that a read
 * transaction (BEGIN DEFERRED) is open for the lookups to share. A write transition ends it
 * (read_pause()) before its BEGIN IMMEDIATE, so that it writes on the newest snapshot, and
 * tx_end() opens a new one after the commit (read_resume()); so a batch never holds back a
 * write, and its reads see every write made through l.
 */
static void read_pause(ledger *l)
{
        if (!l->read_open)
                return;
        l->read_open = false;
        /* A read transaction has nothing to commit; COMMIT just ends it. SQLite may have
         * ended it already after an I/O error. */
        if (!sqlite3_get_autocommit(l->db))
                (void)sqlite3_exec(l->db, "COMMIT", NULL, NULL, NULL);
}

static void read_resume(ledger *l)
{
        if (!l->read_batch || l->read_open)
                return;
        /* Without it the lookups run in their own transactions: slower, not wrong. */
        l->read_open = sqlite3_exec(l->db, "BEGIN", NULL, NULL, NULL) == SQLITE_OK;
}

/*
 * The WAL and the WAL index (-shm) removed from under the connection (`rm imgd.db-wal`):
 * SQLite keeps writing to the file it has open, unlinked, so that every commit since the last
 * checkpoint lives only in a file nobody can open again, and is lost with the next crash. A
 * stat() of the path after each write transaction (a microsecond next to the fsync of the
 * commit) notices it; from then on every commit is checkpointed into the database file at
 * once (durable: synchronous=FULL syncs the database in a checkpoint), until
 * ledger_check_files() gives the connection a new WAL.
 */

/* What to do about a removed WAL index: only closing every connection makes a new one. */
#define SHM_LOST_ADVICE                                                                            \
        "until imgd is restarted, other programs that open the ledger (sqlite3) may see an "       \
        "older state and must not write to it"

/* Whether the file at `path` is missing or not the one recorded. */
static bool aux_gone(const char *path, dev_t dev, ino_t ino)
{
        struct stat st;

        if (stat(path, &st) < 0)
                return errno == ENOENT;
        return st.st_dev != dev || st.st_ino != ino;
}

/* Records the identity of the WAL (when wal_too) and the -shm (when shm_too) the connection
 * uses, when they exist (SQLite makes the WAL at the first write after a checkpoint that
 * truncated it). */
static void aux_note(ledger *l, bool wal_too, bool shm_too)
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

/* Checkpoints the whole WAL into the database file; returns 0 or a negative errno. */
static int wal_checkpoint(ledger *l, int mode)
{
        int log = 0, done = 0, rc;

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
                aux_note(l, true, false);
        else if (!l->wal_lost && aux_gone(l->wal_path, l->wal_dev, l->wal_ino))
                l->wal_lost = true;
        if (l->wal_lost)
                (void)wal_checkpoint(l, SQLITE_CHECKPOINT_FULL);
}

/*
 * Begins a write transaction whose commit is flushed to disk (flush: synchronous=FULL, every
 * transition) or not (synchronous=NORMAL, a claim; see the top of this file). The setting
 * stays until a transaction needs the other one (l->lazy_sync says which is in force), and
 * it can only change outside a transaction, hence after read_pause().
 */
static int tx_begin_sync(ledger *l, bool flush)
{
        int r;

        read_pause(l);
        if (l->lazy_sync == flush) {
                r = ledger_exec(l, flush ? "PRAGMA synchronous = FULL"
                                         : "PRAGMA synchronous = NORMAL");
                if (r < 0) {
                        read_resume(l);
                        return r;
                }
                l->lazy_sync = !flush;
        }
        r = ledger_exec(l, "BEGIN IMMEDIATE");
        if (r < 0)
                read_resume(l);
        else {
                l->in_write = true;
                l->changes_at_begin = sqlite3_total_changes64(l->db);
        }
        return r;
}

static int tx_begin(ledger *l)
{
        return tx_begin_sync(l, true);
}

/*
 * Begins a read transaction for a group of reads that must see one snapshot; returns 1 when
 * the open read batch already provides one (the caller then must not call tx_end()), 0 when
 * it began one for tx_end() to end.
 */
static int tx_begin_read(ledger *l)
{
        int r;

        if (l->read_open && !sqlite3_get_autocommit(l->db))
                return 1;
        l->read_open = false;
        r = ledger_exec(l, "BEGIN");
        return r < 0 ? r : 0;
}

/*
 * Ends the transaction begun by tx_begin(): commits when r >= 0 and returns r, or returns the
 * commit's error; rolls back when r < 0 or the commit failed. The one way out of every
 * transaction. An open read batch gets its read transaction back.
 */
static int tx_end(ledger *l, int r)
{
        bool wrote = l->in_write;

        l->in_write = false;
        if (r >= 0) {
                int k = ledger_exec(l, "COMMIT");
                if (k >= 0) {
                        if (wrote)
                                wal_commit_durable(l);
                        /* Only a commit that wrote something says the disk takes writes. */
                        if (wrote && sqlite3_total_changes64(l->db) != l->changes_at_begin)
                                l->write_failed_since_us = 0;
                        goto out;
                }
                r = k;
        }
        if (wrote && storage_errno(-r)) {
                snprintf(l->write_failure, sizeof l->write_failure, "%s", l->errmsg);
                if (l->write_failed_since_us == 0)
                        l->write_failed_since_us = wall_usec();
        }
        /* SQLite rolls back by itself after some errors (SQLITE_FULL, SQLITE_IOERR, ...). */
        if (!sqlite3_get_autocommit(l->db))
                (void)sqlite3_exec(l->db, "ROLLBACK", NULL, NULL, NULL);
out:
        read_resume(l);
        return r;
}

void ledger_read_begin(ledger *l)
{
        assert(l);
        assert(!l->read_batch);
        l->read_batch = true;
        read_resume(l);
}

void ledger_read_end(ledger *l)
{
        assert(l);
        read_pause(l);
        l->read_batch = false;
}

/* Rows */

/* Copies a text column; a NULL column gives NULL. */
static int column_strdup(ledger *l, sqlite3_stmt *st, int col, char **ret)
{
        const unsigned char *s;
        char *p;

        if (sqlite3_column_type(st, col) == SQLITE_NULL) {
                *ret = NULL;
                return 0;
        }
        s = sqlite3_column_text(st, col);
        if (!s)
                return ledger_error(l, -ENOMEM, "out of memory");
        p = strdup((const char *)s);
        if (!p)
                return ledger_error(l, -ENOMEM, "out of memory");
        *ret = p;
        return 0;
}

static int column_sha256(ledger *l, sqlite3_stmt *st, int col, char ret[static HASH_HEX_SIZE])
{
        const unsigned char *s = sqlite3_column_text(st, col);
        int n = sqlite3_column_bytes(st, col);

        if (!s || n >= HASH_HEX_SIZE)
                return ledger_error(l, -EBADMSG, "bad sha256 in the ledger");
        memcpy(ret, s, (size_t)n + 1);
        return 0;
}

static int column_state(ledger *l, sqlite3_stmt *st, int col, enum job_state *ret)
{
        int s = job_state_from_name((const char *)sqlite3_column_text(st, col));

        if (s < 0)
                return ledger_error(l, -EBADMSG, "unknown job state in the ledger");
        *ret = s;
        return 0;
}

/* Reads a row of JOB_COLUMNS into *ret (whose members are overwritten, not freed). */
static int read_job(ledger *l, sqlite3_stmt *st, struct job *ret)
{
        struct job j = {
                .id = sqlite3_column_int64(st, 0),
                .size = (uint64_t)sqlite3_column_int64(st, 6),
                .mtime_ns = sqlite3_column_int64(st, 7),
                .ino = (uint64_t)sqlite3_column_int64(st, 8),
                .attempts = (unsigned)sqlite3_column_int64(st, 10),
                .created_us = sqlite3_column_int64(st, 11),
                .updated_us = sqlite3_column_int64(st, 12),
                .next_at_us = sqlite3_column_int64(st, 13),
        };
        int r;

        r = column_strdup(l, st, 1, &j.watch);
        if (r < 0)
                goto fail;
        r = column_strdup(l, st, 2, &j.source_path);
        if (r < 0)
                goto fail;
        r = column_strdup(l, st, 3, &j.output_key);
        if (r < 0)
                goto fail;
        r = column_strdup(l, st, 4, &j.pipeline);
        if (r < 0)
                goto fail;
        r = column_sha256(l, st, 5, j.sha256);
        if (r < 0)
                goto fail;
        j.degraded = sqlite3_column_int(st, 15) != 0;
        r = column_strdup(l, st, 16, &j.info);
        if (r < 0)
                goto fail;
        r = column_state(l, st, 9, &j.state);
        if (r < 0)
                goto fail;
        r = column_strdup(l, st, 14, &j.last_error);
        if (r < 0)
                goto fail;
        if (!j.watch || !j.source_path || !j.output_key || !j.pipeline) {
                r = ledger_error(l, -EBADMSG, "job %" PRId64 " has a NULL column", j.id);
                goto fail;
        }
        *ret = j;
        return 0;
fail:
        job_clear(&j);
        return r;
}

/* Opening */

static int ledger_read_version(ledger *l, int64_t *ret)
{
        _cleanup_(sqlite3_finalizep) sqlite3_stmt *st = NULL;
        int rc, r;

        rc = sqlite3_prepare_v2(l->db,
                                "SELECT (SELECT count(*) FROM sqlite_master "
                                "        WHERE type = 'table' AND name = 'schema_version'), "
                                "       (SELECT count(*) FROM sqlite_master "
                                "        WHERE name NOT LIKE 'sqlite\\_%' ESCAPE '\\')",
                                -1, &st, NULL);
        if (rc != SQLITE_OK)
                return ledger_sqlite_error(l, rc);
        r = stmt_step(l, st);
        if (r <= 0)
                return r < 0 ? r : ledger_error(l, -EIO, "no answer from sqlite_master");
        if (sqlite3_column_int64(st, 0) == 0) {
                if (sqlite3_column_int64(st, 1) > 0)
                        return ledger_error(l, -EMEDIUMTYPE,
                                            "not an imgd ledger (it has tables but no "
                                            "schema_version table); imgd will not touch it");
                *ret = 0;
                return 0;
        }
        sqlite3_finalize(TAKE_PTR(st));

        rc = sqlite3_prepare_v2(l->db, "SELECT max(version), count(*) FROM schema_version", -1, &st,
                                NULL);
        if (rc != SQLITE_OK)
                return ledger_sqlite_error(l, rc);
        r = stmt_step(l, st);
        if (r <= 0)
                return r < 0 ? r : ledger_error(l, -EIO, "no answer from schema_version");
        if (sqlite3_column_int64(st, 1) != 1 || sqlite3_column_int64(st, 0) < 1)
                return ledger_error(l, -EBADMSG, "schema_version does not hold one version");
        *ret = sqlite3_column_int64(st, 0);
        return 0;
}

/* Applies the next migration step if one is due; returns 1 if it did, 0 if up to date. */
static int ledger_migrate_step_locked(ledger *l)
{
        char sql[128];
        int64_t v = 0;
        int r;

        r = ledger_read_version(l, &v);
        if (r < 0)
                return r;
        if (v > LEDGER_SCHEMA_VERSION)
                return ledger_error(l, -EPROTONOSUPPORT,
                                    "ledger schema version %" PRId64 " is newer than this imgd "
                                    "supports (%" PRId64 "); run a newer imgd, or move the file "
                                    "aside to begin a new ledger",
                                    v, LEDGER_SCHEMA_VERSION);
        if (v == LEDGER_SCHEMA_VERSION)
                return 0;

        r = ledger_exec(l, migrations[v]);
        if (r < 0)
                return r;
        snprintf(sql, sizeof sql,
                 "DELETE FROM schema_version; INSERT INTO schema_version (version) VALUES (%" PRId64
                 ")",
                 v + 1);
        r = ledger_exec(l, sql);
        if (r < 0)
                return r;
        return 1;
}

static int ledger_migrate(ledger *l)
{
        for (;;) {
                int r = tx_begin(l);
                if (r < 0)
                        return r;
                r = tx_end(l, ledger_migrate_step_locked(l));
                if (r <= 0)
                        return r;
        }
}

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

                r = stmt_step(l, st);
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

/* Clean-stop records */

/* Fsyncs the directory holding path, so that a rename or unlink in it is durable. */
static int fsync_parent(const char *path)
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
static bool closed_cleanly(const ledger *l, const struct stat *st)
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
static int closed_record_write(ledger *l)
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

/*
 * The check at open, read-only: PRAGMA quick_check of the whole file, or of the schema only
 * when closed_cleanly() and the file is larger than LEDGER_ALWAYS_CHECK_BYTES. Then the
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
        } else if (!closed_cleanly(l, &st)) {
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
        r = fsync_parent(l->closed_path);
        if (r < 0)
                return ledger_error(l, r, "cannot sync the directory of %s: %s", l->closed_path,
                                    strerror(-r));
        return 0;
}

/* Opens a connection to l->path into l->db (extended result codes, the busy timeout). */
static int db_connect(ledger *l)
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
static int db_configure(ledger *l)
{
        _cleanup_(sqlite3_finalizep) sqlite3_stmt *st = NULL;
        const char *mode;
        int rc, r;

        rc = sqlite3_prepare_v2(l->db, "PRAGMA journal_mode = WAL", -1, &st, NULL);
        if (rc != SQLITE_OK)
                return ledger_sqlite_error(l, rc);
        r = stmt_step(l, st);
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
        r = ledger_exec(l, "PRAGMA synchronous = FULL");
        if (r < 0)
                return r;
        l->lazy_sync = false;
        return ledger_exec(l, "PRAGMA foreign_keys = ON");
}

/* Prepares every statement of stmt_sql[] on l->db into l->stmts. */
static int db_prepare(ledger *l)
{
        for (size_t i = 0; i < _STMT_MAX; i++) {
                int rc = sqlite3_prepare_v3(l->db, stmt_sql[i], -1, SQLITE_PREPARE_PERSISTENT,
                                            &l->stmts[i], NULL);
                if (rc != SQLITE_OK)
                        return ledger_sqlite_error(l, rc);
        }
        return 0;
}

static int ledger_open_db(ledger *l)
{
        int fd, r;

        /* Create it ourselves so that it gets our mode; SQLite gives -wal and -shm the same. */
        fd = open(l->path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, LEDGER_FILE_MODE);
        if (fd >= 0)
                close(fd);
        else if (errno != EEXIST)
                return ledger_error(l, negative_errno(), "cannot create: %s", strerror(errno));

        r = db_connect(l);
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

        r = db_configure(l);
        if (r < 0)
                return r;
        r = ledger_migrate(l);
        if (r < 0)
                return r;
        r = db_prepare(l);
        if (r < 0)
                return r;
        aux_note(l, true, true);
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

/* Finalizes the statements and closes the connection; returns SQLite's rc of the close. */
static int ledger_close_db(ledger *l)
{
        int rc;

        read_pause(l);
        l->read_batch = false;
        for (size_t i = 0; i < _STMT_MAX; i++)
                l->stmts[i] = (sqlite3_finalize(l->stmts[i]), NULL);
        /* Every statement is finalized, so a failure here means the close did not happen:
         * then close_v2 closes once the stragglers are gone. */
        rc = sqlite3_close(l->db);
        if (rc != SQLITE_OK)
                sqlite3_close_v2(l->db);
        l->db = NULL;
        return rc;
}

/* path followed by suffix (caller frees), or NULL when out of memory. */
static char *path_with(const char *path, const char *suffix)
{
        char *s;

        return asprintf(&s, "%s%s", path, suffix) < 0 ? NULL : s;
}

static ledger *ledger_dispose(ledger *l)
{
        free(l->closed_path);
        free(l->wal_path);
        free(l->shm_path);
        free(l->path);
        free(l);
        return NULL;
}

ledger *ledger_free(ledger *l)
{
        if (!l)
                return NULL;
        (void)ledger_close_db(l);
        return ledger_dispose(l);
}

int ledger_close(ledger *l, char **ret_error)
{
        int rc, r = 0;

        if (!l)
                return 0;
        rc = ledger_close_db(l);
        if (rc != SQLITE_OK)
                r = ledger_error(l, errno_from_sqlite(NULL, rc), "close: %s", sqlite3_errstr(rc));
        else if (!l->open_check)
                r = ledger_error(l, -EINVAL, "the ledger was not opened");
        else if (l->saw_corrupt)
                r = ledger_error(l, -EBADMSG, "SQLite reported corruption while it was open");
        else
                r = closed_record_write(l);
        if (r < 0 && ret_error && asprintf(ret_error, "%s: %s", l->path, l->errmsg) < 0)
                *ret_error = NULL;
        ledger_dispose(l);
        return r;
}
/*
 * A second connection replaces l's, once the WAL was checkpointed with TRUNCATE: it opens a
 * new WAL at the path (the WAL index it shares with the old connection, which is the
 * process's own, says the WAL is empty). The old connection is closed after; it is not the
 * last one, so it neither checkpoints nor deletes anything. On failure l keeps the old one.
 */
static int reconnect(ledger *l)
{
        sqlite3 *old_db = l->db;
        sqlite3_stmt *old_stmts[_STMT_MAX];
        bool old_lazy_sync = l->lazy_sync;
        int r;

        memcpy(old_stmts, l->stmts, sizeof old_stmts);
        memset(l->stmts, 0, sizeof l->stmts);
        l->db = NULL;
        r = db_connect(l);
        if (r >= 0)
                r = db_configure(l);
        if (r >= 0)
                r = db_prepare(l);
        if (r < 0) {
                char msg[sizeof l->errmsg];

                snprintf(msg, sizeof msg, "%s", l->errmsg);
                for (size_t i = 0; i < _STMT_MAX; i++)
                        l->stmts[i] = (sqlite3_finalize(l->stmts[i]), NULL);
                sqlite3_close_v2(l->db);
                l->db = old_db;
                l->lazy_sync = old_lazy_sync;
                memcpy(l->stmts, old_stmts, sizeof old_stmts);
                return ledger_error(l, r, "%s", msg);
        }
        for (size_t i = 0; i < _STMT_MAX; i++)
                sqlite3_finalize(old_stmts[i]);
        if (sqlite3_close(old_db) != SQLITE_OK)
                sqlite3_close_v2(old_db);
        return 0;
}

const char *ledger_write_failure(const ledger *l, int64_t *ret_since_us)
{
        if (!l || l->write_failed_since_us == 0)
                return NULL;
        if (ret_since_us)
                *ret_since_us = l->write_failed_since_us;
        return l->write_failure;
}

/* While writes fail: one small write to learn whether the file system takes them again (a
 * row of job_counts changed and changed back: the page is written, its content the same). */
static void write_probe(ledger *l)
{
        int r = tx_begin(l);

        if (r < 0)
                return;
        (void)tx_end(l, ledger_exec(l, "UPDATE job_counts SET n = n + 1 WHERE state = 'queued';"
                                       "UPDATE job_counts SET n = n - 1 WHERE state = 'queued'"));
}

int ledger_check_files(ledger *l)
{
        bool wal, shm;
        int r, found = 0;

        assert(l);
        /* Only between transactions and read batches (the event loop's top level). */
        if (l->in_write || l->read_open || !sqlite3_get_autocommit(l->db))
                return 0;
        if (l->write_failed_since_us != 0)
                write_probe(l);
        wal = l->wal_lost || (l->wal_known && aux_gone(l->wal_path, l->wal_dev, l->wal_ino));
        shm = !l->shm_lost && l->shm_known && aux_gone(l->shm_path, l->shm_dev, l->shm_ino);
        if (shm) {
                l->shm_lost = true;
                found |= LEDGER_SHM_LOST;
        }
        if (wal) {
                l->wal_lost = true;
                r = wal_checkpoint(l, SQLITE_CHECKPOINT_TRUNCATE);
                if (r < 0) {
                        char msg[sizeof l->errmsg];

                        snprintf(msg, sizeof msg, "%s", l->errmsg);
                        return ledger_error(l, r,
                                            "%s-wal was removed while imgd had it open; its "
                                            "content cannot be checkpointed into %s: %s (each "
                                            "commit is checkpointed at once meanwhile)",
                                            l->path, l->path, msg);
                }
                r = reconnect(l);
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
                aux_note(l, true, false);
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

/* Not named ledger_freep: that name is left free for ledger.h. */
static void free_ledgerp(ledger **l)
{
        ledger_free(*l);
}

int ledger_open(const char *path, ledger **ret, char **ret_error)
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

/* Transitions */

/* Looks up job id's state: -ENOENT if there is no such job. */
static int job_state_locked(ledger *l, int64_t id, enum job_state *ret)
{
        _cleanup_stmt_reset_ sqlite3_stmt *st = stmt_get(l, STMT_JOB_STATE);
        int r;

        r = stmt_bind(l, st, "i", id);
        if (r < 0)
                return r;
        r = stmt_step(l, st);
        if (r < 0)
                return r;
        if (r == 0)
                return ledger_error(l, -ENOENT, "no job %" PRId64, id);
        return column_state(l, st, 0, ret);
}

/* -ESTALE unless job id is in one of the states of `mask` (bits 1 << enum job_state). */
static int job_require_locked(ledger *l, int64_t id, unsigned mask, const char *wanted)
{
        enum job_state s;
        int r;

        r = job_state_locked(l, id, &s);
        if (r < 0)
                return r;
        if (!(mask & (1u << s)))
                return ledger_error(l, -ESTALE, "job %" PRId64 " is %s, not %s", id,
                                    job_state_name(s), wanted);
        return 0;
}

static int recover_locked(ledger *l, int64_t now_us)
{
        _cleanup_stmt_reset_ sqlite3_stmt *st = stmt_get(l, STMT_RECOVER);
        int r;

        r = stmt_bind(l, st, "i", now_us);
        if (r < 0)
                return r;
        r = stmt_run(l, st);
        if (r < 0)
                return r;
        return sqlite3_changes(l->db);
}

int ledger_recover(ledger *l, int64_t now_us)
{
        int r;

        assert(l);

        r = tx_begin(l);
        if (r < 0)
                return r;
        return tx_end(l, recover_locked(l, now_us));
}

int ledger_known_stat(ledger *l, const char *path, uint64_t size, int64_t mtime_ns, uint64_t ino)
{
        _cleanup_stmt_reset_ sqlite3_stmt *st = stmt_get(l, STMT_KNOWN_STAT);
        int r;

        assert(path);

        r = stmt_bind(l, st, "tiii", path, (int64_t)size, mtime_ns, (int64_t)ino);
        if (r < 0)
                return r;
        return stmt_step(l, st);
}

static int enqueue_locked(ledger *l, const struct source_info *src, int64_t now_us, int64_t *ret_id)
{
        char reason[64];
        int64_t id;
        int r;

        {
                _cleanup_stmt_reset_ sqlite3_stmt *st = stmt_get(l, STMT_FIND_SOURCE);

                r = stmt_bind(l, st, "tt", src->path, src->sha256);
                if (r < 0)
                        return r;
                r = stmt_step(l, st);
                if (r < 0)
                        return r;
                /* A -> B -> A: A's old job is superseded, so A needs a new job; so does
                 * content whose job was cancelled. */
                id = r > 0 && sqlite3_column_int(st, 1) ? sqlite3_column_int64(st, 0) : 0;
        }

        if (id > 0) {
                _cleanup_stmt_reset_ sqlite3_stmt *st = stmt_get(l, STMT_REFRESH_STAT);

                r = stmt_bind(l, st, "iiii", id, (int64_t)src->size, src->mtime_ns,
                              (int64_t)src->ino);
                if (r < 0)
                        return r;
                r = stmt_run(l, st);
                if (r < 0)
                        return r;
                *ret_id = id;
                return 0;
        }

        {
                _cleanup_stmt_reset_ sqlite3_stmt *st = stmt_get(l, STMT_INSERT_JOB);

                r = stmt_bind(l, st, "tttiiitti", src->watch, src->path, src->sha256,
                              (int64_t)src->size, src->mtime_ns, (int64_t)src->ino, src->output_key,
                              src->pipeline, now_us);
                if (r < 0)
                        return r;
                r = stmt_run(l, st);
                if (r < 0)
                        return r;
                id = sqlite3_last_insert_rowid(l->db);
        }

        {
                _cleanup_stmt_reset_ sqlite3_stmt *st = stmt_get(l, STMT_SUPERSEDE);

                snprintf(reason, sizeof reason, "superseded by job %" PRId64, id);
                r = stmt_bind(l, st, "titi", src->path, id, reason, now_us);
                if (r < 0)
                        return r;
                r = stmt_run(l, st);
                if (r < 0)
                        return r;
        }

        *ret_id = id;
        return 1;
}

int ledger_enqueue(ledger *l, const struct source_info *src, int64_t now_us, int64_t *ret_id)
{
        int64_t id = 0;
        int r;

        assert(l);
        assert(src);

        if (!src->watch || !src->path || !src->output_key || !src->pipeline ||
            strnlen(src->sha256, HASH_HEX_SIZE) != HASH_HEX_SIZE - 1)
                return ledger_error(l, -EINVAL, "incomplete source description");

        r = tx_begin(l);
        if (r < 0)
                return r;
        r = tx_end(l, enqueue_locked(l, src, now_us, &id));
        if (r < 0)
                return r;
        if (ret_id)
                *ret_id = id;
        return r;
}

static int claim_locked(ledger *l, const char *owner, int64_t now_us, int64_t expires_us,
                        struct job **ret)
{
        _cleanup_stmt_reset_ sqlite3_stmt *st = stmt_get(l, STMT_CLAIM);
        _cleanup_(job_freep) struct job *j = NULL;
        int r;

        r = stmt_bind(l, st, "iti", now_us, owner, expires_us);
        if (r < 0)
                return r;
        r = stmt_step(l, st);
        if (r <= 0)
                return r;

        j = calloc(1, sizeof *j);
        if (!j)
                return ledger_error(l, -ENOMEM, "out of memory");
        r = read_job(l, st, j);
        if (r < 0)
                return r;
        /* Run the statement to its end so the update is complete before the commit. */
        r = stmt_step(l, st);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(j);
        return 1;
}

int ledger_claim(ledger *l, const char *owner, int64_t now_us, int64_t lease_us, struct job **ret)
{
        _cleanup_(job_freep) struct job *j = NULL;
        int64_t expires_us;
        int r;

        assert(l);
        assert(owner);
        assert(ret);

        if (lease_us < 0)
                return ledger_error(l, -EINVAL, "negative lease");
        if (__builtin_add_overflow(now_us, lease_us, &expires_us))
                expires_us = INT64_MAX;

        /* Not flushed (see the top of this file): losing it to a power cut loses nothing.
         * The next transition's tx_begin() sets FULL again before it begins. */
        r = tx_begin_sync(l, false);
        if (r < 0)
                return r;
        r = tx_end(l, claim_locked(l, owner, now_us, expires_us, &j));
        if (r <= 0)
                return r;
        *ret = TAKE_PTR(j);
        return 1;
}

int ledger_next_due(ledger *l, int64_t *ret_us)
{
        _cleanup_stmt_reset_ sqlite3_stmt *st = stmt_get(l, STMT_NEXT_DUE);
        int r;

        r = stmt_step(l, st);
        if (r <= 0)
                return r;
        if (ret_us)
                *ret_us = sqlite3_column_int64(st, 0);
        return 1;
}

static int insert_outputs_locked(ledger *l, int64_t id, const struct job_output *outs,
                                 size_t n_outs, bool staged);

/* Forgets the outputs recorded for a job that is not done (staged, never published). */
static int drop_staged_locked(ledger *l, int64_t id)
{
        _cleanup_stmt_reset_ sqlite3_stmt *st = stmt_get(l, STMT_DROP_STAGED);
        int r;

        r = stmt_bind(l, st, "i", id);
        if (r < 0)
                return r;
        return stmt_run(l, st);
}

static int complete_locked(ledger *l, int64_t id, const struct job_output *outs, size_t n_outs,
                           int64_t now_us)
{
        int r;

        r = job_require_locked(l, id, 1u << JOB_RUNNING, "running");
        if (r < 0)
                return r;

        if (n_outs == 0) {
                /* The staged outputs are the published ones now. */
                _cleanup_stmt_reset_ sqlite3_stmt *st = stmt_get(l, STMT_PUBLISHED);

                r = stmt_bind(l, st, "i", id);
                if (r >= 0)
                        r = stmt_run(l, st);
                if (r < 0)
                        return r;
        } else {
                r = drop_staged_locked(l, id);
                if (r < 0)
                        return r;
                r = insert_outputs_locked(l, id, outs, n_outs, false);
                if (r < 0)
                        return r;
        }

        {
                _cleanup_stmt_reset_ sqlite3_stmt *st = stmt_get(l, STMT_SET_DONE);

                r = stmt_bind(l, st, "ii", id, now_us);
                if (r < 0)
                        return r;
                return stmt_run(l, st);
        }
}

static int insert_outputs_locked(ledger *l, int64_t id, const struct job_output *outs,
                                 size_t n_outs, bool staged)
{
        int r;

        for (size_t i = 0; i < n_outs; i++) {
                _cleanup_stmt_reset_ sqlite3_stmt *st = stmt_get(l, STMT_INSERT_OUTPUT);
                const struct job_output *o = &outs[i];

                if (!o->variant || !o->path || !o->format ||
                    strnlen(o->sha256, HASH_HEX_SIZE) >= HASH_HEX_SIZE)
                        return ledger_error(l, -EINVAL, "incomplete output %zu", i);
                if (staged && !o->tmp_path)
                        return ledger_error(l, -EINVAL, "staged output %zu has no file", i);
                r = stmt_bind(l, st, "itttiiitt", id, o->variant, o->path, o->format,
                              (int64_t)o->width, (int64_t)o->height, (int64_t)o->bytes, o->sha256,
                              staged ? o->tmp_path : NULL);
                if (r < 0)
                        return r;
                r = stmt_run(l, st);
                if (r < 0)
                        return r;
        }
        return 0;
}

static int stage_locked(ledger *l, int64_t id, const struct job_output *outs, size_t n_outs,
                        bool degraded, const char *info, int64_t now_us)
{
        _cleanup_stmt_reset_ sqlite3_stmt *st = stmt_get(l, STMT_SET_STAGED);
        int r;

        r = job_require_locked(l, id, 1u << JOB_RUNNING, "running");
        if (r < 0)
                return r;
        r = drop_staged_locked(l, id);
        if (r < 0)
                return r;
        r = insert_outputs_locked(l, id, outs, n_outs, true);
        if (r < 0)
                return r;
        r = stmt_bind(l, st, "iiit", id, now_us, (int64_t)degraded, info);
        if (r < 0)
                return r;
        return stmt_run(l, st);
}

int ledger_stage(ledger *l, int64_t id, const struct job_output *outs, size_t n_outs, bool degraded,
                 const char *info, int64_t now_us)
{
        int r;

        assert(l);
        assert(outs || n_outs == 0);

        r = tx_begin(l);
        if (r < 0)
                return r;
        return tx_end(l, stage_locked(l, id, outs, n_outs, degraded, info, now_us));
}

/* Ids from a one-column query bound to (?1 = arg, if the statement has a parameter). */
static int list_ids(ledger *l, enum ledger_stmt which, int64_t arg, int64_t **ret, size_t *ret_n)
{
        _cleanup_stmt_reset_ sqlite3_stmt *st = stmt_get(l, which);
        _cleanup_free_ int64_t *ids = NULL;
        size_t n = 0, allocated = 0;
        int r;

        if (sqlite3_bind_parameter_count(st) > 0) {
                r = stmt_bind(l, st, "i", arg);
                if (r < 0)
                        return r;
        }
        while ((r = stmt_step(l, st)) > 0) {
                if (n == allocated) {
                        size_t a = allocated ? allocated * 2 : 16;
                        int64_t *p = reallocarray(ids, a, sizeof *p);
                        if (!p)
                                return ledger_error(l, -ENOMEM, "out of memory");
                        ids = p;
                        allocated = a;
                }
                ids[n++] = sqlite3_column_int64(st, 0);
        }
        if (r < 0)
                return r;
        *ret = TAKE_PTR(ids);
        *ret_n = n;
        return 0;
}

int ledger_list_staged(ledger *l, int64_t **ret_ids, size_t *ret_n)
{
        return list_ids(l, STMT_LIST_STAGED, 0, ret_ids, ret_n);
}

int ledger_list_expired(ledger *l, int64_t now_us, int64_t **ret_ids, size_t *ret_n)
{
        return list_ids(l, STMT_EXPIRED, now_us, ret_ids, ret_n);
}

/*
 * Runs a one-statement write in its own transaction, its parameters the first strlen(types)
 * of a, b, c ('i' each); returns the rows changed.
 */
static int run_write(ledger *l, enum ledger_stmt which, const char *types, int64_t a, int64_t b,
                     int64_t c)
{
        int r = tx_begin(l);

        if (r < 0)
                return r;
        {
                _cleanup_stmt_reset_ sqlite3_stmt *st = stmt_get(l, which);

                r = stmt_bind(l, st, types, a, b, c); /* binds only what types names */
                if (r >= 0)
                        r = stmt_run(l, st);
                if (r >= 0)
                        r = sqlite3_changes(l->db);
        }
        return tx_end(l, r);
}

int ledger_oldest_queued(ledger *l, int64_t *ret_us)
{
        _cleanup_stmt_reset_ sqlite3_stmt *st = stmt_get(l, STMT_OLDEST_QUEUED);
        int r = stmt_step(l, st);

        if (r <= 0)
                return r;
        if (sqlite3_column_type(st, 0) == SQLITE_NULL)
                return 0;
        *ret_us = sqlite3_column_int64(st, 0);
        return 1;
}

int ledger_rerender_degraded(ledger *l, int64_t now_us, unsigned limit)
{
        return run_write(l, STMT_RERENDER, "ii", now_us, (int64_t)limit, 0);
}

int ledger_prune(ledger *l, int64_t cutoff_us, int64_t *cursor, unsigned batch)
{
        int64_t from = *cursor, to, min_id = 0, max_id = 0;
        int r;

        assert(batch > 0);
        {
                _cleanup_stmt_reset_ sqlite3_stmt *st = stmt_get(l, STMT_ID_RANGE);

                r = stmt_step(l, st);
                if (r < 0)
                        return r;
                if (r > 0) {
                        min_id = sqlite3_column_int64(st, 0);
                        max_id = sqlite3_column_int64(st, 1);
                }
        }
        /* A pass starts at the oldest job, not at id 1: years of pruning leave no gap to walk. */
        if (from == 0)
                from = min_id > 0 ? min_id - 1 : 0;
        to = from + (int64_t)batch;
        r = run_write(l, STMT_PRUNE, "iii", cutoff_us, from, to);
        if (r >= 0)
                *cursor = to >= max_id ? 0 : to;
        return r;
}

int ledger_complete(ledger *l, int64_t id, const struct job_output *outs, size_t n_outs,
                    int64_t now_us)
{
        int r;

        assert(l);
        assert(outs || n_outs == 0);

        r = tx_begin(l);
        if (r < 0)
                return r;
        return tx_end(l, complete_locked(l, id, outs, n_outs, now_us));
}

/* Appends message to job id's error history under its current attempt number. */
static int add_error_locked(ledger *l, int64_t id, const char *message, int64_t now_us)
{
        _cleanup_stmt_reset_ sqlite3_stmt *st = stmt_get(l, STMT_INSERT_ERROR);
        int r;

        r = stmt_bind(l, st, "iim", id, now_us, message);
        if (r < 0)
                return r;
        return stmt_run(l, st);
}

static int fail_locked(ledger *l, int64_t id, const char *error, bool retry, int64_t next_at_us,
                       int64_t now_us)
{
        _cleanup_stmt_reset_ sqlite3_stmt *st = stmt_get(l, STMT_SET_FAILED);
        int r;

        r = job_require_locked(l, id, 1u << JOB_RUNNING, "running");
        if (r < 0)
                return r;
        r = drop_staged_locked(l, id);
        if (r < 0)
                return r;
        r = add_error_locked(l, id, error, now_us);
        if (r < 0)
                return r;
        r = stmt_bind(l, st, "itmii", id, job_state_name(retry ? JOB_RETRY : JOB_DEAD), error,
                      next_at_us, now_us);
        if (r < 0)
                return r;
        return stmt_run(l, st);
}

int ledger_fail(ledger *l, int64_t id, const char *error, bool retry, int64_t next_at_us,
                int64_t now_us)
{
        int r;

        assert(l);

        r = tx_begin(l);
        if (r < 0)
                return r;
        return tx_end(
                l, fail_locked(l, id, error ? error : "unknown error", retry, next_at_us, now_us));
}

static int release_locked(ledger *l, int64_t id, int64_t next_at_us, int64_t now_us)
{
        _cleanup_stmt_reset_ sqlite3_stmt *st = stmt_get(l, STMT_SET_RELEASED);
        int r;

        r = job_require_locked(l, id, 1u << JOB_RUNNING, "running");
        if (r < 0)
                return r;
        r = drop_staged_locked(l, id);
        if (r < 0)
                return r;
        r = stmt_bind(l, st, "iii", id, next_at_us, now_us);
        if (r < 0)
                return r;
        return stmt_run(l, st);
}

int ledger_release(ledger *l, int64_t id, int64_t next_at_us, int64_t now_us)
{
        int r;

        assert(l);

        r = tx_begin(l);
        if (r < 0)
                return r;
        return tx_end(l, release_locked(l, id, next_at_us, now_us));
}

static int cancel_locked(ledger *l, int64_t id, const char *reason, int64_t now_us)
{
        _cleanup_stmt_reset_ sqlite3_stmt *st = stmt_get(l, STMT_SET_CANCELLED);
        int r;

        r = job_require_locked(
                l, id, 1u << JOB_QUEUED | 1u << JOB_RETRY | 1u << JOB_DEAD | 1u << JOB_RUNNING,
                "queued, retry, dead or running");
        if (r < 0)
                return r;
        r = drop_staged_locked(l, id);
        if (r < 0)
                return r;
        r = add_error_locked(l, id, reason, now_us);
        if (r < 0)
                return r;
        r = stmt_bind(l, st, "imi", id, reason, now_us);
        if (r < 0)
                return r;
        return stmt_run(l, st);
}

int ledger_cancel(ledger *l, int64_t id, const char *reason, int64_t now_us)
{
        int r;

        assert(l);

        r = tx_begin(l);
        if (r < 0)
                return r;
        return tx_end(l, cancel_locked(l, id, reason ? reason : "cancelled", now_us));
}

/* 1 if job id is held (see ledger_hold()), 0 if not. */
static int held_locked(ledger *l, int64_t id)
{
        _cleanup_stmt_reset_ sqlite3_stmt *st = stmt_get(l, STMT_IS_HELD);
        int r = stmt_bind(l, st, "i", id);

        if (r >= 0)
                r = stmt_step(l, st);
        return r <= 0 ? r : sqlite3_column_int64(st, 0) != 0;
}

static int retry_locked(ledger *l, int64_t id, int64_t now_us)
{
        _cleanup_stmt_reset_ sqlite3_stmt *st = stmt_get(l, STMT_SET_REQUEUED);
        int r;

        r = held_locked(l, id);
        if (r == 0)
                r = job_require_locked(l, id, 1u << JOB_DEAD, "dead (or held)");
        if (r < 0)
                return r;
        r = stmt_bind(l, st, "ii", id, now_us);
        if (r < 0)
                return r;
        return stmt_run(l, st);
}

int ledger_retry(ledger *l, int64_t id, int64_t now_us)
{
        int r;

        assert(l);

        r = tx_begin(l);
        if (r < 0)
                return r;
        return tx_end(l, retry_locked(l, id, now_us));
}

static int hold_locked(ledger *l, int64_t id, const char *reason, int64_t now_us)
{
        _cleanup_stmt_reset_ sqlite3_stmt *st = stmt_get(l, STMT_SET_HELD);
        int r;

        r = job_require_locked(l, id, 1u << JOB_RUNNING, "running");
        if (r < 0)
                return r;
        r = drop_staged_locked(l, id);
        if (r < 0)
                return r;
        r = stmt_bind(l, st, "imi", id, reason, now_us);
        if (r < 0)
                return r;
        return stmt_run(l, st);
}

int ledger_hold(ledger *l, int64_t id, const char *reason, int64_t now_us)
{
        int r;

        assert(l);
        assert(reason);

        r = tx_begin(l);
        if (r < 0)
                return r;
        return tx_end(l, hold_locked(l, id, reason, now_us));
}

int ledger_unhold(ledger *l, int64_t now_us)
{
        return run_write(l, STMT_UNHOLD, "i", now_us, 0, 0);
}

int ledger_relocate(ledger *l, int64_t id, const char *pipeline, const char *output_key)
{
        int r;

        assert(l);
        assert(pipeline);
        assert(output_key);

        r = tx_begin(l);
        if (r < 0)
                return r;
        {
                _cleanup_stmt_reset_ sqlite3_stmt *st = stmt_get(l, STMT_RELOCATE);

                r = stmt_bind(l, st, "itt", id, pipeline, output_key);
                if (r >= 0)
                        r = stmt_run(l, st);
                if (r >= 0 && sqlite3_changes(l->db) == 0)
                        r = ledger_error(l, -ESTALE, "job %" PRId64 " is not running", id);
        }
        return tx_end(l, r);
}

/* Queries */

int ledger_count_held(ledger *l, uint64_t *ret_n)
{
        _cleanup_stmt_reset_ sqlite3_stmt *st = stmt_get(l, STMT_COUNT_HELD);
        int r = stmt_step(l, st);

        if (r < 0)
                return r;
        *ret_n = r > 0 ? (uint64_t)sqlite3_column_int64(st, 0) : 0;
        return 0;
}

int ledger_superseded(ledger *l, int64_t id)
{
        _cleanup_stmt_reset_ sqlite3_stmt *st = stmt_get(l, STMT_SUPERSEDED);
        int r;

        r = stmt_bind(l, st, "i", id);
        if (r < 0)
                return r;
        r = stmt_step(l, st);
        if (r < 0)
                return r;
        if (r == 0)
                return ledger_error(l, -ENOENT, "no job %" PRId64, id);
        return sqlite3_column_int64(st, 0) != 0;
}

int ledger_output_owner(ledger *l, const char *output_key, const char *source_path,
                        char **ret_source)
{
        _cleanup_stmt_reset_ sqlite3_stmt *st = stmt_get(l, STMT_OUTPUT_OWNER);
        char *s = NULL;
        int r;

        assert(output_key);
        assert(source_path);

        r = stmt_bind(l, st, "tt", output_key, source_path);
        if (r < 0)
                return r;
        r = stmt_step(l, st);
        if (r <= 0)
                return r;
        if (ret_source) {
                r = column_strdup(l, st, 0, &s);
                if (r < 0)
                        return r;
                *ret_source = s;
        }
        return 1;
}

int ledger_counts(ledger *l, uint64_t counts[static _JOB_STATE_MAX])
{
        _cleanup_stmt_reset_ sqlite3_stmt *st = stmt_get(l, STMT_COUNTS);
        uint64_t c[_JOB_STATE_MAX] = { 0 };
        int r;

        for (;;) {
                enum job_state s;

                r = stmt_step(l, st);
                if (r < 0)
                        return r;
                if (r == 0)
                        break;
                r = column_state(l, st, 0, &s);
                if (r < 0)
                        return r;
                if (sqlite3_column_int64(st, 1) < 0)
                        return ledger_error(l, -EBADMSG, "job_counts: %s is negative",
                                            job_state_name(s));
                c[s] = (uint64_t)sqlite3_column_int64(st, 1);
        }
        memcpy(counts, c, sizeof c);
        return 0;
}

static void job_array_free(struct job *jobs, size_t n)
{
        for (size_t i = 0; i < n; i++)
                job_clear(&jobs[i]);
        free(jobs);
}

int ledger_list(ledger *l, const struct ledger_filter *f, struct job **ret, size_t *ret_n)
{
        _cleanup_(sqlite3_finalizep) sqlite3_stmt *st = NULL;
        struct ledger_filter none = { .state = -1 };
        struct job *jobs = NULL;
        size_t n = 0, allocated = 0;
        unsigned limit;
        char sql[512];
        int rc, r;

        assert(l);
        assert(ret);
        assert(ret_n);

        if (!f)
                f = &none;
        if (f->state < -1 || f->state >= _JOB_STATE_MAX)
                return ledger_error(l, -EINVAL, "bad state filter %d", f->state);
        limit = f->limit == 0 ? LEDGER_LIST_DEFAULT
                              : (f->limit > LEDGER_LIST_MAX ? LEDGER_LIST_MAX : f->limit);

        snprintf(sql, sizeof sql,
                 "SELECT " JOB_COLUMNS " FROM jobs WHERE 1%s%s%s "
                 "ORDER BY updated_us DESC, id DESC LIMIT ?4",
                 f->state >= 0 ? " AND state = ?1" : "", f->watch ? " AND watch = ?2" : "",
                 f->since_us != 0 ? " AND updated_us >= ?3" : "");
        rc = sqlite3_prepare_v2(l->db, sql, -1, &st, NULL);
        if (rc != SQLITE_OK)
                return ledger_sqlite_error(l, rc);
        r = stmt_bind(l, st, "ttii", f->state >= 0 ? job_state_name(f->state) : NULL, f->watch,
                      f->since_us, (int64_t)limit);
        if (r < 0)
                return r;

        for (;;) {
                r = stmt_step(l, st);
                if (r < 0)
                        goto fail;
                if (r == 0)
                        break;
                if (n == allocated) {
                        size_t a = allocated ? allocated * 2 : 16;
                        struct job *p = reallocarray(jobs, a, sizeof *jobs);
                        if (!p) {
                                r = ledger_error(l, -ENOMEM, "out of memory");
                                goto fail;
                        }
                        jobs = p;
                        allocated = a;
                }
                r = read_job(l, st, &jobs[n]);
                if (r < 0)
                        goto fail;
                n++;
        }

        *ret = jobs;
        *ret_n = n;
        return 0;
fail:
        job_array_free(jobs, n);
        return r;
}

static int get_locked(ledger *l, int64_t id, struct job_detail **ret)
{
        _cleanup_(free_detailp) struct job_detail *d = NULL;
        size_t allocated;
        int r;

        {
                _cleanup_stmt_reset_ sqlite3_stmt *st = stmt_get(l, STMT_GET_JOB);

                r = stmt_bind(l, st, "i", id);
                if (r < 0)
                        return r;
                r = stmt_step(l, st);
                if (r <= 0)
                        return r;
                d = calloc(1, sizeof *d);
                if (!d)
                        return ledger_error(l, -ENOMEM, "out of memory");
                r = read_job(l, st, &d->job);
                if (r < 0)
                        return r;
        }

        {
                _cleanup_stmt_reset_ sqlite3_stmt *st = stmt_get(l, STMT_GET_OUTPUTS);

                r = stmt_bind(l, st, "i", id);
                if (r < 0)
                        return r;
                allocated = 0;
                while ((r = stmt_step(l, st)) > 0) {
                        struct job_output *o;

                        if (d->n_outputs == allocated) {
                                size_t a = allocated ? allocated * 2 : 4;
                                o = reallocarray(d->outputs, a, sizeof *o);
                                if (!o)
                                        return ledger_error(l, -ENOMEM, "out of memory");
                                d->outputs = o;
                                allocated = a;
                        }
                        o = &d->outputs[d->n_outputs];
                        *o = (struct job_output){
                                .width = (unsigned)sqlite3_column_int64(st, 3),
                                .height = (unsigned)sqlite3_column_int64(st, 4),
                                .bytes = (uint64_t)sqlite3_column_int64(st, 5),
                        };
                        /* Counted first so that job_detail_free() frees what was copied. */
                        d->n_outputs++;
                        r = column_strdup(l, st, 0, &o->variant);
                        if (r >= 0)
                                r = column_strdup(l, st, 1, &o->path);
                        if (r >= 0)
                                r = column_strdup(l, st, 2, &o->format);
                        if (r >= 0)
                                r = column_sha256(l, st, 6, o->sha256);
                        if (r >= 0)
                                r = column_strdup(l, st, 7, &o->tmp_path);
                        if (r < 0)
                                return r;
                }
                if (r < 0)
                        return r;
        }

        {
                _cleanup_stmt_reset_ sqlite3_stmt *st = stmt_get(l, STMT_GET_ERRORS);

                r = stmt_bind(l, st, "i", id);
                if (r < 0)
                        return r;
                allocated = 0;
                while ((r = stmt_step(l, st)) > 0) {
                        struct job_error *e;

                        if (d->n_errors == allocated) {
                                size_t a = allocated ? allocated * 2 : 4;
                                e = reallocarray(d->errors, a, sizeof *e);
                                if (!e)
                                        return ledger_error(l, -ENOMEM, "out of memory");
                                d->errors = e;
                                allocated = a;
                        }
                        e = &d->errors[d->n_errors];
                        *e = (struct job_error){
                                .attempt = (unsigned)sqlite3_column_int64(st, 0),
                                .at_us = sqlite3_column_int64(st, 1),
                        };
                        d->n_errors++;
                        r = column_strdup(l, st, 2, &e->message);
                        if (r < 0)
                                return r;
                }
                if (r < 0)
                        return r;
        }

        *ret = TAKE_PTR(d);
        return 1;
}

int ledger_get(ledger *l, int64_t id, struct job_detail **ret)
{
        _cleanup_(free_detailp) struct job_detail *d = NULL;
        int r;

        assert(l);
        assert(ret);

        /* One read transaction: the job, its outputs and its errors from one snapshot. */
        r = tx_begin_read(l);
        if (r < 0)
                return r;
        if (r > 0)
                r = get_locked(l, id, &d); /* inside the open read batch */
        else
                r = tx_end(l, get_locked(l, id, &d));
        if (r <= 0)
                return r;
        *ret = TAKE_PTR(d);
        return 1;
}

const char *ledger_open_check(const ledger *l)
{
        assert(l);
        return l->open_check;
}

/* -EBADMSG unless every row of job_counts equals a count of the jobs table. */
static int counts_check(ledger *l)
{
        _cleanup_stmt_reset_ sqlite3_stmt *st = stmt_get(l, STMT_COUNTS_SCAN);
        unsigned rows = 0;
        int r;

        while ((r = stmt_step(l, st)) > 0) {
                const char *state = (const char *)sqlite3_column_text(st, 0);
                int64_t kept = sqlite3_column_int64(st, 1), real = sqlite3_column_int64(st, 2);

                if (kept != real)
                        return ledger_error(l, -EBADMSG,
                                            "job_counts: %s holds %" PRId64 ", the jobs table has "
                                            "%" PRId64,
                                            state ? state : "(null)", kept, real);
                rows++;
        }
        if (r < 0)
                return r;
        if (rows != _JOB_STATE_MAX)
                return ledger_error(l, -EBADMSG, "job_counts: %u rows, not %d", rows,
                                    _JOB_STATE_MAX);
        return 0;
}

int ledger_integrity_check(ledger *l)
{
        int r;

        assert(l);
        r = ledger_check_pragma(l, "integrity_check");
        if (r < 0)
                return r;
        return counts_check(l);
}
