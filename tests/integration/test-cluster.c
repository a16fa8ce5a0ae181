/* SPDX-License-Identifier: MIT */
/*
 * test-cluster.c - three real imgd nodes on one PostgreSQL ledger (a server of the test's own,
 * tests/tools/cluster-fixture.c), each with its own state_dir and socket, watching one upload tree
 * and publishing into one output tree, with a lease of 3 s (issue 18):
 *
 *   test_kill_and_stop  300 images dropped in; while they are processed n1 is killed with
 *                       SIGKILL and started again (its start-up recovery must take back only
 *                       its own jobs, and sweep only their temporary files), and n2 is stopped
 *                       with SIGSTOP for longer than its lease and continued. Every job done
 *                       exactly once (one job per source though three nodes saw each upload),
 *                       every output verified by imgctl verify, no hook run twice; the jobs n2
 *                       held when it stopped were rescued and completed under a later claim,
 *                       n2's stale attempts refused (logged naming the job, and counted in
 *                       imgd_fence_refused_total), never completed by it; n3, never stopped,
 *                       never had a claim taken from it.
 *   test_database_outage  PostgreSQL stopped (pg_ctl stop -m fast) under load and started
 *                       again 5 s later, more uploads arriving meanwhile: nothing lost, every
 *                       upload done once it returns, each once, and the nodes alive throughout;
 *                       meanwhile each node's status (JSON and text) and metrics say the ledger
 *                       is unreachable (the alert ledger_unreachable, the breaker open for it),
 *                       and once it is back, that it is reachable again.
 *   test_status_and_metrics  two nodes: imgctl status on either lists both (alive, heartbeat,
 *                       workers, pid, version), the cluster's job counts on both; the metrics
 *                       carry the node label and count the nodes alive (promtool accepts
 *                       them); n1 killed shows lapsed on n2 after the lease.
 *
 * PostgreSQL (Debian package postgresql) must be installed: a missing server fails the test.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cluster-fixture.h"
#include "pg-fixture.h"
#include "testutil.h"

#define NODES 3
#define LEASE_S 3

#define PIPE "( { name = \"s\"; width = 96; height = 96; fit = \"cover\"; format = \"webp\"; } )"

/* The hook's log, beside the trees (caller frees). */
static char *hooks_log(const struct clfx *c)
{
        return tu_path("%s/hooks.log", c->root);
}

static void cluster_setup(struct clfx *c)
{
        char *hook, *text, *log, *watch;

        clfx_setup(c, NODES);
        /* Each done job, once per node that tells it: one line (appends of a line are atomic). */
        hook = tu_path("%s/on-done.sh", c->root);
        log = hooks_log(c);
        text = tu_path("#!/bin/sh\necho \"$IMGD_JOB_ID $IMGD_SOURCE\" >> %s\n", log);
        tu_write_file(hook, text, (size_t)-1);
        assert_int_equal(chmod(hook, 0755), 0);
        watch = tu_path("recursive = true; on_done = \"%s\";", hook);
        for (unsigned i = 0; i < NODES; i++)
                clfx_configure(c, i,
                               &(struct clfx_node_config){
                                       .pipeline = PIPE,
                                       .watch = watch,
                                       .extra = "retry = { max_attempts = 20; base_delay_ms = 200; "
                                                "max_delay_ms = 1000; };",
                                       .lease_s = LEASE_S,
                               });
        free(text);
        free(log);
        free(watch);
        free(hook);
}

/* Makes n images in the staging folder (outside the watched tree), named from `first`. */
static void make_images(struct clfx *c, int first, int n)
{
        for (int i = first; i < first + n; i++) {
                char *p = tu_path("%s/img%04d.jpg", c->stage, i);

                tu_make_image(p, 480 + (unsigned)(i % 50), 360, "jpeg", false);
                free(p);
        }
}

/* Moves them into the upload tree (a rename: each arrives whole), spread over folders. */
static void drop_images(struct clfx *c, int first, int n)
{
        for (int i = first; i < first + n; i++) {
                char *from = tu_path("%s/img%04d.jpg", c->stage, i);
                char *dir = tu_path("%s/d%d", c->uploads, i % 5);
                char *to = tu_path("%s/img%04d.jpg", dir, i);

                (void)mkdir(dir, 0755);
                assert_int_equal(rename(from, to), 0);
                free(from);
                free(dir);
                free(to);
        }
}

/* The job ids the hook was run for (seen[id]). */
static bool seen[100000];

/* The number of lines of the hook's log, and whether a job id appears on two of them. */
static unsigned hook_lines(struct clfx *c, bool *ret_dup)
{
        char *log = hooks_log(c);
        char *text = tu_read_file(log, NULL);
        unsigned n = 0;
        bool dup = false;

        memset(seen, 0, sizeof seen);
        for (char *line = text; line && *line;) {
                char *nl = strchr(line, '\n');
                long id = strtol(line, NULL, 10);

                if (id > 0 && id < (long)ELEMENTSOF(seen)) {
                        dup |= seen[id];
                        seen[id] = true;
                }
                n++;
                if (!nl)
                        break;
                line = nl + 1;
        }
        free(text);
        free(log);
        *ret_dup = dup;
        return n;
}

/* Whether a node's start-up recovery completed job id from its staged files (as on one host,
 * without telling it: the hooks of a killed node's work are not durable). */
static bool recovered(struct clfx *c, int64_t id)
{
        char *needle = tu_path("job %lld %s", (long long)id, c->uploads);
        bool found = false;

        for (int i = 0; i < NODES && !found; i++) {
                char *log = tu_read_file(c->nodes[i].log, NULL);

                for (char *p = log ? strstr(log, needle) : NULL; p && !found;
                     p = strstr(p + 1, needle)) {
                        char *nl = strchr(p, '\n');
                        char *r = strstr(p, "published from staging after restart");

                        found = r && (!nl || r < nl);
                }
                free(log);
        }
        free(needle);
        return found;
}

/*
 * Waits (up to timeout_s) for the hooks of n done jobs, which run after the completion, and
 * asserts that none ran twice. A hook is told once, by the node whose completion committed,
 * and is not durable: a node killed with SIGKILL loses the hooks it had not run yet. So every
 * done job had its hook, except jobs finished before killed_us (the wall clock of a kill, 0:
 * none) and those the killed node's recovery published at its restart.
 */
static void wait_hooks(struct clfx *c, unsigned n, int timeout_s, int64_t killed_us)
{
        bool dup = false;
        unsigned lines;
        char *sql;

        for (int waited = 0; hook_lines(c, &dup) < n && waited < timeout_s * 10; waited++)
                usleep(100 * 1000);
        lines = hook_lines(c, &dup);
        assert_false(dup);
        assert_true(lines <= n);
        for (int64_t id = 1; id < (int64_t)ELEMENTSOF(seen); id++) {
                if (seen[id])
                        continue;
                sql = tu_path("SELECT count(*) FROM jobs WHERE id = %lld AND state = 'done' "
                              "AND finished_us > %lld",
                              (long long)id, (long long)killed_us + 1000000);
                if (pgfx_int(c->conninfo, sql) != 0 && !recovered(c, id))
                        fail_msg("job %lld is done but its hook never ran", (long long)id);
                free(sql);
                if (id > (int64_t)n * 2)
                        break;
        }
}

/* Every source one job, every job done; every output in place and verified. */
static void assert_all_done_once(struct clfx *c, int n, struct tu_daemon *verifier,
                                 int64_t killed_us)
{
        char *out = NULL;
        int r;

        assert_int_equal(pgfx_int(c->conninfo, "SELECT count(*) FROM jobs"), n);
        assert_int_equal(pgfx_int(c->conninfo, "SELECT count(DISTINCT source_path) FROM jobs"), n);
        assert_int_equal(clfx_done(c), n);
        assert_int_equal(pgfx_int(c->conninfo, "SELECT count(*) FROM outputs"), n);
        assert_int_equal(
                pgfx_int(c->conninfo, "SELECT sum(n) FROM job_counts WHERE state = 'done'"), n);
        assert_int_equal(tu_count_files(c->media, "*_s.webp"), (unsigned)n);
        assert_int_equal(tu_count_files(c->media, "*.manifest.json"), (unsigned)n);
        r = tu_imgctl(verifier, &out, "verify", "--all", NULL);
        if (r != 0)
                fail_msg("imgctl verify: %d\n%s", r, out ? out : "");
        free(out);
        wait_hooks(c, (unsigned)n, 20, killed_us);
}

/* The value of a counter family in a node's metrics: the sum over its labels. */
static long metric_sum(struct tu_daemon *d, const char *family)
{
        char *out = NULL, *prefix = tu_path("%s{", family);
        long sum = 0;

        assert_int_equal(tu_imgctl(d, &out, "metrics", NULL), 0);
        for (char *line = out; line && *line;) {
                char *nl = strchr(line, '\n');

                if (strncmp(line, prefix, strlen(prefix)) == 0 ||
                    (strncmp(line, family, strlen(family)) == 0 && line[strlen(family)] == ' ')) {
                        char *sp = memrchr(line, ' ', nl ? (size_t)(nl - line) : strlen(line));
                        if (sp)
                                sum += strtol(sp + 1, NULL, 10);
                }
                if (!nl)
                        break;
                line = nl + 1;
        }
        free(prefix);
        free(out);
        return sum;
}

static void x_dump(struct clfx *c)
{
        for (int i = 0; i < NODES; i++) {
                char *cmd = tu_path("echo '--- n%d'; tail -15 %s >&2", i + 1, c->nodes[i].log);
                (void)system(cmd);
                free(cmd);
        }
}

#define IMAGES 300
#define MAX_HELD 16

static void test_kill_and_stop(void **state)
{
        struct clfx c;
        struct tu_daemon *n1 = &c.nodes[0], *n2 = &c.nodes[1], *n3 = &c.nodes[2];
        int64_t held[MAX_HELD], held_fence[MAX_HELD];
        int n_held = 0;
        int64_t killed_us;
        char *log, *sql;

        cluster_setup(&c);
        make_images(&c, 0, IMAGES);
        clfx_start(&c);
        drop_images(&c, 0, IMAGES);

        /* n1 dies under load, and comes back while the others work. */
        clfx_wait_done(&c, 40, 60);
        killed_us = pgfx_int(c.conninfo, "SELECT (extract(epoch FROM clock_timestamp()) "
                                         "* 1000000)::bigint");
        assert_int_equal(tu_daemon_stop(n1, SIGKILL) & 0x7f, SIGKILL);
        clfx_wait_done(&c, 70, 60);
        tu_daemon_start(n1);

        /* n2 stops for longer than its lease, holding a job. */
        clfx_wait_done(&c, 110, 60);
        for (int tries = 0; tries < 100 && n_held == 0; tries++) {
                assert_int_equal(kill(n2->pid, SIGSTOP), 0);
                usleep(50 * 1000);
                sql = tu_path("SELECT count(*) FROM jobs WHERE state = 'running' "
                              "AND lease_owner LIKE 'n2:%%'");
                n_held = (int)pgfx_int(c.conninfo, sql);
                free(sql);
                if (n_held == 0) {
                        kill(n2->pid, SIGCONT);
                        usleep(30 * 1000);
                }
        }
        if (n_held <= 0 || n_held > MAX_HELD) {
                x_dump(&c);
                fail_msg("n2 held %d running jobs when stopped (100 tries)", n_held);
        }
        for (int i = 0; i < n_held; i++) {
                sql = tu_path("SELECT id FROM jobs WHERE state = 'running' AND lease_owner "
                              "LIKE 'n2:%%' ORDER BY id OFFSET %d",
                              i);
                held[i] = pgfx_int(c.conninfo, sql);
                free(sql);
                sql = tu_path("SELECT fence FROM jobs WHERE id = %lld", (long long)held[i]);
                held_fence[i] = pgfx_int(c.conninfo, sql);
                free(sql);
        }
        sleep(2 * LEASE_S + 2);
        /* Rescued by the others meanwhile: n2's claims are lost. */
        for (int i = 0; i < n_held; i++) {
                sql = tu_path("SELECT fence > %lld OR state <> 'running' FROM jobs WHERE id = %lld",
                              (long long)held_fence[i], (long long)held[i]);
                if (pgfx_int(c.conninfo, sql) != 1) {
                        char *cmd = tu_path("grep -h -i 'lapsed\\|rescue\\|heartbeat\\|error' "
                                            "%s %s >&2",
                                            n1->log, n3->log);

                        (void)system(cmd);
                        free(cmd);
                        {
                                const char *q[] = { "lease_expires_us - (extract(epoch FROM "
                                                    "clock_timestamp()) * 1000000)::bigint",
                                                    "fence", "(stage IS NOT NULL)::int",
                                                    "(state = 'running')::int" };
                                for (size_t k = 0; k < 4; k++) {
                                        char *x = tu_path("SELECT %s FROM jobs WHERE id = %lld",
                                                          q[k], (long long)held[i]);
                                        fprintf(stderr, "DEBUG %s = %lld\n", q[k],
                                                (long long)pgfx_int(c.conninfo, x));
                                        free(x);
                                }
                                for (int k = 1; k <= 3; k++) {
                                        char *x = tu_path(
                                                "SELECT (extract(epoch FROM clock_timestamp()) * "
                                                "1000000)::bigint - heartbeat_us FROM nodes WHERE "
                                                "node = 'n%d'",
                                                k);
                                        fprintf(stderr, "DEBUG n%d heartbeat age %lld\n", k,
                                                (long long)pgfx_int(c.conninfo, x));
                                        free(x);
                                }
                                x_dump(&c);
                        }
                        fail_msg("job %lld, held by n2, was not rescued", (long long)held[i]);
                }
                free(sql);
        }
        assert_int_equal(kill(n2->pid, SIGCONT), 0);

        clfx_wait_done(&c, IMAGES, 90);
        assert_all_done_once(&c, IMAGES, n3, killed_us);
        /* Every node still alive. */
        for (int i = 0; i < NODES; i++)
                assert_int_equal(kill(c.nodes[i].pid, 0), 0);

        /* The jobs n2 held: completed under a later claim, never by n2's stale one; its stale
         * attempt refused, logged and counted. */
        log = tu_read_file(n2->log, NULL);
        assert_non_null(log);
        for (int i = 0; i < n_held; i++) {
                char *done = tu_path("job %lld %s", (long long)held[i], c.uploads);
                char *line;

                sql = tu_path("SELECT fence > %lld FROM jobs WHERE id = %lld",
                              (long long)held_fence[i], (long long)held[i]);
                assert_int_equal(pgfx_int(c.conninfo, sql), 1);
                free(sql);
                /* A "done" of n2 for the job is a later claim of its own (the job retried after
                 * the rescue, and claimed by n2 again once its single worker was free): only
                 * after the stale attempt was refused. */
                bool refused = false;
                for (line = strstr(log, done); line; line = strstr(line + 1, done)) {
                        char *nl = strchr(line, '\n');
                        char *d = strstr(line, ": done");
                        char *x = strstr(line, " refused to node n2:");

                        if (x && (!nl || x < nl))
                                refused = true;
                        if (d && (!nl || d < nl) && !refused)
                                fail_msg("n2 completed job %lld after losing its claim: %.*s",
                                         (long long)held[i], nl ? (int)(nl - line) : 200, line);
                }
                free(done);
        }
        if (!strstr(log, "refused to node n2:"))
                fail_msg("n2's stale attempt was not refused in its log:\n%s", log);
        free(log);
        assert_true(metric_sum(n2, "imgd_fence_refused_total") >= 1);
        assert_true(metric_sum(n1, "imgd_leases_rescued_total") +
                            metric_sum(n3, "imgd_leases_rescued_total") >=
                    n_held);

        /* n3 was never stopped: no claim of it was ever taken (n1's recovery at its restart
         * took back only n1's jobs), and none of its files was swept from under it. */
        log = tu_read_file(n3->log, NULL);
        if (strstr(log, "refused to node") || strstr(log, "No such file"))
                fail_msg("n3 lost work it held:\n%s", log);
        free(log);
        assert_int_equal(metric_sum(n3, "imgd_fence_refused_total"), 0);

        clfx_stop(&c);
        clfx_cleanup(&c);
}

#define OUTAGE_FIRST 120
#define OUTAGE_MORE 30

/*
 * While the database is down, every node says so: status' "ledger" is unreachable with libpq's
 * reason, the alert ledger_unreachable is active ("ledger unreachable: ..."), the breaker is
 * open for it, the text of imgctl status shows all three (and exits 1), and the metrics
 * carry the alert.
 */
static void assert_says_unreachable(struct tu_daemon *d)
{
        json_t *st = tu_status_json(d, NULL);
        const json_t *ledger = json_object_get(st, "ledger"),
                     *breaker = json_object_get(st, "breaker");
        const char *alert = tu_alert_message(st, "ledger_unreachable");
        const char *why = json_string_value(json_object_get(ledger, "error"));
        const char *reason = json_string_value(json_object_get(breaker, "reason"));
        char *out = NULL, *text = json_dumps(st, JSON_INDENT(2));

        if (!json_is_false(json_object_get(ledger, "reachable")) || !why ||
            !strstr(why, "postgresql://") || !alert ||
            strncmp(alert, "ledger unreachable: ", 20) != 0 || !strstr(alert, why) ||
            strcmp(json_string_value(json_object_get(breaker, "state")) ?: "", "open") != 0 ||
            !reason || strncmp(reason, "ledger unreachable: ", 20) != 0)
                fail_msg("status of %s does not say the ledger is unreachable:\n%s", d->root,
                         text ? text : "?");
        free(text);
        json_decref(st);

        assert_int_equal(tu_imgctl(d, &out, "status", NULL), 1);
        if (!strstr(out, "ledger   UNREACHABLE for ") ||
            !strstr(out, "breaker  open: ledger unreachable: ") ||
            !strstr(out, "ALERT    ledger unreachable: "))
                fail_msg("imgctl status of %s does not say the ledger is unreachable:\n%s", d->root,
                         out);
        free(out);
        out = NULL;
        assert_int_equal(tu_imgctl(d, &out, "metrics", NULL), 0);
        if (!strstr(out, "imgd_alert{alert=\"ledger_unreachable\"} 1\n") ||
            !strstr(out, "imgd_breaker_state 2\n"))
                fail_msg("the metrics of %s do not show the ledger unreachable:\n%s", d->root, out);
        free(out);
}

/* After the database is back: within 30 s, d's status says the ledger is reachable, with no
 * ledger_unreachable alert, and no breaker held for it. */
static void wait_says_reachable(struct tu_daemon *d)
{
        int64_t t0 = tu_now_us();

        for (;;) {
                json_t *st = tu_status_json(d, NULL);
                const char *reason = json_string_value(
                        json_object_get(json_object_get(st, "breaker"), "reason"));

                if (json_is_true(json_object_get(json_object_get(st, "ledger"), "reachable")) &&
                    !tu_alert_message(st, "ledger_unreachable") && reason &&
                    !strstr(reason, "ledger unreachable")) {
                        json_decref(st);
                        return;
                }
                if (tu_now_us() - t0 > 30 * 1000000LL) {
                        char *text = json_dumps(st, JSON_INDENT(2));

                        fail_msg("status of %s still says the ledger is unreachable 30 s after "
                                 "it returned:\n%s",
                                 d->root, text ? text : "?");
                }
                json_decref(st);
                usleep(200 * 1000);
        }
}

static void test_database_outage(void **state)
{
        struct clfx c;

        cluster_setup(&c);
        make_images(&c, 0, OUTAGE_FIRST + OUTAGE_MORE);
        clfx_start(&c);
        drop_images(&c, 0, OUTAGE_FIRST);
        clfx_wait_done(&c, 30, 60);

        /* The database goes away under load; uploads keep coming; it returns. */
        pgfx_server_down();
        drop_images(&c, OUTAGE_FIRST, OUTAGE_MORE);
        sleep(LEASE_S + 2);
        for (int i = 0; i < NODES; i++) {
                assert_int_equal(kill(c.nodes[i].pid, 0), 0);
                /* The control socket still answers, and says why nothing moves. */
                assert_says_unreachable(&c.nodes[i]);
        }
        pgfx_server_up();
        for (int i = 0; i < NODES; i++)
                wait_says_reachable(&c.nodes[i]);

        clfx_wait_done(&c, OUTAGE_FIRST + OUTAGE_MORE, 90);
        assert_all_done_once(&c, OUTAGE_FIRST + OUTAGE_MORE, &c.nodes[0], 0);
        clfx_stop(&c);
        clfx_cleanup(&c);
}

/* n2's status until it lists `alive` nodes alive and `lapsed` lapsed; fails after 15 s. */
static json_t *status_until(struct tu_daemon *d, int alive, int lapsed)
{
        int64_t t0 = tu_now_us();

        for (;;) {
                json_t *st = tu_status_json(d, NULL);
                json_t *cl = json_object_get(st, "cluster");

                if (json_integer_value(json_object_get(cl, "alive")) == alive &&
                    json_integer_value(json_object_get(cl, "lapsed")) == lapsed)
                        return st;
                if (tu_now_us() - t0 > 15 * 1000000LL) {
                        char *text = json_dumps(st, JSON_INDENT(2));

                        fail_msg("status never listed %d alive and %d lapsed nodes:\n%s", alive,
                                 lapsed, text ? text : "?");
                }
                json_decref(st);
                usleep(200 * 1000);
        }
}

/* The `node` entry of a status' cluster, by name. */
static const json_t *node_of(const json_t *status, const char *name)
{
        const json_t *nodes = json_object_get(json_object_get(status, "cluster"), "nodes"), *n;
        size_t i;

        json_array_foreach(nodes, i, n)
        {
                if (strcmp(json_string_value(json_object_get(n, "node")) ?: "", name) == 0)
                        return n;
        }
        fail_msg("node %s is not in the status", name);
        return NULL;
}

#define STATUS_IMAGES 12
#define STATUS_IMAGES_TEXT "12"

/* imgctl status and metrics on any node show the cluster: every node (alive or lapsed by the
 * database's clock, its heartbeat's age, workers, jobs running, version), the cluster's job
 * counts next to the node's own; the metrics carry the node label on the node's own series and
 * count the cluster's nodes; promtool accepts them. */
static void test_status_and_metrics(void **state)
{
        struct clfx c;
        struct tu_daemon *n1 = &c.nodes[0], *n2 = &c.nodes[1];
        json_t *st, *st1;
        const json_t *n;
        char *out = NULL, *file, *cmd;
        int status;

        cluster_setup(&c);
        make_images(&c, 0, STATUS_IMAGES);
        tu_daemon_start(n1);
        tu_daemon_start(n2);
        drop_images(&c, 0, STATUS_IMAGES);
        clfx_wait_done(&c, STATUS_IMAGES, 60);

        st = status_until(n2, 2, 0);
        assert_string_equal(json_string_value(json_object_get(st, "node")), "n2");
        assert_true(json_is_integer(json_object_get(json_object_get(st, "node_jobs"), "running")));
        n = node_of(st, "n1");
        assert_true(json_is_true(json_object_get(n, "alive")));
        assert_false(json_is_true(json_object_get(n, "self")));
        assert_int_equal(json_integer_value(json_object_get(n, "workers")), 1);
        assert_int_equal(json_integer_value(json_object_get(n, "pid")), n1->pid);
        assert_true(json_number_value(json_object_get(n, "heartbeat_age_s")) < LEASE_S);
        assert_true(strlen(json_string_value(json_object_get(n, "version")) ?: "") > 0);
        n = node_of(st, "n2");
        assert_true(json_is_true(json_object_get(n, "self")));
        assert_int_equal(json_integer_value(json_object_get(n, "pid")), n2->pid);
        /* The job counts are the cluster's: the same on both nodes. */
        st1 = tu_status_json(n1, NULL);
        assert_int_equal(tu_jobs_in(st, "done"), STATUS_IMAGES);
        assert_int_equal(tu_jobs_in(st1, "done"), STATUS_IMAGES);
        assert_string_equal(json_string_value(json_object_get(st1, "node")), "n1");
        json_decref(st1);
        json_decref(st);

        assert_true(tu_imgctl(n1, &out, "status", NULL) <= 1);
        if (!strstr(out, "cluster  2 nodes alive, 0 lapsed") || !strstr(out, "n1 (this)") ||
            !strstr(out, "jobs     (cluster) ") || !strstr(out, "node     n1: "))
                fail_msg("imgctl status does not show the cluster:\n%s", out);
        free(out);

        assert_int_equal(tu_imgctl(n2, &out, "metrics", NULL), 0);
        if (!strstr(out, "imgd_cluster_nodes{state=\"alive\"} 2\n") ||
            !strstr(out, "imgd_cluster_nodes{state=\"lapsed\"} 0\n") ||
            !strstr(out, "imgd_workers{node=\"n2\",state=\"busy\"} ") ||
            !strstr(out, "imgd_node_jobs_running{node=\"n2\"} ") ||
            !strstr(out, "imgd_leases_rescued_total{node=\"n2\"} ") ||
            !strstr(out, "imgd_build_info{node=\"n2\",version=") ||
            !strstr(out, "imgd_jobs{state=\"done\"} " STATUS_IMAGES_TEXT "\n"))
                fail_msg("the metrics of n2 do not show the cluster:\n%s", out);
        file = tu_path("%s/metrics.txt", c.root);
        tu_write_file(file, out, (size_t)-1);
        free(out);
        out = NULL;
        cmd = tu_path("promtool check metrics < '%s' 2>&1", file);
        status = tu_run(&out, "/bin/sh", "-c", cmd, NULL);
        if (status != 0 || (out && *out))
                fail_msg("promtool check metrics: exit %d:\n%s", status, out ? out : "");
        free(out);
        free(cmd);
        free(file);

        /* n1 dies: after a lease without heartbeat, n2 shows it lapsed. */
        assert_int_equal(tu_daemon_stop(n1, SIGKILL) & 0x7f, SIGKILL);
        st = status_until(n2, 1, 1);
        n = node_of(st, "n1");
        assert_false(json_is_true(json_object_get(n, "alive")));
        assert_true(json_number_value(json_object_get(n, "heartbeat_age_s")) >= LEASE_S);
        json_decref(st);
        assert_true(tu_imgctl(n2, &out, "status", NULL) <= 1);
        if (!strstr(out, "LAPSED") || !strstr(out, "cluster  1 node alive, 1 lapsed"))
                fail_msg("imgctl status does not show n1 lapsed:\n%s", out);
        print_message("imgctl status on n2 after n1 was killed:\n%s", out);
        free(out);
        assert_int_equal(tu_imgctl(n2, &out, "metrics", NULL), 0);
        assert_non_null(strstr(out, "imgd_cluster_nodes{state=\"lapsed\"} 1\n"));
        free(out);

        assert_int_equal(tu_daemon_stop(n2, SIGTERM), 0);
        clfx_cleanup(&c);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_kill_and_stop),
                cmocka_unit_test(test_database_outage),
                cmocka_unit_test(test_status_and_metrics),
        };
        int failed;

        /* IMGD_TEST_FILTER=test_database_* runs only the cases whose names match. */
        if (getenv("IMGD_TEST_FILTER"))
                cmocka_set_test_filter(getenv("IMGD_TEST_FILTER"));
        failed = cmocka_run_group_tests(tests, NULL, NULL);

        pgfx_server_stop();
        return failed;
}
