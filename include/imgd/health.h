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
 *            for recover_us; one level per step, and the next step needs another
 *            recover_us below the new level's thresholds
 *
 * A level is entered when any input is at or above that level's threshold. It is left for
 * the level below only after every call to health_update() for recover_us has seen all the
 * inputs below its thresholds (a call at or above them restarts the wait). Recovery is
 * stepwise: paused -> essential -> reduced -> full takes at least 3 * recover_us.
 *
 * What the levels mean (the caller acts on them): REDUCED renders every variant at a lower
 * quality (health_quality) and the fastest encoder effort (health_effort); ESSENTIAL also
 * renders only the variants marked essential (health_variant_enabled); PAUSED stops intake
 * and renders nothing new.
 *
 * Defaults (health_config_init), a level being entered when any one is reached:
 *
 *      level       queued   oldest queued   memory pressure   error rate
 *      reduced        500   5 min           0.85              0.25
 *      essential     2000   15 min          0.92              0.50
 *      paused       10000   60 min          0.97              0.80
 *
 *      recover_us = 60 s
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

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
        uint64_t queued;               /* jobs waiting to be claimed */
        uint64_t oldest_queued_age_us; /* how long the oldest of them has waited */
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
        uint64_t oldest_age_us;
        double memory_pressure;
        double error_rate;
};

struct health_config {
        struct health_thresholds reduced, essential, paused;
        uint64_t recover_us; /* time below a level's thresholds before it is left; 0: at once */
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
 * Feeds one sample of the inputs taken at now_us and returns the level after it: worse at
 * once when a worse level's threshold is reached, better by one level once the inputs have
 * stayed below the current level's thresholds for recover_us (see above). Negative and NaN
 * ratios count as 0.
 */
enum health_level health_update(health *h, const struct health_inputs *in, uint64_t now_us);

enum health_level health_level(const health *h);
/* "full", "reduced", "essential", "paused"; NULL for a value out of range. */
const char *health_level_name(enum health_level l);

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
uint64_t health_recover_at(const health *h);

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
 * essential ones at HEALTH_ESSENTIAL, none at HEALTH_PAUSED (paused also stops intake, which
 * is the caller's to do).
 */
bool health_variant_enabled(bool essential, enum health_level l);

/* The invariants of h, for assert(health_check(h)). */
bool health_check(const health *h);
