/* SPDX-License-Identifier: MIT */
/*
 * ledger-query.c - the ledger's read-only queries: lookups for intake and the scheduler
 * (known_stat, next_due, oldest_queued, superseded, output_owner, the staged and expired
 * ids), the counts, the newest jobs (ledger_list()) and one job's detail (ledger_get()).
 *
 * Nothing here writes. A query runs in the open group commit's transaction when there is one
 * (ledger_batch_begin()), else in its own; ledger_get() reads the job, its outputs and its
 * errors from one snapshot. Arrays handed to the caller are owned by the caller.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/ledger-private.h"
#include "shared/alloc.h"

#define LEDGER_LIST_DEFAULT 50u
#define LEDGER_LIST_MAX 10000u

/* Lookups */

int ledger_known_stat(ledger *l, const char *path, uint64_t size, int64_t mtime_ns, uint64_t ino)
{
        _cleanup_cursor_ struct ledger_cursor st = ledger_stmt_get(l, STMT_KNOWN_STAT);

        assert(path);

        return ledger_bind_step(l, &st, "tiii", path, (int64_t)size, mtime_ns, (int64_t)ino);
}

int ledger_next_due(ledger *l, int64_t *ret_usec)
{
        _cleanup_cursor_ struct ledger_cursor st = ledger_stmt_get(l, STMT_NEXT_DUE);
        int r;

        r = ledger_stmt_step(l, &st);
        if (r <= 0)
                return r;
        if (ret_usec)
                *ret_usec = ledger_column_int64(&st, 0);
        return 1;
}

int ledger_oldest_queued(ledger *l, int64_t *ret_usec)
{
        _cleanup_cursor_ struct ledger_cursor st = ledger_stmt_get(l, STMT_OLDEST_QUEUED);
        int r = ledger_stmt_step(l, &st);

        if (r <= 0)
                return r;
        if (ledger_column_null(&st, 0))
                return 0;
        *ret_usec = ledger_column_int64(&st, 0);
        return 1;
}

int ledger_superseded(ledger *l, int64_t id)
{
        _cleanup_cursor_ struct ledger_cursor st = ledger_stmt_get(l, STMT_SUPERSEDED);
        int r;

        r = ledger_bind_step(l, &st, "i", id);
        if (r < 0)
                return r;
        if (r == 0)
                return ledger_error(l, -ENOENT, "no job %" PRId64, id);
        return ledger_column_int64(&st, 0) != 0;
}

int ledger_output_owner(ledger *l, const char *output_key, const char *source_path,
                        char **ret_source)
{
        _cleanup_cursor_ struct ledger_cursor st = ledger_stmt_get(l, STMT_OUTPUT_OWNER);
        char *s = NULL;
        int r;

        assert(output_key);
        assert(source_path);

        r = ledger_bind_step(l, &st, "tt", output_key, source_path);
        if (r <= 0)
                return r;
        if (ret_source) {
                r = ledger_column_strdup(l, &st, 0, &s);
                if (r < 0)
                        return r;
                *ret_source = s;
        }
        return 1;
}

/* The ids a one-column query bound already returns. */
static int step_ids(ledger *l, struct ledger_cursor *st, int64_t **ret, size_t *ret_n)
{
        _cleanup_free_ int64_t *ids = NULL;
        size_t n = 0, allocated = 0;
        int r;

        while ((r = ledger_stmt_step(l, st)) > 0) {
                if (GROW_ARRAY(ids, allocated, n + 1) < 0)
                        return ledger_error(l, -ENOMEM, "out of memory");
                ids[n++] = ledger_column_int64(st, 0);
        }
        if (r < 0)
                return r;
        *ret = TAKE_PTR(ids);
        *ret_n = n;
        return 0;
}

/* Ids from a one-column query bound to (?1 = arg, if the statement has a parameter). */
static int list_ids(ledger *l, enum ledger_stmt which, int64_t arg, int64_t **ret, size_t *ret_n)
{
        _cleanup_cursor_ struct ledger_cursor st = ledger_stmt_get(l, which);
        int r;

        if (l->engine->nparams(&st) > 0) {
                r = ledger_stmt_bind(l, &st, "i", arg);
                if (r < 0)
                        return r;
        }
        return step_ids(l, &st, ret, ret_n);
}

int ledger_list_staged(ledger *l, int64_t **ret_ids, size_t *ret_n)
{
        return list_ids(l, STMT_LIST_STAGED, 0, ret_ids, ret_n);
}

int ledger_list_staged_node(ledger *l, const char *node, int64_t **ret_ids, size_t *ret_n)
{
        _cleanup_cursor_ struct ledger_cursor st = ledger_stmt_get(l, STMT_LIST_STAGED_NODE);
        int r = ledger_stmt_bind(l, &st, "t", node);

        return r < 0 ? r : step_ids(l, &st, ret_ids, ret_n);
}

int ledger_list_expired(ledger *l, int64_t now_usec, int64_t **ret_ids, size_t *ret_n)
{
        return list_ids(l, STMT_EXPIRED, now_usec, ret_ids, ret_n);
}

/* Counts */

int ledger_count_held(ledger *l, uint64_t *ret_n)
{
        _cleanup_cursor_ struct ledger_cursor st = ledger_stmt_get(l, STMT_COUNT_HELD);
        int r = ledger_stmt_step(l, &st);

        if (r < 0)
                return r;
        *ret_n = r > 0 ? (uint64_t)ledger_column_int64(&st, 0) : 0;
        return 0;
}

int ledger_counts(ledger *l, uint64_t counts[static _JOB_STATE_MAX])
{
        _cleanup_cursor_ struct ledger_cursor st = ledger_stmt_get(l, STMT_COUNTS);
        uint64_t c[_JOB_STATE_MAX] = { 0 };
        int r;

        for (;;) {
                enum job_state s;

                r = ledger_stmt_step(l, &st);
                if (r < 0)
                        return r;
                if (r == 0)
                        break;
                r = ledger_column_state(l, &st, 0, &s);
                if (r < 0)
                        return r;
                if (ledger_column_int64(&st, 1) < 0)
                        return ledger_error(l, -EBADMSG, "job_counts: %s is negative",
                                            job_state_name(s));
                c[s] = (uint64_t)ledger_column_int64(&st, 1);
        }
        memcpy(counts, c, sizeof c);
        return 0;
}

/* -EBADMSG unless every row of job_counts equals a count of the jobs table. */
int ledger_counts_check(ledger *l)
{
        _cleanup_cursor_ struct ledger_cursor st = ledger_stmt_get(l, STMT_COUNTS_SCAN);
        unsigned rows = 0;
        int r;

        while ((r = ledger_stmt_step(l, &st)) > 0) {
                const char *state = ledger_column_text(&st, 0);
                int64_t kept = ledger_column_int64(&st, 1), real = ledger_column_int64(&st, 2);

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

/* Lists and details */

static void job_array_free(struct job *jobs, size_t n)
{
        for (size_t i = 0; i < n; i++)
                job_clear(&jobs[i]);
        free(jobs);
}

int ledger_list(ledger *l, const struct ledger_filter *f, struct job **ret, size_t *ret_n)
{
        _cleanup_cursor_ struct ledger_cursor st = {};
        struct ledger_filter none = { .state = -1 };
        struct job *jobs = NULL;
        size_t n = 0, allocated = 0;
        unsigned limit;
        char sql[512], where[160] = "";
        const char p = l->engine->param;
        int k = 0, r;

        assert(l);
        assert(ret);
        assert(ret_n);

        if (!f)
                f = &none;
        if (f->state < -1 || f->state >= _JOB_STATE_MAX)
                return ledger_error(l, -EINVAL, "bad state filter %d", f->state);
        limit = f->limit == 0 ? LEDGER_LIST_DEFAULT
                              : (f->limit > LEDGER_LIST_MAX ? LEDGER_LIST_MAX : f->limit);

        /* Only the filters given, their parameters numbered in order: an index on each. */
        if (f->state >= 0)
                snprintf(where + strlen(where), sizeof where - strlen(where), " AND state = %c%d",
                         p, ++k);
        if (f->watch)
                snprintf(where + strlen(where), sizeof where - strlen(where), " AND watch = %c%d",
                         p, ++k);
        if (f->since_usec != 0)
                snprintf(where + strlen(where), sizeof where - strlen(where),
                         " AND updated_us >= %c%d", p, ++k);
        snprintf(sql, sizeof sql,
                 "SELECT " JOB_COLUMNS " FROM jobs WHERE TRUE%s "
                 "ORDER BY updated_us DESC, id DESC LIMIT %c%d",
                 where, p, ++k);
        r = ledger_stmt_prepare(l, sql, &st);
        if (r < 0)
                return r;
        k = 0;
        if (f->state >= 0)
                r = l->engine->bind_text(l, &st, ++k, job_state_name(f->state), -1);
        if (r >= 0 && f->watch)
                r = l->engine->bind_text(l, &st, ++k, f->watch, -1);
        if (r >= 0 && f->since_usec != 0)
                r = l->engine->bind_int64(l, &st, ++k, f->since_usec);
        if (r >= 0)
                r = l->engine->bind_int64(l, &st, ++k, (int64_t)limit);
        if (r < 0)
                return r;

        for (;;) {
                r = ledger_stmt_step(l, &st);
                if (r < 0)
                        goto fail;
                if (r == 0)
                        break;
                if (GROW_ARRAY(jobs, allocated, n + 1) < 0) {
                        r = ledger_error(l, -ENOMEM, "out of memory");
                        goto fail;
                }
                r = ledger_read_job(l, &st, &jobs[n]);
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

/* Not named job_detail_freep: that name is left free for ledger.h. */
static void free_detailp(struct job_detail **d)
{
        job_detail_free(*d);
}

int ledger_read_outputs(ledger *l, struct ledger_cursor *c, struct job_detail *d)
{
        size_t allocated = d->n_outputs;
        int r;

        while ((r = ledger_stmt_step(l, c)) > 0) {
                struct job_output *o;

                if (GROW_ARRAY(d->outputs, allocated, d->n_outputs + 1) < 0)
                        return ledger_error(l, -ENOMEM, "out of memory");
                o = &d->outputs[d->n_outputs];
                *o = (struct job_output){
                        .width = (unsigned)ledger_column_int64(c, 3),
                        .height = (unsigned)ledger_column_int64(c, 4),
                        .bytes = (uint64_t)ledger_column_int64(c, 5),
                };
                /* Counted first so that job_detail_free() frees what was copied. */
                d->n_outputs++;
                r = ledger_column_strdup(l, c, 0, &o->variant);
                if (r >= 0)
                        r = ledger_column_strdup(l, c, 1, &o->path);
                if (r >= 0)
                        r = ledger_column_strdup(l, c, 2, &o->format);
                if (r >= 0)
                        r = ledger_column_sha256(l, c, 6, o->sha256);
                if (r >= 0)
                        r = ledger_column_strdup(l, c, 7, &o->tmp_path);
                if (r < 0)
                        return r;
                ledger_column_recipe(c, 8, o->recipe);
        }
        return r;
}

static int get_outputs_locked(ledger *l, int64_t id, struct job_detail *d)
{
        _cleanup_cursor_ struct ledger_cursor st = ledger_stmt_get(l, STMT_GET_OUTPUTS);
        int r = ledger_stmt_bind(l, &st, "i", id);

        return r < 0 ? r : ledger_read_outputs(l, &st, d);
}

static int get_errors_locked(ledger *l, int64_t id, struct job_detail *d)
{
        _cleanup_cursor_ struct ledger_cursor st = ledger_stmt_get(l, STMT_GET_ERRORS);
        size_t allocated = 0;
        int r;

        r = ledger_stmt_bind(l, &st, "i", id);
        if (r < 0)
                return r;
        while ((r = ledger_stmt_step(l, &st)) > 0) {
                struct job_error *e;

                if (GROW_ARRAY(d->errors, allocated, d->n_errors + 1) < 0)
                        return ledger_error(l, -ENOMEM, "out of memory");
                e = &d->errors[d->n_errors];
                *e = (struct job_error){
                        .attempt = (unsigned)ledger_column_int64(&st, 0),
                        .at_usec = ledger_column_int64(&st, 1),
                };
                d->n_errors++;
                r = ledger_column_strdup(l, &st, 2, &e->message);
                if (r < 0)
                        return r;
        }
        return r;
}

static int get_locked(ledger *l, int64_t id, struct job_detail **ret)
{
        _cleanup_(free_detailp) struct job_detail *d = NULL;
        int r;

        {
                _cleanup_cursor_ struct ledger_cursor st = ledger_stmt_get(l, STMT_GET_JOB);

                r = ledger_bind_step(l, &st, "i", id);
                if (r <= 0)
                        return r;
                d = calloc(1, sizeof *d);
                if (!d)
                        return ledger_error(l, -ENOMEM, "out of memory");
                r = ledger_read_job(l, &st, &d->job);
                if (r < 0)
                        return r;
        }

        r = get_outputs_locked(l, id, d);
        if (r < 0)
                return r;
        r = get_errors_locked(l, id, d);
        if (r < 0)
                return r;

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
        r = ledger_tx_begin_read(l);
        if (r < 0)
                return r;
        if (r > 0)
                r = get_locked(l, id, &d); /* inside the open group commit */
        else
                r = ledger_tx_end(l, get_locked(l, id, &d));
        if (r <= 0)
                return r;
        *ret = TAKE_PTR(d);
        return 1;
}
