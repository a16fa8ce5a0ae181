/* SPDX-License-Identifier: MIT */
/*
 * test-metrics.c - the Prometheus text exposition of metrics.c: every line is a comment
 * (HELP before TYPE, once per family) or a well-formed sample; histogram buckets are
 * cumulative and end in +Inf = _count; label values are escaped; a family holds at most
 * METRICS_MAX_LABELS label values and counts the rest under "other"; odd durations (negative,
 * NaN) do not break the histogram; the gauges are rendered as given, imgd_workers by state
 * summing to the pool, with imgd_build_info. With the real daemon: a worker killed with
 * SIGKILL is counted by imgd_worker_restarts_total.
 */
#include <ctype.h>
#include <signal.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/metrics.h"
#include "testutil.h"
#include "shared/time-util.h"

/* The whole exposition of m with gauges g (or zeros); caller frees. */
static char *render(const metrics *m, const struct metrics_gauges *g)
{
        struct metrics_gauges zero = { 0 };
        char *text = NULL;
        size_t size = 0;
        FILE *f = open_memstream(&text, &size);

        assert_non_null(f);
        assert_int_equal(metrics_render(m, g ? g : &zero, f), 0);
        assert_int_equal(fclose(f), 0);
        assert_non_null(text);
        return text;
}

/* The value of the sample line that starts with `series` followed by a space; fails the test
 * if there is none. */
static double sample(const char *text, const char *series)
{
        size_t n = strlen(series);

        for (const char *l = text; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL)
                if (strncmp(l, series, n) == 0 && l[n] == ' ')
                        return strtod(l + n + 1, NULL);
        fail_msg("no sample %s in:\n%s", series, text);
        return NAN;
}

static bool has_line_starting(const char *text, const char *prefix)
{
        size_t n = strlen(prefix);

        for (const char *l = text; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL)
                if (strncmp(l, prefix, n) == 0)
                        return true;
        return false;
}

static unsigned count_lines_starting(const char *text, const char *prefix)
{
        size_t n = strlen(prefix);
        unsigned k = 0;

        for (const char *l = text; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL)
                if (strncmp(l, prefix, n) == 0)
                        k++;
        return k;
}

static bool is_name_char(char c, bool first)
{
        return isalpha((unsigned char)c) || c == '_' || c == ':' ||
               (!first && isdigit((unsigned char)c));
}

/*
 * Checks one sample line: name, optional {label="value",...} with escaped values, one space,
 * a number (or +Inf/-Inf/NaN). Returns the length of the metric name.
 */
static size_t check_sample_line(const char *l, size_t len)
{
        size_t i = 0, name_len;
        char *end;

        assert_true(len > 0 && is_name_char(l[0], true));
        while (i < len && is_name_char(l[i], false))
                i++;
        name_len = i;
        if (i < len && l[i] == '{') {
                i++;
                while (i < len && l[i] != '}') {
                        assert_true(is_name_char(l[i], true));
                        while (i < len && is_name_char(l[i], false))
                                i++;
                        assert_true(i + 1 < len && l[i] == '=' && l[i + 1] == '"');
                        i += 2;
                        while (i < len && l[i] != '"') {
                                if (l[i] == '\\') {
                                        assert_true(i + 1 < len);
                                        assert_non_null(strchr("\\\"n", l[i + 1]));
                                        i++;
                                }
                                i++;
                        }
                        assert_true(i < len);
                        i++; /* closing quote */
                        if (i < len && l[i] == ',')
                                i++;
                }
                assert_true(i < len && l[i] == '}');
                i++;
        }
        assert_true(i < len && l[i] == ' ');
        i++;
        if (strncmp(l + i, "+Inf", 4) != 0 && strncmp(l + i, "NaN", 3) != 0) {
                (void)strtod(l + i, &end);
                assert_ptr_equal(end, l + len);
        }
        return name_len;
}

/* Every line is HELP, TYPE or a sample of the family most recently typed; each family is
 * described once, HELP before TYPE. */
static void check_exposition(const char *text)
{
        char family[128] = "", type[32] = "";
        char seen[64][128];
        size_t n_seen = 0;

        assert_true(strlen(text) > 0 && text[strlen(text) - 1] == '\n');
        for (const char *l = text; *l;) {
                const char *nl = strchr(l, '\n');
                size_t len = (size_t)(nl - l);

                assert_non_null(nl);
                if (strncmp(l, "# HELP ", 7) == 0) {
                        int k = sscanf(l + 7, "%127s", family);

                        assert_int_equal(k, 1);
                        for (size_t i = 0; i < n_seen; i++)
                                if (strcmp(seen[i], family) == 0)
                                        fail_msg("family %s described twice", family);
                        assert_true(n_seen < 64);
                        snprintf(seen[n_seen++], sizeof seen[0], "%s", family);
                        type[0] = '\0';
                } else if (strncmp(l, "# TYPE ", 7) == 0) {
                        char name[128];

                        assert_int_equal(sscanf(l + 7, "%127s %31s", name, type), 2);
                        assert_string_equal(name, family);
                        assert_true(strcmp(type, "counter") == 0 || strcmp(type, "gauge") == 0 ||
                                    strcmp(type, "histogram") == 0);
                } else {
                        size_t name_len = check_sample_line(l, len);
                        size_t flen = strlen(family);

                        assert_true(type[0] != '\0'); /* typed before its samples */
                        assert_true(name_len >= flen && strncmp(l, family, flen) == 0);
                        if (name_len > flen) {
                                const char *suffix = l + flen;

                                assert_string_equal(type, "histogram");
                                assert_true(strncmp(suffix, "_bucket", 7) == 0 ||
                                            strncmp(suffix, "_sum", 4) == 0 ||
                                            strncmp(suffix, "_count", 6) == 0);
                        }
                }
                l = nl + 1;
        }
}

static void test_empty_exposition(void **state)
{
        metrics *m = NULL;
        char *text;

        (void)state;
        assert_int_equal(metrics_new(&m), 0);
        text = render(m, NULL);
        check_exposition(text);
        assert_true(has_line_starting(text, "# TYPE imgd_jobs gauge"));
        assert_true(has_line_starting(text, "# TYPE imgd_jobs_processed_total counter"));
        assert_true(has_line_starting(text, "# TYPE imgd_job_duration_seconds histogram"));
        assert_int_equal(sample(text, "imgd_jobs{state=\"done\"}"), 0);
        free(text);
        metrics_free(m);
}

static void test_gauges_rendered(void **state)
{
        struct metrics_gauges g = {
                .jobs_by_state = { 3, 2, 1, 40, 5, 6 },
                .oldest_queued_age_usec = 12500 * USEC_PER_MSEC,
                .breaker_state = 2,
                .degradation_level = 1,
                .health_score = 87.5,
                .rss_bytes = 123456789,
                .workers_busy = 2,
                .workers_idle = 1,
                .workers_total = 4,
                .error_rate = 0.125,
                .finished_per_s = 2.5,
        };
        metrics *m = NULL;
        char *text;

        (void)state;
        assert_int_equal(metrics_new(&m), 0);
        text = render(m, &g);
        check_exposition(text);
        assert_int_equal(sample(text, "imgd_jobs{state=\"queued\"}"), 3);
        assert_int_equal(sample(text, "imgd_jobs{state=\"running\"}"), 2);
        assert_int_equal(sample(text, "imgd_jobs{state=\"retry\"}"), 1);
        assert_int_equal(sample(text, "imgd_jobs{state=\"done\"}"), 40);
        assert_int_equal(sample(text, "imgd_jobs{state=\"dead\"}"), 5);
        assert_int_equal(sample(text, "imgd_jobs{state=\"cancelled\"}"), 6);
        assert_true(fabs(sample(text, "imgd_oldest_queued_seconds") - 12.5) < 1e-9);
        assert_int_equal(sample(text, "imgd_breaker_state"), 2);
        assert_int_equal(sample(text, "imgd_degradation_level"), 1);
        assert_true(fabs(sample(text, "imgd_health_score") - 87.5) < 1e-9);
        assert_int_equal(sample(text, "imgd_resident_memory_bytes"), 123456789);
        /* Units as the Prometheus naming guide has them: a 0..1 share is a _ratio. */
        assert_true(fabs(sample(text, "imgd_error_ratio") - 0.125) < 1e-9);
        assert_true(fabs(sample(text, "imgd_jobs_finished_per_second") - 2.5) < 1e-9);
        /* By state, summing to the pool's size (no "total" among them to double it). */
        assert_int_equal(sample(text, "imgd_workers{state=\"busy\"}"), 2);
        assert_int_equal(sample(text, "imgd_workers{state=\"idle\"}"), 1);
        assert_int_equal(sample(text, "imgd_workers{state=\"starting\"}"), 1);
        assert_int_equal(count_lines_starting(text, "imgd_workers{"), 3);
        assert_false(has_line_starting(text, "imgd_workers{state=\"total\"}"));
        free(text);
        metrics_free(m);
}

/* Buckets count observations at or below their bound, so they never decrease, and the last
 * (+Inf) equals _count. */
static void test_histogram_cumulative(void **state)
{
        static const double durations[] = { 0.03, 0.05, 0.2, 0.7, 3, 45, 200 };
        static const struct {
                const char *le;
                unsigned expect;
        } buckets[] = {
                { "0.05", 2 }, { "0.1", 2 }, { "0.25", 3 }, { "0.5", 3 },
                { "1", 4 },    { "2.5", 4 }, { "5", 5 },    { "10", 5 },
                { "30", 5 },   { "60", 6 },  { "120", 6 },  { "+Inf", 7 },
        };
        metrics *m = NULL;
        double sum = 0, previous = 0;
        char *text;

        (void)state;
        assert_int_equal(metrics_new(&m), 0);
        for (size_t i = 0; i < ELEMENTSOF(durations); i++) {
                metrics_job_done(m, "avatar", durations[i]);
                sum += durations[i];
        }
        metrics_job_done(m, "web", 1.5);
        text = render(m, NULL);
        check_exposition(text);

        for (size_t i = 0; i < ELEMENTSOF(buckets); i++) {
                char series[128];
                double v;

                snprintf(series, sizeof series,
                         "imgd_job_duration_seconds_bucket{pipeline=\"avatar\",le=\"%s\"}",
                         buckets[i].le);
                v = sample(text, series);
                assert_int_equal((unsigned)v, buckets[i].expect);
                assert_true(v >= previous);
                previous = v;
        }
        assert_int_equal(sample(text, "imgd_job_duration_seconds_count{pipeline=\"avatar\"}"), 7);
        assert_true(fabs(sample(text, "imgd_job_duration_seconds_sum{pipeline=\"avatar\"}") - sum) <
                    1e-3);
        assert_int_equal(sample(text, "imgd_jobs_processed_total{pipeline=\"avatar\"}"), 7);
        assert_int_equal(sample(text, "imgd_jobs_processed_total{pipeline=\"web\"}"), 1);
        assert_int_equal(
                sample(text, "imgd_job_duration_seconds_bucket{pipeline=\"web\",le=\"1\"}"), 0);
        assert_int_equal(
                sample(text, "imgd_job_duration_seconds_bucket{pipeline=\"web\",le=\"2.5\"}"), 1);
        free(text);
        metrics_free(m);
}

/* A clock step (negative) or garbage (NaN, infinity) counts as 0 s, and the sum stays a
 * number. */
static void test_odd_durations(void **state)
{
        metrics *m = NULL;
        char *text;

        (void)state;
        assert_int_equal(metrics_new(&m), 0);
        metrics_job_done(m, "p", -3);
        metrics_job_done(m, "p", NAN);
        metrics_job_done(m, "p", INFINITY);
        text = render(m, NULL);
        check_exposition(text);
        assert_int_equal(
                sample(text, "imgd_job_duration_seconds_bucket{pipeline=\"p\",le=\"0.05\"}"), 3);
        assert_int_equal(sample(text, "imgd_job_duration_seconds_sum{pipeline=\"p\"}"), 0);
        assert_int_equal(sample(text, "imgd_job_duration_seconds_count{pipeline=\"p\"}"), 3);
        free(text);
        metrics_free(m);
}

/* Backslash, double quote and newline in a label value are escaped as the text format
 * requires; a NULL label counts as "unknown". */
static void test_label_escaping(void **state)
{
        metrics *m = NULL;
        char *text;

        (void)state;
        assert_int_equal(metrics_new(&m), 0);
        metrics_job_failed(m, "a\"b\\c\nd");
        metrics_job_failed(m, "a\"b\\c\nd");
        metrics_worker_restart(m, NULL);
        text = render(m, NULL);
        check_exposition(text);
        assert_int_equal(sample(text, "imgd_jobs_failed_total{reason=\"a\\\"b\\\\c\\nd\"}"), 2);
        assert_int_equal(sample(text, "imgd_worker_restarts_total{cause=\"unknown\"}"), 1);
        free(text);
        metrics_free(m);
}

/* Beyond METRICS_MAX_LABELS distinct values, the rest is counted under "other", which
 * appears once; known values keep counting under their own name. */
static void test_label_overflow(void **state)
{
        metrics *m = NULL;
        char *text, name[32];

        (void)state;
        assert_int_equal(metrics_new(&m), 0);
        for (unsigned i = 0; i < METRICS_MAX_LABELS + 10; i++) {
                snprintf(name, sizeof name, "reason%u", i);
                metrics_job_failed(m, name);
        }
        metrics_job_failed(m, "reason0");   /* known: its own line */
        metrics_job_failed(m, "brand-new"); /* full: other */
        text = render(m, NULL);
        check_exposition(text);
        assert_int_equal(count_lines_starting(text, "imgd_jobs_failed_total{"),
                         METRICS_MAX_LABELS + 1);
        assert_int_equal(sample(text, "imgd_jobs_failed_total{reason=\"reason0\"}"), 2);
        snprintf(name, sizeof name, "reason%u", METRICS_MAX_LABELS - 1);
        {
                char series[96];

                snprintf(series, sizeof series, "imgd_jobs_failed_total{reason=\"%s\"}", name);
                assert_int_equal(sample(text, series), 1);
                snprintf(series, sizeof series, "imgd_jobs_failed_total{reason=\"reason%u\"}",
                         METRICS_MAX_LABELS);
                assert_false(has_line_starting(text, series));
        }
        assert_int_equal(sample(text, "imgd_jobs_failed_total{reason=\"other\"}"), 11);
        assert_int_equal(count_lines_starting(text, "imgd_jobs_failed_total{reason=\"other\"}"), 1);

        /* The histogram family overflows the same way, with buckets for "other". */
        for (unsigned i = 0; i < METRICS_MAX_LABELS + 3; i++) {
                snprintf(name, sizeof name, "pipe%u", i);
                metrics_job_done(m, name, 0.3);
        }
        free(text);
        text = render(m, NULL);
        check_exposition(text);
        assert_int_equal(sample(text, "imgd_job_duration_seconds_count{pipeline=\"other\"}"), 3);
        assert_int_equal(
                sample(text, "imgd_job_duration_seconds_bucket{pipeline=\"other\",le=\"0.5\"}"), 3);
        free(text);
        metrics_free(m);
}

/* A value called "other" before the family is full is where the overflow goes too. */
static void test_overflow_joins_existing_other(void **state)
{
        metrics *m = NULL;
        char *text, name[32];

        (void)state;
        assert_int_equal(metrics_new(&m), 0);
        metrics_worker_restart(m, "other");
        for (unsigned i = 0; i < METRICS_MAX_LABELS + 4; i++) {
                snprintf(name, sizeof name, "cause%u", i);
                metrics_worker_restart(m, name);
        }
        text = render(m, NULL);
        check_exposition(text);
        assert_int_equal(count_lines_starting(text, "imgd_worker_restarts_total{"),
                         METRICS_MAX_LABELS);
        /* 1 + the causes that did not fit (METRICS_MAX_LABELS - 1 fit besides "other"). */
        assert_int_equal(sample(text, "imgd_worker_restarts_total{cause=\"other\"}"), 1 + 5);
        free(text);
        metrics_free(m);
}

/* imgd_build_info{version="..."} 1, the Prometheus idiom for the version. */
static void test_build_info(void **state)
{
        metrics *m = NULL;
        char *text, *series;

        (void)state;
        assert_int_equal(metrics_new(&m), 0);
        text = render(m, NULL);
        check_exposition(text);
        assert_true(has_line_starting(text, "# TYPE imgd_build_info gauge"));
        series = tu_path("imgd_build_info{version=\"%s\"}", IMGD_VERSION);
        assert_int_equal(sample(text, series), 1);
        free(series);
        free(text);
        metrics_free(m);
}

/* ---- the real daemon ---------------------------------------------------------------------- */

#define PIPE_1 "( { name = \"s\"; width = 64; height = 64; fit = \"cover\"; format = \"webp\"; } )"

static char *daemon_metrics(struct tu_daemon *d)
{
        char *out = NULL;

        if (tu_imgctl(d, &out, "metrics", NULL) != 0)
                fail_msg("imgctl metrics failed: %s", out ? out : "");
        check_exposition(out);
        return out;
}

/* The sum of every sample of `family` (e.g. "imgd_workers{"); 0 when there is none. */
static double sum_of(const char *text, const char *family)
{
        size_t n = strlen(family);
        double sum = 0;

        for (const char *l = text; l && *l; l = strchr(l, '\n') ? strchr(l, '\n') + 1 : NULL)
                if (strncmp(l, family, n) == 0) {
                        const char *sp = strchr(l, ' ');

                        sum += sp ? strtod(sp + 1, NULL) : 0;
                }
        return sum;
}

/* Waits until all `n` workers of d are idle and the one with pid `old` (if any) is gone. */
static void wait_workers_idle(struct tu_daemon *d, unsigned n, pid_t old)
{
        for (int i = 0;; i++) {
                char *text = daemon_metrics(d);
                bool idle = sample(text, "imgd_workers{state=\"idle\"}") == n;

                free(text);
                if (idle && (old <= 0 || kill(old, 0) < 0))
                        return;
                if (i == 3000)
                        fail_msg("the workers did not all become idle within 30 s");
                usleep(10 * 1000);
        }
}

/*
 * A worker killed with SIGKILL (the OOM killer, an operator) is replaced, and
 * imgd_worker_restarts_total counts it (cause "crash"); imgd_workers{state} sums to the
 * pool's size; imgd_build_info names the version.
 */
static void test_daemon_worker_restarts(void **state)
{
        struct tu_daemon d;
        pid_t workers[8];
        char *text, *series;
        unsigned n;

        (void)state;
        tu_daemon_setup(&d, PIPE_1, 2, NULL);
        tu_daemon_start(&d);
        wait_workers_idle(&d, 2, 0);

        text = daemon_metrics(&d);
        assert_int_equal(sum_of(text, "imgd_workers{"), 2);
        assert_int_equal(sum_of(text, "imgd_worker_restarts_total{"), 0);
        series = tu_path("imgd_build_info{version=\"%s\"}", IMGD_VERSION);
        assert_int_equal(sample(text, series), 1);
        free(series);
        free(text);

        n = tu_daemon_children(&d, workers, ELEMENTSOF(workers));
        assert_int_equal(n, 2);
        assert_int_equal(kill(workers[0], SIGKILL), 0);
        wait_workers_idle(&d, 2, workers[0]);

        text = daemon_metrics(&d);
        assert_int_equal(sum_of(text, "imgd_workers{"), 2);
        assert_int_equal(sample(text, "imgd_worker_restarts_total{cause=\"crash\"}"), 1);
        assert_int_equal(sum_of(text, "imgd_worker_restarts_total{"), 1);
        free(text);
        tu_daemon_cleanup(&d);
}

int main(void)
{
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_empty_exposition),
                cmocka_unit_test(test_gauges_rendered),
                cmocka_unit_test(test_histogram_cumulative),
                cmocka_unit_test(test_odd_durations),
                cmocka_unit_test(test_label_escaping),
                cmocka_unit_test(test_label_overflow),
                cmocka_unit_test(test_overflow_joins_existing_other),
                cmocka_unit_test(test_build_info),
                cmocka_unit_test(test_daemon_worker_restarts),
        };

        return cmocka_run_group_tests(tests, NULL, NULL);
}
