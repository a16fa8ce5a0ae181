/* SPDX-License-Identifier: MIT */
/*
 * ledger.h - the durable job ledger: every job, its outputs and its error history. This is
 * the ledger's contract (its states, checkpoints, recovery and transactions), which every
 * engine implements, tested by one suite (tests/unit/test-ledger-*.c run on both):
 *
 *   SQLite      one database (WAL, synchronous=FULL) at <state_dir>/imgd.db; the default
 *   PostgreSQL  a database (or a schema of one) that libpq's connection string names
 *               (ledger = { engine = "postgresql"; conninfo = "..."; }), which several imgd
 *               nodes may share: claims take rows with FOR UPDATE SKIP LOCKED
 *
 * (ledger-private.h says how the files of the ledger divide the work.) Where the engines
 * differ, each function says so; in short, on PostgreSQL:
 * - the database's clock decides lease expiry: ledger_claim() records the lease as the
 *   database's now plus lease_usec, and ledger_list_expired() compares with the database's
 *   now (the caller's now_usec is not used there); every other time (created, updated,
 *   next_at, finished, errors) is the caller's now_usec, as on SQLite;
 * - there is no file to check at open or close (no PRAGMA quick_check, no clean-stop record,
 *   no WAL files: ledger_check_files() has nothing to do), and ledger_integrity_check()
 *   compares the kept counts with the table only (the server checks its own pages);
 * - the claim's commit is not waited for (synchronous_commit = off for that transaction):
 *   the same promise as SQLite's unflushed claim.
 *
 * A job is one (source path, content SHA-256). Its states and the function that performs
 * each transition:
 *
 *                ledger_enqueue()
 *                      |
 *                      v         ledger_claim() (attempts += 1, lease set)
 *   ledger_retry() +-> queued ---------------------------+
 *   (dead->queued) |    |  ^                             v
 *                  |    |  | ledger_recover()         running ----ledger_complete()----> done
 *                  |    |  +---(at start)----------------+   |
 *                  |    |                                    |  ledger_fail(retry=true)
 *                  |    |      retry <-----------------------+
 *                  |    |        |   (claimable again once next_at has passed)
 *                  |    |        +------ ledger_claim() -----> running
 *                  |    |                                    |  ledger_fail(retry=false)
 *                  +----+------------------------------------+-----------------------> dead
 *                       |
 *                       +--- ledger_cancel() (queued, retry, dead, or superseded) ---> cancelled
 *
 *   running --ledger_hold()--> queued, held (not claimable; no attempt used) --ledger_unhold()
 *                                                                  or ledger_retry()--> queued
 *
 *   done --ledger_rerender_degraded()--> queued   (rendered degraded: render again at full
 *                                                  quality once health returns)
 *
 * Inside `running`, a job passes checkpoints, each committed in its own transaction:
 *
 *   claimed   ledger_claim(): attempts += 1 before any byte is decoded, lease recorded
 *             (on SQLite committed with the transition that follows it)
 *   verified  ledger_stage(): the worker rendered every output into a temporary file in its
 *             destination directory, fsynced it, read it back and decoded it; the ledger
 *             records each output's final path, temporary path, size and SHA-256
 *   done      ledger_complete(): every temporary file was renamed over its final path and
 *             the directories fsynced (publication), then the job is committed as done
 *
 * (the worker renders and verifies in one step, so "rendered" and "verified" are one
 * checkpoint; "published" and "done" are one commit, made after the renames are durable.)
 * After a crash, ledger_recover() puts claimed jobs back to `queued`, keeping their attempts,
 * and leaves verified ones running: the caller publishes their staged files (recognising
 * files already renamed by their SHA-256) and completes them, or, when a staged file is gone
 * or altered, hands them back with ledger_release(). fail, release and cancel forget staged
 * outputs.
 *
 * Every transition is one transaction (SQLite: BEGIN IMMEDIATE; PostgreSQL: the job's row
 * locked with FOR UPDATE before it is read and changed). A job is only `done` once
 * all of its outputs are published; its output rows are committed with it.
 * queued, running and retry are "active"; done, dead and cancelled are "finished".
 *
 * Every function returns 0 (or a documented positive value) on success, or a negative errno;
 * after a failure ledger_errmsg() says what the engine (SQLite, PostgreSQL) reported.
 * Functions leave the ledger unchanged on failure.
 */
#pragma once

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "shared/hash.h"
#include "shared/variant.h"

typedef struct ledger ledger;

enum job_state {
        JOB_QUEUED,
        JOB_RUNNING,
        JOB_RETRY,
        JOB_DONE,
        JOB_DEAD,
        JOB_CANCELLED,
        _JOB_STATE_MAX,
};

const char *job_state_name(enum job_state s);
int job_state_from_name(const char *name); /* enum value, or -EINVAL */

/* What identifies and locates a source; input to ledger_enqueue(). */
struct source_info {
        const char *watch;      /* the watched folder it came from */
        const char *path;       /* absolute path of the source */
        const char *output_key; /* <output>/<sub/dirs>/<stem>: where its outputs go */
        const char *pipeline;
        char sha256[HASH_HEX_SIZE];
        uint64_t size;
        int64_t mtime_ns;
        uint64_t ino;
};

/* The order in which jobs are claimed: live uploads first, then retries of them, then
 * background work (reconciliation, degraded jobs rendered again). */
enum job_priority {
        JOB_PRIORITY_LIVE = 0,
        JOB_PRIORITY_RETRY = 1,
        JOB_PRIORITY_BACKGROUND = 2,
};

/*
 * What a job does (issue 17). A render (the worker renders its source); the others are carried
 * out by the supervisor without a worker (daemon/retract.h), from `origin`, the done job they
 * were queued from, which is its path's (a move: its old path's) published one:
 *   JOB_RETRACT  the source is gone: its outputs and manifest are removed. Done, it is its
 *                path's newest job and says that nothing of the path is published.
 *   JOB_DROP     the outputs of the variants listed in `redo` are removed (no longer
 *                configured, on the operator's word); the others are kept as its own.
 *   JOB_MOVE     the source was renamed within its tree (same content): the outputs of the
 *                old path are moved to the new path's names and become this job's; the old
 *                path gets a done retraction.
 */
enum job_kind {
        JOB_RENDER,
        JOB_RETRACT,
        JOB_DROP,
        JOB_MOVE,
        _JOB_KIND_MAX,
};

const char *job_kind_name(enum job_kind k); /* NULL for JOB_RENDER */
int job_kind_from_name(const char *name);   /* enum value, or -EINVAL */

struct job {
        int64_t id;
        char *watch;
        char *source_path;
        char *output_key;
        char *pipeline;
        char sha256[HASH_HEX_SIZE];
        uint64_t size;
        int64_t mtime_ns;
        uint64_t ino;
        enum job_state state;
        unsigned attempts;
        int64_t created_usec; /* wall clock, microseconds since the epoch */
        int64_t updated_usec;
        int64_t next_at_usec; /* for queued/retry: not claimable before this */
        char *last_error;     /* NULL if none */
        bool degraded;        /* rendered below full quality */
        char *info;           /* JSON the render reported (placeholder, warnings); NULL if none */
        enum job_priority priority;
        char *redo;    /* NULL: every variant; else the JSON list of the variants to render (a
                        * reconciliation job: the source's other outputs are carried over), or
                        * for JOB_DROP to remove */
        int64_t fence; /* the fencing token of the job's latest claim (see ledger_claim()) */
        enum job_kind kind;
        int64_t origin; /* the done job a retract, drop or move job works from; 0: none */
};

struct job_output {
        char *variant;
        char *path;
        char *format;
        unsigned width;
        unsigned height;
        uint64_t bytes;
        char sha256[HASH_HEX_SIZE];
        char *tmp_path; /* staged: the temporary file it waits in; NULL once published */
        char recipe[VARIANT_RECIPE_SIZE]; /* what it was made with (recipe.h); "": unknown */
};

struct job_error {
        unsigned attempt;
        int64_t at_usec;
        char *message;
};

/* A job with its outputs and error history, from ledger_get(). */
struct job_detail {
        struct job job;
        struct job_output *outputs;
        size_t n_outputs;
        struct job_error *errors;
        size_t n_errors;
};

struct job *job_free(struct job *j);
void job_output_clear(struct job_output *o); /* frees its members */
void job_outputs_free(struct job_output *v, size_t n);
void job_clear(struct job *j); /* frees the members of an embedded struct job */
struct job_detail *job_detail_free(struct job_detail *d);

/* The engines. */
enum ledger_engine_kind {
        LEDGER_ENGINE_SQLITE,
        LEDGER_ENGINE_POSTGRESQL,
        _LEDGER_ENGINE_MAX,
};
const char *ledger_engine_kind_name(enum ledger_engine_kind e);
int ledger_engine_kind_from_name(const char *name); /* enum value, or -EINVAL */

/* Which ledger to open. */
struct ledger_params {
        enum ledger_engine_kind engine;
        const char *path;     /* SQLite: the database file */
        const char *conninfo; /* PostgreSQL: libpq's connection string (keywords or a URI) and
                               * its environment (PGHOST, PGPASSFILE, ...) */
        /* PostgreSQL: a transaction of this connection left idle longer than this (the node
         * stopped, stalled or cut off in the middle of one) is ended by the server
         * (idle_in_transaction_session_timeout), so that the row locks it held stop other
         * nodes for no longer; 0: the server's setting. */
        int64_t stall_usec;
};

/*
 * Opens the ledger p describes: ledger_open() for SQLite; for PostgreSQL it connects, creates
 * or migrates imgd's schema in the connection's schema (the first of its search_path), and
 * refuses a schema newer than it knows (-EPROTONOSUPPORT) or a schema that holds other
 * tables but not imgd's (-EMEDIUMTYPE). Returns 0 and *ret, or a negative errno and a message
 * in *ret_error (owned by the caller) that never holds a password.
 */
int ledger_open_params(const struct ledger_params *p, ledger **ret, char **ret_error);

/* The name of l's engine ("sqlite", "postgresql"). */
const char *ledger_engine_name(const ledger *l);

/* What l is, for messages: SQLite's file, or PostgreSQL's postgresql://USER@HOST:PORT/DB
 * (never a password). */
const char *ledger_name(const ledger *l);

/*
 * Opens (creating or migrating) the SQLite ledger at `path`, checks it with PRAGMA quick_check
 * before writing anything: the whole file, unless ledger_close() recorded a clean stop of
 * the file exactly as it is now (then the schema only; small ledgers are always checked in
 * full). A corrupt database is -EBADMSG with a message that names the file and how to
 * recover; it is never replaced. Returns 0 and *ret, or a negative errno and a message in
 * *ret_error (owned by the caller).
 */
int ledger_open(const char *path, ledger **ret, char **ret_error);

/* What ledger_open() checked and why, as a phrase for the log (PostgreSQL: the server and
 * the schema's version). */
const char *ledger_open_check(const ledger *l);

/*
 * Closes l and frees it (in every case); SQLite: then records the clean stop in <path>.closed so
 * that the next ledger_open() need not check the whole file. Returns 0, or a negative errno
 * and a message in *ret_error (owned by the caller; may be NULL) when no record was made
 * (the close failed, SQLite reported corruption meanwhile, another program holds the file
 * open, the record could not be written): then the next open checks everything.
 */
int ledger_close(ledger *l, char **ret_error);

/* Closes l without recording a clean stop (the next open checks everything). */
ledger *ledger_free(ledger *l);

/*
 * SQLite: checks that the WAL (<path>-wal) and the WAL index (<path>-shm) at their paths are the
 * files the connection uses; to be called every few seconds, outside transactions and read
 * batches. A WAL removed from under the connection holds commits that would be lost with the
 * next crash (SQLite keeps writing to the unlinked file): it is checkpointed into the database
 * file and the connection replaced by one with a new WAL (and from the moment a write
 * transition notices it, each commit is checkpointed at once). A removed -shm cannot be made
 * again while imgd runs (every connection of the process shares it); the ledger stays
 * durable, only other programs reading the file are affected, until a restart. Returns 0
 * when nothing was found, else the bits LEDGER_WAL_RESTORED and LEDGER_SHM_LOST (each
 * reported once) with a message naming the files in ledger_errmsg(); or a negative errno
 * and the message when the WAL's content could not be saved. PostgreSQL: returns 0 (the
 * server keeps its own files).
 */
#define LEDGER_WAL_RESTORED 1
#define LEDGER_SHM_LOST 2
int ledger_check_files(ledger *l);

/*
 * While the file system refuses the ledger's writes (read-only, full, failing: the last write
 * transaction failed with EROFS, ENOSPC, EDQUOT, EIO, EACCES or EPERM): its message, naming
 * the file and the cause, and in *ret_since_usec (may be NULL) since when (wall clock). NULL
 * once a write transaction commits again (ledger_check_files() tries one while it lasts).
 */
const char *ledger_write_failure(const ledger *l, int64_t *ret_since_usec);

/*
 * While the ledger's server cannot be reached (PostgreSQL stopped, failing over, the network:
 * the last command failed with -ENOTCONN, the connection broke or could not be made again):
 * the message, naming the database and libpq's reason, and in *ret_since_usec (may be NULL)
 * since when (wall clock). NULL again once the server answers a command. Always NULL on
 * SQLite, whose failures (a disk I/O error, a full disk) are ledger_write_failure()'s.
 */
const char *ledger_unreachable(const ledger *l, int64_t *ret_since_usec);

/* The message of the last failure on l: the engine's (SQLite's) or the ledger's own. */
const char *ledger_errmsg(ledger *l);

/*
 * Jobs left `running` (by a daemon that died) and not yet verified go back to `queued`,
 * keeping their attempt count. Verified jobs stay running for the caller to publish (see
 * above). Returns the number of jobs put back.
 */
int ledger_recover(ledger *l, int64_t now_usec);

/*
 * As ledger_recover() for the jobs of one node: those whose lease owner is "<node>:<pid>" for
 * any pid (every job when node is NULL). Several nodes sharing a PostgreSQL ledger each take
 * back only their own at start; the jobs of the others stay theirs, or go by their leases
 * (ledger_list_lapsed()). Returns the number of jobs put back.
 */
int ledger_recover_node(ledger *l, const char *node, int64_t now_usec);

/*
 * Returns 1 if a job for `path` exists with this size, mtime and inode and is not
 * cancelled (so the file need not be hashed again), 0 if not. Answered from an index.
 */
int ledger_known_stat(ledger *l, const char *path, uint64_t size, int64_t mtime_ns, uint64_t ino);

/*
 * Records a job for (src->path, src->sha256). Returns 1 and the new id in *ret_id when a job
 * was created; older active jobs for the same path that are not running are cancelled as
 * superseded. Returns 0 and the existing id when the path's newest job is for that content
 * and not cancelled (its recorded size/mtime/inode are refreshed); content whose job was
 * cancelled (its file went away, an operator cancelled it) gets a new job.
 */
int ledger_enqueue(ledger *l, const struct source_info *src, int64_t now_usec, int64_t *ret_id);

/*
 * Claims the claimable job (queued or retry, of priority max_priority or more urgent,
 * next_at <= now, no running job with the same output_key) that comes first: the most
 * urgent priority, then the one that has waited longest. Its state becomes running,
 * attempts += 1, a lease of `lease_usec` is recorded for `owner`, all in one transaction.
 * Returns 1 and the job in *ret (owned by the caller), or 0 when none is claimable. The one
 * transition not flushed to disk before it returns. SQLite: it is not even committed: it
 * rides on the next transition's commit (that transition, or group commit, is then a
 * savepoint of the transaction the claims wait in, so one commit and one flush carry
 * them; see ledger_commit_claims()); until then it is visible to this ledger's own reads
 * and transitions only, and a crash of imgd or a power cut forgets it, leaving the job
 * queued with its attempt not counted. If the commit that carries it fails, the claim is
 * undone with it: the job's later transitions for it are refused with -ESTALE (queued, not
 * running), as for a claim taken over, and a new claim of the job gives it the same token
 * again. PostgreSQL: it commits at once without waiting for the server's flush (a power cut
 * of the server may undo it); the job's row is taken with FOR UPDATE SKIP LOCKED (a
 * job another node is claiming is passed over) and the lease ends lease_usec after the
 * database's now; the caller's now_usec decides next_at and is recorded as updated. Claims
 * of jobs of one output_key take turns across nodes (an advisory lock of the key, then the
 * check that none of its jobs runs, in a snapshot taken after the lock), so that no two
 * nodes ever run two jobs of one output; a claim that loses that race tries again.
 */
/*
 * Fencing: every claim gives the job a new token (job.fence, larger than the one before). The
 * transitions of a running job made for that claim (ledger_stage(), ledger_complete(),
 * ledger_fail(), ledger_release(), ledger_hold()) name it, and are refused with -ESTALE when
 * the job was claimed again since (a lease taken over, a job recovered and claimed anew), so a
 * worker that lost its claim can never stage, publish or finish the job under the new one.
 */
int ledger_claim(ledger *l, const char *owner, int64_t now_usec, int64_t lease_usec,
                 enum job_priority max_priority, struct job **ret);

/*
 * Commits the claims that wait for a commit to ride on (SQLite; nothing to do on
 * PostgreSQL, or when none waits), with one flush. 0, or a negative errno: the claims are
 * then undone (see ledger_claim()). ledger_claims_waiting(): whether any waits.
 */
int ledger_commit_claims(ledger *l);
bool ledger_claims_waiting(const ledger *l);

/* Returns 1 and the earliest next_at of a queued or retry job (not held) in *ret_usec, or 0
 * if none. */
int ledger_next_due(ledger *l, int64_t *ret_usec);

/*
 * Checkpoint "verified": records the job's outputs (with their tmp_path) as staged, whether
 * they were rendered degraded (below full quality; claims reset the mark), and `info` (JSON
 * text, may be NULL); the job stays running. Replaces outputs staged earlier. -ESTALE if
 * the job is not running or fence is not its claim's.
 */
int ledger_stage(ledger *l, int64_t id, int64_t fence, const struct job_output *outs, size_t n_outs,
                 bool degraded, const char *info, int64_t now_usec);

/*
 * running -> done, in one transaction. With n_outs == 0 the staged outputs become the
 * published ones; otherwise outs replace them. -ESTALE if the job is not running or fence is not
 * its claim's.
 */
int ledger_complete(ledger *l, int64_t id, int64_t fence, const struct job_output *outs,
                    size_t n_outs, int64_t now_usec);

/*
 * done -> queued for up to `limit` degraded jobs that are still their source's newest
 * (attempts reset), so that they are rendered again at full quality; their published
 * outputs stay until the new ones replace them. Returns how many were queued.
 */
int ledger_rerender_degraded(ledger *l, int64_t now_usec, unsigned limit);

/* Returns 1 and the creation time of the oldest queued or retry job that is not background
 * work (JOB_PRIORITY_BACKGROUND: planned, not waiting through a fault), 0 if none. */
int ledger_oldest_queued(ledger *l, int64_t *ret_usec);

/*
 * Deletes done and cancelled jobs finished before cutoff_usec, with their outputs and errors,
 * except each source's newest job (which start-up scans rely on). Dead jobs are kept until
 * retried or cancelled. One batch per call, so that a ledger of millions never holds the
 * caller up for long: the jobs with ids in (*cursor, *cursor + batch]; *cursor is then where
 * the next batch starts, or 0 when this one reached the newest job (a pass starts with 0).
 * Returns how many were deleted.
 */
int ledger_prune(ledger *l, int64_t cutoff_usec, int64_t *cursor, unsigned batch);

/* Ids of running jobs at the checkpoint "verified" (array owned by the caller). */
int ledger_list_staged(ledger *l, int64_t **ret_ids, size_t *ret_n);
/* The same, of one node's claims (see ledger_recover_node(); NULL: every node's). */
int ledger_list_staged_node(ledger *l, const char *node, int64_t **ret_ids, size_t *ret_n);

/* Ids of running jobs, not verified, whose lease expired before now (owned by the caller).
 * PostgreSQL: before the database's now; now_usec is not used. */
int ledger_list_expired(ledger *l, int64_t now_usec, int64_t **ret_ids, size_t *ret_n);

/*
 * running -> retry (retry = true; claimable from next_at_us) or dead. The error is recorded
 * as last_error and appended to the job's error history. -ESTALE if the job is not running or
 * fence is not its claim's.
 */
int ledger_fail(ledger *l, int64_t id, int64_t fence, const char *error, bool retry,
                int64_t next_at_usec, int64_t now_usec);

/*
 * running -> queued without consuming an attempt (the attempt counter is decremented): for
 * work handed back unfinished, e.g. at shutdown or when the failure was not the job's. -ESTALE
 * if the job is not running or fence is not its claim's.
 */
int ledger_release(ledger *l, int64_t id, int64_t fence, int64_t next_at_usec, int64_t now_usec);

/* queued/retry/dead/running -> cancelled with a reason. -ESTALE if already finished. Acts for
 * no claim: a job running on a node is cancelled under it (its stage, fence check and
 * completion are then refused, -ESTALE), which is why neither an operator nor a node's own
 * work uses it on a running job: */
int ledger_cancel(ledger *l, int64_t id, const char *reason, int64_t now_usec);

/* queued/retry/dead -> cancelled (an operator's cancel): -ESTALE if the job is running, on
 * whichever node, or finished, checked in the transaction that cancels. */
int ledger_cancel_waiting(ledger *l, int64_t id, const char *reason, int64_t now_usec);

/* running -> cancelled for the claim of fence (a node dropping a job it runs: superseded, its
 * source gone): -ESTALE if the job is not running under that claim (rescued and claimed by
 * another node meanwhile), which then goes on untouched. */
int ledger_cancel_claim(ledger *l, int64_t id, int64_t fence, const char *reason, int64_t now_usec);

/* dead or held -> queued (attempts reset to 0). -ESTALE if the job is neither. */
int ledger_retry(ledger *l, int64_t id, int64_t now_usec);

/*
 * The next_at_us of a held job: queued, but not claimable until ledger_unhold() or
 * ledger_retry() wakes it. Not counted by ledger_next_due() or ledger_oldest_queued().
 */
#define LEDGER_HELD INT64_MAX

/*
 * running -> queued and held, without consuming an attempt (as ledger_release()), `reason`
 * recorded as last_error: for a job that cannot run in the configuration as it is (its watch
 * was removed), to be woken when the configuration changes. -ESTALE if the job is not running
 * or fence is not its claim's.
 */
int ledger_hold(ledger *l, int64_t id, int64_t fence, const char *reason, int64_t now_usec);

/* Makes every held job claimable from now_usec. Returns how many were held. */
int ledger_unhold(ledger *l, int64_t now_usec);

/* Counts the held jobs (in the "queued" count too) into *ret_n. */
int ledger_count_held(ledger *l, uint64_t *ret_n);

/*
 * Sets a running job's pipeline and output_key: where the configuration as it is now sends
 * its outputs (it may have changed since intake). -ESTALE if the job is not running under the
 * claim of fence; -EBUSY if another job of that output_key is running (as a claim would not
 * take it: PostgreSQL takes the key's lock first, as a claim does).
 */
int ledger_relocate(ledger *l, int64_t id, int64_t fence, const char *pipeline,
                    const char *output_key);

/* Returns 1 if a newer job exists for the same source path as job `id`, 0 if not. */
int ledger_superseded(ledger *l, int64_t id);

/*
 * Returns 1 and, in *ret_source (owned by the caller), the source path of a done job that
 * published outputs under `output_key` from a different source than `source_path`; 0 if none.
 */
int ledger_output_owner(ledger *l, const char *output_key, const char *source_path,
                        char **ret_source);

/*
 * Group commit: the transitions made between ledger_batch_begin() and ledger_batch_commit()
 * share one transaction and one flush to disk. Each is still all or nothing by itself (a
 * transition that fails inside the batch leaves it as it was, and the others stand), and
 * reads see them at once; but none is durable, and so none may be acted on outside the ledger
 * (a file renamed, an event told, a job handed to a worker), until ledger_batch_commit()
 * returned 0. If the commit fails, every transition of the batch is undone, as if none had
 * been made: the caller makes them again (or gives up) one by one. A transition whose failure
 * made SQLite abandon the whole transaction (a full or failing disk) makes the rest of the
 * batch fail with its error, and the commit too. Lookups inside a batch share its snapshot,
 * which is what makes a scan of many files cheap. Batches do not nest; call
 * ledger_batch_commit() before returning to the event loop.
 */
int ledger_batch_begin(ledger *l);
int ledger_batch_commit(ledger *l);
/* Whether a batch is open. */
bool ledger_in_batch(const ledger *l);

/*
 * Reconciliation (issue 17, ledger-reconcile.c). A done job is its source's current one when
 * no newer job of the same path is there but failed or cancelled reconciliations of the same
 * content: a reconciliation that fails leaves the source's outputs as they were.
 */

/* An output's variant and recipe ("" when unknown). */
struct ledger_output_recipe {
        char *variant;
        char recipe[VARIANT_RECIPE_SIZE];
};

/* A current done job and its outputs. */
struct ledger_done_source {
        int64_t id;
        char *watch;
        char *source_path;
        struct ledger_output_recipe *outputs;
        size_t n_outputs;
};
void ledger_done_sources_free(struct ledger_done_source *v, size_t n);

/*
 * The current done jobs with ids in (after_id, upto_id], in id order, with their outputs, from
 * one snapshot: *ret (free with ledger_done_sources_free()) and *ret_n. A range of ids, not a
 * count of rows: a scan of a million jobs in ranges walks each part of the table once.
 */
int ledger_scan_done(ledger *l, int64_t after_id, int64_t upto_id, struct ledger_done_source **ret,
                     size_t *ret_n);

/* Jobs of priority JOB_PRIORITY_BACKGROUND queued, running or waiting for a retry. */
int ledger_count_background(ledger *l, uint64_t *ret_n);

/* Jobs of priority JOB_PRIORITY_BACKGROUND queued or waiting for a retry, held ones aside. */
int ledger_count_background_waiting(ledger *l, uint64_t *ret_n);

/* The smallest and largest job id (0 and 0 when there is none). */
int ledger_id_range(ledger *l, int64_t *ret_min, int64_t *ret_max);

/* Records `recipe` for job id's output of `variant` if it has none (made before recipes were
 * kept: adopted as made with its variant's recipe now). Returns 1 if it had none, else 0. */
int ledger_adopt_recipe(ledger *l, int64_t id, const char *variant, const char *recipe);

/*
 * Queues a reconciliation job for done job id's source: a new job of the same source and
 * content, priority JOB_PRIORITY_BACKGROUND, that renders the variants in `redo` (a JSON
 * list of names) and, once done, carries over the other outputs of job id. Returns 1 and its
 * id in *ret_id (may be NULL), or 0 when job id is not a current done job (any more).
 */
int ledger_reconcile(ledger *l, int64_t id, const char *redo, int64_t now_usec, int64_t *ret_id);

/* The outputs reconciliation job id will carry over (those of the done job before it; none
 * for another job): *ret (free with job_outputs_free()) and *ret_n. */
int ledger_carried_outputs(ledger *l, int64_t id, struct job_output **ret, size_t *ret_n);

/*
 * Retraction (issue 17, ledger-retract.c): jobs of kind retract, drop and move (see enum
 * job_kind), queued here, carried out by the supervisor (daemon/retract.h) and completed with
 * ledger_complete_retract().
 */

/*
 * The source at `path` is gone: queues a JOB_RETRACT job (priority live) for what of it is
 * published, and cancels the path's queued and retried jobs as superseded. Returns 1 and its
 * id in *ret_id (may be NULL); 0 when nothing of the path is published (its queued and
 * retried jobs are cancelled all the same) or a retraction is queued already.
 */
int ledger_retract(ledger *l, const char *path, int64_t now_usec, int64_t *ret_id);

/* Queues a JOB_DROP job for done job id: the outputs of the variants in `variants` (a JSON
 * list of names) are removed. Returns 1 and its id, or 0 when id is not its source's current
 * done job (any more). */
int ledger_drop(ledger *l, int64_t id, const char *variants, int64_t now_usec, int64_t *ret_id);

/*
 * The source at `old_path` was renamed to src->path within its tree: queues a JOB_MOVE job
 * for src (priority live) that moves old_path's published outputs, superseding src->path's
 * queued and retried jobs. The file is old_path's published content when it has the size,
 * mtime and inode recorded for it (a rename keeps them; src->sha256 is not read: the move job
 * takes the recorded one). Returns 1 and its id; 0 when nothing of old_path is published, a
 * newer job of old_path came since, or the file is not the same (take src in as an upload).
 */
int ledger_move(ledger *l, const char *old_path, const struct source_info *src, int64_t now_usec,
                int64_t *ret_id);

/* The paths of sources below directory `dir` (absolute, no trailing slash) that have jobs:
 * *ret (an array of *ret_n strings, free each and the array). */
int ledger_paths_below(ledger *l, const char *dir, char ***ret, size_t *ret_n);

/*
 * The job a retract, drop or move job `id` works from: its path's (a move: its old path's)
 * newest done job before it. Returns 1 and it with its outputs in *ret; 0 when there is none
 * or it is a retraction (nothing is published).
 */
int ledger_origin(ledger *l, int64_t id, struct job_detail **ret);

/*
 * running -> done for retract, drop or move job id, whose outputs are now `outs` (none for a
 * retraction; the kept ones for a drop; for a move, at their new names). A drop or move takes
 * its origin's degraded mark and `info` (what its render reported); a move's old path gets a
 * done retraction unless newer jobs came for it meanwhile (nothing of it is published any
 * more). -ESTALE if the job is not running under the claim of `fence`.
 */
int ledger_complete_retract(ledger *l, int64_t id, int64_t fence, const struct job_output *outs,
                            size_t n_outs, int64_t now_usec);

/* A move job whose outputs cannot be moved (missing, altered) becomes a render of its source
 * (running -> queued, no attempt used), and the old path's published outputs are queued for
 * retraction. -ESTALE if the job is not a running move under the claim of `fence`. */
int ledger_move_to_render(ledger *l, int64_t id, int64_t fence, int64_t now_usec);

/*
 * Leases across nodes (issue 18, ledger-lease.c). A claim is its node's for as long as its
 * lease is renewed: every heartbeat renews the leases of the node's running jobs, and the
 * publication of a job renews its lease first, which is the fence check: a claim taken over
 * (its token superseded) or a job no longer running is refused. A lease that lapsed (no
 * heartbeat for lease_usec: the node died, stopped, lost the database) is rescued by any node
 * with ledger_fail_lapsed(), the attempt counted as failed. PostgreSQL: the database's clock
 * decides every lease (the caller's now_usec is not used for them); SQLite: the caller's.
 * Renewals and heartbeats are not flushed to disk (a lease lost to a crash of the database is
 * only shorter).
 */

/* What a heartbeat says of its node. */
struct ledger_node_beat {
        const char *node;  /* the node's name */
        const char *owner; /* its lease owner: ledger_claim()'s owner, "node:pid" */
        int64_t pid;
        int64_t started_usec; /* wall clock */
        unsigned workers;
        unsigned running; /* jobs it has in hand */
        const char *version;
};

/*
 * A heartbeat: records the node (PostgreSQL: its row of the nodes table, the heartbeat in the
 * database's clock; SQLite, one node: nothing) and renews the lease of every job running under
 * b->owner to lease_usec from now, in one transaction. A lapsed lease that no node rescued yet
 * is renewed too: the rescue and the renewal lock the job's row, and the first of them wins.
 * Returns the number of leases renewed.
 */
int ledger_heartbeat(ledger *l, const struct ledger_node_beat *b, int64_t lease_usec,
                     int64_t now_usec);

/* One job of ledger_renew(). */
struct ledger_renewal {
        int64_t id;
        int64_t fence; /* the token of the claim the caller holds */
        int result;    /* out: 0 renewed, -ESTALE the claim is lost */
        /* out, when -ESTALE: what the job is now (state, token, lease owner; "" if none) */
        enum job_state state;
        int64_t now_fence;
        char owner[64];
};

/*
 * The fence check before publication: renews the lease of each job of v to lease_usec from now
 * if it is still running under v[i].fence, all in one transaction; v[i].result says which were
 * (-ESTALE: taken over, rescued, cancelled). Returns 0, or a negative errno when the ledger
 * could not answer (then nothing is known, and nothing may be published).
 */
int ledger_renew(ledger *l, struct ledger_renewal *v, size_t n, int64_t lease_usec,
                 int64_t now_usec);

/* A running job whose lease lapsed. */
struct ledger_lapsed {
        int64_t id;
        int64_t fence;
        char owner[64]; /* its lease owner ("" if none) */
        bool staged;    /* at the checkpoint "verified" */
};

/* The running jobs, staged or not, whose lease lapsed before now (PostgreSQL: the database's
 * now): *ret (caller frees) and *ret_n, by id. */
int ledger_list_lapsed(ledger *l, int64_t now_usec, struct ledger_lapsed **ret, size_t *ret_n);

/*
 * The rescue of a lapsed lease: as ledger_fail(), only if job id is still running under the
 * claim of fence and its lease lapsed before now (PostgreSQL: the database's now); -ESTALE
 * otherwise (renewed meanwhile, rescued by another node, claimed again), so two rescuers
 * never both rescue. Staged outputs are forgotten. Inside a group commit the job's row stays
 * locked until ledger_batch_commit(): no heartbeat renews it and no claim takes it meanwhile,
 * so the caller may remove the job's temporary files before committing.
 */
int ledger_fail_lapsed(ledger *l, int64_t id, int64_t fence, const char *error, bool retry,
                       int64_t next_at_usec, int64_t now_usec);

/* A node of a cluster, as its heartbeats recorded it (ledger_list_nodes()). */
struct ledger_node {
        char *node;  /* its name */
        char *owner; /* its lease owner, "node:pid" */
        int64_t pid;
        int64_t started_usec;   /* wall clock (the node's) */
        int64_t heartbeat_usec; /* the last heartbeat, in the database's clock */
        int64_t age_usec;       /* how long ago, by the database's clock */
        bool alive;             /* a heartbeat came within the lease */
        unsigned workers;
        unsigned running; /* jobs running under its lease owner, counted in the ledger */
        char *version;
};
void ledger_nodes_free(struct ledger_node *v, size_t n);

/*
 * The nodes that ever sent a heartbeat, by name: *ret (free with ledger_nodes_free()) and
 * *ret_n. A node is alive while its last heartbeat is younger than lease_usec by the
 * database's clock (the clock that decides leases; a node sends one every third of its lease,
 * so the nodes of a cluster share one lease). SQLite: none (one node, no nodes table).
 */
int ledger_list_nodes(ledger *l, int64_t lease_usec, struct ledger_node **ret, size_t *ret_n);

/*
 * Waking nodes and telling events across nodes (issue 18, ledger-notify.c): PostgreSQL's
 * LISTEN/NOTIFY on the ledger's own connection. Every transaction that makes a job claimable
 * (ledger_enqueue() of a new job, ledger_fail() with a retry, ledger_release(), ledger_retry(),
 * ledger_unhold(), ledger_recover*(), ledger_rerender_degraded(), a reconciliation, retraction
 * or move queued) notifies LEDGER_CHANNEL_JOBS (empty payload) as it commits, in the same
 * transaction: a node listening claims at once instead of at its next poll. A group commit
 * notifies once. SQLite (one node): no channel; these functions return -EOPNOTSUPP.
 */
enum ledger_channel {
        LEDGER_CHANNEL_JOBS,   /* "imgd_jobs:<schema>": a job became claimable */
        LEDGER_CHANNEL_EVENTS, /* "imgd_events:<schema>": a node's job events (ledger_notify()) */
        _LEDGER_CHANNEL_MAX,
};
const char *ledger_channel_name(enum ledger_channel c); /* without the schema */

/* The longest payload ledger_notify() sends (PostgreSQL's limit is 8000 bytes). */
#define LEDGER_NOTIFY_PAYLOAD_MAX 7999

/* Listens on channel c from now on, on this connection and every one made again after it
 * broke (ledger-pg.c reconnects at the next transaction). 0 or a negative errno (the
 * channel is listened on again with the next connection all the same). */
int ledger_listen(ledger *l, enum ledger_channel c);

/*
 * The socket of the connection to watch for notifications (readable), and in
 * *ret_generation (may be NULL) the connection's number, which changes with every new
 * connection (a new socket, maybe with the same number: watch it anew). -ENOTCONN while
 * there is no connection, -EOPNOTSUPP on SQLite.
 */
int ledger_notify_fd(ledger *l, uint64_t *ret_generation);

/* One notification: its channel, its payload (borrowed for the call), and whether this
 * connection sent it. */
typedef void (*ledger_notify_fn)(enum ledger_channel c, const char *payload, bool own,
                                 void *userdata);

/*
 * Reads what the server sent without waiting (what arrived with the answers of other
 * statements too) and calls fn for each notification of a channel listened on. Not inside a
 * transaction or group commit. Returns the number of notifications, or a negative errno
 * (-ENOTCONN: the connection broke; it is made again at the next transaction).
 */
int ledger_notifications(ledger *l, ledger_notify_fn fn, void *userdata);

/* Notifies channel c with each of the n payloads (each at most LEDGER_NOTIFY_PAYLOAD_MAX
 * bytes, else -E2BIG and nothing is sent), in one round trip and one transaction; not inside
 * a transaction or group commit. 0 or a negative errno. */
int ledger_notify(ledger *l, enum ledger_channel c, const char *const *payloads, size_t n);

/* Counts jobs by state into counts[_JOB_STATE_MAX] (kept in the ledger: no scan). */
int ledger_counts(ledger *l, uint64_t counts[static _JOB_STATE_MAX]);

struct ledger_filter {
        int state;          /* an enum job_state, or -1 for any */
        const char *watch;  /* NULL for any */
        int64_t since_usec; /* updated at or after; 0 for any */
        unsigned limit;     /* 0 for the default (50) */
};

/* The newest jobs matching f, newest first. *ret is an array of *ret_n jobs (caller frees
 * each with job_clear() and the array with free()). */
int ledger_list(ledger *l, const struct ledger_filter *f, struct job **ret, size_t *ret_n);

/* Returns 1 and the job with its outputs and errors, or 0 if no job has that id. */
int ledger_get(ledger *l, int64_t id, struct job_detail **ret);

/* SQLite: runs PRAGMA integrity_check and compares the kept counts by state with a count of
 * the jobs; returns 0 if both agree, -EBADMSG otherwise. Reads the whole file. PostgreSQL:
 * compares the counts only. */
int ledger_integrity_check(ledger *l);

#include "shared/macro.h"
DEFINE_TRIVIAL_CLEANUP_FUNC(struct job *, job_free)
DEFINE_TRIVIAL_CLEANUP_FUNC(struct job_detail *, job_detail_free)
