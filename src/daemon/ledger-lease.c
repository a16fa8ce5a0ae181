/* SPDX-License-Identifier: MIT */
/*
 * ledger-lease.c - leases across nodes (ledger.h, issue 18): a node's heartbeat, the renewal
 * of a job's lease that is the fence check before publication, and the rescue of lapsed
 * leases; and the nodes of a cluster, as their heartbeats recorded them.
 *
 * A running job's lease passes these states (each arrow one transaction; PostgreSQL: the
 * job's row locked by the UPDATE or SELECT ... FOR UPDATE that makes it):
 *
 *   ledger_claim()  ------>  held (expires at now + lease)
 *                              |  ^
 *     the database's clock     |  |  ledger_heartbeat() (all of a node's jobs),
 *     passes the expiry        v  |  ledger_renew() (one job, before its publication)
 *                            lapsed ---ledger_fail_lapsed()---> retry or dead (fence unchanged,
 *                                                               the claim is lost: its stage,
 *                                                               renewal, completion -ESTALE)
 *
 * A lapsed lease is still its claim's until a rescue takes it: a heartbeat that comes first
 * renews it (no node took it over, so nothing is lost), a rescue that comes first ends the
 * claim. PostgreSQL's statements compare with the database's clock and take no `now`; SQLite's
 * take the caller's as their last parameter (bind_now()).
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/ledger-private.h"
#include "shared/alloc.h"

/* Binds `now` as parameter n + 1 of c when the engine's statement takes the caller's now
 * (SQLite), after its first n parameters (bound already, one by one: ledger_stmt_bind() wants
 * every parameter at once, and the engines' statements differ by this one). */
static int bind_now(ledger *l, struct ledger_cursor *c, int n, int64_t now_usec)
{
        if (l->engine->nparams(c) <= n)
                return 0;
        return l->engine->bind_int64(l, c, n + 1, now_usec);
}

/* Copies a text column into a fixed buffer ("" for NULL), cut if need be. */
static void column_copy(const struct ledger_cursor *c, int col, char *buf, size_t size)
{
        const char *v = ledger_column_text(c, col);

        snprintf(buf, size, "%s", v ? v : "");
}

/* What job id is now: its state, token and lease owner. -ENOENT if there is no such job. */
static int lease_of_locked(ledger *l, int64_t id, int64_t now_usec, struct ledger_renewal *ret)
{
        _cleanup_cursor_ struct ledger_cursor st = ledger_stmt_get(l, STMT_LEASE_OF);
        int r;

        r = l->engine->bind_int64(l, &st, 1, id);
        if (r >= 0)
                r = bind_now(l, &st, 1, now_usec);
        if (r >= 0)
                r = ledger_stmt_step(l, &st);
        if (r < 0)
                return r;
        if (r == 0)
                return ledger_error(l, -ENOENT, "no job %" PRId64, id);
        r = ledger_column_state(l, &st, 0, &ret->state);
        if (r < 0)
                return r;
        ret->now_fence = ledger_column_int64(&st, 1);
        column_copy(&st, 2, ret->owner, sizeof ret->owner);
        return 0;
}

/* Heartbeats */

static int heartbeat_locked(ledger *l, const struct ledger_node_beat *b, int64_t lease_usec,
                            int64_t now_usec)
{
        _cleanup_cursor_ struct ledger_cursor st = ledger_stmt_get(l, STMT_RENEW_OWNED);
        int r;

        r = ledger_stmt_exec(l, STMT_NODE_BEAT, "ttiiiiti", b->node, b->owner, b->pid,
                             b->started_usec, (int64_t)b->workers, (int64_t)b->running, b->version,
                             now_usec);
        if (r < 0)
                return r;
        r = l->engine->bind_text(l, &st, 1, b->owner, -1);
        if (r >= 0)
                r = l->engine->bind_int64(l, &st, 2, lease_usec);
        if (r >= 0)
                r = bind_now(l, &st, 2, now_usec);
        if (r >= 0)
                r = ledger_stmt_run(l, &st);
        return r < 0 ? r : l->engine->changes(l, &st);
}

int ledger_heartbeat(ledger *l, const struct ledger_node_beat *b, int64_t lease_usec,
                     int64_t now_usec)
{
        int r;

        assert(l);
        assert(b && b->node && b->owner && b->version);

        if (lease_usec <= 0)
                return ledger_error(l, -EINVAL, "lease must be positive");
        /* Not flushed: a renewal lost to a crash of the database leaves a shorter lease. */
        r = ledger_tx_begin_sync(l, false);
        if (r < 0)
                return r;
        return ledger_tx_end(l, heartbeat_locked(l, b, lease_usec, now_usec));
}

/* Renewals: the fence check before publication */

static int renew_locked(ledger *l, struct ledger_renewal *v, size_t n, int64_t lease_usec,
                        int64_t now_usec)
{
        int r;

        for (size_t i = 0; i < n; i++) {
                _cleanup_cursor_ struct ledger_cursor st = ledger_stmt_get(l, STMT_RENEW_ONE);

                r = l->engine->bind_int64(l, &st, 1, v[i].id);
                if (r >= 0)
                        r = l->engine->bind_int64(l, &st, 2, v[i].fence);
                if (r >= 0)
                        r = l->engine->bind_int64(l, &st, 3, lease_usec);
                if (r >= 0)
                        r = bind_now(l, &st, 3, now_usec);
                if (r >= 0)
                        r = ledger_stmt_run(l, &st);
                if (r < 0)
                        return r;
                if (l->engine->changes(l, &st) == 1) {
                        v[i].result = 0;
                        continue;
                }
                v[i].result = -ESTALE;
                r = lease_of_locked(l, v[i].id, now_usec, &v[i]);
                if (r == -ENOENT) {
                        /* Pruned or never there: no claim of it can be held. */
                        v[i].state = JOB_CANCELLED;
                        v[i].now_fence = 0;
                        v[i].owner[0] = '\0';
                        r = 0;
                }
                if (r < 0)
                        return r;
        }
        return 0;
}

int ledger_renew(ledger *l, struct ledger_renewal *v, size_t n, int64_t lease_usec,
                 int64_t now_usec)
{
        int r;

        assert(l);
        assert(v || n == 0);

        if (n == 0)
                return 0;
        if (lease_usec <= 0)
                return ledger_error(l, -EINVAL, "lease must be positive");
        r = ledger_tx_begin_sync(l, false);
        if (r < 0)
                return r;
        return ledger_tx_end(l, renew_locked(l, v, n, lease_usec, now_usec));
}

/* Lapsed leases and their rescue */

int ledger_list_lapsed(ledger *l, int64_t now_usec, struct ledger_lapsed **ret, size_t *ret_n)
{
        _cleanup_cursor_ struct ledger_cursor st = ledger_stmt_get(l, STMT_LAPSED);
        _cleanup_free_ struct ledger_lapsed *v = NULL;
        size_t n = 0, allocated = 0;
        int r;

        assert(l);
        assert(ret && ret_n);

        r = bind_now(l, &st, 0, now_usec);
        if (r < 0)
                return r;
        while ((r = ledger_stmt_step(l, &st)) > 0) {
                if (GROW_ARRAY(v, allocated, n + 1) < 0)
                        return ledger_error(l, -ENOMEM, "out of memory");
                v[n] = (struct ledger_lapsed){
                        .id = ledger_column_int64(&st, 0),
                        .fence = ledger_column_int64(&st, 1),
                        .staged = ledger_column_int64(&st, 3) != 0,
                };
                column_copy(&st, 2, v[n].owner, sizeof v[n].owner);
                n++;
        }
        if (r < 0)
                return r;
        *ret = TAKE_PTR(v);
        *ret_n = n;
        return 0;
}

static int fail_lapsed_locked(ledger *l, int64_t id, int64_t fence, const char *error, bool retry,
                              int64_t next_at_usec, int64_t now_usec)
{
        int r;

        {
                _cleanup_cursor_ struct ledger_cursor st = ledger_stmt_get(l, STMT_LAPSED_LOCK);

                r = l->engine->bind_int64(l, &st, 1, id);
                if (r >= 0)
                        r = l->engine->bind_int64(l, &st, 2, fence);
                if (r >= 0)
                        r = bind_now(l, &st, 2, now_usec);
                if (r >= 0)
                        r = ledger_stmt_step(l, &st);
                if (r < 0)
                        return r;
        }
        if (r == 0) {
                struct ledger_renewal now = {};

                r = lease_of_locked(l, id, now_usec, &now);
                if (r < 0)
                        return r;
                return ledger_error(l, -ESTALE,
                                    "job %" PRId64 " is not running on a lapsed lease of token "
                                    "%" PRId64 " (it is %s, token %" PRId64 "%s%s)",
                                    id, fence, job_state_name(now.state), now.now_fence,
                                    now.owner[0] ? ", lease of " : "", now.owner);
        }
        return ledger_fail_locked(l, id, fence, error, retry, next_at_usec, now_usec);
}

int ledger_fail_lapsed(ledger *l, int64_t id, int64_t fence, const char *error, bool retry,
                       int64_t next_at_usec, int64_t now_usec)
{
        assert(l);

        return LEDGER_WRITE(l, fail_lapsed_locked(l, id, fence, error ? error : "lease lapsed",
                                                  retry, next_at_usec, now_usec));
}

/* Nodes */

void ledger_nodes_free(struct ledger_node *v, size_t n)
{
        for (size_t i = 0; i < n; i++) {
                free(v[i].node);
                free(v[i].owner);
                free(v[i].version);
        }
        free(v);
}

static int read_node(ledger *l, const struct ledger_cursor *c, struct ledger_node *ret)
{
        int64_t workers = ledger_column_int64(c, 7), running = ledger_column_int64(c, 9);
        int r;

        *ret = (struct ledger_node){
                .pid = ledger_column_int64(c, 2),
                .started_usec = ledger_column_int64(c, 3),
                .heartbeat_usec = ledger_column_int64(c, 4),
                .age_usec = ledger_column_int64(c, 5),
                .alive = ledger_column_int64(c, 6) != 0,
                .workers = workers < 0          ? 0
                           : workers > UINT_MAX ? UINT_MAX
                                                : (unsigned)workers,
                .running = running < 0          ? 0
                           : running > UINT_MAX ? UINT_MAX
                                                : (unsigned)running,
        };
        r = ledger_column_strdup(l, c, 0, &ret->node);
        if (r >= 0)
                r = ledger_column_strdup(l, c, 1, &ret->owner);
        if (r >= 0)
                r = ledger_column_strdup(l, c, 8, &ret->version);
        return r;
}

int ledger_list_nodes(ledger *l, int64_t lease_usec, struct ledger_node **ret, size_t *ret_n)
{
        _cleanup_cursor_ struct ledger_cursor st = ledger_stmt_get(l, STMT_NODES);
        struct ledger_node *v = NULL;
        size_t n = 0, allocated = 0;
        int r;

        assert(l);
        assert(ret && ret_n);

        r = ledger_stmt_bind(l, &st, "i", lease_usec);
        while (r >= 0 && (r = ledger_stmt_step(l, &st)) > 0) {
                if (GROW_ARRAY(v, allocated, n + 1) < 0) {
                        r = ledger_error(l, -ENOMEM, "out of memory");
                        break;
                }
                r = read_node(l, &st, &v[n]);
                n++; /* what it read is freed with the rest */
        }
        if (r < 0) {
                ledger_nodes_free(v, n);
                return r;
        }
        *ret = v;
        *ret_n = n;
        return 0;
}
