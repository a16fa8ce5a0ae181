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
#include <string.h>

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

const char *ledger_unreachable(const ledger *l, int64_t *ret_since_usec)
{
        if (!l || l->unreachable_since_usec == 0)
                return NULL;
        if (ret_since_usec)
                *ret_since_usec = l->unreachable_since_usec;
        return l->unreachable;
}

int ledger_message_len(const char *s, size_t max)
{
        size_t n = strlen(s);

        if (n <= max)
                return (int)n;
        n = max;
        while (n > 0 && ((unsigned char)s[n] & 0xc0) == 0x80)
                n--;
        return (int)n;
}

/* Engines */

static const char *const ledger_engine_kind_table[_LEDGER_ENGINE_MAX] = {
        [LEDGER_ENGINE_SQLITE] = "sqlite",
        [LEDGER_ENGINE_POSTGRESQL] = "postgresql",
};

DEFINE_STRING_TABLE_LOOKUP(ledger_engine_kind, enum ledger_engine_kind, NULL)

const char *ledger_engine_name(const ledger *l)
{
        return l->engine->name;
}

const char *ledger_name(const ledger *l)
{
        return l->path;
}

int ledger_open(const char *path, ledger **ret, char **ret_error)
{
        return ledger_sqlite_open(path, ret, ret_error);
}

int ledger_open_params(const struct ledger_params *p, ledger **ret, char **ret_error)
{
        assert(p);

        switch (p->engine) {
        case LEDGER_ENGINE_SQLITE:
                assert(p->path);
                return ledger_sqlite_open(p->path, ret, ret_error);
        case LEDGER_ENGINE_POSTGRESQL:
                assert(p->conninfo);
                return ledger_pg_open(p->conninfo, p->stall_usec, ret, ret_error);
        default:
                return -EINVAL;
        }
}

/* Frees l and what every engine keeps in it, after the engine's close. */
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
        (void)l->engine->close(l, false);
        return ledger_dispose(l);
}

int ledger_close(ledger *l, char **ret_error)
{
        int r;

        if (!l)
                return 0;
        r = l->engine->close(l, true);
        if (r < 0 && ret_error && asprintf(ret_error, "%s: %s", l->path, l->errmsg) < 0)
                *ret_error = NULL;
        ledger_dispose(l);
        return r;
}

int ledger_commit_claims(ledger *l)
{
        assert(l);
        return l->engine->claims_commit ? l->engine->claims_commit(l) : 0;
}

bool ledger_claims_waiting(const ledger *l)
{
        assert(l);
        return l->claims_open;
}

int ledger_check_files(ledger *l)
{
        assert(l);
        return l->engine->check_files ? l->engine->check_files(l) : 0;
}

int ledger_integrity_check(ledger *l)
{
        assert(l);
        return l->engine->integrity_check(l);
}
