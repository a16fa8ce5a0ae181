/* SPDX-License-Identifier: MIT */
/*
 * test-outcomes.c - the rings of recent outcomes and completions (outcomes.h) with an
 * injected clock: the error rate is 0 below 10 outcomes in the window and the failed share
 * from 10 on; outcomes older than the window do not count, nor those the ring overwrote;
 * the drain rate counts the completions in the window over the time since the oldest (at
 * least one second), and reports the window it looked back over (shorter just after
 * start).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "daemon/outcomes.h"
#include "shared/time-util.h"

#define T0 (UINT64_C(5000) * USEC_PER_SEC) /* an arbitrary monotonic start */

static void test_error_rate(void **state)
{
        outcomes *o = NULL;

        assert_int_equal(outcomes_new(T0, &o), 0);
        assert_float_equal(outcomes_error_rate(o, T0), 0, 0);
        /* Nine failures are no rate yet. */
        for (unsigned i = 0; i < 9; i++)
                outcomes_note(o, T0 + i * USEC_PER_SEC, true);
        assert_float_equal(outcomes_error_rate(o, T0 + 10 * USEC_PER_SEC), 0, 0);
        /* The tenth makes one: 9 failed of 10. */
        outcomes_note(o, T0 + 10 * USEC_PER_SEC, false);
        assert_float_equal(outcomes_error_rate(o, T0 + 10 * USEC_PER_SEC), 0.9, 1e-12);
        for (unsigned i = 0; i < 10; i++)
                outcomes_note(o, T0 + 20 * USEC_PER_SEC, false);
        assert_float_equal(outcomes_error_rate(o, T0 + 20 * USEC_PER_SEC), 9.0 / 20, 1e-12);
        /* Exactly at the window's edge still counts; past it, the old ones are gone. */
        assert_float_equal(outcomes_error_rate(o, T0 + OUTCOMES_WINDOW_USEC), 9.0 / 20, 1e-12);
        assert_float_equal(outcomes_error_rate(o, T0 + 5 * USEC_PER_SEC + OUTCOMES_WINDOW_USEC),
                           4.0 / 15, 1e-12);
        assert_float_equal(outcomes_error_rate(o, T0 + 11 * USEC_PER_SEC + OUTCOMES_WINDOW_USEC), 0,
                           0);
        assert_float_equal(outcomes_error_rate(o, T0 + 21 * USEC_PER_SEC + OUTCOMES_WINDOW_USEC), 0,
                           0);
        o = outcomes_free(o);
        assert_null(o);
}

static void test_ring_wraps(void **state)
{
        outcomes *o = NULL;

        assert_int_equal(outcomes_new(T0, &o), 0);
        /* A full ring of failures, then a full ring of successes: the failures are gone. */
        for (unsigned i = 0; i < OUTCOMES_MAX; i++)
                outcomes_note(o, T0, true);
        assert_float_equal(outcomes_error_rate(o, T0), 1.0, 0);
        for (unsigned i = 0; i < OUTCOMES_MAX / 2; i++)
                outcomes_note(o, T0, false);
        assert_float_equal(outcomes_error_rate(o, T0), 0.5, 1e-12);
        for (unsigned i = 0; i < OUTCOMES_MAX / 2; i++)
                outcomes_note(o, T0, false);
        assert_float_equal(outcomes_error_rate(o, T0), 0.0, 0);
        outcomes_free(o);
        outcomes_free(NULL);
}

static void test_finished_per_s(void **state)
{
        outcomes *o = NULL;
        uint64_t window = 0;

        assert_int_equal(outcomes_new(T0, &o), 0);
        assert_float_equal(outcomes_finished_per_s(o, T0 + 2 * USEC_PER_SEC, &window), 0, 0);
        assert_int_equal(window, 2 * USEC_PER_SEC); /* just started: the time since start */
        /* Ten jobs over the last 5 s: 2 per second. */
        for (unsigned i = 0; i < 10; i++)
                outcomes_note_finished(o, T0 + 100 * USEC_PER_SEC + i * USEC_PER_SEC / 2);
        assert_float_equal(outcomes_finished_per_s(o, T0 + 105 * USEC_PER_SEC, &window), 2.0, 1e-9);
        assert_int_equal(window, 105 * USEC_PER_SEC);
        /* Past the window they are gone, and the window is the whole window. */
        assert_float_equal(
                outcomes_finished_per_s(o, T0 + 105 * USEC_PER_SEC + OUTCOMES_WINDOW_USEC, &window),
                0, 0);
        assert_int_equal(window, OUTCOMES_WINDOW_USEC);
        /* The ring keeps the newest OUTCOMES_MAX_FINISHED. */
        for (unsigned i = 0; i < 2 * OUTCOMES_MAX_FINISHED; i++)
                outcomes_note_finished(o, T0 + 1000 * USEC_PER_SEC);
        assert_float_equal(outcomes_finished_per_s(o, T0 + 1000 * USEC_PER_SEC, &window),
                           OUTCOMES_MAX_FINISHED, 1e-9);
        outcomes_free(o);

        /* A burst within one second counts over one second, not less. */
        assert_int_equal(outcomes_new(T0, &o), 0);
        for (unsigned i = 0; i < 5; i++)
                outcomes_note_finished(o, T0 + 10 * USEC_PER_SEC + i * 1000);
        assert_float_equal(
                outcomes_finished_per_s(o, T0 + 10 * USEC_PER_SEC + USEC_PER_SEC / 2, &window), 5.0,
                1e-9);
        outcomes_free(o);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_error_rate),
                cmocka_unit_test(test_ring_wraps),
                cmocka_unit_test(test_finished_per_s),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
