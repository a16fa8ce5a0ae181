/* SPDX-License-Identifier: MIT */
/*
 * reconcile.h - keeps the output tree in step with the configuration (issue 17).
 *
 * A pass walks the ledger's current done jobs (ledger_scan_done()) in ranges of ids, one range
 * per turn of the event loop, and compares each source's outputs with the recipes of its
 * watch's pipeline now (recipe.h): per watch and variant it counts the outputs that are
 * current, missing (a variant added), stale (made with another recipe) and removed (a
 * variant no longer configured): the plan. Outputs made before recipes were kept are adopted
 * as made with their variant's recipe now. For a watch with `reconcile = true` (the default)
 * and reconciliation not paused, each source with missing or stale outputs gets a
 * reconciliation job (ledger_reconcile(): priority background, only those variants; the
 * scheduler gives it at most a share of the workers while live uploads come). Removed
 * variants' outputs are counted, never deleted. Only the ledger is read: no source file.
 *
 * A pass starts at start-up and after every reload (reconciler_start()); a pass running then
 * starts over under the new configuration.
 */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <systemd/sd-event.h>

#include "daemon/ledger.h"
#include "shared/config.h"

typedef struct reconciler reconciler;

/* Called after a range queued jobs (the scheduler's kick). */
typedef void (*reconciler_queued_fn)(void *userdata);

int reconciler_new(sd_event *e, ledger *l, reconciler_queued_fn queued, void *userdata,
                   reconciler **ret);
reconciler *reconciler_free(reconciler *r);

/* Starts a pass under cfg (borrowed until the next call or reconciler_free()). */
void reconciler_start(reconciler *r, const struct config *cfg);

/* Paused: passes count, but queue nothing (the operator's `imgctl reconcile pause`). */
void reconciler_pause(reconciler *r, bool paused);

/*
 * Progress for status and metrics: {"scanning", "paused", "remaining" (background jobs queued,
 * running or to retry), "done" (of those queued since imgd started), "per_s" (their rate so
 * far), "eta_s" (remaining at that rate; null when unknown)}. NULL when out of memory or the
 * ledger cannot be read.
 */
json_t *reconciler_progress(reconciler *r);

/* Background jobs remaining (see reconciler_progress()); 0 when unknown. */
uint64_t reconciler_remaining(reconciler *r);

/*
 * The plan as JSON: {"scanning": bool, "paused": bool, "scanned": N (current done jobs seen
 * in this pass), "adopted": N, "queued": N (by this pass), "remaining": N (background jobs
 * still to do, reconciler_progress()), "watches": [{"watch", "pipeline", "reconcile":
 * bool, "variants": [{"variant", "recipe" (null for a removed one), "current", "missing",
 * "stale", "removed"}]}]}. NULL when out of memory.
 */
json_t *reconciler_plan(const reconciler *r);
