/* SPDX-License-Identifier: MIT */
/*
 * test-meminfo.c - the /proc/meminfo parser (meminfo.h) on sample text: the pressure is
 * 1 - MemAvailable / MemTotal wherever the two lines are, 0 when MemTotal is missing or 0 or
 * MemAvailable exceeds it, 1 when MemAvailable is missing; the first line of each counts; text
 * without a final newline and empty text; and the reader on this machine's file.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "daemon/meminfo.h"

static const char sample[] = "MemTotal:       16303412 kB\n"
                             "MemFree:         1032948 kB\n"
                             "MemAvailable:    4075853 kB\n"
                             "Buffers:          518744 kB\n"
                             "Cached:          6129396 kB\n";

static void test_sample(void **state)
{
        /* 1 - 4075853 / 16303412 */
        assert_float_equal(meminfo_pressure_parse(sample), 0.75, 0.0001);
        assert_float_equal(meminfo_pressure_parse("MemTotal: 1000 kB\nMemAvailable: 250 kB\n"),
                           0.75, 1e-12);
        /* Order does not matter, nor the final newline. */
        assert_float_equal(meminfo_pressure_parse("MemAvailable: 900 kB\nMemTotal: 1000 kB"), 0.1,
                           1e-12);
        assert_float_equal(meminfo_pressure_parse("Foo: 1 kB\nMemTotal: 1000 kB\nBar: 2 kB\n"
                                                  "MemAvailable: 1000 kB\n"),
                           0.0, 1e-12);
        assert_float_equal(meminfo_pressure_parse("MemTotal: 1000 kB\nMemAvailable: 0 kB\n"), 1.0,
                           1e-12);
        /* The first line of each is the one read. */
        assert_float_equal(meminfo_pressure_parse("MemTotal: 1000 kB\nMemAvailable: 500 kB\n"
                                                  "MemTotal: 4000 kB\nMemAvailable: 1 kB\n"),
                           0.5, 1e-12);
}

static void test_missing(void **state)
{
        assert_float_equal(meminfo_pressure_parse(""), 0.0, 0);
        /* No MemAvailable: none available (as imgd has always read it). */
        assert_float_equal(meminfo_pressure_parse("MemTotal: 1000 kB\n"), 1.0, 0);
        assert_float_equal(meminfo_pressure_parse("MemAvailable: 100 kB\n"), 0.0, 0);
        assert_float_equal(meminfo_pressure_parse("MemTotal: 0 kB\nMemAvailable: 0 kB\n"), 0.0, 0);
        /* More available than there is: nonsense, no pressure. */
        assert_float_equal(meminfo_pressure_parse("MemTotal: 100 kB\nMemAvailable: 101 kB\n"), 0.0,
                           0);
        assert_float_equal(meminfo_pressure_parse("MemTotal: lots\nMemAvailable: 5 kB\n"), 0.0, 0);
}

static void test_read(void **state)
{
        double p = meminfo_pressure_read();

        /* A Linux test machine has the file and some memory in use. */
        assert_true(p > 0.0 && p < 1.0);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_sample),
                cmocka_unit_test(test_missing),
                cmocka_unit_test(test_read),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
