/* SPDX-License-Identifier: MIT */
/*
 * scheduler-complete.c - the end of a job's attempt. On success (scheduler_finish_ok(),
 * called for each job waiting in `finished`): the outputs are staged in the ledger
 * (checkpoint "verified"), published (rename, directory fsync, manifest) and only then is
 * the job completed, logged "done" and told to subscribers; a job superseded meanwhile is
 * cancelled, and one whose source was rewritten in place while it ran is cancelled and its
 * path handed to the changed handler (main.c takes the new content in). On failure, what
 * retry.h decides: a retry after a backoff, dead (its source quarantined when the watch has
 * a quarantine folder), or, for the machine's errors, handed back without using an attempt.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/jobprep.h"
#include "daemon/quarantine.h"
#include "daemon/retry.h"
#include "daemon/scheduler-private.h"
#include "shared/fault.h"
#include "shared/hash.h"
#include "shared/log.h"
#include "shared/macro.h"
#include "shared/manifest.h"
#include "shared/pathmap.h"
#include "shared/proto.h"
#include "shared/time-util.h"

/* Records a failed attempt: retry after a backoff, or dead when permanent or out of
 * attempts. A job whose path has newer content (a job of its own) is cancelled as
 * superseded instead: its failure says nothing about the file there now, which it leaves
 * alone. */
void scheduler_job_failed(scheduler *s, const struct job *job, const char *error, bool permanent)
{
        int64_t now = wall_usec(), next = now;
        enum retry_decision decision = retry_decide(&s->cfg->retry, job->attempts, permanent);
        bool retry = decision == RETRY_AGAIN;
        _cleanup_free_ char *msg = NULL, *moved = NULL;
        json_t *extra;
        int r;

        if (ledger_superseded(s->ledger, job->id) > 0) {
                if (asprintf(&msg, "superseded by newer content (attempt %u failed: %s)",
                             job->attempts, error) < 0)
                        msg = NULL;
                log_job(LOG_INFO, LOG_JOB_CANCELLED, job->id, job->source_path, job->pipeline,
                        "job %" PRId64 " %s: %s; cancelled", job->id, job->source_path,
                        msg ?: error);
                r = ledger_cancel_claim(s->ledger, job->id, job->fence,
                                        msg ?: "superseded by newer content", now);
                if (r < 0)
                        log_error_errno(r, "ledger: cancel job %" PRId64 ": %s", job->id,
                                        ledger_errmsg(s->ledger));
                else
                        scheduler_emit(s, "cancelled", job,
                                       json_pack("{s:o}", "error",
                                                 proto_string_lossy(
                                                         msg ?: "superseded by newer content")));
                return;
        }
        if (retry) {
                next = now +
                       (int64_t)retry_backoff_usec(&s->cfg->retry, job->attempts, retry_random01());
                log_job(LOG_WARNING, LOG_JOB_RETRY, job->id, job->source_path, job->pipeline,
                        "job %" PRId64 " %s: attempt %u failed: %s; retrying in %.1f s", job->id,
                        job->source_path, job->attempts, error,
                        (double)(next - now) / (double)USEC_PER_SEC);
        } else if (decision == RETRY_DEAD_EXHAUSTED) {
                if (asprintf(&msg, "gave up after %u attempts: %s", job->attempts, error) < 0)
                        msg = NULL;
                log_job(LOG_ERR, LOG_JOB_DEAD, job->id, job->source_path, job->pipeline,
                        "job %" PRId64 " %s: %s", job->id, job->source_path, msg ?: error);
        } else {
                log_job(LOG_ERR, LOG_JOB_DEAD, job->id, job->source_path, job->pipeline,
                        "job %" PRId64 " %s: %s", job->id, job->source_path, error);
        }
        r = ledger_fail(s->ledger, job->id, job->fence, msg ?: error, retry, next, now);
        if (r == -ESTALE) {
                /* Rescued by another node meanwhile, which counted the attempt already. */
                scheduler_fence_refused(s, job, "fail", ledger_errmsg(s->ledger));
                return;
        }
        if (r < 0) {
                /* Unrecorded, the attempt is given back: the job is handed back (as soon as
                 * the ledger can write) rather than left running until its lease expires. */
                log_error_errno(r,
                                "ledger: record failure of job %" PRId64 ": %s; handing it "
                                "back without using an attempt",
                                job->id, ledger_errmsg(s->ledger));
                scheduler_hand_back(s, job->id, job->fence, next - now);
                return;
        }
        metrics_job_failed(s->metrics, permanent ? "permanent" : "transient");
        if (!retry)
                scheduler_note_finished(s);
        /* A retraction's failure is the output tree's, never its source's nor the pipeline's. */
        if (!retry && job->kind == JOB_RENDER)
                moved = quarantine_move(scheduler_find_watch(s->cfg, job->watch), job,
                                        s->cfg->limits.max_file_bytes);
        if (job->kind == JOB_RENDER)
                scheduler_breaker_note(s, permanent ? BREAKER_JOB_FAILURE : BREAKER_WORKER_FAILURE,
                                       error);
        extra = json_pack("{s:o, s:I}", "error", proto_string_lossy(msg ?: error), "next_at_us",
                          (json_int_t)next);
        if (extra && moved)
                json_object_set_new(extra, "quarantined", proto_string_lossy(moved));
        scheduler_emit(s, retry ? "retry" : "dead", job, extra);
}

json_t *scheduler_output_json(const struct job_output *o)
{
        return json_pack("{s:s, s:o, s:s, s:I, s:I, s:I, s:s, s:o}", "variant", o->variant, "path",
                         proto_string_lossy(o->path), "format", o->format, "width",
                         (json_int_t)o->width, "height", (json_int_t)o->height, "bytes",
                         (json_int_t)o->bytes, "sha256", o->sha256, "recipe",
                         o->recipe[0] ? json_string(o->recipe) : json_null());
}

/* A job whose completion the ledger recorded late (a kept handback with `done`): what
 * finish_ok() does after a completion, with the outputs the ledger holds. */
void scheduler_completed_late(scheduler *s, const struct job *job)
{
        _cleanup_(job_detail_freep) struct job_detail *d = NULL;
        json_t *list = json_array();
        double seconds = (double)(wall_usec() - job->updated_usec) / (double)USEC_PER_SEC;

        log_job(LOG_INFO, LOG_JOB_DONE, job->id, job->source_path, job->pipeline,
                "job %" PRId64 " %s: done (recorded once the ledger could be written again)",
                job->id, job->source_path);
        scheduler_note_finished(s);
        metrics_job_done(s->metrics, job->pipeline, seconds);
        if (list && ledger_get(s->ledger, job->id, &d) > 0)
                for (size_t i = 0; i < d->n_outputs; i++) {
                        const struct job_output *o = &d->outputs[i];

                        json_array_append_new(list, scheduler_output_json(o));
                }
        scheduler_emit(s, "done", job, list ? json_pack("{s:o}", "outputs", list) : NULL);
}

/*
 * The environment failed the job (see retry_environmental()): hand it back without using an
 * attempt, to be claimed again after a backoff that grows with consecutive failures.
 */
void scheduler_job_blocked(scheduler *s, const struct job *job, const char *error)
{
        usec_t delay_usec = retry_backoff_usec(&s->cfg->retry, ++s->env_failures, retry_random01());

        log_job(LOG_ERR, LOG_JOB_RELEASED, job->id, job->source_path, job->pipeline,
                "job %" PRId64 " %s: %s; no attempt used, trying again in %.1f s", job->id,
                job->source_path, error, (double)delay_usec / (double)USEC_PER_SEC);
        scheduler_hand_back(s, job->id, job->fence, (int64_t)delay_usec);
        metrics_job_failed(s->metrics, "environmental");
        scheduler_breaker_note(s, BREAKER_OUTPUT_FAILURE, error);
}

void scheduler_job_failure(scheduler *s, const struct job *job, const char *error, int r,
                           bool permanent)
{
        if (retry_classify(r, permanent) == RETRY_CLASS_BLOCKED)
                scheduler_job_blocked(s, job, error);
        else
                scheduler_job_failed(s, job, error, permanent);
}

/*
 * A job of a publication: checks what its worker reported and builds its rows (run->rows,
 * run->sizes, run->info). Returns true when the job is to be published; false when it was
 * finished here (superseded, its source changed, a malformed result).
 */
static bool finish_prepare(scheduler *s, struct running *run)
{
        const struct job *job = run->job;
        const json_t *reply = run->reply;
        json_t *outs = json_object_get(reply, "outputs");
        const char *src_sha = NULL;
        json_int_t manifest_bytes = -1;

        (void)json_unpack((json_t *)reply, "{s:{s:s}}", "source", "sha256", &src_sha);
        (void)json_unpack((json_t *)reply, "{s:{s:I}}", "manifest", "bytes", &manifest_bytes);
        if (!json_is_array(outs) || json_array_size(outs) != run->n || manifest_bytes < 0) {
                scheduler_job_failed(s, job, "worker returned a malformed result", false);
                return false;
        }
        if (ledger_superseded(s->ledger, job->id) > 0) {
                log_job(LOG_INFO, LOG_JOB_CANCELLED, job->id, job->source_path, job->pipeline,
                        "job %" PRId64 " %s: superseded by newer content; discarded", job->id,
                        job->source_path);
                if (ledger_cancel_claim(s->ledger, job->id, job->fence,
                                        "superseded by newer content", wall_usec()) >= 0)
                        scheduler_emit(s, "cancelled", job,
                                       json_pack("{s:s}", "error", "superseded by newer content"));
                return false;
        }
        if (!src_sha || strcmp(src_sha, job->sha256) != 0) {
                /* The file was rewritten in place while we worked on it: take in the new
                 * content as a job of its own and drop this one. */
                const struct watch_config *wc = scheduler_find_watch(s->cfg, job->watch);

                log_job(LOG_INFO, LOG_JOB_CANCELLED, job->id, job->source_path, job->pipeline,
                        "job %" PRId64 " %s: content changed while processing; superseded", job->id,
                        job->source_path);
                (void)ledger_cancel_claim(s->ledger, job->id, job->fence,
                                          "source content changed during processing", wall_usec());
                if (wc && s->changed_fn)
                        s->changed_fn(wc, job->source_path, s->changed_userdata);
                return false;
        }

        run->rows = calloc(run->n, sizeof *run->rows);
        run->sizes = calloc(run->n, sizeof *run->sizes);
        if (!run->rows || !run->sizes) {
                scheduler_job_failed(s, job, "out of memory", false);
                return false;
        }
        for (size_t i = 0; i < run->n; i++) {
                json_int_t w, h, bytes;
                const char *sha, *reported = NULL;
                enum image_format f;

                if (json_unpack(json_array_get(outs, i), "{s:I, s:I, s:I, s:s, s?s}", "width", &w,
                                "height", &h, "bytes", &bytes, "sha256", &sha, "format",
                                &reported) < 0 ||
                    strlen(sha) != HASH_HEX_SIZE - 1 ||
                    jobprep_output_format(&run->variants[i], reported, &f) < 0) {
                        scheduler_job_failed(s, job, "worker returned a malformed output", false);
                        return false;
                }
                /* Format "best": the file is named for the format the worker chose. */
                if (f != run->variants[i].format) {
                        char *named = NULL;

                        if (pathmap_replace_extension(run->tmps[i].final_path,
                                                      image_format_extension(f), &named) < 0) {
                                scheduler_job_failed(s, job, "out of memory", false);
                                return false;
                        }
                        free(run->tmps[i].final_path);
                        run->tmps[i].final_path = named;
                }
                run->rows[i] = (struct job_output){
                        .variant = run->variants[i].name,
                        .path = run->tmps[i].final_path,
                        .tmp_path = run->tmps[i].tmp_path,
                        .format = (char *)image_format_name(f),
                        .width = (unsigned)w,
                        .height = (unsigned)h,
                        .bytes = (uint64_t)bytes,
                };
                memcpy(run->rows[i].sha256, sha, HASH_HEX_SIZE);
                memcpy(run->rows[i].recipe, run->variants[i].recipe, VARIANT_RECIPE_SIZE);
                run->sizes[i] = (uint64_t)bytes;
        }

        run->manifest_bytes = (uint64_t)manifest_bytes;

        /* What the worker reported beyond the files: the placeholder, and per output the
         * quality it used and any warning (max_bytes not reached); its manifest has the same. */
        run->info = manifest_extra(outs, run->variants, json_object_get(reply, "placeholder"),
                                   run->degraded);
        return true;
}

/* Checkpoint "verified": after a crash from here on, the staged files are published without
 * rendering them again. `alone`: not in a group commit, so a failure is the job's to handle. */
static int step_stage(scheduler *s, struct running *run, bool alone)
{
        const struct job *job = run->job;
        _cleanup_free_ char *info_text = NULL;
        char why[512];
        int r;

        if (run->info && json_object_size(run->info) > 0)
                info_text = json_dumps(run->info, JSON_COMPACT);
        r = ledger_stage(s->ledger, job->id, job->fence, run->rows, run->n, run->degraded,
                         info_text, wall_usec());
        if (r == -ESTALE && alone) {
                scheduler_fence_refused(s, job, "stage", ledger_errmsg(s->ledger));
                return r;
        }
        if (r < 0 && alone) {
                snprintf(why, sizeof why, "ledger: stage outputs: %s", ledger_errmsg(s->ledger));
                scheduler_job_blocked(s, job, why);
        }
        return r;
}

/* Done: recorded once every file and directory of the job is durable. */
static int step_complete(scheduler *s, struct running *run, bool alone)
{
        int r = ledger_complete(s->ledger, run->job->id, run->job->fence, NULL, 0, wall_usec());

        if (r == -ESTALE && alone) {
                /* Published under a renewed lease that lapsed before this commit: the files
                 * are the same job's, and the claim after it publishes its own over them. */
                scheduler_fence_refused(s, run->job, "complete", ledger_errmsg(s->ledger));
                return r;
        }
        if (r < 0 && alone) {
                /* Published: the completion is recorded once the ledger can write (the
                 * outputs stay staged in it meanwhile, for the recovery after a crash). */
                struct handback *h = calloc(1, sizeof *h);

                log_error_errno(r,
                                "ledger: complete job %" PRId64 ": %s; its outputs are "
                                "published, the completion is recorded once the ledger can "
                                "be written",
                                run->job->id, ledger_errmsg(s->ledger));
                if (h) {
                        h->id = run->job->id;
                        h->fence = run->job->fence;
                        h->done = TAKE_PTR(run->job);
                        scheduler_handback_keep(s, h);
                }
        }
        return r;
}

/* A share of a group commit: the jobs of a list, and the step each of them takes in it. */
struct group_part {
        struct running *list;
        int (*step)(scheduler *s, struct running *run, bool alone);
};

/*
 * Group commit: runs each part's step for each job of its list still in the publication
 * inside one transaction of the ledger, committed with one flush. A job whose step failed in
 * the group, or every job when the commit failed (which undid them all), runs it again alone,
 * which handles its failure as it would without the group; a job whose step fails alone
 * leaves the publication.
 */
static void group_commit(scheduler *s, const struct group_part *parts, size_t n_parts)
{
        size_t live = 0;
        int r;

        for (size_t p = 0; p < n_parts; p++)
                for (struct running *run = parts[p].list; run; run = run->next)
                        live += !run->dropped;
        r = live > 1 ? ledger_batch_begin(s->ledger) : -EAGAIN;
        if (r >= 0) {
                for (size_t p = 0; p < n_parts; p++)
                        for (struct running *run = parts[p].list; run; run = run->next)
                                run->redo = !run->dropped && parts[p].step(s, run, false) < 0;
                r = ledger_batch_commit(s->ledger);
                /* Logged here: the claims it carried are undone with it (ledger_claim()), so
                 * their jobs' steps alone may only be refused, not fail with the cause. */
                if (r < 0)
                        log_error_errno(r,
                                        "ledger: group commit of %zu job(s): %s; each is "
                                        "recorded again on its own",
                                        live, ledger_errmsg(s->ledger));
        }
        for (size_t p = 0; p < n_parts; p++)
                for (struct running *run = parts[p].list; run; run = run->next)
                        if (!run->dropped && (r < 0 || run->redo) &&
                            parts[p].step(s, run, true) < 0)
                                run->dropped = true;
}

/* Renames a staged job's outputs and then its manifest; their directories go to `dirs`. */
static bool publish_files(scheduler *s, struct running *run, struct publish_dirs *dirs)
{
        const char *failed = NULL;
        char why[512];
        int r;

        r = publish_rename(run->tmps, run->sizes, run->n, dirs, &failed);
        if (r >= 0)
                r = publish_rename(&run->manifest, &run->manifest_bytes, 1, dirs, &failed);
        if (r < 0) {
                snprintf(why, sizeof why, "publish %s: %s", failed ?: "manifest", strerror(-r));
                scheduler_job_failure(s, run->job, why, r, false);
                return false;
        }
        /* The files its variants had under other names: listed by no manifest now. */
        r = publish_unlink_replaced(run->prev, run->n_prev, run->rows, run->n, dirs);
        if (r < 0)
                log_warning_errno(r, "job %" PRId64 " %s: remove the outputs it replaced: %m",
                                  run->job->id, run->job->source_path);
        return true;
}

/* A job completed: logged, counted, told. */
static void finish_done(scheduler *s, struct running *run)
{
        const struct job *job = run->job;
        double seconds = (double)(wall_usec() - job->updated_usec) / (double)USEC_PER_SEC;
        _cleanup_free_ char *manifest = NULL;
        json_t *list, *ph;

        s->env_failures = 0;
        scheduler_breaker_note(s, BREAKER_SUCCESS, NULL);
        scheduler_note_finished(s);
        log_job(LOG_INFO, LOG_JOB_DONE, job->id, job->source_path, job->pipeline,
                "job %" PRId64 " %s: done, %zu outputs in %.0f ms", job->id, job->source_path,
                run->n, seconds * (double)MSEC_PER_SEC);
        metrics_job_done(s->metrics, job->pipeline, seconds);
        list = json_array();
        for (size_t i = 0; list && i < run->n; i++)
                json_array_append_new(list, scheduler_output_json(&run->rows[i]));
        /* And what an application needs next without asking: the manifest and the placeholder
         * (null when the pipeline has none). */
        ph = run->info ? json_object_get(run->info, "placeholder") : NULL;
        if (manifest_path(job->output_key, &manifest) < 0)
                manifest = NULL;
        scheduler_emit(s, "done", job,
                       json_pack("{s:o, s:o, s:O?, s:O?}", "outputs", list, "manifest",
                                 manifest ? proto_string_lossy(manifest) : json_null(),
                                 "placeholder", json_is_object(ph) ? ph : NULL, "variants",
                                 run->info ? json_object_get(run->info, "variants") : NULL));
}

static bool any_live(const struct running *list)
{
        for (const struct running *run = list; run; run = run->next)
                if (!run->dropped)
                        return true;
        return false;
}

static void free_runs(struct running *list)
{
        while (list) {
                struct running *next = list->next;

                scheduler_running_free(list);
                list = next;
        }
}

/*
 * One group commit completes the published jobs `done` (each then logged done and told to
 * subscribers) and stages the jobs `staged`; either list may be empty. Frees `done`.
 */
static void commit_pass(scheduler *s, struct running *done, struct running *staged)
{
        const struct group_part parts[] = { { done, step_complete }, { staged, step_stage } };

        if (any_live(done)) {
                fault_point("ledger.before_complete");
                fault_delay("ledger.before_complete");
        }
        group_commit(s, parts, ELEMENTSOF(parts));
        for (struct running *run = done; run; run = run->next) {
                if (run->dropped)
                        continue;
                fault_point("ledger.after_complete");
                finish_done(s, run);
        }
        free_runs(done);
}

/*
 * Publishes the jobs whose workers reported success, all at once (issue 16): their outputs are
 * staged in one group commit (checkpoint "verified"), which also completes the jobs published
 * before them (s->published); then renamed with their manifests, each directory touched
 * fsynced once, and kept in s->published for the next such commit, or for
 * scheduler_complete_published(). Only a completed job is logged done and told to
 * subscribers. A job that fails a step leaves the publication on its own (retried, blocked or
 * handed back), the others go on.
 */
void scheduler_publish(scheduler *s, struct running *list)
{
        struct running *done = TAKE_PTR(s->published), **tail;
        struct publish_dirs dirs = {};
        const char *failed_dir = NULL;
        size_t n = 0;
        int r;

        s->n_published = 0;
        for (struct running *run = list; run; run = run->next, n++)
                run->dropped = !finish_prepare(s, run);
        log_debug("published together: %zu job(s)", n);

        commit_pass(s, done, list);
        for (struct running *run = list; run; run = run->next)
                if (!run->dropped)
                        fault_point("stage.after_commit");
        /* The fence check: nothing is renamed for a claim that was lost. */
        (void)scheduler_renew(s, list);

        for (struct running *run = list; run; run = run->next)
                if (!run->dropped && !publish_files(s, run, &dirs))
                        run->dropped = true;
        r = publish_dirs_sync(&dirs, &failed_dir);
        for (struct running *run = list; run; run = run->next) {
                char why[512];

                if (run->dropped || r >= 0)
                        continue;
                /* Which of them the failing directory held is not worth telling apart: a
                 * directory that cannot be synced is a failing disk. */
                snprintf(why, sizeof why, "publish %s: %s", failed_dir, strerror(-r));
                scheduler_job_failure(s, run->job, why, r, false);
                run->dropped = true;
        }
        publish_dirs_clear(&dirs);

        tail = &s->published;
        while (list) {
                struct running *run = list;

                list = run->next;
                run->next = NULL;
                if (run->dropped) {
                        scheduler_running_free(run);
                        continue;
                }
                *tail = run;
                tail = &run->next;
                s->n_published++;
        }
        if (s->published)
                s->published_since_usec = mono_usec();
}

void scheduler_complete_published(scheduler *s)
{
        s->n_published = 0;
        commit_pass(s, TAKE_PTR(s->published), NULL);
}
