/* SPDX-License-Identifier: MIT */
/*
 * time-util.h - the one unit of time inside imgd: the microsecond. Header-only; no state.
 *
 * Every internal name that holds a time (variable, parameter, field, function) ends in
 * `_usec` and holds microseconds:
 *   - durations, and CLOCK_MONOTONIC times (intervals, deadlines, sd-event timers) are
 *     usec_t, unsigned 64 bits (about 584 000 years);
 *   - wall-clock times, CLOCK_REALTIME microseconds since the epoch, are int64_t: that is how
 *     the ledger stores them (SQLite's INTEGER is signed) and how imgctl and the JSON carry
 *     them, and differences of two of them may be negative; making them unsigned would only
 *     spread casts.
 * Settings written in seconds or milliseconds (job_timeout, base_delay_ms, ...) are
 * converted once, where the configuration is read (the .scale of config-schema.c), and back
 * where they are written (confdump.c). Text and JSON that show seconds or milliseconds
 * convert at that edge with the constants below; names that are a stored or public format
 * keep their unit (the ledger's columns such as updated_us, the JSON keys such as uptime_s,
 * the settings, the metrics).
 * Also kept in another unit: file modification times, stat()'s nanoseconds (`_ns`, such as
 * mtime_ns), stored so in the ledger, so that a file rewritten within the same microsecond
 * still compares unequal; rates (`_per_s`, jobs per second), which are not times; and
 * imgctl's --timeout value (timeout_s), fractional seconds as the user wrote them, echoed
 * back in its messages with %g.
 */
#pragma once

#include <stdint.h>
#include <time.h>

typedef uint64_t usec_t;

#define USEC_PER_SEC UINT64_C(1000000)
#define USEC_PER_MSEC UINT64_C(1000)
#define USEC_PER_MINUTE (UINT64_C(60) * USEC_PER_SEC)
#define NSEC_PER_USEC UINT64_C(1000)
#define NSEC_PER_MSEC UINT64_C(1000000)
#define NSEC_PER_SEC UINT64_C(1000000000)
#define MSEC_PER_SEC UINT64_C(1000)

/* CLOCK_MONOTONIC in microseconds: for intervals and deadlines, never for wall-clock times. */
static inline usec_t mono_usec(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_MONOTONIC, &ts);
        return (usec_t)ts.tv_sec * USEC_PER_SEC + (usec_t)ts.tv_nsec / NSEC_PER_USEC;
}

/* CLOCK_REALTIME in microseconds since the epoch: the times the ledger records and shows. */
static inline int64_t wall_usec(void)
{
        struct timespec ts;

        clock_gettime(CLOCK_REALTIME, &ts);
        return (int64_t)ts.tv_sec * (int64_t)USEC_PER_SEC + ts.tv_nsec / (int64_t)NSEC_PER_USEC;
}
