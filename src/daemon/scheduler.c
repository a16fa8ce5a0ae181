/* SPDX-License-Identifier: MIT */
/*
 * scheduler.c - from the ledger through the workers into the output tree; see scheduler.h.
 *
 * One pass (on_kick) claims jobs while a worker is idle. For each job it opens the source
 * (no symlinks, no blocking), identifies its format to name the outputs, refuses outputs
 * that would overwrite another source's, creates one temporary file per variant next to
 * its final name, and hands the worker the descriptors. When the worker answers
 * (on_worker_done), the job waits in `finished` while the next pass hands the worker its
 * next job; then (on_publish) the outputs are published (rename, directory fsync) and only
 * then is the job completed in the ledger; on failure the temporary files are removed and
 * the job is retried after a backoff or, once its attempts are used up or the error is
 * permanent, marked dead. A job whose source changed while it ran is cancelled as superseded
 * and the source taken in again, so outputs always belong to the newest content; its failure
 * is no failure of the new file, which is neither retried for it nor quarantined.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>

#include "daemon/breaker.h"
#include "shared/fault.h"
#include "shared/health.h"
#include "daemon/hooks.h"
#include "daemon/intake.h"
#include "shared/log.h"
#include "shared/macro.h"
#include "shared/pathmap.h"
#include "shared/proto.h"
#include "daemon/publish.h"
#include "daemon/scheduler.h"

/* A job handed to a worker; then, once the worker reported success, waiting for publication. */
struct running {
        struct job *job;
        bool degraded; /* rendered below full quality, or without its non-essential variants */
        struct publish_tmp *tmps;
        struct variant *variants; /* formats resolved */
        size_t n;
        json_t *reply; /* the worker's result while waiting in `finished` */
        struct running *next;
};

/*
 * A job to hand back to the ledger (running -> queued, no attempt used) once it can write; or,
 * with `done` set, a job whose outputs are published and whose completion the ledger could
 * not record (running -> done, recorded once it can write: never rendered again for it).
 */
struct handback {
        int64_t id;
        int64_t delay_us; /* claimable this long after the hand-back */
        struct job *done; /* the job to complete (owned), or NULL to hand back */
        struct handback *next;
};

struct scheduler {
        sd_event *event;
        const struct config *cfg;
        ledger *ledger;
        worker_pool *pool;
        sd_event_source *kick, *due, *leases, *publish;
        struct running *running;
        unsigned n_running;
        /* Rendered and verified, oldest first, published by on_publish() once the idle
         * workers have their next jobs: the fsyncs of publishing do not keep them waiting.
         * Still running in the ledger and counted in scheduler_running(). */
        struct running *finished, **finished_tail;
        unsigned n_finished;
        unsigned env_failures; /* consecutive failures of the environment (disk, permissions) */
        /* Jobs whose hand-back to the ledger failed (hand_back()): still ours, retried. */
        struct handback *handbacks;
        sd_event_source *handback_timer;
        uint64_t handback_delay_usec;
        uint64_t claim_failure_logged_usec; /* CLOCK_MONOTONIC; 0: the last claim worked */
        bool paused;
        /* CLOCK_REALTIME of the operator's last resume (0: none): a job's wait is counted
         * from then, as the operator's pause is not the system's ill health. */
        int64_t resumed_usec;
        uint64_t last_progress_usec; /* CLOCK_MONOTONIC: last dispatch or finished job */
        scheduler_event_fn event_fn;
        void *event_userdata;
        scheduler_intake_fn intake_fn;
        void *intake_userdata;
        metrics *metrics;
        breaker *breaker;
        hooks *hooks;
        health *health;
        sd_event_source *breaker_timer, *health_timer, *prune_timer;
        /* The prune pass under way: where its next batch starts (0: none under way), the
         * cutoff it started with, how many it deleted so far. */
        int64_t prune_cursor, prune_cutoff;
        int prune_total;
        /* Recent outcomes for the error rate: (time, failed) in a ring. */
        struct {
                uint64_t at;
                bool failed;
        } outcomes[128];
        unsigned n_outcomes, next_outcome;
        /* When recent jobs finished (done or dead), in a ring, for the drain rate. */
        uint64_t completions[256];
        unsigned n_completions, next_completion;
        uint64_t started_usec;    /* CLOCK_MONOTONIC */
        double mem_pressure;      /* memory_pressure(): the last reading */
        uint64_t mem_pressure_at; /* CLOCK_MONOTONIC of it, 0: none yet */
        char owner[64];
};

#define LEASE_CHECK_USEC (30 * 1000000ULL)
#define HEALTH_CHECK_USEC (5 * 1000000ULL)
#define ERROR_WINDOW_USEC (5 * 60 * 1000000ULL)
#define RERENDER_BATCH 20
#define PRUNE_USEC (3600 * 1000000ULL)
/* A prune pass goes through the ledger in batches of ids with a pause between them: each
 * batch holds the event loop for milliseconds, a million jobs take a few seconds in all. */
#define PRUNE_BATCH 2000u
#define PRUNE_PAUSE_USEC (20 * 1000ULL)
#define MEMINFO_USEC (1000000ULL)
/* A failed hand-back is tried again after this, doubling up to the maximum. */
#define HANDBACK_MIN_USEC (1000000ULL)
#define HANDBACK_MAX_USEC (30 * 1000000ULL)
/* A claim the ledger could not record (its disk read-only, full) is tried again after this. */
#define CLAIM_RETRY_USEC (1000000ULL)

static void breaker_note(scheduler *s, enum breaker_outcome o, const char *reason);
static void note_finished(scheduler *s);
static void hand_back(scheduler *s, int64_t id, int64_t delay_us);

static double random01(void)
{
        uint64_t x;

        if (getrandom(&x, sizeof x, GRND_NONBLOCK) != sizeof x)
                x = (uint64_t)wall_usec() * 6364136223846793005ULL;
        return (double)(x >> 11) / 9007199254740992.0;
}

int64_t scheduler_backoff_ms(const struct config_retry *r, unsigned attempt, double rnd)
{
        double delay = r->base_delay_ms;

        for (unsigned i = 1; i < attempt && delay < r->max_delay_ms; i++)
                delay *= 2;
        if (delay > r->max_delay_ms)
                delay = r->max_delay_ms;
        delay *= 1.0 + r->jitter * (2.0 * rnd - 1.0);
        return delay < 0 ? 0 : (int64_t)llround(delay);
}

static const struct watch_config *find_watch(const struct config *cfg, const char *path);
static char *quarantine_path(scheduler *s, const struct job *job);

/* Tells subscribers and the watch's hooks about a transition of `job`; extra members (may be
 * NULL) are added. */
static void emit(scheduler *s, const char *event, const struct job *job, json_t *extra)
{
        _cleanup_(json_decrefp) json_t *j = NULL;
        const struct watch_config *wc = find_watch(s->cfg, job->watch);
        const char *hook = !wc                          ? NULL
                           : strcmp(event, "done") == 0 ? wc->on_done
                           : strcmp(event, "dead") == 0 ? wc->on_dead
                                                        : NULL;

        if (!s->event_fn && !hook) {
                json_decref(extra);
                return;
        }
        /* File names need not be UTF-8; JSON strings must be (proto_string_lossy). */
        j = json_pack("{s:I, s:o, s:o, s:s, s:I}", "id", (json_int_t)job->id, "source",
                      proto_string_lossy(job->source_path), "watch", proto_string_lossy(job->watch),
                      "pipeline", job->pipeline, "attempts", (json_int_t)job->attempts);
        if (j && extra)
                json_object_update(j, extra);
        json_decref(extra);
        if (j && s->event_fn)
                s->event_fn(event, j, s->event_userdata);
        if (j && hook) {
                /* The hook gets the names as bytes, to open them: the published outputs from
                 * the ledger, the quarantine path as quarantine() makes it (if it is the one
                 * reported). */
                _cleanup_(job_detail_freep) struct job_detail *d = NULL;
                _cleanup_free_ char *moved = NULL;
                _cleanup_free_ const char **outputs = NULL;
                const char *reported = json_string_value(json_object_get(j, "quarantined"));
                const json_t *list = json_object_get(j, "outputs");
                struct hook_names names = { .source = job->source_path, .watch = job->watch };

                if (reported) {
                        _cleanup_(json_decrefp) json_t *lossy = NULL;

                        moved = quarantine_path(s, job);
                        lossy = moved ? proto_string_lossy(moved) : NULL;
                        if (lossy && strcmp(json_string_value(lossy), reported) == 0)
                                names.quarantined = moved;
                }
                if (json_array_size(list) > 0 && ledger_get(s->ledger, job->id, &d) > 0 &&
                    d->n_outputs == json_array_size(list) &&
                    (outputs = calloc(d->n_outputs, sizeof *outputs))) {
                        for (size_t i = 0; i < d->n_outputs; i++)
                                outputs[i] = d->outputs[i].path;
                        names.outputs = outputs;
                        names.n_outputs = d->n_outputs;
                }
                hooks_run(s->hooks, hook, wc->hook_timeout_s, event, j, &names);
        }
}

/* Where a job's source goes in its watch's quarantine folder (keeping its sub-path), or
 * NULL when the watch has none (or the source is not below it). Caller frees. */
static char *quarantine_path(scheduler *s, const struct job *job)
{
        const struct watch_config *wc = find_watch(s->cfg, job->watch);
        char *dest = NULL;
        size_t n;

        if (!wc || !wc->quarantine)
                return NULL;
        n = strlen(wc->path);
        if (strncmp(job->source_path, wc->path, n) != 0 || job->source_path[n] != '/')
                return NULL;
        if (asprintf(&dest, "%s%s", wc->quarantine, job->source_path + n) < 0)
                return NULL;
        return dest;
}

/* mkdir -p (durably, mode 0750) of the directory that holds path; logs why it failed. */
static int make_parents(const struct job *job, const char *path)
{
        _cleanup_free_ char *dir = strdup(path);
        char *slash = dir ? strrchr(dir, '/') : NULL;
        int r;

        if (!slash)
                return -ENOMEM;
        if (slash == dir)
                return 0;
        *slash = '\0';
        r = publish_mkdir_parents(dir, 0750);
        if (r < 0)
                log_warning_errno(r, "job %" PRId64 ": cannot create %s: %s", job->id, dir,
                                  strerror(-r));
        return r;
}

/*
 * True if the file at the job's source path is still the one the job was made of: the size,
 * mtime and inode intake recorded, or failing that the same SHA-256. False when it is gone
 * or something else took its place (an upload that replaced it while the job ran).
 */
static bool source_is_jobs(scheduler *s, const struct job *job)
{
        _cleanup_close_ int fd = -1;
        char sha[HASH_HEX_SIZE];
        struct stat st;

        if (lstat(job->source_path, &st) < 0 || !S_ISREG(st.st_mode))
                return false;
        if ((uint64_t)st.st_size == job->size && (uint64_t)st.st_ino == job->ino &&
            (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec == job->mtime_ns)
                return true;
        fd = open(job->source_path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
        if (fd < 0 || hash_sha256_fd(fd, s->cfg->limits.max_file_bytes, sha) < 0)
                return false;
        return strcmp(sha, job->sha256) == 0;
}

/*
 * Moves a dead job's source into its watch's quarantine folder, keeping its sub-path, if the
 * file there is still the job's (source_is_jobs()). Returns where it went (caller frees), or
 * NULL when it stayed.
 */
static char *quarantine(scheduler *s, const struct job *job)
{
        _cleanup_free_ char *dest = quarantine_path(s, job);

        if (!dest)
                return NULL;
        if (!source_is_jobs(s, job)) {
                log_notice("job %" PRId64 ": %s is no longer the file this job failed on; "
                           "not moved to quarantine",
                           job->id, job->source_path);
                return NULL;
        }
        if (make_parents(job, dest) < 0)
                return NULL;
        if (rename(job->source_path, dest) < 0) {
                log_warning_errno(errno, "job %" PRId64 ": quarantine %s -> %s: %m%s", job->id,
                                  job->source_path, dest,
                                  errno == EXDEV ? " (the quarantine folder must be on the "
                                                   "upload folder's file system)"
                                                 : "");
                return NULL;
        }
        log_notice("job %" PRId64 ": moved %s to quarantine %s", job->id, job->source_path, dest);
        return TAKE_PTR(dest);
}

/* A dead job retried: its source comes back from quarantine, if it went there and nothing
 * has taken its place meanwhile. */
static void unquarantine(scheduler *s, const struct job *job)
{
        _cleanup_free_ char *from = quarantine_path(s, job);
        struct stat st;

        if (!from || lstat(job->source_path, &st) == 0 || lstat(from, &st) < 0 ||
            make_parents(job, job->source_path) < 0)
                return;
        if (rename(from, job->source_path) < 0)
                log_warning_errno(errno, "job %" PRId64 ": back from quarantine %s -> %s: %m",
                                  job->id, from, job->source_path);
        else
                log_notice("job %" PRId64 ": moved %s back from quarantine to %s", job->id, from,
                           job->source_path);
}

static void running_free(struct running *run)
{
        if (!run)
                return;
        json_decref(run->reply);
        for (size_t i = 0; i < run->n; i++)
                publish_tmp_discard(&run->tmps[i]);
        free(run->tmps);
        free(run->variants);
        job_free(run->job);
        free(run);
}

static const struct watch_config *find_watch(const struct config *cfg, const char *path)
{
        for (size_t i = 0; i < cfg->n_watches; i++)
                if (strcmp(cfg->watches[i].path, path) == 0)
                        return &cfg->watches[i];
        return NULL;
}

/* Records a failed attempt: retry after a backoff, or dead when permanent or out of
 * attempts. A job whose path has newer content (a job of its own) is cancelled as
 * superseded instead: its failure says nothing about the file there now, which it leaves
 * alone. */
static void job_failed(scheduler *s, const struct job *job, const char *error, bool permanent)
{
        int64_t now = wall_usec(), next = now;
        bool retry = !permanent && job->attempts < s->cfg->retry.max_attempts;
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
                r = ledger_cancel(s->ledger, job->id, msg ?: "superseded by newer content", now);
                if (r < 0)
                        log_error_errno(r, "ledger: cancel job %" PRId64 ": %s", job->id,
                                        ledger_errmsg(s->ledger));
                else
                        emit(s, "cancelled", job,
                             json_pack("{s:o}", "error",
                                       proto_string_lossy(msg ?: "superseded by newer content")));
                return;
        }
        if (retry) {
                next = now + 1000 * scheduler_backoff_ms(&s->cfg->retry, job->attempts, random01());
                log_job(LOG_WARNING, LOG_JOB_RETRY, job->id, job->source_path, job->pipeline,
                        "job %" PRId64 " %s: attempt %u failed: %s; retrying in %.1f s", job->id,
                        job->source_path, job->attempts, error, (double)(next - now) / 1e6);
        } else if (!permanent) {
                if (asprintf(&msg, "gave up after %u attempts: %s", job->attempts, error) < 0)
                        msg = NULL;
                log_job(LOG_ERR, LOG_JOB_DEAD, job->id, job->source_path, job->pipeline,
                        "job %" PRId64 " %s: %s", job->id, job->source_path, msg ?: error);
        } else {
                log_job(LOG_ERR, LOG_JOB_DEAD, job->id, job->source_path, job->pipeline,
                        "job %" PRId64 " %s: %s", job->id, job->source_path, error);
        }
        r = ledger_fail(s->ledger, job->id, msg ?: error, retry, next, now);
        if (r < 0) {
                /* Unrecorded, the attempt is given back: the job is handed back (as soon as
                 * the ledger can write) rather than left running until its lease expires. */
                log_error_errno(r,
                                "ledger: record failure of job %" PRId64 ": %s; handing it "
                                "back without using an attempt",
                                job->id, ledger_errmsg(s->ledger));
                hand_back(s, job->id, next - now);
                return;
        }
        metrics_job_failed(s->metrics, permanent ? "permanent" : "transient");
        if (!retry) {
                note_finished(s);
                moved = quarantine(s, job);
        }
        breaker_note(s, permanent ? BREAKER_JOB_FAILURE : BREAKER_WORKER_FAILURE, error);
        extra = json_pack("{s:o, s:I}", "error", proto_string_lossy(msg ?: error), "next_at_us",
                          (json_int_t)next);
        if (extra && moved)
                json_object_set_new(extra, "quarantined", proto_string_lossy(moved));
        emit(s, retry ? "retry" : "dead", job, extra);
}

/* Errors of the machine rather than of the job: the output disk is full, read-only or
 * failing, or permissions are wrong. Retrying the job cannot fix them. */
static bool environmental(int r)
{
        switch (-r) {
        case ENOSPC:
        case EDQUOT:
        case EROFS:
        case EACCES:
        case EPERM:
        case EIO:
        case EMFILE:
        case ENFILE:
                return true;
        default:
                return false;
        }
}

/* A job whose completion the ledger recorded late (a kept handback with `done`): what
 * finish_ok() does after a completion, with the outputs the ledger holds. */
static void completed_late(scheduler *s, const struct job *job)
{
        _cleanup_(job_detail_freep) struct job_detail *d = NULL;
        json_t *list = json_array();
        double seconds = (double)(wall_usec() - job->updated_us) / 1e6;

        log_job(LOG_INFO, LOG_JOB_DONE, job->id, job->source_path, job->pipeline,
                "job %" PRId64 " %s: done (recorded once the ledger could be written again)",
                job->id, job->source_path);
        note_finished(s);
        metrics_job_done(s->metrics, job->pipeline, seconds);
        if (list && ledger_get(s->ledger, job->id, &d) > 0)
                for (size_t i = 0; i < d->n_outputs; i++) {
                        const struct job_output *o = &d->outputs[i];

                        json_array_append_new(
                                list,
                                json_pack("{s:s, s:o, s:I, s:I, s:I, s:s}", "variant", o->variant,
                                          "path", proto_string_lossy(o->path), "width",
                                          (json_int_t)o->width, "height", (json_int_t)o->height,
                                          "bytes", (json_int_t)o->bytes, "sha256", o->sha256));
                }
        emit(s, "done", job, list ? json_pack("{s:o}", "outputs", list) : NULL);
}

/* Tries the hand-backs (and completions) that failed again; those that fail again wait
 * longer. */
static int on_handback_timer(sd_event_source *es, uint64_t usec, void *userdata)
{
        scheduler *s = userdata;
        int64_t now = wall_usec();
        bool any = false;

        for (struct handback **p = &s->handbacks; *p;) {
                struct handback *h = *p;
                int r = h->done ? ledger_complete(s->ledger, h->id, NULL, 0, now)
                                : ledger_release(s->ledger, h->id, now + h->delay_us, now);

                /* -ESTALE: not running any more (a reset of the ledger); nothing to hand back. */
                if (r < 0 && r != -ESTALE) {
                        p = &h->next;
                        continue;
                }
                if (h->done && r >= 0)
                        completed_late(s, h->done);
                else
                        log_notice("job %" PRId64 ": handed back to the ledger", h->id);
                *p = h->next;
                job_free(h->done);
                free(h);
                any = true;
        }
        if (any)
                scheduler_kick(s);
        if (s->handbacks) {
                s->handback_delay_usec = 2 * s->handback_delay_usec > HANDBACK_MAX_USEC
                                                 ? HANDBACK_MAX_USEC
                                                 : 2 * s->handback_delay_usec;
                log_warning("ledger: hand-backs still failing (%s); trying again in %.0f s",
                            ledger_errmsg(s->ledger), (double)s->handback_delay_usec / 1e6);
                sd_event_source_set_time_relative(es, s->handback_delay_usec);
                sd_event_source_set_enabled(es, SD_EVENT_ONESHOT);
        }
        return 0;
}

/* Keeps h (a failed hand-back or completion) for on_handback_timer(), which is armed. */
static void handback_keep(scheduler *s, struct handback *h)
{
        int r;

        h->next = s->handbacks;
        s->handbacks = h;
        if (!s->handback_timer) {
                s->handback_delay_usec = HANDBACK_MIN_USEC;
                r = sd_event_add_time_relative(s->event, &s->handback_timer, CLOCK_MONOTONIC,
                                               HANDBACK_MIN_USEC, 0, on_handback_timer, s);
                if (r < 0)
                        log_error_errno(r, "hand-back timer: %m");
        } else if (sd_event_source_get_enabled(s->handback_timer, NULL) == 0) {
                s->handback_delay_usec = HANDBACK_MIN_USEC;
                sd_event_source_set_time_relative(s->handback_timer, HANDBACK_MIN_USEC);
                sd_event_source_set_enabled(s->handback_timer, SD_EVENT_ONESHOT);
        }
}

/*
 * Hands job `id` back to the ledger (running -> queued without using an attempt), claimable
 * delay_us from now. When the ledger cannot record it (its disk full, say), the job stays
 * ours and the hand-back is tried again with a backoff, rather than left to its lease (whose
 * expiry would use an attempt).
 */
static void hand_back(scheduler *s, int64_t id, int64_t delay_us)
{
        int64_t now = wall_usec();
        struct handback *h;
        int r = ledger_release(s->ledger, id, now + delay_us, now);

        if (r >= 0 || r == -ESTALE)
                return;
        h = calloc(1, sizeof *h);
        if (!h) {
                log_error_errno(r, "ledger: hand back job %" PRId64 ": %s; left to its lease", id,
                                ledger_errmsg(s->ledger));
                return;
        }
        *h = (struct handback){ .id = id, .delay_us = delay_us };
        handback_keep(s, h);
        log_error_errno(r, "ledger: hand back job %" PRId64 ": %s; trying again in %.0f s", id,
                        ledger_errmsg(s->ledger), (double)s->handback_delay_usec / 1e6);
}

/*
 * The environment failed the job (see environmental()): hand it back without using an
 * attempt, to be claimed again after a backoff that grows with consecutive failures.
 */
static void job_blocked(scheduler *s, const struct job *job, const char *error)
{
        int64_t delay = scheduler_backoff_ms(&s->cfg->retry, ++s->env_failures, random01());

        log_job(LOG_ERR, LOG_JOB_RELEASED, job->id, job->source_path, job->pipeline,
                "job %" PRId64 " %s: %s; no attempt used, trying again in %.1f s", job->id,
                job->source_path, error, (double)delay / 1e3);
        hand_back(s, job->id, 1000 * delay);
        metrics_job_failed(s->metrics, "environmental");
        breaker_note(s, BREAKER_OUTPUT_FAILURE, error);
}

/* The output format of variant v for a source in format src. */
static enum image_format resolve_format(const struct variant *v, enum image_format src)
{
        if (v->format != VARIANT_FORMAT_SAME)
                return v->format;
        if (image_format_writable(src))
                return src;
        return IMAGE_FORMAT_WEBP;
}

/*
 * Prepares and dispatches one claimed job. Returns 0 when the job went to a worker or was
 * finished here (dead, cancelled), a negative errno when it could not be started (the job
 * has been put back).
 */
static int start_job(scheduler *s, struct job *job_in)
{
        _cleanup_(job_freep) struct job *job = job_in;
        _cleanup_close_ int src = -1;
        _cleanup_(json_decrefp) json_t *req = NULL, *jvariants = NULL;
        const struct watch_config *wc = find_watch(s->cfg, job->watch);
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
                r = ledger_hold(s->ledger, job->id, why, wall_usec());
                return r < 0 ? log_error_errno(r, "ledger: hold job %" PRId64 ": %s", job->id,
                                               ledger_errmsg(s->ledger))
                             : 0;
        }
        r = pathmap_output_key(wc->path, wc->output, job->source_path, &key);
        if (r < 0) {
                snprintf(why, sizeof why, "not below its watched folder %s", wc->path);
                job_failed(s, job, why, true);
                return 0;
        }
        if (strcmp(key, job->output_key) != 0 || strcmp(wc->pipeline_name, job->pipeline) != 0) {
                char *pipeline = strdup(wc->pipeline_name);

                r = pipeline ? ledger_relocate(s->ledger, job->id, pipeline, key) : -ENOMEM;
                if (r < 0) {
                        int64_t now = wall_usec();

                        free(pipeline);
                        log_error_errno(r, "ledger: job %" PRId64 ": record its new output %s: %s",
                                        job->id, key, ledger_errmsg(s->ledger));
                        (void)ledger_release(s->ledger, job->id, now + 1000000, now);
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
        r = publish_manifest_path(job->output_key, &manifest);
        if (r < 0)
                return r;
        if (pathmap_name_too_long(manifest)) {
                snprintf(why, sizeof why, "output name too long: %s (NAME_MAX %d)",
                         strrchr(manifest, '/') + 1, NAME_MAX);
                job_failed(s, job, why, true);
                return 0;
        }
        src = open(job->source_path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC | O_NOCTTY);
        if (src < 0 && errno == ENOENT) {
                log_info("job %" PRId64 ": %s was removed before it was processed", job->id,
                         job->source_path);
                r = ledger_cancel(s->ledger, job->id, "source removed before processing",
                                  wall_usec());
                return r < 0 ? log_error_errno(r, "ledger: %s", ledger_errmsg(s->ledger)) : 0;
        }
        if (src < 0) {
                snprintf(why, sizeof why, "open: %s",
                         errno == ELOOP ? "is a symlink" : strerror(errno));
                job_failed(s, job, why, errno == ELOOP);
                return 0;
        }
        if (fstat(src, &st) < 0 || !S_ISREG(st.st_mode)) {
                job_failed(s, job, "not a regular file", true);
                return 0;
        }
        k = pread(src, magic, sizeof magic, 0);
        src_format = image_format_sniff(magic, k > 0 ? (size_t)k : 0);

        r = ledger_output_owner(s->ledger, job->output_key, job->source_path, &owner);
        if (r > 0) {
                snprintf(why, sizeof why,
                         "its outputs %s_* would overwrite those of %s; rename one of the two",
                         job->output_key, owner);
                job_failed(s, job, why, true);
                return 0;
        }

        run = calloc(1, sizeof *run);
        if (!run)
                return -ENOMEM;
        run->tmps = calloc(pl->n_variants, sizeof *run->tmps);
        run->variants = calloc(pl->n_variants, sizeof *run->variants);
        jvariants = json_array();
        if (!run->tmps || !run->variants || !jvariants) {
                running_free(run);
                return -ENOMEM;
        }
        int fds[1 + 32];
        enum health_level level = s->cfg->degradation ? health_level(s->health) : HEALTH_FULL;
        bool any_essential = false;
        size_t n = 0;

        for (size_t i = 0; i < pl->n_variants; i++)
                any_essential |= pl->variants[i].essential;
        fds[0] = src;
        for (size_t i = 0; i < pl->n_variants && i < 32; i++) {
                _cleanup_free_ char *final = NULL;
                struct variant *v = &run->variants[n];

                /* Degraded: at "essential", only the variants marked so (all of them when
                 * none is); at "reduced" and worse, lower quality and the fastest effort. The
                 * job is recorded as degraded and rendered again once health returns. */
                if (any_essential && !health_variant_enabled(pl->variants[i].essential, level)) {
                        run->degraded = true;
                        continue;
                }
                *v = pl->variants[i];
                if (v->format == VARIANT_FORMAT_SAME && src_format == IMAGE_FORMAT_UNKNOWN) {
                        running_free(run);
                        job_failed(s, job,
                                   "not a supported image: its content matches no known format",
                                   true);
                        return 0;
                }
                v->format = resolve_format(v, src_format);
                if (level != HEALTH_FULL) {
                        /* Quality where the encoder has one; effort for webp and avif. */
                        bool lossy = v->format == IMAGE_FORMAT_JPEG ||
                                     v->format == IMAGE_FORMAT_AVIF ||
                                     (v->format == IMAGE_FORMAT_WEBP && !v->lossless);
                        bool effort =
                                v->format == IMAGE_FORMAT_WEBP || v->format == IMAGE_FORMAT_AVIF;
                        unsigned q = lossy ? health_quality(v->quality, level) : v->quality;
                        unsigned e =
                                effort ? (unsigned)health_effort((int)v->effort, level) : v->effort;
                        run->degraded |= q != v->quality || e != v->effort;
                        v->quality = q;
                        v->effort = e;
                }
                r = pathmap_output_path(job->output_key, v->name, image_format_extension(v->format),
                                        &final);
                if (r >= 0 && pathmap_name_too_long(final))
                        r = -ENAMETOOLONG;
                if (r >= 0)
                        r = publish_tmp_open(final, job->id, (unsigned)n, &run->tmps[n]);
                if (r == -ENAMETOOLONG && final)
                        snprintf(why, sizeof why, "output name too long: %s (NAME_MAX %d)",
                                 strrchr(final, '/') + 1, NAME_MAX);
                else if (r < 0)
                        snprintf(why, sizeof why, "create output %s: %s", final ?: "?",
                                 strerror(-r));
                if (r < 0) {
                        running_free(run);
                        if (environmental(r))
                                job_blocked(s, job, why);
                        else
                                job_failed(s, job, why, r == -ENAMETOOLONG);
                        return 0;
                }
                run->n = ++n;
                fds[n] = run->tmps[n - 1].fd;
                json_array_append_new(jvariants, variant_to_json(v));
        }

        /* What a decoder may need beside the image: three quarters of the worker's memory. */
        req = json_pack("{s:s, s:I, s:I, s:I, s:I, s:O, s:b, s:b, s:i}", "type", "job", "id",
                        (json_int_t)job->id, "max_pixels", (json_int_t)s->cfg->limits.max_pixels,
                        "max_decode_bytes", (json_int_t)(s->cfg->limits.worker_memory / 4 * 3),
                        "max_bytes", (json_int_t)s->cfg->limits.max_file_bytes, "variants",
                        jvariants, "placeholder", (int)pl->placeholder, "allow_heif",
                        (int)s->cfg->limits.allow_heif, "timeout_s",
                        (int)s->cfg->limits.job_timeout_s);
        if (!req) {
                running_free(run);
                return -ENOMEM;
        }
        r = worker_pool_dispatch(s->pool, job->id, req, fds, 1 + run->n);
        if (r < 0) {
                running_free(run);
                log_warning_errno(r, "job %" PRId64 ": cannot hand it to a worker: %m", job->id);
                hand_back(s, job->id, 1000000);
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

static int on_kick(sd_event_source *es, void *userdata)
{
        scheduler *s = userdata;

        /* At the paused level a trickle of jobs still runs, oldest first: the backlog that
         * took it there drains, and the level can be left again. */
        enum health_level level = s->cfg->degradation ? health_level(s->health) : HEALTH_FULL;
        unsigned max_running = health_max_running(worker_pool_size(s->pool), level);
        bool claim_failed = false;

        while (!s->paused && worker_pool_idle(s->pool) > 0 && scheduler_running(s) < max_running) {
                struct job *job = NULL;
                int64_t now = wall_usec(), due;
                int r;

                if (breaker_state(s->breaker) != BREAKER_CLOSED) {
                        /* Open: nothing is claimed until the cool-down has passed; then one
                         * job at a time probes the way (spend the probe only on real work). */
                        if (ledger_next_due(s->ledger, &due) <= 0 || due > now)
                                break;
                        if (!breaker_allow(s->breaker, mono_usec())) {
                                uint64_t at = breaker_retry_at(s->breaker);
                                if (at > 0) {
                                        sd_event_source_set_time(s->breaker_timer, at);
                                        sd_event_source_set_enabled(s->breaker_timer,
                                                                    SD_EVENT_ONESHOT);
                                }
                                break;
                        }
                        log_notice("circuit breaker half-open: probing with one job");
                }
                r = ledger_claim(s->ledger, s->owner, now,
                                 (int64_t)(s->cfg->limits.job_timeout_s + 60) * 1000000, &job);
                if (r < 0) {
                        /* Tried every second while it fails: logged once a minute. */
                        if (mono_usec() - s->claim_failure_logged_usec >= 60 * 1000000ULL ||
                            s->claim_failure_logged_usec == 0) {
                                log_error_errno(r,
                                                "ledger: claim a job: %s; trying again every "
                                                "%.0f s",
                                                ledger_errmsg(s->ledger),
                                                (double)CLAIM_RETRY_USEC / 1e6);
                                s->claim_failure_logged_usec = mono_usec();
                        }
                        claim_failed = true;
                        break;
                }
                s->claim_failure_logged_usec = 0;
                if (r == 0) {
                        if (breaker_state(s->breaker) == BREAKER_HALF_OPEN)
                                breaker_record(s->breaker, BREAKER_JOB_FAILURE, NULL,
                                               mono_usec()); /* probe unspent */
                        break;
                }
                if (start_job(s, job) < 0)
                        break;
        }
        if (claim_failed) {
                /* Nothing else may kick again (no job finishes, no upload comes): look again
                 * in a second, until the ledger can be written. */
                sd_event_source_set_time(s->due, (uint64_t)wall_usec() + CLAIM_RETRY_USEC);
                sd_event_source_set_enabled(s->due, SD_EVENT_ONESHOT);
                return 0;
        }
        arm_due_timer(s);
        return 0;
}

static bool is_running(const scheduler *s, int64_t id)
{
        for (const struct running *run = s->running; run; run = run->next)
                if (run->job->id == id)
                        return true;
        for (const struct running *run = s->finished; run; run = run->next)
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

                        if (is_running(s, ids[i]) || ledger_get(s->ledger, ids[i], &d) <= 0)
                                continue;
                        job_failed(s, &d->job, "lease expired with no worker on the job", false);
                }
                if (n > 0)
                        scheduler_kick(s);
        }
        sd_event_source_set_time_relative(es, LEASE_CHECK_USEC);
        sd_event_source_set_enabled(es, SD_EVENT_ONESHOT);
        return 0;
}

/* Records an outcome with the breaker and logs its transitions. */
static void breaker_note(scheduler *s, enum breaker_outcome o, const char *reason)
{
        enum breaker_state before = breaker_state(s->breaker), after;

        /* Every outcome also feeds the error rate of the health score. */
        s->outcomes[s->next_outcome].at = mono_usec();
        /* A bad upload is the input's fault, not the service's: only failures of workers
         * and of the output side count against health (permanent ones are completions). */
        s->outcomes[s->next_outcome].failed =
                o == BREAKER_WORKER_FAILURE || o == BREAKER_OUTPUT_FAILURE;
        s->next_outcome = (s->next_outcome + 1) % ELEMENTSOF(s->outcomes);
        if (s->n_outcomes < ELEMENTSOF(s->outcomes))
                s->n_outcomes++;

        breaker_record(s->breaker, o, reason, mono_usec());
        after = breaker_state(s->breaker);
        if (after == before)
                return;
        if (after == BREAKER_OPEN) {
                log_error("circuit breaker open, no new jobs are claimed for %.0f s: %s",
                          (double)breaker_cooldown(s->breaker) / 1e6, breaker_reason(s->breaker));
                sd_event_source_set_time(s->breaker_timer, breaker_retry_at(s->breaker));
                sd_event_source_set_enabled(s->breaker_timer, SD_EVENT_ONESHOT);
        } else if (after == BREAKER_CLOSED) {
                log_notice("circuit breaker closed: the probe succeeded, work resumes");
                scheduler_kick(s);
        }
}

static int on_breaker_timer(sd_event_source *es, uint64_t usec, void *userdata)
{
        scheduler_kick(userdata);
        return 0;
}

/* The share of memory not available, from /proc/meminfo (0 if it cannot be read). */
static double memory_pressure_read(void)
{
        unsigned long long total = 0, avail = 0, v;
        char line[256];
        FILE *f = fopen("/proc/meminfo", "re");

        if (!f)
                return 0;
        /* MemTotal and MemAvailable are among the first lines: stop once both are seen. */
        while ((total == 0 || avail == 0) && fgets(line, sizeof line, f)) {
                if (sscanf(line, "MemTotal: %llu kB", &v) == 1)
                        total = v;
                else if (sscanf(line, "MemAvailable: %llu kB", &v) == 1)
                        avail = v;
        }
        fclose(f);
        return total > 0 && avail <= total ? 1.0 - (double)avail / (double)total : 0;
}

/* memory_pressure_read(), at most once per MEMINFO_USEC: the health score is asked for by
 * the timer and by every status request, and a client polling status should not make the
 * kernel format /proc/meminfo each time. */
static double memory_pressure(scheduler *s)
{
        uint64_t now = mono_usec();

        if (s->mem_pressure_at == 0 || now - s->mem_pressure_at >= MEMINFO_USEC) {
                s->mem_pressure = memory_pressure_read();
                s->mem_pressure_at = now;
        }
        return s->mem_pressure;
}

/*
 * Samples the health inputs into *in, the jobs in every state into counts (the ledger is read
 * once for both) and, into *ret_held, how many of the queued are held. Held jobs are not in
 * in->queued: they cannot run until their watch is configured again, so no level or alert
 * can make them drain (ledger_oldest_queued() leaves them out too). Returns 0, or the
 * ledger's error (the inputs then hold what was read).
 */
static int health_inputs_now(scheduler *s, bool for_level, uint64_t counts[static _JOB_STATE_MAX],
                             uint64_t *ret_held, struct health_inputs *in)
{
        uint64_t now = mono_usec(), held = 0;
        int64_t oldest = 0;
        unsigned total = 0, failed = 0;
        int r, k;

        memset(counts, 0, _JOB_STATE_MAX * sizeof counts[0]);
        r = ledger_counts(s->ledger, counts);
        k = ledger_count_held(s->ledger, &held);
        if (r >= 0 && k < 0)
                r = k;
        if (held > counts[JOB_QUEUED])
                held = counts[JOB_QUEUED];
        *ret_held = held;
        *in = (struct health_inputs){ .queued = counts[JOB_QUEUED] - held + counts[JOB_RETRY] };
        k = ledger_oldest_queued(s->ledger, &oldest);
        /* For the degradation level: while the operator holds the work, nothing waits through
         * the system's fault, and after a resume waits count from the resume. (Status, metrics
         * and alerts report the plain age.) */
        if (for_level && k > 0 && oldest < s->resumed_usec)
                oldest = s->resumed_usec;
        if (k > 0 && !(for_level && s->paused) && wall_usec() > oldest)
                in->oldest_queued_age_us = (uint64_t)(wall_usec() - oldest);
        if (r >= 0 && k < 0)
                r = k;
        in->memory_pressure = memory_pressure(s);
        for (unsigned i = 0; i < s->n_outcomes; i++) {
                if (now - s->outcomes[i].at > ERROR_WINDOW_USEC)
                        continue;
                total++;
                failed += s->outcomes[i].failed;
        }
        /* A handful of failures is not a rate: below 10 outcomes it counts as none. */
        in->error_rate = total >= 10 ? (double)failed / total : 0;
        return r < 0 ? r : 0;
}

/* A job left the backlog for good (done or dead). */
static void note_finished(scheduler *s)
{
        s->completions[s->next_completion] = mono_usec();
        s->next_completion = (s->next_completion + 1) % ELEMENTSOF(s->completions);
        if (s->n_completions < ELEMENTSOF(s->completions))
                s->n_completions++;
}

/*
 * Jobs finished per second recently: those of the last ERROR_WINDOW_USEC (as far as the ring
 * holds them) over the time from the oldest of them to now, so that a burst after a quiet
 * spell is measured at its own pace. In *ret_window_us the time looked back over: the window,
 * or the time since start if shorter.
 */
static double finished_per_s(const scheduler *s, uint64_t now, uint64_t *ret_window_us)
{
        uint64_t span, oldest = now;
        unsigned n = 0;

        *ret_window_us = now - s->started_usec < ERROR_WINDOW_USEC ? now - s->started_usec
                                                                   : ERROR_WINDOW_USEC;
        for (unsigned i = 0; i < s->n_completions; i++) {
                if (now - s->completions[i] > ERROR_WINDOW_USEC)
                        continue;
                n++;
                if (s->completions[i] < oldest)
                        oldest = s->completions[i];
        }
        span = now - oldest > 1000000 ? now - oldest : 1000000;
        return (double)n / ((double)span / 1e6);
}

int scheduler_report(scheduler *s, struct scheduler_report *ret)
{
        uint64_t counts[_JOB_STATE_MAX], window = 0, now = mono_usec(), held = 0;
        struct health_inputs in;
        struct health_alert_inputs ai;
        int r;

        r = health_inputs_now(s, false, counts, &held, &in);
        *ret = (struct scheduler_report){
                .score = health_score(&in, &s->cfg->health),
                .level_value = health_level(s->health),
                .level = health_level_name(health_level(s->health)),
                .level_reason = health_reason(s->health),
                .breaker = breaker_state_name(breaker_state(s->breaker)),
                .breaker_reason = breaker_reason(s->breaker),
                .queued = in.queued,
                .held = held,
                .backlog = in.queued + counts[JOB_RUNNING],
                .oldest_queued_age_us = in.oldest_queued_age_us,
                .error_rate = in.error_rate,
                .finished_per_s = finished_per_s(s, now, &window),
        };
        ai = (struct health_alert_inputs){
                .health = in,
                .backlog = ret->backlog,
                .finished_per_s = ret->finished_per_s,
                .rate_window_us = window,
                .breaker_state = ret->breaker,
                .breaker_reason = ret->breaker_reason,
                .level = health_level(s->health),
                .level_reason = ret->level_reason,
        };
        if (s->intake_fn)
                s->intake_fn(&ai, s->intake_userdata);
        {
                int64_t since = 0, wall = wall_usec();

                ai.ledger_failure = ledger_write_failure(s->ledger, &since);
                if (ai.ledger_failure && wall > since)
                        ai.ledger_failing_us = (uint64_t)(wall - since);
        }
        health_alerts_evaluate(&ai, &s->cfg->alerts, &ret->alerts);
        memcpy(ret->jobs, counts, sizeof ret->jobs);
        return r;
}

/* Hourly (and a minute after start): finished jobs older than prune_after_days go, except
 * each source's newest; the ledger stays small on a server that runs for years. One batch
 * per call (ledger_prune()); the pass goes on PRUNE_PAUSE_USEC later until it is through. */
static int on_prune_timer(sd_event_source *es, uint64_t usec, void *userdata)
{
        scheduler *s = userdata;
        uint64_t next = PRUNE_USEC;

        if (s->cfg->prune_after_days > 0) {
                int k;

                if (s->prune_cursor == 0) {
                        s->prune_cutoff =
                                wall_usec() - (int64_t)s->cfg->prune_after_days * 86400 * 1000000;
                        s->prune_total = 0;
                }
                k = ledger_prune(s->ledger, s->prune_cutoff, &s->prune_cursor, PRUNE_BATCH);
                if (k < 0) {
                        log_warning_errno(k, "ledger: prune: %s", ledger_errmsg(s->ledger));
                        s->prune_cursor = 0; /* the next pass starts over */
                } else {
                        s->prune_total += k;
                        if (s->prune_cursor != 0)
                                next = PRUNE_PAUSE_USEC;
                        else if (s->prune_total > 0)
                                log_info("pruned %d finished job(s) older than %u days",
                                         s->prune_total, s->cfg->prune_after_days);
                }
        } else {
                s->prune_cursor = 0; /* turned off by a reload: a later pass starts over */
        }
        sd_event_source_set_time_relative(es, next);
        sd_event_source_set_enabled(es, SD_EVENT_ONESHOT);
        return 0;
}

/* Checked often enough to notice recovery within a quarter of recover_us. */
static uint64_t health_interval(const scheduler *s)
{
        uint64_t t = s->cfg->health.recover_us / 4;

        return t < 200000 ? 200000 : t > HEALTH_CHECK_USEC ? HEALTH_CHECK_USEC : t;
}

static int on_health_timer(sd_event_source *es, uint64_t usec, void *userdata)
{
        scheduler *s = userdata;
        uint64_t counts[_JOB_STATE_MAX], held;
        struct health_inputs in;
        enum health_level before = health_level(s->health), after;

        (void)health_inputs_now(s, true, counts, &held, &in);
        after = s->cfg->degradation ? health_update(s->health, &in, mono_usec()) : before;
        if (after != before) {
                if (after > before)
                        log_warning("degradation level %s (was %s): %s", health_level_name(after),
                                    health_level_name(before), health_reason(s->health));
                else
                        log_notice("degradation level %s (was %s)", health_level_name(after),
                                   health_level_name(before));
                scheduler_kick(s);
        }
        /* Back to full health with a quiet queue: render degraded outputs again. */
        if (after == HEALTH_FULL && in.queued == 0 && scheduler_running(s) == 0) {
                /* In the background: a batch small enough never to trip the reduced level
                 * itself (which would degrade the re-render and loop). */
                uint64_t batch = worker_pool_size(s->pool);
                if (batch > RERENDER_BATCH)
                        batch = RERENDER_BATCH;
                if (batch >= s->cfg->health.reduced.queued)
                        batch = s->cfg->health.reduced.queued > 1
                                        ? s->cfg->health.reduced.queued - 1
                                        : 1;
                int k = ledger_rerender_degraded(s->ledger, wall_usec(), (unsigned)batch);
                if (k > 0) {
                        log_info("rendering %d degraded job(s) again at full quality", k);
                        scheduler_kick(s);
                }
        }
        sd_event_source_set_time_relative(es, health_interval(s));
        sd_event_source_set_enabled(es, SD_EVENT_ONESHOT);
        return 0;
}

const char *scheduler_breaker(const scheduler *s, const char **ret_reason)
{
        if (ret_reason)
                *ret_reason = breaker_reason(s->breaker);
        return breaker_state_name(breaker_state(s->breaker));
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

/* Completes a job whose worker reported success: publish, then commit. */
static void finish_ok(scheduler *s, struct running *run, const json_t *reply)
{
        const struct job *job = run->job;
        json_t *outs = json_object_get(reply, "outputs");
        const char *src_sha = NULL;
        struct job_output *rows = NULL;
        uint64_t *sizes = NULL;
        const char *failed = NULL;
        _cleanup_(json_decrefp) json_t *info = NULL;
        _cleanup_free_ char *info_text = NULL;
        char why[512];
        int64_t now;
        int r;

        (void)json_unpack((json_t *)reply, "{s:{s:s}}", "source", "sha256", &src_sha);
        if (!json_is_array(outs) || json_array_size(outs) != run->n) {
                job_failed(s, job, "worker returned a malformed result", false);
                return;
        }
        if (ledger_superseded(s->ledger, job->id) > 0) {
                log_job(LOG_INFO, LOG_JOB_CANCELLED, job->id, job->source_path, job->pipeline,
                        "job %" PRId64 " %s: superseded by newer content; discarded", job->id,
                        job->source_path);
                if (ledger_cancel(s->ledger, job->id, "superseded by newer content", wall_usec()) >=
                    0)
                        emit(s, "cancelled", job,
                             json_pack("{s:s}", "error", "superseded by newer content"));
                return;
        }
        if (!src_sha || strcmp(src_sha, job->sha256) != 0) {
                /* The file was rewritten in place while we worked on it: take in the new
                 * content as a job of its own and drop this one. */
                const struct watch_config *wc = find_watch(s->cfg, job->watch);
                _cleanup_free_ char *err = NULL;

                log_job(LOG_INFO, LOG_JOB_CANCELLED, job->id, job->source_path, job->pipeline,
                        "job %" PRId64 " %s: content changed while processing; superseded", job->id,
                        job->source_path);
                (void)ledger_cancel(s->ledger, job->id, "source content changed during processing",
                                    wall_usec());
                if (wc && intake_file(s->ledger, s->cfg, wc, job->source_path, wall_usec(), NULL,
                                      &err) < 0)
                        log_error("%s", err ?: job->source_path);
                return;
        }

        rows = calloc(run->n, sizeof *rows);
        sizes = calloc(run->n, sizeof *sizes);
        if (!rows || !sizes) {
                job_failed(s, job, "out of memory", false);
                goto out;
        }
        for (size_t i = 0; i < run->n; i++) {
                json_int_t w, h, bytes;
                const char *sha;

                if (json_unpack(json_array_get(outs, i), "{s:I, s:I, s:I, s:s}", "width", &w,
                                "height", &h, "bytes", &bytes, "sha256", &sha) < 0 ||
                    strlen(sha) != HASH_HEX_SIZE - 1) {
                        job_failed(s, job, "worker returned a malformed output", false);
                        goto out;
                }
                rows[i] = (struct job_output){
                        .variant = run->variants[i].name,
                        .path = run->tmps[i].final_path,
                        .tmp_path = run->tmps[i].tmp_path,
                        .format = (char *)image_format_name(run->variants[i].format),
                        .width = (unsigned)w,
                        .height = (unsigned)h,
                        .bytes = (uint64_t)bytes,
                };
                memcpy(rows[i].sha256, sha, HASH_HEX_SIZE);
                sizes[i] = (uint64_t)bytes;
        }

        /* What the worker reported beyond the files: the placeholder, and per output the
         * quality it used and any warning (max_bytes not reached). */
        info = json_object();
        if (info && json_object_get(reply, "placeholder"))
                json_object_set(info, "placeholder", json_object_get(reply, "placeholder"));
        for (size_t i = 0; info && i < run->n; i++) {
                json_t *o = json_array_get(outs, i), *q = json_object_get(o, "quality"),
                       *w = json_object_get(o, "warning");
                if (!q && !w)
                        continue;
                if (!json_object_get(info, "variants"))
                        json_object_set_new(info, "variants", json_object());
                json_object_set_new(json_object_get(info, "variants"), run->variants[i].name,
                                    json_pack("{s:O?, s:O?}", "quality", q, "warning", w));
        }
        if (info && run->degraded)
                json_object_set_new(info, "degraded", json_true());
        info_text = info && json_object_size(info) > 0 ? json_dumps(info, JSON_COMPACT) : NULL;

        /* Checkpoint "verified": after a crash from here on, the staged files are published
         * without rendering them again. */
        now = wall_usec();
        r = ledger_stage(s->ledger, job->id, rows, run->n, run->degraded, info_text, now);
        if (r < 0) {
                snprintf(why, sizeof why, "ledger: stage outputs: %s", ledger_errmsg(s->ledger));
                job_blocked(s, job, why);
                goto out;
        }
        fault_point("stage.after_commit");

        r = publish_commit(run->tmps, sizes, run->n, &failed);
        if (r >= 0) {
                failed = NULL;
                r = publish_manifest(job, rows, run->n, info);
        }
        if (r < 0) {
                snprintf(why, sizeof why, "publish %s: %s", failed ?: "manifest", strerror(-r));
                if (environmental(r))
                        job_blocked(s, job, why);
                else
                        job_failed(s, job, why, false);
                goto out;
        }
        fault_point("ledger.before_complete");
        fault_delay("ledger.before_complete");
        r = ledger_complete(s->ledger, job->id, NULL, 0, wall_usec());
        if (r < 0) {
                /* Published: the completion is recorded once the ledger can write (the
                 * outputs stay staged in it meanwhile, for the recovery after a crash). */
                struct handback *h = calloc(1, sizeof *h);

                log_error_errno(r,
                                "ledger: complete job %" PRId64 ": %s; its outputs are "
                                "published, the completion is recorded once the ledger can "
                                "be written",
                                job->id, ledger_errmsg(s->ledger));
                if (h) {
                        h->id = job->id;
                        h->done = TAKE_PTR(run->job);
                        handback_keep(s, h);
                }
                goto out;
        }
        fault_point("ledger.after_complete");
        s->env_failures = 0;
        breaker_note(s, BREAKER_SUCCESS, NULL);
        note_finished(s);
        double seconds = (double)(wall_usec() - job->updated_us) / 1e6;
        log_job(LOG_INFO, LOG_JOB_DONE, job->id, job->source_path, job->pipeline,
                "job %" PRId64 " %s: done, %zu outputs in %.0f ms", job->id, job->source_path,
                run->n, seconds * 1e3);
        metrics_job_done(s->metrics, job->pipeline, seconds);
        {
                json_t *list = json_array();
                for (size_t i = 0; list && i < run->n; i++)
                        json_array_append_new(list, json_pack("{s:s, s:o, s:I, s:I, s:I, s:s}",
                                                              "variant", rows[i].variant, "path",
                                                              proto_string_lossy(rows[i].path),
                                                              "width", (json_int_t)rows[i].width,
                                                              "height", (json_int_t)rows[i].height,
                                                              "bytes", (json_int_t)rows[i].bytes,
                                                              "sha256", rows[i].sha256));
                /* And what an application needs next without asking: the manifest and the
                 * placeholder (null when the pipeline has none). */
                _cleanup_free_ char *manifest = NULL;
                json_t *ph = info ? json_object_get(info, "placeholder") : NULL;

                if (publish_manifest_path(job->output_key, &manifest) < 0)
                        manifest = NULL;
                emit(s, "done", job,
                     json_pack("{s:o, s:o, s:O?}", "outputs", list, "manifest",
                               manifest ? proto_string_lossy(manifest) : json_null(), "placeholder",
                               json_is_object(ph) ? ph : NULL));
        }
out:
        free(rows);
        free(sizes);
}

/* Publishes every job waiting in `finished`, oldest first. */
static void publish_finished(scheduler *s)
{
        while (s->finished) {
                struct running *run = s->finished;

                s->finished = run->next;
                if (!s->finished)
                        s->finished_tail = &s->finished;
                s->n_finished--;
                finish_ok(s, run, run->reply);
                running_free(run);
        }
}

static int on_publish(sd_event_source *es, void *userdata)
{
        scheduler *s = userdata;

        publish_finished(s);
        scheduler_kick(s); /* a published job frees its output_key for the next one */
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
                job_failed(s, run->job, failure ?: "worker failed", false);
        } else if (json_unpack((json_t *)reply, "{s:b}", "ok", &ok) < 0) {
                job_failed(s, run->job, "worker returned a malformed result", false);
        } else if (ok) {
                /* Published by on_publish(), after on_kick() gave the worker its next job. */
                run->reply = json_incref((json_t *)reply);
                run->next = NULL;
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
                if (!permanent && err > 0 && environmental(-err))
                        job_blocked(s, run->job, error ?: strerror(err));
                else
                        job_failed(s, run->job, error ?: "unknown error", permanent);
        }
        running_free(run);
        scheduler_kick(s);
}

int scheduler_new(sd_event *e, const struct config *cfg, ledger *l, const char *worker_path,
                  scheduler **ret)
{
        scheduler *s = calloc(1, sizeof *s);
        struct worker_pool_options o = {
                .worker_path = worker_path,
                .n_workers = cfg->workers,
                .job_timeout_s = cfg->limits.job_timeout_s,
                .memory_limit = cfg->limits.worker_memory,
                .max_jobs = cfg->limits.worker_max_jobs,
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
        snprintf(s->owner, sizeof s->owner, "imgd:%d", (int)getpid());
        s->started_usec = mono_usec();
        o.userdata = s;

        r = metrics_new(&s->metrics);
        if (r < 0)
                goto fail;
        struct breaker_config bc = {
                .output_failures = cfg->breaker.output_failures,
                .worker_failure_rate = cfg->breaker.worker_failure_rate,
                .worker_min_samples = cfg->breaker.worker_min_samples,
                .window_us = (uint64_t)cfg->breaker.window_ms * 1000,
                .cooldown_us = (uint64_t)cfg->breaker.cooldown_ms * 1000,
                .max_cooldown_us = (uint64_t)cfg->breaker.max_cooldown_ms * 1000,
        };
        r = hooks_new(e, &s->hooks);
        if (r < 0)
                goto fail;
        r = sd_event_add_time_relative(e, &s->prune_timer, CLOCK_MONOTONIC, 60 * 1000000ULL, 0,
                                       on_prune_timer, s);
        if (r < 0)
                goto fail;
        r = health_new(&cfg->health, &s->health);
        if (r < 0)
                goto fail;
        r = sd_event_add_time_relative(e, &s->health_timer, CLOCK_MONOTONIC, health_interval(s), 0,
                                       on_health_timer, s);
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
        r = sd_event_add_time(e, &s->due, CLOCK_REALTIME, UINT64_MAX, 1000, on_due, s);
        if (r < 0)
                goto fail;
        sd_event_source_set_enabled(s->due, SD_EVENT_OFF);
        r = sd_event_add_time_relative(e, &s->leases, CLOCK_MONOTONIC, LEASE_CHECK_USEC, 0,
                                       on_lease_check, s);
        if (r < 0)
                goto fail;
        sd_event_source_set_enabled(s->leases, SD_EVENT_ON);
        r = worker_pool_new(e, &o, &s->pool);
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
        s->pool = worker_pool_free(s->pool);
        /* Rendered and verified: publish rather than render again at the next start. */
        if (s->finished_tail)
                publish_finished(s);
        /* Jobs still running were not finished: hand them back without using an attempt. */
        while (s->running) {
                struct running *run = s->running;
                s->running = run->next;
                (void)ledger_release(s->ledger, run->job->id, now, now);
                running_free(run);
        }
        /* Hand-backs that failed: once more (if not, the next start requeues them). */
        while (s->handbacks) {
                struct handback *h = s->handbacks;
                s->handbacks = h->next;
                if (h->done)
                        (void)ledger_complete(s->ledger, h->id, NULL, 0, now);
                else
                        (void)ledger_release(s->ledger, h->id, now, now);
                job_free(h->done);
                free(h);
        }
        sd_event_source_disable_unref(s->handback_timer);
        sd_event_source_disable_unref(s->kick);
        sd_event_source_disable_unref(s->publish);
        sd_event_source_disable_unref(s->due);
        sd_event_source_disable_unref(s->leases);
        metrics_free(s->metrics);
        breaker_free(s->breaker);
        hooks_free(s->hooks);
        health_free(s->health);
        sd_event_source_disable_unref(s->health_timer);
        sd_event_source_disable_unref(s->prune_timer);
        sd_event_source_disable_unref(s->breaker_timer);
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
        worker_pool_set_timeout(s->pool, cfg->limits.job_timeout_s);
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
        grace = ((uint64_t)s->cfg->limits.job_timeout_s + 30) * 1000000ULL;
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

void scheduler_set_event_handler(scheduler *s, scheduler_event_fn fn, void *userdata)
{
        s->event_fn = fn;
        s->event_userdata = userdata;
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
                emit(s, "queued", &d->job, NULL);
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
                unquarantine(s, &d->job);
        scheduler_enqueued(s, id);
}

const worker_pool *scheduler_pool(const scheduler *s)
{
        return s->pool;
}

unsigned scheduler_running(const scheduler *s)
{
        return s->n_running + s->n_finished;
}
