/* SPDX-License-Identifier: MIT */
/*
 * test-ledger-claim.c - the worker side of the job ledger on real SQLite files: claim
 * order, fields and attempts, output key exclusion, many done rows; failures, retries and the
 * error history; the "verified" stage checkpoint, expired leases, degraded re-renders; complete
 * with outputs, atomically; stale transitions of jobs not running; recovery and release.
 * Tests look at the stored values (through ledger_get() or a second SQLite connection), not
 * only at return codes; the shared helpers are in tests/tools/ledger-fixture.h.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sqlite3.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "daemon/ledger.h"
#include "shared/macro.h"

#include "ledger-fixture.h"

/* Claiming */

static void test_claim_fields_and_attempts(void **state)
{
        struct ledfx *f = *state;
        struct source_info s = ledfx_src_make("/srv/uploads/a.jpg", "/srv/media/a", 3);
        struct job *j = NULL;
        int64_t id;

        assert_int_equal(ledger_enqueue(f->l, &s, 1000, &id), 1);
        assert_int_equal(
                ledger_claim(f->l, "w1", 1500, LEDFX_LEASE_US, JOB_PRIORITY_BACKGROUND, &j), 1);
        assert_int_equal(j->id, id);
        assert_string_equal(j->watch, s.watch);
        assert_string_equal(j->source_path, s.path);
        assert_string_equal(j->output_key, s.output_key);
        assert_string_equal(j->pipeline, s.pipeline);
        assert_string_equal(j->sha256, s.sha256);
        assert_int_equal(j->size, s.size);
        assert_int_equal(j->mtime_ns, s.mtime_ns);
        assert_int_equal(j->ino, s.ino);
        assert_int_equal(j->state, JOB_RUNNING);
        assert_int_equal(j->attempts, 1);
        assert_int_equal(j->created_usec, 1000);
        assert_int_equal(j->updated_usec, 1500);
        assert_null(j->last_error);
        j = job_free(j);
        assert_null(j);

        if (f->engine == LEDGER_ENGINE_POSTGRESQL) {
                /* The database's clock decides the lease (ledger.h), not the caller's now. */
                int64_t now = ledfx_raw_int(f, "SELECT " LEDFX_PG_NOW_US);

                assert_in_range(ledfx_raw_int(f, "SELECT lease_expires_us FROM jobs"),
                                now - 60 * 1000000LL + LEDFX_LEASE_US, now + LEDFX_LEASE_US);
        } else {
                assert_int_equal(ledfx_raw_int(f, "SELECT lease_expires_us FROM jobs"),
                                 1500 + LEDFX_LEASE_US);
        }
        assert_int_equal(ledfx_raw_int(f, "SELECT lease_owner = 'w1' FROM jobs"), 1);

        /* Nothing else to claim. */
        ledfx_assert_no_claim(f->l, 1600);

        assert_int_equal(ledger_fail(f->l, id, ledfx_fence_of(f->l, id), "oops", true, 2000, 1700),
                         0);
        assert_int_equal(
                ledger_claim(f->l, "w2", 2000, LEDFX_LEASE_US, JOB_PRIORITY_BACKGROUND, &j), 1);
        assert_int_equal(j->attempts, 2);
        assert_string_equal(j->last_error, "oops");
        job_free(j);
}

static void test_claim_order_and_next_at(void **state)
{
        struct ledfx *f = *state;
        int64_t a, b, c, due = 0;

        assert_int_equal(ledger_next_due(f->l, &due), 0);
        a = ledfx_enqueue(f->l, "/u/a.jpg", "/m/a", 1, 1000);
        b = ledfx_enqueue(f->l, "/u/b.jpg", "/m/b", 2, 2000);
        c = ledfx_enqueue(f->l, "/u/c.jpg", "/m/c", 3, 2000);
        assert_int_equal(ledger_next_due(f->l, &due), 1);
        assert_int_equal(due, 1000);

        /* Not before its next_at. */
        ledfx_assert_no_claim(f->l, 999);
        assert_int_equal(ledfx_claim(f->l, 1000), a);
        ledfx_assert_no_claim(f->l, 1999);

        /* a fails and is due again at 5000, after b and c (same next_at: lower id first). */
        assert_int_equal(ledger_fail(f->l, a, ledfx_fence_of(f->l, a), "e", true, 5000, 1100), 0);
        assert_int_equal(ledger_next_due(f->l, &due), 1);
        assert_int_equal(due, 2000);
        assert_int_equal(ledfx_claim(f->l, 4000), b);
        assert_int_equal(ledfx_claim(f->l, 4000), c);
        ledfx_assert_no_claim(f->l, 4999);
        assert_int_equal(ledger_next_due(f->l, &due), 1);
        assert_int_equal(due, 5000);
        assert_int_equal(ledfx_claim(f->l, 5000), a);
        assert_int_equal(ledger_next_due(f->l, &due), 0);
}

static void test_claim_prefers_earlier_next_at(void **state)
{
        struct ledfx *f = *state;
        int64_t a, b;

        a = ledfx_enqueue(f->l, "/u/a.jpg", "/m/a", 1, 1000);
        assert_int_equal(ledfx_claim(f->l, 1000), a);
        assert_int_equal(ledger_fail(f->l, a, ledfx_fence_of(f->l, a), "e", true, 3000, 1100), 0);
        b = ledfx_enqueue(f->l, "/u/b.jpg", "/m/b", 2, 2000);
        assert_true(b > a);
        /* Both due at 4000: b (next_at 2000) has waited longer than a (3000). */
        assert_int_equal(ledfx_claim(f->l, 4000), b);
        assert_int_equal(ledfx_claim(f->l, 4000), a);
}

static void test_claim_excludes_running_output_key(void **state)
{
        struct ledfx *f = *state;
        int64_t jpg, png, other;

        jpg = ledfx_enqueue(f->l, "/u/a.jpg", "/m/a", 1, 1000);
        png = ledfx_enqueue(f->l, "/u/a.png", "/m/a", 2, 1001);
        other = ledfx_enqueue(f->l, "/u/b.jpg", "/m/b", 3, 1002);

        assert_int_equal(ledfx_claim(f->l, 2000), jpg);
        /* png waits for jpg: its output key is busy, so the later job goes first. */
        assert_int_equal(ledfx_claim(f->l, 2000), other);
        ledfx_assert_no_claim(f->l, 2000);
        assert_int_equal(ledfx_state_of(f->l, png), JOB_QUEUED);

        assert_int_equal(ledger_complete(f->l, jpg, ledfx_fence_of(f->l, jpg), NULL, 0, 2100), 0);
        assert_int_equal(ledfx_claim(f->l, 2200), png);
}

static void test_claim_with_many_done(void **state)
{
        struct ledfx *f = *state;
        int64_t id, due;

        ledfx_raw_bulk_done(f, 20000);
        id = ledfx_enqueue(f->l, "/u/new.jpg", "/m/new", 1, 5000);

        assert_int_equal(ledfx_claim(f->l, 5000), id);
        for (unsigned i = 0; i < 500; i++) {
                ledfx_assert_no_claim(f->l, 6000 + i);
                assert_int_equal(ledger_next_due(f->l, &due), 0);
        }
        /* Timing belongs to scripts/bench-ledger.sh; here: correct with many done rows. */
        assert_int_equal(ledfx_raw_int(f, "SELECT count(*) FROM jobs WHERE state = 'done'"), 20000);
}

/* Transitions */

static void test_fail_retry_then_dead(void **state)
{
        struct ledfx *f = *state;
        struct job_detail *d;
        int64_t id;

        id = ledfx_enqueue(f->l, "/u/a.jpg", "/m/a", 1, 1000);
        assert_int_equal(ledfx_claim(f->l, 1000), id);
        assert_int_equal(
                ledger_fail(f->l, id, ledfx_fence_of(f->l, id), "decode failed", true, 3000, 1500),
                0);
        d = ledfx_get(f->l, id);
        assert_int_equal(d->job.state, JOB_RETRY);
        assert_int_equal(d->job.next_at_usec, 3000);
        assert_int_equal(d->job.updated_usec, 1500);
        assert_string_equal(d->job.last_error, "decode failed");
        job_detail_free(d);

        assert_int_equal(ledfx_claim(f->l, 3000), id);
        assert_int_equal(ledger_fail(f->l, id, ledfx_fence_of(f->l, id), "worker crashed", false,
                                     99999, 3500),
                         0);

        d = ledfx_get(f->l, id);
        assert_int_equal(d->job.state, JOB_DEAD);
        assert_int_equal(d->job.attempts, 2);
        assert_int_equal(d->job.next_at_usec, 3000); /* unchanged for dead */
        assert_string_equal(d->job.last_error, "worker crashed");
        assert_int_equal(d->n_errors, 2);
        assert_int_equal(d->errors[0].attempt, 1);
        assert_int_equal(d->errors[0].at_usec, 1500);
        assert_string_equal(d->errors[0].message, "decode failed");
        assert_int_equal(d->errors[1].attempt, 2);
        assert_int_equal(d->errors[1].at_usec, 3500);
        assert_string_equal(d->errors[1].message, "worker crashed");
        job_detail_free(d);
        assert_int_equal(ledfx_raw_int(f, "SELECT finished_us FROM jobs"), 3500);

        /* Dead is not claimable. */
        ledfx_assert_no_claim(f->l, 1000000);
}

static void test_fail_message_is_capped(void **state)
{
        struct ledfx *f = *state;
        struct job_detail *d;
        char *big = malloc(100000);
        int64_t id;

        assert_non_null(big);
        memset(big, 'x', 99999);
        big[99999] = '\0';
        /* A two-byte UTF-8 character straddling the cut. */
        big[4095] = (char)0xc3;
        big[4096] = (char)0xa9;
        id = ledfx_enqueue(f->l, "/u/a.jpg", "/m/a", 1, 1000);
        assert_int_equal(ledfx_claim(f->l, 1000), id);
        assert_int_equal(ledger_fail(f->l, id, ledfx_fence_of(f->l, id), big, false, 0, 1100), 0);
        d = ledfx_get(f->l, id);
        assert_int_equal(strlen(d->job.last_error), 4095);
        assert_int_equal(strlen(d->errors[0].message), 4095);
        job_detail_free(d);
        free(big);
}

/* Checkpoint "verified": staged outputs carry their temporary files, survive a restart
 * (recover leaves the job running), become the published outputs on complete, and are
 * forgotten when the job is handed back. */
static void test_stage_checkpoint(void **state)
{
        struct ledfx *f = *state;
        struct job_output outs[2] = {
                { .variant = "s",
                  .path = "/m/a_s.webp",
                  .format = "webp",
                  .width = 10,
                  .height = 10,
                  .bytes = 100,
                  .tmp_path = "/m/.imgd-1-0-aa.tmp",
                  .recipe = "0123456789abcdef" },
                { .variant = "l",
                  .path = "/m/a_l.webp",
                  .format = "webp",
                  .width = 40,
                  .height = 40,
                  .bytes = 400,
                  .tmp_path = "/m/.imgd-1-1-bb.tmp" },
        };
        int64_t id, other, *ids = NULL;
        struct job_detail *d;
        size_t n = 0;

        snprintf(outs[0].sha256, sizeof outs[0].sha256, "%064x", 7);
        snprintf(outs[1].sha256, sizeof outs[1].sha256, "%064x", 8);
        id = ledfx_enqueue(f->l, "/u/a.jpg", "/m/a", 1, 100);
        other = ledfx_enqueue(f->l, "/u/b.jpg", "/m/b", 2, 100);
        assert_int_equal(ledfx_claim(f->l, 200), id);
        assert_int_equal(ledfx_claim(f->l, 200), other);
        assert_int_equal(ledger_stage(f->l, id, ledfx_fence_of(f->l, id), outs, 2, false,
                                      "{\"placeholder\":{\"blurhash\":\"x\"}}", 300),
                         0);

        /* A crash: the verified job stays running, the merely claimed one is requeued. */
        ledfx_reopen(f);
        assert_int_equal(ledger_recover(f->l, 400), 1);
        assert_int_equal(ledfx_state_of(f->l, id), JOB_RUNNING);
        assert_int_equal(ledfx_state_of(f->l, other), JOB_QUEUED);
        assert_int_equal(ledfx_attempts_of(f->l, other), 1);
        assert_int_equal(ledger_list_staged(f->l, &ids, &n), 0);
        assert_int_equal(n, 1);
        assert_int_equal(ids[0], id);
        free(ids);
        d = ledfx_get(f->l, id);
        assert_int_equal(d->n_outputs, 2);
        assert_string_equal(d->job.info, "{\"placeholder\":{\"blurhash\":\"x\"}}");
        assert_string_equal(d->outputs[1].tmp_path, "/m/.imgd-1-1-bb.tmp");
        assert_string_equal(d->outputs[1].sha256, outs[1].sha256);
        /* Each output's recipe as staged; "" for one made without. */
        assert_string_equal(d->outputs[0].recipe, "0123456789abcdef");
        assert_string_equal(d->outputs[1].recipe, "");
        job_detail_free(d);

        /* Published: complete without outputs keeps the staged ones, minus their tmp files. */
        assert_int_equal(ledger_complete(f->l, id, ledfx_fence_of(f->l, id), NULL, 0, 500), 0);
        d = ledfx_get(f->l, id);
        assert_int_equal(d->job.state, JOB_DONE);
        assert_int_equal(d->n_outputs, 2);
        assert_null(d->outputs[0].tmp_path);
        assert_string_equal(d->outputs[0].path, "/m/a_s.webp");
        assert_string_equal(d->outputs[0].recipe, "0123456789abcdef");
        job_detail_free(d);
        assert_int_equal(ledger_list_staged(f->l, &ids, &n), 0);
        assert_int_equal(n, 0);
        free(ids);

        /* Handed back after staging: the staged outputs are forgotten. */
        assert_int_equal(ledfx_claim(f->l, 600), other);
        assert_int_equal(
                ledger_stage(f->l, other, ledfx_fence_of(f->l, other), outs, 1, false, NULL, 610),
                0);
        assert_int_equal(ledger_release(f->l, other, ledfx_fence_of(f->l, other), 620, 620), 0);
        d = ledfx_get(f->l, other);
        assert_int_equal(d->job.state, JOB_QUEUED);
        assert_int_equal(d->n_outputs, 0);
        job_detail_free(d);
        /* Staging a job that is not running is refused. */
        assert_int_equal(
                ledger_stage(f->l, other, ledfx_fence_of(f->l, other), outs, 1, false, NULL, 630),
                -ESTALE);
        /* A staged output without its temporary file is refused, and nothing changes. */
        assert_int_equal(ledfx_claim(f->l, 700), other);
        outs[0].tmp_path = NULL;
        assert_int_equal(
                ledger_stage(f->l, other, ledfx_fence_of(f->l, other), outs, 1, false, NULL, 710),
                -EINVAL);
        d = ledfx_get(f->l, other);
        assert_int_equal(d->n_outputs, 0);
        job_detail_free(d);
}

/* Leases: a running, unverified job whose lease passed is listed as expired. On PostgreSQL
 * the database's clock decides (ledger.h): a lease of a minute has not passed, one of 1 ms
 * has after 2 ms, whatever now the caller gives. */
static void test_expired_leases(void **state)
{
        struct ledfx *f = *state;
        int64_t id, *ids = NULL;
        struct job *j = NULL;
        size_t n = 0;

        if (f->engine == LEDGER_ENGINE_POSTGRESQL) {
                int64_t other = ledfx_enqueue(f->l, "/u/b.jpg", "/m/b", 2, 100);

                id = ledfx_enqueue(f->l, "/u/a.jpg", "/m/a", 1, 100);
                assert_int_equal(ledfx_claim(f->l, 200), other);
                assert_int_equal(ledger_claim(f->l, "w", 200, 1000, JOB_PRIORITY_BACKGROUND, &j),
                                 1);
                assert_int_equal(j->id, id);
                job_free(j);
                usleep(2000);
                assert_int_equal(ledger_list_expired(f->l, 0, &ids, &n), 0);
                assert_int_equal(n, 1);
                assert_int_equal(ids[0], id);
                free(ids);
                return;
        }
        id = ledfx_enqueue(f->l, "/u/a.jpg", "/m/a", 1, 100);
        assert_int_equal(ledfx_claim(f->l, 200), id);
        assert_int_equal(ledger_list_expired(f->l, 200 + LEDFX_LEASE_US - 1, &ids, &n), 0);
        assert_int_equal(n, 0);
        free(ids);
        assert_int_equal(ledger_list_expired(f->l, 200 + LEDFX_LEASE_US + 1, &ids, &n), 0);
        assert_int_equal(n, 1);
        assert_int_equal(ids[0], id);
        free(ids);
}

/* Degraded renders: marked while running, reset by the next claim; only the newest job of
 * a source goes back for a full-quality render, and only as many as asked. */
static void test_degraded_rerender(void **state)
{
        struct ledfx *f = *state;
        int64_t a, b, c, oldest;
        struct job_detail *d;

        a = ledfx_enqueue(f->l, "/u/a.jpg", "/m/a", 1, 100);
        b = ledfx_enqueue(f->l, "/u/b.jpg", "/m/b", 2, 110);
        assert_int_equal(ledger_oldest_queued(f->l, &oldest), 1);
        assert_int_equal(oldest, 100);
        assert_int_equal(ledfx_claim(f->l, 200), a);
        assert_int_equal(ledfx_claim(f->l, 200), b);
        assert_int_equal(ledger_oldest_queued(f->l, &oldest), 0);
        assert_int_equal(ledger_stage(f->l, a, ledfx_fence_of(f->l, a), NULL, 0, true, NULL, 250),
                         0);
        assert_int_equal(ledger_stage(f->l, b, ledfx_fence_of(f->l, b), NULL, 0, true, NULL, 250),
                         0);
        assert_int_equal(ledger_complete(f->l, a, ledfx_fence_of(f->l, a), NULL, 0, 300), 0);
        assert_int_equal(ledger_complete(f->l, b, ledfx_fence_of(f->l, b), NULL, 0, 300), 0);
        assert_int_equal(ledger_stage(f->l, a, ledfx_fence_of(f->l, a), NULL, 0, false, NULL, 310),
                         -ESTALE);
        /* b's source changed since: its degraded job is not the newest and stays done. */
        c = ledfx_enqueue(f->l, "/u/b.jpg", "/m/b", 3, 400);

        assert_int_equal(ledger_rerender_degraded(f->l, 500, 10), 1);
        d = ledfx_get(f->l, a);
        assert_int_equal(d->job.state, JOB_QUEUED);
        assert_int_equal(d->job.attempts, 0);
        assert_true(d->job.degraded);
        job_detail_free(d);
        assert_int_equal(ledfx_state_of(f->l, b), JOB_DONE);
        assert_int_equal(ledfx_state_of(f->l, c), JOB_QUEUED);
        /* Claimed again (after c, queued earlier): no longer marked; completed at full
         * quality: nothing to re-render. */
        assert_int_equal(ledfx_claim(f->l, 600), c);
        assert_int_equal(ledfx_claim(f->l, 600), a);
        d = ledfx_get(f->l, a);
        assert_false(d->job.degraded);
        job_detail_free(d);
        assert_int_equal(ledger_complete(f->l, a, ledfx_fence_of(f->l, a), NULL, 0, 700), 0);
        assert_int_equal(ledger_rerender_degraded(f->l, 800, 10), 0);
}

static void test_complete_outputs(void **state)
{
        struct ledfx *f = *state;
        struct job_output outs[2] = {
                { .variant = "small",
                  .path = "/m/a-small.webp",
                  .format = "webp",
                  .width = 100,
                  .height = 80,
                  .bytes = 1234 },
                { .variant = "large",
                  .path = "/m/a-large.jpg",
                  .format = "jpeg",
                  .width = 1000,
                  .height = 800,
                  .bytes = 98765 },
        };
        uint64_t counts[_JOB_STATE_MAX];
        struct job_detail *d;
        int64_t id;

        snprintf(outs[0].sha256, sizeof outs[0].sha256, "%064x", 0xaaa);
        snprintf(outs[1].sha256, sizeof outs[1].sha256, "%064x", 0xbbb);
        id = ledfx_enqueue(f->l, "/u/a.jpg", "/m/a", 1, 1000);

        /* Not running yet. */
        assert_int_equal(ledger_complete(f->l, id, ledfx_fence_of(f->l, id), outs, 2, 1100),
                         -ESTALE);
        assert_non_null(strstr(ledger_errmsg(f->l), "queued"));
        assert_int_equal(ledfx_raw_int(f, "SELECT count(*) FROM outputs"), 0);

        assert_int_equal(ledfx_claim(f->l, 1000), id);
        assert_int_equal(ledger_complete(f->l, id, ledfx_fence_of(f->l, id), outs, 2, 2000), 0);

        d = ledfx_get(f->l, id);
        assert_int_equal(d->job.state, JOB_DONE);
        assert_int_equal(d->job.updated_usec, 2000);
        assert_int_equal(d->n_outputs, 2);
        assert_string_equal(d->outputs[0].variant, "small");
        assert_string_equal(d->outputs[0].path, "/m/a-small.webp");
        assert_string_equal(d->outputs[0].format, "webp");
        assert_int_equal(d->outputs[0].width, 100);
        assert_int_equal(d->outputs[0].height, 80);
        assert_int_equal(d->outputs[0].bytes, 1234);
        assert_string_equal(d->outputs[0].sha256, outs[0].sha256);
        assert_string_equal(d->outputs[1].variant, "large");
        assert_string_equal(d->outputs[1].path, "/m/a-large.jpg");
        assert_string_equal(d->outputs[1].format, "jpeg");
        assert_int_equal(d->outputs[1].width, 1000);
        assert_int_equal(d->outputs[1].height, 800);
        assert_int_equal(d->outputs[1].bytes, 98765);
        assert_string_equal(d->outputs[1].sha256, outs[1].sha256);
        job_detail_free(d);
        assert_int_equal(ledfx_raw_int(f, "SELECT finished_us FROM jobs"), 2000);
        assert_int_equal(ledfx_raw_int(f, "SELECT lease_owner IS NULL FROM jobs"), 1);

        /* Finished: neither complete nor fail apply, and nothing changes. */
        assert_int_equal(ledger_complete(f->l, id, ledfx_fence_of(f->l, id), outs, 2, 3000),
                         -ESTALE);
        assert_int_equal(ledger_fail(f->l, id, ledfx_fence_of(f->l, id), "late", true, 0, 3000),
                         -ESTALE);
        assert_int_equal(ledger_release(f->l, id, ledfx_fence_of(f->l, id), 0, 3000), -ESTALE);
        assert_int_equal(ledger_complete(f->l, 9999, ledfx_fence_of(f->l, 9999), outs, 2, 3000),
                         -ENOENT);
        assert_int_equal(ledfx_raw_int(f, "SELECT count(*) FROM outputs"), 2);
        assert_int_equal(ledfx_raw_int(f, "SELECT count(*) FROM job_errors"), 0);
        assert_int_equal(ledfx_raw_int(f, "SELECT updated_us FROM jobs"), 2000);

        assert_int_equal(ledger_counts(f->l, counts), 0);
        assert_int_equal(counts[JOB_DONE], 1);
        assert_int_equal(counts[JOB_RUNNING], 0);
}

static void test_complete_is_atomic(void **state)
{
        struct ledfx *f = *state;
        struct job_output outs[2] = {
                { .variant = "small", .path = "/m/1", .format = "webp", .width = 1, .height = 1 },
                { .variant = "small", .path = "/m/2", .format = "webp", .width = 1, .height = 1 },
        };
        int64_t id;

        id = ledfx_enqueue(f->l, "/u/a.jpg", "/m/a", 1, 1000);
        assert_int_equal(ledfx_claim(f->l, 1000), id);
        /* The second output breaks the (job, variant) key: nothing is written. */
        assert_int_equal(ledger_complete(f->l, id, ledfx_fence_of(f->l, id), outs, 2, 2000),
                         -EEXIST);
        assert_true(strlen(ledger_errmsg(f->l)) > 0);
        assert_int_equal(ledfx_state_of(f->l, id), JOB_RUNNING);
        assert_int_equal(ledfx_raw_int(f, "SELECT count(*) FROM outputs"), 0);

        /* The ledger is usable after the rollback. */
        assert_int_equal(ledger_complete(f->l, id, ledfx_fence_of(f->l, id), outs, 1, 2000), 0);
        assert_int_equal(ledfx_state_of(f->l, id), JOB_DONE);
        assert_int_equal(ledfx_raw_int(f, "SELECT count(*) FROM outputs"), 1);
}

static void test_not_running_is_stale(void **state)
{
        struct ledfx *f = *state;
        struct job_detail *d;
        int64_t id;

        id = ledfx_enqueue(f->l, "/u/a.jpg", "/m/a", 1, 1000);
        assert_int_equal(ledger_fail(f->l, id, ledfx_fence_of(f->l, id), "x", true, 5, 1100),
                         -ESTALE);
        assert_int_equal(ledger_release(f->l, id, ledfx_fence_of(f->l, id), 5, 1100), -ESTALE);
        assert_int_equal(ledger_fail(f->l, 9999, ledfx_fence_of(f->l, 9999), "x", true, 5, 1100),
                         -ENOENT);
        assert_int_equal(ledger_release(f->l, 9999, ledfx_fence_of(f->l, 9999), 5, 1100), -ENOENT);
        d = ledfx_get(f->l, id);
        assert_int_equal(d->job.state, JOB_QUEUED);
        assert_int_equal(d->job.next_at_usec, 1000);
        assert_int_equal(d->job.updated_usec, 1000);
        assert_null(d->job.last_error);
        assert_int_equal(d->n_errors, 0);
        job_detail_free(d);
}

static unsigned attempts_of(ledger *l, int64_t id)
{
        struct job_detail *d = ledfx_get(l, id);
        unsigned n = d->job.attempts;

        job_detail_free(d);
        return n;
}

/*
 * A claim rides on the next commit (SQLite; PostgreSQL commits it at once): the ledger's own
 * reads see it at once; a crash before a commit carried it forgets it (the job queued, its
 * attempt not counted, and the next claim gives it the same token again); the transition
 * that follows, whatever its job, or ledger_commit_claims(), commits it.
 */
static void test_claim_rides_on_next_commit(void **state)
{
        struct ledfx *f = *state;
        bool rides = f->engine == LEDGER_ENGINE_SQLITE;
        int64_t a = ledfx_enqueue(f->l, "/u/a.jpg", "/m/a", 1, 1000), c, fence;

        assert_int_equal(ledfx_claim(f->l, 1000), a);
        assert_int_equal(ledfx_state_of(f->l, a), JOB_RUNNING);
        fence = ledfx_fence_of(f->l, a);
        assert_int_equal(ledger_claims_waiting(f->l), rides);

        ledfx_crash(f);
        assert_int_equal(ledger_recover(f->l, 2000), rides ? 0 : 1);
        assert_int_equal(ledfx_state_of(f->l, a), JOB_QUEUED);
        assert_int_equal(attempts_of(f->l, a), rides ? 0 : 1);

        /* An upload's enqueue commits the claim made before it. */
        assert_int_equal(ledfx_claim(f->l, 3000), a);
        assert_int_equal(ledfx_fence_of(f->l, a), rides ? fence : fence + 1);
        c = ledfx_enqueue(f->l, "/u/c.jpg", "/m/c", 3, 3000);
        assert_false(ledger_claims_waiting(f->l));
        ledfx_crash(f);
        assert_int_equal(ledger_recover(f->l, 4000), 1);
        assert_int_equal(attempts_of(f->l, a), rides ? 1 : 2);
        assert_int_equal(ledfx_state_of(f->l, c), JOB_QUEUED);

        /* A transition that fails commits the claims all the same. */
        assert_int_equal(ledfx_claim(f->l, 5000), a);
        assert_int_equal(ledger_complete(f->l, c, 0, NULL, 0, 5000), -ESTALE);
        assert_false(ledger_claims_waiting(f->l));
        ledfx_crash(f);
        assert_int_equal(ledger_recover(f->l, 6000), 1);
        assert_int_equal(attempts_of(f->l, a), rides ? 2 : 3);

        /* And ledger_commit_claims() alone. */
        assert_int_equal(ledfx_claim(f->l, 7000), a);
        assert_int_equal(ledger_commit_claims(f->l), 0);
        assert_false(ledger_claims_waiting(f->l));
        ledfx_crash(f);
        assert_int_equal(ledger_recover(f->l, 8000), 1);
        assert_int_equal(attempts_of(f->l, a), rides ? 3 : 4);
        ledfx_assert_counts_real(f);
}

/* A relocation (the configuration moved a job's outputs since intake) never puts two running
 * jobs on one output: refused with -EBUSY, the job unchanged, while the other runs. */
static void test_relocate_not_onto_running_output(void **state)
{
        struct ledfx *f = *state;
        int64_t a = ledfx_enqueue(f->l, "/u/a.jpg", "/m/a", 1, 1000);
        int64_t b = ledfx_enqueue(f->l, "/u/b.jpg", "/m/b", 2, 1000);
        struct job_detail *d;

        assert_int_equal(ledfx_claim(f->l, 1000), a);
        assert_int_equal(ledfx_claim(f->l, 1000), b);
        assert_int_equal(ledger_relocate(f->l, b, ledfx_fence_of(f->l, b), "p2", "/m/a"), -EBUSY);
        d = ledfx_get(f->l, b);
        assert_string_equal(d->job.output_key, "/m/b");
        assert_string_equal(d->job.pipeline, "default");
        job_detail_free(d);
        /* Its own output again is no conflict. */
        assert_int_equal(ledger_relocate(f->l, b, ledfx_fence_of(f->l, b), "p2", "/m/b"), 0);

        assert_int_equal(ledger_complete(f->l, a, ledfx_fence_of(f->l, a), NULL, 0, 2000), 0);
        assert_int_equal(ledger_relocate(f->l, b, ledfx_fence_of(f->l, b), "p3", "/m/a"), 0);
        d = ledfx_get(f->l, b);
        assert_string_equal(d->job.output_key, "/m/a");
        assert_string_equal(d->job.pipeline, "p3");
        job_detail_free(d);
        ledfx_assert_counts_real(f);
}

static void test_recover(void **state)
{
        struct ledfx *f = *state;
        int64_t a, b, c;

        a = ledfx_enqueue(f->l, "/u/a.jpg", "/m/a", 1, 1000);
        b = ledfx_enqueue(f->l, "/u/b.jpg", "/m/b", 2, 1000);
        c = ledfx_enqueue(f->l, "/u/c.jpg", "/m/c", 3, 5000);
        assert_int_equal(ledfx_claim(f->l, 1000), a);
        assert_int_equal(ledfx_claim(f->l, 1000), b);
        assert_int_equal(ledger_fail(f->l, b, ledfx_fence_of(f->l, b), "e", true, 1500, 1100), 0);
        assert_int_equal(ledfx_claim(f->l, 1500), b);

        ledfx_reopen(f);
        assert_int_equal(ledger_recover(f->l, 2000), 2);
        assert_int_equal(ledfx_state_of(f->l, a), JOB_QUEUED);
        assert_int_equal(ledfx_state_of(f->l, b), JOB_QUEUED);
        assert_int_equal(ledfx_state_of(f->l, c), JOB_QUEUED);
        assert_int_equal(ledfx_attempts_of(f->l, a), 1);
        assert_int_equal(ledfx_attempts_of(f->l, b), 2);
        assert_int_equal(
                ledfx_raw_int(f, "SELECT count(*) FROM jobs WHERE lease_owner IS NOT NULL"), 0);
        assert_int_equal(ledger_recover(f->l, 2100), 0);

        /* The next claim counts another attempt. */
        assert_int_equal(ledfx_claim(f->l, 3000), a);
        assert_int_equal(ledfx_attempts_of(f->l, a), 2);
}

static void test_release(void **state)
{
        struct ledfx *f = *state;
        struct job_detail *d;
        int64_t id;

        id = ledfx_enqueue(f->l, "/u/a.jpg", "/m/a", 1, 1000);
        assert_int_equal(ledfx_claim(f->l, 1000), id);
        assert_int_equal(ledfx_attempts_of(f->l, id), 1);
        assert_int_equal(ledger_release(f->l, id, ledfx_fence_of(f->l, id), 7000, 1200), 0);
        d = ledfx_get(f->l, id);
        assert_int_equal(d->job.state, JOB_QUEUED);
        assert_int_equal(d->job.attempts, 0);
        assert_int_equal(d->job.next_at_usec, 7000);
        assert_int_equal(d->job.updated_usec, 1200);
        job_detail_free(d);
        assert_int_equal(ledfx_raw_int(f, "SELECT lease_owner IS NULL AND lease_expires_us IS NULL "
                                          "FROM jobs"),
                         1);

        ledfx_assert_no_claim(f->l, 6999);
        assert_int_equal(ledfx_claim(f->l, 7000), id);
        assert_int_equal(ledfx_attempts_of(f->l, id), 1);

        /* Never below zero. */
        ledfx_raw_exec(f, "UPDATE jobs SET attempts = 0");
        assert_int_equal(ledger_release(f->l, id, ledfx_fence_of(f->l, id), 8000, 7100), 0);
        assert_int_equal(ledfx_attempts_of(f->l, id), 0);
}

/* Fencing: every claim gives a new token; the transitions of a running job made with the
 * token of an earlier claim are refused (-ESTALE) and change nothing, those with the
 * current one go through. */
static void test_fencing(void **state)
{
        struct ledfx *f = *state;
        struct job_output out = { .variant = "s",
                                  .path = "/m/a_s.webp",
                                  .format = "webp",
                                  .width = 1,
                                  .height = 1,
                                  .bytes = 10,
                                  .tmp_path = "/m/.t" };
        struct job *j = NULL;
        int64_t id, old, cur;

        snprintf(out.sha256, sizeof out.sha256, "%064x", 5);
        id = ledfx_enqueue(f->l, "/u/a.jpg", "/m/a", 1, 100);
        assert_int_equal(ledger_claim(f->l, "w1", 200, LEDFX_LEASE_US, JOB_PRIORITY_BACKGROUND, &j),
                         1);
        old = j->fence;
        assert_true(old > 0);
        j = job_free(j);
        /* The claim is lost (handed back by another node, say) and the job claimed again. */
        assert_int_equal(ledger_release(f->l, id, old, 300, 300), 0);
        assert_int_equal(ledger_claim(f->l, "w2", 400, LEDFX_LEASE_US, JOB_PRIORITY_BACKGROUND, &j),
                         1);
        cur = j->fence;
        assert_true(cur > old);
        assert_int_equal(ledfx_fence_of(f->l, id), cur);
        j = job_free(j);

        /* The first claim's holder comes back: every transition is refused. */
        assert_int_equal(ledger_stage(f->l, id, old, &out, 1, false, NULL, 500), -ESTALE);
        assert_non_null(strstr(ledger_errmsg(f->l), "claimed again"));
        assert_int_equal(ledger_complete(f->l, id, old, &out, 1, 500), -ESTALE);
        assert_int_equal(ledger_fail(f->l, id, old, "late", true, 600, 500), -ESTALE);
        assert_int_equal(ledger_release(f->l, id, old, 600, 500), -ESTALE);
        assert_int_equal(ledger_hold(f->l, id, old, "late", 500), -ESTALE);
        assert_int_equal(ledfx_state_of(f->l, id), JOB_RUNNING);
        assert_int_equal(ledfx_attempts_of(f->l, id), 1);
        assert_int_equal(ledfx_raw_int(f, "SELECT count(*) FROM outputs"), 0);
        assert_int_equal(ledfx_raw_int(f, "SELECT count(*) FROM job_errors"), 0);

        /* The current claim's holder goes on. */
        assert_int_equal(ledger_stage(f->l, id, cur, &out, 1, false, NULL, 700), 0);
        assert_int_equal(ledger_complete(f->l, id, old, NULL, 0, 800), -ESTALE);
        assert_int_equal(ledger_complete(f->l, id, cur, NULL, 0, 800), 0);
        assert_int_equal(ledfx_state_of(f->l, id), JOB_DONE);
        /* Done: the current token is stale now too. */
        assert_int_equal(ledger_release(f->l, id, cur, 900, 900), -ESTALE);
}

/* Recovery after a crash keeps the token of a verified job (its publication completes with
 * it), and a job recovered to queued gets a new one at its next claim. */
static void test_fencing_recover(void **state)
{
        struct ledfx *f = *state;
        struct job_output out = { .variant = "s",
                                  .path = "/m/b_s.webp",
                                  .format = "webp",
                                  .width = 1,
                                  .height = 1,
                                  .bytes = 10,
                                  .tmp_path = "/m/.t" };
        int64_t staged, lost, fence_lost;

        snprintf(out.sha256, sizeof out.sha256, "%064x", 6);
        staged = ledfx_enqueue(f->l, "/u/b.jpg", "/m/b", 2, 100);
        lost = ledfx_enqueue(f->l, "/u/c.jpg", "/m/c", 3, 100);
        assert_int_equal(ledfx_claim(f->l, 200), staged);
        assert_int_equal(ledfx_claim(f->l, 200), lost);
        assert_int_equal(
                ledger_stage(f->l, staged, ledfx_fence_of(f->l, staged), &out, 1, false, NULL, 300),
                0);
        fence_lost = ledfx_fence_of(f->l, lost);
        ledfx_reopen(f);
        assert_int_equal(ledger_recover(f->l, 400), 1);
        assert_int_equal(ledger_complete(f->l, staged, ledfx_fence_of(f->l, staged), NULL, 0, 500),
                         0);
        assert_int_equal(ledfx_claim(f->l, 600), lost);
        assert_true(ledfx_fence_of(f->l, lost) > fence_lost);
        assert_int_equal(ledger_fail(f->l, lost, fence_lost, "old", true, 700, 700), -ESTALE);
}

int main(void)
{
#define T(t) cmocka_unit_test_setup_teardown(t, ledfx_setup, ledfx_teardown)
        const struct CMUnitTest tests[] = {
                T(test_stage_checkpoint),
                T(test_expired_leases),
                T(test_degraded_rerender),
                T(test_claim_fields_and_attempts),
                T(test_claim_order_and_next_at),
                T(test_claim_prefers_earlier_next_at),
                T(test_claim_excludes_running_output_key),
                T(test_claim_with_many_done),
                T(test_fail_retry_then_dead),
                T(test_fail_message_is_capped),
                T(test_complete_outputs),
                T(test_complete_is_atomic),
                T(test_not_running_is_stale),
                T(test_claim_rides_on_next_commit),
                T(test_relocate_not_onto_running_output),
                T(test_recover),
                T(test_release),
                T(test_fencing),
                T(test_fencing_recover),
        };
#undef T

        umask(022);
        return ledfx_run("ledger-claim", tests, ELEMENTSOF(tests), NULL, 0);
}
