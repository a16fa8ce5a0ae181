/* SPDX-License-Identifier: MIT */
/*
 * test-ledger-admin.c - the operator side of the job ledger on real SQLite files: pruning
 * (what it keeps, batch by batch), hold and relocate, retry of dead jobs, and cancel.
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

/* Pruning keeps each source's newest job and dead jobs; it deletes older finished ones. */
static void test_prune(void **state)
{
        struct ledfx *f = *state;
        int64_t old_done, newest, dead, other;

        old_done = ledfx_enqueue(f->l, "/u/a.jpg", "/m/a", 1, 100);
        assert_int_equal(ledfx_claim(f->l, 100), old_done);
        assert_int_equal(
                ledger_complete(f->l, old_done, ledfx_fence_of(f->l, old_done), NULL, 0, 150), 0);
        newest = ledfx_enqueue(f->l, "/u/a.jpg", "/m/a", 2, 200);
        assert_int_equal(ledfx_claim(f->l, 200), newest);
        assert_int_equal(ledger_complete(f->l, newest, ledfx_fence_of(f->l, newest), NULL, 0, 250),
                         0);
        dead = ledfx_enqueue(f->l, "/u/d.jpg", "/m/d", 3, 100);
        assert_int_equal(ledfx_claim(f->l, 100), dead);
        assert_int_equal(ledger_fail(f->l, dead, ledfx_fence_of(f->l, dead), "bad", false, 0, 150),
                         0);
        other = ledfx_enqueue(f->l, "/u/d.jpg", "/m/d", 4, 160); /* dead job superseded */

        assert_int_equal(ledfx_prune_all(f->l, 100, 1000), 0); /* nothing finished before 100 */
        assert_int_equal(ledfx_prune_all(f->l, 1000, 1000), 1);
        struct job_detail *d = NULL;
        assert_int_equal(ledger_get(f->l, old_done, &d), 0);
        assert_int_equal(ledfx_state_of(f->l, newest), JOB_DONE);
        assert_int_equal(ledfx_state_of(f->l, dead), JOB_DEAD);
        assert_int_equal(ledfx_state_of(f->l, other), JOB_QUEUED);
        assert_int_equal(ledger_integrity_check(f->l), 0);
}

/*
 * A prune pass goes batch by batch: each call deletes only within its range of ids and says
 * where the next one starts; the pass starts at the oldest job and ends (cursor 0) at the
 * newest.
 */
static void test_prune_batches(void **state)
{
        struct ledfx *f = *state;
        struct job_detail *d = NULL;
        int64_t ids[20], cursor = 0;
        char path[32];
        int k;

        /* Sources s0..s9, each done twice: ids 1..10 the old jobs, 11..20 the newest. */
        for (int round = 0; round < 2; round++) {
                for (int i = 0; i < 10; i++) {
                        int64_t id;

                        snprintf(path, sizeof path, "/u/s%d.jpg", i);
                        id = ledfx_enqueue(f->l, path, path, (unsigned)(round * 10 + i + 1), 100);
                        assert_int_equal(ledfx_claim(f->l, 100), id);
                        assert_int_equal(
                                ledger_complete(f->l, id, ledfx_fence_of(f->l, id), NULL, 0, 150),
                                0);
                        ids[round * 10 + i] = id;
                }
        }
        for (int i = 0; i < 20; i++)
                assert_int_equal(ids[i], ids[0] + i);

        /* The first batch covers ids[0] and ids[1] only. */
        cursor = ids[0] - 1;
        k = ledger_prune(f->l, 1000, &cursor, 2);
        assert_int_equal(k, 2);
        assert_int_equal(cursor, ids[1]);
        assert_int_equal(ledger_get(f->l, ids[0], &d), 0); /* gone */
        assert_int_equal(ledfx_state_of(f->l, ids[2]), JOB_DONE);

        /* Ids 3..4 then 5..6: deleted in their turns, nothing beyond. */
        assert_int_equal(ledger_prune(f->l, 1000, &cursor, 2), 2);
        assert_int_equal(ledger_prune(f->l, 1000, &cursor, 2), 2);
        assert_int_equal(cursor, ids[5]);
        assert_int_equal(ledfx_state_of(f->l, ids[6]), JOB_DONE);

        /* The rest of the pass in batches of 3: 4 more old jobs, none of the newest. */
        assert_int_equal(ledfx_prune_all_from(f->l, 1000, &cursor, 3), 4);
        assert_int_equal(cursor, 0);
        for (int i = 10; i < 20; i++)
                assert_int_equal(ledfx_state_of(f->l, ids[i]), JOB_DONE);

        /* A new pass starts at the oldest job left (ids[10]), not at id 1: one batch of ten
         * covers the whole ledger, and deletes nothing more. */
        cursor = 0;
        assert_int_equal(ledger_prune(f->l, 1000, &cursor, 10), 0);
        assert_int_equal(cursor, 0);
        assert_int_equal(ledfx_prune_all(f->l, 1000, 4), 0);
        assert_int_equal(ledger_integrity_check(f->l), 0);
}

/* Held: queued with its attempt given back and a reason, claimable only once woken (by
 * ledger_unhold() or ledger_retry()); not due, not the oldest queued. Relocated: a running
 * job's pipeline and output key change. */
static void test_hold_and_relocate(void **state)
{
        struct ledfx *f = *state;
        struct job_detail *d;
        int64_t id, due, oldest;
        uint64_t held;

        id = ledfx_enqueue(f->l, "/u/a.jpg", "/m/a", 1, 1000);
        assert_int_equal(ledger_hold(f->l, id, ledfx_fence_of(f->l, id), "watch /u is gone", 1100),
                         -ESTALE);
        assert_int_equal(ledfx_claim(f->l, 1000), id);
        assert_int_equal(ledger_relocate(f->l, id, ledfx_fence_of(f->l, id), "q", "/n/a"), 0);
        assert_int_equal(ledger_hold(f->l, id, ledfx_fence_of(f->l, id), "watch /u is gone", 1100),
                         0);
        d = ledfx_get(f->l, id);
        assert_int_equal(d->job.state, JOB_QUEUED);
        assert_int_equal(d->job.attempts, 0);
        assert_string_equal(d->job.last_error, "watch /u is gone");
        assert_string_equal(d->job.pipeline, "q");
        assert_string_equal(d->job.output_key, "/n/a");
        job_detail_free(d);
        assert_int_equal(ledger_count_held(f->l, &held), 0);
        assert_int_equal(held, 1);
        ledfx_assert_no_claim(f->l, INT64_MAX - 1);
        assert_int_equal(ledger_next_due(f->l, &due), 0);
        assert_int_equal(ledger_oldest_queued(f->l, &oldest), 0);
        assert_int_equal(ledger_relocate(f->l, id, ledfx_fence_of(f->l, id), "p", "/m/a"), -ESTALE);

        assert_int_equal(ledger_unhold(f->l, 2000), 1);
        assert_int_equal(ledger_count_held(f->l, &held), 0);
        assert_int_equal(held, 0);
        assert_int_equal(ledfx_claim(f->l, 2000), id);
        assert_int_equal(ledger_hold(f->l, id, ledfx_fence_of(f->l, id), "watch /u is gone", 2100),
                         0);
        assert_int_equal(ledger_retry(f->l, id, 3000), 0);
        assert_int_equal(ledfx_state_of(f->l, id), JOB_QUEUED);
        assert_int_equal(ledfx_claim(f->l, 3000), id);
        assert_int_equal(ledger_unhold(f->l, 4000), 0);
        ledfx_assert_counts_real(f);
}

static void test_retry_dead(void **state)
{
        struct ledfx *f = *state;
        struct job_detail *d;
        int64_t id;

        id = ledfx_enqueue(f->l, "/u/a.jpg", "/m/a", 1, 1000);
        assert_int_equal(ledger_retry(f->l, id, 1100), -ESTALE);
        assert_int_equal(ledger_retry(f->l, 9999, 1100), -ENOENT);
        assert_int_equal(ledfx_claim(f->l, 1000), id);
        assert_int_equal(ledger_retry(f->l, id, 1100), -ESTALE);
        assert_int_equal(ledger_fail(f->l, id, ledfx_fence_of(f->l, id), "bad", false, 0, 1200), 0);
        assert_int_equal(ledfx_raw_int(f, "SELECT finished_us FROM jobs"), 1200);

        assert_int_equal(ledger_retry(f->l, id, 5000), 0);
        d = ledfx_get(f->l, id);
        assert_int_equal(d->job.state, JOB_QUEUED);
        assert_int_equal(d->job.attempts, 0);
        assert_int_equal(d->job.next_at_usec, 5000);
        assert_int_equal(d->job.updated_usec, 5000);
        assert_int_equal(d->n_errors, 1);
        job_detail_free(d);
        assert_int_equal(ledfx_raw_int(f, "SELECT finished_us IS NULL FROM jobs"), 1);
        assert_int_equal(ledger_retry(f->l, id, 5100), -ESTALE);

        ledfx_assert_no_claim(f->l, 4999);
        assert_int_equal(ledfx_claim(f->l, 5000), id);
        assert_int_equal(ledfx_attempts_of(f->l, id), 1);
}

static void test_cancel(void **state)
{
        struct ledfx *f = *state;
        struct job_detail *d;
        int64_t q, r, dd, run, done;

        q = ledfx_enqueue(f->l, "/u/q.jpg", "/m/q", 1, 1000);
        r = ledfx_enqueue(f->l, "/u/r.jpg", "/m/r", 2, 1001);
        dd = ledfx_enqueue(f->l, "/u/d.jpg", "/m/d", 3, 1002);
        run = ledfx_enqueue(f->l, "/u/run.jpg", "/m/run", 4, 1003);
        done = ledfx_enqueue(f->l, "/u/done.jpg", "/m/done", 5, 1004);
        /* q is claimed and handed back with a far next_at, out of the way. */
        assert_int_equal(ledfx_claim(f->l, 2000), q);
        assert_int_equal(ledger_release(f->l, q, ledfx_fence_of(f->l, q), 1000000, 2001), 0);
        assert_int_equal(ledfx_claim(f->l, 2000), r);
        assert_int_equal(ledger_fail(f->l, r, ledfx_fence_of(f->l, r), "e", true, 9000, 2002), 0);
        assert_int_equal(ledfx_claim(f->l, 2000), dd);
        assert_int_equal(ledger_fail(f->l, dd, ledfx_fence_of(f->l, dd), "e", false, 0, 2003), 0);
        assert_int_equal(ledfx_claim(f->l, 2000), run);
        assert_int_equal(ledfx_claim(f->l, 2000), done);
        assert_int_equal(ledger_complete(f->l, done, ledfx_fence_of(f->l, done), NULL, 0, 2004), 0);
        assert_int_equal(ledfx_state_of(f->l, q), JOB_QUEUED);
        assert_int_equal(ledfx_state_of(f->l, r), JOB_RETRY);
        assert_int_equal(ledfx_state_of(f->l, dd), JOB_DEAD);
        assert_int_equal(ledfx_state_of(f->l, run), JOB_RUNNING);

        assert_int_equal(ledger_cancel(f->l, q, "by operator", 3000), 0);
        d = ledfx_get(f->l, q);
        assert_int_equal(d->job.state, JOB_CANCELLED);
        assert_string_equal(d->job.last_error, "by operator");
        assert_int_equal(d->job.updated_usec, 3000);
        assert_int_equal(d->n_errors, 1);
        assert_string_equal(d->errors[0].message, "by operator");
        assert_int_equal(d->errors[0].at_usec, 3000);
        job_detail_free(d);

        assert_int_equal(ledger_cancel(f->l, r, "x", 3001), 0);
        assert_int_equal(ledfx_state_of(f->l, r), JOB_CANCELLED);
        assert_int_equal(ledger_cancel(f->l, dd, "x", 3002), 0);
        assert_int_equal(ledfx_state_of(f->l, dd), JOB_CANCELLED);
        assert_int_equal(ledger_cancel(f->l, run, "x", 3003), 0);
        assert_int_equal(ledfx_state_of(f->l, run), JOB_CANCELLED);
        /* The worker's late result is refused. */
        assert_int_equal(ledger_complete(f->l, run, ledfx_fence_of(f->l, run), NULL, 0, 3004),
                         -ESTALE);
        assert_int_equal(ledfx_state_of(f->l, run), JOB_CANCELLED);

        assert_int_equal(ledger_cancel(f->l, done, "x", 3005), -ESTALE);
        assert_int_equal(ledfx_state_of(f->l, done), JOB_DONE);
        assert_int_equal(ledger_cancel(f->l, q, "again", 3006), -ESTALE);
        assert_int_equal(ledger_cancel(f->l, 9999, "x", 3007), -ENOENT);
        assert_int_equal(
                ledfx_raw_int(f, "SELECT count(*) FROM job_errors WHERE message = 'again'"), 0);

        /* Nothing cancelled is claimable. */
        ledfx_assert_no_claim(f->l, 1000000);
}

int main(void)
{
#define T(t) cmocka_unit_test_setup_teardown(t, ledfx_setup, ledfx_teardown)
        const struct CMUnitTest tests[] = {
                T(test_prune),      T(test_prune_batches), T(test_hold_and_relocate),
                T(test_retry_dead), T(test_cancel),
        };
#undef T

        umask(022);
        return ledfx_run("ledger-admin", tests, ELEMENTSOF(tests), NULL, 0);
}
