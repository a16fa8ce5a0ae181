/* SPDX-License-Identifier: MIT */
/*
 * ledger-jobs.c - the ledger's state machine: every transition of ledger.h's diagram
 * (enqueue, claim, stage, complete, fail, release, cancel, retry, hold, unhold, relocate,
 * recover, re-render), each one transaction.
 *
 * Each public transition checks its arguments and runs its *_locked() helper inside
 * LEDGER_WRITE() (ledger_claim() alone in a transaction not flushed to disk: see
 * ledger-stmt.c). A *_locked() helper first checks the job's state where the contract asks
 * for one, and the fencing token of the claim it acts for (job_require_locked(): -ESTALE with
 * the state or token it found), then changes it with the
 * prepared statements of ledger-schema.c; a failure anywhere rolls the whole transition back.
 * Leaving `running` other than by ledger_complete() forgets the staged outputs
 * (drop_staged_locked()).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/ledger-private.h"

/* Looks up job id's state and fencing token (PostgreSQL: locking its row): -ENOENT if there
 * is no such job. */
static int job_state_locked(ledger *l, int64_t id, enum job_state *ret, int64_t *ret_fence)
{
        _cleanup_cursor_ struct ledger_cursor st = ledger_stmt_get(l, STMT_JOB_STATE);
        int r;

        r = ledger_bind_step(l, &st, "i", id);
        if (r < 0)
                return r;
        if (r == 0)
                return ledger_error(l, -ENOENT, "no job %" PRId64, id);
        *ret_fence = ledger_column_int64(&st, 1);
        return ledger_column_state(l, &st, 0, ret);
}

/* The fence of a transition that acts for no claim (an operator's cancel, a retry). */
#define ANY_FENCE (-1)

/* -ESTALE unless job id is in one of the states of `mask` (bits 1 << enum job_state) and,
 * unless fence is ANY_FENCE, its latest claim's token is fence. */
static int job_require_locked(ledger *l, int64_t id, int64_t fence, unsigned mask,
                              const char *wanted)
{
        enum job_state s;
        int64_t f = 0;
        int r;

        r = job_state_locked(l, id, &s, &f);
        if (r < 0)
                return r;
        if (!(mask & (1u << s)))
                return ledger_error(l, -ESTALE, "job %" PRId64 " is %s, not %s", id,
                                    job_state_name(s), wanted);
        if (fence != ANY_FENCE && fence != f)
                return ledger_error(l, -ESTALE,
                                    "job %" PRId64 " was claimed again (fencing token %" PRId64
                                    ", not %" PRId64 ")",
                                    id, f, fence);
        return 0;
}

/* Forgets the outputs recorded for a job that is not done (staged, never published). */
static int drop_staged_locked(ledger *l, int64_t id)
{
        return ledger_stmt_exec(l, STMT_DROP_STAGED, "i", id);
}

/* Appends message to job id's error history under its current attempt number. */
static int add_error_locked(ledger *l, int64_t id, const char *message, int64_t now_usec)
{
        return ledger_stmt_exec(l, STMT_INSERT_ERROR, "iim", id, now_usec, message);
}

/* -ESTALE unless job id is running under the claim of fence; then forgets its staged outputs:
 * how a transition out of running (other than to done) and a new stage begin. */
static int leave_running_locked(ledger *l, int64_t id, int64_t fence)
{
        int r = job_require_locked(l, id, fence, 1u << JOB_RUNNING, "running");

        return r < 0 ? r : drop_staged_locked(l, id);
}

static int insert_outputs_locked(ledger *l, int64_t id, const struct job_output *outs,
                                 size_t n_outs, bool staged)
{
        int r;

        for (size_t i = 0; i < n_outs; i++) {
                const struct job_output *o = &outs[i];

                if (!o->variant || !o->path || !o->format ||
                    strnlen(o->sha256, HASH_HEX_SIZE) >= HASH_HEX_SIZE)
                        return ledger_error(l, -EINVAL, "incomplete output %zu", i);
                if (staged && !o->tmp_path)
                        return ledger_error(l, -EINVAL, "staged output %zu has no file", i);
                if (strnlen(o->recipe, sizeof o->recipe) >= sizeof o->recipe)
                        return ledger_error(l, -EINVAL, "output %zu: bad recipe", i);
                r = ledger_stmt_exec(l, STMT_INSERT_OUTPUT, "itttiiittt", id, o->variant, o->path,
                                     o->format, (int64_t)o->width, (int64_t)o->height,
                                     (int64_t)o->bytes, o->sha256, staged ? o->tmp_path : NULL,
                                     o->recipe);
                if (r < 0)
                        return r;
        }
        return 0;
}

/* Recovery */

int ledger_recover(ledger *l, int64_t now_usec)
{
        assert(l);

        return LEDGER_WRITE(l,
                            ledger_wake_if(l, ledger_stmt_changes(l, STMT_RECOVER, "i", now_usec)));
}

int ledger_recover_node(ledger *l, const char *node, int64_t now_usec)
{
        assert(l);

        return LEDGER_WRITE(l, ledger_wake_if(l, ledger_stmt_changes(l, STMT_RECOVER_NODE, "it",
                                                                     now_usec, node)));
}

int ledger_lock_source_locked(ledger *l, const char *path)
{
        _cleanup_cursor_ struct ledger_cursor st = ledger_stmt_get(l, STMT_LOCK_SOURCE);
        int r = ledger_bind_step(l, &st, "t", path);

        return r < 0 ? r : 0;
}

int ledger_lock_source_of_locked(ledger *l, int64_t id)
{
        _cleanup_cursor_ struct ledger_cursor st = ledger_stmt_get(l, STMT_LOCK_SOURCE_OF);
        int r = ledger_bind_step(l, &st, "i", id);

        return r < 0 ? r : 0;
}

/* Intake */

static int enqueue_locked(ledger *l, const struct source_info *src, int64_t now_usec,
                          int64_t *ret_id)
{
        char reason[64];
        int64_t id;
        int r;

        /* Nodes that saw the same upload take turns: the second finds the first's job. */
        r = ledger_lock_source_locked(l, src->path);
        if (r < 0)
                return r;
        {
                _cleanup_cursor_ struct ledger_cursor st = ledger_stmt_get(l, STMT_FIND_SOURCE);

                r = ledger_bind_step(l, &st, "tt", src->path, src->sha256);
                if (r < 0)
                        return r;
                /* A -> B -> A: A's old job is superseded, so A needs a new job; so does
                 * content whose job was cancelled. */
                id = r > 0 && ledger_column_int64(&st, 1) ? ledger_column_int64(&st, 0) : 0;
        }

        if (id > 0) {
                r = ledger_stmt_exec(l, STMT_REFRESH_STAT, "iiii", id, (int64_t)src->size,
                                     src->mtime_ns, (int64_t)src->ino);
                if (r < 0)
                        return r;
                *ret_id = id;
                return 0;
        }

        r = ledger_stmt_insert(l, STMT_INSERT_JOB, &id, "tttiiitti", src->watch, src->path,
                               src->sha256, (int64_t)src->size, src->mtime_ns, (int64_t)src->ino,
                               src->output_key, src->pipeline, now_usec);
        if (r < 0)
                return r;
        if (r == 0)
                return ledger_error(l, -EIO, "no job was inserted");

        snprintf(reason, sizeof reason, "superseded by job %" PRId64, id);
        r = ledger_stmt_exec(l, STMT_SUPERSEDE, "titi", src->path, id, reason, now_usec);
        if (r < 0)
                return r;

        ledger_wake_locked(l);
        *ret_id = id;
        return 1;
}

int ledger_enqueue(ledger *l, const struct source_info *src, int64_t now_usec, int64_t *ret_id)
{
        int64_t id = 0;
        int r;

        assert(l);
        assert(src);

        if (!src->watch || !src->path || !src->output_key || !src->pipeline ||
            strnlen(src->sha256, HASH_HEX_SIZE) != HASH_HEX_SIZE - 1)
                return ledger_error(l, -EINVAL, "incomplete source description");

        r = LEDGER_WRITE(l, enqueue_locked(l, src, now_usec, &id));
        if (r < 0)
                return r;
        if (ret_id)
                *ret_id = id;
        return r;
}

/* Running: claim, the checkpoint "verified", done */

/* Chooses the job to claim (PostgreSQL: its row locked, then its output's advisory lock
 * taken): 1 and its id in *ret_id, or 0 when none is claimable. */
static int claim_pick_locked(ledger *l, int64_t now_usec, enum job_priority max_priority,
                             int64_t *ret_id)
{
        _cleanup_cursor_ struct ledger_cursor st = ledger_stmt_get(l, STMT_CLAIM_PICK);
        int r;

        r = ledger_bind_step(l, &st, "ii", now_usec, (int64_t)max_priority);
        if (r <= 0)
                return r;
        *ret_id = ledger_column_int64(&st, 0);
        r = ledger_stmt_step(l, &st);
        return r < 0 ? r : 1;
}

/* A claim lost to another of the same output (see claim_locked()). */
#define CLAIM_CONFLICT 2

/*
 * Claims in two statements, so that claims from several nodes can never both run a job of
 * one output: the first chooses the job and (PostgreSQL) waits for the lock of its output,
 * the second, whose snapshot is taken after the lock, takes it only if no job of its output
 * runs, which a claim that held the lock before may have just committed. Returns 1 and the
 * job, 0 when none is claimable, or CLAIM_CONFLICT when the job chosen lost that race: the
 * caller ends the transaction (the locks go with it) and tries again.
 */
static int claim_locked(ledger *l, const char *owner, int64_t now_usec, int64_t expires_usec,
                        enum job_priority max_priority, struct job **ret)
{
        _cleanup_cursor_ struct ledger_cursor st = ledger_stmt_get(l, STMT_CLAIM);
        _cleanup_(job_freep) struct job *j = NULL;
        int64_t id = 0;
        int r;

        r = claim_pick_locked(l, now_usec, max_priority, &id);
        if (r <= 0)
                return r;
        r = ledger_bind_step(l, &st, "itii", now_usec, owner, expires_usec, id);
        if (r < 0)
                return r;
        if (r == 0)
                return CLAIM_CONFLICT;

        j = calloc(1, sizeof *j);
        if (!j)
                return ledger_error(l, -ENOMEM, "out of memory");
        r = ledger_read_job(l, &st, j);
        if (r < 0)
                return r;
        /* Run the statement to its end so the update is complete before the commit. */
        r = ledger_stmt_step(l, &st);
        if (r < 0)
                return r;
        *ret = TAKE_PTR(j);
        return 1;
}

/* How often a claim tries again after losing a job to a claim of the same output. */
#define CLAIM_TRIES 8

int ledger_claim(ledger *l, const char *owner, int64_t now_usec, int64_t lease_usec,
                 enum job_priority max_priority, struct job **ret)
{
        _cleanup_(job_freep) struct job *j = NULL;
        int64_t expires_usec;
        int r;

        assert(l);
        assert(owner);
        assert(ret);

        if (lease_usec < 0)
                return ledger_error(l, -EINVAL, "negative lease");
        if (__builtin_add_overflow(now_usec, lease_usec, &expires_usec))
                expires_usec = INT64_MAX;

        /* Not flushed (see ledger.h): losing it to a crash or a power cut loses nothing. On
         * SQLite it waits for the next commit (claim_begin); on PostgreSQL it commits at once,
         * without waiting for the server's flush. A claim that lost its job to a claim of the
         * same output rolls back, its locks with it, and tries again: the job it chose is
         * passed over now that the other one runs. */
        for (unsigned tries = 0;; tries++) {
                const struct ledger_engine *e = l->engine;
                bool conflict;

                r = e->claim_begin ? e->claim_begin(l) : ledger_tx_begin_sync(l, false);
                if (r < 0)
                        return r;
                r = claim_locked(l, owner, now_usec, expires_usec, max_priority, &j);
                conflict = r == CLAIM_CONFLICT;
                r = conflict ? -ECANCELED : r;
                r = e->claim_end ? e->claim_end(l, r) : ledger_tx_end(l, r);
                if (!conflict)
                        break;
                if (tries + 1 >= CLAIM_TRIES)
                        return 0; /* every job it chose was taken meanwhile: none for now */
        }
        if (r <= 0)
                return r;
        *ret = TAKE_PTR(j);
        return 1;
}

static int stage_locked(ledger *l, int64_t id, int64_t fence, const struct job_output *outs,
                        size_t n_outs, bool degraded, const char *info, int64_t now_usec)
{
        int r;

        r = leave_running_locked(l, id, fence);
        if (r < 0)
                return r;
        r = insert_outputs_locked(l, id, outs, n_outs, true);
        if (r < 0)
                return r;
        return ledger_stmt_exec(l, STMT_SET_STAGED, "iiit", id, now_usec, (int64_t)degraded, info);
}

int ledger_stage(ledger *l, int64_t id, int64_t fence, const struct job_output *outs, size_t n_outs,
                 bool degraded, const char *info, int64_t now_usec)
{
        assert(l);
        assert(outs || n_outs == 0);

        return LEDGER_WRITE(l, stage_locked(l, id, fence, outs, n_outs, degraded, info, now_usec));
}

int ledger_complete_locked(ledger *l, int64_t id, int64_t fence, const struct job_output *outs,
                           size_t n_outs, int64_t now_usec)
{
        int r;

        r = job_require_locked(l, id, fence, 1u << JOB_RUNNING, "running");
        if (r < 0)
                return r;

        if (n_outs == 0) {
                /* The staged outputs are the published ones now. */
                r = ledger_stmt_exec(l, STMT_PUBLISHED, "i", id);
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
        /* A reconciliation job: the source's outputs it did not render stay as they were. */
        r = ledger_carry_locked(l, id);
        if (r < 0)
                return r;

        return ledger_stmt_exec(l, STMT_SET_DONE, "ii", id, now_usec);
}

int ledger_complete(ledger *l, int64_t id, int64_t fence, const struct job_output *outs,
                    size_t n_outs, int64_t now_usec)
{
        assert(l);
        assert(outs || n_outs == 0);

        return LEDGER_WRITE(l, ledger_complete_locked(l, id, fence, outs, n_outs, now_usec));
}

static int relocate_locked(ledger *l, int64_t id, int64_t fence, const char *pipeline,
                           const char *output_key)
{
        _cleanup_cursor_ struct ledger_cursor st = ledger_stmt_get(l, STMT_LOCK_OUTPUT);
        int r = job_require_locked(l, id, fence, 1u << JOB_RUNNING, "running");

        if (r < 0)
                return r;
        /* PostgreSQL: the output's lock, as a claim of one of its jobs takes it, so that the
         * check below sees every claim of the key that committed before. */
        r = ledger_bind_step(l, &st, "t", output_key);
        if (r < 0)
                return r;
        r = ledger_stmt_changes(l, STMT_RELOCATE, "itti", id, pipeline, output_key, fence);
        if (r == 0)
                return ledger_error(l, -EBUSY,
                                    "job %" PRId64 ": another running job has the outputs %s_*", id,
                                    output_key);
        return r < 0 ? r : 0;
}

int ledger_relocate(ledger *l, int64_t id, int64_t fence, const char *pipeline,
                    const char *output_key)
{
        assert(l);
        assert(pipeline);
        assert(output_key);

        return LEDGER_WRITE(l, relocate_locked(l, id, fence, pipeline, output_key));
}

/* Leaving running: retry, dead, released, held */

int ledger_fail_locked(ledger *l, int64_t id, int64_t fence, const char *error, bool retry,
                       int64_t next_at_usec, int64_t now_usec)
{
        int r;

        r = leave_running_locked(l, id, fence);
        if (r < 0)
                return r;
        r = add_error_locked(l, id, error, now_usec);
        if (r < 0)
                return r;
        r = ledger_stmt_exec(l, STMT_SET_FAILED, "itmii", id,
                             job_state_name(retry ? JOB_RETRY : JOB_DEAD), error, next_at_usec,
                             now_usec);
        if (r >= 0 && retry)
                ledger_wake_locked(l); /* due at next_at: the others arm their timers */
        return r;
}

int ledger_fail(ledger *l, int64_t id, int64_t fence, const char *error, bool retry,
                int64_t next_at_usec, int64_t now_usec)
{
        assert(l);

        return LEDGER_WRITE(l, ledger_fail_locked(l, id, fence, error ? error : "unknown error",
                                                  retry, next_at_usec, now_usec));
}

int ledger_release_locked(ledger *l, int64_t id, int64_t fence, int64_t next_at_usec,
                          int64_t now_usec)
{
        int r;

        r = leave_running_locked(l, id, fence);
        if (r < 0)
                return r;
        r = ledger_stmt_exec(l, STMT_SET_RELEASED, "iii", id, next_at_usec, now_usec);
        if (r >= 0)
                ledger_wake_locked(l);
        return r;
}

int ledger_release(ledger *l, int64_t id, int64_t fence, int64_t next_at_usec, int64_t now_usec)
{
        assert(l);

        return LEDGER_WRITE(l, ledger_release_locked(l, id, fence, next_at_usec, now_usec));
}

static int hold_locked(ledger *l, int64_t id, int64_t fence, const char *reason, int64_t now_usec)
{
        int r;

        r = leave_running_locked(l, id, fence);
        if (r < 0)
                return r;
        return ledger_stmt_exec(l, STMT_SET_HELD, "imi", id, reason, now_usec);
}

int ledger_hold(ledger *l, int64_t id, int64_t fence, const char *reason, int64_t now_usec)
{
        assert(l);
        assert(reason);

        return LEDGER_WRITE(l, hold_locked(l, id, fence, reason, now_usec));
}

int ledger_unhold(ledger *l, int64_t now_usec)
{
        return LEDGER_WRITE(l,
                            ledger_wake_if(l, ledger_stmt_changes(l, STMT_UNHOLD, "i", now_usec)));
}

/* Operators and health: cancel, retry, re-render */

/* -> cancelled, if job id is in a state of mask (and, unless fence is ANY_FENCE, running
 * under the claim of fence). */
static int cancel_locked(ledger *l, int64_t id, int64_t fence, unsigned mask, const char *wanted,
                         const char *reason, int64_t now_usec)
{
        int r;

        r = job_require_locked(l, id, fence, mask, wanted);
        if (r < 0)
                return r;
        r = drop_staged_locked(l, id);
        if (r < 0)
                return r;
        r = add_error_locked(l, id, reason, now_usec);
        if (r < 0)
                return r;
        return ledger_stmt_exec(l, STMT_SET_CANCELLED, "imi", id, reason, now_usec);
}

#define WAITING_MASK (1u << JOB_QUEUED | 1u << JOB_RETRY | 1u << JOB_DEAD)

int ledger_cancel(ledger *l, int64_t id, const char *reason, int64_t now_usec)
{
        assert(l);

        return LEDGER_WRITE(l, cancel_locked(l, id, ANY_FENCE, WAITING_MASK | 1u << JOB_RUNNING,
                                             "queued, retry, dead or running",
                                             reason ? reason : "cancelled", now_usec));
}

int ledger_cancel_waiting(ledger *l, int64_t id, const char *reason, int64_t now_usec)
{
        assert(l);

        return LEDGER_WRITE(l,
                            cancel_locked(l, id, ANY_FENCE, WAITING_MASK, "queued, retry or dead",
                                          reason ? reason : "cancelled", now_usec));
}

int ledger_cancel_claim(ledger *l, int64_t id, int64_t fence, const char *reason, int64_t now_usec)
{
        assert(l);

        return LEDGER_WRITE(l, cancel_locked(l, id, fence, 1u << JOB_RUNNING, "running",
                                             reason ? reason : "cancelled", now_usec));
}

/* 1 if job id is held (see ledger_hold()), 0 if not. */
static int held_locked(ledger *l, int64_t id)
{
        _cleanup_cursor_ struct ledger_cursor st = ledger_stmt_get(l, STMT_IS_HELD);
        int r = ledger_bind_step(l, &st, "i", id);

        return r <= 0 ? r : ledger_column_int64(&st, 0) != 0;
}

static int retry_locked(ledger *l, int64_t id, int64_t now_usec)
{
        int r;

        r = held_locked(l, id);
        if (r == 0)
                r = job_require_locked(l, id, ANY_FENCE, 1u << JOB_DEAD, "dead (or held)");
        if (r < 0)
                return r;
        r = ledger_stmt_exec(l, STMT_SET_REQUEUED, "ii", id, now_usec);
        if (r >= 0)
                ledger_wake_locked(l);
        return r;
}

int ledger_retry(ledger *l, int64_t id, int64_t now_usec)
{
        assert(l);

        return LEDGER_WRITE(l, retry_locked(l, id, now_usec));
}

int ledger_rerender_degraded(ledger *l, int64_t now_usec, unsigned limit)
{
        return LEDGER_WRITE(l, ledger_wake_if(l, ledger_stmt_changes(l, STMT_RERENDER, "ii",
                                                                     now_usec, (int64_t)limit)));
}
