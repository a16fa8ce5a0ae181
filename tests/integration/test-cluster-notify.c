/* SPDX-License-Identifier: MIT */
/*
 * test-cluster-notify.c - two real imgd nodes on one PostgreSQL ledger (tests/tools/pg-fixture.c)
 * hear each other through LISTEN/NOTIFY (issue 18). n1 watches the upload tree recursively and
 * is paused (it records jobs and claims none); n2 has the same watch without recursion, so it
 * never sees the uploads in a subfolder, and its workers are the only ones free. Its poll (the
 * heartbeat, a third of its 60 s lease) comes every 20 s.
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

#include "pg-fixture.h"
#include "testutil.h"

#define LEASE_S 60
#define WOKEN_WITHIN_US (3 * 1000000)
#define PIPE "( { name = \"s\"; width = 64; height = 64; fit = \"cover\"; format = \"webp\"; } )"

struct pair {
        char *root, *uploads, *sub, *media, *stage, *conninfo;
        struct tu_daemon n[2];
};

static void pair_setup(struct pair *p)
{
        *p = (struct pair){};
        p->conninfo = pgfx_schema_new();
        p->root = tu_mkdtemp();
        p->uploads = tu_path("%s/uploads", p->root);
        p->sub = tu_path("%s/uploads/sub", p->root);
        p->media = tu_path("%s/media", p->root);
        p->stage = tu_path("%s/stage", p->root);
        assert_int_equal(mkdir(p->uploads, 0755), 0);
        assert_int_equal(mkdir(p->sub, 0755), 0);
        assert_int_equal(mkdir(p->stage, 0755), 0);
        for (int i = 0; i < 2; i++) {
                struct tu_daemon *d = &p->n[i];
                char *conf;

                *d = (struct tu_daemon){};
                d->root = tu_path("%s/n%d", p->root, i + 1);
                assert_int_equal(mkdir(d->root, 0755), 0);
                d->uploads = strdup(p->uploads);
                d->media = strdup(p->media);
                d->state = tu_path("%s/state", d->root);
                d->config = tu_path("%s/imgd.conf", d->root);
                d->socket = tu_path("%s/imgd.sock", d->root);
                d->log = tu_path("%s/imgd.log", d->root);
                conf = tu_path("state_dir = \"%s\";\nsocket = \"%s\";\nworkers = 1;\n"
                               "watch = ( { path = \"%s\"; output = \"%s\"; pipeline = \"p\"; "
                               "recursive = %s; } );\n"
                               "pipelines = { p = %s; };\n"
                               "ledger = { engine = \"postgresql\"; conninfo = \"%s\"; "
                               "node = \"n%d\"; lease = %d; };\n",
                               d->state, d->socket, p->uploads, p->media, i == 0 ? "true" : "false",
                               PIPE, p->conninfo, i + 1, LEASE_S);
                tu_write_file(d->config, conf, (size_t)-1);
                free(conf);
        }
}

static void pair_cleanup(struct pair *p)
{
        for (int i = 0; i < 2; i++)
                tu_daemon_cleanup(&p->n[i]);
        tu_rm_rf(p->root);
        free(p->root);
        free(p->uploads);
        free(p->sub);
        free(p->media);
        free(p->stage);
        free(p->conninfo);
}

/* Starts both nodes, n1 paused: only n2 claims. */
static void pair_start(struct pair *p)
{
        tu_daemon_start(&p->n[0]);
        assert_int_equal(tu_imgctl(&p->n[0], NULL, "pause", NULL), 0);
        tu_daemon_start(&p->n[1]);
}

/* Drops image i into the subfolder (made outside the tree, then renamed in). */
static void drop(struct pair *p, int i)
{
        char *from = tu_path("%s/img%d.jpg", p->stage, i);
        char *to = tu_path("%s/img%d.jpg", p->sub, i);

        tu_make_image(from, 320, 240, "jpeg", false);
        assert_int_equal(rename(from, to), 0);
        free(from);
        free(to);
}

static int64_t done_count(struct pair *p)
{
        return pgfx_int(p->conninfo, "SELECT count(*) FROM jobs WHERE state = 'done'");
}

/* Waits for `n` done jobs; returns how long it took (microseconds) or fails after 60 s. */
static int64_t wait_done(struct pair *p, int64_t n)
{
        int64_t t0 = tu_now_us();

        while (done_count(p) < n) {
                if (tu_now_us() - t0 > 60 * 1000000LL)
                        fail_msg("only %lld of %lld jobs done after 60 s", (long long)done_count(p),
                                 (long long)n);
                usleep(20 * 1000);
        }
        return tu_now_us() - t0;
}

static void test_idle_node_woken(void **state)
{
        struct pair p;

        (void)state;
        pair_setup(&p);
        pair_start(&p);
        /* n2's first poll (its first heartbeat, at its start) has passed. */
        sleep(1);
        for (int i = 0; i < 3; i++) {
                int64_t took;

                drop(&p, i);
                took = wait_done(&p, i + 1);
                printf("upload %d rendered by the idle node %.3f s after it arrived\n", i,
                       (double)took / 1e6);
                if (took > WOKEN_WITHIN_US)
                        fail_msg("upload %d took %.1f s: the idle node was not woken (its poll "
                                 "comes every %d s)",
                                 i, (double)took / 1e6, LEASE_S / 3);
        }
        pair_cleanup(&p);
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
        struct pair p;
        struct tu_sub s[2];
        struct seen seen[2] = {};
        int64_t first;

        (void)state;
        pair_setup(&p);
        pair_start(&p);
        for (int i = 0; i < 2; i++) {
                tu_sub_open(&s[i], &p.n[i]);
                free(tu_sub_line(&s[i], 5000)); /* {"subscribed":true} */
        }
        for (int i = 0; i < 3; i++)
                drop(&p, i);
        wait_done(&p, 3);
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
        pair_cleanup(&p);
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
