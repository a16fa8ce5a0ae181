/* SPDX-License-Identifier: MIT */
/*
 * test-cluster-notify.c - two real imgd nodes on one PostgreSQL ledger
 * (tests/tools/cluster-fixture.c) hear each other through LISTEN/NOTIFY (issue 18). n1 watches the
 * upload tree recursively and is paused (it records jobs and claims none); n2 has the same watch
 * without recursion, so it never sees the uploads in a subfolder, and its workers are the only ones
 * free. Its poll (the heartbeat, a third of its 60 s lease) comes every 20 s.
 *
 *   test_idle_node_woken  three uploads, one after the other: each is rendered by n2 within
 *                         3 s of its arrival, far sooner than its poll (n2 can only have
 *                         heard of it by n1's notification).
 *   test_events_cluster_wide  a subscriber of each node sees the job events of both nodes,
 *                         each once (a node's own events are not told twice), each naming its
 *                         node: "queued" by n1 and "done" by n2, on n1 and on n2 alike.
 *
 * PostgreSQL (Debian package postgresql) must be installed: a missing server fails the test.
 */
#include <jansson.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "cluster-fixture.h"
#include "pg-fixture.h"
#include "testutil.h"

#define LEASE_S 60
#define WOKEN_WITHIN_US (3 * 1000000)
#define PIPE "( { name = \"s\"; width = 64; height = 64; fit = \"cover\"; format = \"webp\"; } )"

/* n1 watches the uploads recursively, n2 not: only n1 sees the subfolder "sub". */
static void pair_setup(struct clfx *c)
{
        char *sub;

        clfx_setup(c, 2);
        sub = tu_path("%s/sub", c->uploads);
        assert_int_equal(mkdir(sub, 0755), 0);
        free(sub);
        for (unsigned i = 0; i < 2; i++)
                clfx_configure(c, i,
                               &(struct clfx_node_config){
                                       .pipeline = PIPE,
                                       .watch = i == 0 ? "recursive = true;" : "recursive = false;",
                                       .lease_s = LEASE_S,
                               });
}

/* Starts both nodes, n1 paused: only n2 claims. */
static void pair_start(struct clfx *c)
{
        tu_daemon_start(&c->nodes[0]);
        assert_int_equal(tu_imgctl(&c->nodes[0], NULL, "pause", NULL), 0);
        tu_daemon_start(&c->nodes[1]);
}

/* Drops image i into the subfolder (made outside the tree, then renamed in). */
static void drop(struct clfx *c, int i)
{
        char *from = tu_path("%s/img%d.jpg", c->stage, i);
        char *to = tu_path("%s/sub/img%d.jpg", c->uploads, i);

        tu_make_image(from, 320, 240, "jpeg", false);
        assert_int_equal(rename(from, to), 0);
        free(from);
        free(to);
}

static void test_idle_node_woken(void **state)
{
        struct clfx p;

        (void)state;
        pair_setup(&p);
        pair_start(&p);
        /* n2's first poll (its first heartbeat, at its start) has passed. */
        sleep(1);
        for (int i = 0; i < 3; i++) {
                int64_t took;

                drop(&p, i);
                took = clfx_wait_done(&p, i + 1, 60);
                printf("upload %d rendered by the idle node %.3f s after it arrived\n", i,
                       (double)took / 1e6);
                if (took > WOKEN_WITHIN_US)
                        fail_msg("upload %d took %.1f s: the idle node was not woken (its poll "
                                 "comes every %d s)",
                                 i, (double)took / 1e6, LEASE_S / 3);
        }
        clfx_cleanup(&p);
}

/* How many times each (event, job) a subscriber saw, and from which node. */
struct seen {
        unsigned queued[8], done[8];
        char queued_node[8][8], done_node[8][8];
};

/* Reads s's events until `quiet_ms` pass without one. */
static void sub_collect(struct tu_sub *s, int64_t first_id, struct seen *ret, int quiet_ms)
{
        char *line;

        while ((line = tu_sub_line(s, quiet_ms))) {
                json_t *ev = json_loads(line, 0, NULL);
                const char *name = json_string_value(json_object_get(ev, "event"));
                json_t *job = json_object_get(ev, "job");
                json_int_t k = json_integer_value(json_object_get(job, "id")) - first_id;
                const char *node = json_string_value(json_object_get(job, "node"));

                if (name && json_is_object(job) && k >= 0 && k < 8) {
                        if (strcmp(name, "queued") == 0) {
                                ret->queued[k]++;
                                snprintf(ret->queued_node[k], 8, "%s", node ? node : "-");
                        } else if (strcmp(name, "done") == 0) {
                                ret->done[k]++;
                                snprintf(ret->done_node[k], 8, "%s", node ? node : "-");
                        }
                }
                json_decref(ev);
                free(line);
        }
}

static void test_events_cluster_wide(void **state)
{
        struct clfx p;
        struct tu_sub s[2];
        struct seen seen[2] = {};
        int64_t first;

        (void)state;
        pair_setup(&p);
        pair_start(&p);
        for (int i = 0; i < 2; i++) {
                tu_sub_open(&s[i], &p.nodes[i]);
                free(tu_sub_line(&s[i], 5000)); /* {"subscribed":true} */
        }
        for (int i = 0; i < 3; i++)
                drop(&p, i);
        clfx_wait_done(&p, 3, 60);
        first = pgfx_int(p.conninfo, "SELECT min(id) FROM jobs");
        for (int i = 0; i < 2; i++)
                sub_collect(&s[i], first, &seen[i], 1500);
        for (int i = 0; i < 2; i++) {
                for (int k = 0; k < 3; k++) {
                        if (seen[i].queued[k] != 1 || seen[i].done[k] != 1)
                                fail_msg("subscriber of n%d saw job %lld queued %u time(s), done "
                                         "%u time(s) (once each expected)",
                                         i + 1, (long long)(first + k), seen[i].queued[k],
                                         seen[i].done[k]);
                        assert_string_equal(seen[i].queued_node[k], "n1");
                        assert_string_equal(seen[i].done_node[k], "n2");
                }
                close(s[i].fd);
        }
        clfx_cleanup(&p);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_idle_node_woken),
                cmocka_unit_test(test_events_cluster_wide),
        };
        int r;

        /* IMGD_TEST_FILTER=test_events_* runs only the cases whose names match. */
        if (getenv("IMGD_TEST_FILTER"))
                cmocka_set_test_filter(getenv("IMGD_TEST_FILTER"));
        r = cmocka_run_group_tests(tests, NULL, NULL);
        pgfx_server_stop();
        return r;
}
