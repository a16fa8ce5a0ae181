/* SPDX-License-Identifier: MIT */
/*
 * recover.h - start-up recovery after a crash, run before any new work is claimed:
 *
 *   1. jobs left at the checkpoint "verified" are published from their staged temporary
 *      files without re-rendering; an output already renamed into place before the crash is
 *      recognised by its SHA-256 and not published again; a job whose staged file is gone
 *      or altered is handed back to the queue (without using an attempt) to be rendered
 *      again; a job superseded by newer content is cancelled;
 *   2. jobs left claimed (running, not verified) go back to the queue, keeping their attempts;
 *   3. imgd's leftover temporary files are removed from every output tree.
 *
 * On a ledger several nodes share (PostgreSQL), only this node's jobs (ledger.node): the jobs
 * other nodes are running stay theirs, left to their leases (a node that is gone loses them
 * to the rescue of lapsed leases), and the temporary files of jobs running in the ledger are
 * left where they are. A staged job of this node is published only after its lease was
 * renewed under its claim's token (the fence check, as before any publication): while the
 * node was down its lease may have lapsed and another node rescued the job, which then is
 * left to the node that has it now (counted in `lost`), its files untouched by this one.
 *
 * Errors are logged with the job and the file concerned.
 */
#pragma once

#include "shared/config.h"
#include "daemon/ledger.h"

struct recover_stats {
        unsigned published; /* verified jobs completed from staging */
        unsigned redone;    /* verified jobs handed back to be rendered again */
        unsigned requeued;  /* claimed jobs put back in the queue */
        unsigned swept;     /* temporary files removed */
        unsigned lost;      /* verified jobs rescued by another node meanwhile: not ours */
};

/* Returns 0, or a negative errno when the ledger failed (the daemon should not start). */
int recover_run(ledger *l, const struct config *cfg, int64_t now_usec, struct recover_stats *ret);
