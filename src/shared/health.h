/* SPDX-License-Identifier: MIT */
/*
 * health.h - graceful degradation: from four inputs (queue depth, age of the oldest queued
 * job, memory pressure, error rate) a health score and a degradation level, and what each
 * level means for a variant (quality, encoder effort, whether it is rendered at all). A pure
 * state machine: no I/O, no timers, no logging; the caller samples the inputs, passes the
 * monotonic time (microseconds) to health_update(), and logs a change of level by comparing
 * health_level() before and after.
 *
 *            health_update(): any input at or above a worse level's threshold
 *            (straight to the worst level crossed, e.g. full -> paused in one call)
 *      +------+ ---> +---------+ ---> +-----------+ ---> +--------+
 *      | FULL |      | REDUCED |      | ESSENTIAL |      | PAUSED |
 *      +------+ <--- +---------+ <--- +-----------+ <--- +--------+
 *            health_update(): every input below the current level's thresholds
 *            for recover_usec; one level per step, and the next step needs another
 *            recover_usec below the new level's thresholds
 *
 * A level is entered when any input is at or above that level's threshold. It is left for
 * the level below only after every call to health_update() for recover_usec has seen all the
 * inputs below its thresholds (a call at or above them restarts the wait). Recovery is
 * stepwise: paused -> essential -> reduced -> full takes at least 3 * recover_usec.
 *
 * What the levels mean (the caller acts on them): REDUCED renders every variant at a lower
 * quality (health_quality) and the fastest encoder effort (health_effort); ESSENTIAL also
 * renders only the variants marked essential (health_variant_enabled); PAUSED renders as
 * ESSENTIAL does, but only health_max_running() jobs at a time (a trickle, the oldest
 * first): the backlog still drains, so a level entered because the queue is long or old can
 * always be left again. A level that claimed nothing could only be left by the queue
 * shrinking, which nothing would do.
 *
 * Defaults (health_config_init), a level being entered when any one is reached:
 *
 *      level       queued   oldest queued   memory pressure   error rate
 *      reduced        500   5 min           0.85              0.25
 *      essential     2000   15 min          0.92              0.50
 *      paused       10000   60 min          0.97              0.80
 *
 *      recover_usec = 60 s
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include "shared/time-util.h"

#define HEALTH_REASON_MAX 512    /* bytes of health_reason(), with its NUL; longer is cut */
#define HEALTH_QUALITY_FACTOR 85 /* percent of the configured quality, from REDUCED on */
#define HEALTH_QUALITY_MIN 40    /* ...but no lower than this (nor above the configured one) */
#define HEALTH_EFFORT_FASTEST 0  /* libvips' fastest effort for webp (0..6) and avif (0..9) */

/* The numbering is the gauge's in metrics.h: 0 full, 1 reduced, 2 essential, 3 paused. */
enum health_level {
        HEALTH_FULL,
        HEALTH_REDUCED,
        HEALTH_ESSENTIAL,
        HEALTH_PAUSED,
        _HEALTH_LEVEL_MAX,
};

struct health_inputs {
        uint64_t queued;                 /* jobs waiting to be claimed (held ones are not: they
                                          * cannot run until their watch is configured again) */
        uint64_t oldest_queued_age_usec; /* how long the oldest of them has waited */
        double memory_pressure; /* 0..1, e.g. 1 - MemAvailable/MemTotal, or PSI some avg10/100 */
        double error_rate;      /* failures / completions over the recent window, 0..1 */
};

/*
 * The values at or above which a level is entered. Within a config each field must be > 0
 * and must not decrease from reduced to essential to paused. To leave an input out, set its
 * thresholds out of reach (UINT64_MAX, or above 1 for the two ratios).
 */
struct health_thresholds {
        uint64_t queued;
        uint64_t oldest_age_usec;
        double memory_pressure;
        double error_rate;
};

struct health_config {
        struct health_thresholds reduced, essential, paused;
        uint64_t recover_usec; /* time below a level's thresholds before it is left; 0: at once */
};

typedef struct health health;

/* Fills c with the defaults in the table above. */
void health_config_init(struct health_config *c);

/*
 * A new health state at HEALTH_FULL with a copy of cfg (NULL: the defaults). Returns 0,
 * -EINVAL if a threshold is not > 0 or decreases from one level to the next, or -ENOMEM;
 * *ret is written only on success.
 */
int health_new(const struct health_config *cfg, health **ret);
/* Accepts NULL; returns NULL. */
health *health_free(health *h);

/*
 * Feeds one sample of the inputs taken at now_usec and returns the level after it: worse at
 * once when a worse level's threshold is reached, better by one level once the inputs have
 * stayed below the current level's thresholds for recover_usec (see above). Negative and NaN
 * ratios count as 0.
 */
enum health_level health_update(health *h, const struct health_inputs *in, uint64_t now_usec);

enum health_level health_level(const health *h);
/* "full", "reduced", "essential", "paused"; NULL for a value out of range. */
const char *health_level_name(enum health_level l);
/* The level named, or -EINVAL. */
int health_level_from_name(const char *name);

/*
 * What holds the level, as of the last health_update(): each input at or above the level's
 * threshold, "; "-separated ("oldest queued job 7 min old (reduced at 5 min)", "2400 jobs
 * queued (essential at 2000)", "memory pressure 93% (essential at 92%)", "error rate 30%
 * (reduced at 25%)"), or, while waiting to step down, "recovering from essential: below its
 * thresholds for 20 s of 60 s". "" at HEALTH_FULL. Owned by h, valid until the next
 * health_update().
 */
const char *health_reason(const health *h);

/* While waiting to step down: when the next step happens if the inputs stay below. Else 0. */
uint64_t health_recover_at_usec(const health *h);

/*
 * 0..100, 100 = healthy, from the inputs alone (no hysteresis). Each input's pressure is 0
 * at zero, 1/3 at its reduced threshold, 2/3 at essential and 1 at paused and above, linear
 * in between; the score is 100 * (1 - the largest pressure). So a score above 66.7 means
 * every input is below its reduced threshold, 33.3 < score <= 66.7 that the worst one is in
 * the reduced band, 0 < score <= 33.3 in the essential band, and 0 that one is at paused.
 * Non-increasing in every input; 100 when all are 0.
 */
double health_score(const struct health_inputs *in, const struct health_config *cfg);

/*
 * The quality to encode with at level l: the configured `quality` at HEALTH_FULL; from
 * HEALTH_REDUCED on, quality * HEALTH_QUALITY_FACTOR / 100 rounded to nearest, at least
 * HEALTH_QUALITY_MIN but never above `quality` itself (80 -> 68, 45 -> 40, 30 -> 30).
 */
unsigned health_quality(unsigned quality, enum health_level l);

/* The encoder effort at level l: `effort` at HEALTH_FULL, HEALTH_EFFORT_FASTEST from reduced on. */
int health_effort(int effort, enum health_level l);

/*
 * Whether a variant is rendered at level l: every variant at full and reduced, only the
 * essential ones at HEALTH_ESSENTIAL and HEALTH_PAUSED.
 */
bool health_variant_enabled(bool essential, enum health_level l);

#define HEALTH_PAUSED_RUNNING 1 /* jobs in flight at HEALTH_PAUSED: the trickle */

/*
 * How many jobs may be in flight at level l with `workers` workers: all of them below
 * HEALTH_PAUSED, HEALTH_PAUSED_RUNNING (but no more than `workers`) at HEALTH_PAUSED.
 */
unsigned health_max_running(unsigned workers, enum health_level l);

/* The invariants of h, for assert(health_check(h)). */
bool health_check(const health *h);

/* ---- alerts ------------------------------------------------------------------------------
 *
 * Conditions an operator is paged for, evaluated from one sample (no hysteresis: an alert is
 * active exactly while its condition holds). This is the one list of them: `imgctl status`
 * lists the active ones and exits non-zero while any is, metrics carry one imgd_alert gauge
 * per kind, the STATUS= line names them. Defaults (health_alerts_config_init), 0 (or false)
 * turning one off:
 *
 *      error_rate   0.10    failed share of the recent attempts (the health input above)
 *      queued       1000    jobs waiting (queued and retry)
 *      oldest_usec    10 min  age of the oldest queued job
 *      drain_usec     60 min  predicted time to finish the backlog at the recent rate, or
 *                           a backlog that is not draining at all (see health_drain_usec)
 *      breaker      true    the circuit breaker is not closed
 *      degraded     true    the degradation level is not full
 *
 * and four that are always on, about uploads that intake could not take in the usual way
 * and a ledger that cannot be written or reached:
 *
 *      intake_failing      uploads wait for a retry after a transient failure (EMFILE, a
 *                          full ledger disk, ...)
 *      unwatched_folders   folders that could not be watched (the inotify watch limit), found
 *                          by a periodic scan instead
 *      ledger_failing      the file system refuses the ledger's writes (ledger_write_failure())
 *      ledger_unreachable  the ledger's server cannot be reached (PostgreSQL stopped, failing
 *                          over: ledger_unreachable()); never on SQLite
 */
enum health_alert {
        HEALTH_ALERT_ERROR_RATE,
        HEALTH_ALERT_QUEUED,
        HEALTH_ALERT_OLDEST,
        HEALTH_ALERT_DRAIN,
        HEALTH_ALERT_BREAKER,
        HEALTH_ALERT_DEGRADED,
        HEALTH_ALERT_INTAKE,
        HEALTH_ALERT_UNWATCHED,
        HEALTH_ALERT_LEDGER,
        HEALTH_ALERT_LEDGER_UNREACHABLE,
        _HEALTH_ALERT_MAX,
};

#define HEALTH_ALERT_TEXT_MAX 512 /* bytes of one alert's message, with its NUL */
/* A backlog with no job finished this long, its oldest job waiting this long, is stalled. */
#define HEALTH_STALL_USEC (60 * USEC_PER_SEC)
#define HEALTH_DRAIN_NEVER UINT64_MAX

struct health_alerts_config {
        double error_rate;
        uint64_t queued;
        uint64_t oldest_usec;
        uint64_t drain_usec;
        bool breaker;
        bool degraded;
};

struct health_alert_inputs {
        struct health_inputs health; /* queued, oldest_queued_age_usec, error_rate are used */
        uint64_t backlog;            /* jobs still to finish: queued, retry and running, not held */
        double finished_per_s;       /* jobs finished (done or dead) per second, recently */
        uint64_t rate_window_usec;   /* what "recently" is, for the message */
        const char *breaker_state;   /* "closed", "half-open", "open" */
        const char *breaker_reason;  /* may be NULL or "" */
        enum health_level level;
        const char *level_reason;         /* health_reason(); may be NULL or "" */
        uint64_t intake_retry;            /* uploads waiting to be taken in again */
        const char *intake_reason;        /* why the last of them failed; may be NULL */
        uint64_t unwatched;               /* folders that could not be watched */
        int unwatched_error;              /* negative errno of the last such failure */
        const char *unwatched_first;      /* the first of them by path; may be NULL */
        usec_t unwatched_scan_usec;       /* how often they are scanned instead */
        const char *ledger_failure;       /* why the ledger cannot be written; NULL: it can */
        uint64_t ledger_failing_usec;     /* for how long */
        const char *ledger_unreachable;   /* why the ledger cannot be reached; NULL: it can */
        uint64_t ledger_unreachable_usec; /* for how long */
};

struct health_alert_report {
        unsigned active;                                     /* bit (1 << enum health_alert) */
        char text[_HEALTH_ALERT_MAX][HEALTH_ALERT_TEXT_MAX]; /* "" where not active */
        uint64_t drain_usec;                                 /* health_drain_usec() of the inputs */
};

void health_alerts_config_init(struct health_alerts_config *c);

/*
 * The predicted time to finish backlog jobs at per_s jobs a second: 0 for an empty backlog,
 * HEALTH_DRAIN_NEVER when there is a backlog and no job finishes (per_s <= 0 or NaN).
 */
uint64_t health_drain_usec(uint64_t backlog, double per_s);

/*
 * Evaluates every alert of c on in into *ret, each active one with a message naming the value
 * and the threshold ("1200 jobs waiting (alert at 1000)"). The drain alert is active when the
 * predicted drain time is over c->drain_usec, or when the backlog is not draining (no job
 * finished recently) while its oldest queued job has waited HEALTH_STALL_USEC or more.
 */
void health_alerts_evaluate(const struct health_alert_inputs *in,
                            const struct health_alerts_config *c, struct health_alert_report *ret);

/* "error_rate", "queue_depth", "queue_age", "drain_time", "breaker", "degraded",
 * "intake_failing", "unwatched_folders", "ledger_failing", "ledger_unreachable"; NULL for a value
 * out of range. These are
 * the label values of imgd_alert in the metrics and the "alert" names of imgctl status. */
const char *health_alert_name(enum health_alert a);
/* The alert named, or -EINVAL. */
int health_alert_from_name(const char *name);
