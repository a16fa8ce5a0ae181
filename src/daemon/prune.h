/* SPDX-License-Identifier: MIT */
/*
 * prune.h - the pruning of finished jobs older than prune_after_days (except each source's
 * newest), so that the ledger stays small on a server that runs for years. A pass goes
 * through the ledger in batches of ids (ledger_prune()), one batch per call, with a pause
 * between them: each batch holds the event loop for milliseconds, a million jobs take a few
 * seconds in all. The caller's timer calls prune_step() again after the delay it returns.
 *
 *   idle --prune_step (days > 0)--> under way (cursor != 0) --last batch--> idle
 *   a failure, or days = 0 (turned off by a reload): back to idle, the next pass starts over
 */
#pragma once

#include <stdint.h>

#include "daemon/ledger.h"
#include "shared/time-util.h"

/* Passes start this long apart; a pass under way goes on after PRUNE_PAUSE_USEC. */
#define PRUNE_USEC (3600 * USEC_PER_SEC)
#define PRUNE_BATCH 2000u
#define PRUNE_PAUSE_USEC (20 * USEC_PER_MSEC)

/* A pass: where its next batch starts (0: none under way), the cutoff it started with, how
 * many it deleted so far. Zero-initialised: idle. */
struct prune_pass {
        int64_t cursor, cutoff_usec;
        int total;
};

/* Runs one batch of the pass (starting one at now_usec if none is under way) with the
 * configured `days` (0: off). Logs a failure, and the total at the end of a pass that
 * deleted any. Returns the delay before the next call. */
uint64_t prune_step(struct prune_pass *p, ledger *l, unsigned days, int64_t now_usec);
