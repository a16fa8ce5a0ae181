/* SPDX-License-Identifier: MIT */
/*
 * health.c - the health score, the degradation level with its hysteresis, and what a level
 * does to a variant; see health.h for the levels, the transitions and the defaults. No I/O,
 * no allocation after health_new().
 */
#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "shared/health.h"
#include "shared/macro.h"
#include "shared/string-table.h"
#include "shared/time-util.h"

struct health {
        struct health_config cfg;
        enum health_level level;
        bool recovering; /* every sample since below_since_usec was below level's thresholds */
        uint64_t below_since_usec; /* when recovering: the start of the wait for the next step */
        char reason[HEALTH_REASON_MAX];
};

void health_config_init(struct health_config *c)
{
        *c = (struct health_config){
                .reduced = { .queued = 500,
                             .oldest_age_usec = 5 * USEC_PER_MINUTE,
                             .memory_pressure = 0.85,
                             .error_rate = 0.25 },
                .essential = { .queued = 2000,
                               .oldest_age_usec = 15 * USEC_PER_MINUTE,
                               .memory_pressure = 0.92,
                               .error_rate = 0.5 },
                .paused = { .queued = 10000,
                            .oldest_age_usec = 60 * USEC_PER_MINUTE,
                            .memory_pressure = 0.97,
                            .error_rate = 0.8 },
                .recover_usec = USEC_PER_MINUTE,
        };
}

/* The thresholds of a level other than HEALTH_FULL. */
static const struct health_thresholds *thresholds(const struct health_config *c,
                                                  enum health_level l)
{
        switch (l) {
        case HEALTH_REDUCED:
                return &c->reduced;
        case HEALTH_ESSENTIAL:
                return &c->essential;
        case HEALTH_PAUSED:
                return &c->paused;
        case HEALTH_FULL:
        case _HEALTH_LEVEL_MAX:
                break;
        }
        assert(!"no thresholds for this level");
        return NULL;
}

static bool thresholds_valid(const struct health_thresholds *lo, const struct health_thresholds *hi)
{
        /* Written so that NaN is refused. */
        return lo->queued > 0 && lo->oldest_age_usec > 0 && lo->memory_pressure > 0 &&
               lo->error_rate > 0 && hi->queued >= lo->queued &&
               hi->oldest_age_usec >= lo->oldest_age_usec &&
               hi->memory_pressure >= lo->memory_pressure && hi->error_rate >= lo->error_rate;
}

static bool config_valid(const struct health_config *c)
{
        return thresholds_valid(&c->reduced, &c->essential) &&
               thresholds_valid(&c->essential, &c->paused) &&
               thresholds_valid(&c->paused, &c->paused);
}

int health_new(const struct health_config *cfg, health **ret)
{
        struct health_config defaults;
        health *h;

        if (!cfg) {
                health_config_init(&defaults);
                cfg = &defaults;
        }
        if (!config_valid(cfg))
                return -EINVAL;
        h = calloc(1, sizeof *h);
        if (!h)
                return -ENOMEM;
        h->cfg = *cfg;
        h->level = HEALTH_FULL;
        *ret = h;
        return 0;
}

health *health_free(health *h)
{
        free(h);
        return NULL;
}

/* A ratio input as used here: negative and NaN become 0. */
static double ratio(double v)
{
        return v > 0 ? v : 0;
}

/* The bits of the inputs at or above the thresholds of level l. */
enum {
        IN_QUEUED = 1u << 0,
        IN_AGE = 1u << 1,
        IN_MEMORY = 1u << 2,
        IN_ERRORS = 1u << 3,
};

static unsigned crossed(const struct health_config *c, const struct health_inputs *in,
                        enum health_level l)
{
        const struct health_thresholds *t = thresholds(c, l);
        unsigned bits = 0;

        if (in->queued >= t->queued)
                bits |= IN_QUEUED;
        if (in->oldest_queued_age_usec >= t->oldest_age_usec)
                bits |= IN_AGE;
        if (ratio(in->memory_pressure) >= t->memory_pressure)
                bits |= IN_MEMORY;
        if (ratio(in->error_rate) >= t->error_rate)
                bits |= IN_ERRORS;
        return bits;
}

/* The worst level whose thresholds the inputs reach. */
static enum health_level target_level(const struct health_config *c, const struct health_inputs *in)
{
        for (enum health_level l = HEALTH_PAUSED; l > HEALTH_FULL; l--)
                if (crossed(c, in, l))
                        return l;
        return HEALTH_FULL;
}

/* "250 ms", "90 s", "7 min", "3 h": the largest unit that leaves at least 2 of it, rounded down. */
static void format_duration(char *buf, size_t size, uint64_t usec)
{
        if (usec < 2 * USEC_PER_SEC)
                snprintf(buf, size, "%" PRIu64 " ms", usec / USEC_PER_MSEC);
        else if (usec < 2 * USEC_PER_MINUTE)
                snprintf(buf, size, "%" PRIu64 " s", usec / USEC_PER_SEC);
        else if (usec < 120 * USEC_PER_MINUTE)
                snprintf(buf, size, "%" PRIu64 " min", usec / USEC_PER_MINUTE);
        else
                snprintf(buf, size, "%" PRIu64 " h", usec / (60 * USEC_PER_MINUTE));
}

/* Appends to h->reason, with "; " before all but the first part; cuts at the end. */
_printf_(2, 3) static void reason_append(health *h, const char *fmt, ...)
{
        size_t n = strlen(h->reason);
        va_list ap;

        if (n > 0 && n + 2 < sizeof h->reason) {
                memcpy(h->reason + n, "; ", 3);
                n += 2;
        }
        va_start(ap, fmt);
        vsnprintf(h->reason + n, sizeof h->reason - n, fmt, ap);
        va_end(ap);
}

/* h->reason for holding level l (not FULL) because of inputs `in`. */
static void describe_level(health *h, const struct health_inputs *in, enum health_level l)
{
        const struct health_thresholds *t = thresholds(&h->cfg, l);
        const char *name = health_level_name(l);
        unsigned bits = crossed(&h->cfg, in, l);
        char a[32], b[32];

        h->reason[0] = '\0';
        if (bits & IN_QUEUED)
                reason_append(h, "%" PRIu64 " jobs queued (%s at %" PRIu64 ")", in->queued, name,
                              t->queued);
        if (bits & IN_AGE) {
                format_duration(a, sizeof a, in->oldest_queued_age_usec);
                format_duration(b, sizeof b, t->oldest_age_usec);
                reason_append(h, "oldest queued job %s old (%s at %s)", a, name, b);
        }
        if (bits & IN_MEMORY)
                reason_append(h, "memory pressure %.0f%% (%s at %.0f%%)",
                              100 * ratio(in->memory_pressure), name, 100 * t->memory_pressure);
        if (bits & IN_ERRORS)
                reason_append(h, "error rate %.0f%% (%s at %.0f%%)", 100 * ratio(in->error_rate),
                              name, 100 * t->error_rate);
}

static void describe_recovery(health *h, uint64_t now_usec)
{
        char a[32], b[32];

        format_duration(a, sizeof a,
                        now_usec >= h->below_since_usec ? now_usec - h->below_since_usec : 0);
        format_duration(b, sizeof b, h->cfg.recover_usec);
        snprintf(h->reason, sizeof h->reason,
                 "recovering from %s: below its thresholds for %s of %s",
                 health_level_name(h->level), a, b);
}

enum health_level health_update(health *h, const struct health_inputs *in, uint64_t now_usec)
{
        enum health_level target = target_level(&h->cfg, in);

        if (target >= h->level) {
                /* Worse at once; at the same level the wait for recovery starts over. */
                h->level = target;
                h->recovering = false;
                h->below_since_usec = 0;
                if (target == HEALTH_FULL)
                        h->reason[0] = '\0';
                else
                        describe_level(h, in, target);
                goto done;
        }

        if (!h->recovering) {
                h->recovering = true;
                h->below_since_usec = now_usec;
        }
        if (now_usec >= h->below_since_usec &&
            now_usec - h->below_since_usec >= h->cfg.recover_usec) {
                /* One level better; the next step needs its own recover_usec. */
                h->level--;
                h->recovering = target < h->level;
                h->below_since_usec = h->recovering ? now_usec : 0;
        }
        if (h->recovering)
                describe_recovery(h, now_usec);
        else if (h->level == HEALTH_FULL)
                h->reason[0] = '\0';
        else
                describe_level(h, in, h->level);
done:
        assert(health_check(h));
        return h->level;
}

enum health_level health_level(const health *h)
{
        return h->level;
}

static const char *const health_level_table[_HEALTH_LEVEL_MAX] = {
        [HEALTH_FULL] = "full",
        [HEALTH_REDUCED] = "reduced",
        [HEALTH_ESSENTIAL] = "essential",
        [HEALTH_PAUSED] = "paused",
};

DEFINE_STRING_TABLE_LOOKUP(health_level, enum health_level, NULL)

const char *health_reason(const health *h)
{
        return h->reason;
}

uint64_t health_recover_at_usec(const health *h)
{
        return h->recovering ? h->below_since_usec + h->cfg.recover_usec : 0;
}

/* 0 at 0, 1/3 at r, 2/3 at e, 1 at p and above, linear in between (r <= e <= p, r > 0). */
static double pressure(double v, double r, double e, double p)
{
        if (!(v > 0))
                return 0;
        if (v >= p)
                return 1;
        if (v >= e) /* so p > e */
                return 2.0 / 3 + (v - e) / (p - e) / 3;
        if (v >= r) /* so e > r */
                return 1.0 / 3 + (v - r) / (e - r) / 3;
        return v / r / 3;
}

double health_score(const struct health_inputs *in, const struct health_config *cfg)
{
        const struct health_thresholds *r = &cfg->reduced, *e = &cfg->essential, *p = &cfg->paused;
        double worst = 0;

        worst = fmax(worst, pressure((double)in->queued, (double)r->queued, (double)e->queued,
                                     (double)p->queued));
        worst = fmax(worst, pressure((double)in->oldest_queued_age_usec, (double)r->oldest_age_usec,
                                     (double)e->oldest_age_usec, (double)p->oldest_age_usec));
        worst = fmax(worst, pressure(in->memory_pressure, r->memory_pressure, e->memory_pressure,
                                     p->memory_pressure));
        worst = fmax(worst, pressure(in->error_rate, r->error_rate, e->error_rate, p->error_rate));
        return 100 * (1 - worst);
}

unsigned health_quality(unsigned quality, enum health_level l)
{
        unsigned q;

        if (l == HEALTH_FULL)
                return quality;
        q = (unsigned)(((uint64_t)quality * HEALTH_QUALITY_FACTOR + 50) / 100);
        if (q < HEALTH_QUALITY_MIN)
                q = HEALTH_QUALITY_MIN;
        return q < quality ? q : quality;
}

int health_effort(int effort, enum health_level l)
{
        return l == HEALTH_FULL ? effort : HEALTH_EFFORT_FASTEST;
}

bool health_variant_enabled(bool essential, enum health_level l)
{
        switch (l) {
        case HEALTH_FULL:
        case HEALTH_REDUCED:
                return true;
        case HEALTH_ESSENTIAL:
        case HEALTH_PAUSED:
                return essential;
        case _HEALTH_LEVEL_MAX:
                break;
        }
        return false;
}

unsigned health_max_running(unsigned workers, enum health_level l)
{
        if (l == HEALTH_PAUSED && workers > HEALTH_PAUSED_RUNNING)
                return HEALTH_PAUSED_RUNNING;
        return workers;
}

bool health_check(const health *h)
{
        if (!h || (unsigned)h->level >= _HEALTH_LEVEL_MAX || !config_valid(&h->cfg))
                return false;
        if (h->recovering && h->level == HEALTH_FULL)
                return false;
        if (memchr(h->reason, '\0', sizeof h->reason) == NULL)
                return false;
        return (h->level == HEALTH_FULL) == (h->reason[0] == '\0');
}

/* ---- alerts ------------------------------------------------------------------------------ */

void health_alerts_config_init(struct health_alerts_config *c)
{
        *c = (struct health_alerts_config){
                .error_rate = 0.10,
                .queued = 1000,
                .oldest_usec = 10 * USEC_PER_MINUTE,
                .drain_usec = 60 * USEC_PER_MINUTE,
                .breaker = true,
                .degraded = true,
        };
}

uint64_t health_drain_usec(uint64_t backlog, double per_s)
{
        double usec;

        if (backlog == 0)
                return 0;
        if (!(per_s > 0))
                return HEALTH_DRAIN_NEVER;
        usec = (double)backlog / per_s * (double)USEC_PER_SEC;
        return usec >= (double)(HEALTH_DRAIN_NEVER - 1) ? HEALTH_DRAIN_NEVER - 1 : (uint64_t)usec;
}

_printf_(3, 4) static void alert_set(struct health_alert_report *r, enum health_alert a,
                                     const char *fmt, ...)
{
        va_list ap;

        r->active |= 1u << a;
        va_start(ap, fmt);
        vsnprintf(r->text[a], sizeof r->text[a], fmt, ap);
        va_end(ap);
}

void health_alerts_evaluate(const struct health_alert_inputs *in,
                            const struct health_alerts_config *c, struct health_alert_report *ret)
{
        const struct health_inputs *h = &in->health;
        char a[32], b[32], w[32];
        double rate = ratio(h->error_rate);

        memset(ret, 0, sizeof *ret);
        ret->drain_usec = health_drain_usec(in->backlog, in->finished_per_s);

        if (c->error_rate > 0 && rate >= c->error_rate)
                alert_set(ret, HEALTH_ALERT_ERROR_RATE,
                          "error rate %.0f%% of recent attempts (alert at %.0f%%)", rate * 100,
                          c->error_rate * 100);
        if (c->queued > 0 && h->queued >= c->queued)
                alert_set(ret, HEALTH_ALERT_QUEUED,
                          "%" PRIu64 " jobs waiting (alert at %" PRIu64 ")", h->queued, c->queued);
        if (c->oldest_usec > 0 && h->queued > 0 && h->oldest_queued_age_usec >= c->oldest_usec) {
                format_duration(a, sizeof a, h->oldest_queued_age_usec);
                format_duration(b, sizeof b, c->oldest_usec);
                alert_set(ret, HEALTH_ALERT_OLDEST, "oldest queued job waiting %s (alert at %s)", a,
                          b);
        }
        if (c->drain_usec > 0 && ret->drain_usec == HEALTH_DRAIN_NEVER) {
                if (h->queued > 0 && h->oldest_queued_age_usec >= HEALTH_STALL_USEC) {
                        format_duration(w, sizeof w, in->rate_window_usec);
                        alert_set(ret, HEALTH_ALERT_DRAIN,
                                  "backlog of %" PRIu64 " jobs is not draining: none finished "
                                  "in the last %s",
                                  in->backlog, w);
                }
        } else if (c->drain_usec > 0 && ret->drain_usec > c->drain_usec) {
                format_duration(a, sizeof a, ret->drain_usec);
                format_duration(b, sizeof b, c->drain_usec);
                alert_set(ret, HEALTH_ALERT_DRAIN,
                          "backlog of %" PRIu64 " jobs drains in about %s at %.2f jobs/s "
                          "(alert at %s)",
                          in->backlog, a, in->finished_per_s, b);
        }
        if (c->breaker && in->breaker_state && strcmp(in->breaker_state, "closed") != 0)
                alert_set(ret, HEALTH_ALERT_BREAKER, "circuit breaker %s%s%s", in->breaker_state,
                          in->breaker_reason && *in->breaker_reason ? ": " : "",
                          in->breaker_reason ? in->breaker_reason : "");
        if (c->degraded && in->level != HEALTH_FULL)
                alert_set(ret, HEALTH_ALERT_DEGRADED, "degradation level %s%s%s",
                          health_level_name(in->level) ?: "?",
                          in->level_reason && *in->level_reason ? ": " : "",
                          in->level_reason ? in->level_reason : "");
        if (in->intake_retry > 0)
                alert_set(ret, HEALTH_ALERT_INTAKE,
                          "%" PRIu64 " upload(s) could not be taken in and wait for a retry: %s",
                          in->intake_retry, in->intake_reason ? in->intake_reason : "");
        if (in->unwatched > 0) {
                char why[128];

                if (in->unwatched_error == -ENOSPC)
                        snprintf(why, sizeof why,
                                 "inotify watch limit reached (raise "
                                 "fs.inotify.max_user_watches)");
                else
                        snprintf(why, sizeof why, "%s",
                                 strerror(in->unwatched_error < 0 ? -in->unwatched_error
                                                                  : in->unwatched_error));
                alert_set(ret, HEALTH_ALERT_UNWATCHED,
                          "%" PRIu64 " folder(s) not watched%s%s%s: %s; scanned every %u s "
                          "instead",
                          in->unwatched, in->unwatched_first ? " (first: " : "",
                          in->unwatched_first ? in->unwatched_first : "",
                          in->unwatched_first ? ")" : "", why,
                          (unsigned)(in->unwatched_scan_usec / USEC_PER_SEC));
        }
        if (in->ledger_failure)
                alert_set(ret, HEALTH_ALERT_LEDGER,
                          "the job ledger cannot be written (for %.0f s): %s; no job is failed "
                          "for it: work waits and uploads are retried until it can",
                          (double)in->ledger_failing_usec / (double)USEC_PER_SEC,
                          in->ledger_failure);
        if (in->ledger_unreachable)
                alert_set(ret, HEALTH_ALERT_LEDGER_UNREACHABLE,
                          "ledger unreachable: %s (for %.0f s); nothing is claimed or published "
                          "until it is back, and uploads wait to be taken in",
                          in->ledger_unreachable,
                          (double)in->ledger_unreachable_usec / (double)USEC_PER_SEC);
}

static const char *const health_alert_table[_HEALTH_ALERT_MAX] = {
        [HEALTH_ALERT_ERROR_RATE] = "error_rate",
        [HEALTH_ALERT_QUEUED] = "queue_depth",
        [HEALTH_ALERT_OLDEST] = "queue_age",
        [HEALTH_ALERT_DRAIN] = "drain_time",
        [HEALTH_ALERT_BREAKER] = "breaker",
        [HEALTH_ALERT_DEGRADED] = "degraded",
        [HEALTH_ALERT_INTAKE] = "intake_failing",
        [HEALTH_ALERT_UNWATCHED] = "unwatched_folders",
        [HEALTH_ALERT_LEDGER] = "ledger_failing",
        [HEALTH_ALERT_LEDGER_UNREACHABLE] = "ledger_unreachable",
};

DEFINE_STRING_TABLE_LOOKUP(health_alert, enum health_alert, NULL)
