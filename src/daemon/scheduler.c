/* SPDX-License-Identifier: MIT */
/*
 * scheduler.c - from the ledger through the workers into the output tree; see scheduler.h.
 *
 * This file is the hub (its companions are listed in scheduler-private.h). One pass
 * (on_kick) claims jobs while a worker is idle. For each job (start_job) it opens the source
 * (source_open(): no symlinks, no blocking), identifies its format to name the outputs, refuses
 * outputs that would overwrite another source's, creates one temporary file per variant next to its
 * final name, and hands the worker the descriptors. When the worker answers (on_worker_done), the
 * job waits in `finished` while the next pass hands the worker its next job; then (on_publish) the
 * outputs are published (rename, directory fsync) and only then is the job completed in the ledger
 * (in the commit that stages the next batch, or alone when none comes soon);
 * on failure the temporary files are removed and the job is retried after a backoff or, once its
 * attempts are used up or the error is permanent, marked dead (scheduler-complete.c, as retry.h
 * decides). A job whose source changed while it ran is cancelled as superseded and the source taken
 * in again (by the changed handler main.c registers), so outputs always belong to the newest
 * content; its failure is no failure of the new file, which is neither retried for it nor
 * quarantined.
 */
#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "daemon/jobprep.h"
#include "daemon/quarantine.h"
#include "daemon/retry.h"
#include "daemon/scheduler-private.h"
#include "daemon/source.h"
#include "shared/health.h"
#include "shared/log.h"
#include "shared/macro.h"
#include "shared/manifest.h"
#include "shared/pathmap.h"
#include "shared/proto.h"
#include "shared/time-util.h"

#define LEASE_CHECK_USEC (30 * USEC_PER_SEC)
/* A claim the ledger could not record (its disk read-only, full) is tried again after this. */
#define CLAIM_RETRY_USEC USEC_PER_SEC
/* Live work comes while some was claimed within this: background work then holds at most
 * limits.background_share of the workers (claim_priority()). */
#define LIVE_RECENT_USEC (2 * USEC_PER_SEC)
/* How long a claim waits for a transition to carry its commit (ledger_claim()): after that
 * (a long render, nothing else happening) it is committed alone, so that it is recorded
 * within this time at most. */
#define CLAIMS_COMMIT_USEC (500 * USEC_PER_MSEC)
/* A job rendered while others still render waits this long at most to be published with
 * them (on_publish()); a batch this large goes at once. */
#define PUBLISH_DELAY_USEC (5 * USEC_PER_MSEC)
#define PUBLISH_BATCH_MAX 64
/* Published jobs wait this long at most for the next batch's staging commit to complete them
 * (on_publish()): long enough for the next batch to form while workers render. */
#define COMPLETE_DELAY_USEC (2 * PUBLISH_DELAY_USEC)

void scheduler_running_free(struct running *run)
{
        if (!run)
                return;
        json_decref(run->reply);
        json_decref(run->info);
        job_outputs_free(run->prev, run->n_prev);
        free(run->rows);
        free(run->sizes);
        for (size_t i = 0; i < run->n; i++)
                publish_tmp_discard(&run->tmps[i]);
        publish_tmp_discard(&run->manifest);
        free(run->tmps);
        free(run->variants);
        job_free(run->job);
        free(run);
}

const struct watch_config *scheduler_find_watch(const struct config *cfg, const char *path)
{
        for (size_t i = 0; i < cfg->n_watches; i++)
                if (strcmp(cfg->watches[i].path, path) == 0)
                        return &cfg->watches[i];
        return NULL;
}

/* A file the worker creates: its final path (for messages; a name that is not UTF-8 made
 * readable) and its temporary name (ASCII). */
static json_t *file_json(const struct publish_tmp *t)
{
        return json_pack("{s:o, s:s}", "path", proto_string_lossy(t->final_path), "tmp",
                         strrchr(t->tmp_path, '/') + 1);
}

/*
 * Prepares and dispatches one claimed job. Returns 0 when the job went to a worker or was
 * finished here (dead, cancelled), START_CLAIM_UNDONE when its claim could not be committed
 * (undone: the job is queued, and on_kick() says why), a negative errno when it could not be
 * started (the job has been put back).
 */
#define START_CLAIM_UNDONE 1
static int start_job(scheduler *s, struct job *job_in)
{
        _cleanup_(job_freep) struct job *job = job_in;
        _cleanup_close_ int src = -1, dir = -1;
        _cleanup_(json_decrefp) json_t *req = NULL, *jvariants = NULL, *jmanifest = NULL,
                                       *jfiles = NULL;
        const struct watch_config *wc = scheduler_find_watch(s->cfg, job->watch);
        /* The watch's pipeline and output folder as configured now, not at intake: a reload
         * that renamed the pipeline or moved the output applies to the jobs already queued. */
        const struct pipeline *pl = wc ? config_find_pipeline(s->cfg, wc->pipeline_name) : NULL;
        unsigned char magic[IMAGE_FORMAT_SNIFF_BYTES];
        enum image_format src_format;
        struct running *run = NULL;
        _cleanup_free_ char *owner = NULL, *key = NULL, *manifest = NULL;
        char why[512];
        struct stat st;
        ssize_t k;
        int r;

        if (job->kind != JOB_RENDER) {
                /* Files removed or moved by the supervisor itself: no worker, no source. They
                 * change the published tree, so the claim is committed first (it rides on
                 * the next commit otherwise: a crash would forget a claim whose job had
                 * already moved files, and recovery would not know it was under way). */
                if (ledger_commit_claims(s->ledger) < 0)
                        return START_CLAIM_UNDONE;
                scheduler_retract(s, TAKE_PTR(job));
                return 0;
        }
        if (!wc || !pl) {
                /* Not the job's fault: held, no attempt used, never dead or quarantined; a
                 * reload that configures the watch again, or `imgctl retry`, wakes it. */
                if (!wc)
                        snprintf(why, sizeof why,
                                 "watch %s is no longer configured; held until it is again (or "
                                 "imgctl retry %" PRId64 ")",
                                 job->watch, job->id);
                else
                        snprintf(why, sizeof why,
                                 "pipeline '%s' of watch %s is not configured; held until it is "
                                 "(or imgctl retry %" PRId64 ")",
                                 wc->pipeline_name, job->watch, job->id);
                log_job(LOG_WARNING, LOG_JOB_RELEASED, job->id, job->source_path, job->pipeline,
                        "job %" PRId64 " %s: %s", job->id, job->source_path, why);
                r = ledger_hold(s->ledger, job->id, job->fence, why, wall_usec());
                return r < 0 ? log_error_errno(r, "ledger: hold job %" PRId64 ": %s", job->id,
                                               ledger_errmsg(s->ledger))
                             : 0;
        }
        r = pathmap_output_key(wc->path, wc->output, job->source_path, &key);
        if (r < 0) {
                snprintf(why, sizeof why, "not below its watched folder %s", wc->path);
                scheduler_job_failed(s, job, why, true);
                return 0;
        }
        if (strcmp(key, job->output_key) != 0 || strcmp(wc->pipeline_name, job->pipeline) != 0) {
                char *pipeline = strdup(wc->pipeline_name);

                r = pipeline ? ledger_relocate(s->ledger, job->id, job->fence, pipeline, key)
                             : -ENOMEM;
                if (r < 0) {
                        int64_t now = wall_usec();

                        free(pipeline);
                        if (r == -EBUSY)
                                log_info("job %" PRId64 " %s: its outputs moved to %s_*, which "
                                         "another running job renders; handed back for a "
                                         "second",
                                         job->id, job->source_path, key);
                        else
                                log_error_errno(
                                        r, "ledger: job %" PRId64 ": record its new output %s: %s",
                                        job->id, key, ledger_errmsg(s->ledger));
                        (void)ledger_release(s->ledger, job->id, job->fence,
                                             now + (int64_t)USEC_PER_SEC, now);
                        return r;
                }
                log_info("job %" PRId64 " %s: configuration changed since intake: pipeline '%s', "
                         "outputs %s_*",
                         job->id, job->source_path, pipeline, key);
                free(job->pipeline);
                job->pipeline = pipeline;
                free(job->output_key);
                job->output_key = TAKE_PTR(key);
        }
        /* A name the file system cannot hold fails the same way every time: permanent. */
        r = manifest_path(job->output_key, &manifest);
        if (r < 0)
                return r;
        if (pathmap_name_too_long(manifest)) {
                snprintf(why, sizeof why, "output name too long: %s (NAME_MAX %d)",
                         strrchr(manifest, '/') + 1, NAME_MAX);
                scheduler_job_failed(s, job, why, true);
                return 0;
        }
        src = source_open(job->source_path, &st);
        if (src == -ENOENT) {
                log_info("job %" PRId64 ": %s was removed before it was processed", job->id,
                         job->source_path);
                r = ledger_cancel_claim(s->ledger, job->id, job->fence,
                                        "source removed before processing", wall_usec());
                return r < 0 ? log_error_errno(r, "ledger: %s", ledger_errmsg(s->ledger)) : 0;
        }
        if (src == -EINVAL) {
                scheduler_job_failed(s, job, "not a regular file", true);
                return 0;
        }
        if (src < 0) {
                snprintf(why, sizeof why, "open: %s",
                         src == -ELOOP ? "is a symlink" : strerror(-src));
                scheduler_job_failed(s, job, why, src == -ELOOP);
                return 0;
        }
        k = pread(src, magic, sizeof magic, 0);
        src_format = image_format_sniff(magic, k > 0 ? (size_t)k : 0);

        r = ledger_output_owner(s->ledger, job->output_key, job->source_path, &owner);
        if (r > 0) {
                snprintf(why, sizeof why,
                         "its outputs %s_* would overwrite those of %s; rename one of the two",
                         job->output_key, owner);
                scheduler_job_failed(s, job, why, true);
                return 0;
        }

        run = calloc(1, sizeof *run);
        if (!run)
                return -ENOMEM;
        run->manifest.fd = -1;
        run->tmps = calloc(pl->n_variants, sizeof *run->tmps);
        run->variants = calloc(pl->n_variants, sizeof *run->variants);
        jvariants = json_array();
        jfiles = json_array();
        if (!run->tmps || !run->variants || !jvariants || !jfiles) {
                scheduler_running_free(run);
                return -ENOMEM;
        }
        int fds[2];
        _cleanup_free_ const char **finals = NULL;
        enum health_level level = s->cfg->degradation ? health_level(s->health) : HEALTH_FULL;
        struct jobprep_selection sel;

        jobprep_select(pl, src_format, level, run->variants, &sel);
        run->degraded = sel.degraded;
        if (job->redo) {
                /* A reconciliation job: only the variants it was queued for, those still
                 * configured; the source's other outputs are carried over. */
                sel.n = jobprep_only(run->variants, sel.n, job->redo);
                if (sel.n == 0 && !sel.unsupported) {
                        scheduler_running_free(run);
                        log_info("job %" PRId64 " %s: nothing left to reconcile", job->id,
                                 job->source_path);
                        r = ledger_cancel_claim(s->ledger, job->id, job->fence,
                                                "nothing to render: its variants are no longer "
                                                "configured",
                                                wall_usec());
                        return r < 0 ? log_error_errno(r, "ledger: %s", ledger_errmsg(s->ledger))
                                     : 0;
                }
        }
        /* The worker creates the files (publish_tmp_name()), in their directory: the job's
         * output key's, made here. */
        dir = publish_dir_open(manifest);
        if (dir < 0) {
                snprintf(why, sizeof why, "create the output folder of %s: %s", manifest,
                         strerror(-dir));
                scheduler_running_free(run);
                scheduler_job_failure(s, job, why, dir, false);
                return 0;
        }
        fds[0] = src;
        fds[1] = dir;
        for (size_t n = 0; n < sel.n; n++) {
                _cleanup_free_ char *final = NULL;
                const struct variant *v = &run->variants[n];

                r = jobprep_output_path(job->output_key, v, &final);
                if (r >= 0 && pathmap_name_too_long(final))
                        r = -ENAMETOOLONG;
                if (r >= 0)
                        r = publish_tmp_name(final, job->id, (unsigned)n, &run->tmps[n]);
                if (r == -ENAMETOOLONG && final)
                        snprintf(why, sizeof why, "output name too long: %s (NAME_MAX %d)",
                                 strrchr(final, '/') + 1, NAME_MAX);
                else if (r < 0)
                        snprintf(why, sizeof why, "create output %s: %s", final ?: "?",
                                 strerror(-r));
                if (r < 0) {
                        scheduler_running_free(run);
                        scheduler_job_failure(s, job, why, r, r == -ENAMETOOLONG);
                        return 0;
                }
                run->n = n + 1;
                if (json_array_append_new(jfiles, file_json(&run->tmps[n])) < 0) {
                        scheduler_running_free(run);
                        return -ENOMEM;
                }
                json_array_append_new(jvariants, variant_to_json(v));
        }
        if (sel.unsupported) {
                /* After the variants before it, as each is prepared in turn. */
                scheduler_running_free(run);
                scheduler_job_failed(
                        s, job, "not a supported image: its content matches no known format", true);
                return 0;
        }
        /* The manifest: written by the worker too, so that its fsync is not the supervisor's. */
        r = publish_tmp_name(manifest, job->id, PUBLISH_MANIFEST_INDEX, &run->manifest);
        if (r < 0) {
                snprintf(why, sizeof why, "create output %s: %s", manifest, strerror(-r));
                scheduler_running_free(run);
                scheduler_job_failure(s, job, why, r, false);
                return 0;
        }
        finals = calloc(run->n ? run->n : 1, sizeof *finals);
        if (!finals || json_array_append_new(jfiles, file_json(&run->manifest)) < 0) {
                scheduler_running_free(run);
                return -ENOMEM;
        }
        for (size_t i = 0; i < run->n; i++)
                finals[i] = run->tmps[i].final_path;

        req = jobprep_request(s->cfg, pl, job->id, jvariants);
        jmanifest = jobprep_manifest(job->id, job->source_path, job->pipeline, finals,
                                     run->variants, run->n, run->degraded);
        if (job->redo && jmanifest) {
                r = ledger_carried_outputs(s->ledger, job->id, &run->prev, &run->n_prev);
                if (r >= 0)
                        r = jobprep_manifest_carry(jmanifest, run->prev, run->n_prev, run->variants,
                                                   run->n);
                if (r < 0) {
                        log_error_errno(r, "job %" PRId64 ": the outputs it carries over: %s",
                                        job->id, ledger_errmsg(s->ledger));
                        scheduler_running_free(run);
                        scheduler_hand_back(s, job->id, job->fence, USEC_PER_SEC);
                        return r;
                }
        }
        if (!req || !jmanifest || json_object_set(req, "manifest", jmanifest) < 0 ||
            json_object_set(req, "files", jfiles) < 0) {
                scheduler_running_free(run);
                return -ENOMEM;
        }
        r = worker_pool_dispatch(s->pool, job->id, req, fds, ELEMENTSOF(fds),
                                 job->priority >= JOB_PRIORITY_BACKGROUND);
        if (r < 0) {
                scheduler_running_free(run);
                log_warning_errno(r, "job %" PRId64 ": cannot hand it to a worker: %m", job->id);
                scheduler_hand_back(s, job->id, job->fence, USEC_PER_SEC);
                return r;
        }
        log_debug("job %" PRId64 " %s: dispatched (attempt %u)", job->id, job->source_path,
                  job->attempts);
        s->last_progress_usec = mono_usec();
        run->job = TAKE_PTR(job);
        run->next = s->running;
        s->running = run;
        s->n_running++;
        return 0;
}

static void arm_due_timer(scheduler *s)
{
        int64_t due;
        int r = ledger_next_due(s->ledger, &due);

        if (r <= 0)
                return;
        /* Work already due waits for a worker to free up (its result kicks the scheduler);
         * a timer in the past would only spin the loop. */
        if (due <= wall_usec())
                return;
        sd_event_source_set_time(s->due, (uint64_t)due);
        sd_event_source_set_enabled(s->due, SD_EVENT_ONESHOT);
}

/* The workers background work may hold while live work comes: n_workers * share, at least
 * one. */
static unsigned background_limit(unsigned n_workers, double share)
{
        unsigned limit = (unsigned)((double)n_workers * share);

        return limit < 1 ? 1 : limit;
}

/* The background workers of the pool: as many as background work may hold while live work
 * comes, and one worker at least for live work (so none with a single worker). */
static unsigned background_workers(const struct config *cfg)
{
        unsigned n = background_limit(cfg->workers, cfg->limits.background_share);

        return n < cfg->workers ? n : cfg->workers - 1;
}

/*
 * The least urgent priority the next claim may take (issue 17): background work
 * (reconciliation, degraded jobs rendered again) only while it holds fewer than
 * limits.background_share of the workers, or live work was not claimed for LIVE_RECENT_USEC
 * (an idle machine gives background work every worker). A claim takes live work first in
 * any case, so an upload waits at most for one job to finish.
 */
static enum job_priority claim_priority(scheduler *s)
{
        unsigned background = 0, limit = background_limit(worker_pool_size(s->pool),
                                                          s->cfg->limits.background_share);

        for (const struct running *run = s->running; run; run = run->next)
                background += run->job->priority >= JOB_PRIORITY_BACKGROUND;
        if (background >= limit && mono_usec() - s->live_claimed_usec < LIVE_RECENT_USEC)
                return JOB_PRIORITY_RETRY;
        return JOB_PRIORITY_BACKGROUND;
}

/*
 * A job claimed while a render of it is still here: the commit that carried its earlier claim
 * failed (ledger_claim()), so the ledger took it back to queued and this claim gave it the
 * same token again. The render under way goes on under this claim; a claim with another token
 * (never expected) is handed back.
 */
static void claimed_again(scheduler *s, struct job *job)
{
        const struct running *lists[] = { s->running, s->finished };

        for (size_t i = 0; i < ELEMENTSOF(lists); i++)
                for (const struct running *run = lists[i]; run; run = run->next)
                        if (run->job->id == job->id && run->job->fence == job->fence) {
                                log_info("job %" PRId64 " %s: claimed again after the commit "
                                         "of its claim failed; its render goes on",
                                         job->id, job->source_path);
                                job_free(job);
                                return;
                        }
        log_warning("job %" PRId64 " %s: claimed while a render of an earlier claim is under "
                    "way; handed back",
                    job->id, job->source_path);
        scheduler_hand_back(s, job->id, job->fence, USEC_PER_SEC);
        job_free(job);
}

static int on_claims_timer(sd_event_source *es, uint64_t usec, void *userdata)
{
        scheduler *s = userdata;
        int r;

        r = ledger_commit_claims(s->ledger);
        if (r < 0)
                log_error_errno(r, "ledger: commit the claims of the jobs rendering: %s",
                                ledger_errmsg(s->ledger));
        return 0;
}

/* Claims wait for the next transition to carry their commit, at most CLAIMS_COMMIT_USEC. */
static void arm_claims_timer(scheduler *s)
{
        int enabled = SD_EVENT_OFF;

        if (!ledger_claims_waiting(s->ledger))
                return;
        (void)sd_event_source_get_enabled(s->claims_timer, &enabled);
        if (enabled != SD_EVENT_OFF)
                return;
        sd_event_source_set_time(s->claims_timer, mono_usec() + CLAIMS_COMMIT_USEC);
        sd_event_source_set_enabled(s->claims_timer, SD_EVENT_ONESHOT);
}

/* A claim that failed (or could not be committed): tried every second while it fails,
 * logged once a minute. */
static void claim_failure(scheduler *s, int r)
{
        if (mono_usec() - s->claim_failure_logged_usec >= 60 * USEC_PER_SEC ||
            s->claim_failure_logged_usec == 0) {
                log_error_errno(r, "ledger: claim a job: %s; trying again every %.0f s",
                                ledger_errmsg(s->ledger),
                                (double)CLAIM_RETRY_USEC / (double)USEC_PER_SEC);
                s->claim_failure_logged_usec = mono_usec();
        }
        /* Unreachable: the breaker says so from this failure on. */
        (void)scheduler_ledger_sync(s);
}

static int on_kick(sd_event_source *es, void *userdata)
{
        scheduler *s = userdata;

        /* At the paused level a trickle of jobs still runs, oldest first: the backlog that
         * took it there drains, and the level can be left again. */
        enum health_level level = s->cfg->degradation ? health_level(s->health) : HEALTH_FULL;
        unsigned max_running = health_max_running(worker_pool_size(s->pool), level);
        bool claim_failed = false, capped = false;
        enum job_priority max_priority = JOB_PRIORITY_BACKGROUND;

        /* Jobs rendered and waiting to be published hold no worker: they do not count. */
        while (!s->paused && worker_pool_idle(s->pool) > 0 && s->n_running < max_running) {
                struct job *job = NULL;
                int64_t now = wall_usec(), due;
                int r;

                if (scheduler_ledger_sync(s)) {
                        /* The ledger unreachable: nothing can be claimed. A read says whether
                         * it is back (the connection is made again if it can be); if not,
                         * look again in a second. */
                        (void)ledger_next_due(s->ledger, &due);
                        if (scheduler_ledger_sync(s)) {
                                claim_failed = true;
                                break;
                        }
                }
                if (breaker_state(s->breaker) != BREAKER_CLOSED) {
                        /* Open: nothing is claimed until the cool-down has passed; then one
                         * job at a time probes the way (spend the probe only on real work). */
                        if (ledger_next_due(s->ledger, &due) <= 0 || due > now)
                                break;
                        if (!breaker_allow(s->breaker, mono_usec())) {
                                uint64_t at = breaker_retry_at_usec(s->breaker);
                                if (at > 0) {
                                        sd_event_source_set_time(s->breaker_timer, at);
                                        sd_event_source_set_enabled(s->breaker_timer,
                                                                    SD_EVENT_ONESHOT);
                                }
                                break;
                        }
                        log_notice("circuit breaker half-open: probing with one job");
                }
                max_priority = claim_priority(s);
                r = ledger_claim(s->ledger, s->owner, now, (int64_t)s->lease_usec, max_priority,
                                 &job);
                if (r < 0) {
                        claim_failure(s, r);
                        claim_failed = true;
                        break;
                }
                s->claim_failure_logged_usec = 0;
                if (r == 0) {
                        if (breaker_state(s->breaker) == BREAKER_HALF_OPEN)
                                breaker_record(s->breaker, BREAKER_JOB_FAILURE, NULL,
                                               mono_usec()); /* probe unspent */
                        capped = max_priority < JOB_PRIORITY_BACKGROUND;
                        break;
                }
                if (scheduler_has_job(s, job->id)) {
                        claimed_again(s, job);
                        continue;
                }
                if (job->priority < JOB_PRIORITY_BACKGROUND)
                        s->live_claimed_usec = mono_usec();
                r = start_job(s, job);
                if (r == START_CLAIM_UNDONE) {
                        claim_failure(s, -EIO);
                        claim_failed = true;
                        break;
                }
                if (r < 0)
                        break;
        }
        arm_claims_timer(s);
        if (claim_failed) {
                /* Nothing else may kick again (no job finishes, no upload comes): look again
                 * in a second, until the ledger can be written. */
                sd_event_source_set_time(s->due, (uint64_t)wall_usec() + CLAIM_RETRY_USEC);
                sd_event_source_set_enabled(s->due, SD_EVENT_ONESHOT);
                return 0;
        }
        /* With every worker busy a result kicks again: the next due time is asked (one query
         * per priority) only when a worker is left for it. */
        if (!s->paused && worker_pool_idle(s->pool) > 0 && s->n_running < max_running)
                arm_due_timer(s);
        if (capped) {
                /* Background work waits for live work to pause: look again when the live
                 * window has passed, unless the due timer comes sooner. */
                uint64_t since = mono_usec() - s->live_claimed_usec, armed = 0;
                uint64_t at = (uint64_t)wall_usec() +
                              (since < LIVE_RECENT_USEC ? LIVE_RECENT_USEC - since : 0);
                int enabled = SD_EVENT_OFF;

                (void)sd_event_source_get_enabled(s->due, &enabled);
                (void)sd_event_source_get_time(s->due, &armed);
                if (enabled == SD_EVENT_OFF || armed > at) {
                        sd_event_source_set_time(s->due, at);
                        sd_event_source_set_enabled(s->due, SD_EVENT_ONESHOT);
                }
        }
        return 0;
}

const char *scheduler_node(const scheduler *s)
{
        return s->node;
}

const char *scheduler_owner(const scheduler *s)
{
        return s->owner;
}

bool scheduler_has_job(const scheduler *s, int64_t id)
{
        for (const struct running *run = s->running; run; run = run->next)
                if (run->job->id == id)
                        return true;
        for (const struct running *run = s->finished; run; run = run->next)
                if (run->job->id == id)
                        return true;
        for (const struct running *run = s->published; run; run = run->next)
                if (run->job->id == id)
                        return true;
        for (const struct handback *h = s->handbacks; h; h = h->next)
                if (h->id == id)
                        return true;
        return false;
}

/*
 * A job left running in the ledger whose lease has expired and which no worker of ours is
 * working on was lost: its attempt counts as failed, and it is retried or marked dead.
 */
static int on_lease_check(sd_event_source *es, uint64_t usec, void *userdata)
{
        scheduler *s = userdata;
        _cleanup_free_ int64_t *ids = NULL;
        size_t n = 0;

        if (ledger_list_expired(s->ledger, wall_usec(), &ids, &n) >= 0) {
                for (size_t i = 0; i < n; i++) {
                        _cleanup_(job_detail_freep) struct job_detail *d = NULL;

                        if (scheduler_has_job(s, ids[i]) || ledger_get(s->ledger, ids[i], &d) <= 0)
                                continue;
                        scheduler_job_failed(s, &d->job, "lease expired with no worker on the job",
                                             false);
                }
                if (n > 0)
                        scheduler_kick(s);
        }
        sd_event_source_set_time_relative(es, LEASE_CHECK_USEC);
        sd_event_source_set_enabled(es, SD_EVENT_ONESHOT);
        return 0;
}

static int on_breaker_timer(sd_event_source *es, uint64_t usec, void *userdata)
{
        scheduler_kick(userdata);
        return 0;
}

static int on_due(sd_event_source *es, uint64_t usec, void *userdata)
{
        scheduler_kick(userdata);
        return 0;
}

void scheduler_kick(scheduler *s)
{
        sd_event_source_set_enabled(s->kick, SD_EVENT_ONESHOT);
}

static struct running *take_running(scheduler *s, int64_t id)
{
        for (struct running **p = &s->running; *p; p = &(*p)->next) {
                if ((*p)->job->id == id) {
                        struct running *run = *p;
                        *p = run->next;
                        s->n_running--;
                        return run;
                }
        }
        return NULL;
}

/* Publishes every job waiting in `finished` together, oldest first. */
static void publish_finished(scheduler *s)
{
        struct running *list = s->finished;

        s->finished = NULL;
        s->finished_tail = &s->finished;
        s->n_finished = 0;
        scheduler_publish(s, list);
}

/* Publishes the uploads among the jobs rendered; background ones stay for their batch (their
 * renames and directories are not the upload's to wait for). */
static void publish_uploads(scheduler *s)
{
        struct running *list = s->finished, *uploads = NULL, **tail = &uploads;

        s->finished = NULL;
        s->finished_tail = &s->finished;
        s->n_finished = 0;
        while (list) {
                struct running *run = list;

                list = run->next;
                run->next = NULL;
                if (run->job->priority < JOB_PRIORITY_BACKGROUND) {
                        *tail = run;
                        tail = &run->next;
                } else {
                        *s->finished_tail = run;
                        s->finished_tail = &run->next;
                        s->n_finished++;
                }
        }
        scheduler_publish(s, uploads);
}

/* Whether a live job (an upload, not background work) is among `list`. */
static bool has_upload(const struct running *list)
{
        for (const struct running *run = list; run; run = run->next)
                if (run->job->priority < JOB_PRIORITY_BACKGROUND)
                        return true;
        return false;
}

/*
 * Group commit (issue 16): runs after the claims, so a worker that just reported a result has
 * its next job by now. While any worker renders, the jobs rendered wait up to
 * PUBLISH_DELAY_USEC (from the first of them) for more to join them: all are then published
 * together (one commit, one fsync per directory), in the commit that completes the batch
 * published before them; a batch published waits up to COMPLETE_DELAY_USEC for that commit.
 * With no worker rendering, or a batch of PUBLISH_BATCH_MAX, nothing waits: a lone job is
 * published and completed at once. Uploads rendered while only background work renders are
 * published at once, without the background jobs rendered with them (those keep their
 * batch's deadline).
 */
static void publish_pass(scheduler *s)
{
        uint64_t now = mono_usec(), next = UINT64_MAX;
        bool idle = worker_pool_busy(s->pool) == 0, kick = false;

        if (s->finished) {
                uint64_t deadline = s->finished_since_usec + PUBLISH_DELAY_USEC;
                /* An upload does not wait for background work to join its batch: only other
                 * uploads are worth the wait (issue 17). */
                bool upload_alone = has_upload(s->finished) && !has_upload(s->running);

                if (idle || s->n_finished >= PUBLISH_BATCH_MAX || now >= deadline) {
                        publish_finished(s);
                        kick = true;
                } else if (upload_alone) {
                        publish_uploads(s);
                        kick = true;
                        if (s->finished)
                                next = deadline;
                } else
                        next = deadline;
        }
        if (s->published) {
                uint64_t deadline = s->published_since_usec + COMPLETE_DELAY_USEC;

                if (idle || now >= deadline) {
                        scheduler_complete_published(s);
                        kick = true;
                } else
                        next = deadline < next ? deadline : next;
        }
        if (next == UINT64_MAX)
                sd_event_source_set_enabled(s->publish_timer, SD_EVENT_OFF);
        else {
                sd_event_source_set_time(s->publish_timer, next);
                sd_event_source_set_enabled(s->publish_timer, SD_EVENT_ONESHOT);
        }
        if (kick)
                scheduler_kick(s); /* a completed job frees its output_key for the next one */
}

static int on_publish(sd_event_source *es, void *userdata)
{
        publish_pass(userdata);
        return 0;
}

static int on_publish_timer(sd_event_source *es, uint64_t usec, void *userdata)
{
        publish_pass(userdata);
        return 0;
}

/* A worker is being replaced: counted in imgd_worker_restarts_total{cause}. */
static void on_worker_restarted(worker_pool *p, const char *cause, void *userdata)
{
        scheduler *s = userdata;

        if (s->metrics)
                metrics_worker_restart(s->metrics, cause);
}

static void on_worker_done(worker_pool *p, int64_t id, const json_t *reply, const char *failure,
                           void *userdata)
{
        scheduler *s = userdata;
        struct running *run;
        int ok = 0, permanent = 0;
        const char *error = NULL;

        if (id == 0) {
                scheduler_kick(s); /* a worker became ready */
                return;
        }
        run = take_running(s, id);
        if (!run) {
                log_error("worker finished job %" PRId64 ", which is not running", id);
                return;
        }
        s->last_progress_usec = mono_usec();
        if (!reply) {
                scheduler_job_failed(s, run->job, failure ?: "worker failed", false);
        } else if (json_unpack((json_t *)reply, "{s:b}", "ok", &ok) < 0) {
                scheduler_job_failed(s, run->job, "worker returned a malformed result", false);
        } else if (ok) {
                /* Published by on_publish(), after on_kick() gave the worker its next job. */
                run->reply = json_incref((json_t *)reply);
                run->next = NULL;
                if (!s->finished)
                        s->finished_since_usec = mono_usec();
                *s->finished_tail = run;
                s->finished_tail = &run->next;
                s->n_finished++;
                sd_event_source_set_enabled(s->publish, SD_EVENT_ONESHOT);
                scheduler_kick(s);
                return;
        } else {
                int err = 0;

                (void)json_unpack((json_t *)reply, "{s?s, s?b, s?i}", "error", &error, "permanent",
                                  &permanent, "errno", &err);
                if (retry_classify(err > 0 ? -err : 0, permanent) == RETRY_CLASS_BLOCKED)
                        scheduler_job_blocked(s, run->job, error ?: strerror(err));
                else
                        scheduler_job_failed(s, run->job, error ?: "unknown error", permanent);
        }
        scheduler_running_free(run);
        scheduler_kick(s);
}

int scheduler_new(sd_event *e, const struct config *cfg, ledger *l, const char *worker_path,
                  scheduler **ret)
{
        scheduler *s = calloc(1, sizeof *s);
        struct worker_pool_options o = {
                .worker_path = worker_path,
                .n_workers = cfg->workers,
                .job_timeout_usec = cfg->limits.job_timeout_usec,
                .memory_limit = cfg->limits.worker_memory,
                .max_jobs = cfg->limits.worker_max_jobs,
                .n_background = background_workers(cfg),
                .max_output_bytes = cfg->limits.max_file_bytes,
                .done = on_worker_done,
                .restarted = on_worker_restarted,
        };
        int r;

        if (!s)
                return -ENOMEM;
        s->event = sd_event_ref(e);
        s->cfg = cfg;
        s->ledger = l;
        s->last_progress_usec = mono_usec();
        /* The lease owner: this node (ledger.node, by default the host name) and process. */
        config_ledger_node(cfg, s->node, sizeof s->node);
        snprintf(s->owner, sizeof s->owner, "%.50s:%d", s->node, (int)getpid());
        s->started_usec = wall_usec();
        /* On a ledger several nodes share, a claim's lease is ledger.lease, renewed by the
         * heartbeat (scheduler-lease.c); one node's outlasts the longest render. */
        s->cluster = cfg->ledger.engine == CONFIG_LEDGER_POSTGRESQL;
        s->lease_usec = s->cluster ? cfg->ledger.lease_usec
                                   : cfg->limits.job_timeout_usec + 60 * USEC_PER_SEC;
        s->beat_interval_usec = config_ledger_heartbeat_usec(&cfg->ledger);
        o.userdata = s;

        r = outcomes_new(mono_usec(), &s->outcomes);
        if (r < 0)
                goto fail;
        r = metrics_new(&s->metrics);
        if (r < 0)
                goto fail;
        struct breaker_config bc = {
                .output_failures = cfg->breaker.output_failures,
                .worker_failure_rate = cfg->breaker.worker_failure_rate,
                .worker_min_samples = cfg->breaker.worker_min_samples,
                .window_usec = cfg->breaker.window_usec,
                .cooldown_usec = cfg->breaker.cooldown_usec,
                .max_cooldown_usec = cfg->breaker.max_cooldown_usec,
        };
        r = hooks_new(e, &s->hooks);
        if (r < 0)
                goto fail;
        r = sd_event_add_time_relative(e, &s->prune_timer, CLOCK_MONOTONIC, 60 * USEC_PER_SEC, 0,
                                       scheduler_on_prune_timer, s);
        if (r < 0)
                goto fail;
        r = health_new(&cfg->health, &s->health);
        if (r < 0)
                goto fail;
        r = sd_event_add_time_relative(e, &s->health_timer, CLOCK_MONOTONIC,
                                       scheduler_health_interval_usec(s), 0,
                                       scheduler_on_health_timer, s);
        if (r < 0)
                goto fail;
        r = breaker_new(&bc, &s->breaker);
        if (r < 0)
                goto fail;
        r = sd_event_add_time(e, &s->breaker_timer, CLOCK_MONOTONIC, UINT64_MAX, 1000,
                              on_breaker_timer, s);
        if (r < 0)
                goto fail;
        sd_event_source_set_enabled(s->breaker_timer, SD_EVENT_OFF);
        r = sd_event_add_defer(e, &s->kick, on_kick, s);
        if (r < 0)
                goto fail;
        sd_event_source_set_enabled(s->kick, SD_EVENT_OFF);
        /* After the kick: a worker that just finished gets its next job before the fsyncs
         * of publishing the last one. */
        s->finished_tail = &s->finished;
        r = sd_event_add_defer(e, &s->publish, on_publish, s);
        if (r < 0)
                goto fail;
        sd_event_source_set_enabled(s->publish, SD_EVENT_OFF);
        r = sd_event_source_set_priority(s->publish, SD_EVENT_PRIORITY_NORMAL + 1);
        if (r < 0)
                goto fail;
        r = sd_event_add_time(e, &s->publish_timer, CLOCK_MONOTONIC, UINT64_MAX, 0,
                              on_publish_timer, s);
        if (r < 0)
                goto fail;
        sd_event_source_set_enabled(s->publish_timer, SD_EVENT_OFF);
        r = sd_event_add_time(e, &s->claims_timer, CLOCK_MONOTONIC, UINT64_MAX, 0, on_claims_timer,
                              s);
        if (r < 0)
                goto fail;
        sd_event_source_set_enabled(s->claims_timer, SD_EVENT_OFF);
        r = sd_event_add_time(e, &s->due, CLOCK_REALTIME, UINT64_MAX, 1000, on_due, s);
        if (r < 0)
                goto fail;
        sd_event_source_set_enabled(s->due, SD_EVENT_OFF);
        if (!s->cluster) {
                r = sd_event_add_time_relative(e, &s->leases, CLOCK_MONOTONIC, LEASE_CHECK_USEC, 0,
                                               on_lease_check, s);
                if (r < 0)
                        goto fail;
                sd_event_source_set_enabled(s->leases, SD_EVENT_ON);
        }
        r = worker_pool_new(e, &o, &s->pool);
        if (r < 0)
                goto fail;
        r = scheduler_lease_start(s);
        if (r < 0)
                goto fail;
        *ret = s;
        return 0;
fail:
        scheduler_free(s);
        return r;
}

scheduler *scheduler_free(scheduler *s)
{
        int64_t now = wall_usec();

        if (!s)
                return NULL;
        scheduler_lease_stop(s);
        s->pool = worker_pool_free(s->pool);
        /* Rendered and verified: publish rather than render again at the next start. */
        if (s->finished_tail)
                publish_finished(s);
        scheduler_complete_published(s);
        scheduler_handback_all(s, now);
        sd_event_source_disable_unref(s->kick);
        sd_event_source_disable_unref(s->publish);
        sd_event_source_disable_unref(s->publish_timer);
        sd_event_source_disable_unref(s->claims_timer);
        sd_event_source_disable_unref(s->due);
        sd_event_source_disable_unref(s->leases);
        metrics_free(s->metrics);
        breaker_free(s->breaker);
        hooks_free(s->hooks);
        health_free(s->health);
        sd_event_source_disable_unref(s->health_timer);
        sd_event_source_disable_unref(s->prune_timer);
        sd_event_source_disable_unref(s->breaker_timer);
        outcomes_free(s->outcomes);
        sd_event_unref(s->event);
        free(s);
        return NULL;
}

void scheduler_set_config(scheduler *s, const struct config *cfg)
{
        if (cfg->workers != s->cfg->workers)
                log_notice("workers = %u takes effect at the next start (running with %u)",
                           cfg->workers, worker_pool_size(s->pool));
        /* New degradation thresholds: a new health state, judged afresh from the next
         * sample (a worse level is entered at once, so nothing is lost by starting full). */
        if (memcmp(&cfg->health, &s->cfg->health, sizeof cfg->health) != 0) {
                health *h = NULL;
                int r = health_new(&cfg->health, &h);

                if (r < 0)
                        log_warning_errno(r, "keeping the previous degradation thresholds: %s",
                                          strerror(-r));
                else {
                        health_free(s->health);
                        s->health = h;
                        log_info("degradation thresholds changed; level judged afresh");
                }
        }
        s->cfg = cfg;
        worker_pool_set_timeout(s->pool, cfg->limits.job_timeout_usec);
        scheduler_kick(s);
}

bool scheduler_stalled(scheduler *s)
{
        uint64_t now = mono_usec(), grace;
        int64_t due = 0;
        bool pending = scheduler_running(s) > 0;

        if (!pending && !s->paused && worker_pool_idle(s->pool) == 0)
                pending = ledger_next_due(s->ledger, &due) > 0 && due <= wall_usec();
        if (!pending) {
                s->last_progress_usec = now; /* idle is not stalled */
                return false;
        }
        grace = s->cfg->limits.job_timeout_usec + 30 * USEC_PER_SEC;
        return now - s->last_progress_usec > grace;
}

void scheduler_pause(scheduler *s)
{
        if (!s->paused)
                log_notice("intake paused: no new jobs are claimed");
        s->paused = true;
}

void scheduler_resume(scheduler *s)
{
        if (s->paused) {
                log_notice("intake resumed");
                s->resumed_usec = wall_usec();
        }
        s->paused = false;
        scheduler_kick(s);
}

bool scheduler_paused(const scheduler *s)
{
        return s->paused;
}

void scheduler_set_changed_handler(scheduler *s, scheduler_changed_fn fn, void *userdata)
{
        s->changed_fn = fn;
        s->changed_userdata = userdata;
}

void scheduler_set_intake_probe(scheduler *s, scheduler_intake_fn fn, void *userdata)
{
        s->intake_fn = fn;
        s->intake_userdata = userdata;
}

metrics *scheduler_metrics(scheduler *s)
{
        return s->metrics;
}

void scheduler_enqueued(scheduler *s, int64_t id)
{
        _cleanup_(job_detail_freep) struct job_detail *d = NULL;

        if (s->event_fn && ledger_get(s->ledger, id, &d) > 0)
                scheduler_emit(s, "queued", &d->job, NULL);
        /* An idle worker starts on it now: a burst of files is taken in one event-loop turn,
         * and waiting for the turn's end would leave the workers idle until the last file of
         * the burst is hashed and recorded. */
        if (worker_pool_idle(s->pool) > 0)
                (void)on_kick(NULL, s);
        else
                scheduler_kick(s);
}

void scheduler_retried(scheduler *s, int64_t id)
{
        _cleanup_(job_detail_freep) struct job_detail *d = NULL;

        if (ledger_get(s->ledger, id, &d) > 0)
                quarantine_restore(scheduler_find_watch(s->cfg, d->job.watch), &d->job);
        scheduler_enqueued(s, id);
}

const worker_pool *scheduler_pool(const scheduler *s)
{
        return s->pool;
}

unsigned scheduler_running(const scheduler *s)
{
        return s->n_running + s->n_finished + s->n_published;
}

bool scheduler_live_about(const scheduler *s)
{
        if (s->live_claimed_usec > 0 && mono_usec() - s->live_claimed_usec < LIVE_RECENT_USEC)
                return true;
        return has_upload(s->running) || has_upload(s->finished) || has_upload(s->published);
}
