/* SPDX-License-Identifier: MIT */
/*
 * outcomes.h - the recent history the health score and the alerts read: the outcome of each
 * recent attempt (failed or not) in one ring, the time each recent job finished (done or
 * dead) in another. Rings of fixed size: the oldest entry is overwritten. Times are
 * CLOCK_MONOTONIC microseconds passed in by the caller, so every function is pure.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>
#include "shared/time-util.h"

/* How far back the error rate and the drain rate look. */
#define OUTCOMES_WINDOW_USEC (5 * USEC_PER_MINUTE)
#define OUTCOMES_MAX 128u
#define OUTCOMES_MAX_FINISHED 256u

typedef struct outcomes outcomes;

/* A new history, started at `now` (for the drain rate's window). Returns 0, or -ENOMEM. */
int outcomes_new(uint64_t now, outcomes **ret);
outcomes *outcomes_free(outcomes *o);

/* An attempt ended at `now`; `failed` when it counts against health. */
void outcomes_note(outcomes *o, uint64_t now, bool failed);
/* A job left the backlog for good (done or dead) at `now`. */
void outcomes_note_finished(outcomes *o, uint64_t now);

/* The failed share of the attempts of the last OUTCOMES_WINDOW_USEC that the ring holds; 0
 * below 10 of them (a handful of failures is not a rate). */
double outcomes_error_rate(const outcomes *o, uint64_t now);

/*
 * Jobs finished per second recently: those of the last OUTCOMES_WINDOW_USEC (as far as the
 * ring holds them) over the time from the oldest of them to now (at least one second), so
 * that a burst after a quiet spell is measured at its own pace. In *ret_window_usec the time
 * looked back over: the window, or the time since start if shorter.
 */
double outcomes_finished_per_s(const outcomes *o, uint64_t now, uint64_t *ret_window_usec);
