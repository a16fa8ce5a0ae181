/* SPDX-License-Identifier: MIT */
/*
 * cluster-fixture.h - helpers of the test-cluster* programs: several real imgd nodes on one
 * PostgreSQL ledger (a schema of the test's own on the program's server, pg-fixture.h), each
 * with its own state_dir, socket, log and configuration, all watching one upload tree and
 * publishing into one output tree, as nodes that mount the same storage would:
 *
 *   root/uploads    the upload tree every node watches
 *   root/media      the output tree every node publishes into (made by imgd)
 *   root/stage      outside the watched tree: images are made here, then renamed in
 *   root/n<i>/      node n<i>: state/, imgd.sock, imgd.log, imgd.conf
 *
 * The helpers fail the running test (cmocka) when what they assert does not hold. The
 * program stops the server at its end (pgfx_server_stop()).
 */
#pragma once

#include <stdint.h>

#include "testutil.h"

#define CLFX_MAX_NODES 4

struct clfx {
        char *conninfo; /* the test's schema (pgfx_schema_new()) */
        char *root, *uploads, *media, *stage;
        unsigned n;
        struct tu_daemon nodes[CLFX_MAX_NODES]; /* nodes[i] is node "n<i + 1>" */
};

/* What one node's configuration says beyond what every node's does (one worker, the watch of
 * uploads into media with the pipeline "p", the ledger with its node name and lease). */
struct clfx_node_config {
        const char *pipeline; /* libconfig list of the variants of "p" */
        const char *watch;    /* more settings of the watch ("recursive = true;"); may be NULL */
        const char *extra;    /* more settings at the top ("retry = { ... };"); may be NULL */
        int lease_s;          /* ledger.lease */
};

/* Makes c's trees and a new schema for n nodes (at most CLFX_MAX_NODES), none configured. */
void clfx_setup(struct clfx *c, unsigned n);

/* Writes node i's configuration (node "n<i + 1>"). */
void clfx_configure(struct clfx *c, unsigned i, const struct clfx_node_config *cfg);

/* Starts every node (tu_daemon_start()), n1 first. */
void clfx_start(struct clfx *c);

/* Stops every node with SIGTERM, asserting that each exits with status 0. */
void clfx_stop(struct clfx *c);

/* Continues the nodes still running (one may be stopped with SIGSTOP), stops them, removes
 * the trees and frees c's strings. */
void clfx_cleanup(struct clfx *c);

/* The jobs done in the ledger. */
int64_t clfx_done(struct clfx *c);

/* Waits until n jobs are done and returns how long it took (microseconds); after timeout_s,
 * fails naming the count in each state. */
int64_t clfx_wait_done(struct clfx *c, int64_t n, int timeout_s);
