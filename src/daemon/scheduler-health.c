/* SPDX-License-Identifier: MIT */
/*
 * scheduler-health.c - how the service is doing: every outcome recorded with the circuit
 * breaker and in the rings of recent outcomes and completions (outcomes.h), the health
 * inputs sampled from the ledger, those rings and the memory pressure (meminfo.h), the
 * report of status, metrics and the STATUS= line, and the periodic work: the health timer
 * (the degradation level, and degraded jobs rendered again once health is back) and the
 * prune timer (prune.h).
 */
#include <stdio.h>
#include <string.h>

#include "daemon/meminfo.h"
#include "daemon/scheduler-private.h"
#include "shared/health.h"
#include "shared/log.h"
#include "shared/macro.h"
#include "shared/time-util.h"

#define HEALTH_CHECK_USEC (5 * USEC_PER_SEC)
#define RERENDER_BATCH 20
#define MEMINFO_USEC USEC_PER_SEC

/* Records an outcome with the breaker and logs its transitions. */
void scheduler_breaker_note(scheduler *s, enum breaker_outcome o, const char *reason)
{
        enum breaker_state before = breaker_state(s->breaker), after;

        /* Every outcome also feeds the error rate of the health score. A bad upload is the
         * input's fault, not the service's: only failures of workers and of the output side
         * count against health (permanent ones are completions). */
        outcomes_note(s->outcomes, mono_usec(),
                      o == BREAKER_WORKER_FAILURE || o == BREAKER_OUTPUT_FAILURE);

        breaker_record(s->breaker, o, reason, mono_usec());
        after = breaker_state(s->breaker);
        if (after == before)
                return;
        if (after == BREAKER_OPEN) {
                log_error("circuit breaker open, no new jobs are claimed for %.0f s: %s",
                          (double)breaker_cooldown_usec(s->breaker) / (double)USEC_PER_SEC,
                          breaker_reason(s->breaker));
                sd_event_source_set_time(s->breaker_timer, breaker_retry_at_usec(s->breaker));
                sd_event_source_set_enabled(s->breaker_timer, SD_EVENT_ONESHOT);
        } else if (after == BREAKER_CLOSED) {
                log_notice("circuit breaker closed: the probe succeeded, work resumes");
                scheduler_kick(s);
        }
}

bool scheduler_ledger_sync(scheduler *s)
{
        const char *why = ledger_unreachable(s->ledger, NULL);
        char reason[BREAKER_REASON_MAX];

        if (why) {
                bool was = breaker_held(s->breaker);

                snprintf(reason, sizeof reason, "ledger unreachable: %s", why);
                breaker_hold(s->breaker, reason);
                if (!was)
                        log_error("circuit breaker open: %s; no job is claimed until it is back",
                                  reason);
                return true;
        }
        if (breaker_held(s->breaker)) {
                breaker_release(s->breaker);
                log_notice("circuit breaker %s: the ledger is reachable again",
                           breaker_state_name(breaker_state(s->breaker)));
                scheduler_kick(s);
        }
        return false;
}

void scheduler_note_finished(scheduler *s)
{
        outcomes_note_finished(s->outcomes, mono_usec());
}

/* meminfo_pressure_read(), at most once per MEMINFO_USEC: the health score is asked for by
 * the timer and by every status request, and a client polling status should not make the
 * kernel format /proc/meminfo each time. */
static double memory_pressure(scheduler *s)
{
        uint64_t now = mono_usec();

        if (s->mem_pressure_at_usec == 0 || now - s->mem_pressure_at_usec >= MEMINFO_USEC) {
                s->mem_pressure = meminfo_pressure_read();
                s->mem_pressure_at_usec = now;
        }
        return s->mem_pressure;
}

/*
 * Samples the health inputs into *in, the jobs in every state into counts (the ledger is read
 * once for both) and, into *ret_held, how many of the queued are held. Held jobs are not in
 * in->queued: they cannot run until their watch is configured again, so no level or alert
 * can make them drain (ledger_oldest_queued() leaves them out too). Nor is background work
 * (a backfill of a million sources is planned work, not a backlog of uploads: it must not
 * degrade the renders of uploads nor raise alerts; status shows its progress apart). Returns
 * 0, or the ledger's error (the inputs then hold what was read).
 */
static int health_inputs_now(scheduler *s, bool for_level, uint64_t counts[static _JOB_STATE_MAX],
                             uint64_t *ret_held, struct health_inputs *in)
{
        uint64_t now = mono_usec(), held = 0, background = 0, waiting;
        int64_t oldest = 0;
        int r, k;

        memset(counts, 0, _JOB_STATE_MAX * sizeof counts[0]);
        r = ledger_counts(s->ledger, counts);
        k = ledger_count_held(s->ledger, &held);
        if (r >= 0 && k < 0)
                r = k;
        k = ledger_count_background_waiting(s->ledger, &background);
        if (r >= 0 && k < 0)
                r = k;
        if (held > counts[JOB_QUEUED])
                held = counts[JOB_QUEUED];
        *ret_held = held;
        waiting = counts[JOB_QUEUED] - held + counts[JOB_RETRY];
        *in = (struct health_inputs){ .queued = waiting -
                                                (background < waiting ? background : waiting) };
        k = ledger_oldest_queued(s->ledger, &oldest);
        /* For the degradation level: while the operator holds the work, nothing waits through
         * the system's fault, and after a resume waits count from the resume. (Status, metrics
         * and alerts report the plain age.) */
        if (for_level && k > 0 && oldest < s->resumed_usec)
                oldest = s->resumed_usec;
        if (k > 0 && !(for_level && s->paused) && wall_usec() > oldest)
                in->oldest_queued_age_usec = (uint64_t)(wall_usec() - oldest);
        if (r >= 0 && k < 0)
                r = k;
        in->memory_pressure = memory_pressure(s);
        /* A handful of failures is not a rate: below 10 outcomes it counts as none. */
        in->error_rate = outcomes_error_rate(s->outcomes, now);
        return r < 0 ? r : 0;
}

int scheduler_report(scheduler *s, struct scheduler_report *ret)
{
        uint64_t counts[_JOB_STATE_MAX], window = 0, now = mono_usec(), held = 0;
        struct health_inputs in;
        struct health_alert_inputs ai;
        int r;

        r = health_inputs_now(s, false, counts, &held, &in);
        (void)scheduler_ledger_sync(s);
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
                .oldest_queued_age_usec = in.oldest_queued_age_usec,
                .error_rate = in.error_rate,
                .finished_per_s = outcomes_finished_per_s(s->outcomes, now, &window),
        };
        ai = (struct health_alert_inputs){
                .health = in,
                .backlog = ret->backlog,
                .finished_per_s = ret->finished_per_s,
                .rate_window_usec = window,
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
                        ai.ledger_failing_usec = (uint64_t)(wall - since);
                ai.ledger_unreachable = ledger_unreachable(s->ledger, &since);
                if (ai.ledger_unreachable && wall > since)
                        ai.ledger_unreachable_usec = (uint64_t)(wall - since);
        }
        health_alerts_evaluate(&ai, &s->cfg->alerts, &ret->alerts);
        memcpy(ret->jobs, counts, sizeof ret->jobs);
        return r;
}

/* Hourly (and a minute after start): one batch of the prune pass (prune.h); the pass goes on
 * PRUNE_PAUSE_USEC later until it is through. */
int scheduler_on_prune_timer(sd_event_source *es, uint64_t usec, void *userdata)
{
        scheduler *s = userdata;
        uint64_t next = prune_step(&s->prune, s->ledger, s->cfg->prune_after_days, wall_usec());

        sd_event_source_set_time_relative(es, next);
        sd_event_source_set_enabled(es, SD_EVENT_ONESHOT);
        return 0;
}

/* Checked often enough to notice recovery within a quarter of recover_usec. */
uint64_t scheduler_health_interval_usec(const scheduler *s)
{
        uint64_t t = s->cfg->health.recover_usec / 4;

        return t < 200000 ? 200000 : t > HEALTH_CHECK_USEC ? HEALTH_CHECK_USEC : t;
}

int scheduler_on_health_timer(sd_event_source *es, uint64_t usec, void *userdata)
{
        scheduler *s = userdata;
        uint64_t counts[_JOB_STATE_MAX], held;
        struct health_inputs in;
        enum health_level before = health_level(s->health), after;

        (void)health_inputs_now(s, true, counts, &held, &in);
        (void)scheduler_ledger_sync(s);
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
        sd_event_source_set_time_relative(es, scheduler_health_interval_usec(s));
        sd_event_source_set_enabled(es, SD_EVENT_ONESHOT);
        return 0;
}

const char *scheduler_breaker(const scheduler *s, const char **ret_reason)
{
        if (ret_reason)
                *ret_reason = breaker_reason(s->breaker);
        return breaker_state_name(breaker_state(s->breaker));
}
