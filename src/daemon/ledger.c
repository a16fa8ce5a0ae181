/* SPDX-License-Identifier: MIT */
/*
 * ledger.c - the engine-independent parts of the job ledger (see ledger.h for the contract
 * and the state diagram, ledger-private.h for how the files of the ledger divide it): the
 * names of the job states, freeing what the ledger hands out, the message of the last
 * failure and the file system's refusals.
 *
 * Promises kept by every engine:
 * - Every transition is one transaction (LEDGER_WRITE()), committed on success and rolled
 *   back on every failure, so a failed call leaves the ledger as it was.
 * - A transition that returned success survives a crash or a power loss; the one exception,
 *   ledger_claim(), survives a crash of imgd, and a power cut before the next transition can
 *   only lose the claim, which leaves the job queued as before it (ledger-sqlite.c).
 * - A ledger that fails its check at open is refused with -EBADMSG and is never written,
 *   replaced or deleted (ledger-open.c).
 * - The schema is versioned; ledger_open() migrates it one step per transaction and refuses a
 *   schema newer than it knows (ledger-schema.c).
 */
#include <assert.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>

#include "daemon/ledger-private.h"
#include "shared/string-table.h"

static const char *const job_state_table[_JOB_STATE_MAX] = {
        [JOB_QUEUED] = "queued", [JOB_RUNNING] = "running", [JOB_RETRY] = "retry",
        [JOB_DONE] = "done",     [JOB_DEAD] = "dead",       [JOB_CANCELLED] = "cancelled",
};

DEFINE_STRING_TABLE_LOOKUP(job_state, enum job_state, NULL)

/* JOB_RENDER has no name: it is NULL in the ledger. */
static const char *const job_kind_table[_JOB_KIND_MAX] = {
        [JOB_RETRACT] = "retract",
        [JOB_DROP] = "drop",
        [JOB_MOVE] = "move",
};
DEFINE_STRING_TABLE_LOOKUP(job_kind, enum job_kind, NULL)

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
        free(j->redo);
        j->watch = j->source_path = j->output_key = j->pipeline = j->last_error = j->info = NULL;
        j->redo = NULL;
}

struct job *job_free(struct job *j)
{
        if (!j)
                return NULL;
        job_clear(j);
        free(j);
        return NULL;
}

void job_output_clear(struct job_output *o)
{
        free(o->variant);
        free(o->path);
        free(o->format);
        free(o->tmp_path);
        o->variant = o->path = o->format = o->tmp_path = NULL;
}

void job_outputs_free(struct job_output *v, size_t n)
{
        for (size_t i = 0; i < n; i++)
                job_output_clear(&v[i]);
        free(v);
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

int ledger_error(ledger *l, int r, const char *fmt, ...)
{
        va_list ap;

        va_start(ap, fmt);
        vsnprintf(l->errmsg, sizeof l->errmsg, fmt, ap);
        va_end(ap);
        return r;
}

bool ledger_storage_errno(int e)
{
        return e == EROFS || e == ENOSPC || e == EDQUOT || e == EIO || e == EACCES || e == EPERM;
}

const char *ledger_errmsg(ledger *l)
{
        if (!l)
                return "no ledger";
        return l->errmsg;
}

const char *ledger_open_check(const ledger *l)
{
        assert(l);
        return l->open_check;
}

const char *ledger_write_failure(const ledger *l, int64_t *ret_since_usec)
{
        if (!l || l->write_failed_since_usec == 0)
                return NULL;
        if (ret_since_usec)
                *ret_since_usec = l->write_failed_since_usec;
        return l->write_failure;
}
