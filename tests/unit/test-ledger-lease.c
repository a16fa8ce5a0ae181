/* SPDX-License-Identifier: MIT */
/*
 * test-ledger-lease.c - leases across nodes (ledger-lease.c), on both engines: a node's
 * recovery takes back only its own jobs, a heartbeat renews only its own leases (and records
 * the node on PostgreSQL), a renewal is refused to a claim taken over, a lapsed lease is
 * rescued exactly once, and enqueues of the same uploads from several processes at once make
 * one job per source.
 */
#include <errno.h>
#include <inttypes.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#include "daemon/ledger.h"
#include "shared/macro.h"

#include "ledger-fixture.h"

/* Claims the next job for `owner` with a lease of lease_us; returns its id. */
static int64_t claim_as(ledger *l, const char *owner, int64_t now, int64_t lease_us)
{
        struct job *j = NULL;
        int64_t id;

        assert_int_equal(ledger_claim(l, owner, now, lease_us, JOB_PRIORITY_BACKGROUND, &j), 1);
        id = j->id;
        job_free(j);
        return id;
}

/* Whether job id is among the lapsed leases at now. */
static bool lapsed(ledger *l, int64_t id, int64_t now)
{
        _cleanup_free_ struct ledger_lapsed *v = NULL;
        size_t n = 0;

        assert_int_equal(ledger_list_lapsed(l, now, &v, &n), 0);
        for (size_t i = 0; i < n; i++)
                if (v[i].id == id)
                        return true;
        return false;
}

static void test_recover_node_takes_its_own(void **state)
{
        struct ledfx *f = *state;
        int64_t a, b, c;
        _cleanup_free_ int64_t *ids = NULL;
        size_t n = 0;

        ledfx_enqueue(f->l, "/srv/uploads/a.jpg", "/srv/media/a", 1, 100);
        ledfx_enqueue(f->l, "/srv/uploads/b.jpg", "/srv/media/b", 2, 100);
        ledfx_enqueue(f->l, "/srv/uploads/c.jpg", "/srv/media/c", 3, 100);
        a = claim_as(f->l, "n1:10", 200, LEDFX_LEASE_US);
        b = claim_as(f->l, "n2:20", 200, LEDFX_LEASE_US);
        /* "n10" begins with "n1" but is another node. */
        c = claim_as(f->l, "n10:30", 200, LEDFX_LEASE_US);

        assert_int_equal(ledger_list_staged_node(f->l, "n1", &ids, &n), 0);
        assert_int_equal(n, 0);
        assert_int_equal(ledger_recover_node(f->l, "n1", 300), 1);
        assert_int_equal(ledfx_state_of(f->l, a), JOB_QUEUED);
        assert_int_equal(ledfx_attempts_of(f->l, a), 1);
        assert_int_equal(ledfx_state_of(f->l, b), JOB_RUNNING);
        assert_int_equal(ledfx_state_of(f->l, c), JOB_RUNNING);
        /* Every node's (as ledger_recover()). */
        assert_int_equal(ledger_recover_node(f->l, NULL, 400), 2);
        assert_int_equal(ledfx_state_of(f->l, c), JOB_QUEUED);
        ledfx_assert_counts_real(f);
}

static void test_staged_of_node(void **state)
{
        struct ledfx *f = *state;
        struct job_output out = { .variant = "s",
                                  .path = "/srv/media/a_s.webp",
                                  .format = "webp",
                                  .tmp_path = "/srv/media/.imgd-1-0-0.tmp" };
        _cleanup_free_ int64_t *ids = NULL;
        int64_t a;
        size_t n = 0;

        memset(out.sha256, 'a', HASH_HEX_SIZE - 1);
        ledfx_enqueue(f->l, "/srv/uploads/a.jpg", "/srv/media/a", 1, 100);
        a = claim_as(f->l, "n1:10", 200, LEDFX_LEASE_US);
        assert_int_equal(ledger_stage(f->l, a, ledfx_fence_of(f->l, a), &out, 1, false, NULL, 250),
                         0);
        assert_int_equal(ledger_list_staged_node(f->l, "n2", &ids, &n), 0);
        assert_int_equal(n, 0);
        free(ids);
        ids = NULL;
        assert_int_equal(ledger_list_staged_node(f->l, "n1", &ids, &n), 0);
        assert_int_equal(n, 1);
        assert_int_equal(ids[0], a);
        /* Staged jobs stay for the node to publish. */
        assert_int_equal(ledger_recover_node(f->l, "n1", 300), 0);
}

static void test_heartbeat_renews_own_leases(void **state)
{
        struct ledfx *f = *state;
        struct ledger_node_beat beat = { .node = "n1",
                                         .owner = "n1:10",
                                         .pid = 10,
                                         .started_usec = 50,
                                         .workers = 2,
                                         .running = 1,
                                         .version = "test" };
        int64_t a, b;

        ledfx_enqueue(f->l, "/srv/uploads/a.jpg", "/srv/media/a", 1, 100);
        ledfx_enqueue(f->l, "/srv/uploads/b.jpg", "/srv/media/b", 2, 100);
        /* Leases of nothing: lapsed at once. */
        a = claim_as(f->l, "n1:10", 200, 0);
        b = claim_as(f->l, "n2:20", 200, 0);
        usleep(2000);
        assert_true(lapsed(f->l, a, 300));
        assert_true(lapsed(f->l, b, 300));

        /* n1's heartbeat renews its lapsed lease (no node rescued it) and none of n2's. */
        assert_int_equal(ledger_heartbeat(f->l, &beat, LEDFX_LEASE_US, 300), 1);
        assert_false(lapsed(f->l, a, 400));
        assert_true(lapsed(f->l, b, 400));
        if (f->engine == LEDGER_ENGINE_POSTGRESQL) {
                assert_int_equal(ledfx_raw_int(f, "SELECT count(*) FROM nodes WHERE node = 'n1' "
                                                  "AND owner = 'n1:10' AND pid = 10 AND "
                                                  "workers = 2 AND running = 1 AND "
                                                  "node_clock_us = 300"),
                                 1);
                /* The heartbeat's time is the database's. */
                assert_true(ledfx_raw_int(f, "SELECT abs(heartbeat_us - " LEDFX_PG_NOW_US
                                             ") < 60000000 FROM nodes") == 1);
                beat.running = 0;
                assert_int_equal(ledger_heartbeat(f->l, &beat, LEDFX_LEASE_US, 500), 1);
                assert_int_equal(ledfx_raw_int(f, "SELECT count(*) FROM nodes"), 1);
                assert_int_equal(ledfx_raw_int(f, "SELECT running FROM nodes"), 0);
        }
}

static void test_renew_refuses_a_lost_claim(void **state)
{
        struct ledfx *f = *state;
        struct ledger_renewal v[2] = {};
        int64_t a, b, fence_a;

        ledfx_enqueue(f->l, "/srv/uploads/a.jpg", "/srv/media/a", 1, 100);
        ledfx_enqueue(f->l, "/srv/uploads/b.jpg", "/srv/media/b", 2, 100);
        a = claim_as(f->l, "n1:10", 200, 0);
        b = claim_as(f->l, "n1:10", 200, LEDFX_LEASE_US);
        fence_a = ledfx_fence_of(f->l, a);
        usleep(2000);

        v[0] = (struct ledger_renewal){ .id = a, .fence = fence_a };
        v[1] = (struct ledger_renewal){ .id = b, .fence = ledfx_fence_of(f->l, b) };
        assert_int_equal(ledger_renew(f->l, v, 2, LEDFX_LEASE_US, 300), 0);
        assert_int_equal(v[0].result, 0);
        assert_int_equal(v[1].result, 0);
        assert_false(lapsed(f->l, a, 400));

        /* Rescued, and claimed by n2: n1's token is refused, and told what holds it now. */
        assert_int_equal(ledger_fail(f->l, a, fence_a, "lost", true, 500, 500), 0);
        assert_int_equal(claim_as(f->l, "n2:20", 600, LEDFX_LEASE_US), a);
        v[0] = (struct ledger_renewal){ .id = a, .fence = fence_a };
        assert_int_equal(ledger_renew(f->l, v, 1, LEDFX_LEASE_US, 700), 0);
        assert_int_equal(v[0].result, -ESTALE);
        assert_int_equal(v[0].state, JOB_RUNNING);
        assert_int_equal(v[0].now_fence, fence_a + 1);
        assert_string_equal(v[0].owner, "n2:20");
        /* No such job: refused too. */
        v[0] = (struct ledger_renewal){ .id = 999, .fence = 1 };
        assert_int_equal(ledger_renew(f->l, v, 1, LEDFX_LEASE_US, 700), 0);
        assert_int_equal(v[0].result, -ESTALE);
}

static void test_fail_lapsed_once(void **state)
{
        struct ledfx *f = *state;
        _cleanup_free_ struct ledger_lapsed *v = NULL;
        int64_t a, b, fence_a;
        size_t n = 0;

        ledfx_enqueue(f->l, "/srv/uploads/a.jpg", "/srv/media/a", 1, 100);
        ledfx_enqueue(f->l, "/srv/uploads/b.jpg", "/srv/media/b", 2, 100);
        a = claim_as(f->l, "n1:10", 200, 0);
        b = claim_as(f->l, "n2:20", 200, LEDFX_LEASE_US);
        fence_a = ledfx_fence_of(f->l, a);
        usleep(2000);

        assert_int_equal(ledger_list_lapsed(f->l, 300, &v, &n), 0);
        assert_int_equal(n, 1);
        assert_int_equal(v[0].id, a);
        assert_int_equal(v[0].fence, fence_a);
        assert_string_equal(v[0].owner, "n1:10");
        assert_false(v[0].staged);

        /* A lease still held is not rescued; nor one named by an old token. */
        assert_int_equal(ledger_fail_lapsed(f->l, b, ledfx_fence_of(f->l, b), "x", true, 300, 300),
                         -ESTALE);
        assert_int_equal(ledfx_state_of(f->l, b), JOB_RUNNING);
        assert_int_equal(ledger_fail_lapsed(f->l, a, fence_a - 1, "x", true, 300, 300), -ESTALE);
        assert_int_equal(ledfx_state_of(f->l, a), JOB_RUNNING);

        /* The first rescue counts the attempt; the second finds nothing to rescue. */
        assert_int_equal(
                ledger_fail_lapsed(f->l, a, fence_a, "lease of n1:10 lapsed", true, 300, 300), 0);
        assert_int_equal(ledfx_state_of(f->l, a), JOB_RETRY);
        assert_int_equal(ledger_fail_lapsed(f->l, a, fence_a, "again", true, 300, 300), -ESTALE);
        {
                _cleanup_(job_detail_freep) struct job_detail *d = ledfx_get(f->l, a);

                assert_int_equal(d->n_errors, 1);
                assert_string_equal(d->errors[0].message, "lease of n1:10 lapsed");
        }
        /* The lost claim can no longer stage or complete. */
        assert_int_equal(ledger_complete(f->l, a, fence_a, NULL, 0, 400), -ESTALE);
        ledfx_assert_counts_real(f);
}

/* Children enqueueing the same sources at once, each on a connection of its own. */
#define RACERS 3
#define SOURCES 60

static int enqueue_all(ledger *l, int racer)
{
        int bad = 0;

        (void)racer;
        for (int i = 0; i < SOURCES; i++) {
                char path[64], key[64];
                struct source_info s;
                int64_t id;

                snprintf(path, sizeof path, "/srv/uploads/%d.jpg", i);
                snprintf(key, sizeof key, "/srv/media/%d", i);
                s = ledfx_src_make(path, key, (unsigned)i + 1);
                bad += ledger_enqueue(l, &s, 100 + i, &id) < 0;
        }
        return bad;
}

static void test_concurrent_enqueue_one_job_per_source(void **state)
{
        struct ledfx *f = *state;

        ledfx_race(f, RACERS, enqueue_all);
        assert_int_equal(ledfx_raw_int(f, "SELECT count(*) FROM jobs"), SOURCES);
        assert_int_equal(ledfx_raw_int(f, "SELECT count(*) FROM jobs WHERE state = 'queued'"),
                         SOURCES);
        ledfx_assert_counts_real(f);
}

int main(void)
{
#define T(t) cmocka_unit_test_setup_teardown(t, ledfx_setup, ledfx_teardown)
        const struct CMUnitTest tests[] = {
                T(test_recover_node_takes_its_own),
                T(test_staged_of_node),
                T(test_heartbeat_renews_own_leases),
                T(test_renew_refuses_a_lost_claim),
                T(test_fail_lapsed_once),
                T(test_concurrent_enqueue_one_job_per_source),
        };
#undef T

        umask(022);
        return ledfx_run("ledger-lease", tests, ELEMENTSOF(tests), NULL, 0);
}
