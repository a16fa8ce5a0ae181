/* SPDX-License-Identifier: MIT */
/*
 * test-retry.c - the retry and block policy (retry.h): the backoff doubles from the base
 * delay per attempt, is capped at the maximum, is spread by exactly +-jitter at the ends of
 * the random draw and never goes below 0; the machine's errors (and only those) block
 * rather than fail, a permanent failure stays permanent whatever its errno; a job is tried
 * again while attempts are left, and is dead when they are used up or the failure is
 * permanent.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "daemon/retry.h"
#include "shared/macro.h"
#include "shared/time-util.h"

static const struct config_retry defaults = {
        .max_attempts = 5,
        .base_delay_usec = 1000 * USEC_PER_MSEC,
        .max_delay_usec = 300000 * USEC_PER_MSEC,
        .jitter = 0.2,
};

static void test_backoff_doubles(void **state)
{
        struct config_retry r = defaults;

        r.jitter = 0;
        /* Attempt 0 and 1 wait the base delay; each further failure doubles it. */
        assert_int_equal(retry_backoff_usec(&r, 0, 0.5), 1000 * USEC_PER_MSEC);
        assert_int_equal(retry_backoff_usec(&r, 1, 0.5), 1000 * USEC_PER_MSEC);
        assert_int_equal(retry_backoff_usec(&r, 2, 0.5), 2000 * USEC_PER_MSEC);
        assert_int_equal(retry_backoff_usec(&r, 3, 0.5), 4000 * USEC_PER_MSEC);
        assert_int_equal(retry_backoff_usec(&r, 5, 0.5), 16000 * USEC_PER_MSEC);
        assert_int_equal(retry_backoff_usec(&r, 9, 0.5), 256000 * USEC_PER_MSEC);
        /* Capped at the maximum, also for attempt counts whose 2^n would overflow. */
        assert_int_equal(retry_backoff_usec(&r, 10, 0.5), 300000 * USEC_PER_MSEC);
        assert_int_equal(retry_backoff_usec(&r, 1000, 0.5), 300000 * USEC_PER_MSEC);
        assert_int_equal(retry_backoff_usec(&r, UINT32_MAX, 0.5), 300000 * USEC_PER_MSEC);
        r.max_delay_usec = 1500 * USEC_PER_MSEC;
        assert_int_equal(retry_backoff_usec(&r, 2, 0.5), 1500 * USEC_PER_MSEC);
        /* A maximum below the base caps the base too. */
        r.max_delay_usec = 500 * USEC_PER_MSEC;
        assert_int_equal(retry_backoff_usec(&r, 1, 0.5), 500 * USEC_PER_MSEC);
}

static void test_backoff_jitter(void **state)
{
        struct config_retry r = defaults;

        /* 0.5 is the middle: no change; the draw's ends give -jitter and (almost) +jitter. */
        assert_int_equal(retry_backoff_usec(&r, 1, 0.5), 1000 * USEC_PER_MSEC);
        assert_int_equal(retry_backoff_usec(&r, 1, 0.0), 800 * USEC_PER_MSEC);
        assert_int_equal(retry_backoff_usec(&r, 1, 0.999999), 1200 * USEC_PER_MSEC);
        assert_int_equal(retry_backoff_usec(&r, 3, 0.25), 3600 * USEC_PER_MSEC);
        assert_int_equal(retry_backoff_usec(&r, 3, 0.75), 4400 * USEC_PER_MSEC);
        /* Jitter applies after the cap: the maximum is spread too. */
        assert_int_equal(retry_backoff_usec(&r, 20, 0.0), 240000 * USEC_PER_MSEC);
        /* Rounded to the nearest millisecond. */
        r.base_delay_usec = 3 * USEC_PER_MSEC;
        r.jitter = 0.5;
        assert_int_equal(retry_backoff_usec(&r, 1, 0.25), 2 * USEC_PER_MSEC); /* 2.25 */
        assert_int_equal(retry_backoff_usec(&r, 1, 0.45), 3 * USEC_PER_MSEC); /* 2.85 */
        /* Full jitter at the low end is 0, never negative. */
        r.base_delay_usec = 1000 * USEC_PER_MSEC;
        r.jitter = 1.0;
        assert_int_equal(retry_backoff_usec(&r, 1, 0.0), 0);
        assert_int_equal(retry_backoff_usec(&r, 1, 0.75), 1500 * USEC_PER_MSEC);
}

static void test_random01(void **state)
{
        for (unsigned i = 0; i < 1000; i++) {
                double x = retry_random01();

                assert_true(x >= 0.0 && x < 1.0);
        }
}

static void test_environmental(void **state)
{
        static const int machine[] = { ENOSPC, EDQUOT, EROFS, EACCES, EPERM, EIO, EMFILE, ENFILE };
        static const int job[] = { 0, EINVAL, ENOENT, ELOOP, ENAMETOOLONG, EFBIG, ENOMEM, EAGAIN };

        for (size_t i = 0; i < ELEMENTSOF(machine); i++) {
                assert_true(retry_environmental(-machine[i]));
                assert_int_equal(retry_classify(-machine[i], false), RETRY_CLASS_BLOCKED);
                /* Permanent is the failing side's word, and it stands. */
                assert_int_equal(retry_classify(-machine[i], true), RETRY_CLASS_PERMANENT);
        }
        for (size_t i = 0; i < ELEMENTSOF(job); i++) {
                assert_false(retry_environmental(-job[i]));
                assert_int_equal(retry_classify(-job[i], false), RETRY_CLASS_TRANSIENT);
                assert_int_equal(retry_classify(-job[i], true), RETRY_CLASS_PERMANENT);
        }
        /* A positive number is no negative errno: not the machine's. */
        assert_int_equal(retry_classify(ENOSPC, false), RETRY_CLASS_TRANSIENT);
}

static void test_decide(void **state)
{
        struct config_retry r = defaults;

        for (unsigned a = 1; a < r.max_attempts; a++) {
                assert_int_equal(retry_decide(&r, a, false), RETRY_AGAIN);
                assert_int_equal(retry_decide(&r, a, true), RETRY_DEAD_PERMANENT);
        }
        assert_int_equal(retry_decide(&r, r.max_attempts, false), RETRY_DEAD_EXHAUSTED);
        assert_int_equal(retry_decide(&r, r.max_attempts + 1, false), RETRY_DEAD_EXHAUSTED);
        assert_int_equal(retry_decide(&r, r.max_attempts, true), RETRY_DEAD_PERMANENT);
        r.max_attempts = 1;
        assert_int_equal(retry_decide(&r, 1, false), RETRY_DEAD_EXHAUSTED);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_backoff_doubles), cmocka_unit_test(test_backoff_jitter),
                cmocka_unit_test(test_random01),        cmocka_unit_test(test_environmental),
                cmocka_unit_test(test_decide),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
