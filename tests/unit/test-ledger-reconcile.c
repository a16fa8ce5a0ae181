/* SPDX-License-Identifier: MIT */
/*
 * test-ledger-reconcile.c - what reconciliation (issue 17) asks of the ledger, on real SQLite
 * files: claims in priority order (live, then retries, then background) and the ceiling a
 * claim may be given; a reconciliation job queued for a current done job only, carrying its
 * other outputs over when done; a failed one leaves the done job current; a new upload
 * supersedes a queued one; the done job is not pruned while its reconciliation runs; recipes
 * adopted for outputs without one; the scan sees current done jobs only.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "daemon/ledger.h"
#include "shared/macro.h"

#include "ledger-fixture.h"

/* A done job of path with outputs s and m (recipes "1111..." and "2222..."). */
static int64_t done_job(struct ledfx *f, const char *path, const char *key, unsigned content,
                        int64_t now)
{
        struct job_output outs[2] = {
                { .variant = "s",
                  .path = "/m/x_s.webp",
                  .format = "webp",
                  .width = 1,
                  .height = 1,
                  .bytes = 10,
                  .recipe = "1111111111111111" },
                { .variant = "m",
                  .path = "/m/x_m.jpg",
                  .format = "jpeg",
                  .width = 2,
                  .height = 2,
                  .bytes = 20,
                  .recipe = "2222222222222222" },
        };
        int64_t id = ledfx_enqueue(f->l, path, key, content, now);

        snprintf(outs[0].sha256, sizeof outs[0].sha256, "%064x", 0xa0 + content);
        snprintf(outs[1].sha256, sizeof outs[1].sha256, "%064x", 0xb0 + content);
        assert_int_equal(ledfx_claim(f->l, now), id);
        assert_int_equal(ledger_complete(f->l, id, ledfx_fence_of(f->l, id), outs, 2, now + 1), 0);
        return id;
}

static const struct job_output *output_of(const struct job_detail *d, const char *variant)
{
        for (size_t i = 0; i < d->n_outputs; i++)
                if (strcmp(d->outputs[i].variant, variant) == 0)
                        return &d->outputs[i];
        return NULL;
}

/* The ids of the current done jobs. */
static size_t scan_ids(struct ledfx *f, int64_t *ids, size_t max)
{
        struct ledger_done_source *v = NULL;
        size_t n = 0;

        assert_int_equal(ledger_scan_done(f->l, 0, INT64_MAX, &v, &n), 0);
        assert_true(n <= max);
        for (size_t i = 0; i < n; i++)
                ids[i] = v[i].id;
        ledger_done_sources_free(v, n);
        return n;
}

/* Live before retry before background, whatever waited longest; the ceiling holds. */
static void test_priority_order(void **state)
{
        struct ledfx *f = *state;
        int64_t done = done_job(f, "/u/a.jpg", "/m/a", 1, 100), bg, live, retried;
        struct job *j = NULL;

        assert_int_equal(ledger_reconcile(f->l, done, "[\"m\"]", 200, &bg), 1);
        retried = ledfx_enqueue(f->l, "/u/r.jpg", "/m/r", 2, 300);
        assert_int_equal(ledfx_claim(f->l, 300), retried);
        assert_int_equal(ledger_fail(f->l, retried, ledfx_fence_of(f->l, retried), "transient",
                                     true, 400, 400),
                         0);
        live = ledfx_enqueue(f->l, "/u/l.jpg", "/m/l", 3, 500);

        /* Background work is not taken under a ceiling of retries. */
        assert_int_equal(ledger_claim(f->l, "w", 600, LEDFX_LEASE_US, JOB_PRIORITY_RETRY, &j), 1);
        assert_int_equal(j->id, live);
        assert_int_equal(j->priority, JOB_PRIORITY_LIVE);
        j = job_free(j);
        assert_int_equal(ledger_claim(f->l, "w", 600, LEDFX_LEASE_US, JOB_PRIORITY_RETRY, &j), 1);
        assert_int_equal(j->id, retried);
        assert_int_equal(j->priority, JOB_PRIORITY_RETRY);
        j = job_free(j);
        assert_int_equal(ledger_claim(f->l, "w", 600, LEDFX_LEASE_US, JOB_PRIORITY_RETRY, &j), 0);
        assert_int_equal(ledger_claim(f->l, "w", 600, LEDFX_LEASE_US, JOB_PRIORITY_BACKGROUND, &j),
                         1);
        assert_int_equal(j->id, bg);
        assert_int_equal(j->priority, JOB_PRIORITY_BACKGROUND);
        assert_string_equal(j->redo, "[\"m\"]");
        j = job_free(j);
}

/* Done: the rendered variant replaced, the other carried over unchanged; the old job is no
 * longer current, and is pruned only then. */
static void test_carry_and_prune(void **state)
{
        struct ledfx *f = *state;
        int64_t done = done_job(f, "/u/a.jpg", "/m/a", 1, 100), bg, ids[4];
        struct job_output m = { .variant = "m",
                                .path = "/m/x_m.jpg",
                                .format = "jpeg",
                                .width = 2,
                                .height = 2,
                                .bytes = 21,
                                .tmp_path = "/m/.t",
                                .recipe = "3333333333333333" };
        struct job_output *carried = NULL;
        struct job_detail *d;
        size_t n = 0;

        snprintf(m.sha256, sizeof m.sha256, "%064x", 0xc0);
        assert_int_equal(ledger_reconcile(f->l, done, "[\"m\"]", 200, &bg), 1);
        /* Only one reconciliation per current done job: it is not current while one is queued. */
        assert_int_equal(ledger_reconcile(f->l, done, "[\"m\"]", 210, NULL), 0);
        assert_int_equal(scan_ids(f, ids, 4), 0);
        assert_int_equal(ledger_carried_outputs(f->l, bg, &carried, &n), 0);
        assert_int_equal(n, 2);
        job_outputs_free(carried, n);

        /* Pruning keeps the done job while its reconciliation is not done. */
        assert_int_equal(ledfx_prune_all(f->l, 1000000, 100), 0);
        assert_int_equal(ledfx_state_of(f->l, done), JOB_DONE);

        assert_int_equal(ledfx_claim(f->l, 300), bg);
        assert_int_equal(ledger_stage(f->l, bg, ledfx_fence_of(f->l, bg), &m, 1, false, NULL, 310),
                         0);
        assert_int_equal(ledger_complete(f->l, bg, ledfx_fence_of(f->l, bg), NULL, 0, 320), 0);
        d = ledfx_get(f->l, bg);
        assert_int_equal(d->job.state, JOB_DONE);
        assert_int_equal(d->n_outputs, 2);
        assert_string_equal(output_of(d, "m")->recipe, "3333333333333333");
        assert_string_equal(output_of(d, "m")->sha256, m.sha256);
        assert_null(output_of(d, "m")->tmp_path);
        assert_string_equal(output_of(d, "s")->recipe, "1111111111111111");
        job_detail_free(d);
        assert_int_equal(scan_ids(f, ids, 4), 1);
        assert_int_equal(ids[0], bg);

        /* Now the old one goes; the new one keeps both outputs. */
        assert_int_equal(ledfx_prune_all(f->l, 1000000, 100), 1);
        d = ledfx_get(f->l, bg);
        assert_int_equal(d->n_outputs, 2);
        job_detail_free(d);
}

/* A reconciliation that fails for good leaves the done job current (and reconcilable); a new
 * upload of the path supersedes a queued one. */
static void test_failed_and_superseded(void **state)
{
        struct ledfx *f = *state;
        int64_t done = done_job(f, "/u/a.jpg", "/m/a", 1, 100), bg, bg2, ids[4];

        assert_int_equal(ledger_reconcile(f->l, done, "[\"m\"]", 200, &bg), 1);
        assert_int_equal(ledfx_claim(f->l, 300), bg);
        assert_int_equal(ledger_fail(f->l, bg, ledfx_fence_of(f->l, bg), "broken", false, 0, 310),
                         0);
        assert_int_equal(ledfx_state_of(f->l, bg), JOB_DEAD);
        assert_int_equal(scan_ids(f, ids, 4), 1);
        assert_int_equal(ids[0], done);
        assert_int_equal(ledfx_prune_all(f->l, 1000000, 100), 0);

        assert_int_equal(ledger_reconcile(f->l, done, "[\"m\"]", 400, &bg2), 1);
        (void)ledfx_enqueue(f->l, "/u/a.jpg", "/m/a", 9, 500); /* new content */
        assert_int_equal(ledfx_state_of(f->l, bg2), JOB_CANCELLED);
        assert_int_equal(scan_ids(f, ids, 4), 0); /* the new content's job is not done */
}

/* Outputs without a recipe take the one given, once. */
static void test_adopt(void **state)
{
        struct ledfx *f = *state;
        int64_t id = done_job(f, "/u/a.jpg", "/m/a", 1, 100);
        struct ledger_done_source *v = NULL;
        size_t n = 0;

        ledfx_raw_exec(f, "UPDATE outputs SET recipe = NULL WHERE variant = 's'");
        ledfx_reopen(f);
        assert_int_equal(ledger_scan_done(f->l, 0, INT64_MAX, &v, &n), 0);
        assert_int_equal(n, 1);
        assert_int_equal(v[0].n_outputs, 2);
        for (size_t i = 0; i < 2; i++)
                if (strcmp(v[0].outputs[i].variant, "s") == 0)
                        assert_string_equal(v[0].outputs[i].recipe, "");
        ledger_done_sources_free(v, n);
        assert_int_equal(ledger_adopt_recipe(f->l, id, "s", "4444444444444444"), 1);
        assert_int_equal(ledger_adopt_recipe(f->l, id, "s", "5555555555555555"), 0);
        assert_int_equal(ledger_adopt_recipe(f->l, id, "m", "5555555555555555"), 0);
        assert_int_equal(ledfx_raw_int(f, "SELECT count(*) FROM outputs WHERE recipe = "
                                          "'4444444444444444'"),
                         1);
}

int main(void)
{
#define T(t) cmocka_unit_test_setup_teardown(t, ledfx_setup, ledfx_teardown)
        const struct CMUnitTest tests[] = {
                T(test_priority_order),
                T(test_carry_and_prune),
                T(test_failed_and_superseded),
                T(test_adopt),
        };

        return ledfx_run("ledger-reconcile", tests, ELEMENTSOF(tests), NULL, 0);
}
