/* SPDX-License-Identifier: MIT */
/*
 * metrics.c - counters and histograms in Prometheus text format; see metrics.h.
 *
 * Each labelled family holds at most METRICS_MAX_LABELS label values in items[0..n), plus,
 * once they are used up (or a label cannot be copied), the value "other", so n is at most
 * METRICS_MAX_LABELS + 1. Recording never fails and never allocates more than that.
 */
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "shared/macro.h"
#include "shared/health.h"
#include "shared/time-util.h"
#include "daemon/ledger.h"
#include "daemon/metrics.h"

/* Upper bounds (seconds) of the processing-time histogram buckets; +Inf is implicit. */
static const double buckets[] = { 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120 };
#define N_BUCKETS ELEMENTSOF(buckets)

#define OTHER "other"

struct labelled {
        const char *label;
        bool owned; /* label is ours to free (not the static OTHER) */
        uint64_t count;
        /* histogram (only for durations) */
        uint64_t bucket[N_BUCKETS];
        double sum;
};

struct family {
        struct labelled items[METRICS_MAX_LABELS + 1]; /* and room for "other" */
        size_t n;
};

struct metrics {
        struct family done, failed, restarts, fenced;
        uint64_t rescued;
};

int metrics_new(metrics **ret)
{
        metrics *m = calloc(1, sizeof *m);

        if (!m)
                return -ENOMEM;
        *ret = m;
        return 0;
}

static void family_clear(struct family *f)
{
        for (size_t i = 0; i < f->n; i++)
                if (f->items[i].owned)
                        free((char *)f->items[i].label);
}

metrics *metrics_free(metrics *m)
{
        if (!m)
                return NULL;
        family_clear(&m->done);
        family_clear(&m->failed);
        family_clear(&m->restarts);
        family_clear(&m->fenced);
        free(m);
        return NULL;
}

/* The item counting `label` (NULL counts as "unknown"), added while there is room; once the
 * family is full (or a label cannot be copied), "other". Never NULL. */
static struct labelled *find(struct family *f, const char *label)
{
        if (!label)
                label = "unknown";
        for (size_t i = 0; i < f->n; i++)
                if (strcmp(f->items[i].label, label) == 0)
                        return &f->items[i];
        if (f->n < METRICS_MAX_LABELS) {
                char *copy = strdup(label);

                if (copy) {
                        f->items[f->n] = (struct labelled){ .label = copy, .owned = true };
                        return &f->items[f->n++];
                }
        }
        for (size_t i = 0; i < f->n; i++)
                if (strcmp(f->items[i].label, OTHER) == 0)
                        return &f->items[i];
        /* Only "other" is ever added beyond METRICS_MAX_LABELS, so there is room for it. */
        f->items[f->n] = (struct labelled){ .label = OTHER, .owned = false };
        return &f->items[f->n++];
}

void metrics_job_done(metrics *m, const char *pipeline, double seconds)
{
        struct labelled *l = find(&m->done, pipeline);

        /* A clock step can make a duration negative; it must not break the histogram. */
        if (!isfinite(seconds) || seconds < 0)
                seconds = 0;
        l->count++;
        l->sum += seconds;
        for (size_t i = 0; i < N_BUCKETS; i++)
                if (seconds <= buckets[i])
                        l->bucket[i]++;
}

void metrics_job_failed(metrics *m, const char *reason)
{
        find(&m->failed, reason)->count++;
}

void metrics_worker_restart(metrics *m, const char *why)
{
        find(&m->restarts, why)->count++;
}

void metrics_fence_refused(metrics *m, const char *step)
{
        find(&m->fenced, step)->count++;
}

void metrics_lease_rescued(metrics *m)
{
        m->rescued++;
}

/* Writes s as a Prometheus label value: backslash, double quote and newline escaped. */
static void label(FILE *f, const char *s)
{
        for (; s && *s; s++) {
                if (*s == '\\' || *s == '"')
                        fprintf(f, "\\%c", *s);
                else if (*s == '\n')
                        fputs("\\n", f);
                else
                        fputc(*s, f);
        }
}

/* Writes `name{` and, on a node of a cluster, its node label and a comma when more labels
 * follow (more) or the closing brace when not; on one node `name{` only when more follow. */
static void series(FILE *f, const char *name, const struct metrics_gauges *g, bool more)
{
        fputs(name, f);
        if (!g->node) {
                if (more)
                        fputc('{', f);
                return;
        }
        fputs("{node=\"", f);
        label(f, g->node);
        fputs(more ? "\"," : "\"}", f);
}

/* One series of `name` per label of fam: name{[node,]key="label"} count. */
static void family_render(FILE *f, const struct metrics_gauges *g, const char *name,
                          const char *key, const struct family *fam)
{
        for (size_t i = 0; i < fam->n; i++) {
                series(f, name, g, true);
                fprintf(f, "%s=\"", key);
                label(f, fam->items[i].label);
                fprintf(f, "\"} %llu\n", (unsigned long long)fam->items[i].count);
        }
}

int metrics_render(const metrics *m, const struct metrics_gauges *g, FILE *f)
{
        uint64_t starting = g->workers_total > g->workers_busy + g->workers_idle
                                    ? g->workers_total - g->workers_busy - g->workers_idle
                                    : 0;

        fputs("# HELP imgd_jobs Jobs in the ledger by state.\n# TYPE imgd_jobs gauge\n", f);
        for (int i = 0; i < _JOB_STATE_MAX && !g->ledger_unread; i++)
                fprintf(f, "imgd_jobs{state=\"%s\"} %llu\n", job_state_name(i),
                        (unsigned long long)g->jobs_by_state[i]);

        fputs("# HELP imgd_jobs_processed_total Jobs completed since start, by pipeline.\n"
              "# TYPE imgd_jobs_processed_total counter\n",
              f);
        family_render(f, g, "imgd_jobs_processed_total", "pipeline", &m->done);

        fputs("# HELP imgd_jobs_failed_total Failed attempts since start, by reason.\n"
              "# TYPE imgd_jobs_failed_total counter\n",
              f);
        family_render(f, g, "imgd_jobs_failed_total", "reason", &m->failed);

        fputs("# HELP imgd_job_duration_seconds Processing time from claim to done.\n"
              "# TYPE imgd_job_duration_seconds histogram\n",
              f);
        for (size_t i = 0; i < m->done.n; i++) {
                const struct labelled *l = &m->done.items[i];
                for (size_t b = 0; b < N_BUCKETS; b++) {
                        series(f, "imgd_job_duration_seconds_bucket", g, true);
                        fputs("pipeline=\"", f);
                        label(f, l->label);
                        fprintf(f, "\",le=\"%g\"} %llu\n", buckets[b],
                                (unsigned long long)l->bucket[b]);
                }
                series(f, "imgd_job_duration_seconds_bucket", g, true);
                fputs("pipeline=\"", f);
                label(f, l->label);
                fprintf(f, "\",le=\"+Inf\"} %llu\n", (unsigned long long)l->count);
                series(f, "imgd_job_duration_seconds_sum", g, true);
                fputs("pipeline=\"", f);
                label(f, l->label);
                fprintf(f, "\"} %.6f\n", l->sum);
                series(f, "imgd_job_duration_seconds_count", g, true);
                fputs("pipeline=\"", f);
                label(f, l->label);
                fprintf(f, "\"} %llu\n", (unsigned long long)l->count);
        }

        fputs("# HELP imgd_worker_restarts_total Worker processes replaced, by cause.\n"
              "# TYPE imgd_worker_restarts_total counter\n",
              f);
        family_render(f, g, "imgd_worker_restarts_total", "cause", &m->restarts);

        fputs("# HELP imgd_fence_refused_total Steps of jobs refused to this node since start "
              "because its claim was lost (its lease lapsed and another node took the job), by "
              "step.\n"
              "# TYPE imgd_fence_refused_total counter\n",
              f);
        family_render(f, g, "imgd_fence_refused_total", "step", &m->fenced);
        fputs("# HELP imgd_leases_rescued_total Running jobs whose lease lapsed (their node "
              "silent) rescued by this node since start.\n"
              "# TYPE imgd_leases_rescued_total counter\n",
              f);
        series(f, "imgd_leases_rescued_total", g, false);
        fprintf(f, " %llu\n", (unsigned long long)m->rescued);

        fputs("# HELP imgd_oldest_queued_seconds Age of the oldest queued job.\n"
              "# TYPE imgd_oldest_queued_seconds gauge\n",
              f);
        if (!g->ledger_unread)
                fprintf(f, "imgd_oldest_queued_seconds %.3f\n",
                        (double)g->oldest_queued_age_usec / (double)USEC_PER_SEC);
        fprintf(f,
                "# HELP imgd_breaker_state Circuit breaker: 0 closed, 1 half-open, 2 open.\n"
                "# TYPE imgd_breaker_state gauge\n"
                "imgd_breaker_state %d\n"
                "# HELP imgd_degradation_level 0 full, 1 reduced, 2 essential, 3 paused.\n"
                "# TYPE imgd_degradation_level gauge\n"
                "imgd_degradation_level %d\n"
                "# HELP imgd_health_score Overall health, 0 to 100.\n"
                "# TYPE imgd_health_score gauge\n"
                "imgd_health_score %.1f\n"
                "# HELP imgd_resident_memory_bytes Resident memory of the daemon process.\n"
                "# TYPE imgd_resident_memory_bytes gauge\n"
                "imgd_resident_memory_bytes %llu\n"
                "# HELP imgd_workers Worker processes by state: busy (with a job), idle (ready "
                "for one), starting (started or being replaced); they sum to the pool's size.\n"
                "# TYPE imgd_workers gauge\n",
                g->breaker_state, g->degradation_level, g->health_score,
                (unsigned long long)g->rss_bytes);
        series(f, "imgd_workers", g, true);
        fprintf(f, "state=\"busy\"} %llu\n", (unsigned long long)g->workers_busy);
        series(f, "imgd_workers", g, true);
        fprintf(f, "state=\"idle\"} %llu\n", (unsigned long long)g->workers_idle);
        series(f, "imgd_workers", g, true);
        fprintf(f, "state=\"starting\"} %llu\n", (unsigned long long)starting);
        fputs("# HELP imgd_build_info The version of imgd, as a label; always 1.\n"
              "# TYPE imgd_build_info gauge\n",
              f);
        series(f, "imgd_build_info", g, true);
        fprintf(f, "version=\"%s\"} 1\n", IMGD_VERSION);
        if (g->node) {
                fputs("# HELP imgd_node_jobs_running Jobs running on this node of the cluster "
                      "(in its workers or being published).\n"
                      "# TYPE imgd_node_jobs_running gauge\n",
                      f);
                series(f, "imgd_node_jobs_running", g, false);
                fprintf(f, " %llu\n", (unsigned long long)g->node_jobs_running);
                fputs("# HELP imgd_cluster_nodes Nodes of the cluster by the nodes table: "
                      "alive (a heartbeat within the lease, by the database's clock) or "
                      "lapsed.\n"
                      "# TYPE imgd_cluster_nodes gauge\n",
                      f);
                if (!g->ledger_unread)
                        fprintf(f,
                                "imgd_cluster_nodes{state=\"alive\"} %llu\n"
                                "imgd_cluster_nodes{state=\"lapsed\"} %llu\n",
                                (unsigned long long)g->nodes_alive,
                                (unsigned long long)g->nodes_lapsed);
        }
        fputs("# HELP imgd_alert Alert conditions, 1 while active (imgctl status then exits 1).\n"
              "# TYPE imgd_alert gauge\n",
              f);
        for (int a = 0; a < _HEALTH_ALERT_MAX; a++)
                fprintf(f, "imgd_alert{alert=\"%s\"} %d\n", health_alert_name(a),
                        (g->alerts >> a) & 1 ? 1 : 0);
        fputs("# HELP imgd_drain_seconds Predicted time to finish the backlog at the recent "
              "rate (+Inf: not draining).\n"
              "# TYPE imgd_drain_seconds gauge\n",
              f);
        if (g->drain_usec == HEALTH_DRAIN_NEVER)
                fputs("imgd_drain_seconds +Inf\n", f);
        else
                fprintf(f, "imgd_drain_seconds %.3f\n",
                        (double)g->drain_usec / (double)USEC_PER_SEC);
        fprintf(f,
                "# HELP imgd_error_ratio Failed share of the attempts of the last 5 minutes.\n"
                "# TYPE imgd_error_ratio gauge\n"
                "imgd_error_ratio %.4f\n"
                "# HELP imgd_jobs_finished_per_second Jobs finished (done or dead) per second, "
                "recently.\n"
                "# TYPE imgd_jobs_finished_per_second gauge\n"
                "imgd_jobs_finished_per_second %.4f\n",
                g->error_rate, g->finished_per_s);
        fprintf(f,
                "# HELP imgd_intake_retry_pending Uploads whose intake failed for a transient "
                "reason (ledger disk full, out of descriptors), waiting to be taken in again.\n"
                "# TYPE imgd_intake_retry_pending gauge\n"
                "imgd_intake_retry_pending %llu\n"
                "# HELP imgd_unwatched_folders Folders that could not be watched (inotify watch "
                "limit), scanned periodically instead.\n"
                "# TYPE imgd_unwatched_folders gauge\n"
                "imgd_unwatched_folders %llu\n"
                "# HELP imgd_background_jobs_remaining Background jobs (reconciliation, degraded "
                "jobs rendered again) queued, running or waiting for a retry.\n"
                "# TYPE imgd_background_jobs_remaining gauge\n",
                (unsigned long long)g->intake_retry_pending,
                (unsigned long long)g->unwatched_folders);
        if (!g->ledger_unread)
                fprintf(f, "imgd_background_jobs_remaining %llu\n",
                        (unsigned long long)g->background_remaining);
        return ferror(f) ? -EIO : 0;
}
