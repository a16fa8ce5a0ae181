/* SPDX-License-Identifier: MIT */
/*
 * intake-batch.h - group commit of intake (issue 16). The files taken in while a batch is
 * open (one turn of inotify events, one slice of a walk) share one transaction of the ledger
 * and one flush to disk, and their jobs are announced (logged "queued", told to subscribers,
 * handed to workers) only once that transaction committed: nothing outside the ledger acts on
 * a job that a power cut could still take back. A batch is as long as the turn that makes it
 * (a turn of events is at most 10 ms, see watch.c) or INTAKE_BATCH_MAX files: it waits only
 * while there is a batch, and a lone upload is committed as soon as its turn ends.
 *
 * If the commit fails, none of the batch's jobs exists; each of its files is reported back
 * with the error, as if its own intake had failed, to be taken in again later.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "daemon/ledger.h"
#include "shared/config.h"

#define INTAKE_BATCH_MAX 256

typedef struct intake_batch intake_batch;

/* Called once per file taken in: with its job's id once the job is durable (r = 0), or with
 * r < 0 and the error when the batch holding it could not be committed. */
typedef void (*intake_batch_fn)(const struct watch_config *w, const char *path, int64_t id, int r,
                                const char *error, void *userdata);
/* The batch borrows l, which must outlive it. */
int intake_batch_new(ledger *l, intake_batch_fn done, void *userdata, intake_batch **ret);
/* Commits what is open. Accepts NULL. */
intake_batch *intake_batch_free(intake_batch *b);

/* Opens a batch: the files of intake_batch_add() wait for intake_batch_end(). */
void intake_batch_begin(intake_batch *b);
/* Commits the open batch (if any file was taken in) and announces its files; closes it. */
void intake_batch_end(intake_batch *b);
/* Commits and announces what the open batch holds so far; it stays open. For a transition
 * made in a transaction of its own (a retraction) that must come after the files before it. */
void intake_batch_flush(intake_batch *b);

/*
 * Takes in `path`, a file below watch `w`, as intake_file() does (same return values); inside
 * an open batch the new job's transaction is the batch's and its announcement waits for the
 * commit, outside one it is announced at once. The configuration cfg and w must live until
 * the batch ends.
 */
int intake_batch_add(intake_batch *b, const struct config *cfg, const struct watch_config *w,
                     const char *path, int64_t now_usec, char **ret_error);
