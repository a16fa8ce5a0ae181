/* SPDX-License-Identifier: MIT */
/*
 * api-operate.c - the commands that change things (api-private.h), all in the operator's
 * role: "retry" (a dead or held job, or dead jobs a batch at a time), "cancel" (a queued,
 * retry or dead job), "pause", "resume" and "drain" (whether the scheduler claims new jobs),
 * "enqueue" (a file below a watched folder becomes a job now) and "reload" (the configuration
 * file again, as SIGHUP does). They change jobs only through the ledger's own transitions
 * (ledger_retry, ledger_cancel, intake_file) and the scheduler's entry points, never behind
 * the scheduler's back: a running job is not cancelled under its worker. Their arguments reach
 * them validated by the dispatch (api.c); what is checked here relates them to each other or
 * to the jobs in the ledger.
 */
#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "daemon/api-private.h"
#include "daemon/intake.h"
#include "shared/log.h"
#include "shared/macro.h"
#include "shared/pathmap.h"
#include "shared/proto.h"
#include "shared/time-util.h"

/* Dead jobs put back per "retry" request: each is one transaction (an fsync), and the daemon
 * answers nobody else meanwhile. imgctl repeats the request until none remain. */
#define API_RETRY_BATCH 200
/* Jobs of a watch searched for the existing job of a file "enqueue" finds already known. */
#define API_ENQUEUE_LOOKUP 10000
#define API_CANCEL_REASON "cancelled by operator"

/* The job's state, or a negative errno with a message ("no job 7"). */
static int job_state_of(struct api_context *ctx, int64_t id, char **ret_error)
{
        _cleanup_(job_detail_freep) struct job_detail *d = NULL;
        int r = ledger_get(ctx->ledger, id, &d);

        if (r < 0)
                return api_ledger_failure(ctx, r, "cannot read the job", ret_error);
        if (r == 0)
                return api_error(ret_error, -ENOENT, "no job %" PRId64, id);
        return (int)d->job.state;
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
                return api_ledger_failure(ctx, r, "cannot read the job", ret_error);
        return api_error(ret_error, -ESTALE,
                         "job %" PRId64 " is cancelled; only dead jobs can be retried (to "
                         "process its file again: imgctl enqueue %s)",
                         id, r > 0 && d->job.source_path ? d->job.source_path : "PATH");
}

int api_retry(struct api_context *ctx, const struct api_args *args, json_t **ret_result,
              char **ret_error)
{
        int64_t id = args->id, now = wall_usec();
        uint64_t counts[_JOB_STATE_MAX];
        json_t *result;
        unsigned retried = 0;
        int r, state;

        if ((id > 0) == args->dead)
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
                        return api_ledger_failure(ctx, r, "cannot retry the job", ret_error);
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
                        return api_ledger_failure(ctx, r, "cannot list dead jobs", ret_error);
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
                        return api_ledger_failure(ctx, r, "cannot retry a dead job", ret_error);
        }
        if (retried > 0)
                log_info("%u dead job(s) retried by operator", retried);
        r = ledger_counts(ctx->ledger, counts);
        if (r < 0)
                return api_ledger_failure(ctx, r, "cannot count jobs", ret_error);
        result = json_pack("{s:i, s:I}", "retried", (int)retried, "remaining",
                           (json_int_t)counts[JOB_DEAD]);
        if (!result)
                return -ENOMEM;
        *ret_result = result;
        return 0;
}

int api_cancel(struct api_context *ctx, const struct api_args *args, json_t **ret_result,
               char **ret_error)
{
        _cleanup_(job_detail_freep) struct job_detail *d = NULL;
        _cleanup_(json_decrefp) json_t *event = NULL;
        json_t *result;
        int64_t id = args->id;
        int r;

        r = ledger_get(ctx->ledger, id, &d);
        if (r < 0)
                return api_ledger_failure(ctx, r, "cannot read the job", ret_error);
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
        /* Checked again where it cancels: claimed meanwhile (by another node of a cluster),
         * the job is left to its claim, whose completion a cancel would refuse. */
        r = ledger_cancel_waiting(ctx->ledger, id, API_CANCEL_REASON, wall_usec());
        if (r == -ESTALE)
                return api_error(ret_error, -EBUSY,
                                 "job %" PRId64 " cannot be cancelled: %s (it was claimed or "
                                 "finished meanwhile); only queued, retry or dead jobs can be "
                                 "cancelled",
                                 id, ledger_errmsg(ctx->ledger));
        if (r < 0)
                return api_ledger_failure(ctx, r, "cannot cancel the job", ret_error);
        log_info("job %" PRId64 " %s: cancelled by operator", id, d->job.source_path);

        event = api_job_event_json(&d->job);
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

int api_pause(struct api_context *ctx, const struct api_args *args, json_t **ret_result,
              char **ret_error)
{
        (void)args;
        (void)ret_error;
        scheduler_pause(ctx->scheduler);
        return intake_answer(ctx, ret_result);
}

int api_resume(struct api_context *ctx, const struct api_args *args, json_t **ret_result,
               char **ret_error)
{
        (void)args;
        if (ctx->state && strcmp(ctx->state, "stopping") == 0)
                return api_error(ret_error, -ESHUTDOWN,
                                 "imgd is stopping; it claims no new jobs until it is started "
                                 "again");
        scheduler_resume(ctx->scheduler);
        return intake_answer(ctx, ret_result);
}

int api_drain(struct api_context *ctx, const struct api_args *args, json_t **ret_result,
              char **ret_error)
{
        return api_pause(ctx, args, ret_result, ret_error);
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

int api_enqueue(struct api_context *ctx, const struct api_args *args, json_t **ret_result,
                char **ret_error)
{
        _cleanup_free_ char *real = NULL, *source = NULL, *error = NULL;
        const struct watch_config *w = NULL;
        const char *path = args->path, *name;
        enum job_state state = JOB_QUEUED;
        bool created = false;
        int64_t id = 0;
        struct stat st;
        json_t *result;
        int r;

        assert(path); /* required by its schema (api.c) */

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
                        return api_ledger_failure(ctx, r, "cannot look the file up", ret_error);
        }

        result = json_pack("{s:o, s:b, s:o, s:o}", "id",
                           id > 0 ? json_integer((json_int_t)id) : json_null(), "created",
                           (int)created, "state",
                           id > 0 ? json_string(job_state_name(state)) : json_null(), "source",
                           api_text_or_null(source));
        if (!result)
                return -ENOMEM;
        *ret_result = result;
        return 0;
}

int api_reload(struct api_context *ctx, const struct api_args *args, json_t **ret_result,
               char **ret_error)
{
        _cleanup_free_ char *why = NULL;
        json_t *result;
        int r;

        (void)args;
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

int api_reconcile_pause(struct api_context *ctx, const struct api_args *args, json_t **ret_result,
                        char **ret_error)
{
        (void)args;
        (void)ret_error;
        reconciler_pause(ctx->reconciler, true);
        *ret_result = reconciler_plan(ctx->reconciler);
        return *ret_result ? 0 : -ENOMEM;
}

int api_reconcile_retract_removed(struct api_context *ctx, const struct api_args *args,
                                  json_t **ret_result, char **ret_error)
{
        (void)args;
        (void)ret_error;
        reconciler_start_dropping(ctx->reconciler, ctx->config);
        *ret_result = reconciler_plan(ctx->reconciler);
        return *ret_result ? 0 : -ENOMEM;
}

int api_reconcile_resume(struct api_context *ctx, const struct api_args *args, json_t **ret_result,
                         char **ret_error)
{
        (void)args;
        (void)ret_error;
        reconciler_pause(ctx->reconciler, false);
        reconciler_start(ctx->reconciler, ctx->config);
        *ret_result = reconciler_plan(ctx->reconciler);
        return *ret_result ? 0 : -ENOMEM;
}
