/* SPDX-License-Identifier: MIT */
/*
 * intake-batch.c - group commit of intake; see intake-batch.h.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/intake-batch.h"
#include "daemon/intake.h"
#include "shared/log.h"
#include "shared/macro.h"

struct pending {
        const struct watch_config *watch;
        char *path;
        int64_t id;
};

struct intake_batch {
        ledger *ledger;
        intake_batch_fn done;
        void *userdata;
        bool open;                              /* between begin and end */
        struct pending files[INTAKE_BATCH_MAX]; /* taken in, not yet committed */
        size_t n;
};

int intake_batch_new(ledger *l, intake_batch_fn done, void *userdata, intake_batch **ret)
{
        intake_batch *b = calloc(1, sizeof *b);

        if (!b)
                return -ENOMEM;
        *b = (struct intake_batch){ .ledger = l, .done = done, .userdata = userdata };
        *ret = b;
        return 0;
}

/* Commits the ledger's batch, if one is open, and reports every file of it. */
static void commit(intake_batch *b)
{
        int r = 0;
        size_t n = b->n;

        if (ledger_in_batch(b->ledger))
                r = ledger_batch_commit(b->ledger);
        if (r < 0)
                log_error_errno(r, "ledger: commit the intake of %zu file(s): %s", n,
                                ledger_errmsg(b->ledger));
        /* Reported after the count is reset: a report may take in more (a kick claims). */
        b->n = 0;
        for (size_t i = 0; i < n; i++) {
                struct pending *p = &b->files[i];

                b->done(p->watch, p->path, r < 0 ? 0 : p->id, r,
                        r < 0 ? ledger_errmsg(b->ledger) : NULL, b->userdata);
                free(p->path);
        }
}

intake_batch *intake_batch_free(intake_batch *b)
{
        if (!b)
                return NULL;
        commit(b);
        free(b);
        return NULL;
}

void intake_batch_begin(intake_batch *b)
{
        b->open = true;
        /* Begun now, so that the lookups of a walk share its snapshot too; when it cannot
         * begin, the files go alone (intake_batch_add()). */
        if (!ledger_in_batch(b->ledger))
                (void)ledger_batch_begin(b->ledger);
}

void intake_batch_end(intake_batch *b)
{
        commit(b);
        b->open = false;
}

void intake_batch_flush(intake_batch *b)
{
        commit(b);
}

int intake_batch_add(intake_batch *b, const struct config *cfg, const struct watch_config *w,
                     const char *path, int64_t now_usec, char **ret_error)
{
        _cleanup_free_ char *copy = NULL;
        int64_t id = 0;
        int r;

        /* A batch that cannot begin (the ledger cannot be written): the file goes alone, and
         * its own transaction reports the error. */
        if (b->open && !ledger_in_batch(b->ledger))
                (void)ledger_batch_begin(b->ledger);
        if (!ledger_in_batch(b->ledger)) {
                r = intake_file(b->ledger, cfg, w, path, now_usec, &id, ret_error);
                if (r > 0)
                        b->done(w, path, id, 0, NULL, b->userdata);
                return r;
        }
        copy = strdup(path);
        if (!copy)
                return -ENOMEM;
        r = intake_file(b->ledger, cfg, w, path, now_usec, &id, ret_error);
        if (r <= 0)
                return r;
        b->files[b->n++] = (struct pending){ .watch = w, .path = TAKE_PTR(copy), .id = id };
        if (b->n == INTAKE_BATCH_MAX)
                commit(b);
        return r;
}
