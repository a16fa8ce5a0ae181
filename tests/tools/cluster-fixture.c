/* SPDX-License-Identifier: MIT */
/*
 * cluster-fixture.c - several real imgd nodes on one PostgreSQL ledger, for the test-cluster*
 * programs; see cluster-fixture.h.
 */
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "cluster-fixture.h"
#include "pg-fixture.h"

void clfx_setup(struct clfx *c, unsigned n)
{
        assert_true(n > 0 && n <= CLFX_MAX_NODES);
        *c = (struct clfx){ .n = n };
        c->conninfo = pgfx_schema_new();
        c->root = tu_mkdtemp();
        c->uploads = tu_path("%s/uploads", c->root);
        c->media = tu_path("%s/media", c->root);
        c->stage = tu_path("%s/stage", c->root);
        assert_int_equal(mkdir(c->uploads, 0755), 0);
        assert_int_equal(mkdir(c->stage, 0755), 0);
        for (unsigned i = 0; i < n; i++) {
                struct tu_daemon *d = &c->nodes[i];

                d->root = tu_path("%s/n%u", c->root, i + 1);
                assert_int_equal(mkdir(d->root, 0755), 0);
                d->uploads = strdup(c->uploads);
                d->media = strdup(c->media);
                d->state = tu_path("%s/state", d->root);
                d->config = tu_path("%s/imgd.conf", d->root);
                d->socket = tu_path("%s/imgd.sock", d->root);
                d->log = tu_path("%s/imgd.log", d->root);
        }
}

void clfx_configure(struct clfx *c, unsigned i, const struct clfx_node_config *cfg)
{
        struct tu_daemon *d = &c->nodes[i];
        char *conf;

        assert_true(i < c->n);
        /* conninfo quotes its options with '...': no double quote to escape. */
        conf = tu_path("state_dir = \"%s\";\nsocket = \"%s\";\nworkers = 1;\n"
                       "watch = ( { path = \"%s\"; output = \"%s\"; pipeline = \"p\"; %s } );\n"
                       "pipelines = { p = %s; };\n"
                       "%s%s"
                       "ledger = { engine = \"postgresql\"; conninfo = \"%s\"; "
                       "node = \"n%u\"; lease = %d; };\n",
                       d->state, d->socket, c->uploads, c->media, cfg->watch ? cfg->watch : "",
                       cfg->pipeline, cfg->extra ? cfg->extra : "", cfg->extra ? "\n" : "",
                       c->conninfo, i + 1, cfg->lease_s);
        tu_write_file(d->config, conf, (size_t)-1);
        free(conf);
}

void clfx_start(struct clfx *c)
{
        for (unsigned i = 0; i < c->n; i++)
                tu_daemon_start(&c->nodes[i]);
}

void clfx_stop(struct clfx *c)
{
        for (unsigned i = 0; i < c->n; i++)
                assert_int_equal(tu_daemon_stop(&c->nodes[i], SIGTERM), 0);
}

void clfx_cleanup(struct clfx *c)
{
        for (unsigned i = 0; i < c->n; i++) {
                if (c->nodes[i].pid > 0)
                        kill(c->nodes[i].pid, SIGCONT);
                tu_daemon_cleanup(&c->nodes[i]);
        }
        tu_rm_rf(c->root);
        free(c->root);
        free(c->uploads);
        free(c->media);
        free(c->stage);
        free(c->conninfo);
        *c = (struct clfx){};
}

int64_t clfx_done(struct clfx *c)
{
        return pgfx_int(c->conninfo, "SELECT count(*) FROM jobs WHERE state = 'done'");
}

static int64_t count_in(struct clfx *c, const char *state)
{
        char *sql = tu_path("SELECT count(*) FROM jobs WHERE state = '%s'", state);
        int64_t n = pgfx_int(c->conninfo, sql);

        free(sql);
        return n;
}

int64_t clfx_wait_done(struct clfx *c, int64_t n, int timeout_s)
{
        int64_t t0 = tu_now_us();

        while (clfx_done(c) < n) {
                if (tu_now_us() - t0 > (int64_t)timeout_s * 1000000)
                        fail_msg("only %lld of %lld jobs done after %d s (states: %lld queued, "
                                 "%lld running, %lld retry, %lld dead)",
                                 (long long)clfx_done(c), (long long)n, timeout_s,
                                 (long long)count_in(c, "queued"),
                                 (long long)count_in(c, "running"), (long long)count_in(c, "retry"),
                                 (long long)count_in(c, "dead"));
                usleep(50 * 1000);
        }
        return tu_now_us() - t0;
}
