/* SPDX-License-Identifier: MIT */
/*
 * api.c - what the control commands do (see api.h and README.md):
 *
 *   ping     {"pong":true}
 *   status   the daemon's state, pid, version, uptime and configuration file, whether intake
 *            is paused, how many jobs are dispatched, the circuit breaker and the health
 *            level, its watches, its workers, and the number of jobs in every state
 *   jobs     the newest jobs, filtered by "state", "watch", "since" (microseconds since the
 *            epoch) and "limit" (1..10000, default 50)
 *   show     one job ("id") with its outputs, its error history and, for a pipeline with
 *            placeholder = true, the placeholder its render reported
 *   retry    a dead or held job ("id") or dead jobs ("dead": true, at most API_RETRY_BATCH a
 *            request; the answer says how many remain) back to queued
 *   cancel   a queued, retry or dead job ("id"); a running one is refused
 *   pause    claim no new jobs (running ones finish); resume: claim again; drain: pause and
 *            say how many are still running (imgctl drain waits for 0)
 *   enqueue  a file ("path", absolute) below a watched folder becomes a job now, whether or
 *            not the watch saw it; a file already known answers its existing job
 *   metrics  the Prometheus text exposition (metrics.h) as {"text": "..."}
 *   reload   load the configuration file again, as SIGHUP does, and say whether it was
 *            taken: {"reloaded": true, "config": FILE, "watches": N}, or an error with the
 *            reason it was rejected (the running configuration stays in force)
 *
 * ping, status, jobs, show and metrics only read: the ledger, the configuration and the
 * scheduler's view of the workers. The others change jobs only through the ledger's own
 * transitions (ledger_retry, ledger_cancel, intake_file) and tell the scheduler
 * (scheduler_enqueued, which also emits "queued"). Arguments are checked and refused with a
 * message that says what was expected.
 * Strings from outside (paths, error texts) go into JSON through proto_string_lossy(), so a
 * file name that is not UTF-8 cannot make an answer unencodable.
 *
 * Answers stay within PROTO_MAX_LINE: "jobs" stops adding jobs before the line would be too
 * long and says so with "truncated": true.
 */
#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "daemon/api.h"
#include "daemon/intake.h"
#include "shared/log.h"
#include "shared/macro.h"
#include "daemon/metrics.h"
#include "shared/pathmap.h"
#include "shared/proto.h"
#include "daemon/publish.h"
#include "daemon/worker-pool.h"

#define API_LIST_DEFAULT 50
#define API_LIST_MAX 10000
/* Room left in a line for {"v":1,"ok":true,"result":{"jobs":[],"truncated":true}}. */
#define API_LINE_RESERVE 256
/* How much of a client's text (a command, a state name) is repeated in an error message. */
#define API_ECHO_MAX 64
/* Dead jobs put back per "retry" request: each is one transaction (an fsync), and the daemon
 * answers nobody else meanwhile. imgctl repeats the request until none remain. */
#define API_RETRY_BATCH 200
/* Jobs of a watch searched for the existing job of a file "enqueue" finds already known. */
#define API_ENQUEUE_LOOKUP 10000
#define API_CANCEL_REASON "cancelled by operator"

typedef int (*api_command_fn)(struct api_context *ctx, const json_t *request, json_t **ret_result,
                              char **ret_error);

/* Sets *ret_error to a formatted message and returns r, or -ENOMEM if it cannot. */
static int api_error(char **ret_error, int r, const char *fmt, ...) _printf_(3, 4);
static int api_error(char **ret_error, int r, const char *fmt, ...)
{
        va_list ap;
        int k;

        va_start(ap, fmt);
        k = vasprintf(ret_error, fmt, ap);
        va_end(ap);
        if (k < 0)
                return -ENOMEM;
        return r;
}

static int ledger_failure(struct api_context *ctx, int r, const char *what, char **ret_error)
{
        const char *m = ledger_errmsg(ctx->ledger);

        if (r == -ENOMEM)
                return -ENOMEM;
        return api_error(ret_error, r, "%s: %s", what, m && *m ? m : strerror(-r));
}

/* "..." when s is longer than what an error message repeats of it. */
static const char *ellipsis(const char *s)
{
        return strnlen(s, API_ECHO_MAX + 1) > API_ECHO_MAX ? "..." : "";
}

/* A JSON string for text from outside, or null for NULL; NULL when out of memory. */
static json_t *text_or_null(const char *s)
{
        return s ? proto_string_lossy(s) : json_null();
}

/* The fields "jobs" and "show" share. A new object, or NULL when out of memory. */
static json_t *job_to_json(const struct job *j)
{
        const char *state = job_state_name(j->state);

        return json_pack("{s:I, s:s, s:o, s:o, s:o, s:I, s:I, s:I, s:I, s:s, s:o}", "id",
                         (json_int_t)j->id, "state", state ? state : "unknown", "source",
                         text_or_null(j->source_path), "watch", text_or_null(j->watch), "pipeline",
                         text_or_null(j->pipeline), "attempts", (json_int_t)j->attempts,
                         "created_us", (json_int_t)j->created_us, "updated_us",
                         (json_int_t)j->updated_us, "next_at_us", (json_int_t)j->next_at_us,
                         "sha256", j->sha256, "error", text_or_null(j->last_error));
}

/* "expected one of queued, running, ..." for messages; static storage. */
static const char *state_names_list(void)
{
        static char buf[128];

        if (!buf[0]) {
                size_t n = 0;

                for (int s = 0; s < _JOB_STATE_MAX; s++)
                        n += (size_t)snprintf(buf + n, sizeof buf - n, "%s%s", s ? ", " : "",
                                              job_state_name(s));
        }
        return buf;
}

/* An optional string argument: 0 with the string or NULL when absent (or null). */
static int arg_string(const json_t *req, const char *key, const char **ret, char **ret_error)
{
        const json_t *v = json_object_get(req, key);

        if (!v || json_is_null(v)) {
                *ret = NULL;
                return 0;
        }
        if (!json_is_string(v))
                return api_error(ret_error, -EINVAL, "\"%s\" must be a string", key);
        *ret = json_string_value(v);
        return 0;
}

/* An optional integer argument in [min, max]: 1 with its value, 0 when absent (or null). */
static int arg_integer(const json_t *req, const char *key, int64_t min, int64_t max,
                       const char *what, int64_t *ret, char **ret_error)
{
        const json_t *v = json_object_get(req, key);
        int64_t x;

        if (!v || json_is_null(v))
                return 0;
        if (!json_is_integer(v))
                return api_error(ret_error, -EINVAL, "\"%s\" must be %s", key, what);
        x = (int64_t)json_integer_value(v);
        if (x < min || x > max)
                return api_error(ret_error, -ERANGE, "\"%s\" must be %s, not %lld", key, what,
                                 (long long)x);
        *ret = x;
        return 1;
}

static int api_ping(struct api_context *ctx, const json_t *request, json_t **ret_result,
                    char **ret_error)
{
        json_t *result;

        (void)ctx;
        (void)request;
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
                                                         text_or_null(w->path), "output",
                                                         text_or_null(w->output), "pipeline",
                                                         text_or_null(w->pipeline_name),
                                                         "recursive", (int)w->recursive)) < 0)
                        return NULL;
        }
        return TAKE_PTR(arr);
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
                      a->drain_us == HEALTH_DRAIN_NEVER ? json_null()
                                                        : json_real((double)a->drain_us / 1e6),
                      "oldest_queued_s", (double)rep->oldest_queued_age_us / 1e6);
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

static int api_status(struct api_context *ctx, const json_t *request, json_t **ret_result,
                      char **ret_error)
{
        _cleanup_(json_decrefp) json_t *jobs = NULL, *list = NULL;
        const worker_pool *pool = ctx->scheduler ? scheduler_pool(ctx->scheduler) : NULL;
        const uint64_t *counts;
        uint64_t own[_JOB_STATE_MAX];
        struct scheduler_report rep;
        int64_t uptime_us;
        json_t *result;
        int r;

        (void)request;

        if (!ctx->ledger)
                return api_error(ret_error, -ENODEV, "the job ledger is not open");
        /* The scheduler's report holds the counts; without a scheduler, ask the ledger. */
        r = ctx->scheduler ? scheduler_report(ctx->scheduler, &rep)
                           : ledger_counts(ctx->ledger, own);
        if (r < 0)
                return ledger_failure(ctx, r, "cannot count jobs", ret_error);
        counts = ctx->scheduler ? rep.jobs : own;

        jobs = json_object();
        if (!jobs)
                return -ENOMEM;
        for (int s = 0; s < _JOB_STATE_MAX; s++)
                if (json_object_set_new(jobs, job_state_name(s),
                                        json_integer((json_int_t)counts[s])) < 0)
                        return -ENOMEM;
        {
                /* Of the queued: held until their watch is configured again. */
                uint64_t held = 0;

                r = ledger_count_held(ctx->ledger, &held);
                if (r < 0)
                        return ledger_failure(ctx, r, "cannot count held jobs", ret_error);
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

        uptime_us = wall_usec() - ctx->started_us;
        if (uptime_us < 0 || ctx->started_us <= 0)
                uptime_us = 0;

        result = json_pack("{s:s, s:i, s:s, s:I, s:o, s:b, s:i, s:i, s:o, "
                           "s:{s:i, s:i, s:i, s:O}, s:O, s:b}",
                           "state", ctx->state ? ctx->state : "running", "pid", (int)getpid(),
                           "version", IMGD_VERSION, "uptime_s", (json_int_t)(uptime_us / 1000000),
                           "config", text_or_null(ctx->config ? ctx->config->file : NULL), "paused",
                           ctx->scheduler ? (int)scheduler_paused(ctx->scheduler) : 0, "running",
                           ctx->scheduler ? (int)scheduler_running(ctx->scheduler) : 0,
                           "subscribers", (int)control_subscribers(ctx->control), "watches",
                           watches_to_json(ctx->config), "workers", "total",
                           pool ? (int)worker_pool_size(pool) : 0, "busy",
                           pool ? (int)worker_pool_busy(pool) : 0, "idle",
                           pool ? (int)worker_pool_idle(pool) : 0, "list", list, "jobs", jobs,
                           "intake_pending", (int)watch_intake_pending(ctx->watch));
        if (!result)
                return -ENOMEM;
        if (ctx->scheduler) {
                json_t *alerts = NULL, *hj = health_to_json(&rep, &alerts);

                /* Each call takes its value, even on failure: no short-circuit. */
                r = json_object_set_new(result, "breaker", breaker_to_json(ctx->scheduler));
                r |= json_object_set_new(result, "health", hj);
                r |= intake_counts(ctx, result);
                r |= json_object_set_new(result, "alerts", alerts);
                if (r < 0) {
                        json_decref(result);
                        return -ENOMEM;
                }
        }
        *ret_result = result;
        return 0;
}

static int api_jobs(struct api_context *ctx, const json_t *request, json_t **ret_result,
                    char **ret_error)
{
        _cleanup_(json_decrefp) json_t *arr = NULL, *result = NULL;
        struct ledger_filter f = { .state = -1, .limit = API_LIST_DEFAULT };
        const char *state = NULL;
        struct job *jobs = NULL;
        size_t n = 0, i, used = API_LINE_RESERVE;
        int64_t x;
        bool truncated = false;
        int r;

        if (!ctx->ledger)
                return api_error(ret_error, -ENODEV, "the job ledger is not open");

        r = arg_string(request, "state", &state, ret_error);
        if (r < 0)
                return r;
        if (state) {
                f.state = job_state_from_name(state);
                if (f.state < 0)
                        return api_error(ret_error, -EINVAL,
                                         "unknown state '%.*s%s' (expected one of %s)",
                                         API_ECHO_MAX, state, ellipsis(state), state_names_list());
        }
        r = arg_string(request, "watch", &f.watch, ret_error);
        if (r < 0)
                return r;
        r = arg_integer(request, "since", 0, INT64_MAX,
                        "an integer number of microseconds since the epoch", &x, ret_error);
        if (r < 0)
                return r;
        if (r > 0)
                f.since_us = x;
        r = arg_integer(request, "limit", 1, API_LIST_MAX, "an integer from 1 to 10000", &x,
                        ret_error);
        if (r < 0)
                return r;
        if (r > 0)
                f.limit = (unsigned)x;

        r = ledger_list(ctx->ledger, &f, &jobs, &n);
        if (r < 0)
                return ledger_failure(ctx, r, "cannot list jobs", ret_error);

        arr = json_array();
        if (!arr) {
                r = -ENOMEM;
                goto free_jobs;
        }
        for (i = 0; i < n; i++) {
                json_t *o = job_to_json(&jobs[i]);
                size_t len;

                if (!o) {
                        r = -ENOMEM;
                        goto free_jobs;
                }
                /* Keep the answer within one protocol line. */
                len = json_dumpb(o, NULL, 0, JSON_COMPACT) + 1;
                if (used + len > PROTO_MAX_LINE) {
                        json_decref(o);
                        truncated = true;
                        break;
                }
                used += len;
                if (json_array_append_new(arr, o) < 0) {
                        r = -ENOMEM;
                        goto free_jobs;
                }
        }

        result = json_pack("{s:O, s:b}", "jobs", arr, "truncated", (int)truncated);
        if (!result) {
                r = -ENOMEM;
                goto free_jobs;
        }
        *ret_result = TAKE_PTR(result);
        r = 0;

free_jobs:
        for (i = 0; i < n; i++)
                job_clear(&jobs[i]);
        free(jobs);
        return r;
}

static json_t *outputs_to_json(const struct job_detail *d)
{
        _cleanup_(json_decrefp) json_t *arr = json_array();

        if (!arr)
                return NULL;
        for (size_t i = 0; i < d->n_outputs; i++) {
                const struct job_output *o = &d->outputs[i];

                if (json_array_append_new(
                            arr, json_pack("{s:o, s:o, s:o, s:I, s:I, s:I, s:s}", "variant",
                                           text_or_null(o->variant), "path", text_or_null(o->path),
                                           "format", text_or_null(o->format), "width",
                                           (json_int_t)o->width, "height", (json_int_t)o->height,
                                           "bytes", (json_int_t)o->bytes, "sha256", o->sha256)) < 0)
                        return NULL;
        }
        return TAKE_PTR(arr);
}

static json_t *errors_to_json(const struct job_detail *d)
{
        _cleanup_(json_decrefp) json_t *arr = json_array();

        if (!arr)
                return NULL;
        for (size_t i = 0; i < d->n_errors; i++) {
                const struct job_error *e = &d->errors[i];

                if (json_array_append_new(arr, json_pack("{s:I, s:I, s:o}", "attempt",
                                                         (json_int_t)e->attempt, "at_us",
                                                         (json_int_t)e->at_us, "message",
                                                         text_or_null(e->message))) < 0)
                        return NULL;
        }
        return TAKE_PTR(arr);
}

/*
 * The placeholder the render reported for j (its "info", which the scheduler writes from the
 * worker's reply): {"blurhash", "dominant", "data_uri"}, each a string or null, or null when
 * the job has none (its pipeline has no placeholder, or it is not rendered yet). Only those
 * three members are passed on. NULL when out of memory.
 */
static json_t *placeholder_to_json(const struct job *j)
{
        static const char *const keys[] = { "blurhash", "dominant", "data_uri" };
        _cleanup_(json_decrefp) json_t *info = NULL, *out = NULL;
        const json_t *ph;

        if (!j->info)
                return json_null();
        info = json_loads(j->info, 0, NULL);
        ph = json_object_get(info, "placeholder");
        if (!json_is_object(ph))
                return json_null();
        out = json_object();
        if (!out)
                return NULL;
        for (size_t i = 0; i < ELEMENTSOF(keys); i++) {
                const char *v = json_string_value(json_object_get(ph, keys[i]));

                if (json_object_set_new(out, keys[i], text_or_null(v)) < 0)
                        return NULL;
        }
        return TAKE_PTR(out);
}

/* The manifest of a done job j (its path, lossy UTF-8), or null; NULL when out of memory. */
static json_t *manifest_to_json(const struct job *j)
{
        _cleanup_free_ char *path = NULL;

        if (j->state != JOB_DONE || !j->output_key)
                return json_null();
        if (publish_manifest_path(j->output_key, &path) < 0)
                return NULL;
        return proto_string_lossy(path);
}

static int api_show(struct api_context *ctx, const json_t *request, json_t **ret_result,
                    char **ret_error)
{
        _cleanup_(job_detail_freep) struct job_detail *d = NULL;
        _cleanup_(json_decrefp) json_t *job = NULL;
        int64_t id = 0;
        json_t *result;
        int r;

        if (!ctx->ledger)
                return api_error(ret_error, -ENODEV, "the job ledger is not open");

        r = arg_integer(request, "id", 1, INT64_MAX, "a job id (a positive integer)", &id,
                        ret_error);
        if (r < 0)
                return r;
        if (r == 0)
                return api_error(ret_error, -EINVAL, "show needs a job \"id\"");

        r = ledger_get(ctx->ledger, id, &d);
        if (r < 0)
                return ledger_failure(ctx, r, "cannot read the job", ret_error);
        if (r == 0)
                return api_error(ret_error, -ENOENT, "no job %lld", (long long)id);

        job = job_to_json(&d->job);
        if (!job)
                return -ENOMEM;
        if (json_object_set_new(job, "output_key", text_or_null(d->job.output_key)) < 0 ||
            json_object_set_new(job, "outputs", outputs_to_json(d)) < 0 ||
            json_object_set_new(job, "errors", errors_to_json(d)) < 0 ||
            json_object_set_new(job, "placeholder", placeholder_to_json(&d->job)) < 0 ||
            json_object_set_new(job, "manifest", manifest_to_json(&d->job)) < 0)
                return -ENOMEM;

        result = json_pack("{s:O}", "job", job);
        if (!result)
                return -ENOMEM;
        *ret_result = result;
        return 0;
}

static int require_ledger(struct api_context *ctx, char **ret_error)
{
        if (!ctx->ledger)
                return api_error(ret_error, -ENODEV, "the job ledger is not open");
        if (!ctx->scheduler)
                return api_error(ret_error, -ENODEV, "the scheduler is not running");
        return 0;
}

/* A required "id" argument. */
static int arg_job_id(const json_t *request, const char *cmd, int64_t *ret, char **ret_error)
{
        int r = arg_integer(request, "id", 1, INT64_MAX, "a job id (a positive integer)", ret,
                            ret_error);

        if (r == 0)
                return api_error(ret_error, -EINVAL, "%s needs a job \"id\"", cmd);
        return r;
}

/* The job's state, or a negative errno with a message ("no job 7"). */
static int job_state_of(struct api_context *ctx, int64_t id, char **ret_error)
{
        _cleanup_(job_detail_freep) struct job_detail *d = NULL;
        int r = ledger_get(ctx->ledger, id, &d);

        if (r < 0)
                return ledger_failure(ctx, r, "cannot read the job", ret_error);
        if (r == 0)
                return api_error(ret_error, -ENOENT, "no job %" PRId64, id);
        return (int)d->job.state;
}

/* The fields the scheduler's events carry, for events api.c emits itself. */
static json_t *job_event_json(const struct job *j)
{
        return json_pack("{s:I, s:o, s:o, s:o, s:I}", "id", (json_int_t)j->id, "source",
                         text_or_null(j->source_path), "watch", text_or_null(j->watch), "pipeline",
                         text_or_null(j->pipeline), "attempts", (json_int_t)j->attempts);
}

/*
 * The refusal to retry cancelled job `id`. A cancelled job stays cancelled: it may have been
 * superseded by newer content, or its file may be gone. Its file, if it is still there, is
 * enqueued instead, which makes a new job of its current content (a cancelled job does not
 * count as known). Returns -ESTALE (or the ledger's error) with the message in *ret_error.
 */
static int cancelled_not_retried(struct api_context *ctx, int64_t id, char **ret_error)
{
        _cleanup_(job_detail_freep) struct job_detail *d = NULL;
        int r = ledger_get(ctx->ledger, id, &d);

        if (r < 0)
                return ledger_failure(ctx, r, "cannot read the job", ret_error);
        return api_error(ret_error, -ESTALE,
                         "job %" PRId64 " is cancelled; only dead jobs can be retried (to "
                         "process its file again: imgctl enqueue %s)",
                         id, r > 0 && d->job.source_path ? d->job.source_path : "PATH");
}

static int api_retry(struct api_context *ctx, const json_t *request, json_t **ret_result,
                     char **ret_error)
{
        const json_t *dead = json_object_get(request, "dead");
        int64_t id = 0, now = wall_usec();
        uint64_t counts[_JOB_STATE_MAX];
        json_t *result;
        unsigned retried = 0;
        int r, state;

        r = require_ledger(ctx, ret_error);
        if (r < 0)
                return r;
        if (dead && !json_is_boolean(dead))
                return api_error(ret_error, -EINVAL, "\"dead\" must be true or false");
        r = arg_integer(request, "id", 1, INT64_MAX, "a job id (a positive integer)", &id,
                        ret_error);
        if (r < 0)
                return r;
        if ((r > 0) == json_is_true(dead))
                return api_error(ret_error, -EINVAL,
                                 "retry needs either a job \"id\" or \"dead\": true");

        if (id > 0) {
                state = job_state_of(ctx, id, ret_error);
                if (state < 0)
                        return state;
                if (state == JOB_CANCELLED)
                        return cancelled_not_retried(ctx, id, ret_error);
                /* Dead, or queued and held (its watch was gone at its claim). */
                r = state == JOB_DEAD || state == JOB_QUEUED ? ledger_retry(ctx->ledger, id, now)
                                                             : -ESTALE;
                if (r == -ESTALE)
                        return api_error(ret_error, -ESTALE,
                                         "job %" PRId64 " is %s; only dead jobs can be retried "
                                         "(and queued ones held for a removed watch)",
                                         id, job_state_name(state));
                if (r < 0)
                        return ledger_failure(ctx, r, "cannot retry the job", ret_error);
                log_info("job %" PRId64 ": retried by operator", id);
                scheduler_retried(ctx->scheduler, id);
                result = json_pack("{s:i, s:[I], s:i}", "retried", 1, "ids", (json_int_t)id,
                                   "remaining", 0);
                if (!result)
                        return -ENOMEM;
                *ret_result = result;
                return 0;
        }

        /* All dead jobs, a batch at a time. */
        {
                struct ledger_filter f = { .state = JOB_DEAD, .limit = API_RETRY_BATCH };
                struct job *jobs = NULL;
                size_t n = 0;

                r = ledger_list(ctx->ledger, &f, &jobs, &n);
                if (r < 0)
                        return ledger_failure(ctx, r, "cannot list dead jobs", ret_error);
                for (size_t i = 0; i < n; i++) {
                        if (r >= 0) {
                                r = ledger_retry(ctx->ledger, jobs[i].id, now);
                                if (r >= 0) {
                                        retried++;
                                        scheduler_retried(ctx->scheduler, jobs[i].id);
                                }
                        }
                        job_clear(&jobs[i]);
                }
                free(jobs);
                if (r < 0)
                        return ledger_failure(ctx, r, "cannot retry a dead job", ret_error);
        }
        if (retried > 0)
                log_info("%u dead job(s) retried by operator", retried);
        r = ledger_counts(ctx->ledger, counts);
        if (r < 0)
                return ledger_failure(ctx, r, "cannot count jobs", ret_error);
        result = json_pack("{s:i, s:I}", "retried", (int)retried, "remaining",
                           (json_int_t)counts[JOB_DEAD]);
        if (!result)
                return -ENOMEM;
        *ret_result = result;
        return 0;
}

static int api_cancel(struct api_context *ctx, const json_t *request, json_t **ret_result,
                      char **ret_error)
{
        _cleanup_(job_detail_freep) struct job_detail *d = NULL;
        _cleanup_(json_decrefp) json_t *event = NULL;
        json_t *result;
        int64_t id = 0;
        int r;

        r = require_ledger(ctx, ret_error);
        if (r < 0)
                return r;
        r = arg_job_id(request, "cancel", &id, ret_error);
        if (r < 0)
                return r;
        r = ledger_get(ctx->ledger, id, &d);
        if (r < 0)
                return ledger_failure(ctx, r, "cannot read the job", ret_error);
        if (r == 0)
                return api_error(ret_error, -ENOENT, "no job %" PRId64, id);
        switch (d->job.state) {
        case JOB_QUEUED:
        case JOB_RETRY:
        case JOB_DEAD:
                break;
        case JOB_RUNNING:
                /* Its worker is rendering it; the scheduler owns it until it finishes. */
                return api_error(ret_error, -EBUSY,
                                 "job %" PRId64 " is running; only queued, retry or dead jobs "
                                 "can be cancelled (wait for it to finish)",
                                 id);
        default:
                return api_error(ret_error, -ESTALE,
                                 "job %" PRId64 " is %s already; only queued, retry or dead "
                                 "jobs can be cancelled",
                                 id, job_state_name(d->job.state));
        }
        r = ledger_cancel(ctx->ledger, id, API_CANCEL_REASON, wall_usec());
        if (r < 0)
                return ledger_failure(ctx, r, "cannot cancel the job", ret_error);
        log_info("job %" PRId64 " %s: cancelled by operator", id, d->job.source_path);

        event = job_event_json(&d->job);
        if (event && json_object_set_new(event, "error", json_string(API_CANCEL_REASON)) >= 0)
                api_on_event("cancelled", event, ctx);

        result = json_pack("{s:I, s:s}", "cancelled", (json_int_t)id, "was",
                           job_state_name(d->job.state));
        if (!result)
                return -ENOMEM;
        *ret_result = result;
        return 0;
}

/* {"paused": ..., "running": N}: the answer of pause, resume and drain. */
static int intake_answer(struct api_context *ctx, json_t **ret_result)
{
        json_t *result = json_pack("{s:b, s:i}", "paused", (int)scheduler_paused(ctx->scheduler),
                                   "running", (int)scheduler_running(ctx->scheduler));

        if (!result)
                return -ENOMEM;
        *ret_result = result;
        return 0;
}

static int api_pause(struct api_context *ctx, const json_t *request, json_t **ret_result,
                     char **ret_error)
{
        int r = require_ledger(ctx, ret_error);

        (void)request;
        if (r < 0)
                return r;
        scheduler_pause(ctx->scheduler);
        return intake_answer(ctx, ret_result);
}

static int api_resume(struct api_context *ctx, const json_t *request, json_t **ret_result,
                      char **ret_error)
{
        int r = require_ledger(ctx, ret_error);

        (void)request;
        if (r < 0)
                return r;
        if (ctx->state && strcmp(ctx->state, "stopping") == 0)
                return api_error(ret_error, -ESHUTDOWN,
                                 "imgd is stopping; it claims no new jobs until it is started "
                                 "again");
        scheduler_resume(ctx->scheduler);
        return intake_answer(ctx, ret_result);
}

static int api_drain(struct api_context *ctx, const json_t *request, json_t **ret_result,
                     char **ret_error)
{
        return api_pause(ctx, request, ret_result, ret_error);
}

/* True if path is dir or below it, by whole components ("/a/bc" is not below "/a/b"). */
static bool path_below(const char *path, const char *dir, size_t *ret_len)
{
        size_t n = strlen(dir);

        while (n > 1 && dir[n - 1] == '/')
                n--;
        if (strncmp(path, dir, n) != 0 || (path[n] != '/' && !(n == 1 && dir[0] == '/')))
                return false;
        *ret_len = n == 1 ? 0 : n;
        return true;
}

/*
 * The watch whose folder holds the file at `real` (a resolved path), and the file's path as
 * that watch sees it (its path + the rest, in *ret_source). With nested watches, the
 * deepest one. A non-recursive watch only holds files directly in its folder. Returns 1 and
 * the watch, 0 if none, -ENOMEM.
 */
static int find_watch_of(const struct config *cfg, const char *real,
                         const struct watch_config **ret, char **ret_source)
{
        const struct watch_config *best = NULL;
        size_t best_len = 0, best_rest = 0;

        for (size_t i = 0; cfg && i < cfg->n_watches; i++) {
                const struct watch_config *w = &cfg->watches[i];
                _cleanup_free_ char *wreal = realpath(w->path, NULL);
                size_t len;

                if (!wreal || !path_below(real, wreal, &len) || real[len] != '/' ||
                    real[len + 1] == '\0')
                        continue;
                if (!w->recursive && strchr(real + len + 1, '/'))
                        continue;
                if (!best || len > best_len) {
                        best = w;
                        best_len = len;
                        best_rest = len;
                }
        }
        if (!best)
                return 0;
        if (asprintf(ret_source, "%s%s", best->path, real + best_rest) < 0)
                return -ENOMEM;
        *ret = best;
        return 1;
}

/* The newest job of `source` (from watch `w`) that is not cancelled: 1 and its id and state,
 * 0 if none is among the watch's newest API_ENQUEUE_LOOKUP jobs. */
static int find_job_of(struct api_context *ctx, const struct watch_config *w, const char *source,
                       int64_t *ret_id, enum job_state *ret_state)
{
        struct ledger_filter f = { .state = -1, .watch = w->path, .limit = API_ENQUEUE_LOOKUP };
        struct job *jobs = NULL;
        size_t n = 0;
        int r, found = 0;

        r = ledger_list(ctx->ledger, &f, &jobs, &n);
        if (r < 0)
                return r;
        for (size_t i = 0; i < n; i++) {
                if (!found && jobs[i].state != JOB_CANCELLED && jobs[i].source_path &&
                    strcmp(jobs[i].source_path, source) == 0) {
                        *ret_id = jobs[i].id;
                        *ret_state = jobs[i].state;
                        found = 1;
                }
                job_clear(&jobs[i]);
        }
        free(jobs);
        return found;
}

static int api_enqueue(struct api_context *ctx, const json_t *request, json_t **ret_result,
                       char **ret_error)
{
        _cleanup_free_ char *real = NULL, *source = NULL, *error = NULL;
        const struct watch_config *w = NULL;
        const char *path = NULL, *name;
        enum job_state state = JOB_QUEUED;
        bool created = false;
        int64_t id = 0;
        struct stat st;
        json_t *result;
        int r;

        r = require_ledger(ctx, ret_error);
        if (r < 0)
                return r;
        r = arg_string(request, "path", &path, ret_error);
        if (r < 0)
                return r;
        if (!path)
                return api_error(ret_error, -EINVAL, "enqueue needs a \"path\"");
        if (path[0] != '/')
                return api_error(ret_error, -EINVAL, "\"path\" must be absolute, not '%.*s%s'",
                                 API_ECHO_MAX, path, ellipsis(path));
        if (strlen(path) >= PATH_MAX)
                return api_error(ret_error, -ENAMETOOLONG, "\"path\" is too long");

        /* Where the file really is decides which watch it belongs to: a path through a
         * symlinked folder that leads out of the watch is not below it. */
        real = realpath(path, NULL);
        if (!real)
                return api_error(ret_error, negative_errno(), "%s: %s", path, strerror(errno));
        r = find_watch_of(ctx->config, real, &w, &source);
        if (r < 0)
                return r;
        if (r == 0)
                return api_error(ret_error, -EXDEV, "%s is not below a watched folder", real);
        if (lstat(source, &st) < 0)
                return api_error(ret_error, negative_errno(), "%s: %s", source, strerror(errno));
        if (!S_ISREG(st.st_mode))
                return api_error(ret_error, -EINVAL, "%s is not a regular file", source);
        name = strrchr(source, '/') + 1;
        if (pathmap_is_ignored(name))
                return api_error(ret_error, -EINVAL,
                                 "%s has a hidden or temporary name, which imgd ignores; "
                                 "rename it first",
                                 source);

        r = intake_file(ctx->ledger, ctx->config, w, source, wall_usec(), &id, &error);
        if (r < 0) {
                if (r == -ENOMEM && !error)
                        return -ENOMEM;
                return api_error(ret_error, r, "%s", error ? error : strerror(-r));
        }
        if (r > 0) {
                created = true;
                log_info("job %" PRId64 " %s: queued by operator", id, source);
                scheduler_enqueued(ctx->scheduler, id);
        } else {
                r = find_job_of(ctx, w, source, &id, &state);
                if (r < 0)
                        return ledger_failure(ctx, r, "cannot look the file up", ret_error);
        }

        result = json_pack("{s:o, s:b, s:o, s:o}", "id",
                           id > 0 ? json_integer((json_int_t)id) : json_null(), "created",
                           (int)created, "state",
                           id > 0 ? json_string(job_state_name(state)) : json_null(), "source",
                           text_or_null(source));
        if (!result)
                return -ENOMEM;
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

int api_metrics_text(struct api_context *ctx, char **ret_text, char **ret_error)
{
        const worker_pool *pool;
        static const char *const breaker_states[] = { "closed", "half-open", "open" };
        struct metrics_gauges g = { .health_score = 100 };
        _cleanup_free_ char *text = NULL;
        struct scheduler_report rep;
        size_t size = 0;
        FILE *f;
        int r;

        r = require_ledger(ctx, ret_error);
        if (r < 0)
                return r;
        r = scheduler_report(ctx->scheduler, &rep);
        if (r < 0)
                return ledger_failure(ctx, r, "cannot count jobs", ret_error);
        for (int i = 0; i < _JOB_STATE_MAX && i < (int)ELEMENTSOF(g.jobs_by_state); i++)
                g.jobs_by_state[i] = rep.jobs[i];
        pool = scheduler_pool(ctx->scheduler);
        if (pool) {
                g.workers_busy = worker_pool_busy(pool);
                g.workers_idle = worker_pool_idle(pool);
                g.workers_total = worker_pool_size(pool);
        }
        g.rss_bytes = rss_bytes();
        g.oldest_queued_age_s = (double)rep.oldest_queued_age_us / 1e6;
        for (int i = 0; i < (int)ELEMENTSOF(breaker_states); i++)
                if (strcmp(rep.breaker, breaker_states[i]) == 0)
                        g.breaker_state = i;
        g.degradation_level = (int)rep.level_value; /* numbered as the gauge (health.h) */
        g.health_score = rep.score;
        g.alerts = rep.alerts.active;
        g.drain_s = rep.alerts.drain_us == HEALTH_DRAIN_NEVER ? INFINITY
                                                              : (double)rep.alerts.drain_us / 1e6;
        g.error_rate = rep.error_rate;
        g.finished_per_s = rep.finished_per_s;
        g.intake_retry_pending = intake_retry_pending(ctx->retry, NULL);
        g.unwatched_folders = watch_unwatched(ctx->watch, NULL);

        f = open_memstream(&text, &size);
        if (!f)
                return -ENOMEM;
        r = metrics_render(scheduler_metrics(ctx->scheduler), &g, f);
        if (fclose(f) != 0 || r < 0 || !text)
                return api_error(ret_error, -EIO, "cannot render the metrics");
        *ret_text = TAKE_PTR(text);
        return 0;
}

static int api_metrics(struct api_context *ctx, const json_t *request, json_t **ret_result,
                       char **ret_error)
{
        _cleanup_free_ char *text = NULL;
        json_t *result;
        int r;

        (void)request;
        r = api_metrics_text(ctx, &text, ret_error);
        if (r < 0)
                return r;
        result = json_pack("{s:o}", "text", proto_string_lossy(text));
        if (!result)
                return -ENOMEM;
        *ret_result = result;
        return 0;
}

static int api_reload(struct api_context *ctx, const json_t *request, json_t **ret_result,
                      char **ret_error)
{
        _cleanup_free_ char *why = NULL;
        json_t *result;
        int r;

        (void)request;
        if (!ctx->reload)
                return api_error(ret_error, -EOPNOTSUPP, "reload is not available");
        r = ctx->reload(ctx->reload_userdata, &why);
        if (r < 0) {
                if (r == -ENOMEM && !why)
                        return r;
                return api_error(ret_error, r,
                                 "reload rejected, the running configuration stays in force: %s",
                                 why ?: strerror(-r));
        }
        /* ctx->config is the new configuration now. */
        result = json_pack("{s:b, s:o, s:I}", "reloaded", 1, "config",
                           proto_string_lossy(ctx->config->file), "watches",
                           (json_int_t)ctx->config->n_watches);
        if (!result)
                return -ENOMEM;
        *ret_result = result;
        return 0;
}

void api_on_event(const char *event, const json_t *job, void *userdata)
{
        struct api_context *ctx = userdata;
        _cleanup_free_ char *line = NULL;
        int r;

        assert(event);
        assert(job);
        if (!ctx || !ctx->control || control_subscribers(ctx->control) == 0)
                return;

        line = proto_format_event(event, wall_usec(), job);
        if (line && strlen(line) > PROTO_MAX_LINE + 1) {
                /* Hundreds of outputs: tell the event, subscribers can "show" the job. */
                _cleanup_(json_decrefp) json_t *small = json_copy((json_t *)job);

                free(line);
                line = NULL;
                if (small && json_object_del(small, "outputs") == 0 &&
                    json_object_set_new(small, "outputs_omitted", json_true()) == 0)
                        line = proto_format_event(event, wall_usec(), small);
                if (line && strlen(line) > PROTO_MAX_LINE + 1) {
                        log_warning("event %s: too large to send", event);
                        return;
                }
        }
        if (!line) {
                log_warning("event %s: out of memory; subscribers miss it", event);
                return;
        }
        r = control_broadcast(ctx->control, line);
        if (r < 0)
                log_warning_errno(r, "event %s: cannot send it to subscribers: %m", event);
}

static const struct {
        const char *name;
        api_command_fn fn;
} api_commands[] = {
        { "ping", api_ping },       { "status", api_status },   { "jobs", api_jobs },
        { "show", api_show },       { "retry", api_retry },     { "cancel", api_cancel },
        { "pause", api_pause },     { "resume", api_resume },   { "drain", api_drain },
        { "enqueue", api_enqueue }, { "metrics", api_metrics }, { "reload", api_reload },
};

/* The commands that change nothing, for the control socket's read-only role. */
static const char *const api_read_only_commands[] = { "ping", "status", "jobs", "show", "metrics" };

bool api_command_read_only(const char *cmd)
{
        for (size_t i = 0; i < ELEMENTSOF(api_read_only_commands); i++)
                if (strcmp(cmd, api_read_only_commands[i]) == 0)
                        return true;
        for (size_t i = 0; i < ELEMENTSOF(api_commands); i++)
                if (strcmp(cmd, api_commands[i].name) == 0)
                        return false;
        return true;
}

int api_handle(const char *cmd, const json_t *request, void *userdata, json_t **ret_result,
               char **ret_error)
{
        struct api_context *ctx = userdata;
        json_t *result = NULL;
        char *error = NULL;
        int r;

        assert(cmd);
        assert(request);
        assert(ctx);
        assert(ret_result);
        assert(ret_error);

        for (size_t i = 0; i < ELEMENTSOF(api_commands); i++) {
                if (strcmp(cmd, api_commands[i].name) != 0)
                        continue;
                r = api_commands[i].fn(ctx, request, &result, &error);
                if (r < 0) {
                        if (!error && r == -ENOMEM)
                                error = strdup("out of memory");
                        *ret_error = error;
                        return r;
                }
                *ret_result = result;
                return 0;
        }

        r = api_error(&error, -EOPNOTSUPP, "unknown command '%.*s%s'", API_ECHO_MAX, cmd,
                      ellipsis(cmd));
        if (r == -EOPNOTSUPP)
                *ret_error = error;
        return r;
}
