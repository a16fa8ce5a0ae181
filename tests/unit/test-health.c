/* SPDX-License-Identifier: MIT */
/*
 * test-health.c - graceful degradation with an injected clock: each input alone selects
 * each level at its thresholds (and not just below them), escalation is immediate, recovery
 * waits recover_usec and goes one level per recover_usec, a sample at the level restarts the
 * wait, reason strings, the health score (100 when idle, at the level boundaries, monotonic
 * in each input), the quality, effort and variant helpers, configuration checks, and the
 * alerts (each at its threshold and not below it, turned off by 0, the drain prediction and
 * the not-draining rule, breaker and level, their messages).
 */
#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "shared/health.h"
#include "shared/macro.h"
#include "shared/time-util.h"

#define T0 (UINT64_C(5000) * USEC_PER_SEC) /* an arbitrary monotonic start */
#define R (60 * USEC_PER_SEC)              /* the default recover_usec */

static const struct health_inputs idle = { 0 };

/* A pointer to inputs with the fields given, e.g. IN(.queued = 600). */
#define IN(...) (&(struct health_inputs){ __VA_ARGS__ })

static health *new_default(void)
{
        health *h = NULL;

        assert_int_equal(health_new(NULL, &h), 0);
        assert_non_null(h);
        assert_int_equal(health_level(h), HEALTH_FULL);
        assert_string_equal(health_reason(h), "");
        assert_true(health_check(h));
        return h;
}

static void assert_close(double a, double b)
{
        if (fabs(a - b) > 1e-9)
                fail_msg("%.12f != %.12f", a, b);
}

static void test_config(void **state)
{
        struct health_config c, bad;
        health *h = (health *)&c; /* must stay untouched on failure */

        health_config_init(&c);
        assert_int_equal(c.reduced.queued, 500);
        assert_int_equal(c.reduced.oldest_age_usec, 5 * USEC_PER_MINUTE);
        assert_true(c.reduced.memory_pressure == 0.85);
        assert_true(c.reduced.error_rate == 0.25);
        assert_int_equal(c.essential.queued, 2000);
        assert_int_equal(c.essential.oldest_age_usec, 15 * USEC_PER_MINUTE);
        assert_true(c.essential.memory_pressure == 0.92);
        assert_true(c.essential.error_rate == 0.5);
        assert_int_equal(c.paused.queued, 10000);
        assert_int_equal(c.paused.oldest_age_usec, 60 * USEC_PER_MINUTE);
        assert_true(c.paused.memory_pressure == 0.97);
        assert_true(c.paused.error_rate == 0.8);
        assert_int_equal(c.recover_usec, 60 * USEC_PER_SEC);

        bad = c;
        bad.reduced.queued = 0;
        assert_int_equal(health_new(&bad, &h), -EINVAL);
        bad = c;
        bad.reduced.error_rate = 0;
        assert_int_equal(health_new(&bad, &h), -EINVAL);
        bad = c;
        bad.essential.queued = c.reduced.queued - 1;
        assert_int_equal(health_new(&bad, &h), -EINVAL);
        bad = c;
        bad.paused.oldest_age_usec = c.essential.oldest_age_usec - 1;
        assert_int_equal(health_new(&bad, &h), -EINVAL);
        bad = c;
        bad.paused.memory_pressure = 0.9;
        assert_int_equal(health_new(&bad, &h), -EINVAL);
        bad = c;
        bad.essential.error_rate = NAN;
        assert_int_equal(health_new(&bad, &h), -EINVAL);
        assert_ptr_equal(h, (health *)&c);

        /* Equal thresholds, and inputs left out with out-of-reach ones, are fine. */
        bad = c;
        bad.essential = bad.reduced;
        bad.paused.queued = UINT64_MAX;
        bad.paused.memory_pressure = 2;
        bad.recover_usec = 0;
        h = NULL;
        assert_int_equal(health_new(&bad, &h), 0);
        assert_non_null(h);
        h = health_free(h);
        assert_null(h);
        assert_null(health_free(NULL));
}

static void test_names(void **state)
{
        assert_string_equal(health_level_name(HEALTH_FULL), "full");
        assert_string_equal(health_level_name(HEALTH_REDUCED), "reduced");
        assert_string_equal(health_level_name(HEALTH_ESSENTIAL), "essential");
        assert_string_equal(health_level_name(HEALTH_PAUSED), "paused");
        assert_null(health_level_name(_HEALTH_LEVEL_MAX));
        assert_null(health_level_name((enum health_level) - 1));
        /* The gauge numbering of metrics.h. */
        assert_int_equal(HEALTH_FULL, 0);
        assert_int_equal(HEALTH_REDUCED, 1);
        assert_int_equal(HEALTH_ESSENTIAL, 2);
        assert_int_equal(HEALTH_PAUSED, 3);
}

static void test_each_input_alone(void **state)
{
        static const struct {
                struct health_inputs in;
                enum health_level level;
        } cases[] = {
                { { .queued = 0 }, HEALTH_FULL },
                { { .queued = 499 }, HEALTH_FULL },
                { { .queued = 500 }, HEALTH_REDUCED },
                { { .queued = 1999 }, HEALTH_REDUCED },
                { { .queued = 2000 }, HEALTH_ESSENTIAL },
                { { .queued = 9999 }, HEALTH_ESSENTIAL },
                { { .queued = 10000 }, HEALTH_PAUSED },
                { { .queued = UINT64_MAX }, HEALTH_PAUSED },
                { { .oldest_queued_age_usec = 5 * USEC_PER_MINUTE - 1 }, HEALTH_FULL },
                { { .oldest_queued_age_usec = 5 * USEC_PER_MINUTE }, HEALTH_REDUCED },
                { { .oldest_queued_age_usec = 15 * USEC_PER_MINUTE - 1 }, HEALTH_REDUCED },
                { { .oldest_queued_age_usec = 15 * USEC_PER_MINUTE }, HEALTH_ESSENTIAL },
                { { .oldest_queued_age_usec = 60 * USEC_PER_MINUTE - 1 }, HEALTH_ESSENTIAL },
                { { .oldest_queued_age_usec = 60 * USEC_PER_MINUTE }, HEALTH_PAUSED },
                { { .memory_pressure = 0.84 }, HEALTH_FULL },
                { { .memory_pressure = 0.85 }, HEALTH_REDUCED },
                { { .memory_pressure = 0.91 }, HEALTH_REDUCED },
                { { .memory_pressure = 0.92 }, HEALTH_ESSENTIAL },
                { { .memory_pressure = 0.96 }, HEALTH_ESSENTIAL },
                { { .memory_pressure = 0.97 }, HEALTH_PAUSED },
                { { .memory_pressure = 1.0 }, HEALTH_PAUSED },
                { { .memory_pressure = -1 }, HEALTH_FULL },
                { { .memory_pressure = NAN }, HEALTH_FULL },
                { { .error_rate = 0.24 }, HEALTH_FULL },
                { { .error_rate = 0.25 }, HEALTH_REDUCED },
                { { .error_rate = 0.49 }, HEALTH_REDUCED },
                { { .error_rate = 0.5 }, HEALTH_ESSENTIAL },
                { { .error_rate = 0.79 }, HEALTH_ESSENTIAL },
                { { .error_rate = 0.8 }, HEALTH_PAUSED },
                { { .error_rate = 1.0 }, HEALTH_PAUSED },
                { { .error_rate = NAN }, HEALTH_FULL },
                /* The worst input decides. */
                { { .queued = 600, .memory_pressure = 0.93, .error_rate = 0.1 }, HEALTH_ESSENTIAL },
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                health *h = new_default();
                enum health_level l = health_update(h, &cases[i].in, T0);

                if (l != cases[i].level)
                        print_error("case %zu: level %s, expected %s\n", i, health_level_name(l),
                                    health_level_name(cases[i].level));
                assert_int_equal(l, cases[i].level);
                assert_int_equal(health_level(h), cases[i].level);
                assert_int_equal(health_reason(h)[0] == '\0', cases[i].level == HEALTH_FULL);
                assert_int_equal(health_recover_at_usec(h), 0);
                health_free(h);
        }
}

static void test_reasons(void **state)
{
        static const struct {
                struct health_inputs in;
                const char *reason;
        } cases[] = {
                { { .queued = 600 }, "600 jobs queued (reduced at 500)" },
                { { .oldest_queued_age_usec = 7 * USEC_PER_MINUTE + 30 * USEC_PER_SEC },
                  "oldest queued job 7 min old (reduced at 5 min)" },
                { { .oldest_queued_age_usec = 3 * 60 * USEC_PER_MINUTE },
                  "oldest queued job 3 h old (paused at 60 min)" },
                { { .memory_pressure = 0.93 }, "memory pressure 93% (essential at 92%)" },
                { { .error_rate = 0.3 }, "error rate 30% (reduced at 25%)" },
                /* Each input at the level's threshold, in a fixed order (the age is only at
                 * reduced here, so it is left out). */
                { { .queued = 2400,
                    .oldest_queued_age_usec = 7 * USEC_PER_MINUTE,
                    .memory_pressure = 0.93 },
                  "2400 jobs queued (essential at 2000); memory pressure 93% (essential at 92%)" },
                { { .queued = 20000,
                    .oldest_queued_age_usec = 61 * USEC_PER_MINUTE,
                    .memory_pressure = 0.99,
                    .error_rate = 0.9 },
                  "20000 jobs queued (paused at 10000); oldest queued job 61 min old (paused at 60 "
                  "min); memory pressure 99% (paused at 97%); error rate 90% (paused at 80%)" },
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                health *h = new_default();

                health_update(h, &cases[i].in, T0);
                assert_string_equal(health_reason(h), cases[i].reason);
                health_free(h);
        }
}

static void test_escalation_is_immediate(void **state)
{
        health *h = new_default();

        /* full -> paused in one sample. */
        assert_int_equal(health_update(h, IN(.queued = 10000), T0), HEALTH_PAUSED);
        health_free(h);

        /* One level after another, each at once, at the same instant. */
        h = new_default();
        assert_int_equal(health_update(h, IN(.error_rate = 0.3), T0), HEALTH_REDUCED);
        assert_int_equal(health_update(h, IN(.error_rate = 0.6), T0), HEALTH_ESSENTIAL);
        assert_int_equal(health_update(h, IN(.error_rate = 0.85), T0), HEALTH_PAUSED);
        assert_string_equal(health_reason(h), "error rate 85% (paused at 80%)");
        health_free(h);

        /* While waiting to recover, a worse sample still escalates at once. */
        h = new_default();
        health_update(h, IN(.queued = 500), T0);
        health_update(h, &idle, T0 + USEC_PER_SEC);
        assert_int_equal(health_level(h), HEALTH_REDUCED);
        assert_int_equal(health_update(h, IN(.memory_pressure = 0.98), T0 + 2 * USEC_PER_SEC),
                         HEALTH_PAUSED);
        assert_int_equal(health_recover_at_usec(h), 0);
        health_free(h);
}

static void test_stepwise_recovery(void **state)
{
        health *h = new_default();
        uint64_t t;

        health_update(h, IN(.oldest_queued_age_usec = 2 * 60 * USEC_PER_MINUTE), T0);
        assert_int_equal(health_level(h), HEALTH_PAUSED);

        /* Idle from T0 + 1 s: not before recover_usec... */
        t = T0 + USEC_PER_SEC;
        assert_int_equal(health_update(h, &idle, t), HEALTH_PAUSED);
        assert_int_equal(health_recover_at_usec(h), t + R);
        assert_int_equal(health_update(h, &idle, t + 30 * USEC_PER_SEC), HEALTH_PAUSED);
        assert_string_equal(health_reason(h), "recovering from paused: below its thresholds for "
                                              "30 s of 60 s");
        assert_int_equal(health_update(h, &idle, t + R - 1), HEALTH_PAUSED);
        /* ...then one level per recover_usec. */
        assert_int_equal(health_update(h, &idle, t + R), HEALTH_ESSENTIAL);
        assert_int_equal(health_recover_at_usec(h), t + 2 * R);
        assert_int_equal(health_update(h, &idle, t + R + 1), HEALTH_ESSENTIAL);
        assert_int_equal(health_update(h, &idle, t + 2 * R - 1), HEALTH_ESSENTIAL);
        assert_int_equal(health_update(h, &idle, t + 2 * R), HEALTH_REDUCED);
        assert_int_equal(health_update(h, &idle, t + 3 * R - 1), HEALTH_REDUCED);
        assert_string_equal(health_reason(h), "recovering from reduced: below its thresholds for "
                                              "59 s of 60 s");
        assert_int_equal(health_update(h, &idle, t + 3 * R), HEALTH_FULL);
        assert_string_equal(health_reason(h), "");
        assert_int_equal(health_recover_at_usec(h), 0);
        assert_int_equal(health_update(h, &idle, t + 100 * R), HEALTH_FULL);
        assert_true(health_check(h));
        health_free(h);

        /* A long gap between samples still steps one level only. */
        h = new_default();
        health_update(h, IN(.queued = 10000), T0);
        health_update(h, &idle, T0);
        assert_int_equal(health_update(h, &idle, T0 + 10 * R), HEALTH_ESSENTIAL);
        assert_int_equal(health_update(h, &idle, T0 + 10 * R + 1), HEALTH_ESSENTIAL);
        health_free(h);
}

static void test_recovery_restarts(void **state)
{
        health *h = new_default();

        health_update(h, IN(.queued = 10000), T0);
        health_update(h, &idle, T0);
        /* A sample back at paused 50 s in restarts the wait. */
        assert_int_equal(health_update(h, IN(.queued = 10000), T0 + 50 * USEC_PER_SEC),
                         HEALTH_PAUSED);
        assert_int_equal(health_recover_at_usec(h), 0);
        assert_int_equal(health_update(h, &idle, T0 + 51 * USEC_PER_SEC), HEALTH_PAUSED);
        assert_int_equal(health_update(h, &idle, T0 + R), HEALTH_PAUSED);
        assert_int_equal(health_update(h, &idle, T0 + 51 * USEC_PER_SEC + R - 1), HEALTH_PAUSED);
        assert_int_equal(health_update(h, &idle, T0 + 51 * USEC_PER_SEC + R), HEALTH_ESSENTIAL);
        health_free(h);

        /* Inputs in the reduced band: recovery stops at reduced and holds there. */
        h = new_default();
        health_update(h, IN(.queued = 10000), T0);
        const struct health_inputs busy = { .queued = 600 };
        assert_int_equal(health_update(h, &busy, T0), HEALTH_PAUSED);
        assert_int_equal(health_update(h, &busy, T0 + R), HEALTH_ESSENTIAL);
        assert_int_equal(health_update(h, &busy, T0 + 2 * R), HEALTH_REDUCED);
        assert_string_equal(health_reason(h), "600 jobs queued (reduced at 500)");
        assert_int_equal(health_recover_at_usec(h), 0);
        assert_int_equal(health_update(h, &busy, T0 + 50 * R), HEALTH_REDUCED);
        /* ...and leaves it recover_usec after the inputs drop. */
        assert_int_equal(health_update(h, &idle, T0 + 51 * R), HEALTH_REDUCED);
        assert_int_equal(health_update(h, &idle, T0 + 52 * R - 1), HEALTH_REDUCED);
        assert_int_equal(health_update(h, &idle, T0 + 52 * R), HEALTH_FULL);
        health_free(h);
}

static void test_recover_zero(void **state)
{
        struct health_config c;
        health *h;

        health_config_init(&c);
        c.recover_usec = 0;
        assert_int_equal(health_new(&c, &h), 0);
        health_update(h, IN(.memory_pressure = 0.99), T0);
        assert_int_equal(health_level(h), HEALTH_PAUSED);
        /* Still one level per sample. */
        assert_int_equal(health_update(h, &idle, T0), HEALTH_ESSENTIAL);
        assert_int_equal(health_update(h, &idle, T0), HEALTH_REDUCED);
        assert_int_equal(health_update(h, &idle, T0), HEALTH_FULL);
        assert_int_equal(health_update(h, &idle, T0), HEALTH_FULL);
        health_free(h);
}

static void test_score(void **state)
{
        struct health_config c;

        health_config_init(&c);
        assert_close(health_score(&idle, &c), 100);
        assert_close(health_score(IN(.memory_pressure = NAN, .error_rate = -1), &c), 100);

        /* The level boundaries: 200/3 at reduced, 100/3 at essential, 0 at paused and beyond. */
        assert_close(health_score(IN(.queued = 250), &c), 100 - 100.0 / 6);
        assert_close(health_score(IN(.queued = 500), &c), 200.0 / 3);
        assert_close(health_score(IN(.queued = 1250), &c), 50);
        assert_close(health_score(IN(.oldest_queued_age_usec = 15 * USEC_PER_MINUTE), &c),
                     100.0 / 3);
        assert_close(health_score(IN(.memory_pressure = 0.97), &c), 0);
        assert_close(health_score(IN(.error_rate = 0.5), &c), 100.0 / 3);
        assert_close(health_score(IN(.queued = 1000000), &c), 0);
        /* The worst input decides. */
        assert_close(health_score(IN(.queued = 500, .memory_pressure = 0.92), &c), 100.0 / 3);
}

static void test_score_monotonic(void **state)
{
        struct health_config c;
        double prev[4] = { 101, 101, 101, 101 };

        health_config_init(&c);
        /* 0 to 1.25 times the paused threshold of each input, in 500 steps. */
        for (int i = 0; i <= 500; i++) {
                double f = 1.25 * i / 500;
                struct health_inputs in[4] = {
                        { .queued = (uint64_t)(f * (double)c.paused.queued) },
                        { .oldest_queued_age_usec =
                                  (uint64_t)(f * (double)c.paused.oldest_age_usec) },
                        { .memory_pressure = f * c.paused.memory_pressure },
                        { .error_rate = f * c.paused.error_rate },
                };

                for (int k = 0; k < 4; k++) {
                        double s = health_score(&in[k], &c);

                        assert_true(s >= 0 && s <= 100);
                        /* Strictly decreasing below paused, then 0. */
                        if (f < 1)
                                assert_true(s < prev[k]);
                        else
                                assert_close(s, 0);
                        prev[k] = s;
                }
        }
}

static void test_score_equal_thresholds(void **state)
{
        struct health_config c;

        health_config_init(&c);
        c.essential.queued = c.reduced.queued;
        c.paused.queued = c.reduced.queued;
        assert_close(health_score(IN(.queued = 499), &c), 100 - 100 * 499.0 / 1500);
        assert_close(health_score(IN(.queued = 500), &c), 0);
}

static void test_quality(void **state)
{
        static const struct {
                unsigned quality, reduced;
        } cases[] = {
                { 100, 85 }, { 80, 68 }, { 75, 64 }, { 50, 43 }, { 47, 40 },
                { 45, 40 },  { 40, 40 }, { 30, 30 }, { 1, 1 },   { 0, 0 },
        };

        for (size_t i = 0; i < ELEMENTSOF(cases); i++) {
                assert_int_equal(health_quality(cases[i].quality, HEALTH_FULL), cases[i].quality);
                assert_int_equal(health_quality(cases[i].quality, HEALTH_REDUCED),
                                 cases[i].reduced);
                assert_int_equal(health_quality(cases[i].quality, HEALTH_ESSENTIAL),
                                 cases[i].reduced);
                assert_int_equal(health_quality(cases[i].quality, HEALTH_PAUSED), cases[i].reduced);
        }
}

static void test_effort(void **state)
{
        for (int e = 0; e <= 9; e++) {
                assert_int_equal(health_effort(e, HEALTH_FULL), e);
                assert_int_equal(health_effort(e, HEALTH_REDUCED), 0);
                assert_int_equal(health_effort(e, HEALTH_ESSENTIAL), 0);
                assert_int_equal(health_effort(e, HEALTH_PAUSED), 0);
        }
}

static void test_variant_enabled(void **state)
{
        assert_true(health_variant_enabled(true, HEALTH_FULL));
        assert_true(health_variant_enabled(false, HEALTH_FULL));
        assert_true(health_variant_enabled(true, HEALTH_REDUCED));
        assert_true(health_variant_enabled(false, HEALTH_REDUCED));
        assert_true(health_variant_enabled(true, HEALTH_ESSENTIAL));
        assert_false(health_variant_enabled(false, HEALTH_ESSENTIAL));
        /* Paused still drains its trickle of jobs, rendered as at essential. */
        assert_true(health_variant_enabled(true, HEALTH_PAUSED));
        assert_false(health_variant_enabled(false, HEALTH_PAUSED));
}

/* Every worker below paused; paused keeps one job going (never none), whatever the pool. */
static void test_max_running(void **state)
{
        for (enum health_level l = HEALTH_FULL; l < HEALTH_PAUSED; l++) {
                assert_int_equal(health_max_running(1, l), 1);
                assert_int_equal(health_max_running(8, l), 8);
        }
        assert_int_equal(health_max_running(1, HEALTH_PAUSED), 1);
        assert_int_equal(health_max_running(8, HEALTH_PAUSED), HEALTH_PAUSED_RUNNING);
        assert_true(HEALTH_PAUSED_RUNNING >= 1);
}

/* ---- alerts ---------------------------------------------------------------------------- */

/* Quiet inputs for the alerts: nothing waiting, breaker closed, full level. */
static struct health_alert_inputs quiet(void)
{
        return (struct health_alert_inputs){ .breaker_state = "closed",
                                             .level = HEALTH_FULL,
                                             .rate_window_usec = 5 * USEC_PER_MINUTE };
}

static unsigned alerts_of(const struct health_alert_inputs *in,
                          const struct health_alerts_config *c, struct health_alert_report *r)
{
        health_alerts_evaluate(in, c, r);
        for (int a = 0; a < _HEALTH_ALERT_MAX; a++)
                if (((r->active >> a) & 1) != (r->text[a][0] != '\0'))
                        fail_msg("alert %s: active %u but message \"%s\"", health_alert_name(a),
                                 (r->active >> a) & 1, r->text[a]);
        return r->active;
}

#define BIT(a) (1u << (a))

static void assert_has(const char *text, const char *part)
{
        if (!strstr(text, part))
                fail_msg("\"%s\" does not contain \"%s\"", text, part);
}

static void test_alerts_defaults_and_names(void **state)
{
        struct health_alerts_config c;
        struct health_alert_inputs in = quiet();
        struct health_alert_report r;

        (void)state;
        health_alerts_config_init(&c);
        assert_close(c.error_rate, 0.10);
        assert_int_equal(c.queued, 1000);
        assert_int_equal(c.oldest_usec, 10 * USEC_PER_MINUTE);
        assert_int_equal(c.drain_usec, 60 * USEC_PER_MINUTE);
        assert_true(c.breaker);
        assert_true(c.degraded);
        assert_int_equal(alerts_of(&in, &c, &r), 0);
        assert_int_equal(r.drain_usec, 0);

        assert_string_equal(health_alert_name(HEALTH_ALERT_ERROR_RATE), "error_rate");
        assert_string_equal(health_alert_name(HEALTH_ALERT_QUEUED), "queue_depth");
        assert_string_equal(health_alert_name(HEALTH_ALERT_OLDEST), "queue_age");
        assert_string_equal(health_alert_name(HEALTH_ALERT_DRAIN), "drain_time");
        assert_string_equal(health_alert_name(HEALTH_ALERT_BREAKER), "breaker");
        assert_string_equal(health_alert_name(HEALTH_ALERT_DEGRADED), "degraded");
        assert_string_equal(health_alert_name(HEALTH_ALERT_INTAKE), "intake_failing");
        assert_string_equal(health_alert_name(HEALTH_ALERT_UNWATCHED), "unwatched_folders");
        assert_string_equal(health_alert_name(HEALTH_ALERT_LEDGER), "ledger_failing");
        assert_string_equal(health_alert_name(HEALTH_ALERT_LEDGER_UNREACHABLE),
                            "ledger_unreachable");
        assert_int_equal(health_alert_from_name("ledger_unreachable"),
                         HEALTH_ALERT_LEDGER_UNREACHABLE);
        for (int a = 0; a < _HEALTH_ALERT_MAX; a++)
                assert_non_null(health_alert_name(a));
        assert_null(health_alert_name(_HEALTH_ALERT_MAX));
        assert_null(health_alert_name((enum health_alert) - 1));
}

/* Each threshold raises its alert at the threshold, not just below it, and 0 turns it off. */
static void test_alerts_thresholds(void **state)
{
        struct health_alerts_config c;
        struct health_alert_inputs in;
        struct health_alert_report r;

        (void)state;
        health_alerts_config_init(&c);

        in = quiet();
        in.health.error_rate = 0.0999;
        assert_int_equal(alerts_of(&in, &c, &r), 0);
        in.health.error_rate = 0.10;
        assert_int_equal(alerts_of(&in, &c, &r), BIT(HEALTH_ALERT_ERROR_RATE));
        assert_has(r.text[HEALTH_ALERT_ERROR_RATE],
                   "error rate 10% of recent attempts (alert at 10%)");
        in.health.error_rate = NAN;
        assert_int_equal(alerts_of(&in, &c, &r), 0);

        /* Queue depth, with the backlog draining fast enough not to alert. */
        in = quiet();
        in.health.queued = in.backlog = 999;
        in.finished_per_s = 100;
        assert_int_equal(alerts_of(&in, &c, &r), 0);
        in.health.queued = in.backlog = 1000;
        assert_int_equal(alerts_of(&in, &c, &r), BIT(HEALTH_ALERT_QUEUED));
        assert_string_equal(r.text[HEALTH_ALERT_QUEUED], "1000 jobs waiting (alert at 1000)");
        c.queued = 0;
        assert_int_equal(alerts_of(&in, &c, &r), 0);
        health_alerts_config_init(&c);

        /* Age of the oldest queued job; only while something is queued. */
        in = quiet();
        in.health.queued = in.backlog = 3;
        in.finished_per_s = 1;
        in.health.oldest_queued_age_usec = 10 * USEC_PER_MINUTE - 1;
        assert_int_equal(alerts_of(&in, &c, &r), 0);
        in.health.oldest_queued_age_usec = 12 * USEC_PER_MINUTE;
        assert_int_equal(alerts_of(&in, &c, &r), BIT(HEALTH_ALERT_OLDEST));
        assert_string_equal(r.text[HEALTH_ALERT_OLDEST],
                            "oldest queued job waiting 12 min (alert at 10 min)");
        in.health.queued = 0;
        assert_int_equal(alerts_of(&in, &c, &r), 0);
        c.oldest_usec = 0;
        in.health.queued = 3;
        assert_int_equal(alerts_of(&in, &c, &r), 0);
}

static void test_alerts_drain(void **state)
{
        struct health_alerts_config c;
        struct health_alert_inputs in = quiet();
        struct health_alert_report r;

        (void)state;
        assert_int_equal(health_drain_usec(0, 0), 0);
        assert_int_equal(health_drain_usec(0, 5), 0);
        assert_true(health_drain_usec(10, 0) == HEALTH_DRAIN_NEVER);
        assert_true(health_drain_usec(10, -1) == HEALTH_DRAIN_NEVER);
        assert_true(health_drain_usec(10, NAN) == HEALTH_DRAIN_NEVER);
        assert_int_equal(health_drain_usec(10, 2.0), 5 * USEC_PER_SEC);
        assert_true(health_drain_usec(UINT64_MAX, 1e-300) < HEALTH_DRAIN_NEVER);

        health_alerts_config_init(&c);
        /* 100 jobs at 1 a second: 100 s, fine; at 0.01 a second: 10000 s, over an hour. */
        in.health.queued = in.backlog = 100;
        in.finished_per_s = 1;
        assert_int_equal(alerts_of(&in, &c, &r), 0);
        assert_int_equal(r.drain_usec, 100 * USEC_PER_SEC);
        in.finished_per_s = 0.01;
        assert_int_equal(alerts_of(&in, &c, &r), BIT(HEALTH_ALERT_DRAIN));
        assert_int_equal(r.drain_usec, 10000 * USEC_PER_SEC);
        assert_has(r.text[HEALTH_ALERT_DRAIN], "backlog of 100 jobs drains in about 2 h at 0.01 "
                                               "jobs/s (alert at 60 min)");

        /* Nothing finishing: not an alert while the oldest job is fresh (it may just have
         * arrived), an alert once it has waited HEALTH_STALL_USEC. */
        in.finished_per_s = 0;
        in.health.oldest_queued_age_usec = HEALTH_STALL_USEC - 1;
        assert_int_equal(alerts_of(&in, &c, &r), 0);
        assert_true(r.drain_usec == HEALTH_DRAIN_NEVER);
        in.health.oldest_queued_age_usec = HEALTH_STALL_USEC;
        assert_int_equal(alerts_of(&in, &c, &r), BIT(HEALTH_ALERT_DRAIN));
        assert_string_equal(r.text[HEALTH_ALERT_DRAIN], "backlog of 100 jobs is not draining: "
                                                        "none finished in the last 5 min");
        /* Only running jobs (none queued): they are being worked on, no alert. */
        in.health.queued = 0;
        in.backlog = 2;
        assert_int_equal(alerts_of(&in, &c, &r), 0);
        /* Off. */
        in.health.queued = 100;
        c.drain_usec = 0;
        assert_int_equal(alerts_of(&in, &c, &r), 0);
}

static void test_alerts_breaker_and_level(void **state)
{
        struct health_alerts_config c;
        struct health_alert_inputs in = quiet();
        struct health_alert_report r;

        (void)state;
        health_alerts_config_init(&c);
        in.breaker_state = "open";
        in.breaker_reason = "3 output failures in a row: No space left on device";
        assert_int_equal(alerts_of(&in, &c, &r), BIT(HEALTH_ALERT_BREAKER));
        assert_string_equal(r.text[HEALTH_ALERT_BREAKER],
                            "circuit breaker open: 3 output failures in a row: No space left on "
                            "device");
        in.breaker_state = "half-open";
        in.breaker_reason = NULL;
        assert_int_equal(alerts_of(&in, &c, &r), BIT(HEALTH_ALERT_BREAKER));
        assert_string_equal(r.text[HEALTH_ALERT_BREAKER], "circuit breaker half-open");
        c.breaker = false;
        assert_int_equal(alerts_of(&in, &c, &r), 0);

        in = quiet();
        in.level = HEALTH_REDUCED;
        in.level_reason = "2400 jobs queued (reduced at 500)";
        assert_int_equal(alerts_of(&in, &c, &r), BIT(HEALTH_ALERT_DEGRADED));
        assert_string_equal(r.text[HEALTH_ALERT_DEGRADED],
                            "degradation level reduced: 2400 jobs queued (reduced at 500)");
        c.degraded = false;
        assert_int_equal(alerts_of(&in, &c, &r), 0);

        /* Several at once, each with its own message. */
        health_alerts_config_init(&c);
        in.breaker_state = "open";
        in.health.error_rate = 0.5;
        in.health.queued = in.backlog = 5000;
        in.finished_per_s = 0.5;
        assert_int_equal(alerts_of(&in, &c, &r),
                         BIT(HEALTH_ALERT_ERROR_RATE) | BIT(HEALTH_ALERT_QUEUED) |
                                 BIT(HEALTH_ALERT_DRAIN) | BIT(HEALTH_ALERT_BREAKER) |
                                 BIT(HEALTH_ALERT_DEGRADED));
}

/*
 * Issue 13: the intake's alerts are in the one list, whatever the alerts configuration (they
 * cannot be turned off): uploads waiting for a retry with the cause, folders not watched with
 * the first of them, the limit to raise and how often they are scanned instead.
 */
static void test_alerts_intake(void **state)
{
        struct health_alerts_config c = { 0 }; /* every configurable alert off */
        struct health_alert_inputs in = quiet();
        struct health_alert_report r;

        (void)state;
        in.intake_retry = 3;
        in.intake_reason = "open /srv/up/a.jpg: Too many open files";
        assert_int_equal(alerts_of(&in, &c, &r), BIT(HEALTH_ALERT_INTAKE));
        assert_string_equal(r.text[HEALTH_ALERT_INTAKE],
                            "3 upload(s) could not be taken in and wait for a retry: open "
                            "/srv/up/a.jpg: Too many open files");

        in = quiet();
        in.unwatched = 250;
        in.unwatched_error = -ENOSPC;
        in.unwatched_first = "/srv/up/a/b";
        in.unwatched_scan_usec = 60 * USEC_PER_SEC;
        assert_int_equal(alerts_of(&in, &c, &r), BIT(HEALTH_ALERT_UNWATCHED));
        assert_string_equal(r.text[HEALTH_ALERT_UNWATCHED],
                            "250 folder(s) not watched (first: /srv/up/a/b): inotify watch limit "
                            "reached (raise fs.inotify.max_user_watches); scanned every 60 s "
                            "instead");
        in.unwatched_error = -ENOMEM;
        in.unwatched_first = NULL;
        assert_int_equal(alerts_of(&in, &c, &r), BIT(HEALTH_ALERT_UNWATCHED));
        assert_has(r.text[HEALTH_ALERT_UNWATCHED], "250 folder(s) not watched: ");
        assert_has(r.text[HEALTH_ALERT_UNWATCHED], strerror(ENOMEM));
}

/* Issue 18: the ledger's server unreachable is an alert of its own, always on, naming libpq's
 * reason and how long it has lasted; it is not ledger_failing (a file system that refuses the
 * writes), and the two are independent. */
static void test_alerts_ledger_unreachable(void **state)
{
        struct health_alerts_config c = { 0 }; /* every configurable alert off */
        struct health_alert_inputs in = quiet();
        struct health_alert_report r;

        (void)state;
        in.ledger_unreachable = "postgresql://imgd@/run/pg:5432/imgd: connection to server "
                                "failed: No such file or directory";
        in.ledger_unreachable_usec = 12 * USEC_PER_SEC;
        assert_int_equal(alerts_of(&in, &c, &r), BIT(HEALTH_ALERT_LEDGER_UNREACHABLE));
        assert_string_equal(r.text[HEALTH_ALERT_LEDGER_UNREACHABLE],
                            "ledger unreachable: postgresql://imgd@/run/pg:5432/imgd: connection "
                            "to server failed: No such file or directory (for 12 s); nothing is "
                            "claimed or published until it is back, and uploads wait to be taken "
                            "in");
        assert_string_equal(r.text[HEALTH_ALERT_LEDGER], "");

        in = quiet();
        in.ledger_failure = "/var/lib/imgd/jobs.db: disk I/O error";
        assert_int_equal(alerts_of(&in, &c, &r), BIT(HEALTH_ALERT_LEDGER));
        assert_string_equal(r.text[HEALTH_ALERT_LEDGER_UNREACHABLE], "");
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_alerts_intake),
                cmocka_unit_test(test_alerts_ledger_unreachable),
                cmocka_unit_test(test_config),
                cmocka_unit_test(test_names),
                cmocka_unit_test(test_each_input_alone),
                cmocka_unit_test(test_reasons),
                cmocka_unit_test(test_escalation_is_immediate),
                cmocka_unit_test(test_stepwise_recovery),
                cmocka_unit_test(test_recovery_restarts),
                cmocka_unit_test(test_recover_zero),
                cmocka_unit_test(test_score),
                cmocka_unit_test(test_score_monotonic),
                cmocka_unit_test(test_score_equal_thresholds),
                cmocka_unit_test(test_quality),
                cmocka_unit_test(test_effort),
                cmocka_unit_test(test_variant_enabled),
                cmocka_unit_test(test_alerts_defaults_and_names),
                cmocka_unit_test(test_max_running),
                cmocka_unit_test(test_alerts_thresholds),
                cmocka_unit_test(test_alerts_drain),
                cmocka_unit_test(test_alerts_breaker_and_level),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
