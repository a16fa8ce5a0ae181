/* SPDX-License-Identifier: MIT */
/*
 * scheduler.h - moves jobs from the ledger through the workers into the output tree:
 * claims a job whenever a worker is idle, opens its source safely, creates its temporary
 * outputs, dispatches it, and on the result publishes the outputs and completes the job, or
 * records the failure and schedules a retry with exponential backoff and jitter, or marks
 * the job dead. Wakes itself with a timer for the next retry that falls due.
 */
#pragma once

#include <stdint.h>
#include <systemd/sd-event.h>

#include <jansson.h>
#include <stdbool.h>

#include "shared/config.h"
#include "daemon/metrics.h"
#include "daemon/ledger.h"
#include "daemon/worker-pool.h"

typedef struct scheduler scheduler;

/* Starts the worker pool. The scheduler borrows e, cfg and l, which must outlive it. */
int scheduler_new(sd_event *e, const struct config *cfg, ledger *l, const char *worker_path,
                  scheduler **ret);
scheduler *scheduler_free(scheduler *s);

/* Asks the scheduler to look for claimable work soon (coalesced; safe to call often). */
void scheduler_kick(scheduler *s);

/* Job `id` was just enqueued: tells subscribers ("queued") and kicks. */
void scheduler_enqueued(scheduler *s, int64_t id);
/* A dead job was put back in the queue (ledger_retry): as scheduler_enqueued, after moving
 * its source back from its watch's quarantine folder if it went there. */
void scheduler_retried(scheduler *s, int64_t id);

const worker_pool *scheduler_pool(const scheduler *s);

/* This node's name (ledger.node, by default the host name) and its lease owner ("node:pid"),
 * owned by s. */
const char *scheduler_node(const scheduler *s);
const char *scheduler_owner(const scheduler *s);

/* A reloaded configuration (which must outlive the scheduler or the next call). Running
 * jobs keep the variants they started with; the worker count changes at the next start. */
void scheduler_set_config(scheduler *s, const struct config *cfg);

/*
 * True when there is work (running jobs, or claimable ones with a worker free) and nothing
 * has been dispatched or finished for longer than the job timeout plus 30 s: the worker pool
 * is wedged, and the service manager's watchdog should be allowed to fire.
 */
bool scheduler_stalled(scheduler *s);

/* Jobs dispatched and not yet finished. */
unsigned scheduler_running(const scheduler *s);

/* On a ledger several nodes share (PostgreSQL): this node's name, and the lease of its claims
 * in *ret_lease_usec (may be NULL); NULL on one node (SQLite). */
const char *scheduler_cluster_node(const scheduler *s, usec_t *ret_lease_usec);

/* Whether live work (an upload or its retry, not background work) is being processed, or was
 * claimed within the last 2 s: background work then holds at most limits.background_share of
 * the workers, and a reconciliation pass yields the event loop (reconciler_set_live_fn()). */
bool scheduler_live_about(const scheduler *s);

/*
 * Intake control for operators: a paused scheduler claims no new jobs; running jobs go on
 * and finish. (`imgctl drain` is pause, then wait for scheduler_running() to reach 0.)
 */
void scheduler_pause(scheduler *s);
void scheduler_resume(scheduler *s);
bool scheduler_paused(const scheduler *s);

/*
 * Job transitions, for subscribers (imgctl events) and hooks: called with the event name
 * ("queued", "done", "retry", "dead", "cancelled") and a JSON object describing the job
 * ({"id", "source", "watch", "pipeline", "attempts", and "outputs", "manifest" and
 * "placeholder" (null when none) for done, "error" and "next_at_us" for retry and dead,
 * "quarantined" for a dead job whose source was moved, "error" for cancelled}), borrowed for the
 * duration of the call.
 */
typedef void (*scheduler_event_fn)(const char *event, const json_t *job, void *userdata);
void scheduler_set_event_handler(scheduler *s, scheduler_event_fn fn, void *userdata);

/*
 * A running job's source was rewritten in place while the job ran (the worker read other
 * content than intake hashed): the job is cancelled, and `path`, a file below watch `w`, is
 * to be taken in again as new content. The scheduler does not take files in itself: main.c
 * registers intake here, so that the data flow has one owner of intake. Without a handler
 * the new content waits for the next scan.
 */
typedef void (*scheduler_changed_fn)(const struct watch_config *w, const char *path,
                                     void *userdata);
void scheduler_set_changed_handler(scheduler *s, scheduler_changed_fn fn, void *userdata);

/*
 * Fills the intake part of the alert inputs (intake_retry, intake_reason, unwatched,
 * unwatched_error, unwatched_first, unwatched_scan_usec), which the scheduler does not know: called
 * by scheduler_report() each time, so that status, metrics and the STATUS= line see one list of
 * alerts. The strings need only live until the call returns to scheduler_report().
 */
typedef void (*scheduler_intake_fn)(struct health_alert_inputs *in, void *userdata);
void scheduler_set_intake_probe(scheduler *s, scheduler_intake_fn fn, void *userdata);

/* The circuit breaker's state ("closed", "half-open", "open") and, in *ret_reason (may be
 * NULL; "" while closed), why it opened. */
const char *scheduler_breaker(const scheduler *s, const char **ret_reason);

/* How the service is doing right now, for status, metrics and the STATUS= line. */
struct scheduler_report {
        uint64_t jobs[_JOB_STATE_MAX]; /* jobs in each state */
        double score;                  /* health_score(), 0..100 */
        enum health_level level_value;
        const char *level;          /* its name: "full", "reduced", "essential", "paused" */
        const char *level_reason;   /* health_reason(); "" at full */
        const char *breaker;        /* "closed", "half-open", "open" */
        const char *breaker_reason; /* "" while closed */
        uint64_t queued;            /* queued and retry, not held */
        uint64_t held;              /* queued but held (their watch is gone): in jobs[] */
        uint64_t backlog;           /* queued, retry and running, not held */
        uint64_t oldest_queued_age_usec;
        double error_rate;                 /* failed share of the recent attempts */
        double finished_per_s;             /* jobs finished (done or dead) per second, recently */
        struct health_alert_report alerts; /* against the configuration's alerts */
};

/* Fills *ret (its strings owned by s, valid until the scheduler next runs). Returns 0, or a
 * negative errno when the ledger cannot be read (the report then holds what was known). */
int scheduler_report(scheduler *s, struct scheduler_report *ret);

/* The scheduler's metrics (owned by the scheduler). */
metrics *scheduler_metrics(scheduler *s);
