/* SPDX-License-Identifier: MIT */
/*
 * api-query.c - the commands that read jobs (api-private.h): "jobs" (the newest jobs, by
 * state, watch and time) and "show" (one job with its outputs, its error history, its
 * placeholder and its manifest). They only read the ledger; their arguments reach them
 * validated by the dispatch (api.c).
 *
 * Answers stay within PROTO_MAX_LINE: "jobs" stops adding jobs before the line would be too
 * long and says so with "truncated": true.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

#include "daemon/api-private.h"
#include "daemon/publish.h"
#include "shared/macro.h"
#include "shared/manifest.h"
#include "shared/proto.h"

#define API_LIST_DEFAULT 50
/* Room left in a line for {"v":1,"ok":true,"result":{"jobs":[],"truncated":true}}. */
#define API_LINE_RESERVE 256

/* The fields "jobs" and "show" share. A new object, or NULL when out of memory. */
static json_t *job_to_json(const struct job *j)
{
        const char *state = job_state_name(j->state);

        return json_pack("{s:I, s:s, s:o, s:o, s:o, s:I, s:I, s:I, s:I, s:s, s:o}", "id",
                         (json_int_t)j->id, "state", state ? state : "unknown", "source",
                         api_text_or_null(j->source_path), "watch", api_text_or_null(j->watch),
                         "pipeline", api_text_or_null(j->pipeline), "attempts",
                         (json_int_t)j->attempts, "created_us", (json_int_t)j->created_usec,
                         "updated_us", (json_int_t)j->updated_usec, "next_at_us",
                         (json_int_t)j->next_at_usec, "sha256", j->sha256, "error",
                         api_text_or_null(j->last_error));
}

int api_jobs(struct api_context *ctx, const struct api_args *args, json_t **ret_result,
             char **ret_error)
{
        _cleanup_(json_decrefp) json_t *arr = NULL, *result = NULL;
        struct ledger_filter f = {
                .state = args->state,
                .watch = args->watch,
                .since_usec = args->since_usec,
                .limit = args->limit > 0 ? (unsigned)args->limit : API_LIST_DEFAULT,
        };
        struct job *jobs = NULL;
        size_t n = 0, i, used = API_LINE_RESERVE;
        bool truncated = false;
        int r;

        r = ledger_list(ctx->ledger, &f, &jobs, &n);
        if (r < 0)
                return api_ledger_failure(ctx, r, "cannot list jobs", ret_error);

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

/*
 * The outputs of d, each with what the render reported for its variant in the job's "info"
 * (manifest_extra()): "quality" (the encoder's, null when none) and "dssim" (quality =
 * "auto": the output's score, else null). NULL when out of memory.
 */
static json_t *outputs_to_json(const struct job_detail *d)
{
        _cleanup_(json_decrefp) json_t *arr = json_array(), *info = NULL;
        const json_t *by_name;

        if (!arr)
                return NULL;
        info = d->job.info ? json_loads(d->job.info, 0, NULL) : NULL;
        by_name = json_object_get(info, "variants");
        for (size_t i = 0; i < d->n_outputs; i++) {
                const struct job_output *o = &d->outputs[i];
                const json_t *r = o->variant ? json_object_get(by_name, o->variant) : NULL;
                json_t *q = json_object_get(r, "quality"), *s = json_object_get(r, "dssim");

                /* recipe: null when unknown (made before recipes were kept). */
                if (json_array_append_new(
                            arr, json_pack("{s:o, s:o, s:o, s:I, s:I, s:I, s:s, s:O, s:O, s:o}",
                                           "variant", api_text_or_null(o->variant), "path",
                                           api_text_or_null(o->path), "format",
                                           api_text_or_null(o->format), "width",
                                           (json_int_t)o->width, "height", (json_int_t)o->height,
                                           "bytes", (json_int_t)o->bytes, "sha256", o->sha256,
                                           "quality", json_is_integer(q) ? q : json_null(), "dssim",
                                           json_is_number(s) ? s : json_null(), "recipe",
                                           o->recipe[0] ? json_string(o->recipe) : json_null())) <
                    0)
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
                                                         (json_int_t)e->at_usec, "message",
                                                         api_text_or_null(e->message))) < 0)
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

                if (json_object_set_new(out, keys[i], api_text_or_null(v)) < 0)
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
        if (manifest_path(j->output_key, &path) < 0)
                return NULL;
        return proto_string_lossy(path);
}

int api_show(struct api_context *ctx, const struct api_args *args, json_t **ret_result,
             char **ret_error)
{
        _cleanup_(job_detail_freep) struct job_detail *d = NULL;
        _cleanup_(json_decrefp) json_t *job = NULL;
        int64_t id = args->id;
        json_t *result;
        int r;

        r = ledger_get(ctx->ledger, id, &d);
        if (r < 0)
                return api_ledger_failure(ctx, r, "cannot read the job", ret_error);
        if (r == 0)
                return api_error(ret_error, -ENOENT, "no job %lld", (long long)id);

        job = job_to_json(&d->job);
        if (!job)
                return -ENOMEM;
        if (json_object_set_new(job, "output_key", api_text_or_null(d->job.output_key)) < 0 ||
            json_object_set_new(job, "outputs", outputs_to_json(d)) < 0 ||
            json_object_set_new(job, "errors", errors_to_json(d)) < 0 ||
            json_object_set_new(job, "placeholder", placeholder_to_json(&d->job)) < 0 ||
            json_object_set_new(job, "manifest", manifest_to_json(&d->job)) < 0 ||
            json_object_set_new(job, "kind", json_string(job_kind_name(d->job.kind) ?: "render")) <
                    0 ||
            json_object_set_new(job, "origin",
                                d->job.origin > 0 ? json_integer((json_int_t)d->job.origin)
                                                  : json_null()) < 0 ||
            json_object_set_new(job, "redo",
                                d->job.redo ? json_loads(d->job.redo, 0, NULL) : json_null()) < 0)
                return -ENOMEM;

        result = json_pack("{s:O}", "job", job);
        if (!result)
                return -ENOMEM;
        *ret_result = result;
        return 0;
}

int api_plan(struct api_context *ctx, const struct api_args *args, json_t **ret_result,
             char **ret_error)
{
        (void)args;
        (void)ret_error;
        *ret_result = reconciler_plan(ctx->reconciler);
        return *ret_result ? 0 : -ENOMEM;
}
