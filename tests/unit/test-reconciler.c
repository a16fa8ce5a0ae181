/* SPDX-License-Identifier: MIT */
/*
 * test-reconciler.c - the reconciliation pass (daemon/reconcile.c) on real SQLite ledgers and
 * real sd-event loops: two passes over 20,000 done sources each, side by side, one with live
 * work about (reconciler_set_live_fn()), one without. While the second looks at all of them,
 * the first takes short turns spaced out and looks at a small fraction, but goes on; once
 * the live work is gone it finishes, and each has queued a reconciliation job for every
 * source (a variant none of them has). Relative, so that a slow build (the sanitizers) holds
 * it as well.
 */
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/reconcile.h"
#include "ledger-fixture.h"
#include "shared/time-util.h"

#define SOURCES 20000

/* One ledger of SOURCES done sources, its loop and its reconciler. */
struct side {
        struct ledfx *lf;
        sd_event *e;
        reconciler *r;
        bool live;
        unsigned asked; /* times the live function was asked */
};

struct fixture {
        struct side live, idle;
        struct variant variant;
        struct pipeline pipeline;
        struct watch_config watch;
        struct config cfg;
};

static bool is_live(void *userdata)
{
        struct side *s = userdata;

        s->asked++;
        return s->live;
}

static void queued(void *userdata)
{
        (void)userdata;
}

static void side_setup(struct side *s, bool live)
{
        ledfx_setup((void **)&s->lf);
        ledfx_raw_bulk_done(s->lf, SOURCES);
        s->live = live;
        assert_int_equal(sd_event_new(&s->e), 0);
        assert_int_equal(reconciler_new(s->e, s->lf->l, queued, s, &s->r), 0);
        reconciler_set_live_fn(s->r, is_live);
}

static void side_teardown(struct side *s)
{
        reconciler_free(s->r);
        sd_event_unref(s->e);
        ledfx_teardown((void **)&s->lf);
}

static int setup(void **state)
{
        struct fixture *f = calloc(1, sizeof *f);

        assert_non_null(f);
        /* The sources' watch ("bulk", ledfx_raw_bulk_done()) with a pipeline of one variant. */
        strcpy(f->variant.name, "thumb");
        strcpy(f->variant.recipe, "0123456789abcdef");
        f->pipeline = (struct pipeline){ .name = "p", .variants = &f->variant, .n_variants = 1 };
        f->watch = (struct watch_config){
                .path = "bulk", .pipeline_name = "p", .pipeline = &f->pipeline, .reconcile = true
        };
        f->cfg.watches = &f->watch;
        f->cfg.n_watches = 1;
        side_setup(&f->live, true);
        side_setup(&f->idle, false);
        *state = f;
        return 0;
}

static int teardown(void **state)
{
        struct fixture *f = *state;

        side_teardown(&f->live);
        side_teardown(&f->idle);
        free(f);
        return 0;
}

static json_t *plan_get(reconciler *r, const char *key)
{
        json_t *plan = reconciler_plan(r), *v;

        assert_non_null(plan);
        v = json_incref(json_object_get(plan, key));
        json_decref(plan);
        assert_non_null(v);
        return v;
}

static int64_t plan_int(reconciler *r, const char *key)
{
        json_t *v = plan_get(r, key);
        int64_t n = json_integer_value(v);

        json_decref(v);
        return n;
}

static bool scanning(reconciler *r)
{
        json_t *v = plan_get(r, "scanning");
        bool b = json_is_true(v);

        json_decref(v);
        return b;
}

/* Runs both loops, in turns, until `until`'s pass is over (or usec have passed). */
static void run_until_done(struct fixture *f, struct side *until, uint64_t usec)
{
        uint64_t end = mono_usec() + usec;
        struct side *sides[] = { &f->live, &f->idle };

        while (mono_usec() < end && scanning(until->r))
                for (size_t i = 0; i < ELEMENTSOF(sides); i++)
                        if (scanning(sides[i]->r))
                                assert_true(sd_event_run(sides[i]->e, 1000) >= 0);
}

static void test_yields_to_live_work(void **state)
{
        struct fixture *f = *state;
        uint64_t t0 = mono_usec();
        int64_t live;

        reconciler_start(f->live.r, &f->cfg);
        reconciler_start(f->idle.r, &f->cfg);
        run_until_done(f, &f->idle, 300 * USEC_PER_SEC);
        assert_false(scanning(f->idle.r));
        live = plan_int(f->live.r, "scanned");
        print_message("while the pass without live work looked at all %d sources (%.0f ms), the "
                      "one with live work about looked at %" PRId64 "\n",
                      SOURCES, (double)(mono_usec() - t0) / (double)USEC_PER_MSEC, live);
        /* Turns of about 2 ms, 50 ms apart, against turns of about 20 ms back to back. */
        assert_true(scanning(f->live.r));
        assert_true(live > 0);
        assert_true(live * 3 < SOURCES);
        assert_true(f->live.asked >= 3);

        /* Live work gone: the pass finishes. Both queued a job for every source. */
        f->live.live = false;
        run_until_done(f, &f->live, 300 * USEC_PER_SEC);
        assert_false(scanning(f->live.r));
        assert_int_equal(plan_int(f->live.r, "scanned"), SOURCES);
        assert_int_equal(plan_int(f->live.r, "queued"), SOURCES);
        assert_int_equal(plan_int(f->idle.r, "queued"), SOURCES);
        assert_int_equal(
                ledfx_raw_int(f->live.lf, "SELECT count(*) FROM jobs WHERE state = 'queued'"),
                SOURCES);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test_setup_teardown(test_yields_to_live_work, setup, teardown),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
