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
 * variants' outputs are counted, and deleted only on the operator's word
 * (reconciler_start_dropping(): a drop job per source, ledger_drop(); a source that also gets
 * a reconciliation job waits for it, and a pass started once no background job remains drops
 * its outputs). Only the ledger is read, no source file; except that for a watch with
 * on_delete = "retract" each source is looked up (lstat()): one gone while imgd was not
 * watching has its outputs retracted (ledger_retract()). Nothing is queued while paused.
 *
 * A pass starts at start-up and after every reload (reconciler_start()); a pass running then
 * starts over under the new configuration. It yields to live work (reconciler_set_live_fn()).
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
/*
 * Called with the reconciliation's events (`data` borrowed): "reconcile-pass" when a pass has
 * looked at every done source ({"scanned", "queued", "adopted", "retracted", "dropped",
 * "deferred": as in reconciler_plan(), "seconds": how long the pass took}), and
 * "reconcile-done" once the jobs queued by a pass that queued some have all finished, none
 * remaining ({"done": background jobs queued since imgd started, "seconds": since the first}).
 */
typedef void (*reconciler_event_fn)(const char *event, const json_t *data, void *userdata);

int reconciler_new(sd_event *e, ledger *l, reconciler_queued_fn queued, void *userdata,
                   reconciler **ret);
reconciler *reconciler_free(reconciler *r);

/* Starts a pass under cfg (borrowed until the next call or reconciler_free()). */
void reconciler_start(reconciler *r, const struct config *cfg);
/* The same, and the outputs of variants no longer configured are retracted (the operator's
 * `imgctl reconcile retract-removed`), in this pass and the ones it starts, until the next
 * reconciler_start(). */
void reconciler_start_dropping(reconciler *r, const struct config *cfg);

/* Sets the function told of the reconciliation's events (NULL: none); it gets the userdata
 * of reconciler_new(). */
void reconciler_set_event_fn(reconciler *r, reconciler_event_fn fn);

/* Whether live work (an upload) is about: while it is, a pass takes turns of about 2 ms, 50 ms
 * apart (else of about 20 ms, one after the other below every other event source), so that
 * the event loop stays free for the uploads while the pass still goes on. */
typedef bool (*reconciler_live_fn)(void *userdata);

/* Sets the function asked before each turn (NULL: never live); it gets the userdata of
 * reconciler_new(). */
void reconciler_set_live_fn(reconciler *r, reconciler_live_fn fn);

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
 * still to do, reconciler_progress()), "retract_removed": bool (removed variants are being
 * retracted), "dropped": N (drop jobs queued by this pass), "deferred": N (sources whose
 * removed variants wait for their reconciliation job), "retracted": N (sources found gone),
 * "watches": [{"watch", "pipeline", "reconcile": bool, "on_delete", "gone": N (of its
 * sources found gone), "variants": [{"variant", "recipe" (null for a removed one), "current",
 * "missing", "stale", "removed"}]}]}. NULL when out of memory.
 */
json_t *reconciler_plan(const reconciler *r);
