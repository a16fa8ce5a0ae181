/* SPDX-License-Identifier: MIT */
/*
 * scheduler-lease.c - this node among others on a shared ledger (PostgreSQL, issue 18):
 *
 *   heartbeat  every third of ledger.lease (on_heartbeat()): the node's row in the nodes table
 *              and the leases of every job it has claimed renewed (ledger_heartbeat()), so a
 *              lease of seconds outlives a render of minutes;
 *   rescue     after each heartbeat: every running job whose lease lapsed by the database's
 *              clock, whoever claimed it and not in this node's hands, fails its attempt as on
 *              one host (retried after a backoff, or dead), in one transaction with the check
 *              that it is still lapsed under the same token (ledger_fail_lapsed()), so that
 *              two rescuers never both rescue; staged jobs too (their staged files are
 *              another node's, and are not rolled forward). While that transaction holds the
 *              job's row, the lost claim's temporary files are removed, so that the stale node
 *              has nothing left to rename over the outputs of the claim after it;
 *   fencing    immediately before renaming a batch's files (scheduler_renew()), each job's
 *              lease is renewed under its claim's token: a claim lost meanwhile is refused
 *              (scheduler_fence_refused(): logged with the job, the node and both tokens,
 *              counted in imgd_fence_refused_total, its files removed, nothing published), as
 *              are its stage and completion (-ESTALE from the ledger).
 *
 * When a heartbeat fails (the database unreachable), the node says so once, holds its circuit
 * breaker open ("ledger unreachable: ...", scheduler_ledger_sync()), and goes on with
 * the jobs in its hands; but it publishes nothing without the renewal before it, which needs
 * the ledger: a render finished meanwhile is handed back (no attempt used) rather than
 * published on a lease that may have lapsed. When the lease has passed since the last heartbeat
 * that worked, it says that its jobs may have gone to other nodes. A heartbeat that works again
 * renews every lease of the node that no other node rescued meanwhile.
 *
 * The heartbeat is also the poll behind LISTEN/NOTIFY (cluster.h): each one kicks the claim, so
 * work whose notification was lost waits a third of the lease at most (10 s by default).
 *
 * On SQLite (one node) none of this runs: on_lease_check() in scheduler.c fails the jobs whose
 * lease expired while no worker of this process had them.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "daemon/quarantine.h"
#include "daemon/retry.h"
#include "daemon/scheduler-private.h"
#include "shared/fault.h"
#include "shared/log.h"
#include "shared/macro.h"
#include "shared/proto.h"
#include "shared/time-util.h"

const char *scheduler_cluster_node(const scheduler *s, usec_t *ret_lease_usec)
{
        if (!s->cluster)
                return NULL;
        if (ret_lease_usec)
                *ret_lease_usec = s->lease_usec;
        return s->node;
}

void scheduler_fence_refused(scheduler *s, const struct job *job, const char *step, const char *why)
{
        log_job(LOG_WARNING, LOG_JOB_CANCELLED, job->id, job->source_path, job->pipeline,
                "job %" PRId64 " %s: %s refused to node %s: its claim (fencing token %" PRId64
                ") was lost: %s; its files are removed, nothing of this attempt is published",
                job->id, job->source_path, step, s->owner, job->fence, why);
        metrics_fence_refused(s->metrics, step);
}

bool scheduler_renew(scheduler *s, struct running *list)
{
        _cleanup_free_ struct ledger_renewal *v = NULL;
        size_t n = 0, i = 0;
        char why[512];
        int r;

        if (!s->cluster)
                return true;
        for (struct running *run = list; run; run = run->next)
                n += !run->dropped;
        if (n == 0)
                return true;
        v = calloc(n, sizeof *v);
        if (!v)
                return false;
        for (struct running *run = list; run; run = run->next)
                if (!run->dropped)
                        v[i++] = (struct ledger_renewal){ .id = run->job->id,
                                                          .fence = run->job->fence };
        /* A test stalls the node here, between its stage and its fence check. */
        fault_delay("publish.before_renew");
        r = ledger_renew(s->ledger, v, n, (int64_t)s->lease_usec, wall_usec());
        i = 0;
        for (struct running *run = list; run; run = run->next) {
                struct ledger_renewal *w;

                if (run->dropped)
                        continue;
                w = &v[i++];
                if (r < 0) {
                        snprintf(why, sizeof why,
                                 "ledger: renew its lease before publishing: %s (nothing is "
                                 "published on a lease that may have lapsed)",
                                 ledger_errmsg(s->ledger));
                        scheduler_job_blocked(s, run->job, why);
                        run->dropped = true;
                } else if (w->result < 0) {
                        snprintf(why, sizeof why,
                                 "the job is %s under fencing token %" PRId64 "%s%s",
                                 job_state_name(w->state), w->now_fence,
                                 w->owner[0] ? ", lease of " : "", w->owner);
                        scheduler_fence_refused(s, run->job, "publish", why);
                        run->dropped = true;
                }
        }
        return r >= 0;
}

/* Removes the temporary files of job d's lost claim, in the directory of its outputs and
 * manifest, and in those of its staged outputs. */
static void unlink_claim_temps(const struct job_detail *d)
{
        _cleanup_free_ char *dir = strdup(d->job.output_key);
        char *slash = dir ? strrchr(dir, '/') : NULL;
        int r;

        if (slash) {
                *slash = '\0';
                r = publish_unlink_job_temps(dir, d->job.id);
                if (r < 0)
                        log_warning_errno(r,
                                          "job %" PRId64 ": remove its temporary files in %s: %m",
                                          d->job.id, dir);
        }
        for (size_t i = 0; i < d->n_outputs; i++) {
                const char *tmp = d->outputs[i].tmp_path;

                if (tmp && unlink(tmp) < 0 && errno != ENOENT)
                        log_warning_errno(errno, "job %" PRId64 ": remove %s: %m", d->job.id, tmp);
        }
}

/* Rescues job lap (lapsed): its attempt fails, in the transaction that checks it is still
 * lapsed under the same token; told as a failure of this node's would be. */
static void rescue_one(scheduler *s, const struct ledger_lapsed *lap)
{
        _cleanup_(job_detail_freep) struct job_detail *d = NULL;
        _cleanup_free_ char *msg = NULL, *moved = NULL;
        const struct job *job;
        enum retry_decision decision;
        int64_t now = wall_usec(), next = now;
        bool retry;
        json_t *extra;
        int r, k;

        r = ledger_get(s->ledger, lap->id, &d);
        if (r <= 0 || d->job.state != JOB_RUNNING || d->job.fence != lap->fence)
                return;
        job = &d->job;
        decision = retry_decide(&s->cfg->retry, job->attempts, false);
        retry = decision == RETRY_AGAIN;
        if (retry)
                next = now +
                       (int64_t)retry_backoff_usec(&s->cfg->retry, job->attempts, retry_random01());
        if (asprintf(&msg, "%slease of %s lapsed (fencing token %" PRId64 ", attempt %u): %s",
                     decision == RETRY_DEAD_EXHAUSTED ? "gave up: " : "",
                     lap->owner[0] ? lap->owner : "?", lap->fence, job->attempts,
                     lap->staged ? "staged, not published" : "no heartbeat from its node") < 0) {
                msg = NULL;
                return;
        }

        r = ledger_batch_begin(s->ledger);
        if (r < 0) {
                log_error_errno(r, "ledger: rescue job %" PRId64 ": %s", job->id,
                                ledger_errmsg(s->ledger));
                return;
        }
        k = ledger_fail_lapsed(s->ledger, job->id, lap->fence, msg, retry, next, now);
        if (k >= 0)
                /* The row is held until the commit: no claim of the job exists to lose files. */
                unlink_claim_temps(d);
        r = ledger_batch_commit(s->ledger);
        if (r < 0 || (k < 0 && k != -ESTALE)) {
                log_error_errno(r < 0 ? r : k, "ledger: rescue job %" PRId64 ": %s", job->id,
                                ledger_errmsg(s->ledger));
                return;
        }
        if (k == -ESTALE) {
                log_debug("job %" PRId64 ": not rescued: %s", job->id, ledger_errmsg(s->ledger));
                return;
        }
        log_job(retry ? LOG_WARNING : LOG_ERR, retry ? LOG_JOB_RETRY : LOG_JOB_DEAD, job->id,
                job->source_path, job->pipeline, "job %" PRId64 " %s: rescued by node %s: %s%s",
                job->id, job->source_path, s->owner, msg,
                retry ? "; retrying" : "; no attempts left");
        metrics_lease_rescued(s->metrics);
        metrics_job_failed(s->metrics, "lease");
        if (!retry) {
                scheduler_note_finished(s);
                if (job->kind == JOB_RENDER)
                        moved = quarantine_move(scheduler_find_watch(s->cfg, job->watch), job,
                                                s->cfg->limits.max_file_bytes);
        }
        extra = json_pack("{s:o, s:I}", "error", proto_string_lossy(msg), "next_at_us",
                          (json_int_t)next);
        if (extra && moved)
                json_object_set_new(extra, "quarantined", proto_string_lossy(moved));
        scheduler_emit(s, retry ? "retry" : "dead", job, extra);
}

static void rescue_lapsed(scheduler *s)
{
        _cleanup_free_ struct ledger_lapsed *v = NULL;
        size_t n = 0;
        bool any = false;
        int r;

        r = ledger_list_lapsed(s->ledger, wall_usec(), &v, &n);
        if (r < 0) {
                log_debug("ledger: list lapsed leases: %s", ledger_errmsg(s->ledger));
                return;
        }
        for (size_t i = 0; i < n; i++) {
                /* A job in this node's hands is not rescued by it: its publication renews the
                 * lease, or is refused if another node rescued it. */
                if (scheduler_has_job(s, v[i].id))
                        continue;
                rescue_one(s, &v[i]);
                any = true;
        }
        if (any)
                scheduler_kick(s);
}

static void heartbeat(scheduler *s)
{
        uint64_t sent = mono_usec();
        struct ledger_node_beat b = {
                .node = s->node,
                .owner = s->owner,
                .pid = (int64_t)getpid(),
                .started_usec = s->started_usec,
                .workers = worker_pool_size(s->pool),
                .running = scheduler_running(s),
                .version = IMGD_VERSION,
        };
        int r = ledger_heartbeat(s->ledger, &b, (int64_t)s->lease_usec, wall_usec());

        if (r >= 0) {
                if (s->beat_failing)
                        log_notice("ledger: heartbeat of node %s works again (%d leases renewed)",
                                   s->owner, r);
                s->beat_failing = s->beat_lapsed = false;
                s->beat_ok_usec = sent;
                return;
        }
        if (!s->beat_failing)
                log_warning("ledger: heartbeat of node %s failed: %s; its leases lapse %.0f s "
                            "after the last heartbeat, and nothing is published without renewing "
                            "its lease first",
                            s->owner, ledger_errmsg(s->ledger),
                            (double)s->lease_usec / (double)USEC_PER_SEC);
        s->beat_failing = true;
        if (!s->beat_lapsed && sent - s->beat_ok_usec > s->lease_usec) {
                log_error("ledger: no heartbeat of node %s for %.0f s, longer than its lease: "
                          "other nodes may have taken its %u running jobs; their results will be "
                          "refused if so",
                          s->owner, (double)(sent - s->beat_ok_usec) / (double)USEC_PER_SEC,
                          scheduler_running(s));
                s->beat_lapsed = true;
        }
}

static int on_heartbeat(sd_event_source *es, uint64_t usec, void *userdata)
{
        scheduler *s = userdata;

        heartbeat(s);
        (void)scheduler_ledger_sync(s);
        if (!s->beat_failing)
                rescue_lapsed(s);
        /* The poll behind LISTEN/NOTIFY (cluster.h): work another node made claimable whose
         * notification was lost (a connection made again) is claimed by the next beat. */
        scheduler_kick(s);
        sd_event_source_set_time_relative(es, s->beat_interval_usec);
        sd_event_source_set_enabled(es, SD_EVENT_ONESHOT);
        return 0;
}

int scheduler_lease_start(scheduler *s)
{
        int r;

        if (!s->cluster)
                return 0;
        s->beat_ok_usec = mono_usec();
        /* The first at once: the node is in the table from its start. */
        r = sd_event_add_time_relative(s->event, &s->heartbeat, CLOCK_MONOTONIC, 0, 0, on_heartbeat,
                                       s);
        if (r < 0)
                return r;
        /* Before the claims and publications of the same turn of the loop. */
        return sd_event_source_set_priority(s->heartbeat, SD_EVENT_PRIORITY_IMPORTANT);
}

void scheduler_lease_stop(scheduler *s)
{
        s->heartbeat = sd_event_source_disable_unref(s->heartbeat);
}
