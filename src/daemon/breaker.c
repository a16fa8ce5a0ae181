/* SPDX-License-Identifier: MIT */
/*
 * breaker.c - the circuit breaker's state machine; see breaker.h for the states and the
 * transitions. The worker failure rate is kept in a ring of the last BREAKER_MAX_SAMPLES
 * outcomes (time, worker failed?) recorded while closed; samples older than the window are
 * skipped when the rate is computed, and the ring is emptied whenever the breaker opens.
 * No I/O, no allocation after breaker_new().
 */
#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/breaker.h"
#include "shared/macro.h"
#include "shared/string-table.h"
#include "shared/time-util.h"

struct sample {
        uint64_t time_usec;
        bool worker_failed;
};

struct breaker {
        struct breaker_config cfg;
        enum breaker_state state;

        /* CLOSED */
        unsigned consecutive_output; /* output failures since the last success */
        struct sample ring[BREAKER_MAX_SAMPLES];
        size_t ring_next; /* where the next sample goes */
        size_t ring_n;    /* samples held, <= BREAKER_MAX_SAMPLES */

        /* OPEN and HALF-OPEN */
        uint64_t cooldown_usec; /* of the current or the next opening */
        uint64_t retry_at_usec; /* OPEN: when the probe is allowed */
        bool probe_out;         /* HALF-OPEN: breaker_allow() let the probe through */
        char reason[BREAKER_REASON_MAX];

        /* HELD (over any of the above) */
        bool held;
        char held_reason[BREAKER_REASON_MAX];

        uint64_t transitions;
};

void breaker_config_init(struct breaker_config *c)
{
        *c = (struct breaker_config){
                .output_failures = 3,
                .worker_failure_rate = 0.5,
                .worker_min_samples = 10,
                .window_usec = 60 * USEC_PER_SEC,
                .cooldown_usec = 30 * USEC_PER_SEC,
                .max_cooldown_usec = 600 * USEC_PER_SEC,
        };
}

static bool config_valid(const struct breaker_config *c)
{
        /* Written so that a NaN rate is refused too. */
        return c->output_failures > 0 && c->worker_failure_rate > 0 &&
               c->worker_failure_rate <= 1 && c->worker_min_samples > 0 &&
               c->worker_min_samples <= BREAKER_MAX_SAMPLES && c->window_usec > 0 &&
               c->cooldown_usec > 0 && c->max_cooldown_usec >= c->cooldown_usec;
}

int breaker_new(const struct breaker_config *cfg, breaker **ret)
{
        struct breaker_config defaults;
        breaker *b;

        if (!cfg) {
                breaker_config_init(&defaults);
                cfg = &defaults;
        }
        if (!config_valid(cfg))
                return -EINVAL;
        b = calloc(1, sizeof *b);
        if (!b)
                return -ENOMEM;
        b->cfg = *cfg;
        b->state = BREAKER_CLOSED;
        b->cooldown_usec = cfg->cooldown_usec;
        *ret = b;
        return 0;
}

breaker *breaker_free(breaker *b)
{
        free(b);
        return NULL;
}

static void set_state(breaker *b, enum breaker_state s)
{
        if (b->state != s)
                b->transitions++;
        b->state = s;
}

static void forget_closed_history(breaker *b)
{
        b->consecutive_output = 0;
        b->ring_next = 0;
        b->ring_n = 0;
}

static void push_sample(breaker *b, uint64_t now_usec, bool worker_failed)
{
        b->ring[b->ring_next] =
                (struct sample){ .time_usec = now_usec, .worker_failed = worker_failed };
        b->ring_next = (b->ring_next + 1) % BREAKER_MAX_SAMPLES;
        if (b->ring_n < BREAKER_MAX_SAMPLES)
                b->ring_n++;
}

/*
 * Counts the samples in the window (now - window_usec, now] into *ret_n and the worker
 * failures among them into *ret_failed. A sample from "after" now (a clock that went back)
 * counts as in the window.
 */
static void window_counts(const breaker *b, uint64_t now_usec, unsigned *ret_n,
                          unsigned *ret_failed)
{
        unsigned n = 0, failed = 0;

        for (size_t i = 0; i < b->ring_n; i++) {
                const struct sample *s = &b->ring[i];

                if (s->time_usec < now_usec && now_usec - s->time_usec >= b->cfg.window_usec)
                        continue;
                n++;
                if (s->worker_failed)
                        failed++;
        }
        *ret_n = n;
        *ret_failed = failed;
}

/* "60 s", or "1500 ms" for a window that is not whole seconds. */
static void format_duration(char *buf, size_t size, uint64_t usec)
{
        if (usec % USEC_PER_SEC == 0)
                snprintf(buf, size, "%" PRIu64 " s", usec / USEC_PER_SEC);
        else
                snprintf(buf, size, "%" PRIu64 " ms", usec / USEC_PER_MSEC);
}

static void open_breaker(breaker *b, uint64_t now_usec)
{
        set_state(b, BREAKER_OPEN);
        b->retry_at_usec = now_usec + b->cooldown_usec;
        b->probe_out = false;
        forget_closed_history(b);
}

static void record_closed(breaker *b, enum breaker_outcome o, const char *reason, uint64_t now_usec)
{
        unsigned n, failed;
        char window[32];

        push_sample(b, now_usec, o == BREAKER_WORKER_FAILURE);
        switch (o) {
        case BREAKER_SUCCESS:
                b->consecutive_output = 0;
                return;
        case BREAKER_OUTPUT_FAILURE:
                if (++b->consecutive_output < b->cfg.output_failures)
                        return;
                snprintf(b->reason, sizeof b->reason, "%u consecutive output failure%s%s%s",
                         b->consecutive_output, b->consecutive_output == 1 ? "" : "s",
                         reason ? ": " : "", reason ? reason : "");
                open_breaker(b, now_usec);
                return;
        case BREAKER_WORKER_FAILURE:
                window_counts(b, now_usec, &n, &failed);
                if (n < b->cfg.worker_min_samples ||
                    (double)failed / (double)n < b->cfg.worker_failure_rate)
                        return;
                format_duration(window, sizeof window, b->cfg.window_usec);
                snprintf(b->reason, sizeof b->reason,
                         "worker failure rate %u%% over the last %s (%u of %u)%s%s",
                         (unsigned)((100.0 * failed) / n + 0.5), window, failed, n,
                         reason ? "; last: " : "", reason ? reason : "");
                open_breaker(b, now_usec);
                return;
        case BREAKER_JOB_FAILURE:
        case _BREAKER_OUTCOME_MAX:
                return;
        }
}

static void record_half_open(breaker *b, enum breaker_outcome o, const char *reason,
                             uint64_t now_usec)
{
        switch (o) {
        case BREAKER_SUCCESS:
                set_state(b, BREAKER_CLOSED);
                b->cooldown_usec = b->cfg.cooldown_usec;
                b->retry_at_usec = 0;
                b->probe_out = false;
                b->reason[0] = '\0';
                return;
        case BREAKER_OUTPUT_FAILURE:
        case BREAKER_WORKER_FAILURE:
                snprintf(b->reason, sizeof b->reason, "probe failed: %s",
                         reason                        ? reason
                         : o == BREAKER_OUTPUT_FAILURE ? "output failure"
                                                       : "worker failure");
                b->cooldown_usec = b->cooldown_usec > b->cfg.max_cooldown_usec / 2
                                           ? b->cfg.max_cooldown_usec
                                           : b->cooldown_usec * 2;
                open_breaker(b, now_usec);
                return;
        case BREAKER_JOB_FAILURE:
                /* A bad input says nothing about the output side: let another probe out. */
                b->probe_out = false;
                return;
        case _BREAKER_OUTCOME_MAX:
                return;
        }
}

bool breaker_allow(breaker *b, uint64_t now_usec)
{
        if (b->held)
                return false;
        switch (b->state) {
        case BREAKER_CLOSED:
                return true;
        case BREAKER_OPEN:
                if (now_usec < b->retry_at_usec)
                        return false;
                set_state(b, BREAKER_HALF_OPEN);
                b->retry_at_usec = 0;
                b->probe_out = true;
                return true;
        case BREAKER_HALF_OPEN:
                if (b->probe_out)
                        return false;
                b->probe_out = true;
                return true;
        case _BREAKER_STATE_MAX:
                break;
        }
        return false;
}

void breaker_record(breaker *b, enum breaker_outcome o, const char *reason, uint64_t now_usec)
{
        assert((unsigned)o < _BREAKER_OUTCOME_MAX);
        if (b->held)
                return;
        switch (b->state) {
        case BREAKER_CLOSED:
                record_closed(b, o, reason, now_usec);
                break;
        case BREAKER_HALF_OPEN:
                record_half_open(b, o, reason, now_usec);
                break;
        case BREAKER_OPEN:
        case _BREAKER_STATE_MAX:
                break;
        }
        assert(breaker_check(b));
}

void breaker_hold(breaker *b, const char *reason)
{
        assert(reason && *reason);
        if (!b->held && b->state != BREAKER_OPEN)
                b->transitions++;
        b->held = true;
        snprintf(b->held_reason, sizeof b->held_reason, "%s", reason);
        assert(breaker_check(b));
}

void breaker_release(breaker *b)
{
        if (!b->held)
                return;
        if (b->state != BREAKER_OPEN)
                b->transitions++;
        b->held = false;
        b->held_reason[0] = '\0';
        assert(breaker_check(b));
}

bool breaker_held(const breaker *b)
{
        return b->held;
}

enum breaker_state breaker_state(const breaker *b)
{
        return b->held ? BREAKER_OPEN : b->state;
}

static const char *const breaker_state_table[_BREAKER_STATE_MAX] = {
        [BREAKER_CLOSED] = "closed",
        [BREAKER_HALF_OPEN] = "half-open",
        [BREAKER_OPEN] = "open",
};

DEFINE_STRING_TABLE_LOOKUP(breaker_state, enum breaker_state, NULL)

const char *breaker_reason(const breaker *b)
{
        return b->held ? b->held_reason : b->reason;
}

uint64_t breaker_retry_at_usec(const breaker *b)
{
        return b->state == BREAKER_OPEN && !b->held ? b->retry_at_usec : 0;
}

uint64_t breaker_cooldown_usec(const breaker *b)
{
        return b->cooldown_usec;
}

uint64_t breaker_transitions(const breaker *b)
{
        return b->transitions;
}

bool breaker_check(const breaker *b)
{
        if (!b || (unsigned)b->state >= _BREAKER_STATE_MAX)
                return false;
        if (b->ring_n > BREAKER_MAX_SAMPLES || b->ring_next >= BREAKER_MAX_SAMPLES)
                return false;
        if (b->cooldown_usec < b->cfg.cooldown_usec || b->cooldown_usec > b->cfg.max_cooldown_usec)
                return false;
        if (memchr(b->reason, '\0', sizeof b->reason) == NULL ||
            memchr(b->held_reason, '\0', sizeof b->held_reason) == NULL)
                return false;
        if (b->held != (b->held_reason[0] != '\0'))
                return false;
        switch (b->state) {
        case BREAKER_CLOSED:
                return b->consecutive_output < b->cfg.output_failures && !b->probe_out &&
                       b->reason[0] == '\0';
        case BREAKER_OPEN:
                return b->ring_n == 0 && !b->probe_out && b->reason[0] != '\0';
        case BREAKER_HALF_OPEN:
                return b->ring_n == 0 && b->retry_at_usec == 0 && b->reason[0] != '\0';
        case _BREAKER_STATE_MAX:
                break;
        }
        return false;
}
