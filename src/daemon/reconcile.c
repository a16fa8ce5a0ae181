/* SPDX-License-Identifier: MIT */
/*
 * reconcile.c - the reconciliation pass; see reconcile.h.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "daemon/reconcile.h"
#include "shared/alloc.h"
#include "shared/log.h"
#include "shared/macro.h"
#include "shared/time-util.h"

/* Job ids looked at per turn of the event loop: sized from the time per id of the turns before
 * so that one takes about RECONCILE_TURN_USEC (a pass that queues jobs or adopts recipes
 * writes, and is slower per id), at most twice the last range. */
#define RECONCILE_RANGE_FIRST 200
#define RECONCILE_RANGE_MIN 10
#define RECONCILE_RANGE_MAX 50000
#define RECONCILE_TURN_USEC (20 * USEC_PER_MSEC)
/* While live work is about (reconciler_set_live_fn()), a turn takes about this long and the
 * next one comes this much later: the loop stays free for the uploads, and the pass goes on. */
#define RECONCILE_LIVE_TURN_USEC (2 * USEC_PER_MSEC)
#define RECONCILE_LIVE_GAP_USEC (50 * USEC_PER_MSEC)
/* While removed variants wait for sources' reconciliation jobs, a pass to retract them starts
 * again this often once no background job remains. */
#define RECONCILE_DROP_RETRY_USEC (2 * USEC_PER_SEC)
/* How often the end of the jobs a pass queued is looked for. */
#define RECONCILE_DONE_USEC (500 * USEC_PER_MSEC)

/* One variant of one watch (configured, or found in outputs but removed). */
struct tally {
        const struct watch_config *watch; /* borrowed from cfg */
        char variant[VARIANT_NAME_MAX];
        const char *recipe; /* the configured variant's, borrowed; NULL: removed */
        uint64_t current, missing, stale, removed;
};

/* Per watch: done sources found gone (on_delete = "retract"), their outputs retracted. */
struct gone {
        const struct watch_config *watch;
        uint64_t n;
};

struct reconciler {
        sd_event_source *step; /* defer: the next range */
        sd_event_source *pace; /* timer: the next range while live work is about */
        sd_event_source *drop_timer;
        ledger *ledger;
        const struct config *cfg;
        reconciler_queued_fn queued;
        reconciler_event_fn event;
        reconciler_live_fn live;
        sd_event_source *done_timer; /* while jobs a pass queued remain */
        uint64_t pass_started_usec;  /* CLOCK_MONOTONIC */
        void *userdata;
        bool scanning, paused;
        /* The operator asked for the outputs of removed variants to be retracted: drop jobs
         * are queued (until the next reload); `deferred` sources of this pass first wait for
         * a reconciliation job of theirs, and a later pass drops theirs. */
        bool drop_removed;
        uint64_t dropped, deferred, retracted;
        struct gone *gone;
        size_t n_gone, allocated_gone;
        int64_t cursor, last_id; /* ids (cursor, last_id] remain */
        int64_t range;           /* ids per turn */
        double usec_per_id;      /* of the last turn */
        uint64_t scanned, adopted, enqueued;
        uint64_t enqueued_total;      /* since imgd started */
        uint64_t first_enqueued_usec; /* CLOCK_MONOTONIC; 0: none yet */
        struct tally *tallies;
        size_t n_tallies, allocated;
};

static const struct watch_config *find_watch(const struct config *cfg, const char *path)
{
        for (size_t i = 0; i < cfg->n_watches; i++)
                if (strcmp(cfg->watches[i].path, path) == 0)
                        return &cfg->watches[i];
        return NULL;
}

static struct tally *tally_of(reconciler *r, const struct watch_config *w, const char *variant,
                              const char *recipe)
{
        for (size_t i = 0; i < r->n_tallies; i++)
                if (r->tallies[i].watch == w && strcmp(r->tallies[i].variant, variant) == 0)
                        return &r->tallies[i];
        if (strlen(variant) >= VARIANT_NAME_MAX ||
            GROW_ARRAY(r->tallies, r->allocated, r->n_tallies + 1) < 0)
                return NULL;
        r->tallies[r->n_tallies] = (struct tally){ .watch = w, .recipe = recipe };
        strcpy(r->tallies[r->n_tallies].variant, variant);
        return &r->tallies[r->n_tallies++];
}

/* The recipe of source src's output of `variant`, NULL if it has none; *ret_index its index. */
static const char *output_recipe(const struct ledger_done_source *src, const char *variant,
                                 size_t *ret_index)
{
        for (size_t i = 0; i < src->n_outputs; i++)
                if (strcmp(src->outputs[i].variant, variant) == 0) {
                        *ret_index = i;
                        return src->outputs[i].recipe;
                }
        return NULL;
}

/*
 * Compares one source with its watch's pipeline: counts, adopts recipes of outputs that have
 * none, and returns in *ret_redo (caller frees; NULL when nothing is to render) the JSON list
 * of the variants to render again. 0 or a negative errno.
 */
static int reconcile_source(reconciler *r, const struct ledger_done_source *src, char **ret_redo,
                            char **ret_drop)
{
        const struct watch_config *w = find_watch(r->cfg, src->watch);
        const struct pipeline *pl = w ? w->pipeline : NULL;
        _cleanup_(json_decrefp) json_t *redo = NULL, *drop = NULL;

        *ret_redo = NULL;
        *ret_drop = NULL;
        if (!pl)
                return 0; /* its watch is gone: its jobs are held, not reconciled */
        redo = json_array();
        drop = json_array();
        if (!redo || !drop)
                return -ENOMEM;
        for (size_t i = 0; i < pl->n_variants; i++) {
                const struct variant *v = &pl->variants[i];
                struct tally *t = tally_of(r, w, v->name, v->recipe);
                size_t k = 0;
                const char *have = output_recipe(src, v->name, &k);
                int q;

                if (!t)
                        return -ENOMEM;
                t->recipe = v->recipe;
                if (have && have[0] == '\0') {
                        /* Made before recipes were kept: taken as made with this one. */
                        q = ledger_adopt_recipe(r->ledger, src->id, v->name, v->recipe);
                        if (q < 0)
                                return q;
                        r->adopted += (uint64_t)q;
                        have = v->recipe;
                }
                if (have && strcmp(have, v->recipe) == 0) {
                        t->current++;
                        continue;
                }
                if (have)
                        t->stale++;
                else
                        t->missing++;
                if (json_array_append_new(redo, json_string(v->name)) < 0)
                        return -ENOMEM;
        }
        for (size_t i = 0; i < src->n_outputs; i++) {
                const char *name = src->outputs[i].variant;
                bool configured = false;
                struct tally *t;

                for (size_t k = 0; k < pl->n_variants; k++)
                        configured |= strcmp(pl->variants[k].name, name) == 0;
                if (configured)
                        continue;
                t = tally_of(r, w, name, NULL);
                if (!t)
                        return -ENOMEM;
                t->removed++;
                if (json_array_append_new(drop, json_string(name)) < 0)
                        return -ENOMEM;
        }
        if (r->paused)
                return 0;
        if (json_array_size(redo) > 0 && w->reconcile) {
                *ret_redo = json_dumps(redo, JSON_COMPACT);
                if (!*ret_redo)
                        return -ENOMEM;
        } else if (json_array_size(drop) > 0 && r->drop_removed) {
                *ret_drop = json_dumps(drop, JSON_COMPACT);
                if (!*ret_drop)
                        return -ENOMEM;
        }
        if (*ret_redo && json_array_size(drop) > 0 && r->drop_removed)
                r->deferred++; /* dropped by a pass after its reconciliation job */
        return 0;
}

/* A done source of a watch with on_delete = "retract" whose file is gone (deleted or moved
 * while imgd was not running): its outputs are retracted. 1 if so, 0 if not, or a negative
 * errno. One lstat() per such source. */
static int retract_gone(reconciler *r, const struct ledger_done_source *src, int64_t now)
{
        const struct watch_config *w = find_watch(r->cfg, src->watch);
        struct gone *g = NULL;
        struct stat st;
        int q;

        if (!w || w->on_delete != WATCH_ON_DELETE_RETRACT || r->paused)
                return 0;
        if (lstat(src->source_path, &st) == 0 || errno != ENOENT)
                return 0;
        q = ledger_retract(r->ledger, src->source_path, now, NULL);
        if (q <= 0)
                return q;
        for (size_t i = 0; i < r->n_gone && !g; i++)
                if (r->gone[i].watch == w)
                        g = &r->gone[i];
        if (!g) {
                if (GROW_ARRAY(r->gone, r->allocated_gone, r->n_gone + 1) < 0)
                        return -ENOMEM;
                g = &r->gone[r->n_gone++];
                *g = (struct gone){ .watch = w };
        }
        g->n++;
        r->retracted++;
        return 1;
}

/* The ids the next turn looks at to take about turn_usec: at most twice as many as the last
 * turn did. */
static void size_range(reconciler *r, uint64_t turn_usec)
{
        double ids = r->usec_per_id > 0 ? (double)turn_usec / r->usec_per_id
                                        : (double)RECONCILE_RANGE_FIRST;

        if (ids > (double)r->range * 2)
                ids = (double)r->range * 2;
        r->range = ids < RECONCILE_RANGE_MIN   ? RECONCILE_RANGE_MIN
                   : ids > RECONCILE_RANGE_MAX ? RECONCILE_RANGE_MAX
                                               : (int64_t)ids;
}

/* Looks at the next range of ids; queues what it found in one group commit. */
static int reconcile_range(reconciler *r)
{
        struct ledger_done_source *v = NULL;
        int64_t upto = r->cursor + r->range, now = wall_usec();
        uint64_t t0 = mono_usec(), took;
        size_t n = 0;
        unsigned queued = 0;
        int k, q = 0;

        if (upto > r->last_id)
                upto = r->last_id;
        k = ledger_scan_done(r->ledger, r->cursor, upto, &v, &n);
        if (k < 0)
                return k;
        k = ledger_batch_begin(r->ledger);
        for (size_t i = 0; i < n && k >= 0; i++) {
                _cleanup_free_ char *redo = NULL, *drop = NULL;

                r->scanned++;
                k = q = retract_gone(r, &v[i], now);
                queued += q > 0;
                if (k != 0)
                        continue;
                k = reconcile_source(r, &v[i], &redo, &drop);
                if (k >= 0 && redo) {
                        q = ledger_reconcile(r->ledger, v[i].id, redo, now, NULL);
                        if (q < 0)
                                k = q;
                        queued += q > 0;
                }
                if (k >= 0 && drop) {
                        q = ledger_drop(r->ledger, v[i].id, drop, now, NULL);
                        if (q < 0)
                                k = q;
                        queued += q > 0;
                        r->dropped += q > 0;
                }
        }
        if (k > 0)
                k = 0;
        if (k >= 0)
                k = ledger_batch_commit(r->ledger);
        else if (ledger_in_batch(r->ledger))
                (void)ledger_batch_commit(r->ledger);
        ledger_done_sources_free(v, n);
        if (k < 0)
                return k;
        took = mono_usec() - t0;
        r->usec_per_id = (double)(took > 0 ? took : 1) / (double)(upto - r->cursor);
        r->enqueued += queued;
        r->enqueued_total += queued;
        if (queued > 0 && r->first_enqueued_usec == 0)
                r->first_enqueued_usec = mono_usec();
        r->cursor = upto;
        if (queued > 0 && r->queued)
                r->queued(r->userdata);
        return 0;
}

/* Tells the event handler (data taken over). */
static void tell(reconciler *r, const char *event, json_t *data)
{
        if (r->event && data)
                r->event(event, data, r->userdata);
        json_decref(data);
}

/* Live work (an upload) is about: the pass takes short turns, spaced out. */
static bool live_about(reconciler *r)
{
        return r->live && r->live(r->userdata);
}

/* The next turn: at once below every other event source, or later while live work is about. */
static void schedule_step(reconciler *r)
{
        if (live_about(r)) {
                sd_event_source_set_time_relative(r->pace, RECONCILE_LIVE_GAP_USEC);
                sd_event_source_set_enabled(r->pace, SD_EVENT_ONESHOT);
        } else
                sd_event_source_set_enabled(r->step, SD_EVENT_ONESHOT);
}

static int on_step(sd_event_source *es, void *userdata)
{
        reconciler *r = userdata;
        int k;

        if (!r->scanning)
                return 0;
        size_range(r, live_about(r) ? RECONCILE_LIVE_TURN_USEC : RECONCILE_TURN_USEC);
        k = reconcile_range(r);
        if (k < 0) {
                /* Tried again from the same range at the next pass (a reload, a restart). */
                log_error_errno(k, "reconciliation stopped at job %" PRId64 ": %s", r->cursor,
                                ledger_errmsg(r->ledger));
                r->scanning = false;
                return 0;
        }
        if (r->cursor >= r->last_id) {
                r->scanning = false;
                log_info("reconciliation: %" PRIu64 " done source(s) looked at, %" PRIu64
                         " job(s) queued, %" PRIu64 " recipe(s) adopted, %" PRIu64
                         " source(s) gone retracted%s",
                         r->scanned, r->enqueued, r->adopted, r->retracted,
                         r->deferred > 0 ? "; removed variants of sources being reconciled "
                                           "are retracted by a later pass"
                                         : "");
                if (r->deferred > 0) {
                        sd_event_source_set_time_relative(r->drop_timer, RECONCILE_DROP_RETRY_USEC);
                        sd_event_source_set_enabled(r->drop_timer, SD_EVENT_ONESHOT);
                }
                tell(r, "reconcile-pass",
                     json_pack("{s:I, s:I, s:I, s:I, s:I, s:I, s:f}", "scanned",
                               (json_int_t)r->scanned, "queued", (json_int_t)r->enqueued, "adopted",
                               (json_int_t)r->adopted, "retracted", (json_int_t)r->retracted,
                               "dropped", (json_int_t)r->dropped, "deferred",
                               (json_int_t)r->deferred, "seconds",
                               (double)(mono_usec() - r->pass_started_usec) /
                                       (double)USEC_PER_SEC));
                if (r->enqueued > 0) {
                        sd_event_source_set_time_relative(r->done_timer, RECONCILE_DONE_USEC);
                        sd_event_source_set_enabled(r->done_timer, SD_EVENT_ONESHOT);
                }
                return 0;
        }
        schedule_step(r);
        return 0;
}

static int on_pace(sd_event_source *es, uint64_t usec, void *userdata)
{
        (void)usec;
        return on_step(es, userdata);
}

/* The jobs of the passes since imgd started have all finished: told once per pass that
 * queued some. */
static int on_done_timer(sd_event_source *es, uint64_t usec, void *userdata)
{
        reconciler *r = userdata;
        uint64_t remaining = 0;

        (void)usec;
        if (ledger_count_background(r->ledger, &remaining) < 0 || remaining > 0 || r->scanning) {
                if (!r->scanning) {
                        sd_event_source_set_time_relative(es, RECONCILE_DONE_USEC);
                        sd_event_source_set_enabled(es, SD_EVENT_ONESHOT);
                }
                return 0;
        }
        log_info("reconciliation: the %" PRIu64 " job(s) queued since imgd started are done",
                 r->enqueued_total);
        tell(r, "reconcile-done",
             json_pack("{s:I, s:f}", "done", (json_int_t)r->enqueued_total, "seconds",
                       r->first_enqueued_usec ? (double)(mono_usec() - r->first_enqueued_usec) /
                                                        (double)USEC_PER_SEC
                                              : 0.0));
        return 0;
}

/* Sources whose removed variants waited for their reconciliation: a new pass once no
 * background job remains. */
static int on_drop_timer(sd_event_source *es, uint64_t usec, void *userdata)
{
        reconciler *r = userdata;
        uint64_t remaining = 0;

        if (!r->drop_removed || r->scanning || !r->cfg)
                return 0;
        if (ledger_count_background(r->ledger, &remaining) < 0 || remaining > 0) {
                sd_event_source_set_time_relative(es, RECONCILE_DROP_RETRY_USEC);
                sd_event_source_set_enabled(es, SD_EVENT_ONESHOT);
                return 0;
        }
        (void)usec;
        reconciler_start_dropping(r, r->cfg);
        return 0;
}

int reconciler_new(sd_event *e, ledger *l, reconciler_queued_fn queued, void *userdata,
                   reconciler **ret)
{
        reconciler *r = calloc(1, sizeof *r);
        int k;

        if (!r)
                return -ENOMEM;
        r->ledger = l;
        r->queued = queued;
        r->userdata = userdata;
        k = sd_event_add_defer(e, &r->step, on_step, r);
        if (k >= 0)
                k = sd_event_add_time_relative(e, &r->pace, CLOCK_MONOTONIC,
                                               RECONCILE_LIVE_GAP_USEC, 0, on_pace, r);
        if (k >= 0)
                k = sd_event_add_time_relative(e, &r->drop_timer, CLOCK_MONOTONIC,
                                               RECONCILE_DROP_RETRY_USEC, 0, on_drop_timer, r);
        if (k >= 0)
                k = sd_event_add_time_relative(e, &r->done_timer, CLOCK_MONOTONIC,
                                               RECONCILE_DONE_USEC, 0, on_done_timer, r);
        if (k < 0) {
                sd_event_source_disable_unref(r->step);
                sd_event_source_disable_unref(r->pace);
                sd_event_source_disable_unref(r->drop_timer);
                free(r);
                return k;
        }
        sd_event_source_set_enabled(r->drop_timer, SD_EVENT_OFF);
        sd_event_source_set_enabled(r->done_timer, SD_EVENT_OFF);
        sd_event_source_set_enabled(r->pace, SD_EVENT_OFF);
        /* Below the intake and the scheduler: a range waits for their work of the turn. */
        (void)sd_event_source_set_priority(r->step, SD_EVENT_PRIORITY_IDLE);
        sd_event_source_set_enabled(r->step, SD_EVENT_OFF);
        *ret = r;
        return 0;
}

reconciler *reconciler_free(reconciler *r)
{
        if (!r)
                return NULL;
        sd_event_source_disable_unref(r->step);
        sd_event_source_disable_unref(r->pace);
        sd_event_source_disable_unref(r->drop_timer);
        sd_event_source_disable_unref(r->done_timer);
        free(r->tallies);
        free(r->gone);
        free(r);
        return NULL;
}

static void start(reconciler *r, const struct config *cfg)
{
        int64_t min_id = 0, max_id = 0;

        r->cfg = cfg;
        r->n_tallies = 0;
        r->n_gone = 0;
        r->scanned = r->adopted = r->enqueued = 0;
        r->dropped = r->deferred = r->retracted = 0;
        r->pass_started_usec = mono_usec();
        sd_event_source_set_enabled(r->drop_timer, SD_EVENT_OFF);
        if (ledger_id_range(r->ledger, &min_id, &max_id) < 0) {
                log_error("reconciliation: %s", ledger_errmsg(r->ledger));
                r->scanning = false;
                return;
        }
        /* Every configured variant is in the plan, with no source yet. */
        for (size_t i = 0; i < cfg->n_watches; i++) {
                const struct watch_config *w = &cfg->watches[i];

                for (size_t k = 0; w->pipeline && k < w->pipeline->n_variants; k++)
                        (void)tally_of(r, w, w->pipeline->variants[k].name,
                                       w->pipeline->variants[k].recipe);
        }
        r->cursor = min_id > 0 ? min_id - 1 : 0;
        r->range = RECONCILE_RANGE_FIRST / 2; /* doubled by the first turn */
        r->usec_per_id = 0;
        r->last_id = max_id;
        r->scanning = true;
        sd_event_source_set_enabled(r->pace, SD_EVENT_OFF);
        sd_event_source_set_enabled(r->step, SD_EVENT_ONESHOT);
}

void reconciler_start(reconciler *r, const struct config *cfg)
{
        r->drop_removed = false;
        start(r, cfg);
}

void reconciler_start_dropping(reconciler *r, const struct config *cfg)
{
        r->drop_removed = true;
        start(r, cfg);
}

void reconciler_set_event_fn(reconciler *r, reconciler_event_fn fn)
{
        r->event = fn;
}

void reconciler_set_live_fn(reconciler *r, reconciler_live_fn fn)
{
        r->live = fn;
}

void reconciler_pause(reconciler *r, bool paused)
{
        r->paused = paused;
}

json_t *reconciler_plan(const reconciler *r)
{
        _cleanup_(json_decrefp) json_t *watches = json_array();
        uint64_t remaining = 0;

        if (!watches || !r->cfg || ledger_count_background(r->ledger, &remaining) < 0)
                return NULL;
        for (size_t i = 0; i < r->cfg->n_watches; i++) {
                const struct watch_config *w = &r->cfg->watches[i];
                json_t *vs = json_array();

                uint64_t gone = 0;

                for (size_t k = 0; k < r->n_gone; k++)
                        if (r->gone[k].watch == w)
                                gone = r->gone[k].n;
                if (!vs || json_array_append_new(
                                   watches, json_pack("{s:s, s:s, s:b, s:s, s:I, s:o}", "watch",
                                                      w->path, "pipeline", w->pipeline_name,
                                                      "reconcile", w->reconcile, "on_delete",
                                                      watch_on_delete_name(w->on_delete), "gone",
                                                      (json_int_t)gone, "variants", vs)) < 0)
                        return NULL;
                for (size_t k = 0; k < r->n_tallies; k++) {
                        const struct tally *t = &r->tallies[k];

                        if (t->watch != w)
                                continue;
                        if (json_array_append_new(
                                    vs,
                                    json_pack("{s:s, s:o, s:I, s:I, s:I, s:I}", "variant",
                                              t->variant, "recipe",
                                              t->recipe ? json_string(t->recipe) : json_null(),
                                              "current", (json_int_t)t->current, "missing",
                                              (json_int_t)t->missing, "stale", (json_int_t)t->stale,
                                              "removed", (json_int_t)t->removed)) < 0)
                                return NULL;
                }
        }
        return json_pack("{s:b, s:b, s:I, s:I, s:I, s:I, s:b, s:I, s:I, s:I, s:O}", "scanning",
                         r->scanning, "paused", r->paused, "scanned", (json_int_t)r->scanned,
                         "adopted", (json_int_t)r->adopted, "queued", (json_int_t)r->enqueued,
                         "remaining", (json_int_t)remaining, "retract_removed", r->drop_removed,
                         "dropped", (json_int_t)r->dropped, "deferred", (json_int_t)r->deferred,
                         "retracted", (json_int_t)r->retracted, "watches", watches);
}

uint64_t reconciler_remaining(reconciler *r)
{
        uint64_t n = 0;

        return ledger_count_background(r->ledger, &n) < 0 ? 0 : n;
}

json_t *reconciler_progress(reconciler *r)
{
        uint64_t remaining = 0, done = 0, now = mono_usec();
        double per_s = 0;
        json_t *eta = json_null();

        if (ledger_count_background(r->ledger, &remaining) < 0)
                return NULL;
        if (r->enqueued_total > remaining)
                done = r->enqueued_total - remaining;
        if (done > 0 && now > r->first_enqueued_usec)
                per_s = (double)done * (double)USEC_PER_SEC /
                        (double)(now - r->first_enqueued_usec);
        if (per_s > 0)
                eta = json_integer((json_int_t)((double)remaining / per_s + 0.5));
        return json_pack("{s:b, s:b, s:I, s:I, s:f, s:o}", "scanning", r->scanning, "paused",
                         r->paused, "remaining", (json_int_t)remaining, "done", (json_int_t)done,
                         "per_s", per_s, "eta_s", eta);
}
