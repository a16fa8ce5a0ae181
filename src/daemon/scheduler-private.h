/* SPDX-License-Identifier: MIT */
/*
 * scheduler-private.h - what the scheduler's files share (private header, as libvips'
 * pforeign.h): the scheduler's state and the functions one file calls in another.
 *
 *   scheduler.c           the hub: the claim loop (on_kick), a job's preparation and
 *                         dispatch (start_job), the worker's answers, lease checks, wiring
 *   scheduler-complete.c  a job's end: publish and complete (a batch at a time, in group
 *                         commits), or retry, dead, blocked
 *   scheduler-handback.c  jobs handed back to the ledger (running -> queued) when it could not
 *                         record them at once, and all of them at stop
 *   scheduler-health.c    the breaker's and the health score's inputs, the report, the health
 *                         (re-render) and prune timers
 *   scheduler-events.c    transitions told to subscribers and the watch's hooks
 *   scheduler-retract.c   retract, drop and move jobs: carried out at once (retract.h), told
 *   scheduler-lease.c     a node among others (PostgreSQL): heartbeat, rescue of lapsed leases,
 *                         the fence check before publication, refused steps
 */
#pragma once

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>
#include <systemd/sd-event.h>

#include "daemon/breaker.h"
#include "daemon/hooks.h"
#include "daemon/outcomes.h"
#include "daemon/prune.h"
#include "daemon/publish.h"
#include "daemon/scheduler.h"
#include "shared/time-util.h"

/* A job handed to a worker; then, once the worker reported success, waiting for publication. */
struct running {
        struct job *job;
        bool degraded; /* rendered below full quality, or without its non-essential variants */
        struct publish_tmp *tmps;
        /* The manifest, written and fsynced by the worker beside the outputs, and its size
         * as the worker reported it. */
        struct publish_tmp manifest;
        uint64_t manifest_bytes;
        struct variant *variants; /* formats resolved */
        size_t n;
        json_t *reply; /* the worker's result while waiting in `finished` */
        /* While it is published (scheduler_publish()): the outputs' rows and sizes as the
         * worker reported them, and what it reported beyond them (the ledger's `info`). */
        struct job_output *rows;
        uint64_t *sizes;
        json_t *info;
        /* A reconciliation job: the outputs of the source's previous done job, whose files
         * of the variants rendered again under other names are unlinked once it is published
         * (publish_unlink_replaced()). */
        struct job_output *prev;
        size_t n_prev;
        bool dropped; /* left the publication (cancelled, failed, handed back) */
        bool redo;    /* its step failed inside a group commit: done again alone */
        struct running *next;
};

/*
 * A job to hand back to the ledger (running -> queued, no attempt used) once it can write; or,
 * with `done` set, a job whose outputs are published and whose completion the ledger could
 * not record (running -> done, recorded once it can write: never rendered again for it).
 */
struct handback {
        int64_t id;
        int64_t fence;      /* the claim's fencing token (ledger_claim()) */
        int64_t delay_usec; /* claimable this long after the hand-back */
        struct job *done;   /* the job to complete (owned), or NULL to hand back */
        struct handback *next;
};

struct scheduler {
        sd_event *event;
        const struct config *cfg;
        ledger *ledger;
        worker_pool *pool;
        sd_event_source *kick, *due, *leases, *publish;
        sd_event_source *publish_timer; /* on_publish()'s deadline for a batch */
        sd_event_source *claims_timer;  /* commits claims no transition carried in time */
        struct running *running;
        unsigned n_running;
        /* Rendered and verified, oldest first, published by on_publish() once the idle
         * workers have their next jobs: the fsyncs of publishing do not keep them waiting.
         * Still running in the ledger and counted in scheduler_running(). */
        struct running *finished, **finished_tail;
        unsigned n_finished;
        uint64_t finished_since_usec; /* CLOCK_MONOTONIC: the first of `finished` came */
        /* Published (renamed, their directories synced), oldest first, waiting for the commit
         * that completes them: the next batch's staging commit, or on_publish()'s deadline.
         * Still running in the ledger and counted in scheduler_running(). */
        struct running *published;
        unsigned n_published;
        uint64_t published_since_usec; /* CLOCK_MONOTONIC: they were published */
        unsigned env_failures; /* consecutive failures of the environment (disk, permissions) */
        /* Jobs whose hand-back to the ledger failed (scheduler_hand_back()): still ours,
         * retried. */
        struct handback *handbacks;
        sd_event_source *handback_timer;
        uint64_t handback_delay_usec;
        uint64_t claim_failure_logged_usec; /* CLOCK_MONOTONIC; 0: the last claim worked */
        uint64_t live_claimed_usec; /* CLOCK_MONOTONIC: the last claim of live work (or 0) */
        bool paused;
        /* CLOCK_REALTIME of the operator's last resume (0: none): a job's wait is counted
         * from then, as the operator's pause is not the system's ill health. */
        int64_t resumed_usec;
        uint64_t last_progress_usec; /* CLOCK_MONOTONIC: last dispatch or finished job */
        scheduler_event_fn event_fn;
        void *event_userdata;
        scheduler_intake_fn intake_fn;
        void *intake_userdata;
        scheduler_changed_fn changed_fn;
        void *changed_userdata;
        metrics *metrics;
        breaker *breaker;
        hooks *hooks;
        health *health;
        sd_event_source *breaker_timer, *health_timer, *prune_timer;
        struct prune_pass prune;
        /* Recent outcomes for the error rate, recent completions for the drain rate. */
        outcomes *outcomes;
        double mem_pressure;           /* memory_pressure(): the last reading */
        uint64_t mem_pressure_at_usec; /* CLOCK_MONOTONIC of it, 0: none yet */
        char owner[64];
        /* A ledger several nodes share (PostgreSQL; scheduler-lease.c): this node's name, its
         * heartbeat, and the lease of its claims. */
        bool cluster;
        char node[64];
        usec_t lease_usec;         /* of each claim (SQLite: the job timeout plus 60 s) */
        usec_t beat_interval_usec; /* a third of the lease */
        sd_event_source *heartbeat;
        uint64_t beat_ok_usec; /* CLOCK_MONOTONIC: the last heartbeat that worked was sent */
        bool beat_failing;     /* the last heartbeat failed (logged once) */
        bool beat_lapsed;      /* and for longer than the lease (logged once) */
        int64_t started_usec;  /* wall clock, for the nodes table */
};

/* A failed hand-back is tried again after this, doubling up to the maximum. */
#define HANDBACK_MIN_USEC USEC_PER_SEC
#define HANDBACK_MAX_USEC (30 * USEC_PER_SEC)

/* scheduler.c */
const struct watch_config *scheduler_find_watch(const struct config *cfg, const char *path);
void scheduler_running_free(struct running *run);
/* Whether job id is in this scheduler's hands (rendering, waiting to be published or
 * completed, or to be handed back). */
bool scheduler_has_job(const scheduler *s, int64_t id);

/* scheduler-complete.c */
/* Publishes the list of jobs (linked by `next`, taken over) whose workers reported success
 * (their results in run->reply), together: one group commit of the ledger stages them and
 * completes the jobs published before them, then one fsync per directory touched; they wait
 * in s->published for the next such commit. */
void scheduler_publish(scheduler *s, struct running *list);
/* Completes the jobs in s->published in one group commit: logged done, told to subscribers. */
void scheduler_complete_published(scheduler *s);
/* Records a failed attempt: retry after a backoff, or dead when permanent or out of
 * attempts; cancelled as superseded when its path has newer content. */
void scheduler_job_failed(scheduler *s, const struct job *job, const char *error, bool permanent);
/* The environment failed the job: handed back without using an attempt, after a backoff
 * that grows with consecutive failures. */
void scheduler_job_blocked(scheduler *s, const struct job *job, const char *error);
/* scheduler_job_blocked() or scheduler_job_failed(), as retry_classify() says of error r (a
 * negative errno, 0 when none is known). */
void scheduler_job_failure(scheduler *s, const struct job *job, const char *error, int r,
                           bool permanent);
/* One output as the done event tells it (recipe: null when unknown). */
json_t *scheduler_output_json(const struct job_output *o);
/* A job whose completion the ledger recorded late (a kept handback with `done`). */
void scheduler_completed_late(scheduler *s, const struct job *job);

/* scheduler-handback.c */
/* Hands job `id` (of the claim `fence`) back to the ledger (running -> queued without using
 * an attempt), claimable
 * delay_usec from now; kept and tried again with a backoff if the ledger cannot record it. */
void scheduler_hand_back(scheduler *s, int64_t id, int64_t fence, int64_t delay_usec);
/* Keeps h (a failed hand-back or completion, owned from now on) for a retry. */
void scheduler_handback_keep(scheduler *s, struct handback *h);
/* At stop: every running job handed back (claimable at `now`), every kept hand-back or
 * completion tried once more (if not, the next start requeues them). */
void scheduler_handback_all(scheduler *s, int64_t now);

/* scheduler-health.c */
/* Records an outcome with the breaker and the error rate, and logs the breaker's
 * transitions. */
void scheduler_breaker_note(scheduler *s, enum breaker_outcome o, const char *reason);
/* A job left the backlog for good (done or dead). */
void scheduler_note_finished(scheduler *s);
/* Holds the breaker open while the ledger cannot be reached (ledger_unreachable(): the last
 * command failed with -ENOTCONN), with the reason "ledger unreachable: ...", and releases it
 * (and kicks the claim) once the ledger answered again; logs both. Called after ledger work
 * that may have failed: a claim, the heartbeat, the health timer, a report. Returns whether
 * the breaker is held. */
bool scheduler_ledger_sync(scheduler *s);
/* How often the health timer runs: often enough to notice recovery within a quarter of
 * recover_usec. */
uint64_t scheduler_health_interval_usec(const scheduler *s);
int scheduler_on_health_timer(sd_event_source *es, uint64_t usec, void *userdata);
int scheduler_on_prune_timer(sd_event_source *es, uint64_t usec, void *userdata);

/* scheduler-retract.c */
/* Carries out claimed job `job` (kind retract, drop or move; taken over) at once: done and
 * told ("retracted", "moved"), a render queued instead of a move, or failed like a render. */
void scheduler_retract(scheduler *s, struct job *job);

/* scheduler-lease.c */
/* Starts the heartbeat (and with it the rescue of lapsed leases) on a shared ledger. */
int scheduler_lease_start(scheduler *s);
void scheduler_lease_stop(scheduler *s);
/* The fence check before publication: renews the lease of each job of `list` not dropped;
 * a job whose claim was lost is refused (scheduler_fence_refused()), one whose lease cannot be
 * renewed (the ledger unreachable) handed back: both are marked dropped. Returns false when
 * the ledger could not be asked. Nothing to do on a ledger of one node. */
bool scheduler_renew(scheduler *s, struct running *list);
/* A step ("stage", "publish", "complete", "fail") of `job` refused because its claim was lost
 * (why: what holds the job now): logged with the job, the node and the tokens, and counted.
 * The caller drops the attempt (its temporary files are removed with it). */
void scheduler_fence_refused(scheduler *s, const struct job *job, const char *step,
                             const char *why);

/* scheduler-events.c */
/* Tells subscribers and the watch's hooks about a transition of `job`; extra members (may be
 * NULL, taken over) are added. */
void scheduler_emit(scheduler *s, const char *event, const struct job *job, json_t *extra);
/* The same, the hook given `files` (exact bytes) as its outputs instead of the job's. */
void scheduler_emit_files(scheduler *s, const char *event, const struct job *job, json_t *extra,
                          const char *const *files, size_t n_files);
