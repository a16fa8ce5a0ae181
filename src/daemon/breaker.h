/* SPDX-License-Identifier: MIT */
/*
 * breaker.h - the circuit breaker that stops the scheduler from claiming work while the
 * output side keeps failing (disk full, I/O errors, a read-only or unwritable output tree)
 * or while workers keep dying, and, held open from outside, while the job ledger cannot be
 * reached (breaker_hold()). A pure state machine: no I/O, no timers, no logging; the
 * caller passes the monotonic time (CLOCK_MONOTONIC, microseconds) into every call, asks
 * breaker_allow() before each claim, reports each finished attempt with breaker_record(),
 * and logs a transition by comparing breaker_state() before and after.
 *
 *                     breaker_record(): output_failures consecutive output
 *                     failures, or the worker failure rate reaches the threshold
 *     +--------+ ---------------------------------------------------> +------+
 *     | CLOSED |                                                      | OPEN |
 *     +--------+                                                      +------+
 *         ^                                                            |   ^
 *         |                 breaker_allow() at or after                |   | breaker_record():
 *         |                 breaker_retry_at_usec(): returns true           |   | the probe failed
 *         |                 once (the probe)                           v   | (output or worker
 *         |                                                     +-----------+ failure); the
 *         +---------------------------------------------------- | HALF-OPEN | cool-down doubles,
 *           breaker_record(): the probe succeeded; the          +-----------+ up to the maximum
 *           cool-down is reset to cooldown_usec
 *
 * CLOSED: every claim is allowed. "Consecutive" output failures are ones without a success
 * between them; worker and job failures neither count towards them nor interrupt them. The
 * worker failure rate is worker failures / outcomes over the last window_usec (at most
 * BREAKER_MAX_SAMPLES outcomes, newest kept), judged when a worker failure is recorded and
 * only once worker_min_samples outcomes are in the window. Job failures (bad input) never
 * open the breaker but are outcomes for the rate; output failures and successes are too.
 * OPEN: nothing is allowed until breaker_retry_at_usec(); outcomes of jobs that were already
 * running when it opened change nothing. HALF-OPEN: breaker_allow() has returned true once,
 * for the probe, and returns false until an outcome is recorded. The breaker cannot tell
 * the probe from a job that was already running, so the first outcome recorded in
 * half-open decides: a success closes it, an output or worker failure re-opens it; a job
 * failure (a bad input says nothing about the output side) re-arms the probe, so the next
 * breaker_allow() returns true again. Opening forgets the failure count and the window, so
 * failures from before an opening cannot re-open the breaker once it has closed again.
 *
 * HELD: a condition outside the outcomes keeps it open (the ledger unreachable: nothing can
 * be claimed, and the results of jobs in hand cannot be recorded): breaker_hold() with the
 * reason. While held, breaker_state() is OPEN, breaker_reason() the hold's reason,
 * breaker_allow() false, and outcomes change nothing (a job that failed for want of the
 * ledger says nothing about the output side). breaker_release() ends it at once, without a
 * probe (the condition itself said it is over): the machine above goes on in the state it
 * was in before the hold, its cool-down and counts as they were.
 */
#pragma once

#include <stdbool.h>
#include <stdint.h>

#define BREAKER_MAX_SAMPLES 256 /* outcomes kept for the worker failure rate */
#define BREAKER_REASON_MAX 512  /* bytes of breaker_reason(), with its NUL; longer is cut */

/* The numbering is the gauge's in metrics.h: 0 closed, 1 half-open, 2 open. */
enum breaker_state {
        BREAKER_CLOSED,
        BREAKER_HALF_OPEN,
        BREAKER_OPEN,
        _BREAKER_STATE_MAX,
};

enum breaker_outcome {
        BREAKER_SUCCESS,        /* the job's outputs were published */
        BREAKER_OUTPUT_FAILURE, /* environmental, output side: ENOSPC, EIO, EROFS, EACCES */
        BREAKER_WORKER_FAILURE, /* the worker crashed, timed out, was killed */
        BREAKER_JOB_FAILURE,    /* permanent or bad input: never opens the breaker */
        _BREAKER_OUTCOME_MAX,
};

struct breaker_config {
        unsigned output_failures;    /* consecutive output failures that open it; 3 */
        double worker_failure_rate;  /* (0, 1]: worker failures / outcomes that open it; 0.5 */
        unsigned worker_min_samples; /* 1..BREAKER_MAX_SAMPLES outcomes in the window; 10 */
        uint64_t window_usec;        /* the rate's sliding window; 60 s */
        uint64_t cooldown_usec;      /* open before the first probe; 30 s */
        uint64_t max_cooldown_usec;  /* the cool-down doubles per failed probe up to this; 10 min */
};

typedef struct breaker breaker;

/* Fills c with the defaults above. */
void breaker_config_init(struct breaker_config *c);

/*
 * A new breaker, closed, with a copy of cfg (NULL: the defaults). Returns 0, -EINVAL if a
 * value is out of range (zero counts or times, a rate outside (0, 1], min samples above
 * BREAKER_MAX_SAMPLES, max_cooldown_usec below cooldown_usec), or -ENOMEM; *ret is written only
 * on success.
 */
int breaker_new(const struct breaker_config *cfg, breaker **ret);
/* Accepts NULL; returns NULL. */
breaker *breaker_free(breaker *b);

/*
 * Whether a job may be claimed now. CLOSED: true. OPEN: false before breaker_retry_at_usec();
 * from then on the first call moves to HALF-OPEN and returns true (the probe). HALF-OPEN:
 * false while the probe is out.
 */
bool breaker_allow(breaker *b, uint64_t now_usec);

/*
 * Records the outcome of one finished attempt and makes the transitions described above.
 * `reason` (may be NULL) says what went wrong, e.g. "publish /srv/media/x.webp: No space left
 * on device" or "worker killed by SIGSEGV"; it is copied into breaker_reason() when it opens
 * the breaker, and is borrowed only for the call.
 */
void breaker_record(breaker *b, enum breaker_outcome o, const char *reason, uint64_t now_usec);

/*
 * Holds the breaker open for `reason` (copied, cut to BREAKER_REASON_MAX; not NULL nor ""),
 * or, while already held, replaces the reason. breaker_release() ends the hold (nothing to
 * do if none). breaker_held() says whether one is on.
 */
void breaker_hold(breaker *b, const char *reason);
void breaker_release(breaker *b);
bool breaker_held(const breaker *b);

enum breaker_state breaker_state(const breaker *b);
/* "closed", "open", "half-open"; NULL for a value out of range. */
const char *breaker_state_name(enum breaker_state s);
/* The state named, or -EINVAL. */
int breaker_state_from_name(const char *name);

/*
 * Why the breaker opened, while it is open or half-open: "3 consecutive output failures:
 * publish /srv/media/x.webp: No space left on device", "worker failure rate 70% over the last
 * 60 s (7 of 10)" (with "; last: REASON" when the last worker failure had one), "probe
 * failed: REASON". "" while closed. Owned by the breaker, valid until the next call that
 * takes a non-const breaker.
 */
const char *breaker_reason(const breaker *b);

/* While open (and not held): when breaker_allow() will let the probe through. Otherwise 0. */
uint64_t breaker_retry_at_usec(const breaker *b);

/* The cool-down the next opening will use, or the current one while open. */
uint64_t breaker_cooldown_usec(const breaker *b);

/* State changes since breaker_new() (every arrow in the diagram counts one; a hold and its
 * release count one each unless the breaker was open anyway). */
uint64_t breaker_transitions(const breaker *b);

/* The breaker's invariants, for assert(breaker_check(b)). */
bool breaker_check(const breaker *b);
