/* SPDX-License-Identifier: MIT */
/*
 * test-ledger-enqueue.c - enqueueing into the job ledger on real SQLite files:
 * de-duplication by content, superseding of queued jobs, content that comes back, files that
 * come back after a cancel, and ledger_known_stat().
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

/* Enqueue */

static void test_enqueue_dedupe(void **state)
{
        struct ledfx *f = *state;
        struct source_info s = ledfx_src_make("/srv/uploads/a.jpg", "/srv/media/a", 1);
        struct job_detail *d;
        uint64_t counts[_JOB_STATE_MAX];
        int64_t id1, id2 = 0, id3;

        assert_int_equal(ledger_enqueue(f->l, &s, 1000, &id1), 1);

        /* Same path and content, new stat: the same job, with its stat refreshed. */
        s.size = 5;
        s.mtime_ns = 6;
        s.ino = 7;
        assert_int_equal(ledger_enqueue(f->l, &s, 2000, &id2), 0);
        assert_int_equal(id2, id1);
        d = ledfx_get(f->l, id1);
        assert_int_equal(d->job.size, 5);
        assert_int_equal(d->job.mtime_ns, 6);
        assert_int_equal(d->job.ino, 7);
        assert_int_equal(d->job.state, JOB_QUEUED);
        assert_int_equal(d->job.created_usec, 1000);
        job_detail_free(d);

        /* Same content under another path is another job. */
        s.path = "/srv/uploads/b.jpg";
        assert_int_equal(ledger_enqueue(f->l, &s, 3000, &id3), 1);
        assert_true(id3 != id1);

        assert_int_equal(ledger_counts(f->l, counts), 0);
        assert_int_equal(counts[JOB_QUEUED], 2);
        assert_int_equal(ledfx_raw_int(f, "SELECT count(*) FROM jobs"), 2);

        /* A bad hash is refused. */
        s.sha256[10] = '\0';
        assert_int_equal(ledger_enqueue(f->l, &s, 3000, &id3), -EINVAL);
}

/* Content A, then B, then A again: A is new again (its first job was superseded). */
static void test_enqueue_content_returns(void **state)
{
        struct ledfx *f = *state;
        const char *p = "/srv/uploads/a.jpg";
        int64_t a1, b, a2, again;
        struct source_info s = ledfx_src_make(p, "/srv/media/a", 1);

        a1 = ledfx_enqueue(f->l, p, "/srv/media/a", 1, 100);
        b = ledfx_enqueue(f->l, p, "/srv/media/a", 2, 200);
        assert_int_equal(ledfx_state_of(f->l, a1), JOB_CANCELLED);
        a2 = ledfx_enqueue(f->l, p, "/srv/media/a", 1, 300);
        assert_true(a2 > b);
        assert_int_equal(ledfx_state_of(f->l, b), JOB_CANCELLED);
        assert_int_equal(ledfx_state_of(f->l, a2), JOB_QUEUED);
        assert_int_equal(ledger_superseded(f->l, a2), 0);
        /* And A once more, while A is the newest: known, same job. */
        assert_int_equal(ledger_enqueue(f->l, &s, 400, &again), 0);
        assert_int_equal(again, a2);
}

/* A cancelled job does not hold its content: the same file coming back (moved away while
 * queued, so cancelled, then moved back; or cancelled by an operator) is a new job. */
static void test_enqueue_after_cancel(void **state)
{
        struct ledfx *f = *state;
        const char *p = "/srv/uploads/a.jpg";
        struct source_info s = ledfx_src_make(p, "/srv/media/a", 1);
        int64_t first, again, second, third;

        first = ledfx_enqueue(f->l, p, "/srv/media/a", 1, 100);
        assert_int_equal(ledfx_claim(f->l, 200), first);
        assert_int_equal(ledger_cancel(f->l, first, "source removed before processing", 210), 0);
        /* The same file, the same stat: not known by its stat, and not by its content. */
        assert_int_equal(ledger_known_stat(f->l, p, s.size, s.mtime_ns, s.ino), 0);
        assert_int_equal(ledger_enqueue(f->l, &s, 300, &second), 1);
        assert_true(second > first);
        assert_int_equal(ledfx_state_of(f->l, second), JOB_QUEUED);
        assert_int_equal(ledfx_state_of(f->l, first), JOB_CANCELLED);
        /* The new job is its content's job from now on. */
        assert_int_equal(ledger_enqueue(f->l, &s, 400, &again), 0);
        assert_int_equal(again, second);

        /* Cancelled while queued (by an operator): enqueued again, a new job too. */
        assert_int_equal(ledger_cancel(f->l, second, "cancelled by operator", 500), 0);
        assert_int_equal(ledger_enqueue(f->l, &s, 600, &third), 1);
        assert_true(third > second);
        assert_int_equal(ledfx_claim(f->l, 700), third);
        assert_int_equal(ledger_complete(f->l, third, ledfx_fence_of(f->l, third), NULL, 0, 710),
                         0);
        /* Done: known again. */
        assert_int_equal(ledger_enqueue(f->l, &s, 800, &again), 0);
        assert_int_equal(again, third);
}

static void test_enqueue_supersedes(void **state)
{
        struct ledfx *f = *state;
        const char *p = "/srv/uploads/a.jpg";
        struct job_detail *d;
        char expect[64];
        int64_t running, q1, q2, r1, dead, other, newest;

        /* A dead job and a running one for the path, plus a job for another path. */
        dead = ledfx_enqueue(f->l, p, "/srv/media/a", 1, 100);
        assert_int_equal(ledfx_claim(f->l, 100), dead);
        assert_int_equal(ledger_fail(f->l, dead, ledfx_fence_of(f->l, dead), "bad", false, 0, 110),
                         0);
        running = ledfx_enqueue(f->l, p, "/srv/media/a", 2, 200);
        assert_int_equal(ledfx_claim(f->l, 200), running);
        other = ledfx_enqueue(f->l, "/srv/uploads/other.jpg", "/srv/media/other", 3, 300);

        /* Content changes: running is superseded, but keeps running. */
        q1 = ledfx_enqueue(f->l, p, "/srv/media/a", 4, 400);
        assert_int_equal(ledger_superseded(f->l, running), 1);
        assert_int_equal(ledfx_state_of(f->l, running), JOB_RUNNING);

        /* One in retry. */
        assert_int_equal(ledfx_claim(f->l, 500), other);
        assert_int_equal(ledger_complete(f->l, other, ledfx_fence_of(f->l, other), NULL, 0, 510),
                         0);
        assert_int_equal(
                ledger_fail(f->l, running, ledfx_fence_of(f->l, running), "x", true, 600, 520), 0);
        r1 = running;
        assert_int_equal(ledfx_state_of(f->l, r1), JOB_RETRY);

        /* Content changes again: the queued q1 and the retry r1 are cancelled. */
        q2 = ledfx_enqueue(f->l, p, "/srv/media/a", 5, 700);
        snprintf(expect, sizeof expect, "superseded by job %" PRId64, q2);
        d = ledfx_get(f->l, q1);
        assert_int_equal(d->job.state, JOB_CANCELLED);
        assert_string_equal(d->job.last_error, expect);
        assert_int_equal(d->job.updated_usec, 700);
        job_detail_free(d);
        d = ledfx_get(f->l, r1);
        assert_int_equal(d->job.state, JOB_CANCELLED);
        assert_string_equal(d->job.last_error, expect);
        job_detail_free(d);
        assert_int_equal(ledfx_state_of(f->l, dead), JOB_DEAD);
        assert_int_equal(ledfx_state_of(f->l, other), JOB_DONE);
        assert_int_equal(ledfx_state_of(f->l, q2), JOB_QUEUED);

        /* A running job is left alone. */
        assert_int_equal(ledfx_claim(f->l, 800), q2);
        newest = ledfx_enqueue(f->l, p, "/srv/media/a", 6, 900);
        assert_int_equal(ledfx_state_of(f->l, q2), JOB_RUNNING);
        assert_int_equal(ledfx_state_of(f->l, newest), JOB_QUEUED);

        assert_int_equal(ledger_superseded(f->l, q2), 1);
        assert_int_equal(ledger_superseded(f->l, newest), 0);
        assert_int_equal(ledger_superseded(f->l, other), 0);
        assert_int_equal(ledger_superseded(f->l, 9999), -ENOENT);
}

static void test_known_stat(void **state)
{
        struct ledfx *f = *state;
        struct source_info s = ledfx_src_make("/srv/uploads/a.jpg", "/srv/media/a", 1);
        int64_t id;

        assert_int_equal(ledger_known_stat(f->l, s.path, s.size, s.mtime_ns, s.ino), 0);
        assert_int_equal(ledger_enqueue(f->l, &s, 100, &id), 1);
        assert_int_equal(ledger_known_stat(f->l, s.path, s.size, s.mtime_ns, s.ino), 1);
        assert_int_equal(ledger_known_stat(f->l, s.path, s.size + 1, s.mtime_ns, s.ino), 0);
        assert_int_equal(ledger_known_stat(f->l, s.path, s.size, s.mtime_ns + 1, s.ino), 0);
        assert_int_equal(ledger_known_stat(f->l, s.path, s.size, s.mtime_ns, s.ino + 1), 0);
        assert_int_equal(ledger_known_stat(f->l, "/srv/uploads/b.jpg", s.size, s.mtime_ns, s.ino),
                         0);

        /* Superseded (cancelled): no longer known; the new one is. */
        {
                struct source_info s2 = ledfx_src_make("/srv/uploads/a.jpg", "/srv/media/a", 2);
                int64_t id2;

                assert_int_equal(ledger_enqueue(f->l, &s2, 200, &id2), 1);
                assert_int_equal(ledfx_state_of(f->l, id), JOB_CANCELLED);
                assert_int_equal(ledger_known_stat(f->l, s.path, s.size, s.mtime_ns, s.ino), 0);
                assert_int_equal(ledger_known_stat(f->l, s2.path, s2.size, s2.mtime_ns, s2.ino), 1);
        }
}

int main(void)
{
#define T(t) cmocka_unit_test_setup_teardown(t, ledfx_setup, ledfx_teardown)
        const struct CMUnitTest tests[] = {
                T(test_enqueue_dedupe),
                T(test_enqueue_supersedes),
                T(test_enqueue_content_returns),
                T(test_enqueue_after_cancel),
                T(test_known_stat),
        };
#undef T

        umask(022);
        return ledfx_run("ledger-enqueue", tests, ELEMENTSOF(tests), NULL, 0);
}
