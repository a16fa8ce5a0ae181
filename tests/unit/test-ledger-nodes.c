/* SPDX-License-Identifier: MIT */
/*
 * test-ledger-nodes.c - what several nodes do to one ledger at the same moment, on both
 * engines, each racer a process with a connection of its own: claims never run two jobs of
 * one output at once; reconciliation and drops from every node queue one job per source; and
 * the nodes of a cluster as their heartbeats recorded them (PostgreSQL; none on SQLite); a
 * node that lost its claim cannot cancel or relocate the job another node now runs.
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

#define RACERS 4

/* Pairs of jobs of one output each (two sources rendered to one output key: a source
 * replaced under another name, two watches on one output), adjacent in claim order. */
#define OUTPUTS 40

static int claim_all(ledger *l, int racer)
{
        char owner[32];
        int bad = 0;

        snprintf(owner, sizeof owner, "n%d:%d", racer, 100 + racer);
        for (;;) {
                struct job *j = NULL;
                int r = ledger_claim(l, owner, 1000, LEDFX_LEASE_US, JOB_PRIORITY_BACKGROUND, &j);

                if (r <= 0) {
                        bad += r < 0;
                        break;
                }
                job_free(j);
                /* Committed as the daemon's next transition would: an SQLite ledger's claims
                 * wait in a write transaction, which holds the file's write lock (one imgd
                 * per ledger file), and the racers are processes of their own. */
                bad += ledger_commit_claims(l) < 0;
        }
        return bad;
}

static void test_concurrent_claims_one_running_per_output(void **state)
{
        struct ledfx *f = *state;

        for (int i = 0; i < OUTPUTS; i++)
                for (int k = 0; k < 2; k++) {
                        char path[64], key[64];

                        snprintf(path, sizeof path, "/srv/uploads/%d-%d.jpg", i, k);
                        snprintf(key, sizeof key, "/srv/media/%d", i);
                        ledfx_enqueue(f->l, path, key, (unsigned)(2 * i + k + 1), 100);
                }

        ledfx_race(f, RACERS, claim_all);

        /* Every output claimed once, none twice: its second job waits for the first. */
        assert_int_equal(ledfx_raw_int(f, "SELECT count(*) FROM (SELECT output_key FROM jobs "
                                          "WHERE state = 'running' GROUP BY output_key "
                                          "HAVING count(*) > 1) AS twice"),
                         0);
        assert_int_equal(ledfx_raw_int(f, "SELECT count(*) FROM jobs WHERE state = 'running'"),
                         OUTPUTS);
        assert_int_equal(ledfx_raw_int(f, "SELECT count(*) FROM jobs WHERE state = 'queued'"),
                         OUTPUTS);
        ledfx_assert_counts_real(f);
}

/* Done jobs 1..SOURCES, one per source, that every racer reconciles or drops from. */
#define SOURCES 150
#define ROUNDS 3

static int reconcile_all(ledger *l, int racer)
{
        int bad = 0;

        for (int round = 0; round < ROUNDS; round++)
                for (int64_t id = 1; id <= SOURCES; id++) {
                        int r;

                        /* Half of them drop, half reconcile, in turns across racers. */
                        if ((id + racer) % 2)
                                r = ledger_reconcile(l, id, "[\"thumb\"]", 2000 + id, NULL);
                        else
                                r = ledger_drop(l, id, "[\"old\"]", 2000 + id, NULL);
                        bad += r < 0;
                }
        return bad;
}

static void test_concurrent_reconcile_one_job_per_source(void **state)
{
        struct ledfx *f = *state;
        _cleanup_free_ char *newer = NULL, *twice = NULL;

        ledfx_raw_bulk_done(f, SOURCES);

        ledfx_race(f, RACERS, reconcile_all);

        /* One reconciliation or drop per source: once one is queued the done job is no
         * longer its source's current one, and the others find that under the lock. */
        newer = ledfx_xasprintf("SELECT count(*) FROM jobs WHERE id > %d", SOURCES);
        twice = ledfx_xasprintf("SELECT count(*) FROM (SELECT source_path FROM jobs "
                                "WHERE id > %d GROUP BY source_path HAVING count(*) > 1) AS t",
                                SOURCES);
        assert_int_equal(ledfx_raw_int(f, newer), SOURCES);
        assert_int_equal(ledfx_raw_int(f, twice), 0);
        ledfx_assert_counts_real(f);
}

/* Claims the next job for `owner` with a lease of lease_us; returns it (fence and all). */
static struct job *claim_as(ledger *l, const char *owner, int64_t now, int64_t lease_us)
{
        struct job *j = NULL;

        assert_int_equal(ledger_claim(l, owner, now, lease_us, JOB_PRIORITY_BACKGROUND, &j), 1);
        return j;
}

/* A node that lost its claim (rescued, claimed by another) can neither cancel nor relocate the
 * job the other runs now; an operator's cancel never takes a running job; a cancel that does
 * (ledger_cancel(), for no claim) makes the running node's fence check and completion
 * refused. */
static void test_stale_node_cannot_cancel_or_relocate(void **state)
{
        struct ledfx *f = *state;
        struct ledger_renewal rn;
        struct job *j1, *j2;
        int64_t id;

        id = ledfx_enqueue(f->l, "/srv/uploads/a.jpg", "/srv/media/a", 1, 100);
        /* n1's lease lapses at once (1 us); n2 rescues it and claims it again. */
        j1 = claim_as(f->l, "n1:1", 200, 1);
        usleep(2000);
        assert_int_equal(ledger_fail_lapsed(f->l, id, j1->fence, "lease lapsed", true, 0, 300), 0);
        j2 = claim_as(f->l, "n2:2", 400, LEDFX_LEASE_US);
        assert_int_equal(j2->id, id);
        assert_true(j2->fence > j1->fence);

        /* n1, stale, finds the source superseded or its watch moved: refused, n2's job stays. */
        assert_int_equal(ledger_cancel_claim(f->l, id, j1->fence, "superseded", 500), -ESTALE);
        assert_int_equal(ledger_relocate(f->l, id, j1->fence, "q", "/elsewhere/a"), -ESTALE);
        assert_int_equal(ledfx_state_of(f->l, id), JOB_RUNNING);
        assert_int_equal(ledfx_fence_of(f->l, id), j2->fence);
        {
                struct job_detail *d = ledfx_get(f->l, id);

                assert_string_equal(d->job.output_key, "/srv/media/a");
                job_detail_free(d);
        }

        /* An operator's cancel on any node: refused while it runs. */
        assert_int_equal(ledger_cancel_waiting(f->l, id, "cancelled by operator", 600), -ESTALE);
        assert_int_equal(ledfx_state_of(f->l, id), JOB_RUNNING);

        /* A cancel for no claim: n2's fence check and completion are refused after it. */
        assert_int_equal(ledger_cancel(f->l, id, "cancelled", 700), 0);
        rn = (struct ledger_renewal){ .id = id, .fence = j2->fence };
        assert_int_equal(ledger_renew(f->l, &rn, 1, LEDFX_LEASE_US, 800), 0);
        assert_int_equal(rn.result, -ESTALE);
        assert_int_equal(rn.state, JOB_CANCELLED);
        assert_int_equal(ledger_complete(f->l, id, j2->fence, NULL, 0, 900), -ESTALE);
        assert_int_equal(ledfx_state_of(f->l, id), JOB_CANCELLED);

        /* The node's own cancel of the job it runs under its claim. */
        id = ledfx_enqueue(f->l, "/srv/uploads/b.jpg", "/srv/media/b", 2, 1000);
        job_free(j1);
        j1 = claim_as(f->l, "n1:1", 1100, LEDFX_LEASE_US);
        assert_int_equal(ledger_cancel_waiting(f->l, id, "operator", 1150), -ESTALE);
        assert_int_equal(ledger_cancel_claim(f->l, id, j1->fence, "source removed", 1200), 0);
        assert_int_equal(ledfx_state_of(f->l, id), JOB_CANCELLED);
        assert_int_equal(ledger_cancel_claim(f->l, id, j1->fence, "again", 1300), -ESTALE);
        job_free(j1);
        job_free(j2);
        ledfx_assert_counts_real(f);
}

static void beat(ledger *l, const char *node, const char *owner, unsigned workers)
{
        struct ledger_node_beat b = {
                .node = node,
                .owner = owner,
                .pid = 4242,
                .started_usec = 1000,
                .workers = workers,
                .running = 7, /* what the node says; the list counts the ledger's */
                .version = "9.9",
        };

        assert_true(ledger_heartbeat(l, &b, LEDFX_LEASE_US, 5000) >= 0);
}

static void test_list_nodes(void **state)
{
        struct ledfx *f = *state;
        struct ledger_node *v = NULL;
        size_t n = 99;
        struct job *j = NULL;

        beat(f->l, "n2", "n2:4242", 3);
        beat(f->l, "n1", "n1:4242", 2);
        ledfx_enqueue(f->l, "/srv/uploads/a.jpg", "/srv/media/a", 1, 100);
        assert_int_equal(
                ledger_claim(f->l, "n1:4242", 200, LEDFX_LEASE_US, JOB_PRIORITY_BACKGROUND, &j), 1);
        job_free(j);

        assert_int_equal(ledger_list_nodes(f->l, LEDFX_LEASE_US, &v, &n), 0);
        if (f->engine == LEDGER_ENGINE_SQLITE) {
                /* One node, no nodes table. */
                assert_int_equal(n, 0);
                ledger_nodes_free(v, n);
                return;
        }
        assert_int_equal(n, 2);
        assert_string_equal(v[0].node, "n1");
        assert_string_equal(v[0].owner, "n1:4242");
        assert_string_equal(v[0].version, "9.9");
        assert_int_equal(v[0].workers, 2);
        assert_int_equal(v[0].running, 1);
        assert_true(v[0].alive);
        assert_true(v[0].age_usec >= 0 && v[0].age_usec < LEDFX_LEASE_US);
        assert_string_equal(v[1].node, "n2");
        assert_int_equal(v[1].workers, 3);
        assert_int_equal(v[1].running, 0);
        assert_true(v[1].alive);
        ledger_nodes_free(v, n);

        /* n2's last heartbeat a lease and more ago, by the database's clock. */
        ledfx_raw_exec(f, "UPDATE nodes SET heartbeat_us = heartbeat_us - 61000000 "
                          "WHERE node = 'n2'");
        assert_int_equal(ledger_list_nodes(f->l, LEDFX_LEASE_US, &v, &n), 0);
        assert_int_equal(n, 2);
        assert_true(v[0].alive);
        assert_false(v[1].alive);
        assert_true(v[1].age_usec >= 61000000);
        ledger_nodes_free(v, n);
}

int main(void)
{
#define T(t) cmocka_unit_test_setup_teardown(t, ledfx_setup, ledfx_teardown)
        const struct CMUnitTest tests[] = {
                T(test_concurrent_claims_one_running_per_output),
                T(test_concurrent_reconcile_one_job_per_source),
                T(test_stale_node_cannot_cancel_or_relocate),
                T(test_list_nodes),
        };
#undef T

        umask(022);
        return ledfx_run("ledger-nodes", tests, ELEMENTSOF(tests), NULL, 0);
}
