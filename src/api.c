/* SPDX-License-Identifier: MIT */
/*
 * api.c - what the control commands do (see api.h and README.md):
 *
 *   ping    {"pong":true}
 *   status  the daemon's state, pid, version, uptime and configuration file, its watches,
 *           its workers, and the number of jobs in every state
 *   jobs    the newest jobs, filtered by "state", "watch", "since" (microseconds since the
 *           epoch) and "limit" (1..10000, default 50)
 *   show    one job ("id") with its outputs and its error history
 *
 * Everything here only reads: the ledger, the configuration and the scheduler's view of the
 * workers. Arguments are checked and refused with a message that says what was expected.
 * Strings from outside (paths, error texts) go into JSON through proto_string_lossy(), so a
 * file name that is not UTF-8 cannot make an answer unencodable.
 *
 * Answers stay within PROTO_MAX_LINE: "jobs" stops adding jobs before the line would be too
 * long and says so with "truncated": true.
 */
#include <assert.h>
#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "imgd/api.h"
#include "imgd/macro.h"
#include "imgd/proto.h"
#include "imgd/worker.h"

#define API_LIST_DEFAULT 50
#define API_LIST_MAX 10000
/* Room left in a line for {"v":1,"ok":true,"result":{"jobs":[],"truncated":true}}. */
#define API_LINE_RESERVE 256
/* How much of a client's text (a command, a state name) is repeated in an error message. */
#define API_ECHO_MAX 64

typedef int (*api_command_fn)(struct api_context *ctx, const json_t *request,
                              json_t **ret_result, char **ret_error);

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

static int64_t wall_now_us(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_REALTIME, &ts);
        return (int64_t)ts.tv_sec * 1000000 + ts.tv_nsec / 1000;
}

/* The fields "jobs" and "show" share. A new object, or NULL when out of memory. */
static json_t *job_to_json(const struct job *j)
{
        const char *state = job_state_name(j->state);

        return json_pack("{s:I, s:s, s:o, s:o, s:o, s:I, s:I, s:I, s:I, s:s, s:o}",
                         "id", (json_int_t)j->id,
                         "state", state ? state : "unknown",
                         "source", text_or_null(j->source_path),
                         "watch", text_or_null(j->watch),
                         "pipeline", text_or_null(j->pipeline),
                         "attempts", (json_int_t)j->attempts,
                         "created_us", (json_int_t)j->created_us,
                         "updated_us", (json_int_t)j->updated_us,
                         "next_at_us", (json_int_t)j->next_at_us,
                         "sha256", j->sha256,
                         "error", text_or_null(j->last_error));
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

                if (json_array_append_new(arr, json_pack("{s:o, s:o, s:o, s:b}",
                                                         "path", text_or_null(w->path),
                                                         "output", text_or_null(w->output),
                                                         "pipeline",
                                                         text_or_null(w->pipeline_name),
                                                         "recursive", (int)w->recursive)) < 0)
                        return NULL;
        }
        return TAKE_PTR(arr);
}

static int api_status(struct api_context *ctx, const json_t *request, json_t **ret_result,
                      char **ret_error)
{
        _cleanup_(json_decrefp) json_t *jobs = NULL, *list = NULL;
        const worker_pool *pool = ctx->scheduler ? scheduler_pool(ctx->scheduler) : NULL;
        uint64_t counts[_JOB_STATE_MAX];
        int64_t uptime_us;
        json_t *result;
        int r;

        (void)request;

        if (!ctx->ledger)
                return api_error(ret_error, -ENODEV, "the job ledger is not open");
        r = ledger_counts(ctx->ledger, counts);
        if (r < 0)
                return ledger_failure(ctx, r, "cannot count jobs", ret_error);

        jobs = json_object();
        if (!jobs)
                return -ENOMEM;
        for (int s = 0; s < _JOB_STATE_MAX; s++)
                if (json_object_set_new(jobs, job_state_name(s),
                                        json_integer((json_int_t)counts[s])) < 0)
                        return -ENOMEM;

        list = json_array();
        if (!list)
                return -ENOMEM;
        if (pool) {
                r = worker_pool_describe(pool, list);
                if (r < 0)
                        return r;
        }

        uptime_us = wall_now_us() - ctx->started_us;
        if (uptime_us < 0 || ctx->started_us <= 0)
                uptime_us = 0;

        result = json_pack("{s:s, s:i, s:s, s:I, s:o, s:o, s:{s:i, s:i, s:i, s:O}, s:O}",
                           "state", ctx->state ? ctx->state : "running",
                           "pid", (int)getpid(),
                           "version", IMGD_VERSION,
                           "uptime_s", (json_int_t)(uptime_us / 1000000),
                           "config", text_or_null(ctx->config ? ctx->config->file : NULL),
                           "watches", watches_to_json(ctx->config),
                           "workers",
                           "total", pool ? (int)worker_pool_size(pool) : 0,
                           "busy", pool ? (int)worker_pool_busy(pool) : 0,
                           "idle", pool ? (int)worker_pool_idle(pool) : 0,
                           "list", list,
                           "jobs", jobs);
        if (!result)
                return -ENOMEM;
        *ret_result = result;
        return 0;
}

static int api_jobs(struct api_context *ctx, const json_t *request, json_t **ret_result,
                    char **ret_error)
{
        _cleanup_(json_decrefp) json_t *arr = NULL, *result = NULL;
        struct ledger_filter f = {.state = -1, .limit = API_LIST_DEFAULT};
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
                                         API_ECHO_MAX, state, ellipsis(state),
                                         state_names_list());
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

                if (json_array_append_new(arr, json_pack("{s:o, s:o, s:o, s:I, s:I, s:I, s:s}",
                                                         "variant", text_or_null(o->variant),
                                                         "path", text_or_null(o->path),
                                                         "format", text_or_null(o->format),
                                                         "width", (json_int_t)o->width,
                                                         "height", (json_int_t)o->height,
                                                         "bytes", (json_int_t)o->bytes,
                                                         "sha256", o->sha256)) < 0)
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

                if (json_array_append_new(arr, json_pack("{s:I, s:I, s:o}",
                                                         "attempt", (json_int_t)e->attempt,
                                                         "at_us", (json_int_t)e->at_us,
                                                         "message",
                                                         text_or_null(e->message))) < 0)
                        return NULL;
        }
        return TAKE_PTR(arr);
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
            json_object_set_new(job, "errors", errors_to_json(d)) < 0)
                return -ENOMEM;

        result = json_pack("{s:O}", "job", job);
        if (!result)
                return -ENOMEM;
        *ret_result = result;
        return 0;
}

static const struct {
        const char *name;
        api_command_fn fn;
} api_commands[] = {
        {"ping", api_ping},
        {"status", api_status},
        {"jobs", api_jobs},
        {"show", api_show},
};

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
