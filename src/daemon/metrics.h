/* SPDX-License-Identifier: MIT */
/*
 * metrics.h - the daemon's counters and histograms, rendered in the Prometheus text
 * exposition format (version 0.0.4) for `imgctl metrics` and node_exporter's textfile
 * collector. The scheduler and the worker pool record; api-status.c renders. Single-threaded, no
 * I/O. Label values (pipelines, reasons) are bounded: at most METRICS_MAX_LABELS distinct
 * values per family, further ones are counted under "other".
 *
 * On a node of a cluster (metrics_gauges.node set) the series that are the node's own (its
 * counters since start, its workers, the jobs in its hands, its build) carry a `node` label;
 * those read from the shared ledger (imgd_jobs, imgd_oldest_queued_seconds) and the cluster's
 * (imgd_cluster_nodes) do not: every node reports the same value. The node's state gauges
 * (breaker, health, alerts, drain, error ratio) are told apart by the scrape's target.
 */
#pragma once

#include <stdint.h>
#include <stdio.h>

#include "daemon/ledger.h" /* enum job_state */
#include "shared/time-util.h"

#define METRICS_MAX_LABELS 64

typedef struct metrics metrics;

int metrics_new(metrics **ret);
metrics *metrics_free(metrics *m);

/* A job finished: done, with its processing time (claim to done) in seconds. */
void metrics_job_done(metrics *m, const char *pipeline, double seconds);
/* A failed attempt, by reason class: "permanent", "transient", "environmental", "timeout",
 * "crash", "memory". */
void metrics_job_failed(metrics *m, const char *reason);
/* A worker process was replaced after dying or being killed or recycled, by cause
 * (worker-pool.h: "crash", "exit", "timeout", "memory", "recycle"). */
void metrics_worker_restart(metrics *m, const char *why);
/* A step of a job refused to this node because its claim was lost (fencing, issue 18), by
 * step: "stage", "publish", "complete", "fail". */
void metrics_fence_refused(metrics *m, const char *step);
/* A job another node (or this one) had claimed, whose lease lapsed, rescued by this node. */
void metrics_lease_rescued(metrics *m);

/* Values that are sampled rather than counted, set before rendering. */
struct metrics_gauges {
        uint64_t jobs_by_state[_JOB_STATE_MAX];
        usec_t oldest_queued_age_usec; /* written in seconds */
        int breaker_state;             /* 0 closed, 1 half-open, 2 open */
        int degradation_level;         /* 0 full, 1 reduced, 2 essential, 3 paused */
        double health_score;           /* 0..100 */
        unsigned alerts;               /* active alerts: bit (1 << enum health_alert) */
        usec_t drain_usec;      /* predicted time to drain the backlog; HEALTH_DRAIN_NEVER: never */
        double error_rate;      /* failed share of the recent attempts, 0..1 */
        double finished_per_s;  /* jobs finished (done or dead) per second, recently */
        uint64_t rss_bytes;     /* the daemon's resident set */
        uint64_t workers_busy;  /* with a job */
        uint64_t workers_idle;  /* ready for one */
        uint64_t workers_total; /* the pool's size: the rest are starting or being replaced */
        uint64_t intake_retry_pending; /* uploads waiting to be taken in again */
        uint64_t unwatched_folders;    /* folders past the inotify watch limit */
        uint64_t background_remaining; /* reconciliation and re-render jobs still to do */
        /* A node of a cluster (a PostgreSQL ledger): its name, the `node` label of the series
         * that are its own; NULL on one node (SQLite: no label, no cluster gauges). */
        const char *node;
        uint64_t node_jobs_running;         /* the jobs in its hands */
        uint64_t nodes_alive, nodes_lapsed; /* the cluster's nodes, from the nodes table */
        /* The ledger could not be read (its server unreachable): the series read from it
         * (imgd_jobs, imgd_oldest_queued_seconds, imgd_cluster_nodes,
         * imgd_background_jobs_remaining) have no sample, rather
         * than a made-up 0; imgd_alert{alert="ledger_unreachable"} says why. */
        bool ledger_unread;
};

/* Writes the whole exposition (HELP, TYPE, samples) to f. Returns 0 or -EIO. */
int metrics_render(const metrics *m, const struct metrics_gauges *g, FILE *f);
