/* SPDX-License-Identifier: MIT */
/*
 * retry.h - what a failed attempt of a job leads to, as pure functions: whether the error
 * is the job's or the machine's (retry_classify), whether the job is tried again or is dead
 * (retry_decide), and how long it waits first (retry_backoff_usec: exponential, capped, with
 * jitter). The scheduler applies the answers; nothing here touches the ledger or the clock.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#include "shared/config.h"
#include "shared/time-util.h"

enum retry_class {
        RETRY_CLASS_TRANSIENT, /* the job's, may pass: an attempt is used */
        RETRY_CLASS_PERMANENT, /* the job's, fails the same way every time: dead at once */
        RETRY_CLASS_BLOCKED,   /* the machine's (disk full, read-only, permissions): no
                                * attempt used, handed back after a backoff */
};

/*
 * Errors of the machine rather than of the job: the output disk is full, read-only or
 * failing, or permissions are wrong, or descriptors ran out. Retrying the job cannot fix
 * them. `r` is a negative errno.
 */
bool retry_environmental(int r);

/* The class of a failure with error `r` (a negative errno, 0 when none is known) that the
 * failing side called permanent or not: a permanent failure is permanent whatever r says. */
enum retry_class retry_classify(int r, bool permanent);

enum retry_decision {
        RETRY_AGAIN,          /* retry after retry_backoff_usec() */
        RETRY_DEAD_PERMANENT, /* dead: the failure was permanent */
        RETRY_DEAD_EXHAUSTED, /* dead: `attempts` used up retry.max_attempts */
};

/* What follows the failure of attempt number `attempts` (counting from 1). */
enum retry_decision retry_decide(const struct config_retry *r, unsigned attempts, bool permanent);

/*
 * The delay before attempt `attempt + 1` after `attempt` failures: base * 2^(attempt-1),
 * capped at max, then spread by +-jitter using `random01` (a number in [0, 1)), never
 * below 0, rounded to the nearest millisecond; in microseconds.
 */
usec_t retry_backoff_usec(const struct config_retry *r, unsigned attempt, double random01);

/* A number in [0, 1) from getrandom() (from the clock if that fails): the jitter's draw.
 * Not pure, unlike the rest. */
double retry_random01(void);
