/* SPDX-License-Identifier: MIT */
/*
 * test-ledger-retract.c - what retraction (issue 17) asks of the ledger, on real SQLite files:
 * a retraction is queued (live) for a published path, cancels the path's queued work,
 * supersedes a render running for it, and once done leaves nothing of the path published
 * (not current for the pass, owning no output names, not "known" to a scan of the same file
 * come back); nothing published and nothing running: the queued work is cancelled and no job
 * made; a move is queued only for the same file (inode, size, mtime) from the old path's
 * newest job, completes with the old path retracted, but not over a newer job of the old
 * path; a move that cannot be made becomes a render and retracts the old path; a drop only
 * from the current done job, keeping the other outputs.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "daemon/ledger.h"
#include "shared/macro.h"

#include "ledger-fixture.h"

/* A done job of path with outputs s and m under key. */
static int64_t done_job(struct ledfx *f, const char *path, const char *key, unsigned content,
                        int64_t now)
{
        char s_path[256], m_path[256];
        struct job_output outs[2] = {
                { .variant = "s", .path = s_path, .format = "webp", .width = 1, .height = 1 },
                { .variant = "m", .path = m_path, .format = "jpeg", .width = 2, .height = 2 },
        };
        int64_t id = ledfx_enqueue(f->l, path, key, content, now);

        snprintf(s_path, sizeof s_path, "%s_s.webp", key);
        snprintf(m_path, sizeof m_path, "%s_m.jpg", key);
        snprintf(outs[0].sha256, sizeof outs[0].sha256, "%064x", 0xa0 + content);
        snprintf(outs[1].sha256, sizeof outs[1].sha256, "%064x", 0xb0 + content);
        assert_int_equal(ledfx_claim(f->l, now), id);
        assert_int_equal(ledger_complete(f->l, id, ledfx_fence_of(f->l, id), outs, 2, now + 1), 0);
        return id;
}

static size_t scan_count(struct ledfx *f)
{
        struct ledger_done_source *v = NULL;
        size_t n = 0;

        assert_int_equal(ledger_scan_done(f->l, 0, INT64_MAX, &v, &n), 0);
        ledger_done_sources_free(v, n);
        return n;
}

/* Claims the next job, asserted to be `id` of `kind`; returns it (caller frees). */
static struct job *claim_kind(struct ledfx *f, int64_t id, enum job_kind kind, int64_t now)
{
        struct job *j = NULL;

        assert_int_equal(ledger_claim(f->l, "t", now, LEDFX_LEASE_US, JOB_PRIORITY_BACKGROUND, &j),
                         1);
        assert_int_equal(j->id, id);
        assert_int_equal(j->kind, kind);
        return j;
}

static void test_retract(void **state)
{
        struct ledfx *f = *state;
        int64_t done = done_job(f, "/u/a.jpg", "/m/a", 1, 100), re, queued, rid = 0;
        struct source_info src = ledfx_src_make("/u/a.jpg", "/m/a", 1);
        struct job_detail *d = NULL;
        struct job *j;
        char *owner = NULL;

        /* Newer content queued for the path: cancelled, the published outputs retracted. */
        queued = ledfx_enqueue(f->l, "/u/a.jpg", "/m/a", 2, 200);
        assert_int_equal(ledger_retract(f->l, "/u/a.jpg", 300, &rid), 1);
        assert_true(rid > queued);
        assert_int_equal(ledfx_state_of(f->l, queued), JOB_CANCELLED);
        /* Asked twice: one retraction. */
        assert_int_equal(ledger_retract(f->l, "/u/a.jpg", 301, NULL), 0);

        j = claim_kind(f, rid, JOB_RETRACT, 400);
        assert_int_equal(j->priority, JOB_PRIORITY_LIVE);
        assert_int_equal(ledger_origin(f->l, rid, &d), 1);
        assert_int_equal(d->job.id, done);
        assert_int_equal(d->n_outputs, 2);
        d = job_detail_free(d);
        job_free(j);
        assert_int_equal(
                ledger_complete_retract(f->l, rid, ledfx_fence_of(f->l, rid), NULL, 0, 500), 0);

        /* Nothing of the path is published any more. */
        assert_int_equal(scan_count(f), 0);
        assert_int_equal(ledger_output_owner(f->l, "/m/a", "/u/other.jpg", &owner), 0);
        assert_int_equal(ledger_retract(f->l, "/u/a.jpg", 600, NULL), 0);
        /* The same file back (same stat, same content): not known, a new job. */
        assert_int_equal(ledger_known_stat(f->l, "/u/a.jpg", src.size, src.mtime_ns, src.ino), 0);
        assert_int_equal(ledger_enqueue(f->l, &src, 700, &re), 1);
        assert_true(re > rid);
        ledfx_assert_counts_real(f);
}

static void test_retract_nothing_published(void **state)
{
        struct ledfx *f = *state;
        int64_t queued = ledfx_enqueue(f->l, "/u/b.jpg", "/m/b", 1, 100), running, rid = 0;
        struct job *j = NULL;

        /* Queued only: cancelled, no retraction. */
        assert_int_equal(ledger_retract(f->l, "/u/b.jpg", 200, &rid), 0);
        assert_int_equal(ledfx_state_of(f->l, queued), JOB_CANCELLED);
        assert_int_equal(rid, 0);

        /* Running: a retraction supersedes it (it will not publish). */
        running = ledfx_enqueue(f->l, "/u/c.jpg", "/m/c", 1, 300);
        assert_int_equal(ledfx_claim(f->l, 300), running);
        assert_int_equal(ledger_retract(f->l, "/u/c.jpg", 400, &rid), 1);
        assert_int_equal(ledger_superseded(f->l, running), 1);
        assert_int_equal(ledger_cancel(f->l, running, "superseded", 500), 0);
        j = claim_kind(f, rid, JOB_RETRACT, 600);
        job_free(j);
        assert_int_equal(ledger_origin(f->l, rid, &(struct job_detail *){ NULL }), 0);
        assert_int_equal(
                ledger_complete_retract(f->l, rid, ledfx_fence_of(f->l, rid), NULL, 0, 700), 0);
        assert_int_equal(scan_count(f), 0);
}

static void test_move(void **state)
{
        struct ledfx *f = *state;
        int64_t done = done_job(f, "/u/a.jpg", "/m/a", 1, 100), mid = 0;
        struct source_info same = ledfx_src_make("/u/b.jpg", "/m/b", 1);
        struct source_info other = ledfx_src_make("/u/b.jpg", "/m/b", 7);
        struct job_detail *d = NULL;
        struct job_output outs[2] = {};
        struct job *j;

        /* Not the same file: no move. */
        assert_int_equal(ledger_move(f->l, "/u/a.jpg", &other, 200, &mid), 0);
        assert_int_equal(ledger_move(f->l, "/u/none.jpg", &same, 200, &mid), 0);
        /* The same file (its stat): a move job of the new path, with the old content. */
        memset(same.sha256, 0, sizeof same.sha256);
        assert_int_equal(ledger_move(f->l, "/u/a.jpg", &same, 200, &mid), 1);
        j = claim_kind(f, mid, JOB_MOVE, 300);
        assert_string_equal(j->source_path, "/u/b.jpg");
        assert_int_equal(j->origin, done);
        job_free(j);
        assert_int_equal(ledger_origin(f->l, mid, &d), 1);
        assert_int_equal(d->job.id, done);
        for (size_t i = 0; i < 2; i++) {
                outs[i] = d->outputs[i];
                outs[i].path = i == 0 ? "/m/b_s.webp" : "/m/b_m.jpg";
                outs[i].tmp_path = NULL;
        }
        assert_int_equal(
                ledger_complete_retract(f->l, mid, ledfx_fence_of(f->l, mid), outs, 2, 400), 0);
        d = job_detail_free(d);

        /* The new path is current with the outputs; the old one is retracted. */
        assert_int_equal(scan_count(f), 1);
        assert_int_equal(ledfx_raw_int(f, "SELECT count(*) FROM jobs WHERE source_path = "
                                          "'/u/a.jpg' AND kind = 'retract' AND state = 'done'"),
                         1);
        d = ledfx_get(f->l, mid);
        assert_int_equal(d->n_outputs, 2);
        {
                struct job_detail *o = ledfx_get(f->l, done);

                assert_string_equal(d->job.sha256, o->job.sha256);
                job_detail_free(o);
        }
        job_detail_free(d);
        ledfx_assert_counts_real(f);
}

static void test_move_over_newer_and_to_render(void **state)
{
        struct ledfx *f = *state;
        int64_t mid = 0, newer, m2 = 0;
        struct source_info same = ledfx_src_make("/u/b.jpg", "/m/b", 1);
        struct job_detail *d = NULL;
        struct job *j;

        done_job(f, "/u/a.jpg", "/m/a", 1, 100);
        done_job(f, "/u/c.jpg", "/m/c", 3, 150);
        assert_int_equal(ledger_move(f->l, "/u/a.jpg", &same, 200, &mid), 1);
        /* A new file at the old path meanwhile: the move does not retract it. */
        newer = ledfx_enqueue(f->l, "/u/a.jpg", "/m/a", 5, 250);
        j = claim_kind(f, mid, JOB_MOVE, 300);
        job_free(j);
        assert_int_equal(ledger_origin(f->l, mid, &d), 1);
        assert_int_equal(ledger_complete_retract(f->l, mid, ledfx_fence_of(f->l, mid), d->outputs,
                                                 d->n_outputs, 400),
                         0);
        d = job_detail_free(d);
        assert_int_equal(ledfx_state_of(f->l, newer), JOB_QUEUED);
        assert_int_equal(ledger_superseded(f->l, newer), 0);

        /* A move that cannot be made: a render of the new path, the old one retracted. */
        same = ledfx_src_make("/u/d.jpg", "/m/d", 3);
        assert_int_equal(ledger_move(f->l, "/u/c.jpg", &same, 600, &m2), 1);
        assert_int_equal(ledfx_claim(f->l, 700), newer); /* live, older */
        j = claim_kind(f, m2, JOB_MOVE, 700);
        job_free(j);
        assert_int_equal(ledger_move_to_render(f->l, m2, ledfx_fence_of(f->l, m2), 800), 0);
        assert_int_equal(ledger_move_to_render(f->l, m2, ledfx_fence_of(f->l, m2), 800), -ESTALE);
        d = ledfx_get(f->l, m2);
        assert_int_equal(d->job.state, JOB_QUEUED);
        assert_int_equal(d->job.kind, JOB_RENDER);
        assert_int_equal(d->job.attempts, 0);
        job_detail_free(d);
        assert_int_equal(ledfx_raw_int(f, "SELECT count(*) FROM jobs WHERE source_path = "
                                          "'/u/c.jpg' AND kind = 'retract' AND state = 'queued'"),
                         1);
        ledfx_assert_counts_real(f);
}

static void test_drop(void **state)
{
        struct ledfx *f = *state;
        int64_t done = done_job(f, "/u/a.jpg", "/m/a", 1, 100), did = 0, rid = 0;
        struct job_detail *d = NULL;
        struct job *j;

        /* Only from the current done job. */
        assert_int_equal(ledger_reconcile(f->l, done, "[\"s\"]", 150, &rid), 1);
        assert_int_equal(ledger_drop(f->l, done, "[\"m\"]", 160, &did), 0);
        assert_int_equal(ledger_cancel(f->l, rid, "test", 170), 0);
        assert_int_equal(ledger_drop(f->l, done, "[\"m\"]", 200, &did), 1);
        j = claim_kind(f, did, JOB_DROP, 300);
        assert_int_equal(j->priority, JOB_PRIORITY_BACKGROUND);
        assert_string_equal(j->redo, "[\"m\"]");
        job_free(j);
        assert_int_equal(ledger_origin(f->l, did, &d), 1);
        assert_int_equal(d->job.id, done);
        /* Kept: s only. */
        for (size_t i = 0; i < d->n_outputs; i++)
                if (strcmp(d->outputs[i].variant, "s") == 0)
                        assert_int_equal(ledger_complete_retract(f->l, did,
                                                                 ledfx_fence_of(f->l, did),
                                                                 &d->outputs[i], 1, 400),
                                         0);
        job_detail_free(d);
        d = ledfx_get(f->l, did);
        assert_int_equal(d->job.state, JOB_DONE);
        assert_int_equal(d->n_outputs, 1);
        assert_string_equal(d->outputs[0].variant, "s");
        job_detail_free(d);
        assert_int_equal(scan_count(f), 1);
        ledfx_assert_counts_real(f);
}

static void test_paths_below(void **state)
{
        struct ledfx *f = *state;
        char **v = NULL;
        size_t n = 0;

        ledfx_enqueue(f->l, "/u/d/x.jpg", "/m/d/x", 1, 100);
        ledfx_enqueue(f->l, "/u/d/e/y.jpg", "/m/d/e/y", 2, 100);
        ledfx_enqueue(f->l, "/u/d0.jpg", "/m/d0", 3, 100);
        ledfx_enqueue(f->l, "/u/dd/z.jpg", "/m/dd/z", 4, 100);
        assert_int_equal(ledger_paths_below(f->l, "/u/d", &v, &n), 0);
        assert_int_equal(n, 2);
        assert_string_equal(v[0], "/u/d/e/y.jpg");
        assert_string_equal(v[1], "/u/d/x.jpg");
        for (size_t i = 0; i < n; i++)
                free(v[i]);
        free(v);
}

int main(void)
{
#define T(t) cmocka_unit_test_setup_teardown(t, ledfx_setup, ledfx_teardown)
        const struct CMUnitTest tests[] = {
                T(test_retract), T(test_retract_nothing_published),
                T(test_move),    T(test_move_over_newer_and_to_render),
                T(test_drop),    T(test_paths_below),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
