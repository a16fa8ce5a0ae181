/* SPDX-License-Identifier: MIT */
/*
 * test-breaker.c - the circuit breaker's state machine with an injected clock: closed ->
 * open by consecutive output failures (and not by interleaved ones), by the worker failure
 * rate once enough samples are in the window (and not by samples that left it, nor by more
 * than the ring holds), open -> half-open after the cool-down with exactly one probe,
 * half-open -> closed on success and -> open with a doubled, capped cool-down on failure,
 * job failures that never open it, outcomes ignored while open, reason strings, names and
 * configuration checks; held open from outside (the ledger unreachable) over closed and over
 * open, and released without a probe.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "daemon/breaker.h"
#include "shared/macro.h"
#include "shared/time-util.h"

#define T0 (UINT64_C(1000) * USEC_PER_SEC) /* an arbitrary monotonic start */

static const char enospc[] = "publish /srv/media/x.webp: No space left on device";

static breaker *new_default(void)
{
        breaker *b = NULL;

        assert_int_equal(breaker_new(NULL, &b), 0);
        assert_non_null(b);
        assert_int_equal(breaker_state(b), BREAKER_CLOSED);
        assert_true(breaker_check(b));
        return b;
}

static void record_n(breaker *b, enum breaker_outcome o, unsigned n, uint64_t now_usec)
{
        for (unsigned i = 0; i < n; i++)
                breaker_record(b, o, NULL, now_usec);
}

/* Opens a default breaker at `now` with three output failures. */
static void open_by_output(breaker *b, uint64_t now_usec)
{
        record_n(b, BREAKER_OUTPUT_FAILURE, 2, now_usec);
        breaker_record(b, BREAKER_OUTPUT_FAILURE, enospc, now_usec);
        assert_int_equal(breaker_state(b), BREAKER_OPEN);
}

static void test_config(void **state)
{
        struct breaker_config c, bad;
        breaker *b = (breaker *)&c; /* must stay untouched on failure */

        breaker_config_init(&c);
        assert_int_equal(c.output_failures, 3);
        assert_true(c.worker_failure_rate == 0.5);
        assert_int_equal(c.worker_min_samples, 10);
        assert_int_equal(c.window_usec, 60 * USEC_PER_SEC);
        assert_int_equal(c.cooldown_usec, 30 * USEC_PER_SEC);
        assert_int_equal(c.max_cooldown_usec, 600 * USEC_PER_SEC);

        bad = c;
        bad.output_failures = 0;
        assert_int_equal(breaker_new(&bad, &b), -EINVAL);
        bad = c;
        bad.worker_failure_rate = 0;
        assert_int_equal(breaker_new(&bad, &b), -EINVAL);
        bad = c;
        bad.worker_failure_rate = 1.01;
        assert_int_equal(breaker_new(&bad, &b), -EINVAL);
        bad = c;
        bad.worker_failure_rate = NAN;
        assert_int_equal(breaker_new(&bad, &b), -EINVAL);
        bad = c;
        bad.worker_min_samples = 0;
        assert_int_equal(breaker_new(&bad, &b), -EINVAL);
        bad = c;
        bad.worker_min_samples = BREAKER_MAX_SAMPLES + 1;
        assert_int_equal(breaker_new(&bad, &b), -EINVAL);
        bad = c;
        bad.window_usec = 0;
        assert_int_equal(breaker_new(&bad, &b), -EINVAL);
        bad = c;
        bad.cooldown_usec = 0;
        assert_int_equal(breaker_new(&bad, &b), -EINVAL);
        bad = c;
        bad.max_cooldown_usec = c.cooldown_usec - 1;
        assert_int_equal(breaker_new(&bad, &b), -EINVAL);
        assert_ptr_equal(b, (breaker *)&c);

        bad = c;
        bad.worker_failure_rate = 1;
        bad.worker_min_samples = BREAKER_MAX_SAMPLES;
        bad.max_cooldown_usec = c.cooldown_usec;
        b = NULL;
        assert_int_equal(breaker_new(&bad, &b), 0);
        assert_non_null(b);
        b = breaker_free(b);
        assert_null(b);
        assert_null(breaker_free(NULL));
}

static void test_names(void **state)
{
        assert_string_equal(breaker_state_name(BREAKER_CLOSED), "closed");
        assert_string_equal(breaker_state_name(BREAKER_OPEN), "open");
        assert_string_equal(breaker_state_name(BREAKER_HALF_OPEN), "half-open");
        assert_null(breaker_state_name(_BREAKER_STATE_MAX));
        assert_null(breaker_state_name((enum breaker_state) - 1));
        /* The gauge numbering of metrics.h. */
        assert_int_equal(BREAKER_CLOSED, 0);
        assert_int_equal(BREAKER_HALF_OPEN, 1);
        assert_int_equal(BREAKER_OPEN, 2);
}

static void test_closed_allows(void **state)
{
        breaker *b = new_default();

        for (uint64_t t = T0; t < T0 + 10 * USEC_PER_SEC; t += USEC_PER_SEC)
                assert_true(breaker_allow(b, t));
        assert_string_equal(breaker_reason(b), "");
        assert_int_equal(breaker_retry_at_usec(b), 0);
        assert_int_equal(breaker_transitions(b), 0);
        breaker_free(b);
}

static void test_open_by_consecutive_output_failures(void **state)
{
        breaker *b = new_default();

        breaker_record(b, BREAKER_OUTPUT_FAILURE, enospc, T0);
        breaker_record(b, BREAKER_OUTPUT_FAILURE, enospc, T0 + 1);
        assert_int_equal(breaker_state(b), BREAKER_CLOSED);
        assert_true(breaker_allow(b, T0 + 2));
        breaker_record(b, BREAKER_OUTPUT_FAILURE, enospc, T0 + 3);

        assert_int_equal(breaker_state(b), BREAKER_OPEN);
        assert_string_equal(breaker_reason(b),
                            "3 consecutive output failures: publish /srv/media/x.webp: No space "
                            "left on device");
        assert_int_equal(breaker_retry_at_usec(b), T0 + 3 + 30 * USEC_PER_SEC);
        assert_int_equal(breaker_cooldown_usec(b), 30 * USEC_PER_SEC);
        assert_int_equal(breaker_transitions(b), 1);
        assert_false(breaker_allow(b, T0 + 4));
        assert_true(breaker_check(b));
        breaker_free(b);

        /* Without a reason string. */
        b = new_default();
        record_n(b, BREAKER_OUTPUT_FAILURE, 3, T0);
        assert_int_equal(breaker_state(b), BREAKER_OPEN);
        assert_string_equal(breaker_reason(b), "3 consecutive output failures");
        breaker_free(b);
}

static void test_interleaved_output_failures(void **state)
{
        breaker *b = new_default();
        uint64_t t = T0;

        /* Two failures, a success, forever: never three in a row. */
        for (int i = 0; i < 100; i++) {
                breaker_record(b, BREAKER_OUTPUT_FAILURE, enospc, t++);
                breaker_record(b, BREAKER_OUTPUT_FAILURE, enospc, t++);
                breaker_record(b, BREAKER_SUCCESS, NULL, t++);
                assert_int_equal(breaker_state(b), BREAKER_CLOSED);
                assert_true(breaker_allow(b, t));
        }
        assert_int_equal(breaker_transitions(b), 0);

        /* Worker and job failures neither count nor break the run. */
        breaker_record(b, BREAKER_OUTPUT_FAILURE, "a", t++);
        breaker_record(b, BREAKER_JOB_FAILURE, "not an image", t++);
        breaker_record(b, BREAKER_OUTPUT_FAILURE, "b", t++);
        breaker_record(b, BREAKER_WORKER_FAILURE, "worker killed by SIGSEGV", t++);
        assert_int_equal(breaker_state(b), BREAKER_CLOSED);
        breaker_record(b, BREAKER_OUTPUT_FAILURE, "c", t++);
        assert_int_equal(breaker_state(b), BREAKER_OPEN);
        assert_string_equal(breaker_reason(b), "3 consecutive output failures: c");
        breaker_free(b);
}

static void test_open_by_worker_rate(void **state)
{
        breaker *b = new_default();
        uint64_t t = T0;

        /* The brief's example: 3 successes, then 7 worker failures = 70% of 10. */
        record_n(b, BREAKER_SUCCESS, 3, t);
        for (int i = 0; i < 6; i++) {
                breaker_record(b, BREAKER_WORKER_FAILURE, NULL, t += USEC_PER_SEC);
                /* 9 samples at most: under worker_min_samples, whatever the rate. */
                assert_int_equal(breaker_state(b), BREAKER_CLOSED);
        }
        breaker_record(b, BREAKER_WORKER_FAILURE, NULL, t += USEC_PER_SEC);
        assert_int_equal(breaker_state(b), BREAKER_OPEN);
        assert_string_equal(breaker_reason(b),
                            "worker failure rate 70% over the last 60 s (7 of 10)");
        assert_int_equal(breaker_retry_at_usec(b), t + 30 * USEC_PER_SEC);
        assert_int_equal(breaker_transitions(b), 1);
        breaker_free(b);

        /* Below the rate: 6 successes and 4 failures, then 5/11, then 6/12 = 50% opens. */
        b = new_default();
        t = T0;
        record_n(b, BREAKER_SUCCESS, 6, t);
        record_n(b, BREAKER_WORKER_FAILURE, 4, t);
        assert_int_equal(breaker_state(b), BREAKER_CLOSED);
        breaker_record(b, BREAKER_WORKER_FAILURE, NULL, t);
        assert_int_equal(breaker_state(b), BREAKER_CLOSED);
        breaker_record(b, BREAKER_WORKER_FAILURE, "worker killed by SIGSEGV", t);
        assert_int_equal(breaker_state(b), BREAKER_OPEN);
        assert_string_equal(breaker_reason(b), "worker failure rate 50% over the last 60 s (6 of "
                                               "12); last: worker killed by SIGSEGV");
        breaker_free(b);

        /* Job and output failures are samples, not worker failures. */
        b = new_default();
        record_n(b, BREAKER_JOB_FAILURE, 6, T0);
        record_n(b, BREAKER_WORKER_FAILURE, 5, T0);
        assert_int_equal(breaker_state(b), BREAKER_CLOSED); /* 5 of 11 */
        breaker_record(b, BREAKER_WORKER_FAILURE, NULL, T0);
        assert_int_equal(breaker_state(b), BREAKER_OPEN); /* 6 of 12 */
        breaker_free(b);

        /* A sub-second window is named in ms. */
        struct breaker_config c;
        breaker_config_init(&c);
        c.window_usec = 1500 * 1000;
        c.worker_min_samples = 2;
        assert_int_equal(breaker_new(&c, &b), 0);
        record_n(b, BREAKER_WORKER_FAILURE, 2, T0);
        assert_string_equal(breaker_reason(b),
                            "worker failure rate 100% over the last 1500 ms (2 of 2)");
        breaker_free(b);
}

static void test_worker_rate_window(void **state)
{
        breaker *b = new_default();

        /* 9 failures, then a 10th exactly one window later: the 9 have left it. */
        record_n(b, BREAKER_WORKER_FAILURE, 9, T0);
        breaker_record(b, BREAKER_WORKER_FAILURE, NULL, T0 + 60 * USEC_PER_SEC);
        assert_int_equal(breaker_state(b), BREAKER_CLOSED);
        /* 9 more within the window of the last: 10 of 10. */
        record_n(b, BREAKER_WORKER_FAILURE, 8, T0 + 61 * USEC_PER_SEC);
        assert_int_equal(breaker_state(b), BREAKER_CLOSED);
        breaker_record(b, BREAKER_WORKER_FAILURE, NULL, T0 + 119 * USEC_PER_SEC);
        assert_int_equal(breaker_state(b), BREAKER_OPEN);
        assert_string_equal(breaker_reason(b),
                            "worker failure rate 100% over the last 60 s (10 of 10)");
        breaker_free(b);

        /* One microsecond inside the window, the 9 still count. */
        b = new_default();
        record_n(b, BREAKER_WORKER_FAILURE, 9, T0);
        breaker_record(b, BREAKER_WORKER_FAILURE, NULL, T0 + 60 * USEC_PER_SEC - 1);
        assert_int_equal(breaker_state(b), BREAKER_OPEN);
        breaker_free(b);

        /* Old successes leave the window too, so the rate is of recent outcomes only. */
        b = new_default();
        record_n(b, BREAKER_SUCCESS, 50, T0);
        record_n(b, BREAKER_WORKER_FAILURE, 9, T0 + 30 * USEC_PER_SEC);
        assert_int_equal(breaker_state(b), BREAKER_CLOSED); /* 9 of 59 */
        breaker_record(b, BREAKER_WORKER_FAILURE, NULL, T0 + 60 * USEC_PER_SEC);
        assert_int_equal(breaker_state(b), BREAKER_OPEN); /* 10 of 10 */
        breaker_free(b);
}

static void test_worker_rate_ring(void **state)
{
        breaker *b = new_default();

        /* The ring holds the newest BREAKER_MAX_SAMPLES outcomes, all within the window. */
        record_n(b, BREAKER_SUCCESS, BREAKER_MAX_SAMPLES, T0);
        record_n(b, BREAKER_WORKER_FAILURE, BREAKER_MAX_SAMPLES / 2 - 1, T0 + 1);
        assert_int_equal(breaker_state(b), BREAKER_CLOSED);
        breaker_record(b, BREAKER_WORKER_FAILURE, NULL, T0 + 1);
        assert_int_equal(breaker_state(b), BREAKER_OPEN);
        assert_string_equal(breaker_reason(b),
                            "worker failure rate 50% over the last 60 s (128 of 256)");
        breaker_free(b);
}

static void test_half_open_single_probe(void **state)
{
        breaker *b = new_default();
        uint64_t retry;

        open_by_output(b, T0);
        retry = breaker_retry_at_usec(b);
        assert_int_equal(retry, T0 + 30 * USEC_PER_SEC);
        assert_false(breaker_allow(b, T0));
        assert_false(breaker_allow(b, retry - 1));
        assert_int_equal(breaker_state(b), BREAKER_OPEN);

        /* Exactly one probe, however often and however late it is asked. */
        assert_true(breaker_allow(b, retry));
        assert_int_equal(breaker_state(b), BREAKER_HALF_OPEN);
        assert_int_equal(breaker_retry_at_usec(b), 0);
        assert_int_equal(breaker_transitions(b), 2);
        for (uint64_t t = retry; t < retry + 3600 * USEC_PER_SEC; t += 7 * USEC_PER_SEC)
                assert_false(breaker_allow(b, t));
        assert_int_equal(breaker_state(b), BREAKER_HALF_OPEN);
        /* The reason that opened it stays visible while probing. */
        assert_string_equal(breaker_reason(b),
                            "3 consecutive output failures: publish /srv/media/x.webp: No space "
                            "left on device");
        assert_true(breaker_check(b));
        breaker_free(b);

        /* A late first call also lets the probe through. */
        b = new_default();
        open_by_output(b, T0);
        assert_true(breaker_allow(b, T0 + 3600 * USEC_PER_SEC));
        assert_false(breaker_allow(b, T0 + 3600 * USEC_PER_SEC));
        breaker_free(b);
}

static void test_half_open_success_closes(void **state)
{
        breaker *b = new_default();
        uint64_t t;

        /* Opened by the worker rate; the probe succeeds. */
        record_n(b, BREAKER_WORKER_FAILURE, 10, T0);
        assert_int_equal(breaker_state(b), BREAKER_OPEN);
        t = breaker_retry_at_usec(b);
        assert_true(breaker_allow(b, t));
        breaker_record(b, BREAKER_SUCCESS, NULL, t + USEC_PER_SEC);
        assert_int_equal(breaker_state(b), BREAKER_CLOSED);
        assert_string_equal(breaker_reason(b), "");
        assert_int_equal(breaker_retry_at_usec(b), 0);
        assert_int_equal(breaker_transitions(b), 3);
        assert_true(breaker_allow(b, t + USEC_PER_SEC));
        assert_true(breaker_allow(b, t + USEC_PER_SEC));

        /* The failures from before the opening are forgotten although still in the window. */
        record_n(b, BREAKER_WORKER_FAILURE, 9, t + 2 * USEC_PER_SEC);
        assert_int_equal(breaker_state(b), BREAKER_CLOSED);
        record_n(b, BREAKER_OUTPUT_FAILURE, 2, t + 2 * USEC_PER_SEC);
        assert_int_equal(breaker_state(b), BREAKER_CLOSED);
        breaker_free(b);

        /* The output failure count starts over too: two after closing do not open it. */
        b = new_default();
        open_by_output(b, T0);
        assert_true(breaker_allow(b, breaker_retry_at_usec(b)));
        breaker_record(b, BREAKER_SUCCESS, NULL, T0 + 31 * USEC_PER_SEC);
        record_n(b, BREAKER_OUTPUT_FAILURE, 2, T0 + 32 * USEC_PER_SEC);
        assert_int_equal(breaker_state(b), BREAKER_CLOSED);
        breaker_record(b, BREAKER_OUTPUT_FAILURE, NULL, T0 + 32 * USEC_PER_SEC);
        assert_int_equal(breaker_state(b), BREAKER_OPEN);
        assert_int_equal(breaker_retry_at_usec(b), T0 + 62 * USEC_PER_SEC);
        breaker_free(b);
}

static void test_half_open_failure_doubles_cooldown(void **state)
{
        static const uint64_t expected_s[] = { 60, 120, 240, 480, 600, 600, 600 };
        breaker *b = new_default();
        uint64_t t = T0;

        open_by_output(b, t);
        assert_int_equal(breaker_retry_at_usec(b), t + 30 * USEC_PER_SEC);
        for (size_t i = 0; i < ELEMENTSOF(expected_s); i++) {
                enum breaker_outcome o = i % 2 ? BREAKER_WORKER_FAILURE : BREAKER_OUTPUT_FAILURE;
                uint64_t transitions = breaker_transitions(b);

                t = breaker_retry_at_usec(b);
                assert_false(breaker_allow(b, t - 1));
                assert_true(breaker_allow(b, t));
                t += 5 * USEC_PER_SEC;
                breaker_record(b, o, i == 0 ? enospc : NULL, t);
                assert_int_equal(breaker_state(b), BREAKER_OPEN);
                assert_int_equal(breaker_cooldown_usec(b), expected_s[i] * USEC_PER_SEC);
                assert_int_equal(breaker_retry_at_usec(b), t + expected_s[i] * USEC_PER_SEC);
                assert_int_equal(breaker_transitions(b), transitions + 2);
                if (i == 0)
                        assert_string_equal(breaker_reason(b), "probe failed: publish "
                                                               "/srv/media/x.webp: No space "
                                                               "left on device");
                else
                        assert_string_equal(breaker_reason(b),
                                            o == BREAKER_WORKER_FAILURE
                                                    ? "probe failed: worker failure"
                                                    : "probe failed: output failure");
        }

        /* A successful probe resets the cool-down: the next opening waits 30 s again. */
        t = breaker_retry_at_usec(b);
        assert_true(breaker_allow(b, t));
        breaker_record(b, BREAKER_SUCCESS, NULL, t);
        assert_int_equal(breaker_state(b), BREAKER_CLOSED);
        assert_int_equal(breaker_cooldown_usec(b), 30 * USEC_PER_SEC);
        open_by_output(b, t + USEC_PER_SEC);
        assert_int_equal(breaker_retry_at_usec(b), t + 31 * USEC_PER_SEC);
        breaker_free(b);

        /* A worker failure as the probe's outcome also re-opens. */
        b = new_default();
        open_by_output(b, T0);
        assert_true(breaker_allow(b, T0 + 30 * USEC_PER_SEC));
        breaker_record(b, BREAKER_WORKER_FAILURE, "timed out after 30 s", T0 + 40 * USEC_PER_SEC);
        assert_int_equal(breaker_state(b), BREAKER_OPEN);
        assert_string_equal(breaker_reason(b), "probe failed: timed out after 30 s");
        assert_int_equal(breaker_retry_at_usec(b), T0 + 100 * USEC_PER_SEC);
        breaker_free(b);
}

static void test_job_failures_never_open(void **state)
{
        breaker *b = new_default();
        uint64_t t = T0;

        for (int i = 0; i < 10000; i++) {
                breaker_record(b, BREAKER_JOB_FAILURE, "not an image", t);
                t += 1000;
        }
        assert_int_equal(breaker_state(b), BREAKER_CLOSED);
        assert_true(breaker_allow(b, t));
        assert_int_equal(breaker_transitions(b), 0);
        breaker_free(b);

        /* In half-open a job failure decides nothing: another probe may go out. */
        b = new_default();
        open_by_output(b, T0);
        t = breaker_retry_at_usec(b);
        assert_true(breaker_allow(b, t));
        assert_false(breaker_allow(b, t));
        breaker_record(b, BREAKER_JOB_FAILURE, "not an image", t + 1);
        assert_int_equal(breaker_state(b), BREAKER_HALF_OPEN);
        assert_true(breaker_allow(b, t + 2));
        assert_false(breaker_allow(b, t + 3));
        breaker_record(b, BREAKER_SUCCESS, NULL, t + 4);
        assert_int_equal(breaker_state(b), BREAKER_CLOSED);
        breaker_free(b);
}

static void test_open_ignores_outcomes(void **state)
{
        breaker *b = new_default();
        uint64_t retry;

        open_by_output(b, T0);
        retry = breaker_retry_at_usec(b);
        /* Jobs that were running when it opened finish: nothing changes. */
        breaker_record(b, BREAKER_SUCCESS, NULL, T0 + USEC_PER_SEC);
        breaker_record(b, BREAKER_OUTPUT_FAILURE, "other", T0 + 2 * USEC_PER_SEC);
        breaker_record(b, BREAKER_WORKER_FAILURE, "other", T0 + 3 * USEC_PER_SEC);
        breaker_record(b, BREAKER_JOB_FAILURE, "other", T0 + 4 * USEC_PER_SEC);
        assert_int_equal(breaker_state(b), BREAKER_OPEN);
        assert_int_equal(breaker_retry_at_usec(b), retry);
        assert_int_equal(breaker_transitions(b), 1);
        assert_string_equal(breaker_reason(b),
                            "3 consecutive output failures: publish /srv/media/x.webp: No space "
                            "left on device");
        breaker_free(b);
}

static void test_long_reason_is_cut(void **state)
{
        char longer[2 * BREAKER_REASON_MAX];
        breaker *b = new_default();

        memset(longer, 'x', sizeof longer - 1);
        longer[sizeof longer - 1] = '\0';
        record_n(b, BREAKER_OUTPUT_FAILURE, 2, T0);
        breaker_record(b, BREAKER_OUTPUT_FAILURE, longer, T0);
        assert_int_equal(breaker_state(b), BREAKER_OPEN);
        assert_int_equal(strlen(breaker_reason(b)), BREAKER_REASON_MAX - 1);
        assert_true(breaker_check(b));
        breaker_free(b);
}

static const char unreachable[] = "ledger unreachable: postgresql://imgd@db:5432/imgd: "
                                  "connection to server failed: Connection refused";

/* Held from closed: open with the hold's reason, no claim, outcomes ignored (the failures
 * of jobs that could not reach the ledger do not count towards opening it later); released:
 * closed at once, without a probe, as if nothing had happened. */
static void test_hold_from_closed(void **state)
{
        breaker *b = new_default();

        record_n(b, BREAKER_OUTPUT_FAILURE, 2, T0);
        breaker_hold(b, unreachable);
        assert_true(breaker_held(b));
        assert_true(breaker_check(b));
        assert_int_equal(breaker_state(b), BREAKER_OPEN);
        assert_string_equal(breaker_reason(b), unreachable);
        assert_int_equal(breaker_retry_at_usec(b), 0);
        assert_int_equal(breaker_transitions(b), 1);
        assert_false(breaker_allow(b, T0 + 3600 * USEC_PER_SEC));
        record_n(b, BREAKER_OUTPUT_FAILURE, 5, T0 + USEC_PER_SEC);
        record_n(b, BREAKER_WORKER_FAILURE, 20, T0 + USEC_PER_SEC);
        assert_int_equal(breaker_state(b), BREAKER_OPEN);
        assert_string_equal(breaker_reason(b), unreachable);

        /* Held again: the reason is replaced, no transition. */
        breaker_hold(b, "ledger unreachable: other");
        assert_string_equal(breaker_reason(b), "ledger unreachable: other");
        assert_int_equal(breaker_transitions(b), 1);

        breaker_release(b);
        assert_false(breaker_held(b));
        assert_true(breaker_check(b));
        assert_int_equal(breaker_state(b), BREAKER_CLOSED);
        assert_string_equal(breaker_reason(b), "");
        assert_int_equal(breaker_transitions(b), 2);
        assert_true(breaker_allow(b, T0 + 2 * USEC_PER_SEC));
        /* The two output failures before the hold still count: one more opens it. */
        breaker_record(b, BREAKER_OUTPUT_FAILURE, enospc, T0 + 3 * USEC_PER_SEC);
        assert_int_equal(breaker_state(b), BREAKER_OPEN);
        breaker_release(b); /* no hold: nothing to do */
        assert_int_equal(breaker_state(b), BREAKER_OPEN);
        assert_int_equal(breaker_transitions(b), 3);
        breaker_free(b);
}

/* Held while open for the output side: the hold's reason shows, no probe goes out even after
 * the cool-down; released, the open breaker is back with its own reason and probe time. */
static void test_hold_over_open(void **state)
{
        breaker *b = new_default();
        uint64_t retry;

        open_by_output(b, T0);
        retry = breaker_retry_at_usec(b);
        breaker_hold(b, unreachable);
        assert_int_equal(breaker_transitions(b), 1);
        assert_string_equal(breaker_reason(b), unreachable);
        assert_false(breaker_allow(b, retry + USEC_PER_SEC));
        breaker_release(b);
        assert_int_equal(breaker_transitions(b), 1);
        assert_int_equal(breaker_state(b), BREAKER_OPEN);
        assert_int_equal(breaker_retry_at_usec(b), retry);
        assert_string_equal(breaker_reason(b),
                            "3 consecutive output failures: publish /srv/media/x.webp: No space "
                            "left on device");
        assert_true(breaker_allow(b, retry + USEC_PER_SEC));
        assert_int_equal(breaker_state(b), BREAKER_HALF_OPEN);
        breaker_free(b);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_config),
                cmocka_unit_test(test_names),
                cmocka_unit_test(test_closed_allows),
                cmocka_unit_test(test_open_by_consecutive_output_failures),
                cmocka_unit_test(test_interleaved_output_failures),
                cmocka_unit_test(test_open_by_worker_rate),
                cmocka_unit_test(test_worker_rate_window),
                cmocka_unit_test(test_worker_rate_ring),
                cmocka_unit_test(test_half_open_single_probe),
                cmocka_unit_test(test_half_open_success_closes),
                cmocka_unit_test(test_half_open_failure_doubles_cooldown),
                cmocka_unit_test(test_job_failures_never_open),
                cmocka_unit_test(test_open_ignores_outcomes),
                cmocka_unit_test(test_long_reason_is_cut),
                cmocka_unit_test(test_hold_from_closed),
                cmocka_unit_test(test_hold_over_open),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
