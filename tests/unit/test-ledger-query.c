/* SPDX-License-Identifier: MIT */
/*
 * test-ledger-query.c - the queries of the job ledger on real SQLite files: the counts by
 * state (kept by triggers through every transition, checked as corruption when wrong), lookups
 * inside a group commit, lists by state (walking an index) and their limit, output owners,
 * missing jobs, and the names of the states.
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

/* Queries */

static void test_counts(void **state)
{
        struct ledfx *f = *state;
        uint64_t counts[_JOB_STATE_MAX];
        int64_t a, b, c, d;

        memset(counts, 0xff, sizeof counts);
        assert_int_equal(ledger_counts(f->l, counts), 0);
        for (int i = 0; i < _JOB_STATE_MAX; i++)
                assert_int_equal(counts[i], 0);

        a = ledfx_enqueue(f->l, "/u/a.jpg", "/m/a", 1, 1000);
        b = ledfx_enqueue(f->l, "/u/b.jpg", "/m/b", 2, 1000);
        c = ledfx_enqueue(f->l, "/u/c.jpg", "/m/c", 3, 1000);
        d = ledfx_enqueue(f->l, "/u/d.jpg", "/m/d", 4, 1000);
        ledfx_enqueue(f->l, "/u/e.jpg", "/m/e", 5, 1000);
        ledfx_enqueue(f->l, "/u/f.jpg", "/m/f", 6, 1000);
        assert_int_equal(ledfx_claim(f->l, 1000), a);
        assert_int_equal(ledfx_claim(f->l, 1000), b);
        assert_int_equal(ledfx_claim(f->l, 1000), c);
        assert_int_equal(ledfx_claim(f->l, 1000), d);
        assert_int_equal(ledger_complete(f->l, a, ledfx_fence_of(f->l, a), NULL, 0, 1100), 0);
        assert_int_equal(ledger_fail(f->l, b, ledfx_fence_of(f->l, b), "e", true, 5000, 1100), 0);
        assert_int_equal(ledger_fail(f->l, c, ledfx_fence_of(f->l, c), "e", false, 0, 1100), 0);
        ledfx_enqueue(f->l, "/u/f.jpg", "/m/f", 7, 1200); /* cancels the queued f */

        assert_int_equal(ledger_counts(f->l, counts), 0);
        assert_int_equal(counts[JOB_QUEUED], 2);
        assert_int_equal(counts[JOB_RUNNING], 1);
        assert_int_equal(counts[JOB_RETRY], 1);
        assert_int_equal(counts[JOB_DONE], 1);
        assert_int_equal(counts[JOB_DEAD], 1);
        assert_int_equal(counts[JOB_CANCELLED], 1);
}

/* The counts kept by the triggers follow every transition, a restart, and writes made
 * behind imgd's back (the bench fills the ledger with the sqlite3 CLI). */
static void test_counts_kept(void **state)
{
        struct ledfx *f = *state;
        int64_t a, b, c, d, e, a2;
        struct job *j = NULL;

        ledfx_assert_counts(f->l, 0, 0, 0, 0, 0, 0);
        a = ledfx_enqueue(f->l, "/u/a.jpg", "/m/a", 1, 1000);
        b = ledfx_enqueue(f->l, "/u/b.jpg", "/m/b", 2, 1000);
        c = ledfx_enqueue(f->l, "/u/c.jpg", "/m/c", 3, 1000);
        d = ledfx_enqueue(f->l, "/u/d.jpg", "/m/d", 4, 1000);
        e = ledfx_enqueue(f->l, "/u/e.jpg", "/m/e", 5, 1000);
        ledfx_assert_counts(f->l, 5, 0, 0, 0, 0, 0);
        /* Enqueueing known content changes nothing. */
        {
                struct source_info s = ledfx_src_make("/u/a.jpg", "/m/a", 1);
                int64_t id;
                assert_int_equal(ledger_enqueue(f->l, &s, 1001, &id), 0);
        }
        ledfx_assert_counts(f->l, 5, 0, 0, 0, 0, 0);

        assert_int_equal(ledfx_claim(f->l, 1000), a);
        assert_int_equal(ledfx_claim(f->l, 1000), b);
        assert_int_equal(ledfx_claim(f->l, 1000), c);
        assert_int_equal(ledfx_claim(f->l, 1000), d);
        ledfx_assert_counts(f->l, 1, 4, 0, 0, 0, 0);
        assert_int_equal(ledger_stage(f->l, a, ledfx_fence_of(f->l, a), NULL, 0, true, NULL, 1050),
                         0);
        assert_int_equal(ledger_complete(f->l, a, ledfx_fence_of(f->l, a), NULL, 0, 1100), 0);
        assert_int_equal(ledger_fail(f->l, b, ledfx_fence_of(f->l, b), "e", true, 5000, 1100), 0);
        assert_int_equal(ledger_fail(f->l, c, ledfx_fence_of(f->l, c), "e", false, 0, 1100), 0);
        assert_int_equal(ledger_release(f->l, d, ledfx_fence_of(f->l, d), 1200, 1100), 0);
        ledfx_assert_counts(f->l, 2, 0, 1, 1, 1, 0);
        /* Refused transitions change nothing. */
        assert_int_equal(ledger_complete(f->l, a, ledfx_fence_of(f->l, a), NULL, 0, 1150), -ESTALE);
        assert_int_equal(ledger_retry(f->l, b, 1150), -ESTALE);
        assert_int_equal(ledger_cancel(f->l, 999, "x", 1150), -ENOENT);
        ledfx_assert_counts(f->l, 2, 0, 1, 1, 1, 0);
        ledfx_assert_counts_real(f);

        assert_int_equal(ledger_retry(f->l, c, 1200), 0);        /* dead -> queued */
        assert_int_equal(ledger_cancel(f->l, e, "no", 1200), 0); /* queued -> cancelled */
        ledfx_assert_counts(f->l, 2, 0, 1, 1, 0, 1);
        a2 = ledfx_enqueue(f->l, "/u/b.jpg", "/m/b", 9, 1300); /* cancels b, waiting to retry */
        ledfx_assert_counts(f->l, 3, 0, 0, 1, 0, 2);
        assert_int_equal(ledger_rerender_degraded(f->l, 1400, 10), 1); /* a: done -> queued */
        ledfx_assert_counts(f->l, 4, 0, 0, 0, 0, 2);
        for (int i = 0; i < 2; i++) {
                assert_int_equal(ledger_claim(f->l, "test", 1500, LEDFX_LEASE_US,
                                              JOB_PRIORITY_BACKGROUND, &j),
                                 1);
                j = job_free(j);
        }
        ledfx_assert_counts(f->l, 2, 2, 0, 0, 0, 2);
        ledfx_assert_counts_real(f);

        /* After a crash: the running jobs go back to the queue at recovery. */
        ledfx_reopen(f);
        ledfx_assert_counts(f->l, 2, 2, 0, 0, 0, 2);
        assert_int_equal(ledger_recover(f->l, 1600), 2);
        ledfx_assert_counts(f->l, 4, 0, 0, 0, 0, 2);

        /* Pruning deletes counted jobs: a's old one and b's cancelled one, no longer their
         * sources' newest; e's cancelled job is its source's newest and stays. */
        for (int i = 0; i < 4; i++) {
                assert_int_equal(ledger_claim(f->l, "test", 1700, LEDFX_LEASE_US,
                                              JOB_PRIORITY_BACKGROUND, &j),
                                 1);
                assert_int_equal(
                        ledger_complete(f->l, j->id, ledfx_fence_of(f->l, j->id), NULL, 0, 1710),
                        0);
                j = job_free(j);
        }
        ledfx_assert_counts(f->l, 0, 0, 0, 4, 0, 2);
        (void)ledfx_enqueue(f->l, "/u/a.jpg", "/m/a", 11, 1720);
        ledfx_assert_counts(f->l, 1, 0, 0, 4, 0, 2);
        assert_int_equal(ledfx_prune_all(f->l, 100000, 1), 2);
        ledfx_assert_counts(f->l, 1, 0, 0, 3, 0, 1);
        ledfx_assert_counts_real(f);
        assert_int_equal(ledfx_state_of(f->l, a2), JOB_DONE);

        /* Rows written by another program are counted too. */
        ledfx_raw_bulk_done(f, 100);
        ledfx_raw_exec(f, "UPDATE jobs SET state = 'dead' WHERE source_path = '/bulk/7.jpg';"
                          "DELETE FROM jobs WHERE source_path = '/bulk/8.jpg'");
        ledfx_assert_counts(f->l, 1, 0, 0, 101, 1, 1);
        ledfx_reopen_clean(f);
        ledfx_assert_counts(f->l, 1, 0, 0, 101, 1, 1);
        ledfx_assert_counts_real(f);
}

/* A kept count that went wrong is corruption to ledger_integrity_check(). */
static void test_counts_checked(void **state)
{
        struct ledfx *f = *state;
        uint64_t c[_JOB_STATE_MAX];

        ledfx_enqueue(f->l, "/u/a.jpg", "/m/a", 1, 1000);
        assert_int_equal(ledger_integrity_check(f->l), 0);
        ledfx_raw_exec(f, "UPDATE job_counts SET n = n + 1 WHERE state = 'done'");
        assert_int_equal(ledger_integrity_check(f->l), -EBADMSG);
        assert_non_null(strstr(ledger_errmsg(f->l), "job_counts: done holds 1"));
        ledfx_raw_exec(f, "UPDATE job_counts SET n = -1 WHERE state = 'done'");
        assert_int_equal(ledger_counts(f->l, c), -EBADMSG);
}

/* Lookups inside a group commit (what a walk of the upload folders makes), with transitions in
 * between: the reads see every write of the batch, and the commit leaves no transaction open. */
static void test_lookups_in_batch(void **state)
{
        struct ledfx *f = *state;
        struct source_info s = ledfx_src_make("/u/b.jpg", "/m/b", 2);
        struct job_detail *d = NULL;
        int64_t a, b = 0;

        a = ledfx_enqueue(f->l, "/u/a.jpg", "/m/a", 1, 1000);
        assert_int_equal(ledger_batch_begin(f->l), 0);
        assert_int_equal(ledger_known_stat(f->l, "/u/a.jpg", 1001, 1700000000000000001LL, 43), 1);
        assert_int_equal(ledger_known_stat(f->l, "/u/b.jpg", s.size, s.mtime_ns, s.ino), 0);
        assert_int_equal(ledger_enqueue(f->l, &s, 1100, &b), 1);
        assert_int_equal(ledger_known_stat(f->l, "/u/b.jpg", s.size, s.mtime_ns, s.ino), 1);
        assert_int_equal(ledfx_claim(f->l, 1200), a);
        assert_int_equal(ledger_get(f->l, a, &d), 1);
        assert_int_equal(d->job.state, JOB_RUNNING);
        d = job_detail_free(d);
        assert_int_equal(ledger_get(f->l, 999, &d), 0);
        ledfx_assert_counts(f->l, 1, 1, 0, 0, 0, 0);
        assert_int_equal(ledger_complete(f->l, a, ledfx_fence_of(f->l, a), NULL, 0, 1300), 0);
        ledfx_assert_counts(f->l, 1, 0, 0, 1, 0, 0);
        assert_int_equal(ledger_batch_commit(f->l), 0);

        /* No transaction is left open: another connection checkpoints the whole WAL (on
         * PostgreSQL: the server lists no connection idle in a transaction). */
        if (f->engine == LEDGER_ENGINE_POSTGRESQL) {
                assert_int_equal(ledfx_raw_int(f, "SELECT count(*) FROM pg_stat_activity "
                                                  "WHERE state LIKE 'idle in transaction%'"),
                                 0);
        } else {
                sqlite3 *h = NULL;
                sqlite3_stmt *st = NULL;

                assert_int_equal(sqlite3_open_v2(f->db, &h, SQLITE_OPEN_READWRITE, NULL),
                                 SQLITE_OK);
                assert_int_equal(
                        sqlite3_prepare_v2(h, "PRAGMA wal_checkpoint(TRUNCATE)", -1, &st, NULL),
                        SQLITE_OK);
                assert_int_equal(sqlite3_step(st), SQLITE_ROW);
                assert_int_equal(sqlite3_column_int(st, 0), 0); /* not busy */
                sqlite3_finalize(st);
                sqlite3_close(h);
        }
        assert_int_equal(ledfx_state_of(f->l, b), JOB_QUEUED);
        ledfx_assert_counts_real(f);
}

/* Listing the newest jobs of a state walks an index in order (no sort of every job in that
 * state), with ties on updated_us broken by id as before. SQLite only: it reads SQLite's
 * query plan (PostgreSQL's planner chooses by the table's statistics). */
static void test_list_state_uses_index(void **state)
{
        struct ledfx *f = *state;
        struct ledger_filter flt = { .state = JOB_DONE, .limit = 3 };
        struct job *jobs = NULL;
        sqlite3_stmt *st = NULL;
        sqlite3 *h = NULL;
        size_t n = 0;
        char plan[512] = "";

        ledfx_raw_bulk_done(f, 50);
        ledfx_raw_exec(f, "UPDATE jobs SET updated_us = 1000 WHERE id > 40");
        assert_int_equal(ledger_list(f->l, &flt, &jobs, &n), 0);
        assert_int_equal(n, 3);
        assert_int_equal(jobs[0].id, 50);
        assert_int_equal(jobs[1].id, 49);
        assert_int_equal(jobs[2].id, 48);
        for (size_t i = 0; i < n; i++)
                job_clear(&jobs[i]);
        free(jobs);

        assert_int_equal(sqlite3_open_v2(f->db, &h, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
        assert_int_equal(sqlite3_prepare_v2(h,
                                            "EXPLAIN QUERY PLAN SELECT id, state FROM jobs "
                                            "WHERE TRUE AND state = ?1 "
                                            "ORDER BY updated_us DESC, id DESC LIMIT ?4",
                                            -1, &st, NULL),
                         SQLITE_OK);
        while (sqlite3_step(st) == SQLITE_ROW)
                snprintf(plan + strlen(plan), sizeof plan - strlen(plan), "%s;",
                         (const char *)sqlite3_column_text(st, 3));
        sqlite3_finalize(st);
        sqlite3_close(h);
        assert_non_null(strstr(plan, "jobs_state_updated"));
        assert_null(strstr(plan, "TEMP B-TREE"));
}

static void test_list(void **state)
{
        struct ledfx *f = *state;
        struct ledger_filter flt = { .state = -1 };
        struct job *jobs = NULL;
        size_t n = 99;
        int64_t a;

        /* 60 jobs: even ones in watch /w1, odd ones in /w2; updated at 1000 + i. */
        for (unsigned i = 0; i < 60; i++) {
                struct source_info s;
                char path[64];
                int64_t id;

                snprintf(path, sizeof path, "/u/%u.jpg", i);
                s = ledfx_src_make(path, path, i);
                s.watch = i % 2 ? "/w2" : "/w1";
                assert_int_equal(ledger_enqueue(f->l, &s, 1000 + i, &id), 1);
                assert_int_equal(id, i + 1);
        }
        a = ledfx_claim(f->l, 5000); /* job 1, now updated at 5000 */
        assert_int_equal(a, 1);

        /* Default limit, newest first. */
        assert_int_equal(ledger_list(f->l, &flt, &jobs, &n), 0);
        assert_int_equal(n, 50);
        assert_int_equal(jobs[0].id, 1);
        assert_int_equal(jobs[0].state, JOB_RUNNING);
        assert_int_equal(jobs[1].id, 60);
        assert_int_equal(jobs[49].id, 12);
        for (size_t i = 1; i < n; i++)
                assert_true(jobs[i - 1].updated_usec >= jobs[i].updated_usec);
        for (size_t i = 0; i < n; i++)
                job_clear(&jobs[i]);
        free(jobs);

        /* State, watch, since and limit together. */
        flt = (struct ledger_filter){
                .state = JOB_QUEUED, .watch = "/w2", .since_usec = 1050, .limit = 3
        };
        assert_int_equal(ledger_list(f->l, &flt, &jobs, &n), 0);
        assert_int_equal(n, 3);
        assert_int_equal(jobs[0].id, 60);
        assert_int_equal(jobs[1].id, 58);
        assert_int_equal(jobs[2].id, 56);
        for (size_t i = 0; i < n; i++) {
                assert_string_equal(jobs[i].watch, "/w2");
                job_clear(&jobs[i]);
        }
        free(jobs);

        flt = (struct ledger_filter){ .state = JOB_QUEUED, .watch = "/w1", .since_usec = 1050 };
        assert_int_equal(ledger_list(f->l, &flt, &jobs, &n), 0);
        assert_int_equal(n, 5); /* 1050, 1052, ..., 1058 */
        assert_int_equal(jobs[4].id, 51);
        for (size_t i = 0; i < n; i++)
                job_clear(&jobs[i]);
        free(jobs);

        flt = (struct ledger_filter){ .state = JOB_RUNNING };
        assert_int_equal(ledger_list(f->l, &flt, &jobs, &n), 0);
        assert_int_equal(n, 1);
        assert_int_equal(jobs[0].id, 1);
        job_clear(&jobs[0]);
        free(jobs);

        flt = (struct ledger_filter){ .state = JOB_DEAD };
        jobs = NULL;
        assert_int_equal(ledger_list(f->l, &flt, &jobs, &n), 0);
        assert_int_equal(n, 0);
        free(jobs);

        /* NULL filter: everything, default limit. */
        assert_int_equal(ledger_list(f->l, NULL, &jobs, &n), 0);
        assert_int_equal(n, 50);
        for (size_t i = 0; i < n; i++)
                job_clear(&jobs[i]);
        free(jobs);

        flt = (struct ledger_filter){ .state = _JOB_STATE_MAX };
        assert_int_equal(ledger_list(f->l, &flt, &jobs, &n), -EINVAL);
}

static void test_list_limit_capped(void **state)
{
        struct ledfx *f = *state;
        struct ledger_filter flt = { .state = JOB_DONE, .limit = 50000 };
        struct job *jobs = NULL;
        size_t n = 0;

        ledfx_raw_bulk_done(f, 10050);
        assert_int_equal(ledger_list(f->l, &flt, &jobs, &n), 0);
        assert_int_equal(n, 10000);
        assert_int_equal(jobs[0].id, 10050);
        assert_string_equal(jobs[0].source_path, "/bulk/10050.jpg");
        assert_int_equal(jobs[9999].id, 51);
        for (size_t i = 0; i < n; i++)
                job_clear(&jobs[i]);
        free(jobs);
}

static void test_output_owner(void **state)
{
        struct ledfx *f = *state;
        char *owner = NULL;
        int64_t jpg, png, gif;

        jpg = ledfx_enqueue(f->l, "/u/a.jpg", "/m/a", 1, 1000);
        assert_int_equal(ledger_output_owner(f->l, "/m/a", "/u/a.png", &owner), 0);
        assert_null(owner);
        assert_int_equal(ledfx_claim(f->l, 1000), jpg);
        /* Running is not done. */
        assert_int_equal(ledger_output_owner(f->l, "/m/a", "/u/a.png", &owner), 0);
        assert_int_equal(ledger_complete(f->l, jpg, ledfx_fence_of(f->l, jpg), NULL, 0, 1100), 0);

        assert_int_equal(ledger_output_owner(f->l, "/m/a", "/u/a.png", &owner), 1);
        assert_string_equal(owner, "/u/a.jpg");
        free(owner);
        owner = NULL;
        assert_int_equal(ledger_output_owner(f->l, "/m/a", "/u/a.jpg", &owner), 0);
        assert_null(owner);
        assert_int_equal(ledger_output_owner(f->l, "/m/b", "/u/a.png", &owner), 0);

        /* The most recent done job wins. */
        png = ledfx_enqueue(f->l, "/u/a.png", "/m/a", 2, 1200);
        assert_int_equal(ledfx_claim(f->l, 1200), png);
        assert_int_equal(ledger_complete(f->l, png, ledfx_fence_of(f->l, png), NULL, 0, 1300), 0);
        gif = ledfx_enqueue(f->l, "/u/a.gif", "/m/a", 3, 1400);
        assert_int_equal(ledger_output_owner(f->l, "/m/a", "/u/a.gif", &owner), 1);
        assert_string_equal(owner, "/u/a.png");
        free(owner);
        owner = NULL;
        assert_int_equal(ledger_output_owner(f->l, "/m/a", "/u/a.png", &owner), 1);
        assert_string_equal(owner, "/u/a.jpg");
        free(owner);
        owner = NULL;
        assert_int_equal(ledfx_state_of(f->l, gif), JOB_QUEUED);
}

static void test_get_missing(void **state)
{
        struct ledfx *f = *state;
        struct job_detail *d = NULL;

        assert_int_equal(ledger_get(f->l, 12345, &d), 0);
        assert_null(d);
}

static void test_state_names(void **state)
{
        (void)state;
        for (int i = 0; i < _JOB_STATE_MAX; i++) {
                const char *name = job_state_name(i);
                assert_non_null(name);
                assert_int_equal(job_state_from_name(name), i);
        }
        assert_string_equal(job_state_name(JOB_RETRY), "retry");
        assert_string_equal(job_state_name(JOB_CANCELLED), "cancelled");
        assert_null(job_state_name(_JOB_STATE_MAX));
        assert_null(job_state_name((enum job_state) - 1));
        assert_int_equal(job_state_from_name("Queued"), -EINVAL);
        assert_int_equal(job_state_from_name(""), -EINVAL);
        assert_int_equal(job_state_from_name(NULL), -EINVAL);
        assert_null(job_free(NULL));
        assert_null(job_detail_free(NULL));
        assert_null(ledger_free(NULL));
        job_clear(NULL);
}

int main(void)
{
#define T(t) cmocka_unit_test_setup_teardown(t, ledfx_setup, ledfx_teardown)
        const struct CMUnitTest tests[] = {
                T(test_counts),           T(test_counts_kept), T(test_counts_checked),
                T(test_lookups_in_batch), T(test_list),        T(test_list_limit_capped),
                T(test_output_owner),     T(test_get_missing), T(test_state_names),
        };

        const struct CMUnitTest sqlite_only[] = {
                T(test_list_state_uses_index),
        };
#undef T

        umask(022);
        return ledfx_run("ledger-query", tests, ELEMENTSOF(tests), sqlite_only,
                         ELEMENTSOF(sqlite_only));
}
