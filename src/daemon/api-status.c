/* SPDX-License-Identifier: MIT */
/*
 * api-status.c - the commands that say how the daemon is (api-private.h): "ping" (it
 * answers), "status" (its state, version, uptime, configuration file, pause, the circuit
 * breaker, the health level and its alerts, the ledger (its engine, and whether its server can
 * be reached), watches, workers, intake and the number of jobs in every state) and "metrics" (the
 * Prometheus text exposition, metrics.h, which api_metrics_text() also gives the HTTP endpoint).
 * They only read: the ledger, the configuration, the scheduler's report and the worker pool.
 */
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "daemon/api-private.h"
#include "daemon/breaker.h"
#include "daemon/intake.h"
#include "daemon/metrics.h"
#include "daemon/worker-pool.h"
#include "shared/macro.h"
#include "shared/proto.h"
#include "shared/time-util.h"

int api_ping(struct api_context *ctx, const struct api_args *args, json_t **ret_result,
             char **ret_error)
{
        json_t *result;

        (void)ctx;
        (void)args;
        (void)ret_error;
        result = json_pack("{s:b}", "pong", 1);
        if (!result)
                return -ENOMEM;
        *ret_result = result;
        return 0;
}

static json_t *watches_to_json(const struct config *cfg)
{
        _cleanup_(json_decrefp) json_t *arr = json_array();

        if (!arr)
                return NULL;
        for (size_t i = 0; cfg && i < cfg->n_watches; i++) {
                const struct watch_config *w = &cfg->watches[i];

                if (json_array_append_new(arr, json_pack("{s:o, s:o, s:o, s:b}", "path",
                                                         api_text_or_null(w->path), "output",
                                                         api_text_or_null(w->output), "pipeline",
                                                         api_text_or_null(w->pipeline_name),
                                                         "recursive", (int)w->recursive)) < 0)
                        return NULL;
        }
        return TAKE_PTR(arr);
}

/*
 * {"engine": "postgresql", "reachable": true} of the ledger, and while its server cannot be
 * reached (ledger_unreachable()) "reachable": false, "error": "postgresql://...: <libpq's
 * reason>" and "unreachable_s": for how long. NULL when out of memory.
 */
static json_t *ledger_to_json(const struct api_context *ctx)
{
        int64_t since = 0, wall = wall_usec();
        const char *why = ledger_unreachable(ctx->ledger, &since);
        json_t *j = json_pack("{s:s, s:b}", "engine", ledger_engine_name(ctx->ledger), "reachable",
                              !why);

        if (j && why &&
            (json_object_set_new(j, "error", proto_string_lossy(why)) < 0 ||
             json_object_set_new(j, "unreachable_s",
                                 json_integer(wall > since ? (wall - since) / USEC_PER_SEC : 0)) <
                     0)) {
                json_decref(j);
                return NULL;
        }
        return j;
}

/* {"state": "closed", "reason": ""} of the circuit breaker; NULL when out of memory. */
static json_t *breaker_to_json(const scheduler *s)
{
        const char *reason = NULL, *state = scheduler_breaker(s, &reason);

        return json_pack("{s:s, s:o}", "state", state ? state : "closed", "reason",
                         proto_string_lossy(reason ? reason : ""));
}

/*
 * {"level": "full", "score": 100, "reason": "", "error_rate": 0, "finished_per_s": 1.5,
 *  "backlog": 3, "drain_s": 2 (null: not draining), "oldest_queued_s": 0.4} and, in
 * *ret_alerts, [{"alert": "queue_depth", "message": "..."}] of the active alerts; NULL when
 * out of memory.
 */
static json_t *health_to_json(const struct scheduler_report *rep, json_t **ret_alerts)
{
        _cleanup_(json_decrefp) json_t *alerts = json_array(), *h = NULL;
        const struct health_alert_report *a = &rep->alerts;

        if (!alerts)
                return NULL;
        for (int i = 0; i < _HEALTH_ALERT_MAX; i++) {
                if (!(a->active & (1u << i)))
                        continue;
                if (json_array_append_new(alerts,
                                          json_pack("{s:s, s:o}", "alert", health_alert_name(i),
                                                    "message", proto_string_lossy(a->text[i]))) < 0)
                        return NULL;
        }
        h = json_pack("{s:s, s:f, s:o, s:f, s:f, s:I, s:o, s:f}", "level",
                      rep->level ? rep->level : "full", "score", rep->score, "reason",
                      proto_string_lossy(rep->level_reason ? rep->level_reason : ""), "error_rate",
                      rep->error_rate, "finished_per_s", rep->finished_per_s, "backlog",
                      (json_int_t)rep->backlog, "drain_s",
                      a->drain_usec == HEALTH_DRAIN_NEVER
                              ? json_null()
                              : json_real((double)a->drain_usec / (double)USEC_PER_SEC),
                      "oldest_queued_s",
                      (double)rep->oldest_queued_age_usec / (double)USEC_PER_SEC);
        if (!h)
                return NULL;
        *ret_alerts = TAKE_PTR(alerts);
        return TAKE_PTR(h);
}

/*
 * Sets status' "intake_retry" (uploads waiting to be taken in again after a transient
 * failure) and "unwatched_folders" (folders past the inotify watch limit, scanned instead) in
 * result; their alerts are the scheduler's report's (health.h has the one list). Returns 0 or
 * -ENOMEM.
 */
static int intake_counts(const struct api_context *ctx, json_t *result)
{
        size_t retry = intake_retry_pending(ctx->retry, NULL);
        unsigned unwatched = watch_unwatched(ctx->watch, NULL);
        int r;

        r = json_object_set_new(result, "intake_retry", json_integer((json_int_t)retry));
        r |= json_object_set_new(result, "unwatched_folders", json_integer(unwatched));
        return r < 0 ? -ENOMEM : 0;
}

/*
 * Sets status' "node" (this node's name) and "cluster": {"lease_s": 30, "alive": 2,
 * "nodes": [{"node", "owner", "pid", "alive", "heartbeat_age_s", "started", "workers",
 * "running", "version", "self"}]} on a ledger several nodes share, and "node_jobs", this
 * node's own jobs, next to "jobs", which are the cluster's counts (the ledger's). While the
 * ledger cannot be asked, "cluster" is {"error": "..."} and the rest of the status stands.
 * Nothing on one node. Returns 0 or -ENOMEM.
 */
static int cluster_to_json(struct api_context *ctx, json_t *result)
{
        _cleanup_(json_decrefp) json_t *section = NULL, *nodes = NULL;
        struct ledger_node *v = NULL;
        const char *node;
        usec_t lease_usec = 0;
        size_t n = 0;
        unsigned alive = 0;
        int r;

        node = ctx->scheduler ? scheduler_cluster_node(ctx->scheduler, &lease_usec) : NULL;
        if (!node)
                return 0;
        r = json_object_set_new(result, "node", api_text_or_null(node));
        r |= json_object_set_new(
                result, "node_jobs",
                json_pack("{s:i}", "running", (int)scheduler_running(ctx->scheduler)));
        if (r < 0)
                return -ENOMEM;
        r = ledger_list_nodes(ctx->ledger, (int64_t)lease_usec, &v, &n);
        if (r < 0) {
                /* The rest of the status stands without it (the ledger unreachable). */
                r = json_object_set_new(
                        result, "cluster",
                        json_pack("{s:s+}", "error",
                                  "cannot list the cluster's nodes: ", ledger_errmsg(ctx->ledger)));
                return r < 0 ? -ENOMEM : 0;
        }

        r = -ENOMEM;
        nodes = json_array();
        if (!nodes)
                goto finish;
        for (size_t i = 0; i < n; i++) {
                alive += v[i].alive;
                if (json_array_append_new(
                            nodes,
                            json_pack("{s:o, s:o, s:I, s:b, s:f, s:I, s:i, s:i, s:o, s:b}", "node",
                                      api_text_or_null(v[i].node), "owner",
                                      api_text_or_null(v[i].owner), "pid", (json_int_t)v[i].pid,
                                      "alive", (int)v[i].alive, "heartbeat_age_s",
                                      (double)v[i].age_usec / (double)USEC_PER_SEC, "started",
                                      (json_int_t)(v[i].started_usec / (int64_t)USEC_PER_SEC),
                                      "workers", (int)v[i].workers, "running", (int)v[i].running,
                                      "version", api_text_or_null(v[i].version), "self",
                                      (int)(v[i].node && strcmp(v[i].node, node) == 0))) < 0)
                        goto finish;
        }
        section = json_pack("{s:f, s:i, s:i, s:O}", "lease_s",
                            (double)lease_usec / (double)USEC_PER_SEC, "alive", (int)alive,
                            "lapsed", (int)(n - alive), "nodes", nodes);
        if (!section)
                goto finish;
        r = json_object_set(result, "cluster", section) < 0 ? -ENOMEM : 0;
finish:
        ledger_nodes_free(v, n);
        return r;
}

int api_status(struct api_context *ctx, const struct api_args *args, json_t **ret_result,
               char **ret_error)
{
        _cleanup_(json_decrefp) json_t *jobs = NULL, *list = NULL;
        const worker_pool *pool = ctx->scheduler ? scheduler_pool(ctx->scheduler) : NULL;
        const uint64_t *counts;
        uint64_t own[_JOB_STATE_MAX];
        struct scheduler_report rep;
        int64_t uptime_usec;
        json_t *result;
        bool unread;
        int r;

        (void)args;

        /* The scheduler's report holds the counts; without a scheduler, ask the ledger. While
         * the ledger's server cannot be reached, the status stands without what only it knows
         * ("jobs" is null): the breaker, the alerts and "ledger" say why. */
        r = ctx->scheduler ? scheduler_report(ctx->scheduler, &rep)
                           : ledger_counts(ctx->ledger, own);
        unread = r < 0 && ctx->scheduler && ledger_unreachable(ctx->ledger, NULL);
        if (r < 0 && !unread)
                return api_ledger_failure(ctx, r, "cannot count jobs", ret_error);
        counts = ctx->scheduler ? rep.jobs : own;

        jobs = unread ? json_null() : json_object();
        if (!jobs)
                return -ENOMEM;
        for (int s = 0; s < _JOB_STATE_MAX && !unread; s++)
                if (json_object_set_new(jobs, job_state_name(s),
                                        json_integer((json_int_t)counts[s])) < 0)
                        return -ENOMEM;
        if (!unread) {
                /* Of the queued: held until their watch is configured again. */
                uint64_t held = 0;

                r = ledger_count_held(ctx->ledger, &held);
                if (r < 0)
                        return api_ledger_failure(ctx, r, "cannot count held jobs", ret_error);
                if (json_object_set_new(jobs, "held", json_integer((json_int_t)held)) < 0)
                        return -ENOMEM;
        }

        list = json_array();
        if (!list)
                return -ENOMEM;
        if (pool) {
                r = worker_pool_describe(pool, list);
                if (r < 0)
                        return r;
        }

        uptime_usec = wall_usec() - ctx->started_usec;
        if (uptime_usec < 0 || ctx->started_usec <= 0)
                uptime_usec = 0;

        result = json_pack(
                "{s:s, s:i, s:s, s:I, s:o, s:b, s:i, s:i, s:o, "
                "s:{s:i, s:i, s:i, s:O}, s:O, s:b}",
                "state", ctx->state ? ctx->state : "running", "pid", (int)getpid(), "version",
                IMGD_VERSION, "uptime_s", (json_int_t)(uptime_usec / USEC_PER_SEC), "config",
                api_text_or_null(ctx->config ? ctx->config->file : NULL), "paused",
                ctx->scheduler ? (int)scheduler_paused(ctx->scheduler) : 0, "running",
                ctx->scheduler ? (int)scheduler_running(ctx->scheduler) : 0, "subscribers",
                (int)control_subscribers(ctx->control), "watches", watches_to_json(ctx->config),
                "workers", "total", pool ? (int)worker_pool_size(pool) : 0, "busy",
                pool ? (int)worker_pool_busy(pool) : 0, "idle",
                pool ? (int)worker_pool_idle(pool) : 0, "list", list, "jobs", jobs,
                "intake_pending", (int)watch_intake_pending(ctx->watch));
        if (!result)
                return -ENOMEM;
        if (ctx->scheduler) {
                json_t *alerts = NULL, *hj = health_to_json(&rep, &alerts);

                /* Each call takes its value, even on failure: no short-circuit. */
                r = json_object_set_new(result, "ledger", ledger_to_json(ctx));
                r |= json_object_set_new(result, "breaker", breaker_to_json(ctx->scheduler));
                r |= json_object_set_new(result, "health", hj);
                r |= intake_counts(ctx, result);
                r |= json_object_set_new(result, "alerts", alerts);
                if (ctx->reconciler && !unread)
                        r |= json_object_set_new(result, "reconcile",
                                                 reconciler_progress(ctx->reconciler));
                if (r < 0) {
                        json_decref(result);
                        return -ENOMEM;
                }
                r = cluster_to_json(ctx, result);
                if (r < 0) {
                        json_decref(result);
                        return r;
                }
        }
        *ret_result = result;
        return 0;
}

/* The daemon's resident set size in bytes, from /proc/self/statm; 0 if unknown. */
static uint64_t rss_bytes(void)
{
        unsigned long long size = 0, resident = 0;
        long page = sysconf(_SC_PAGESIZE);
        FILE *f = fopen("/proc/self/statm", "re");

        if (!f)
                return 0;
        if (fscanf(f, "%llu %llu", &size, &resident) != 2)
                resident = 0;
        fclose(f);
        return page > 0 ? (uint64_t)resident * (uint64_t)page : 0;
}

/* The node label and the cluster's gauges (metrics.h), on a ledger several nodes share. */
static int cluster_gauges(struct api_context *ctx, struct metrics_gauges *g, char **ret_error)
{
        struct ledger_node *v = NULL;
        usec_t lease_usec = 0;
        size_t n = 0;
        int r;

        g->node = scheduler_cluster_node(ctx->scheduler, &lease_usec);
        if (!g->node)
                return 0;
        g->node_jobs_running = scheduler_running(ctx->scheduler);
        if (g->ledger_unread)
                return 0;
        r = ledger_list_nodes(ctx->ledger, (int64_t)lease_usec, &v, &n);
        if (r < 0)
                return api_ledger_failure(ctx, r, "cannot list the cluster's nodes", ret_error);
        for (size_t i = 0; i < n; i++)
                g->nodes_alive += v[i].alive;
        g->nodes_lapsed = n - g->nodes_alive;
        ledger_nodes_free(v, n);
        return 0;
}

int api_metrics_text(struct api_context *ctx, char **ret_text, char **ret_error)
{
        const worker_pool *pool;
        struct metrics_gauges g = { .health_score = 100 };
        _cleanup_free_ char *text = NULL;
        struct scheduler_report rep;
        size_t size = 0;
        FILE *f;
        int r, bs;

        r = api_require(ctx, API_NEED_LEDGER | API_NEED_SCHEDULER, ret_error);
        if (r < 0)
                return r;
        /* While the ledger's server cannot be reached, the metrics stand without what only it
         * knows (metrics.h: ledger_unread). */
        r = scheduler_report(ctx->scheduler, &rep);
        g.ledger_unread = r < 0 && ledger_unreachable(ctx->ledger, NULL);
        if (r < 0 && !g.ledger_unread)
                return api_ledger_failure(ctx, r, "cannot count jobs", ret_error);
        for (int i = 0; i < _JOB_STATE_MAX && i < (int)ELEMENTSOF(g.jobs_by_state); i++)
                g.jobs_by_state[i] = rep.jobs[i];
        pool = scheduler_pool(ctx->scheduler);
        if (pool) {
                g.workers_busy = worker_pool_busy(pool);
                g.workers_idle = worker_pool_idle(pool);
                g.workers_total = worker_pool_size(pool);
        }
        g.rss_bytes = rss_bytes();
        g.oldest_queued_age_usec = rep.oldest_queued_age_usec;
        bs = breaker_state_from_name(rep.breaker);
        if (bs >= 0)
                g.breaker_state = bs;               /* numbered as the gauge (breaker.h) */
        g.degradation_level = (int)rep.level_value; /* numbered as the gauge (health.h) */
        g.health_score = rep.score;
        g.alerts = rep.alerts.active;
        g.drain_usec = rep.alerts.drain_usec;
        g.error_rate = rep.error_rate;
        g.finished_per_s = rep.finished_per_s;
        g.intake_retry_pending = intake_retry_pending(ctx->retry, NULL);
        g.unwatched_folders = watch_unwatched(ctx->watch, NULL);
        if (ctx->reconciler && !g.ledger_unread)
                g.background_remaining = reconciler_remaining(ctx->reconciler);
        r = cluster_gauges(ctx, &g, ret_error);
        if (r < 0)
                return r;

        f = open_memstream(&text, &size);
        if (!f)
                return -ENOMEM;
        r = metrics_render(scheduler_metrics(ctx->scheduler), &g, f);
        if (fclose(f) != 0 || r < 0 || !text)
                return api_error(ret_error, -EIO, "cannot render the metrics");
        *ret_text = TAKE_PTR(text);
        return 0;
}

int api_metrics(struct api_context *ctx, const struct api_args *args, json_t **ret_result,
                char **ret_error)
{
        _cleanup_free_ char *text = NULL;
        json_t *result;
        int r;

        (void)args;
        r = api_metrics_text(ctx, &text, ret_error);
        if (r < 0)
                return r;
        result = json_pack("{s:o}", "text", proto_string_lossy(text));
        if (!result)
                return -ENOMEM;
        *ret_result = result;
        return 0;
}
